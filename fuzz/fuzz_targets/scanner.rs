//! Fuzzes `MessageScanner`, which follows message boundaries in a forwarded stream.
//!
//! The first input byte picks where the rest is split in two chunks. The scanner must
//! report the same messages (tag, body length, first body byte; `start` is ignored as it
//! depends on the split) and the same error whether it sees the stream in one piece, in
//! two, or a byte at a time; and those messages must be the ones `Frames` finds, plus at
//! most one last message whose body has begun but not ended.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgwire::frame::{decode_head, Frames};
use pgwire::{MessageScanner, WireError};

const MAX_LEN: usize = 1 << 20;

/// What the scanner reports of a message, without its position in the chunk.
type Seen = (u8, usize, Option<u8>);

#[derive(Debug, PartialEq)]
struct Scan {
    messages: Vec<Seen>,
    error: Option<WireError>,
    at_boundary: bool,
}

fn scan<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Scan {
    let mut scanner = MessageScanner::new(MAX_LEN);
    let mut messages = Vec::new();
    let mut error = None;
    for chunk in chunks {
        let result = scanner.scan::<WireError>(chunk, |head| {
            messages.push((head.tag, head.body_len, head.first_byte));
            Ok(())
        });
        if let Err(e) = result {
            // After a stream error the connection is closed: nothing more is scanned.
            error = Some(e);
            break;
        }
    }
    Scan {
        messages,
        error,
        at_boundary: scanner.at_boundary(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let split = usize::from(selector) * stream.len() / 255;
    let (first, second) = stream.split_at(split);

    let whole = scan([stream]);
    let halves = scan([first, second]);
    assert_eq!(halves, whole, "split at {split}");
    let bytes = scan(stream.chunks(1));
    assert_eq!(bytes, whole, "byte at a time");

    // `scan_to_boundary` after the first half: it stops exactly where the message in
    // progress ends, and scanning on from there gives the same messages as before.
    let mut scanner = MessageScanner::new(MAX_LEN);
    let mut split_messages = Vec::new();
    let mut record = |head: pgwire::MessageHead| -> Result<(), WireError> {
        split_messages.push((head.tag, head.body_len, head.first_byte));
        Ok(())
    };
    if scanner.scan::<WireError>(first, &mut record).is_ok() {
        if let Ok(used) = scanner.scan_to_boundary::<WireError>(second, &mut record) {
            assert!(used <= second.len());
            assert!(scanner.at_boundary() || used == second.len());
            if scanner
                .scan::<WireError>(&second[used..], &mut record)
                .is_ok()
            {
                assert_eq!(
                    split_messages, whole.messages,
                    "scan_to_boundary at {split}"
                );
            }
        }
    }

    // What `Frames` sees in the same bytes.
    let mut frames = Frames::new(stream, MAX_LEN);
    let mut expected = Vec::new();
    let mut frames_error = None;
    for frame in frames.by_ref() {
        match frame {
            Ok(f) => expected.push((f.tag, f.body.len(), f.body.first().copied())),
            Err(e) => frames_error = Some(e),
        }
    }
    assert_eq!(whole.error, frames_error);

    let rest = frames.rest();
    if frames_error.is_none() {
        // A message whose header and first body byte have arrived is reported before its
        // body is complete; `Frames` leaves it in the rest.
        if let [tag, l0, l1, l2, l3, first_byte, ..] = *rest {
            let (tag, body_len) = decode_head([tag, l0, l1, l2, l3], MAX_LEN)
                .unwrap_or_else(|e| panic!("Frames left a bad header in the rest: {e}"));
            expected.push((tag, body_len, Some(first_byte)));
        }
        assert_eq!(whole.at_boundary, rest.is_empty());
    }
    assert_eq!(whole.messages, expected);
});
