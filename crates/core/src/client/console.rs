//! The admin console: the virtual database `pgbouncer` (or `tidepool`), where
//! the configured admin user reads the pools and their statistics with SHOW
//! commands over the simple query protocol, in the shape of PgBouncer's console
//! (`psql -d pgbouncer -c 'SHOW POOLS'`). Besides reading, RELOAD re-reads the
//! configuration as SIGHUP does, and PAUSE / RESUME stop and restart lending
//! server connections (to restart a database without failing a client).

use std::sync::Arc;

use bytes::BytesMut;
use pgwire::backend::{self, ErrorFields, Severity, INT8_OID, TEXT_OID};
use pgwire::startup::StartupParams;
use pgwire::{tag, TransactionStatus};
use tokio::time::Instant;

use super::auth::{authenticate, AuthFailure};
use super::login::{method_for, send_fatal};
use crate::app::App;
use crate::config::{Config, User};
use crate::error::ClientError;
use crate::framed::{read_message, send, ReadError};
use crate::listener::Peer;
use crate::metrics::Row;
use crate::stream::Stream;

/// Database names that reach the console.
const CONSOLE_DATABASES: [&str; 2] = ["pgbouncer", "tidepool"];
/// Largest message the console reads (its commands are short).
const MAX_CONSOLE_MESSAGE: usize = 64 * 1024;

/// Commands one Query message may hold.
const MAX_COMMANDS: usize = 16;

/// The admin user, when this login asks for the console: a console is
/// configured and the database is one of [`CONSOLE_DATABASES`]. Those names
/// are then the console's whoever logs in: any other user fails its (dummy)
/// authentication as an unknown user does, so the admin's name cannot be told
/// from others by the answer, and no tenant routing applies.
pub(super) fn admin_for(app: &App, params: &StartupParams) -> Option<ConsoleLogin> {
    let admin = app.config().admin.clone()?;
    let user = params.get("user").unwrap_or_default();
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(user);
    CONSOLE_DATABASES.contains(&database).then(|| ConsoleLogin {
        admin,
        user_name: user.to_owned(),
    })
}

/// A login to the console: the configured admin, and the name the client gave.
pub(super) struct ConsoleLogin {
    admin: Arc<User>,
    user_name: String,
}

/// Whether the console must refuse this plain TCP client: when any tenant
/// demands TLS (as `--require-tls` does), so does the console. A client of the
/// Unix socket is exempt, as it is for tenants.
fn needs_tls(app: &App, stream: &Stream) -> bool {
    !stream.is_confidential() && app.tenants.list().iter().any(|e| e.tenant.enforce_ssl)
}

