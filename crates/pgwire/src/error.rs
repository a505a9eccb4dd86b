//! Errors of the codec: every way bytes from a peer can be wrong.

/// A protocol violation found while decoding bytes from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("invalid message length {len}")]
    InvalidLength { len: i64 },
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("message ended early while reading {what}")]
    Truncated { what: &'static str },
    #[error("string in {what} is not terminated")]
    UnterminatedString { what: &'static str },
    #[error("string in {what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("unexpected message type {tag:?} during {phase}")]
    UnexpectedMessage { tag: char, phase: &'static str },
    #[error("malformed {what}")]
    Malformed { what: &'static str },
}

impl WireError {
    /// SQLSTATE a client should see for this error: every codec error is a protocol violation.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::UnsupportedProtocol { .. } => "0A000",
            _ => "08P01",
        }
    }
}
