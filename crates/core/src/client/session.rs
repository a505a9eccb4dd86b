//! One client connection from accept to close: after the login (`login`), serving
//! it in transaction mode (a server borrowed per transaction, LISTEN through the
//! pool's hub, pinning when session state cannot move) or session mode, until it
//! leaves or the pooler shuts down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgwire::{backend, TransactionStatus};

use super::login::{apply_params, client_error_of, login, params_sql, send_fatal};
use super::park::NOT_PARKING;
use super::relay::{PooledRelay, Queued, RelayEnd, RelayState, RelayUntil, StatementCtx};
use super::statements::ClientStatements;
use crate::app::App;
use crate::cancel::{CancelTarget, ClientKey};
use crate::config::User;
use crate::error::ClientError;
use crate::framed::send;
use crate::listener::Peer;
use crate::params::{ParamValues, SessionSettings, NO_SETTINGS};
use crate::server::pool::{CheckoutError, Lease, Pool};
use crate::server::reset::{clean, close_statements, read_session_settings};
use crate::signal::Watch;
use crate::sql_hint::{listen_command, ListenCommand};
use crate::stream::{Bare, Stream};
use crate::tenants::{ClientSlot, GoneReason};

/// A logged-in client. `S` is its connection: a [`Stream`] while it has a task, a
/// bare socket while it is parked (see `park`).
pub(super) struct Session<S = Stream> {
    pub(super) app: Arc<App>,
    pub(super) stream: S,
    pub(super) pool: Arc<Pool>,
    /// The tenant and user at login; after a reload their names find the new ones.
    pub(super) tenant: Arc<crate::config::Tenant>,
    pub(super) user: Arc<User>,
    pub(super) cancel_key: ClientKey,
    pub(super) cancel: Arc<CancelTarget>,
    pub(super) max_message: usize,
    /// Session parameters this client has set (at startup or with SET); shared
    /// with other clients that want the same, copied on write.
    pub(super) wanted: Arc<ParamValues>,
    /// Named prepared statements of this client, when tracked (transaction mode).
    pub(super) statements: Option<ClientStatements>,
    /// Unreported session settings this client has set (transaction mode), if any.
    pub(super) settings: Option<Box<SessionSettings>>,
    /// Where this client's notifications arrive, once it LISTENs (transaction mode).
    pub(super) listening: Option<Box<Listening>>,
    /// This client's watch on its tenant's `stop` signal (ends it when idle).
    pub(super) stop: Watch,
    /// ... and on `kill` (ends it at once, mid-transaction too).
    pub(super) kill: Watch,
    /// The tenant's client_idle_timeout timer, reused across waits (none when off).
    pub(super) idle_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// This client's place in its tenant's and user's counts.
    pub(super) slot: ClientSlot,
    /// The parking clock when the current idle wait began.
    pub(super) idle_since: u32,
}

/// The notifications of a transaction-mode client that LISTENs.
pub(super) struct Listening {
    inbox: crate::listen::Inbox,
    sink: tokio::sync::mpsc::Sender<bytes::Bytes>,
}

/// What woke an idle transaction-mode client.
enum Event {
    /// The client's socket failed.
    Closed,
    Shutdown,
    IdleTimeout,
    Notification(bytes::Bytes),
    Readable,
    /// Idle long enough to leave the runtime (see `park`).
    Park,
}

/// Why a client's task stopped serving it.
enum Until {
    Left,
    Park,
}

/// Whether a client's session goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// How long a client cut off mid-transaction is given to take what it is owed.
const KILL_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// A step a transaction rarely takes (an error to report, a pinned session, a
/// round trip to clean up), run out of line: its state lives on the heap and its
/// code behind a pointer, so neither takes room in the future every query goes
/// through, nor in the instruction cache that future runs from.
#[cold]
#[inline(never)]
fn cold<'a, T>(
    step: impl Future<Output = T> + Send + 'a,
) -> Pin<Box<dyn Future<Output = T> + Send + 'a>> {
    Box::pin(step)
}

