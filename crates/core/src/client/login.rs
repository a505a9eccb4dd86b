//! Logging a client in: opening packets, authentication, the pool it belongs to,
//! the server parameters it must see (from a real server, even on a cold pool), its
//! cancel key, and the login answer ending with ReadyForQuery.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use pgwire::{backend, TransactionStatus};
use tokio::time::Instant;

use super::auth::{authenticate, AuthFailure};
use super::auth_query;
use super::handshake::{open, Opening};
use super::session::Session;
use super::statements::ClientStatements;
use crate::app::App;
use crate::config::{AuthMethod, PoolMode, StoredPassword, Tenant, User};
use crate::error::ClientError;
use crate::framed::send;
use crate::listener::Peer;
use crate::params::{ParamValues, SessionSettings, StartupSettings};
use crate::router::route;
use crate::server::connect::ConnectError;
use crate::server::pool::{CheckoutError, Lease};
use crate::server::reset::{read_session_settings, run_discarding, QueryOutcome};
use crate::signal::Watch;
use crate::stream::Stream;
use crate::tenants::AdmitError;

/// Metrics label of failed logins that named no known user.
const UNKNOWN_USER: &str = "(unknown)";

/// Tenant rules checked before authentication: TLS required, client address.
/// A client of the Unix socket needs no TLS (it never leaves the machine, and
/// libpq does not offer TLS over a Unix socket), as with PgBouncer and Postgres.
fn admissible(tenant: &Tenant, stream: &Stream, peer: Peer) -> Result<(), ClientError> {
    if tenant.enforce_ssl && !stream.is_confidential() {
        return Err(ClientError::SslRequired {
            tenant: tenant.id.clone(),
        });
    }
    if let Some(list) = &tenant.allow_list {
        if !peer.allowed_by(list) {
            return Err(ClientError::AddressNotAllowed {
                tenant: tenant.id.clone(),
                from: peer.source(),
            });
        }
    }
    Ok(())
}

/// The exchange a user found through auth_query needs: its verifier decides.
pub(super) fn method_for(user: Option<&User>, tenant_method: AuthMethod) -> AuthMethod {
    match user.map(|u| &u.password) {
        Some(StoredPassword::Scram(_)) => AuthMethod::ScramSha256,
        Some(StoredPassword::Md5(_)) => AuthMethod::Md5,
        _ => tenant_method,
    }
}

/// Tells the client why its session ends (best effort: it may be gone already).
pub(super) async fn send_fatal(stream: &mut Stream, err: &ClientError) {
    discard_pending_input(stream);
    let mut out = BytesMut::with_capacity(128);
    err.encode_fatal(&mut out);
    let _ = send(stream, &mut out).await;
}

/// Reads and drops what the client already sent (e.g. the Close tokio-postgres
/// sends for a dropped statement). The session is about to close, and a socket
/// closed with unread input sends a TCP reset, which can destroy the FATAL on its
/// way to the client before the client reads it.
fn discard_pending_input(stream: &Stream) {
    const MAX_DISCARD: usize = 256 * 1024;
    let mut scratch = [0u8; 4096];
    let mut dropped = 0;
    while dropped < MAX_DISCARD {
        let Some(read) = stream.try_read_plain(&mut scratch) else {
            return;
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => dropped += n,
        }
    }
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
    wanted: &mut Arc<ParamValues>,
    settings: &SessionSettings,
    lease: &mut Lease,
) -> Result<(), ClientError> {
    match params_sql(wanted, settings, lease) {
        None => Ok(()),
        Some(sql) => apply_params(wanted, settings, lease, &sql).await,
    }
}

/// The SQL that brings a server's parameters and settings to what the client
/// wants; `None` when they already match (nearly every transaction, so this part
/// is not async).
pub(super) fn params_sql(
    wanted: &ParamValues,
    settings: &SessionSettings,
    lease: &mut Lease,
) -> Option<String> {
    match (
        wanted.sync_sql(&mut lease.conn.current),
        settings.sync_sql(&lease.conn.settings),
    ) {
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => Some(a),
        (Some(a), Some(b)) => Some(a + &b),
    }
}

/// Runs `sql` from [`params_sql`] on the server and takes its values.
pub(super) async fn apply_params(
    wanted: &mut Arc<ParamValues>,
    settings: &SessionSettings,
    lease: &mut Lease,
    sql: &str,
) -> Result<(), ClientError> {
    match run_discarding(&mut lease.conn, sql).await {
        QueryOutcome::Ready(TransactionStatus::Idle) => {
            Arc::make_mut(wanted).apply(&lease.conn.current);
            lease.conn.settings.clone_from(settings);
            Ok(())
        }
        QueryOutcome::Failed { code, message } => Err(ClientError::ServerRefused { code, message }),
        QueryOutcome::Ready(_) | QueryOutcome::Broken => Err(ClientError::ServerLost),
    }
}

