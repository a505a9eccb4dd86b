//! Following message boundaries in a stream that is forwarded as it arrives.
//!
//! The pooler relays most bytes untouched; it only needs to know where each message
//! starts, its tag, and for a few messages (ReadyForQuery) their first body byte. The
//! scanner keeps at most five header bytes of state, so a chunk can be written on as
//! soon as it is scanned, whatever its alignment to messages.

use crate::frame::decode_head;
use crate::WireError;

/// The start of a message seen in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHead {
    pub tag: u8,
    /// Body length (the wire length less the 5 header bytes).
    pub body_len: usize,
    /// The first body byte, when the body is not empty.
    pub first_byte: Option<u8>,
    /// Offset of the message's tag byte in the chunk being scanned; negative when
    /// the message began in an earlier chunk.
    pub start: isize,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a header; `have` bytes of `head` are filled.
    Head { head: [u8; 5], have: u8 },
    /// Header read; waiting for the first body byte before reporting the message.
    FirstByte { tag: u8, body_len: usize },
    /// Skipping the rest of a body.
    Body { remaining: usize },
}

/// Incremental message-boundary scanner for one direction of a connection.
#[derive(Debug, Clone)]
pub struct MessageScanner {
    state: State,
    max_len: usize,
}

impl MessageScanner {
    pub fn new(max_len: usize) -> Self {
        Self {
            state: State::Head {
                head: [0; 5],
                have: 0,
            },
            max_len,
        }
    }

    /// True when the bytes scanned so far end exactly at a message boundary.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Head { have: 0, .. })
    }

    /// Scans `chunk`, calling `on_message` for every message whose head (and first
    /// body byte, if any) it completes. Stops at the first error from the callback or
    /// the stream.
    pub fn scan<E: From<WireError>>(
        &mut self,
        chunk: &[u8],
        on_message: impl FnMut(MessageHead) -> Result<(), E>,
    ) -> Result<(), E> {
        self.scan_inner(chunk, false, on_message).map(|_| ())
    }

    /// Scans `chunk` only up to the end of the message in progress, and returns how
    /// many bytes that took (0 when already at a boundary).
    pub fn scan_to_boundary<E: From<WireError>>(
        &mut self,
        chunk: &[u8],
        on_message: impl FnMut(MessageHead) -> Result<(), E>,
    ) -> Result<usize, E> {
        if self.at_boundary() {
            return Ok(0);
        }
        self.scan_inner(chunk, true, on_message)
    }

    fn scan_inner<E: From<WireError>>(
        &mut self,
        chunk: &[u8],
        stop_at_boundary: bool,
        mut on_message: impl FnMut(MessageHead) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut pos = 0;
        while pos < chunk.len() {
            if stop_at_boundary && pos > 0 && self.at_boundary() {
                break;
            }
            match &mut self.state {
                State::Head { head, have } => {
                    let need = 5 - *have as usize;
                    let take = need.min(chunk.len() - pos);
                    head[*have as usize..*have as usize + take]
                        .copy_from_slice(&chunk[pos..pos + take]);
                    *have += take as u8;
                    pos += take;
                    if *have == 5 {
                        let (tag, body_len) = decode_head(*head, self.max_len)?;
                        if body_len == 0 {
                            self.state = State::Head {
                                head: [0; 5],
                                have: 0,
                            };
                            on_message(MessageHead {
                                tag,
                                body_len,
                                first_byte: None,
                                start: pos as isize - 5,
                            })?;
                        } else {
                            self.state = State::FirstByte { tag, body_len };
                        }
                    }
                }
                State::FirstByte { tag, body_len } => {
                    let head = MessageHead {
                        tag: *tag,
                        body_len: *body_len,
                        first_byte: Some(chunk[pos]),
                        start: pos as isize - 5,
                    };
                    self.state = if *body_len == 1 {
                        State::Head {
                            head: [0; 5],
                            have: 0,
                        }
                    } else {
                        State::Body {
                            remaining: *body_len - 1,
                        }
                    };
                    pos += 1;
                    on_message(head)?;
                }
                State::Body { remaining } => {
                    let take = (*remaining).min(chunk.len() - pos);
                    *remaining -= take;
                    pos += take;
                    if *remaining == 0 {
                        self.state = State::Head {
                            head: [0; 5],
                            have: 0,
                        };
                    }
                }
            }
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> (Vec<MessageHead>, bool) {
        let mut s = MessageScanner::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            s.scan::<WireError>(c, |h| {
                out.push(h);
                Ok(())
            })
            .unwrap();
        }
        (out, s.at_boundary())
    }

    #[test]
    fn same_result_for_every_split() {
        let stream: Vec<u8> = [
            &b"Z\0\0\0\x05I"[..],
            b"S\0\0\0\x04",
            b"D\0\0\0\x0aabcdef",
            b"Z\0\0\0\x05T",
        ]
        .concat();
        let (whole, at_end) = collect(&[&stream]);
        assert!(at_end);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].first_byte, Some(b'I'));
        assert_eq!(whole[1].first_byte, None);
        assert_eq!(whole[2].body_len, 6);
        assert_eq!(whole[3].first_byte, Some(b'T'));
        assert_eq!(whole[2].start, 11);
        for a in 0..stream.len() {
            for b in a..stream.len() {
                let (parts, at_end) = collect(&[&stream[..a], &stream[a..b], &stream[b..]]);
                let strip = |v: &[MessageHead]| {
                    v.iter()
                        .map(|h| (h.tag, h.body_len, h.first_byte))
                        .collect::<Vec<_>>()
                };
                assert_eq!(strip(&parts), strip(&whole), "split at {a},{b}");
                assert!(at_end);
            }
        }
        let (_, mid) = collect(&[&stream[..7]]);
        assert!(!mid);
    }

    #[test]
    fn scan_to_boundary_stops_after_the_message_in_progress() {
        let stream = b"D\0\0\0\x06abZ\0\0\0\x05I";
        let mut s = MessageScanner::new(1 << 20);
        s.scan::<WireError>(&stream[..3], |_| Ok(())).unwrap();
        let mut seen = Vec::new();
        let used = s
            .scan_to_boundary::<WireError>(&stream[3..], |h| {
                seen.push(h.tag);
                Ok(())
            })
            .unwrap();
        assert_eq!(used, 4, "rest of the DataRow only");
        assert_eq!(seen, vec![b'D']);
        assert!(s.at_boundary());
        assert_eq!(
            s.scan_to_boundary::<WireError>(&stream[7..], |_| Ok(()))
                .unwrap(),
            0
        );
    }

    #[test]
    fn oversized_is_error() {
        let mut s = MessageScanner::new(10);
        let r = s.scan::<WireError>(b"Q\0\0\x10\0", |_| Ok(()));
        assert!(matches!(r, Err(WireError::TooLong { .. })));
    }
}