/// A console session: authenticates the admin (before `deadline`), then answers
/// its commands until it leaves or the pooler shuts down. `out` holds what must
/// precede the authentication request (NegotiateProtocolVersion).
pub(super) async fn serve(
    app: &Arc<App>,
    mut stream: Stream,
    mut buf: BytesMut,
    mut out: BytesMut,
    login: ConsoleLogin,
    peer: Peer,
    deadline: Instant,
) {
    let (admin, user_name) = (&*login.admin, login.user_name.as_str());
    if needs_tls(app, &stream) {
        let e = ClientError::SslRequired {
            tenant: "admin console".into(),
        };
        tracing::info!(%peer, error = %e, "admin console refused");
        count(app, false);
        send_fatal(&mut stream, &e).await;
        return;
    }
    if !out.is_empty() && send(&mut stream, &mut out).await.is_err() {
        return;
    }
    // Another name goes through the same exchange against no password.
    let user = (user_name == admin.name).then_some(admin);
    let method = method_for(Some(admin), crate::config::AuthMethod::ScramSha256);
    let auth = authenticate(
        &mut stream,
        &mut buf,
        user_name,
        user_name,
        user,
        method,
        &app.dummy_secret,
    );
    match tokio::time::timeout_at(deadline, auth).await {
        Ok(Ok(_)) if user.is_some() => {}
        Ok(Ok(_)) => {
            let e = ClientError::AuthFailed {
                user: user_name.to_owned(),
            };
            tracing::info!(%peer, user = %user_name, "admin console login failed: not the admin");
            count(app, false);
            send_fatal(&mut stream, &e).await;
            return;
        }
        Ok(Err(AuthFailure::Gone)) => return,
        Ok(Err(AuthFailure::Client(e))) => {
            tracing::info!(%peer, user = %user_name, error = %e, "admin console login failed");
            count(app, false);
            send_fatal(&mut stream, &e).await;
            return;
        }
        Err(_) => {
            count(app, false);
            send_fatal(&mut stream, &ClientError::AuthTimeout).await;
            return;
        }
    }
    tracing::info!(%peer, user = %admin.name, "admin console login");
    count(app, true);
    login_answer(&mut out);
    // Every write gives way to shutdown: a client that stops reading holds
    // nothing up.
    if !sent_unless_shutdown(app, &mut stream, &mut out).await {
        return;
    }
    // After an extended-protocol message's error, everything up to its Sync is
    // discarded, as Postgres does.
    let mut skipping = false;
    loop {
        let message = tokio::select! {
            m = read_message(&mut stream, &mut buf, MAX_CONSOLE_MESSAGE) => m,
            () = app.shutdown.cancelled() => {
                let mut fatal = BytesMut::new();
                ClientError::ShuttingDown.encode_fatal(&mut fatal);
                let _ = sent_within_a_second(&mut stream, &mut fatal).await;
                return;
            }
        };
        let (tag, body) = match message {
            Ok(m) => m,
            Err(ReadError::Wire(e)) => {
                send_fatal(&mut stream, &ClientError::Protocol(e)).await;
                return;
            }
            Err(_) => return,
        };
        match tag {
            tag::TERMINATE => return,
            tag::SYNC => {
                skipping = false;
                backend::ready_for_query(TransactionStatus::Idle, &mut out);
            }
            _ if skipping => {}
            tag::QUERY => match pgwire::frontend::decode_query(&body) {
                Ok(sql) => answer(app, sql, &mut out).await,
                Err(e) => {
                    send_fatal(&mut stream, &ClientError::Protocol(e)).await;
                    return;
                }
            },
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE => {
                skipping = true;
                error(
                    "0A000",
                    "the admin console takes simple queries only",
                    &mut out,
                );
            }
            tag::FUNCTION_CALL => {
                error("0A000", "the admin console has no functions", &mut out);
                backend::ready_for_query(TransactionStatus::Idle, &mut out);
            }
            // Flush has nothing to push; COPY messages outside a COPY are
            // ignored, as Postgres ignores them.
            tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {}
            other => {
                let e = pgwire::WireError::Malformed {
                    what: "unknown message type",
                };
                tracing::debug!(%peer, tag = other, "admin console: unknown message");
                send_fatal(&mut stream, &ClientError::Protocol(e)).await;
                return;
            }
        }
        if !out.is_empty() && !sent_unless_shutdown(app, &mut stream, &mut out).await {
            return;
        }
    }
}

/// Counts a console login that succeeded (`ok`) or was refused.
fn count(app: &App, ok: bool) {
    let counter = if ok {
        &app.console_logins.ok
    } else {
        &app.console_logins.failed
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Sends `out`, or gives up when the pooler starts shutting down; `false` when
/// the session is over.
async fn sent_unless_shutdown(app: &App, stream: &mut Stream, out: &mut BytesMut) -> bool {
    tokio::select! {
        sent = send(stream, out) => sent.is_ok(),
        () = app.shutdown.cancelled() => false,
    }
}

/// Sends a last message, giving up after a moment.
async fn sent_within_a_second(stream: &mut Stream, out: &mut BytesMut) -> bool {
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(1), send(stream, out)).await,
        Ok(Ok(()))
    )
}

/// AuthenticationOk, the parameters a client expects, a key no cancel request
/// matches, and ReadyForQuery.
fn login_answer(out: &mut BytesMut) {
    backend::auth_ok(out);
    for (name, value) in [
        (
            "server_version",
            concat!(env!("CARGO_PKG_VERSION"), "/tidepool"),
        ),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        backend::parameter_status(name, value, out);
    }
    backend::backend_key_data(0, 0, out);
    backend::ready_for_query(TransactionStatus::Idle, out);
}

