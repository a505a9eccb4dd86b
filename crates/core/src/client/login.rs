//! Logging a client in: opening packets, authentication, the pool it belongs to,
//! the server parameters it must see (from a real server, even on a cold pool), its
//! cancel key, and the login answer ending with ReadyForQuery.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::{backend, TransactionStatus};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::auth::{authenticate, AuthFailure};
use super::handshake::{open, Opening};
use super::session::Session;
use super::statements::ClientStatements;
use crate::app::App;
use crate::config::{PoolMode, StoredPassword, User};
use crate::error::ClientError;
use crate::framed::send;
use crate::params::{ParamValues, SessionSettings};
use crate::router::route;
use crate::server::connect::ConnectError;
use crate::server::pool::{CheckoutError, Lease};
use crate::server::reset::{run_discarding, QueryOutcome};
use crate::stream::Stream;

/// Tells the client why its session ends (best effort: it may be gone already).
pub(super) async fn send_fatal(stream: &mut Stream, err: &ClientError) {
    let mut out = BytesMut::with_capacity(128);
    err.encode_fatal(&mut out);
    let _ = send(stream, &mut out).await;
}

/// What a client is told when no server connection could be had for it.
pub(super) fn client_error_of(e: CheckoutError) -> ClientError {
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

/// Brings a server's tracked parameters to what the client wants, and takes the
/// server's canonical spelling of them. A value the server refuses is the client's
/// error, as it would be on a direct connection.
pub(super) async fn sync_params(
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

pub(super) async fn login(
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
