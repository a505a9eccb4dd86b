//! Sans-I/O codec for the PostgreSQL v3 wire protocol, as a pooler needs it.
//!
//! This crate owns the byte layout of messages and nothing else: it never touches a
//! socket, never spawns, never sleeps. Every length read from the wire is checked
//! against a bound before anything is sized from it, and malformed input is an error,
//! never a panic.
//!
//! - [`startup`]: the untagged packets a client sends first (StartupMessage,
//!   SSLRequest, GSSENCRequest, CancelRequest).
//! - [`frame`]: splitting a byte buffer into tagged messages, bounded.
//! - [`scan`]: following message boundaries in a byte stream that is forwarded
//!   untouched, chunk by chunk, without buffering whole messages.
//! - [`backend`]: messages a server (or the pooler acting as one) sends.
//! - [`frontend`]: messages a client (or the pooler acting as one) sends.
//!
//! Reference: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

pub mod backend;
pub mod error;
pub mod frame;
pub mod frontend;
mod read;
pub mod scan;
pub mod startup;

pub use error::WireError;
pub use frame::{Frame, DEFAULT_MAX_MESSAGE_LEN};
pub use scan::{MessageHead, MessageScanner};
pub use startup::{StartupPacket, MAX_STARTUP_PACKET_LEN};

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// 'I': not in a transaction block.
    Idle,
    /// 'T': in a transaction block.
    InTransaction,
    /// 'E': in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    /// Decodes the status byte of ReadyForQuery.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'I' => Some(Self::Idle),
            b'T' => Some(Self::InTransaction),
            b'E' => Some(Self::Failed),
            _ => None,
        }
    }

    /// The byte that stands for this status on the wire.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InTransaction => b'T',
            Self::Failed => b'E',
        }
    }
}

/// Message type bytes, named as in the protocol documentation.
pub mod tag {
    // Frontend (client to server).
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';

    // Backend (server to client).
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}
