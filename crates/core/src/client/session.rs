//! One client connection from accept to close: opening, authentication, the login
//! answer (ParameterStatus set, BackendKeyData), then serving it in transaction or
//! session mode until it leaves or the pooler shuts down.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::{backend, TransactionStatus};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::auth::{authenticate, AuthFailure};
use super::handshake::{open, Opening};
use super::relay::{RelayEnd, RelayState, RelayUntil, StatementCtx};
use super::statements::ClientStatements;
use crate::app::App;
use crate::cancel::{CancelTarget, ClientKey};
use crate::config::{PoolMode, StoredPassword, User};
use crate::error::ClientError;
use crate::framed::send;
use crate::params::{ParamValues, SessionSettings, READ_SESSION_SETTINGS};
use crate::router::route;
use crate::server::connect::ConnectError;
use crate::server::pool::{CheckoutError, Lease, Pool};
use crate::server::reset::{clean, run_collect_pairs, run_discarding, QueryOutcome};
use crate::sql_hint::{listen_command, ListenCommand};
use crate::stream::Stream;

/// A logged-in client.
struct Session {
    app: Arc<App>,
    stream: Stream,
    pool: Arc<Pool>,
    /// The tenant and user at login; after a reload their names find the new ones.
    tenant: Arc<crate::config::Tenant>,
    user: Arc<User>,
    cancel_key: ClientKey,
    cancel: Arc<CancelTarget>,
    max_message: usize,
    /// Session parameters this client has set (at startup or with SET).
    wanted: ParamValues,
    /// Named prepared statements of this client, when tracked (transaction mode).
    statements: Option<ClientStatements>,
    /// Unreported session settings this client has set (transaction mode).
    settings: SessionSettings,
    /// Notifications for this client's LISTENs (transaction mode), once it listens.
    notifications: Option<crate::listen::Inbox>,
    notification_sink: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
}

/// What woke an idle transaction-mode client.
enum Event {
    Shutdown,
    Notification(bytes::Bytes),
    Readable,
}