/// A console command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// Every tenant (`None`) or one.
    Pause(Option<String>),
    Resume(Option<String>),
    Help,
    Version,
    Pools,
    Stats,
    StatsTotals,
    Databases,
    Lists,
    Config,
    Reload,
}

/// The commands of one Query message (split on `;`, case and spacing ignored),
/// up to the first one not known, which `Err` names. Empty for an empty query.
fn parse(sql: &str) -> (Vec<Command>, Option<String>) {
    let mut commands = Vec::new();
    match parse_into(sql, &mut commands) {
        Ok(()) => (commands, None),
        Err(unknown) => (commands, Some(unknown)),
    }
}

fn parse_into(sql: &str, commands: &mut Vec<Command>) -> Result<(), String> {
    for text in sql.split(';') {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let command = match words.as_slice() {
            [reload] if reload.eq_ignore_ascii_case("reload") => Command::Reload,
            [pause] if pause.eq_ignore_ascii_case("pause") => Command::Pause(None),
            [pause, tenant] if pause.eq_ignore_ascii_case("pause") => {
                Command::Pause(Some((*tenant).to_owned()))
            }
            [resume] if resume.eq_ignore_ascii_case("resume") => Command::Resume(None),
            [resume, tenant] if resume.eq_ignore_ascii_case("resume") => {
                Command::Resume(Some((*tenant).to_owned()))
            }
            [show, what] if show.eq_ignore_ascii_case("show") => {
                match what.to_ascii_lowercase().as_str() {
                    "help" => Command::Help,
                    "version" => Command::Version,
                    "pools" => Command::Pools,
                    "stats" => Command::Stats,
                    "stats_totals" => Command::StatsTotals,
                    "config" => Command::Config,
                    "databases" => Command::Databases,
                    "lists" => Command::Lists,
                    _ => return Err(words.join(" ")),
                }
            }
            _ => return Err(words.join(" ")),
        };
        commands.push(command);
    }
    Ok(())
}

/// Answers one Query message into `out`, ending with ReadyForQuery.
async fn answer(app: &Arc<App>, sql: &str, out: &mut BytesMut) {
    let (commands, unknown) = parse(sql);
    if commands.len() > MAX_COMMANDS {
        error(
            "54000",
            &format!("at most {MAX_COMMANDS} commands in one query"),
            out,
        );
    } else if commands.is_empty() && unknown.is_none() {
        out.extend_from_slice(&[tag::EMPTY_QUERY_RESPONSE, 0, 0, 0, 4]);
    } else {
        for command in commands {
            match command {
                Command::Pause(tenant) => pause(app, tenant.as_deref(), out).await,
                Command::Resume(tenant) => resume(app, tenant.as_deref(), out),
                Command::Reload => reload(app, out).await,
                other => run(app, other, out),
            }
        }
        if let Some(unknown) = unknown {
            // Echoed back at most this long (the query may be 64 KB).
            let shown: String = unknown.chars().take(80).collect();
            let more = if shown.len() < unknown.len() {
                "..."
            } else {
                ""
            };
            error(
                "0A000",
                &format!("unsupported admin console command: {shown}{more}"),
                out,
            );
        }
    }
    backend::ready_for_query(TransactionStatus::Idle, out);
}

fn error(code: &str, message: &str, out: &mut BytesMut) {
    backend::error_response(
        &ErrorFields {
            severity: Severity::Error,
            code,
            message,
            detail: None,
            hint: Some("SHOW HELP lists the commands"),
        },
        out,
    );
}

/// Column types: a count, or text.
const INT: u32 = INT8_OID;
const TEXT: u32 = TEXT_OID;

