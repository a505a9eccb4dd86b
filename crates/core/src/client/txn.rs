//! Where a client stands in the protocol, from the message heads seen in each
//! direction: how many ReadyForQuery answers are still owed, whether an extended-
//! protocol batch is open without its Sync, and the last transaction status.
//!
//! This decides when a transaction-mode client can give its server connection back:
//! only when nothing is owed in either direction and the server said 'I'. Pure; the
//! relay feeds it.

use pgwire::{tag, MessageHead, TransactionStatus};

/// What the client asked for that matters beyond forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIntent {
    /// Forward the message.
    Forward,
    /// The client said Terminate: do not forward it, end the session.
    Terminate,
}

/// Request/response bookkeeping for one client's bound server connection.
#[derive(Debug, Clone)]
pub struct TxnTracker {
    /// ReadyForQuery messages the server still owes (one per Query, Sync, FunctionCall).
    pending_ready: u32,
    /// Extended-protocol messages sent since the last Sync.
    open_batch: bool,
    /// Everything in the open batch only prepares or describes named statements
    /// (what asyncpg sends with Flush and no Sync): the pooler may end it itself.
    portable_batch: bool,
    /// Status at the last ReadyForQuery.
    status: TransactionStatus,
    /// Queries, function calls and Syncs the client sent (for metrics).
    pub queries: u64,
}

impl Default for TxnTracker {
    fn default() -> Self {
        Self {
            pending_ready: 0,
            open_batch: false,
            portable_batch: true,
            status: TransactionStatus::Idle,
            queries: 0,
        }
    }
}

impl TxnTracker {
    /// Notes a message the client sends to the server.
    pub fn on_client_message(&mut self, head: &MessageHead) -> ClientIntent {
        match head.tag {
            tag::QUERY | tag::FUNCTION_CALL => {
                self.pending_ready += 1;
                self.queries += 1;
            }
            tag::SYNC => {
                self.pending_ready += 1;
                self.queries += 1;
                self.open_batch = false;
                self.portable_batch = true;
            }
            // A Flush asks for pending output; alone it opens nothing (psycopg sends
            // Sync then Flush when it leaves pipeline mode).
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE => {
                self.open_batch = true;
                self.portable_batch = false;
            }
            tag::TERMINATE => return ClientIntent::Terminate,
            _ => {}
        }
        ClientIntent::Forward
    }

    /// Notes a message the server sends to the client.
    pub fn on_server_message(&mut self, head: &MessageHead) {
        if head.tag == tag::ERROR_RESPONSE && self.open_batch {
            // The server now skips to the client's Sync: only that Sync may end it,
            // or later messages would run where the client expects them skipped.
            self.portable_batch = false;
        }
        if head.tag == tag::READY_FOR_QUERY {
            self.pending_ready = self.pending_ready.saturating_sub(1);
            if let Some(status) = head.first_byte.and_then(TransactionStatus::from_byte) {
                self.status = status;
            }
        }
    }

    /// Notes a message of the open batch that only touches named statements (a
    /// named Parse, a Describe or Close of a named statement): it keeps the batch
    /// portable. Call instead of [`Self::on_client_message`] for such messages.
    pub fn on_portable_message(&mut self) {
        if !self.open_batch {
            self.portable_batch = true;
        }
        self.open_batch = true;
    }

    /// The batch is open, holds only named-statement work, and nothing else is owed:
    /// the pooler may end it with its own Sync, and a client that sent no Sync
    /// (asyncpg's prepare) does not keep the server.
    pub fn can_end_batch(&self) -> bool {
        self.open_batch
            && self.portable_batch
            && self.pending_ready == 0
            && self.status == TransactionStatus::Idle
    }

    /// The pooler sent a Sync of its own to end a portable batch.
    pub fn on_pooler_sync(&mut self) {
        self.pending_ready += 1;
        self.open_batch = false;
        self.portable_batch = true;
    }

    /// Nothing is owed in either direction.
    pub fn is_settled(&self) -> bool {
        self.pending_ready == 0 && !self.open_batch
    }

    /// Settled and outside any transaction block: the server may serve someone else.
    pub fn is_idle(&self) -> bool {
        self.is_settled() && self.status == TransactionStatus::Idle
    }

    pub fn status(&self) -> TransactionStatus {
        self.status
    }

    /// Forgets everything: a new server connection starts settled and idle.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(tag: u8, first_byte: Option<u8>) -> MessageHead {
        MessageHead {
            tag,
            body_len: first_byte.map_or(0, |_| 1),
            first_byte,
            start: 0,
        }
    }

    #[test]
    fn pipeline_of_two_syncs_needs_two_ready() {
        let mut t = TxnTracker::default();
        for tag in [b'P', b'B', b'E', b'S', b'P', b'B', b'E', b'S'] {
            t.on_client_message(&head(tag, None));
        }
        t.on_server_message(&head(b'Z', Some(b'I')));
        assert!(!t.is_idle(), "second Sync still owed");
        t.on_server_message(&head(b'Z', Some(b'I')));
        assert!(t.is_idle());
    }

    #[test]
    fn transaction_block_keeps_the_server() {
        let mut t = TxnTracker::default();
        t.on_client_message(&head(b'Q', Some(b'B')));
        t.on_server_message(&head(b'Z', Some(b'T')));
        assert!(t.is_settled() && !t.is_idle());
        t.on_client_message(&head(b'Q', Some(b'C')));
        t.on_server_message(&head(b'Z', Some(b'E')));
        assert!(!t.is_idle());
        t.on_client_message(&head(b'Q', Some(b'R')));
        t.on_server_message(&head(b'Z', Some(b'I')));
        assert!(t.is_idle());
    }

    #[test]
    fn flush_after_sync_opens_nothing() {
        let mut t = TxnTracker::default();
        t.on_client_message(&head(b'S', None));
        t.on_client_message(&head(b'H', None));
        t.on_server_message(&head(b'Z', Some(b'I')));
        assert!(t.is_idle());
    }

    #[test]
    fn named_prepare_batch_can_be_ended_by_the_pooler() {
        let mut t = TxnTracker::default();
        t.on_portable_message();
        t.on_portable_message();
        t.on_client_message(&head(b'H', None));
        assert!(t.can_end_batch());
        t.on_client_message(&head(b'B', Some(0)));
        assert!(!t.can_end_batch(), "a Bind makes the batch stay");

        let mut t = TxnTracker::default();
        t.on_portable_message();
        t.on_server_message(&head(b'E', Some(b'S')));
        assert!(
            !t.can_end_batch(),
            "after an error only the client's Sync ends the batch"
        );
    }

    #[test]
    fn flush_without_sync_keeps_the_server() {
        let mut t = TxnTracker::default();
        t.on_client_message(&head(b'P', Some(b's')));
        t.on_client_message(&head(b'H', None));
        assert!(!t.is_settled());
        t.on_client_message(&head(b'S', None));
        t.on_server_message(&head(b'Z', Some(b'I')));
        assert!(t.is_idle());
    }

    #[test]
    fn terminate_is_not_forwarded() {
        let mut t = TxnTracker::default();
        assert_eq!(
            t.on_client_message(&head(b'X', None)),
            ClientIntent::Terminate
        );
    }
}
