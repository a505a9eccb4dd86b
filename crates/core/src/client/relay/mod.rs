//! Full-duplex forwarding between a client and its bound server connection.
//!
//! Both directions move in one task, each through its own buffer. A side is only
//! read while its previous bytes are written, which is the back-pressure; the other
//! direction keeps moving meanwhile, so the client and the server never wait on each
//! other. All state lives in [`RelayState`], so the future that drives it can be
//! dropped at any await point without losing bytes.
//!
//! Server bytes are forwarded untouched, scanned only for message heads, unless the
//! pooler must answer or hide a response (prepared statements): then they are cut
//! into whole messages and edited (`from_server`). Client bytes are forwarded
//! untouched in session mode; in transaction mode with statement tracking they are
//! cut into messages and rewritten (`from_client`).

mod from_client;
mod from_server;
mod leg;

use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use pgwire::{WireError, DEFAULT_MAX_MESSAGE_LEN};

use super::responses::{ResponseEnd, ResponsePlan, Undo};
use super::statements::{ClientStatements, ServerStatements};
use super::txn::TxnTracker;
use crate::params::ParamValues;
use crate::sql_hint::{CleanMemo, SessionHints};
use crate::stream::Stream;
use leg::Leg;

/// When the relay hands control back to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayUntil {
    /// As soon as the server is idle and nothing is owed (transaction mode).
    TransactionEnd,
    /// Only when a side closes (session mode).
    ClientLeaves,
}

/// Why the relay stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// The server is idle, nothing is in flight: it can go back to the pool.
    Idle,
    /// The client sent Terminate (not forwarded).
    ClientTerminated,
    /// The client closed its socket.
    ClientClosed,
    ClientIo(io::Error),
    ClientProtocol(WireError),
    ServerClosed,
    ServerIo(io::Error),
    ServerProtocol(WireError),
}

/// The prepared statements of the client and of the bound server, when tracked.
pub struct StatementCtx<'a> {
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
}

/// Relay states a worker keeps for reuse.
const KEEP_RELAYS_PER_THREAD: usize = 64;
/// Buffers that grew beyond this (a large message) are freed, not kept.
const KEEP_CAPACITY: usize = 64 * 1024;

thread_local! {
    // Boxed: a PooledRelay lends the box, so taking one moves a pointer.
    #[allow(clippy::vec_box)]
    static SPARE_RELAYS: std::cell::RefCell<Vec<Box<RelayState>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Empties `buf` for another transaction, keeping its room unless that room is too
/// large to keep.
pub(super) fn recycle_bytes(buf: &mut BytesMut) {
    if buf.capacity() > KEEP_CAPACITY {
        *buf = BytesMut::new();
    } else {
        buf.clear();
    }
}

/// A relay state lent for one transaction (or one session), returned to its
/// worker's spares when dropped: taking one is neither an allocation nor the
/// initialisation of 600 bytes, and the transaction's future holds a pointer.
pub struct PooledRelay(Option<Box<RelayState>>);

impl std::ops::Deref for PooledRelay {
    type Target = RelayState;
    fn deref(&self) -> &RelayState {
        match &self.0 {
            Some(relay) => relay,
            None => unreachable!("a PooledRelay holds its state until dropped"),
        }
    }
}

impl std::ops::DerefMut for PooledRelay {
    fn deref_mut(&mut self) -> &mut RelayState {
        match &mut self.0 {
            Some(relay) => relay,
            None => unreachable!("a PooledRelay holds its state until dropped"),
        }
    }
}

impl Drop for PooledRelay {
    fn drop(&mut self) {
        if let Some(relay) = self.0.take() {
            // `try_with`: during thread teardown the spares may already be gone.
            let _ = SPARE_RELAYS.try_with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < KEEP_RELAYS_PER_THREAD {
                    s.push(relay);
                }
            });
        }
    }
}

