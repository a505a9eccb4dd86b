//! Fuzzes message framing and every decoder that reads a message body.
//!
//! Splits the input with `Frames` (1 MiB bound) and hands each complete frame to the
//! backend decoder, the frontend body decoders and `ErrorBody`. None may panic; the frames
//! and the rest must account for every input byte; and the strings the decoders return
//! must survive a round trip through the matching encoder.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::backend::{self, BackendMessage, ErrorBody};
use pgwire::frame::{decode_frame, Frame, Frames};
use pgwire::frontend;

const MAX_LEN: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut frames = Frames::new(data, MAX_LEN);
    let mut framed = 0;
    let mut failed = false;
    for frame in frames.by_ref() {
        match frame {
            Ok(frame) => {
                framed += frame.wire_len();
                decode_body(frame);
            }
            Err(_) => failed = true,
        }
    }
    if !failed {
        assert_eq!(framed + frames.rest().len(), data.len());
    }
});

fn decode_body(frame: Frame<'_>) {
    let body = frame.body;

    if let Ok(BackendMessage::ParameterStatus { name, value }) = BackendMessage::decode(frame) {
        let mut out = BytesMut::new();
        backend::parameter_status(name, value, &mut out);
        let again = reframe(&out);
        assert_eq!(
            BackendMessage::decode(again),
            Ok(BackendMessage::ParameterStatus { name, value })
        );
    }

    if let Ok(initial) = frontend::decode_sasl_initial(body) {
        assert!(initial.data.len() + initial.mechanism.len() < body.len());
    }
    if let Ok(password) = frontend::decode_password(body) {
        let mut out = BytesMut::new();
        frontend::password(password, &mut out);
        assert_eq!(reframe(&out).body, body);
    }
    if let Ok(sql) = frontend::decode_query(body) {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out);
        assert_eq!(frontend::decode_query(reframe(&out).body), Ok(sql));
    }
    let _ = frontend::decode_parse_head(body);
    let _ = frontend::decode_bind_head(body);
    let _ = frontend::bind_param_format_count(body);

    let error = ErrorBody(body);
    let _ = error.field(b'M');
    let _ = (error.code(), error.message(), error.severity());
}

/// Decodes a message this target just encoded: it must be exactly one complete frame.
fn reframe(out: &[u8]) -> Frame<'_> {
    match decode_frame(out, MAX_LEN) {
        Ok(Some(frame)) if frame.wire_len() == out.len() => frame,
        other => panic!("re-encoded message does not frame: {other:?} for {out:?}"),
    }
}
