//! One logged-in server connection and what the pooler knows about it.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use pgwire::TransactionStatus;
use tokio::io::{AsyncRead, ReadBuf};

use crate::client::statements::ServerStatements;
use crate::params::{ParamValues, SessionSettings};
use crate::stream::Stream;

/// The key Postgres gave this backend, used to forward cancel requests to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendKey {
    pub process_id: u32,
    pub secret: [u8; 4],
}

impl BackendKey {
    pub fn new(process_id: u32, secret: &[u8]) -> Self {
        let mut s = [0u8; 4];
        for (d, b) in s.iter_mut().zip(secret) {
            *d = *b;
        }
        Self {
            process_id,
            secret: s,
        }
    }
}

/// A server connection, idle in a pool or lent to a client.
pub struct ServerConn {
    pub stream: Stream,
    pub backend: BackendKey,
    /// ParameterStatus values the server sent at login.
    pub params: Arc<Vec<(String, String)>>,
    /// Tracked session parameters as the server has them now.
    pub current: ParamValues,
    /// Transaction status at the last ReadyForQuery.
    pub status: TransactionStatus,
    pub created: Instant,
    pub last_used: Instant,
    /// Pool-unique number, for logs.
    pub id: u64,
    /// Prepared statements this connection has under pooler-wide names.
    pub statements: ServerStatements,
    /// Unreported session settings a client left on this connection.
    pub settings: SessionSettings,
    /// The shard whose reactor watches the socket ([`crate::shard::current`] when
    /// it was opened or last moved).
    pub home: u32,
}

impl ServerConn {
    /// True if an idle connection has nothing to say: no bytes and no EOF waiting.
    /// Costs no system call when the reactor has not seen the socket become
    /// readable, and, over plain TCP, no waker registration either (this runs at
    /// every checkout).
    pub fn is_quiet(&mut self) -> bool {
        if let Some(quiet) = self.stream.try_quiet() {
            return quiet;
        }
        // TLS may hold decrypted bytes the socket no longer shows.
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        matches!(
            std::pin::Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }
}
