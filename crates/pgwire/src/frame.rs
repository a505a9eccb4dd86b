//! Splitting a buffer into tagged messages (`Byte1 tag`, `Int32 length`, body), with
//! the length bounded before the body is awaited.

use crate::WireError;

/// Largest message accepted by default. Postgres itself allows up to 1 GiB for a few
/// message types; a pooler that forwards by streaming never buffers that much.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 30;

/// One complete message, borrowed from the buffer it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub tag: u8,
    pub body: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the whole message takes on the wire.
    pub fn wire_len(&self) -> usize {
        self.body.len() + 5
    }
}

/// Reads a message header: the tag and the body length, checked against `max_len`.
pub fn decode_head(head: [u8; 5], max_len: usize) -> Result<(u8, usize), WireError> {
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len < 4 {
        return Err(WireError::InvalidLength { len: len.into() });
    }
    let len = len as usize;
    if len > max_len {
        return Err(WireError::TooLong { len, max: max_len });
    }
    Ok((head[0], len - 4))
}

/// Decodes the message at the front of `buf`, or `Ok(None)` if it is not complete yet.
pub fn decode_frame(buf: &[u8], max_len: usize) -> Result<Option<Frame<'_>>, WireError> {
    let Some(head) = buf.get(..5) else {
        return Ok(None);
    };
    let head = [head[0], head[1], head[2], head[3], head[4]];
    let (tag, body_len) = decode_head(head, max_len)?;
    Ok(buf.get(5..5 + body_len).map(|body| Frame { tag, body }))
}

/// Iterates over the complete messages at the front of a buffer.
pub struct Frames<'a> {
    buf: &'a [u8],
    max_len: usize,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8], max_len: usize) -> Self {
        Self { buf, max_len }
    }

    /// Bytes after the last complete message.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        match decode_frame(self.buf, self.max_len) {
            Ok(Some(frame)) => {
                self.buf = &self.buf[frame.wire_len()..];
                Some(Ok(frame))
            }
            Ok(None) => None,
            Err(e) => {
                self.buf = &[];
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_rest() {
        let buf = [b'Z', 0, 0, 0, 5, b'I', b'S', 0, 0, 0, 4, b'Q', 0, 0];
        let mut it = Frames::new(&buf, 100);
        assert_eq!(
            it.next(),
            Some(Ok(Frame {
                tag: b'Z',
                body: b"I"
            }))
        );
        assert_eq!(
            it.next(),
            Some(Ok(Frame {
                tag: b'S',
                body: b""
            }))
        );
        assert_eq!(it.next(), None);
        assert_eq!(it.rest(), &[b'Q', 0, 0]);
    }

    #[test]
    fn bounds() {
        assert!(decode_frame(&[b'Q', 0, 0, 0, 3], 100).is_err());
        assert!(decode_frame(&[b'Q', 0xff, 0xff, 0xff, 0xff], 100).is_err());
        assert!(decode_frame(&[b'Q', 0, 0, 1, 0], 100).is_err());
        assert_eq!(decode_frame(&[b'Q', 0, 0, 0, 90], 100), Ok(None));
    }
}