pub(super) async fn login(
    app: &Arc<App>,
    stream: Stream,
    peer: Peer,
) -> Option<(Session, Option<Box<Lease>>)> {
    let config = app.config();
    let deadline = Instant::now() + config.server.auth_timeout;
    let mut buf = BytesMut::new();
    let (mut stream, params) =
        match tokio::time::timeout_at(deadline, open(app, stream, &mut buf)).await {
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

    if let Some(login) = super::console::admin_for(app, &params) {
        super::console::serve(app, stream, buf, out, login, peer, deadline).await;
        return None;
    }

    // An unknown tenant is told so only after a full (failing) authentication, so
    // its answer takes as long as a known tenant's.
    let route = match route(&app.tenants, &params, stream.server_name()) {
        Ok(r) => Some(r),
        Err(ClientError::NoTenant) => None,
        Err(e) => {
            tracing::info!(%peer, error = %e, "client refused");
            send_fatal(&mut stream, &e).await;
            return None;
        }
    };
    if let Some(r) = &route {
        if let Err(e) = admissible(&r.entry.tenant, &stream, peer) {
            tracing::info!(%peer, tenant = %r.entry.tenant.id, error = %e, "client refused");
            r.entry.live.count_failed_login(UNKNOWN_USER);
            send_fatal(&mut stream, &e).await;
            return None;
        }
    }
    if !out.is_empty() && send(&mut stream, &mut out).await.is_err() {
        return None;
    }
    let (user, method) = match &route {
        None => (None, AuthMethod::ScramSha256),
        Some(r) => {
            let tenant = &r.entry.tenant;
            match tenant.user(&r.user) {
                Some(u) => (Some(u.clone()), tenant.auth_method),
                None if auth_query::applies(tenant) => {
                    let lookup = auth_query::lookup(app, tenant, &r.user);
                    match tokio::time::timeout_at(deadline, lookup).await {
                        Ok(Ok(found)) => {
                            let method = method_for(found.as_deref(), tenant.auth_method);
                            (found, method)
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, tenant = %tenant.id, error = %e, "auth_query lookup failed");
                            send_fatal(&mut stream, &e).await;
                            return None;
                        }
                        Err(_) => {
                            send_fatal(&mut stream, &ClientError::AuthTimeout).await;
                            return None;
                        }
                    }
                }
                None => (None, tenant.auth_method),
            }
        }
    };
    let user_name = match &route {
        Some(r) => r.user.as_str(),
        None => params.get("user").unwrap_or_default(),
    };
    let auth = authenticate(
        &mut stream,
        &mut buf,
        user_name,
        params.get("user").unwrap_or_default(),
        user.as_deref(),
        method,
        &app.dummy_secret,
    );
    let outcome = tokio::time::timeout_at(deadline, auth).await;
    if !(matches!(outcome, Ok(Ok(_))) && route.is_some() && user.is_some()) {
        let e = match outcome {
            Ok(Ok(_)) | Ok(Err(AuthFailure::Client(_))) if route.is_none() => ClientError::NoTenant,
            Ok(Err(AuthFailure::Gone)) => return None,
            Ok(Err(AuthFailure::Client(e))) => e,
            Ok(Ok(_)) => ClientError::AuthFailed {
                user: user_name.to_owned(),
            },
            Err(_) => ClientError::AuthTimeout,
        };
        if let Some(r) = &route {
            let listed = r.entry.tenant.user(&r.user).is_some();
            let label = if listed {
                r.user.as_str()
            } else {
                UNKNOWN_USER
            };
            r.entry.live.count_failed_login(label);
            if !listed {
                // A password just changed in Postgres is read again next time.
                app.auth_cache.forget(&r.entry.tenant.id, &r.user);
            }
            tracing::info!(%peer, tenant = %r.entry.tenant.id, user = %r.user, error = %e, "client authentication failed");
        } else {
            tracing::info!(%peer, user = %user_name, error = %e, "client names no known tenant");
        }
        send_fatal(&mut stream, &e).await;
        return None;
    }
    let (Some(route), Some(user), Ok(Ok(authenticated))) = (route, user, outcome) else {
        return None;
    };
    let tenant = route.entry.tenant.clone();
    let slot = match route
        .entry
        .live
        .admit(&user.name, tenant.max_clients, user.max_clients)
    {
        Ok(slot) => slot,
        Err(full) => {
            let e = match full {
                AdmitError::TenantFull => ClientError::TenantFull {
                    tenant: tenant.id.clone(),
                },
                AdmitError::UserFull => ClientError::UserFull {
                    tenant: tenant.id.clone(),
                    user: user.name.clone(),
                },
            };
            route.entry.live.count_failed_login(&user.name);
            tracing::info!(%peer, tenant = %tenant.id, user = %user.name, error = %e, "client refused");
            send_fatal(&mut stream, &e).await;
            return None;
        }
    };
    if app.shutdown.is_cancelled() {
        send_fatal(&mut stream, &ClientError::ShuttingDown).await;
        return None;
    }
    let pool = match app.pool(&tenant, &user) {
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
    // A tenant's default_parameter_status stands in for a server never reached
    // yet (as in Supavisor), so a cold pool need not connect at login.
    let stand_in = (pool.server_params().is_none() && !tenant.default_parameter_status.is_empty())
        .then(|| Arc::new(tenant.default_parameter_status.clone()));
    let stand_in_values = || {
        stand_in
            .as_ref()
            .map(|p| Arc::new(ParamValues::from_reported(p)))
    };
    let asked =
        match StartupSettings::of(params.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(s) => s,
            Err(e) => {
                let e = ClientError::from(e);
                tracing::info!(%peer, error = %e, "client refused");
                send_fatal(&mut stream, &e).await;
                return None;
            }
        };
    let startup = || asked.tracked.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let needs_server = !asked.other.is_empty()
        || match pool.default_values().or_else(stand_in_values) {
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
        None => pool
            .server_params()
            .or_else(|| stand_in.clone())
            .unwrap_or_default(),
    };
    // Shares the pool's values (no copy) unless the client set its own.
    let mut wanted = match pool.default_values().or_else(stand_in_values) {
        Some(defaults) => (*defaults).clone(),
        None => ParamValues::from_reported(&server_params),
    };
    wanted.overlay_startup(startup());
    let mut wanted = Arc::new(wanted);
    let mut settings = None;
    if let Some(l) = lease.as_mut() {
        // The settings asked for at startup go with the tracked parameters, then
        // are read back in the server's form ("5s" becomes "5000"), which is what
        // the client's later checkouts compare.
        let given = SessionSettings::from_pairs(&asked.other);
        let applied = match sync_params(&mut wanted, &given, l).await {
            Ok(()) if asked.other.is_empty() => Ok(None),
            Ok(()) => read_session_settings(&mut l.conn)
                .await
                .map(|s| (!s.is_empty()).then(|| Box::new(s)))
                .ok_or(ClientError::ServerLost),
            Err(e) => Err(e),
        };
        match applied {
            Ok(s) => settings = s,
            Err(e) => {
                send_fatal(&mut stream, &e).await;
                if let Some(l) = lease {
                    if asked.other.is_empty() {
                        pool.release(l);
                    } else {
                        // Some of the settings may have taken before one failed.
                        pool.discard(l);
                    }
                }
                return None;
            }
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
    let signals = route.entry.live.signals();
    let wanted = pool.share_wanted(Arc::unwrap_or_clone(wanted));
    // Only a client that may be parked (plain TCP or Unix socket, transaction
    // mode) needs the parking clock's nudges; a TLS or session-mode client sleeps
    // until it has something to do.
    let stop = if !stream.is_tls() && user.mode == PoolMode::Transaction {
        Watch::nudged(signals.stop)
    } else {
        Watch::new(signals.stop)
    };
    let mut session = Session {
        app: app.clone(),
        stream,
        pool,
        tenant: tenant.clone(),
        user: user.clone(),
        stop,
        kill: Watch::new(signals.kill),
        idle_sleep: None,
        cancel_key,
        cancel,
        max_message: config.server.max_message_size,
        wanted,
        statements: (user.mode == PoolMode::Transaction && config.pool.max_prepared_statements > 0)
            .then(ClientStatements::default),
        settings,
        listening: None,
        slot,
        idle_since: crate::client::park::NOT_PARKING,
    };
    if send(&mut session.stream, &mut out).await.is_err() {
        if let Some(l) = lease {
            session.pool.release(l);
        }
        app.cancels.unregister(cancel_key);
        return None;
    }
    session.slot.stats().logins_ok.fetch_add(1, Relaxed);
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