/// A relay state while its client waits for a server connection.
pub enum Queued {
    /// Kept: few clients wait, and the state comes back warm.
    Held(PooledRelay),
    /// Given back to the worker, keeping only the client bytes read before the
    /// wait (statement tracking): with many more clients than servers, the states
    /// in use stay about as few as the servers, and warm in cache.
    Stashed(Box<[u8]>),
}

impl Queued {
    /// `relay` for a wait behind `ahead` other clients. Held while the queue is
    /// shorter than the states a worker keeps (they come back warm; a stash would
    /// cost an allocation and two copies); stashed beyond, when its bytes were read
    /// with statement tracking (`read_client(.., true)`).
    pub fn new(relay: PooledRelay, tracked: bool, ahead: usize) -> Self {
        if tracked
            && ahead >= KEEP_RELAYS_PER_THREAD
            && relay.client_unread > 0
            && !relay.to_server.has_out()
        {
            Self::Stashed(Box::from(relay.unread_client_bytes()))
        } else {
            Self::Held(relay)
        }
    }

    /// The relay state again once the client has a server.
    pub fn resume(self, max_client_message: usize) -> PooledRelay {
        match self {
            Self::Held(relay) => relay,
            Self::Stashed(bytes) => {
                let mut relay = RelayState::take(max_client_message);
                relay.to_server.refill(&bytes);
                relay.client_unread = bytes.len();
                relay
            }
        }
    }
}

/// The relay's state for one client and one bound server connection.
pub struct RelayState {
    to_server: Leg,
    to_client: Leg,
    pub tracker: TxnTracker,
    client_end: Option<RelayEnd>,
    /// Part of a message the server will never see the end of was sent to it.
    server_dirty: bool,
    /// The server sent an ErrorResponse during this relay.
    pub server_error_seen: bool,
    /// Tracked parameters the server reported changed (the client set them).
    pub param_changes: ParamValues,
    /// A small server message split across reads, being collected.
    capture: Option<from_server::Capture>,
    /// Responses owed, for statement tracking.
    plan: ResponsePlan,
    /// Client bytes not yet cut into messages (statement tracking).
    client_inbox: BytesMut,
    /// Bytes of a large client message still to stream through untouched.
    client_stream_left: usize,
    /// Bytes read by `read_client` and not yet taken in (statement tracking).
    client_unread: usize,
    /// Server bytes not yet cut into messages (while editing responses).
    server_inbox: BytesMut,
    /// Answers the pooler owes the client, held until the server stream is at a
    /// message boundary.
    held_answers: BytesMut,
    max_client_message: usize,
    /// What the client's SQL may have done to session state (statement tracking).
    pub hints: SessionHints,
    /// A query that may drop prepared statements is in flight, or a Describe whose
    /// answer decides a Bind: later client messages wait in the inbox until every
    /// response owed is in.
    barrier: bool,
    /// The server answered an ErrorResponse and skips to the next Sync (cleared
    /// by ReadyForQuery).
    server_skipping: bool,
    /// The last Parse text the SQL pre-check found clean. Not client state (a fact
    /// about a string), so a recycled relay state keeps it.
    clean_parse: CleanMemo,
}

impl RelayState {
    /// What this relay moved, for metrics.
    pub fn counts(&self) -> crate::metrics::TxCounts {
        crate::metrics::TxCounts {
            queries: self.tracker.queries,
            bytes_in: self.to_server.total_read,
            bytes_out: self.to_client.total_read,
        }
    }

    /// True when the client has been sent whole messages only, so the pooler may
    /// add one of its own (a FATAL before closing).
    pub fn client_at_message_boundary(&self) -> bool {
        self.to_client.is_drained() && self.to_client.scanner.at_boundary()
    }

    /// Bytes moved so far in both directions (to tell an idle session).
    pub fn bytes_moved(&self) -> u64 {
        self.to_server.total_read + self.to_client.total_read
    }