/// Whether a client's session goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The next notification, or never when the client listens to nothing.
async fn next_notification(inbox: &mut Option<crate::listen::Inbox>) -> bytes::Bytes {
    match inbox {
        Some(rx) => match rx.recv().await {
            Some(n) => n,
            None => std::future::pending().await,
        },
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

/// Brings a server's tracked parameters to what the client wants, and takes the
/// server's canonical spelling of them. A value the server refuses is the client's
/// error, as it would be on a direct connection.
async fn sync_params(
    wanted: &mut ParamValues,
    settings: &SessionSettings,
    lease: &mut Lease,
) -> Result<(), ClientError> {
    let sql = match (
        wanted.sync_sql(&lease.conn.current),
        settings.sync_sql(&lease.conn.settings),
    ) {
        (None, None) => return Ok(()),
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) => a + &b,
    };
    match run_discarding(&mut lease.conn, &sql).await {
        QueryOutcome::Ready(TransactionStatus::Idle) => {
            wanted.apply(&lease.conn.current);
            lease.conn.settings.clone_from(settings);
            Ok(())
        }
        QueryOutcome::Failed { code, message } => Err(ClientError::ServerRefused { code, message }),
        QueryOutcome::Ready(_) | QueryOutcome::Broken => Err(ClientError::ServerLost),
    }
}

/// Serves one accepted client connection to its end.
pub async fn serve(app: Arc<App>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    // Login state (SCRAM, buffers) lives on the heap only while logging in.
    let Some((mut session, pinned)) = Box::pin(login(&app, tcp, peer)).await else {
        return;
    };
    let key = session.cancel_key;
    session.run(pinned).await;
    app.cancels.unregister(key);
}

async fn send_fatal(stream: &mut Stream, err: &ClientError) {
    let mut out = BytesMut::with_capacity(128);
    err.encode_fatal(&mut out);
    let _ = send(stream, &mut out).await;
}

fn client_error_of(e: CheckoutError) -> ClientError {
    match e {
        CheckoutError::Timeout(waited) => ClientError::CheckoutTimeout {
            waited_ms: waited.as_millis(),
        },
        CheckoutError::Connect(ConnectError::Refused { code, message }) => {
            ClientError::ServerRefused { code, message }
        }
        CheckoutError::Connect(_) => ClientError::ServerUnavailable,
        CheckoutError::Closed => ClientError::ShuttingDown,
    }
}

async fn login(
    app: &Arc<App>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(Session, Option<Box<Lease>>)> {
    let config = app.config();
    let deadline = Instant::now() + config.server.auth_timeout;
    let mut buf = BytesMut::new();
    let (mut stream, params) =
        match tokio::time::timeout_at(deadline, open(app, tcp, &mut buf)).await {
            Ok(Ok(Opening::Startup(stream, params))) => (stream, params),
            Ok(Ok(Opening::Cancelled)) => return None,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "client handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "client handshake timed out");
                return None;
            }
        };
    let mut out = BytesMut::with_capacity(512);
    let unsupported: Vec<&str> = params.protocol_options().collect();
    if params.minor_version > 0 || !unsupported.is_empty() {
        backend::negotiate_protocol_version(0, &unsupported, &mut out);
    }

    let route = match route(&config, &params) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(%peer, error = %e, "client refused");
            send_fatal(&mut stream, &e).await;
            return None;
        }
    };
    let user: Option<Arc<User>> = route.tenant.user(&route.user).cloned();
    if !out.is_empty() && send(&mut stream, &mut out).await.is_err() {
        return None;
    }
    let auth = authenticate(
        &mut stream,
        &mut buf,
        &route.user,
        user.as_deref(),
        route.tenant.auth_method,
        &app.dummy_secret,
    );
    let authenticated = match tokio::time::timeout_at(deadline, auth).await {
        Ok(Ok(a)) => a,
        Ok(Err(AuthFailure::Gone)) => return None,
        Ok(Err(AuthFailure::Client(e))) => {
            tracing::info!(%peer, tenant = %route.tenant.id, user = %route.user, error = %e, "client authentication failed");
            send_fatal(&mut stream, &e).await;
            return None;
        }
        Err(_) => {
            send_fatal(&mut stream, &ClientError::AuthTimeout).await;
            return None;
        }
    };
    let Some(user) = user else {
        // Unknown users never authenticate; this is unreachable in practice.
        return None;
    };
    if app.shutdown.is_cancelled() {
        send_fatal(&mut stream, &ClientError::ShuttingDown).await;
        return None;
    }
    let pool = match app.pool(&route.tenant, &user) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up upstream TLS");
            send_fatal(&mut stream, &ClientError::ServerUnavailable).await;
            return None;
        }
    };
    if let (StoredPassword::Scram(_), Some(key)) = (&user.password, authenticated.scram_client_key)
    {
        App::offer_passthrough_keys(&pool, &user, key);
    }

    // The client must see the real server's parameters before ReadyForQuery, even on
    // a cold pool: open a server connection first if none was ever opened. Startup
    // settings other than application_name also need a server, which alone knows the
    // canonical form of a value ("ISO" becomes "ISO, MDY").
    let startup = || params.params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let needs_server = match pool.default_values() {
        None => true,
        Some(defaults) => {
            let mut wanted = (*defaults).clone();
            wanted.overlay_startup(startup());
            !wanted.same_except_application_name(&defaults)
        }
    };
    let mut lease = None;
    if user.mode == PoolMode::Session || needs_server {
        match pool.checkout().await {
            Ok(l) => lease = Some(l),
            Err(e) => {
                let e = client_error_of(e);
                tracing::warn!(%peer, pool = %pool.name, error = %e, "no server connection for login");
                send_fatal(&mut stream, &e).await;
                return None;
            }
        }
    }
    let server_params = match &lease {
        Some(l) => l.conn.params.clone(),
        None => pool.server_params().unwrap_or_default(),
    };
    // Shares the pool's values (no copy) unless the client set its own.
    let mut wanted = match pool.default_values() {
        Some(defaults) => (*defaults).clone(),
        None => ParamValues::from_reported(&server_params),
    };
    wanted.overlay_startup(startup());
    if let Some(l) = lease.as_mut() {
        if let Err(e) = sync_params(&mut wanted, &SessionSettings::default(), l).await {
            send_fatal(&mut stream, &e).await;
            if let Some(l) = lease {
                pool.release(l);
            }
            return None;
        }
    }
    let (cancel_key, cancel) = app.cancels.register(pool.upstream_addr.clone());

    backend::auth_ok(&mut out);
    for (name, value) in server_params.iter() {
        let value = wanted.get(name).unwrap_or(value);
        backend::parameter_status(name, value, &mut out);
    }
    backend::backend_key_data(cancel_key.process_id, cancel_key.secret, &mut out);
    backend::ready_for_query(TransactionStatus::Idle, &mut out);
    let mut session = Session {
        app: app.clone(),
        stream,
        pool,
        tenant: route.tenant.clone(),
        user: user.clone(),
        cancel_key,
        cancel,
        max_message: config.server.max_message_size,
        wanted,
        statements: (user.mode == PoolMode::Transaction && config.pool.max_prepared_statements > 0)
            .then(ClientStatements::default),
        settings: SessionSettings::default(),
        notifications: None,
        notification_sink: None,
    };
    if send(&mut session.stream, &mut out).await.is_err() {
        if let Some(l) = lease {
            session.pool.release(l);
        }
        app.cancels.unregister(cancel_key);
        return None;
    }
    tracing::debug!(%peer, pool = %session.pool.name, mode = user.mode.as_str(), "client logged in");
    let pinned = match (lease, user.mode) {
        (Some(l), PoolMode::Session) => Some(Box::new(l)),
        (Some(l), PoolMode::Transaction) => {
            session.pool.release(l);
            None
        }
        (None, _) => None,
    };
    Some((session, pinned))
}