/// How often PAUSE looks whether the lent connections have come back.
const PAUSE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// PAUSE: the pools lend nothing more; once every connection lent has come
/// back (open transactions end, session-mode clients leave), their idle
/// connections are closed, so the database can restart without killing any.
async fn pause(app: &App, tenant: Option<&str>, out: &mut BytesMut) {
    let Some(pools) = app.pause(tenant) else {
        error(
            "3D000",
            &format!("no tenant \"{}\"", tenant.unwrap_or_default()),
            out,
        );
        return;
    };
    tracing::info!(
        tenant = tenant.unwrap_or("(all)"),
        "PAUSE: waiting for lent connections"
    );
    while pools.iter().any(|p| p.lent() > 0) {
        if app.shutdown.is_cancelled() {
            error("57P01", "shutting down", out);
            return;
        }
        tokio::time::sleep(PAUSE_POLL).await;
    }
    for p in &pools {
        p.close_idle();
    }
    tracing::info!(tenant = tenant.unwrap_or("(all)"), "paused");
    backend::command_complete("PAUSE", out);
}

/// RELOAD: as SIGHUP, on a blocking thread (reading files and hashing
/// passwords must not stall the clients of this one).
async fn reload(app: &Arc<App>, out: &mut BytesMut) {
    let app = app.clone();
    let done = tokio::task::spawn_blocking(move || app.reload_from_source()).await;
    match done.unwrap_or_else(|e| Err(format!("the reload failed: {e}"))) {
        Ok(()) => {
            tracing::info!("configuration reloaded (admin console)");
            backend::command_complete("RELOAD", out);
        }
        Err(e) => {
            tracing::error!("configuration not reloaded, keeping the old one: {e}");
            error("F0000", &format!("configuration not reloaded: {e}"), out);
        }
    }
}

/// RESUME: lends again; clients waiting get connections (new ones, after a
/// PAUSE closed the idle ones).
fn resume(app: &App, tenant: Option<&str>, out: &mut BytesMut) {
    if app.resume(tenant) {
        tracing::info!(tenant = tenant.unwrap_or("(all)"), "resumed");
        backend::command_complete("RESUME", out);
    } else {
        error(
            "55000",
            &format!(
                "tenant \"{}\" is not paused on its own (RESUME with no tenant ends a PAUSE of all)",
                tenant.unwrap_or_default()
            ),
            out,
        );
    }
}