    pub fn new(max_client_message: usize) -> Self {
        Self {
            to_server: Leg::new(max_client_message),
            to_client: Leg::new(DEFAULT_MAX_MESSAGE_LEN),
            tracker: TxnTracker::default(),
            client_end: None,
            server_dirty: false,
            server_error_seen: false,
            param_changes: ParamValues::default(),
            capture: None,
            plan: ResponsePlan::default(),
            client_inbox: BytesMut::new(),
            client_stream_left: 0,
            client_unread: 0,
            server_inbox: BytesMut::new(),
            held_answers: BytesMut::new(),
            max_client_message,
            hints: SessionHints::default(),
            barrier: false,
            server_skipping: false,
            clean_parse: CleanMemo::default(),
        }
    }

    /// A relay state for a new transaction: one this worker thread used before
    /// (its buffers and queues kept, everything else reset), else a new one.
    pub fn take(max_client_message: usize) -> PooledRelay {
        let spare = SPARE_RELAYS.with(|s| s.borrow_mut().pop());
        let relay = match spare {
            Some(mut relay) => {
                relay.reset(max_client_message);
                relay
            }
            None => Box::new(Self::new(max_client_message)),
        };
        PooledRelay(Some(relay))
    }

    /// Resets this state in place for another transaction, keeping its buffers and
    /// queues: no 600-byte move and no drop of the old value. Every field is named
    /// in the pattern (no `..`), so a field added later fails to compile until it
    /// is reset here.
    fn reset(&mut self, max_client_message: usize) {
        let Self {
            to_server,
            to_client,
            tracker,
            client_end,
            server_dirty,
            server_error_seen,
            param_changes,
            capture,
            plan,
            client_inbox,
            client_stream_left,
            client_unread,
            server_inbox,
            held_answers,
            max_client_message: max_message,
            hints,
            barrier,
            server_skipping,
            clean_parse: _,
        } = self;
        to_server.reset(max_client_message);
        to_client.reset(DEFAULT_MAX_MESSAGE_LEN);
        *tracker = TxnTracker::default();
        *client_end = None;
        *server_dirty = false;
        *server_error_seen = false;
        if !param_changes.is_empty() {
            *param_changes = ParamValues::default();
        }
        *capture = None;
        plan.reset();
        recycle_bytes(client_inbox);
        *client_stream_left = 0;
        *client_unread = 0;
        recycle_bytes(server_inbox);
        recycle_bytes(held_answers);
        *max_message = max_client_message;
        *hints = SessionHints::default();
        *barrier = false;
        *server_skipping = false;
    }

    /// True when the server connection can be reused once the tracker says idle:
    /// no partial message went to it, and nothing waits in either direction.
    pub fn server_reusable(&self) -> bool {
        !self.server_dirty
            && self.to_server.scanner.at_boundary()
            && self.to_client.scanner.at_boundary()
            && self.to_server.is_drained()
            && self.to_client.is_drained()
            && self.client_inbox.is_empty()
            && self.client_stream_left == 0
            && self.client_unread == 0
            && self.server_inbox.is_empty()
            && self.held_answers.is_empty()
            && self.plan.is_empty()
            && !self.barrier
    }

    /// The client bytes read before a server was bound (statement tracking).
    pub fn unread_client_bytes(&self) -> &[u8] {
        &self.to_server.buf.as_slice()[..self.client_unread]
    }

    /// Forgets the client bytes read before a server was bound: the pooler answered
    /// them itself.
    pub fn drop_unread_client_bytes(&mut self) {
        self.client_unread = 0;
        self.to_server.consume_raw();
    }

    /// True when bytes from the client wait to go to a server.
    pub fn has_client_bytes(&self) -> bool {
        self.to_server.has_raw() || self.client_unread > 0
    }