impl Session {
    /// Borrows a server from this client's pool. A reload may have replaced the pool
    /// (new upstream or credentials): then the client moves to the new one.
    async fn checkout(&mut self) -> Result<Lease, ClientError> {
        match self.pool.checkout().await {
            Err(CheckoutError::Closed) if !self.app.shutdown.is_cancelled() => {}
            other => return other.map_err(client_error_of),
        }
        let config = self.app.config();
        let (tenant, user) = config
            .tenant(&self.tenant.id)
            .and_then(|t| t.user(&self.user.name).map(|u| (t.clone(), u.clone())))
            .ok_or(ClientError::Removed)?;
        self.pool = self
            .app
            .pool(&tenant, &user)
            .map_err(|_| ClientError::ServerUnavailable)?;
        self.pool.checkout().await.map_err(client_error_of)
    }

    async fn run(&mut self, pinned: Option<Box<Lease>>) {
        match pinned {
            Some(lease) => Box::pin(self.run_session(*lease)).await,
            None => self.run_transactions().await,
        }
        if let Some(hub) = self.pool.listen_hub.get() {
            hub.unlisten_all(self.client_id());
        }
    }

    fn client_id(&self) -> u64 {
        u64::from(self.cancel_key.process_id)
    }

    /// Answers a lone LISTEN or UNLISTEN through the pool's listener connection.
    async fn serve_listen(&mut self, command: ListenCommand) -> std::io::Result<()> {
        let hub = self.app.listen_hub(&self.pool);
        let client = self.client_id();
        let mut out = BytesMut::with_capacity(64);
        match command {
            ListenCommand::Listen(channel) => {
                let sink = match &self.notification_sink {
                    Some(s) => s.clone(),
                    None => {
                        let (tx, rx) = tokio::sync::mpsc::channel(crate::listen::CLIENT_QUEUE);
                        self.notifications = Some(rx);
                        self.notification_sink = Some(tx.clone());
                        tx
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

    /// Transaction mode: wait idle without a buffer or a server; on the first bytes
    /// of a transaction, borrow a server, relay until the transaction ends, give the
    /// server back.
    async fn run_transactions(&mut self) {
        loop {
            // Only the wait is inline in the client's task; everything else runs
            // boxed, so an idle client costs little memory.
            let event = tokio::select! {
                biased;
                _ = self.app.shutdown.cancelled() => Event::Shutdown,
                n = next_notification(&mut self.notifications) => Event::Notification(n),
                r = self.stream.readable() => match r {
                    Ok(()) => Event::Readable,
                    Err(_) => return,
                },
            };
            let flow = match event {
                Event::Shutdown => {
                    Box::pin(send_fatal(&mut self.stream, &ClientError::Terminated)).await;
                    Flow::Stop
                }
                // Delivered between transactions, as Postgres does.
                Event::Notification(n) => Box::pin(self.notify(n)).await,
                Event::Readable => Box::pin(self.transaction()).await,
            };
            if flow == Flow::Stop {
                return;
            }
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
        let mut relay = RelayState::new(self.max_message);
        let tracked = self.statements.is_some();
        if let Some(end) = relay.read_client(&mut self.stream, tracked).await {
            if let RelayEnd::ClientProtocol(e) = end {
                send_fatal(&mut self.stream, &ClientError::Protocol(e)).await;
            }
            return Flow::Stop;
        }
        if let Some(command) = lone_listen(relay.unread_client_bytes()) {
            relay.drop_unread_client_bytes();
            return match self.serve_listen(command).await {
                Ok(()) => Flow::Continue,
                Err(_) => Flow::Stop,
            };
        }
        let mut lease = match self.checkout().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(pool = %self.pool.name, error = %e, "checkout failed");
                send_fatal(&mut self.stream, &e).await;
                return Flow::Stop;
            }
        };
        if let Err(e) = sync_params(&mut self.wanted, &self.settings, &mut lease).await {
            tracing::warn!(pool = %self.pool.name, error = %e, "cannot apply the client's settings");
            self.pool.discard(lease);
            send_fatal(&mut self.stream, &e).await;
            return Flow::Stop;
        }
        self.cancel.bind(lease.conn.backend);
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
            _ = self.app.force.cancelled() => RelayEnd::ClientIo(std::io::ErrorKind::TimedOut.into()),
        };
        self.cancel.unbind().await;
        self.wanted.apply(&relay.param_changes);
        lease.conn.current.apply(&relay.param_changes);
        if !matches!(end, RelayEnd::Idle) {
            self.finish(lease, &mut relay, end, None).await;
            return Flow::Stop;
        }
        if relay.hints.pin {
            // Session state that cannot move (advisory lock, temp table, ...): this
            // client keeps this server from now on.
            tracing::debug!(pool = %self.pool.name, server = lease.conn.id, "client pinned to its server");
            self.run_pinned(lease, relay).await;
            return Flow::Stop;
        }
        if relay.hints.settings {
            match run_collect_pairs(&mut lease.conn, READ_SESSION_SETTINGS).await {
                Some(rows) => {
                    self.settings = SessionSettings::from_rows(rows);
                    lease.conn.settings.clone_from(&self.settings);
                }
                None => {
                    self.pool.discard(lease);
                    send_fatal(&mut self.stream, &ClientError::ServerLost).await;
                    return Flow::Stop;
                }
            }
        }
        self.pool.release(lease);
        Flow::Continue
    }

    /// Session mode: relay for the client's life; on shutdown, stop at the next idle
    /// point.
    async fn run_session(&mut self, lease: Lease) {
        let relay = RelayState::new(self.max_message);
        self.run_pinned(lease, relay).await;
    }

    /// Relays for the rest of the client's life on one server (session mode, or a
    /// transaction-mode client pinned by session state); on shutdown, stops at the
    /// next idle point. The server is reset before it goes back to the pool.
    async fn run_pinned(&mut self, mut lease: Lease, mut relay: RelayState) {
        self.cancel.bind(lease.conn.backend);
        let mut until = RelayUntil::ClientLeaves;
        let end = loop {
            let shutdown = self.app.shutdown.clone();
            let statements = self.statements.as_mut().map(|client| StatementCtx {
                client,
                server: &mut lease.conn.statements,
            });
            let end = tokio::select! {
                end = relay.run(&mut self.stream, &mut lease.conn.stream, statements, until) => end,
                _ = shutdown.cancelled(), if until == RelayUntil::ClientLeaves => {
                    until = RelayUntil::TransactionEnd;
                    continue;
                }
                _ = self.app.force.cancelled() => RelayEnd::ClientIo(std::io::ErrorKind::TimedOut.into()),
            };
            break end;
        };
        self.cancel.unbind().await;
        lease.conn.current.apply(&relay.param_changes);
        if let RelayEnd::Idle = end {
            send_fatal(&mut self.stream, &ClientError::Terminated).await;
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

    /// Every idle client keeps its task's future in memory: keep it small (the state
    /// of a transaction in progress lives on the heap only while it runs).
    #[tokio::test]
    async fn client_future_is_small() {
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
        let (tcp, peer) = listener.accept().await.unwrap();
        let future = serve(app, tcp, peer);
        let size = std::mem::size_of_val(&future);
        eprintln!(
            "client future: {size} bytes; Session {} Stream {} ParamValues {} SessionSettings {} Lease {}",
            std::mem::size_of::<Session>(),
            std::mem::size_of::<Stream>(),
            std::mem::size_of::<ParamValues>(),
            std::mem::size_of::<SessionSettings>(),
            std::mem::size_of::<Lease>(),
        );
        assert!(size <= 1024, "client future is {size} bytes");
    }
}
