//! Full-duplex forwarding between a client and its bound server connection.
//!
//! Both directions move in one task, each through its own buffer: bytes read from one
//! side are scanned for message heads (no decoding, no copy) and written to the other
//! side as they are. A side is only read while its previous bytes are written, which
//! is the back-pressure; the other direction keeps moving meanwhile, so the client
//! and the server can never wait on each other. All state lives in [`RelayState`], so
//! the future that drives it can be dropped at any await point without losing bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pgwire::{MessageScanner, WireError, DEFAULT_MAX_MESSAGE_LEN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::txn::{ClientIntent, TxnTracker};
use crate::bufpool::RelayBuf;
use crate::params::ParamValues;
use crate::stream::Stream;

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

/// One direction: a buffer of bytes read and not yet written, and its scanner.
struct Leg {
    buf: RelayBuf,
    start: usize,
    end: usize,
    needs_flush: bool,
    scanner: MessageScanner,
}

impl Leg {
    fn new(max_message: usize) -> Self {
        Self {
            buf: RelayBuf::take(),
            start: 0,
            end: 0,
            needs_flush: false,
            scanner: MessageScanner::new(max_message),
        }
    }

    fn is_drained(&self) -> bool {
        self.start == self.end && !self.needs_flush
    }

    /// Writes everything buffered to `to`, then flushes it.
    fn poll_drain(&mut self, to: &mut Stream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.start < self.end {
            let chunk = &self.buf.as_slice()[self.start..self.end];
            match Pin::new(&mut *to).poll_write(cx, chunk) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.start += n;
                    self.needs_flush = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.start = 0;
        self.end = 0;
        if self.needs_flush {
            match Pin::new(&mut *to).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads what `from` has into the empty buffer; returns the byte count (0 at EOF).
    fn poll_fill(&mut self, from: &mut Stream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(self.buf.as_mut_slice());
        match Pin::new(from).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                self.start = 0;
                self.end = n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
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
    /// A ParameterStatus body split across reads, being collected.
    capture: Option<Capture>,
}

/// Longest ParameterStatus body collected; longer ones are forwarded but not tracked.
const MAX_CAPTURE: usize = 8 * 1024;

/// Part of a ParameterStatus body, and how many bytes are still to come.
struct Capture {
    body: Vec<u8>,
    missing: usize,
}

fn record_param(body: &[u8], changes: &mut ParamValues) {
    let frame = pgwire::Frame {
        tag: pgwire::tag::PARAMETER_STATUS,
        body,
    };
    if let Ok(pgwire::backend::BackendMessage::ParameterStatus { name, value }) =
        pgwire::backend::BackendMessage::decode(frame)
    {
        changes.set(name, value);
    }
}

impl RelayState {
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
        }
    }

    /// True when the server connection can be reused once the tracker says idle:
    /// no partial message went to it, and no bytes wait in either direction.
    pub fn server_reusable(&self) -> bool {
        !self.server_dirty
            && self.to_server.scanner.at_boundary()
            && self.to_client.scanner.at_boundary()
            && self.to_server.is_drained()
            && self.to_client.is_drained()
    }

    /// Reads from an idle client straight into the relay buffer (before a server is
    /// bound), scanning what arrives. Returns `Some(end)` if the client is leaving with
    /// nothing to forward; bytes before a Terminate are still forwarded by `run`.
    pub async fn read_client(&mut self, client: &mut Stream) -> Option<RelayEnd> {
        std::future::poll_fn(|cx| match self.to_server.poll_fill(client, cx) {
            Poll::Ready(Ok(0)) => Poll::Ready(Some(RelayEnd::ClientClosed)),
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

    /// True when bytes from the client wait to go to a server.
    pub fn has_client_bytes(&self) -> bool {
        self.to_server.start < self.to_server.end
    }

    /// Scans `n` fresh client bytes; cuts a Terminate out of the stream.
    fn scan_client(&mut self, n: usize) -> Option<RelayEnd> {
        let tracker = &mut self.tracker;
        let mut terminate_at: Option<isize> = None;
        let chunk = &self.to_server.buf.as_slice()[..n];
        let scanned = self.to_server.scanner.scan::<WireError>(chunk, |head| {
            if terminate_at.is_none() && tracker.on_client_message(&head) == ClientIntent::Terminate
            {
                terminate_at = Some(head.start);
            }
            Ok(())
        });
        if let Some(at) = terminate_at {
            if at < 0 {
                self.server_dirty = true;
            }
            self.to_server.end = at.max(0) as usize;
            return Some(RelayEnd::ClientTerminated);
        }
        if let Err(e) = scanned {
            self.to_server.end = 0;
            return Some(RelayEnd::ClientProtocol(e));
        }
        None
    }

    /// Forwards in both directions until `until` is met or a side ends.
    pub async fn run(
        &mut self,
        client: &mut Stream,
        server: &mut Stream,
        until: RelayUntil,
    ) -> RelayEnd {
        std::future::poll_fn(|cx| self.poll_run(client, server, until, cx)).await
    }

    fn poll_run(
        &mut self,
        client: &mut Stream,
        server: &mut Stream,
        until: RelayUntil,
        cx: &mut Context<'_>,
    ) -> Poll<RelayEnd> {
        loop {
            let mut progress = false;
            if let Poll::Ready(Err(e)) = self.to_server.poll_drain(server, cx) {
                return Poll::Ready(RelayEnd::ServerIo(e));
            }
            if let Poll::Ready(Err(e)) = self.to_client.poll_drain(client, cx) {
                return Poll::Ready(RelayEnd::ClientIo(e));
            }
            if self.to_server.is_drained() {
                if let Some(end) = self.client_end.take() {
                    return Poll::Ready(end);
                }
                if until == RelayUntil::TransactionEnd
                    && self.tracker.is_idle()
                    && self.server_reusable()
                {
                    return Poll::Ready(RelayEnd::Idle);
                }
                match self.to_server.poll_fill(client, cx) {
                    Poll::Ready(Ok(0)) => {
                        self.client_end = Some(RelayEnd::ClientClosed);
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        self.client_end = self.scan_client(n);
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ClientIo(e)),
                    Poll::Pending => {}
                }
            }
            if self.to_client.is_drained() {
                match self.to_client.poll_fill(server, cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(RelayEnd::ServerClosed),
                    Poll::Ready(Ok(n)) => {
                        if let Err(e) = self.scan_server(n) {
                            return Poll::Ready(RelayEnd::ServerProtocol(e));
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::ServerIo(e)),
                    Poll::Pending => {}
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Scans `n` fresh server bytes: ReadyForQuery status, errors, and the
    /// ParameterStatus messages the session must know about.
    fn scan_server(&mut self, n: usize) -> Result<(), WireError> {
        let Leg { buf, scanner, .. } = &mut self.to_client;
        let chunk = &buf.as_slice()[..n];
        let changes = &mut self.param_changes;
        if let Some(capture) = &mut self.capture {
            let take = capture.missing.min(n);
            capture.body.extend_from_slice(&chunk[..take]);
            capture.missing -= take;
            if capture.missing == 0 {
                record_param(&capture.body, changes);
                self.capture = None;
            }
        }
        let tracker = &mut self.tracker;
        let error_seen = &mut self.server_error_seen;
        let capture = &mut self.capture;
        scanner.scan::<WireError>(chunk, |head| {
            *error_seen |= head.tag == pgwire::tag::ERROR_RESPONSE;
            tracker.on_server_message(&head);
            if head.tag == pgwire::tag::PARAMETER_STATUS && head.body_len <= MAX_CAPTURE {
                // The head is reported once its first body byte is in this chunk.
                let body_start = (head.start + 5).max(0) as usize;
                let body_end = body_start + head.body_len;
                if body_end <= n {
                    record_param(&chunk[body_start..body_end], changes);
                } else {
                    *capture = Some(Capture {
                        body: chunk[body_start..].to_vec(),
                        missing: body_end - n,
                    });
                }
            }
            Ok(())
        })
    }

    /// Writes what the server sent and the client has not received yet (used when the
    /// server connection ended, so the client sees the server's last words).
    pub async fn flush_to_client(&mut self, client: &mut Stream) -> io::Result<()> {
        std::future::poll_fn(|cx| self.to_client.poll_drain(client, cx)).await
    }
}