    /// Reads from an idle client (before a server is bound). Returns `Some(end)` if
    /// the client is leaving with nothing to forward; bytes before a Terminate are
    /// still forwarded by `run`. With `tracked`, bytes are taken in by `run`, which
    /// has the server's statements.
    pub async fn read_client(&mut self, client: &mut Stream, tracked: bool) -> Option<RelayEnd> {
        std::future::poll_fn(|cx| match self.to_server.poll_fill(client, cx) {
            Poll::Ready(Ok(0)) => Poll::Ready(Some(RelayEnd::ClientClosed)),
            Poll::Ready(Ok(n)) if tracked => {
                if self.to_server.buf.as_slice()[..n] == pgwire::frontend::TERMINATE_MESSAGE {
                    self.to_server.consume_raw();
                    return Poll::Ready(Some(RelayEnd::ClientTerminated));
                }
                self.client_unread = n;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(n)) => {
                let end = self.scan_client(n);
                if end.is_some() && !self.has_client_bytes() {
                    return Poll::Ready(end);
                }
                self.client_end = end;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(RelayEnd::ClientIo(e))),
            Poll::Pending => Poll::Pending,
        })
        .await
    }

    /// Forwards in both directions until `until` is met or a side ends.
    pub async fn run(
        &mut self,
        client: &mut Stream,
        server: &mut Stream,
        mut statements: Option<StatementCtx<'_>>,
        until: RelayUntil,
    ) -> RelayEnd {
        std::future::poll_fn(|cx| self.poll_run(client, server, statements.as_mut(), until, cx))
            .await
    }

    fn take_client_bytes(&mut self, n: usize, statements: Option<&mut StatementCtx<'_>>) {
        self.client_end = match statements {
            Some(ctx) => self.ingest_client(n, ctx),
            None => self.scan_client(n),
        };
    }