/// Sleeps for `limit`, or forever when there is none.
async fn sleep_for(limit: Option<std::time::Duration>) {
    match limit {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// A lone simple-Query LISTEN / UNLISTEN: the whole of what the client sent.
fn lone_listen(bytes: &[u8]) -> Option<ListenCommand> {
    let frame = pgwire::frame::decode_frame(bytes, bytes.len()).ok()??;
    if frame.tag != pgwire::tag::QUERY || frame.wire_len() != bytes.len() {
        return None;
    }
    // Cheap test first: this runs for every transaction.
    let start = frame.body.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = frame.body.get(start..start + 6)?;
    if !head.eq_ignore_ascii_case(b"listen") && !head.eq_ignore_ascii_case(b"unlist") {
        return None;
    }
    listen_command(pgwire::frontend::decode_query(frame.body).ok()?)
}

/// A client connection just accepted.
pub struct Accepted {
    pub app: Arc<App>,
    pub stream: Stream,
    pub peer: Peer,
}

/// Serves one accepted client connection to its end. The connection comes boxed:
/// a future keeps its arguments for its whole life, and this one lives as long
/// as the client.
pub async fn serve(accepted: Box<Accepted>) {
    // Login state (SCRAM, buffers) lives on the heap only while logging in, and so
    // does a session-mode client's whole life.
    let Some(session) = Box::pin(settle(accepted)).await else {
        return;
    };
    // Then the client is placed, its watch also on the heap (after the login's
    // state is freed); what stays in this task is a transaction-mode client that
    // could not be parked.
    let Some(session) = Box::pin(place(session)).await else {
        return;
    };
    run_transactions::<Boxed>(session, false).await;
}

/// Places a transaction-mode client just logged in. Many wait a while before
/// their first query (an application's connection pool much longer): they are
/// parked. One whose query comes at once (a short-lived or serverless client)
/// is served from a task of its own instead, without the four epoll_ctl calls of
/// a park and a resume. `None` when it is placed; the session back when it
/// cannot be parked.
async fn place(session: Session) -> Option<Session> {
    let mut session = session;
    if session.parkable() && session.app.parking().is_some() && session.first_query_soon().await {
        // A client that only logs in and leaves (a health check, a storm) is seen
        // off here, without a task of its own.
        let mut head = [0u8; LEAVING_PEEK];
        if leaving(session.stream.try_peek(&mut head), &head) {
            session.leave();
            return None;
        }
        let app = session.app.clone();
        app.spawn_client_here(run_transactions::<Inline>(session, false));
        return None;
    }
    session.park()
}

/// Bytes to peek at on a client's socket to see a lone Terminate: one more than
/// the message.
const LEAVING_PEEK: usize = pgwire::frontend::TERMINATE_MESSAGE.len() + 1;

/// Whether what a peek at an idle client's socket found (`peeked`, with the bytes
/// in `head`) says the client is leaving: the end of the stream, a failed socket,
/// or a Terminate and nothing after it.
fn leaving(peeked: std::io::Result<usize>, head: &[u8]) -> bool {
    match peeked {
        Ok(0) => true,
        Ok(n) => head.get(..n) == Some(&pgwire::frontend::TERMINATE_MESSAGE[..]),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

/// Logs the client in and serves it if it is in session mode; a transaction-mode
/// client is returned, for `serve` to park or serve.
async fn settle(accepted: Box<Accepted>) -> Option<Session> {
    let Accepted { app, stream, peer } = *accepted;
    let (mut session, pinned) = login(&app, stream, peer).await?;
    match pinned {
        Some(lease) => {
            session.run_session(*lease).await;
            session.leave();
            None
        }
        None => Some(session),
    }
}

/// How long a client just logged in is watched for its first query before it is
/// parked.
const FIRST_QUERY_GRACE: Duration = Duration::from_millis(2);

/// Where a client's task keeps the state of what it is handling (a transaction,
/// mostly): a choice of type, so that each kind of task is only as large as it
/// needs.
trait Handling {
    fn handle(session: &mut Session, event: Event) -> impl Future<Output = Flow> + Send + '_;
}

/// Inline, in the task: no allocation per transaction. For clients that have
/// been parked (plain TCP, transaction mode): when idle for long they leave
/// their task, so its size matters only while they work.
struct Inline;

/// On the heap while it runs: the task stays small. For clients that may idle in
/// their task (TLS, LISTEN, parking off or refused).
struct Boxed;

impl Handling for Inline {
    fn handle(session: &mut Session, event: Event) -> impl Future<Output = Flow> + Send + '_ {
        session.handle(event)
    }
}

impl Handling for Boxed {
    fn handle(session: &mut Session, event: Event) -> impl Future<Output = Flow> + Send + '_ {
        Box::pin(session.handle(event))
    }
}

/// A transaction-mode client's task: serves it, parks it when it has been idle
/// long enough, and gives back what it holds when it leaves.
///
/// Written as a block that owns the session, not as an `async fn` taking it: an
/// `async fn` would keep its argument twice in the task's memory.
#[allow(clippy::manual_async_fn)]
fn run_transactions<M: Handling>(
    mut session: Session,
    timed_out: bool,
) -> impl Future<Output = ()> + Send {
    async move {
        if timed_out {
            M::handle(&mut session, Event::IdleTimeout).await;
            session.leave();
            return;
        }
        let mut new_wait = true;
        while let Until::Park = session.serve_in_task::<M>(new_wait).await {
            match session.park() {
                None => return,
                Some(back) => {
                    // Not in this wait, then.
                    session = back;
                    session.idle_since = NOT_PARKING;
                    new_wait = false;
                }
            }
        }
        session.leave();
    }
}

/// Gives a parked client a task again: `timed_out` when its client_idle_timeout
/// passed while it was parked. Runs on the runtime (the socket joins its reactor).
pub(super) fn resume(parked: Session<Bare>, timed_out: bool) {
    if !timed_out {
        // A client that left while parked needs no task: when an application's
        // pool of connections closes at once, one full-size task each, all alive
        // together, would raise the memory that stays with the process.
        let mut head = [0u8; LEAVING_PEEK];
        if leaving(parked.stream.peek(&mut head), &head) {
            parked.leave();
            return;
        }
    }
    let app = parked.app.clone();
    // Registered with the reactor of the runtime the task runs on (the least
    // busy shard, when there are shards).
    app.spawn_client(async move {
        let (bare, socket) = parked.with_stream(());
        match socket.into_stream() {
            Ok(stream) => {
                let session = bare.with_stream(stream).0;
                run_transactions::<Inline>(session, timed_out).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take a parked client back into the runtime; closing it");
                bare.leave();
            }
        }
    });
}

impl Session {
    /// Whether the client sends something (or hangs up) within
    /// [`FIRST_QUERY_GRACE`].
    async fn first_query_soon(&mut self) -> bool {
        let ready = std::future::poll_fn(|cx| self.stream.poll_read_ready(cx));
        matches!(
            tokio::time::timeout(FIRST_QUERY_GRACE, ready).await,
            Ok(Ok(()))
        )
    }
}

impl<S> Session<S> {
    /// The same client on another connection type; returns the old one.
    pub(super) fn with_stream<T>(self, stream: T) -> (Session<T>, S) {
        let Session {
            app,
            stream: old,
            pool,
            tenant,
            user,
            cancel_key,
            cancel,
            max_message,
            wanted,
            statements,
            settings,
            listening,
            stop,
            kill,
            idle_sleep,
            slot,
            idle_since,
        } = self;
        let session = Session {
            app,
            stream,
            pool,
            tenant,
            user,
            cancel_key,
            cancel,
            max_message,
            wanted,
            statements,
            settings,
            listening,
            stop,
            kill,
            idle_sleep,
            slot,
            idle_since,
        };
        (session, old)
    }

    /// What a leaving client gives back: its LISTENs and its cancel key.
    pub(super) fn leave(&self) {
        if let Some(hub) = self.pool.listen_hub.get() {
            hub.unlisten_all(self.client_id());
        }
        self.app.cancels.unregister(self.cancel_key);
    }

    fn client_id(&self) -> u64 {
        u64::from(self.cancel_key.process_id)
    }
}

impl Session {
    /// Borrows a server from this client's pool. A reload may have replaced the pool
    /// (new upstream or credentials): then the client moves to the new one.
    async fn checkout(&mut self) -> Result<Lease, ClientError> {
        match self.pool.checkout().await {
            Err(CheckoutError::Closed) if self.stop.is_fired() => Err(self.gone_error()),
            Err(CheckoutError::Closed) if !self.app.shutdown.is_cancelled() => {
                cold(self.checkout_from_new_pool()).await
            }
            other => other.map_err(client_error_of),
        }
    }

    /// Borrows a server from the pool that replaced this client's closed one.
    async fn checkout_from_new_pool(&mut self) -> Result<Lease, ClientError> {
        let entry = self
            .app
            .tenants
            .get(&self.tenant.id)
            .ok_or(ClientError::Removed)?;
        let tenant = entry.tenant;
        let user = match tenant.user(&self.user.name) {
            Some(u) => u.clone(),
            // Found through auth_query at login. A later login of the same user may
            // have opened a pool with a newer verifier: join it rather than replace
            // it; otherwise open one with the verifier this client logged in with.
            None if self.tenant.user(&self.user.name).is_none()
                && crate::client::auth_query::applies(&tenant) =>
            {
                if let Some(pool) = self.app.open_pool(&tenant, &self.user.name) {
                    self.pool = pool;
                    self.tenant = tenant;
                    return self.pool.checkout().await.map_err(client_error_of);
                }
                self.user.clone()
            }
            None => return Err(ClientError::Removed),
        };
        self.pool = self
            .app
            .pool(&tenant, &user)
            .map_err(|_| ClientError::ServerUnavailable)?;
        self.tenant = tenant;
        self.user = user;
        self.pool.checkout().await.map_err(client_error_of)
    }

    /// What a client sent away by its signals is told.
    fn gone_error(&self) -> ClientError {
        if self.app.shutdown.is_cancelled() {
            return ClientError::Terminated;
        }
        let tenant = self.tenant.id.clone();
        match self.slot_reason() {
            Some(GoneReason::Deleted) => ClientError::TenantDeleted { tenant },
            Some(GoneReason::Terminated) => ClientError::TenantTerminated { tenant },
            Some(GoneReason::Changed) | None => ClientError::Terminated,
        }
    }

    /// Adds what one relay, started at `started`, did to the pool's statistics;
    /// returns the time it ended (read once, for the release too).
    fn count_work(&self, relay: &RelayState, lease: &mut Lease, started: Instant) -> Instant {
        let stats = &self.pool.metrics;
        let ended = Instant::now();
        stats.add_transaction(&relay.counts(), ended.saturating_duration_since(started));
        stats.add_statements(std::mem::take(&mut lease.conn.statements.counts));
        ended
    }

    /// Tells a client cut off mid-transaction (its tenant deleted or terminated,
    /// or the shutdown timeout; callers check `kill`) why, when that cannot break
    /// a message in half.
    async fn tell_killed(&mut self, relay: &mut RelayState) {
        // Whole messages still owed to the client go first (briefly: a client
        // that does not read is not waited for), then the reason.
        let flush = relay.flush_to_client(&mut self.stream);
        let _ = tokio::time::timeout(KILL_FLUSH_TIMEOUT, flush).await;
        if relay.client_at_message_boundary() {
            let e = self.gone_error();
            send_fatal(&mut self.stream, &e).await;
        }
    }

    fn slot_reason(&self) -> Option<GoneReason> {
        self.slot.tenant().gone_reason()
    }

    /// Answers a lone LISTEN or UNLISTEN through the pool's listener connection.
    async fn serve_listen(&mut self, command: ListenCommand) -> std::io::Result<()> {
        let hub = self.app.listen_hub(&self.pool);
        let client = self.client_id();
        let mut out = BytesMut::with_capacity(64);
        match command {
            ListenCommand::Listen(channel) => {
                let sink = match &self.listening {
                    Some(l) => l.sink.clone(),
                    None => {
                        let (sink, inbox) = tokio::sync::mpsc::channel(crate::listen::CLIENT_QUEUE);
                        let listening = Listening {
                            inbox,
                            sink: sink.clone(),
                        };
                        self.listening = Some(Box::new(listening));
                        sink
                    }
                };
                let wait = self.pool.limits().connect_timeout + std::time::Duration::from_secs(5);
                match tokio::time::timeout(wait, hub.listen(channel, client, sink)).await {
                    Ok(Ok(())) => backend::command_complete("LISTEN", &mut out),
                    _ => backend::error_response(
                        &backend::ErrorFields {
                            severity: backend::Severity::Error,
                            code: "08006",
                            message:
                                "could not LISTEN: the pooler's listener connection is unavailable",
                            detail: None,
                            hint: None,
                        },
                        &mut out,
                    ),
                }
            }
            ListenCommand::Unlisten(channel) => {
                hub.unlisten(channel, client);
                backend::command_complete("UNLISTEN", &mut out);
            }
            ListenCommand::UnlistenAll => {
                hub.unlisten_all(client);
                backend::command_complete("UNLISTEN", &mut out);
            }
        }
        backend::ready_for_query(TransactionStatus::Idle, &mut out);
        send(&mut self.stream, &mut out).await
    }

    /// Transaction mode, in the client's task: wait idle without a buffer or a
    /// server; on the first bytes of a transaction, borrow a server, relay until
    /// the transaction ends, give the server back. Returns when the client leaves
    /// or has been idle long enough to be parked. `new_wait` is false when the
    /// wait before a refused park goes on (its idle timer keeps running).
    async fn serve_in_task<M: Handling>(&mut self, mut new_wait: bool) -> Until {
        loop {
            if new_wait {
                self.start_idle_wait();
            }
            new_wait = true;
            // The wait keeps no state of its own; what follows is kept as `M` says.
            let event = std::future::poll_fn(|cx| self.poll_idle(cx)).await;
            if let Event::Park = event {
                return Until::Park;
            }
            if M::handle(self, event).await == Flow::Stop {
                return Until::Left;
            }
        }
    }

    /// Arms the idle timer and notes the parking clock.
    fn start_idle_wait(&mut self) {
        if let (Some(sleep), Some(limit)) =
            (self.idle_sleep.as_mut(), self.tenant.client_idle_timeout)
        {
            sleep.as_mut().reset(tokio::time::Instant::now() + limit);
        } else if let Some(limit) = self.tenant.client_idle_timeout {
            self.idle_sleep = Some(Box::pin(tokio::time::sleep(limit)));
        }
        self.idle_since = if self.parkable() {
            self.app.parking_clock()
        } else {
            NOT_PARKING
        };
    }

    /// Acts on what woke an idle client.
    async fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Closed => Flow::Stop,
            Event::Shutdown => {
                let e = self.gone_error();
                cold(send_fatal(&mut self.stream, &e)).await;
                Flow::Stop
            }
            Event::IdleTimeout => {
                cold(send_fatal(&mut self.stream, &ClientError::IdleTimeout)).await;
                Flow::Stop
            }
            // Delivered between transactions, as Postgres does.
            Event::Notification(n) => cold(self.notify(n)).await,
            Event::Readable => self.transaction().await,
            // Handled by the caller, which owns the session.
            Event::Park => Flow::Continue,
        }
    }

    /// What ends an idle wait, in this order: the stop signal, the idle timer, a
    /// notification, bytes from the client.
    fn poll_idle(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Event> {
        use std::task::Poll;
        if self.stop.poll_fired(cx).is_ready() {
            return Poll::Ready(Event::Shutdown);
        }
        if let Some(sleep) = self.idle_sleep.as_mut() {
            if std::future::Future::poll(sleep.as_mut(), cx).is_ready() {
                return Poll::Ready(Event::IdleTimeout);
            }
        }
        if let Some(listening) = self.listening.as_mut() {
            // A closed inbox (its hub gone) has nothing more to deliver.
            if let Poll::Ready(Some(n)) = listening.inbox.poll_recv(cx) {
                return Poll::Ready(Event::Notification(n));
            }
        }
        match self.stream.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Event::Readable),
            Poll::Ready(Err(_)) => Poll::Ready(Event::Closed),
            Poll::Pending if self.idle_long_enough() => Poll::Ready(Event::Park),
            Poll::Pending => Poll::Pending,
        }
    }

    async fn notify(&mut self, notification: bytes::Bytes) -> Flow {
        let mut out = BytesMut::from(&notification[..]);
        match send(&mut self.stream, &mut out).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop,
        }
    }

    /// Serves one transaction (or one LISTEN) of a transaction-mode client whose
    /// socket just became readable.
    async fn transaction(&mut self) -> Flow {
        let mut relay = RelayState::take(self.max_message);
        let tracked = self.statements.is_some();
        if let Some(end) = relay.read_client(&mut self.stream, tracked).await {
            if let RelayEnd::ClientProtocol(e) = end {
                cold(send_fatal(&mut self.stream, &ClientError::Protocol(e))).await;
            }
            return Flow::Stop;
        }
        if let Some(command) = lone_listen(relay.unread_client_bytes()) {
            relay.drop_unread_client_bytes();
            return match cold(self.serve_listen(command)).await {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Stop,
            };
        }
        let queued = Queued::new(relay, tracked, self.pool.queued());
        let mut lease = match self.pool.try_checkout() {
            Some(l) => l,
            None => match self.checkout().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(pool = %self.pool.name, error = %e, "checkout failed");
                    cold(send_fatal(&mut self.stream, &e)).await;
                    return Flow::Stop;
                }
            },
        };
        let mut relay = queued.resume(self.max_message);
        let settings = self.settings.as_deref().unwrap_or(&NO_SETTINGS);
        if let Some(sql) = params_sql(&self.wanted, settings, &mut lease) {
            if let Err(e) = cold(apply_params(&mut self.wanted, settings, &mut lease, &sql)).await {
                tracing::warn!(pool = %self.pool.name, error = %e, "cannot apply the client's settings");
                self.pool.discard(lease);
                cold(send_fatal(&mut self.stream, &e)).await;
                return Flow::Stop;
            }
        }
        self.cancel.bind(lease.conn.backend);
        let started = Instant::now();
        let end = tokio::select! {
            end = relay.run(
                &mut self.stream,
                &mut lease.conn.stream,
                self.statements.as_mut().map(|client| StatementCtx {
                    client,
                    server: &mut lease.conn.statements,
                }),
                RelayUntil::TransactionEnd,
            ) => end,
            _ = self.kill.fired() => RelayEnd::ClientIo(std::io::ErrorKind::TimedOut.into()),
        };
        let ended = self.count_work(&relay, &mut lease, started);
        let killed = self.kill.is_fired();
        if killed {
            cold(self.tell_killed(&mut relay)).await;
        }
        if !self.cancel.unbind_now() {
            cold(self.cancel.wait_unbound()).await;
        }
        if !relay.param_changes.is_empty() {
            Arc::make_mut(&mut self.wanted).apply(&relay.param_changes);
        }
        lease.conn.current.apply(&relay.param_changes);
        if killed || !matches!(end, RelayEnd::Idle) {
            cold(self.finish(lease, &mut relay, end, None)).await;
            return Flow::Stop;
        }
        if relay.hints.pin {
            // Session state that cannot move (advisory lock, temp table, ...): this
            // client keeps this server from now on.
            tracing::debug!(pool = %self.pool.name, server = lease.conn.id, "client pinned to its server");
            cold(self.run_pinned(lease, relay)).await;
            return Flow::Stop;
        }
        if relay.hints.settings {
            match cold(read_session_settings(&mut lease.conn)).await {
                Some(settings) => {
                    self.settings = (!settings.is_empty()).then(|| Box::new(settings));
                }
                None => {
                    self.pool.discard(lease);
                    cold(send_fatal(&mut self.stream, &ClientError::ServerLost)).await;
                    return Flow::Stop;
                }
            }
        }
        if lease.conn.statements.has_strays() {
            let strays = lease.conn.statements.take_strays();
            if !cold(close_statements(&mut lease.conn, &strays)).await {
                // The client's transaction is done; only this server is lost.
                self.pool.discard(lease);
                return Flow::Continue;
            }
        }
        // The end of the relay stands for the time it was last used (the settings
        // read above takes a round trip at most).
        self.pool.release_at(lease, ended);
        Flow::Continue
    }

    /// Session mode: relay for the client's life; on shutdown, stop at the next idle
    /// point.
    async fn run_session(&mut self, lease: Lease) {
        let relay = RelayState::take(self.max_message);
        self.run_pinned(lease, relay).await;
    }

    /// Relays for the rest of the client's life on one server (session mode, or a
    /// transaction-mode client pinned by session state); on shutdown, stops at the
    /// next idle point. The server is reset before it goes back to the pool.
    async fn run_pinned(&mut self, mut lease: Lease, mut relay: PooledRelay) {
        self.cancel.bind(lease.conn.backend);
        let started = Instant::now();
        let mut until = RelayUntil::ClientLeaves;
        // client_idle_timeout: every period, a client that moved no byte and sits
        // outside a transaction is let go.
        let idle_limit = self.tenant.client_idle_timeout;
        let mut moved = relay.bytes_moved();
        let mut idle_out = false;
        let end = loop {
            let statements = self.statements.as_mut().map(|client| StatementCtx {
                client,
                server: &mut lease.conn.statements,
            });
            let end = tokio::select! {
                end = relay.run(&mut self.stream, &mut lease.conn.stream, statements, until) => end,
                _ = self.stop.fired(), if until == RelayUntil::ClientLeaves => {
                    until = RelayUntil::TransactionEnd;
                    continue;
                }
                _ = self.kill.fired() => RelayEnd::ClientIo(std::io::ErrorKind::TimedOut.into()),
                _ = sleep_for(idle_limit) => {
                    let now = relay.bytes_moved();
                    if now == moved && relay.tracker.is_idle() {
                        idle_out = true;
                        RelayEnd::Idle
                    } else {
                        moved = now;
                        continue;
                    }
                }
            };
            break end;
        };
        self.count_work(&relay, &mut lease, started);
        let told = self.kill.is_fired();
        if told {
            self.tell_killed(&mut relay).await;
        }
        self.cancel.unbind().await;
        lease.conn.current.apply(&relay.param_changes);
        if matches!(end, RelayEnd::Idle) && !told {
            let e = if idle_out {
                ClientError::IdleTimeout
            } else {
                self.gone_error()
            };
            send_fatal(&mut self.stream, &e).await;
        }
        let reset = self.app.config().pool.reset_query.clone();
        self.finish(lease, &mut relay, end, Some(&reset)).await;
    }

    /// After the relay stopped for good: tell the client what it must know, and give
    /// the server back clean or close it.
    async fn finish(
        &mut self,
        mut lease: Lease,
        relay: &mut RelayState,
        end: RelayEnd,
        reset: Option<&str>,
    ) {
        match end {
            RelayEnd::ServerClosed | RelayEnd::ServerIo(_) | RelayEnd::ServerProtocol(_) => {
                tracing::warn!(pool = %self.pool.name, server = lease.conn.id, ?end, "server connection lost");
                let _ = relay.flush_to_client(&mut self.stream).await;
                if !relay.server_error_seen {
                    send_fatal(&mut self.stream, &ClientError::ServerLost).await;
                }
                self.pool.discard(lease);
                return;
            }
            RelayEnd::ClientProtocol(e) => {
                send_fatal(&mut self.stream, &ClientError::Protocol(e)).await;
            }
            RelayEnd::Idle
            | RelayEnd::ClientTerminated
            | RelayEnd::ClientClosed
            | RelayEnd::ClientIo(_) => {}
        }
        if !relay.server_reusable() || !relay.tracker.is_settled() {
            self.pool.discard(lease);
            return;
        }
        let in_transaction = relay.tracker.status() != TransactionStatus::Idle;
        if (in_transaction || reset.is_some())
            && !clean(&mut lease.conn, in_transaction, reset).await
        {
            self.pool.discard(lease);
            return;
        }
        self.pool.release(lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_leaving_on_end_of_stream_a_failed_socket_or_a_lone_terminate() {
        use std::io::ErrorKind;
        let mut head = [0u8; LEAVING_PEEK];
        assert!(leaving(Ok(0), &head), "end of stream");
        assert!(leaving(Err(ErrorKind::ConnectionReset.into()), &head));
        assert!(
            !leaving(Err(ErrorKind::WouldBlock.into()), &head),
            "nothing yet"
        );
        assert!(!leaving(Err(ErrorKind::Interrupted.into()), &head));
        head[..5].copy_from_slice(&pgwire::frontend::TERMINATE_MESSAGE);
        assert!(leaving(Ok(5), &head), "a lone Terminate");
        assert!(
            !leaving(Ok(6), &head),
            "a Terminate and more: its task reads it"
        );
        assert!(!leaving(Ok(3), &head), "the start of a message");
        head[..5].copy_from_slice(b"Q\0\0\0\x04");
        assert!(!leaving(Ok(5), &head), "a query");
    }

    /// A parked client costs its session; a client that idles in its task (TLS,
    /// LISTEN) costs the task that `serve` starts, which keeps a transaction's
    /// state on the heap. Keep both small.
    #[tokio::test]
    async fn parked_session_and_client_future_are_small() {
        let config = crate::config::Config::from_toml(
            r#"
            [[tenants]]
            external_id = "t"
            db_host = "127.0.0.1"
            db_database = "d"
            [[tenants.users]]
            db_user = "u"
            db_password = "p"
            "#,
        )
        .unwrap();
        let app = App::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, addr) = listener.accept().await.unwrap();
        let (stream, peer) = (Stream::Plain(tcp), Peer::Tcp(addr));
        let future = serve(Box::new(Accepted { app, stream, peer }));
        let size = std::mem::size_of_val(&future);

        eprintln!(
            "client future: {size} bytes; parked Session {}; Session {} Stream {} ParamValues {} SessionSettings {} Lease {} RelayState {}",
            std::mem::size_of::<Session<Bare>>(),
            std::mem::size_of::<Session>(),
            std::mem::size_of::<Stream>(),
            std::mem::size_of::<ParamValues>(),
            std::mem::size_of::<SessionSettings>(),
            std::mem::size_of::<Lease>(),
            std::mem::size_of::<RelayState>(),
        );
        assert!(size <= 400, "client future is {size} bytes");
        // The task of a client served in line holds the state of its transaction,
        // and rare steps (a connect, an error, a pinned session) are kept out of
        // it: 2,544 bytes before they were.
        fn returned_size<R>(_: &impl Fn(Session, bool) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let working = returned_size(&run_transactions::<Inline>);
        eprintln!("task of a client served in line: {working} bytes");
        assert!(
            working <= 1200,
            "a working client's task is {working} bytes"
        );
        let parked = std::mem::size_of::<Session<Bare>>();
        assert!(parked <= 192, "a parked session is {parked} bytes");
    }
}