fn run(app: &App, command: Command, out: &mut BytesMut) {
    match command {
        // Run by `answer`, which can wait.
        Command::Pause(_) | Command::Resume(_) | Command::Reload => {}
        Command::Help => {
            backend::error_response(
                &ErrorFields {
                    severity: Severity::Notice,
                    code: "00000",
                    message: "Console usage",
                    detail: Some(
                        "SHOW HELP|VERSION|CONFIG|POOLS|STATS|STATS_TOTALS|DATABASES|LISTS\n\
                         RELOAD\n\
                         PAUSE [<tenant>]\n\
                         RESUME [<tenant>]\n\
                         Tenants are the databases; each (tenant, user) has its pool.",
                    ),
                    hint: None,
                },
                out,
            );
            backend::command_complete("SHOW", out);
        }
        Command::Version => table(
            &[("version", TEXT)],
            vec![vec![
                concat!("Tidepool ", env!("CARGO_PKG_VERSION")).to_owned()
            ]],
            out,
        ),
        Command::Pools => {
            let rows = app.with_rows(None, |rows| rows.iter().map(pool_row).collect());
            table(
                &[
                    ("database", TEXT),
                    ("user", TEXT),
                    ("cl_active", INT),
                    ("cl_waiting", INT),
                    ("cl_parked", INT),
                    ("sv_active", INT),
                    ("sv_idle", INT),
                    ("pool_mode", TEXT),
                ],
                rows.unwrap_or_default(),
                out,
            );
        }
        Command::Stats => {
            let rows = tenant_totals(app)
                .into_iter()
                .map(|(tenant, t)| {
                    let mut row = vec![tenant];
                    row.extend(t.iter().map(u64::to_string));
                    row
                })
                .collect();
            table(
                &[
                    ("database", TEXT),
                    ("total_xact_count", INT),
                    ("total_query_count", INT),
                    ("total_received", INT),
                    ("total_sent", INT),
                    ("total_xact_time", INT),
                    ("total_wait_time", INT),
                    ("total_login_count", INT),
                    ("total_login_failed", INT),
                ],
                rows,
                out,
            );
        }
        Command::StatsTotals => {
            let rows = tenant_totals(app)
                .into_iter()
                .map(|(tenant, t)| {
                    let mut row = vec![tenant];
                    row.extend(t.iter().take(6).map(u64::to_string));
                    row
                })
                .collect();
            table(
                &[
                    ("database", TEXT),
                    ("xact_count", INT),
                    ("query_count", INT),
                    ("bytes_received", INT),
                    ("bytes_sent", INT),
                    ("xact_time", INT),
                    ("wait_time", INT),
                ],
                rows,
                out,
            );
        }
        Command::Config => {
            let rows = config_rows(&app.config())
                .into_iter()
                .map(|(key, value, changeable)| {
                    vec![
                        key.to_owned(),
                        value,
                        if changeable { "yes" } else { "no" }.to_owned(),
                    ]
                })
                .collect();
            table(
                &[("key", TEXT), ("value", TEXT), ("changeable", TEXT)],
                rows,
                out,
            );
        }
        Command::Databases => {
            let rows = app
                .tenants
                .list()
                .iter()
                .map(|e| {
                    let t = &e.tenant;
                    vec![
                        t.id.clone(),
                        t.host.clone(),
                        t.port.to_string(),
                        t.database.clone(),
                        t.default_pool_size.to_string(),
                        t.max_clients.to_string(),
                        e.live.clients().to_string(),
                        u8::from(app.is_paused(&t.id)).to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    ("name", TEXT),
                    ("host", TEXT),
                    ("port", INT),
                    ("database", TEXT),
                    ("pool_size", INT),
                    ("max_client_connections", INT),
                    ("current_client_connections", INT),
                    ("paused", INT),
                ],
                rows,
                out,
            );
        }
        Command::Lists => {
            let databases = app.tenants.list().len();
            let sums = app.with_rows(None, |rows| {
                let sum = |f: fn(&Row<'_>) -> u64| rows.iter().map(f).sum::<u64>();
                [
                    rows.len() as u64,
                    sum(|r| r.gauges.clients),
                    sum(|r| r.gauges.clients_waiting),
                    sum(|r| r.gauges.servers_active),
                    sum(|r| r.gauges.servers_idle),
                ]
            });
            let [pools, clients, waiting, active, idle] = sums.unwrap_or_default();
            let items = [
                ("databases", databases as u64),
                ("pools", pools),
                ("used_clients", clients),
                ("waiting_clients", waiting),
                ("parked_clients", app.parked_clients() as u64),
                ("used_servers", active + idle),
                ("active_servers", active),
                ("idle_servers", idle),
            ];
            table(
                &[("list", TEXT), ("items", INT)],
                items
                    .iter()
                    .map(|(list, n)| vec![(*list).to_owned(), n.to_string()])
                    .collect(),
                out,
            );
        }
    }
}

fn pool_row(r: &Row<'_>) -> Vec<String> {
    let g = &r.gauges;
    vec![
        r.labels.tenant.to_owned(),
        r.labels.user.to_owned(),
        g.clients.saturating_sub(g.clients_waiting).to_string(),
        g.clients_waiting.to_string(),
        g.clients_parked.to_string(),
        g.servers_active.to_string(),
        g.servers_idle.to_string(),
        r.labels.mode.to_owned(),
    ]
}

/// Each tenant's statistics summed over its users, in tenant order:
/// transactions, queries, bytes received, bytes sent, transaction time and
/// wait time (µs), logins, failed logins.
fn tenant_totals(app: &App) -> Vec<(String, [u64; 8])> {
    use std::sync::atomic::Ordering::Relaxed;
    let totals = app.with_rows(None, |rows| {
        let mut totals: Vec<(String, [u64; 8])> = Vec::new();
        for r in rows {
            let s = r.stats;
            let counts = [
                s.transactions.load(Relaxed),
                s.queries.load(Relaxed),
                s.client_bytes_in.load(Relaxed),
                s.client_bytes_out.load(Relaxed),
                s.transaction.sum_micros(),
                s.checkout.sum_micros(),
                s.logins_ok.load(Relaxed),
                s.logins_failed.load(Relaxed),
            ];
            match totals.last_mut() {
                Some((tenant, sum)) if tenant == r.labels.tenant => {
                    for (total, n) in sum.iter_mut().zip(counts) {
                        *total = total.saturating_add(n);
                    }
                }
                _ => totals.push((r.labels.tenant.to_owned(), counts)),
            }
        }
        totals
    });
    let mut totals = totals.unwrap_or_default();
    // A tenant no client has reached yet has a row too, of zeros.
    for e in app.tenants.list() {
        if !totals.iter().any(|(t, _)| *t == e.tenant.id) {
            totals.push((e.tenant.id.clone(), [0; 8]));
        }
    }
    totals.sort_by(|a, b| a.0.cmp(&b.0));
    totals
}

/// The settings in force, under their configuration keys, with whether a
/// reload changes them.
fn config_rows(config: &Config) -> Vec<(&'static str, String, bool)> {
    let (server, pool) = (&config.server, &config.pool);
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    let secs = |d: std::time::Duration| d.as_secs().to_string();
    vec![
        ("listen", server.listen.to_string(), false),
        (
            "unix_socket_dir",
            server
                .unix_socket
                .as_ref()
                .and_then(|u| u.path.parent())
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            false,
        ),
        (
            "unix_socket_mode",
            server
                .unix_socket
                .as_ref()
                .map(|u| format!("0o{:o}", u.mode))
                .unwrap_or_default(),
            false,
        ),
        ("auth_timeout_ms", ms(server.auth_timeout), true),
        ("shutdown_timeout_ms", ms(server.shutdown_timeout), true),
        (
            "max_message_size",
            server.max_message_size.to_string(),
            true,
        ),
        ("worker_threads", server.worker_threads.to_string(), false),
        (
            "park_idle_clients",
            server.park_idle_clients.to_string(),
            true,
        ),
        ("min_idle", pool.min_idle.to_string(), true),
        ("idle_timeout_secs", secs(pool.idle_timeout), true),
        ("max_lifetime_secs", secs(pool.max_lifetime), true),
        ("connect_timeout_ms", ms(pool.connect_timeout), true),
        ("checkout_timeout_ms", ms(pool.checkout_timeout), true),
        ("reset_query", pool.reset_query.clone(), true),
        (
            "max_prepared_statements",
            pool.max_prepared_statements.to_string(),
            true,
        ),
        (
            "auth_query_cache_secs",
            secs(pool.auth_query_cache_ttl),
            true,
        ),
    ]
}

/// A whole result: its description, its rows and `SHOW`.
fn table(columns: &[(&str, u32)], rows: Vec<Vec<String>>, out: &mut BytesMut) {
    backend::row_description(columns, out);
    for row in &rows {
        let values: Vec<Option<&str>> = row.iter().map(|v| Some(v.as_str())).collect();
        backend::data_row(&values, out);
    }
    backend::command_complete("SHOW", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_as_psql_and_tools_send_them() {
        let known = |c: Vec<Command>| (c, None);
        let unknown = |c: Vec<Command>, u: &str| (c, Some(u.to_owned()));
        assert_eq!(parse("SHOW POOLS;"), known(vec![Command::Pools]));
        assert_eq!(parse("  show\tstats  "), known(vec![Command::Stats]));
        assert_eq!(
            parse("SHOW VERSION; show lists;;"),
            known(vec![Command::Version, Command::Lists])
        );
        assert_eq!(parse(" ; "), known(vec![]));
        assert_eq!(parse("SHOW CLIENTS"), unknown(vec![], "SHOW CLIENTS"));
        assert_eq!(parse("PAUSE"), known(vec![Command::Pause(None)]));
        assert_eq!(
            parse("pause Acme; RESUME acme"),
            known(vec![
                Command::Pause(Some("Acme".into())),
                Command::Resume(Some("acme".into()))
            ])
        );
        assert_eq!(parse("KILL x"), unknown(vec![], "KILL x"));
        assert_eq!(parse("reload;"), known(vec![Command::Reload]));
        assert_eq!(
            parse("SHOW POOLS extra"),
            unknown(vec![], "SHOW POOLS extra")
        );
        // Up to the first unknown one, as Postgres runs a multi-statement query.
        assert_eq!(
            parse("SHOW DATABASES; DROP TABLE x; SHOW POOLS"),
            unknown(vec![Command::Databases], "DROP TABLE x")
        );
    }
}