    fn poll_run(
        &mut self,
        client: &mut Stream,
        server: &mut Stream,
        mut statements: Option<&mut StatementCtx<'_>>,
        until: RelayUntil,
        cx: &mut Context<'_>,
    ) -> Poll<RelayEnd> {
        if self.client_unread > 0 {
            let n = std::mem::take(&mut self.client_unread);
            self.take_client_bytes(n, statements.as_deref_mut());
        }
        // A source that said Pending has registered this task's waker, which fires
        // when it has more: polling it again within this call would only say Pending
        // again, at the price of a readiness check.
        let mut client_waits = false;
        let mut server_waits = false;
        loop {
            let mut progress = false;
            if let Poll::Ready(Err(e)) = self.to_server.poll_drain(server, cx) {
                return Poll::Ready(RelayEnd::ServerIo(e));
            }
            if let Poll::Ready(Err(e)) = self.to_client.poll_drain(client, cx) {
                return Poll::Ready(RelayEnd::ClientIo(e));
            }
            if self.to_server.is_drained() && !self.barrier {
                if let Some(end) = self.client_end.take() {
                    return Poll::Ready(end);
                }
                if until == RelayUntil::TransactionEnd
                    && self.tracker.is_idle()
                    && self.server_reusable()
                {
                    return Poll::Ready(RelayEnd::Idle);
                }
                if until == RelayUntil::TransactionEnd
                    && statements.is_some()
                    && self.tracker.can_end_batch()
                    && self.server_reusable()
                {
                    // The client prepared named statements and flushed without Sync
                    // (asyncpg): end the batch here so the server can serve others;
                    // the statements follow the client to its next server.
                    pgwire::frontend::sync(&mut self.to_server.out);
                    self.plan.hidden(ResponseEnd::Ready, Undo::None);
                    self.tracker.on_pooler_sync();
                    continue;
                }
                if !client_waits {
                    match self.to_server.poll_fill(client, cx) {
                        Poll::Ready(Ok(0)) => {
                            self.client_end = Some(RelayEnd::ClientClosed);
                            progress = true;
                        }
                        Poll::Ready(Ok(n)) => {
                            self.take_client_bytes(n, statements.as_deref_mut());
                            progress = true;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ClientIo(e)),
                        Poll::Pending => client_waits = true,
                    }
                }
            }
            if self.to_client.is_drained() && !server_waits {
                match self.to_client.poll_fill(server, cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(RelayEnd::ServerClosed),
                    Poll::Ready(Ok(n)) => {
                        if let Err(e) = self.ingest_server(n, statements.as_deref_mut()) {
                            return Poll::Ready(RelayEnd::ServerProtocol(e));
                        }
                        if self.barrier && self.plan.is_empty() {
                            self.barrier = false;
                            if let Some(ctx) = statements.as_deref_mut() {
                                self.client_end = self.ingest_client(0, ctx);
                            }
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ServerIo(e)),
                    Poll::Pending => server_waits = true,
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Writes what the server sent and the client has not received yet (used when the
    /// server connection ended, so the client sees the server's last words).
    pub async fn flush_to_client(&mut self, client: &mut Stream) -> io::Result<()> {
        std::future::poll_fn(|cx| self.to_client.poll_drain(client, cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::responses::{ResponseEnd, Undo};

    /// A client queued for a server behind a long line gives its relay state back
    /// and gets one with the same bytes to forward when its turn comes.
    #[test]
    fn a_stashed_relay_comes_back_with_the_bytes_read() {
        let query = b"Q\0\0\0\x0dSELECT 1\0";
        let mut relay = RelayState::take(1000);
        relay.to_server.refill(query);
        relay.client_unread = query.len();
        // A short queue: kept.
        let Queued::Held(relay) = Queued::new(relay, true, KEEP_RELAYS_PER_THREAD - 1) else {
            panic!("stashed behind a short queue");
        };
        let queued = Queued::new(relay, true, KEEP_RELAYS_PER_THREAD);
        assert!(matches!(queued, Queued::Stashed(ref b) if &b[..] == query));
        let relay = queued.resume(1000);
        assert_eq!(relay.unread_client_bytes(), query);
        assert!(relay.has_client_bytes());
        assert_eq!(relay.counts().bytes_in, query.len() as u64);
        // Nothing read with tracking (or not asked to): kept as it is.
        assert!(matches!(
            Queued::new(RelayState::take(1000), true, 1000),
            Queued::Held(_)
        ));
        let mut relay = RelayState::take(1000);
        relay.to_server.refill(query);
        relay.client_unread = query.len();
        assert!(matches!(Queued::new(relay, false, 1000), Queued::Held(_)));
    }

    /// A relay state used by one transaction comes back to the next one as new:
    /// nothing of the first transaction (or client) is carried over.
    #[test]
    fn a_recycled_relay_starts_clean() {
        let first_box = {
            let mut relay = RelayState::take(1000);
            relay.hints.pin = true;
            relay.hints.settings = true;
            relay.server_error_seen = true;
            relay.barrier = true;
            relay.client_unread = 7;
            relay.client_stream_left = 9;
            relay.server_dirty = true;
            relay.client_end = Some(RelayEnd::ClientClosed);
            relay.to_server.end = 3;
            relay.server_inbox.extend_from_slice(b"partial");
            relay.param_changes.set("application_name", "first");
            relay.plan.forward(ResponseEnd::Ready, Undo::None);
            relay.client_inbox.extend_from_slice(b"left over");
            relay.held_answers.extend_from_slice(b"answers");
            relay.to_client.out.extend_from_slice(b"owed");
            relay.to_server.total_read = 99;
            relay.tracker.queries = 3;
            &*relay as *const RelayState as usize
        };
        let relay = RelayState::take(2000);
        assert_eq!(&*relay as *const RelayState as usize, first_box, "reused");
        assert!(!relay.hints.pin && !relay.hints.settings);
        assert!(!relay.server_error_seen && !relay.barrier);
        assert_eq!(relay.client_unread, 0);
        assert_eq!(relay.client_stream_left, 0);
        assert!(!relay.server_dirty && relay.client_end.is_none());
        assert!(!relay.has_client_bytes() && relay.server_inbox.is_empty());
        assert!(relay.param_changes.is_empty());
        assert!(relay.plan.is_empty() && relay.plan.is_plain());
        assert!(relay.client_inbox.is_empty() && relay.held_answers.is_empty());
        assert!(relay.to_client.out.is_empty());
        assert_eq!(relay.bytes_moved(), 0);
        assert_eq!(relay.tracker.queries, 0);
        assert_eq!(relay.max_client_message, 2000);
        assert!(relay.server_reusable() && relay.tracker.is_idle());
    }
}
