//! The admin console: the virtual database `pgbouncer` (or `tidepool`), where
//! the configured admin user reads the pools and their statistics with SHOW
//! commands over the simple query protocol, as PgBouncer's console answers them
//! (so `psql -d pgbouncer -c 'SHOW POOLS'` and the tools built on it work). It
//! only reads: nothing typed here changes the pooler.

use std::sync::Arc;

use bytes::BytesMut;
use pgwire::backend::{self, ErrorFields, Severity, INT8_OID, TEXT_OID};
use pgwire::startup::StartupParams;
use pgwire::{tag, TransactionStatus};
use tokio::time::Instant;

use super::auth::{authenticate, AuthFailure};
use super::login::{method_for, send_fatal};
use crate::app::App;
use crate::config::User;
use crate::error::ClientError;
use crate::framed::{read_message, send, ReadError};
use crate::listener::Peer;
use crate::metrics::Row;
use crate::stream::Stream;

/// Database names that reach the console.
const CONSOLE_DATABASES: [&str; 2] = ["pgbouncer", "tidepool"];
/// Largest message the console reads (its commands are short).
const MAX_CONSOLE_MESSAGE: usize = 64 * 1024;

/// The admin user, when this login asks for the console: the database is one of
/// [`CONSOLE_DATABASES`] and the user the configured admin.
pub(super) fn admin_for(app: &App, params: &StartupParams) -> Option<Arc<User>> {
    let admin = app.config().admin.clone()?;
    let user = params.get("user")?;
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(user);
    (user == admin.name && CONSOLE_DATABASES.contains(&database)).then_some(admin)
}

/// A console session: authenticates the admin (before `deadline`), then answers
/// its commands until it leaves or the pooler shuts down. `out` holds what must
/// precede the authentication request (NegotiateProtocolVersion).
pub(super) async fn serve(
    app: &App,
    mut stream: Stream,
    mut buf: BytesMut,
    mut out: BytesMut,
    admin: &User,
    peer: Peer,
    deadline: Instant,
) {
    if !out.is_empty() && send(&mut stream, &mut out).await.is_err() {
        return;
    }
    let method = method_for(Some(admin), crate::config::AuthMethod::ScramSha256);
    let auth = authenticate(
        &mut stream,
        &mut buf,
        &admin.name,
        &admin.name,
        Some(admin),
        method,
        &app.dummy_secret,
    );
    match tokio::time::timeout_at(deadline, auth).await {
        Ok(Ok(_)) => {}
        Ok(Err(AuthFailure::Gone)) => return,
        Ok(Err(AuthFailure::Client(e))) => {
            tracing::info!(%peer, user = %admin.name, error = %e, "admin console login failed");
            send_fatal(&mut stream, &e).await;
            return;
        }
        Err(_) => {
            send_fatal(&mut stream, &ClientError::AuthTimeout).await;
            return;
        }
    }
    tracing::info!(%peer, user = %admin.name, "admin console login");
    login_answer(&mut out);
    if send(&mut stream, &mut out).await.is_err() {
        return;
    }
    // Extended-protocol messages answered with an error until their Sync.
    let mut skipping = false;
    loop {
        let message = tokio::select! {
            m = read_message(&mut stream, &mut buf, MAX_CONSOLE_MESSAGE) => m,
            () = app.shutdown.cancelled() => {
                send_fatal(&mut stream, &ClientError::ShuttingDown).await;
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
            tag::QUERY => match pgwire::frontend::decode_query(&body) {
                Ok(sql) => answer(app, sql, &mut out),
                Err(e) => {
                    send_fatal(&mut stream, &ClientError::Protocol(e)).await;
                    return;
                }
            },
            tag::SYNC => {
                skipping = false;
                backend::ready_for_query(TransactionStatus::Idle, &mut out);
            }
            // The extended protocol's other messages (and anything else): one
            // error, then nothing until the Sync that ends them.
            _ if skipping => {}
            _ => {
                skipping = true;
                error(
                    "0A000",
                    "the admin console takes simple queries only",
                    &mut out,
                );
            }
        }
        if !out.is_empty() && send(&mut stream, &mut out).await.is_err() {
            return;
        }
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Help,
    Version,
    Pools,
    Stats,
    Databases,
    Lists,
}

/// The commands of one Query message (split on `;`, case and spacing ignored);
/// `Err` names the first one not known. Empty for an empty query.
fn parse(sql: &str) -> Result<Vec<Command>, String> {
    let mut commands = Vec::new();
    for text in sql.split(';') {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let command = match words.as_slice() {
            [show, what] if show.eq_ignore_ascii_case("show") => {
                match what.to_ascii_lowercase().as_str() {
                    "help" => Command::Help,
                    "version" => Command::Version,
                    "pools" => Command::Pools,
                    "stats" => Command::Stats,
                    "databases" => Command::Databases,
                    "lists" => Command::Lists,
                    _ => return Err(words.join(" ")),
                }
            }
            _ => return Err(words.join(" ")),
        };
        commands.push(command);
    }
    Ok(commands)
}

/// Answers one Query message into `out`, ending with ReadyForQuery.
fn answer(app: &App, sql: &str, out: &mut BytesMut) {
    match parse(sql) {
        Ok(commands) if commands.is_empty() => {
            out.extend_from_slice(&[tag::EMPTY_QUERY_RESPONSE, 0, 0, 0, 4])
        }
        Ok(commands) => {
            for command in commands {
                run(app, command, out);
            }
        }
        Err(unknown) => error(
            "0A000",
            &format!("unsupported admin console command: {unknown}"),
            out,
        ),
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

fn run(app: &App, command: Command, out: &mut BytesMut) {
    match command {
        Command::Help => {
            backend::error_response(
                &ErrorFields {
                    severity: Severity::Notice,
                    code: "00000",
                    message: "Console usage",
                    detail: Some(
                        "SHOW HELP|VERSION|POOLS|STATS|DATABASES|LISTS\n\
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
            let rows = app.with_rows(None, |rows| rows.iter().map(stats_row).collect());
            table(
                &[
                    ("database", TEXT),
                    ("user", TEXT),
                    ("total_xact_count", INT),
                    ("total_query_count", INT),
                    ("total_received", INT),
                    ("total_sent", INT),
                    ("total_xact_time", INT),
                    ("total_wait_time", INT),
                    ("total_login_count", INT),
                    ("total_login_failed", INT),
                ],
                rows.unwrap_or_default(),
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
                    ("max_client_conn", INT),
                    ("current_client_conn", INT),
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
                ("used_servers", active),
                ("free_servers", idle),
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

fn stats_row(r: &Row<'_>) -> Vec<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = r.stats;
    vec![
        r.labels.tenant.to_owned(),
        r.labels.user.to_owned(),
        s.transactions.load(Relaxed).to_string(),
        s.queries.load(Relaxed).to_string(),
        s.client_bytes_in.load(Relaxed).to_string(),
        s.client_bytes_out.load(Relaxed).to_string(),
        s.transaction.sum_micros().to_string(),
        s.checkout.sum_micros().to_string(),
        s.logins_ok.load(Relaxed).to_string(),
        s.logins_failed.load(Relaxed).to_string(),
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
        assert_eq!(parse("SHOW POOLS;"), Ok(vec![Command::Pools]));
        assert_eq!(parse("  show\tstats  "), Ok(vec![Command::Stats]));
        assert_eq!(
            parse("SHOW VERSION; show lists;;"),
            Ok(vec![Command::Version, Command::Lists])
        );
        assert_eq!(parse(" ; "), Ok(vec![]));
        assert_eq!(parse("SHOW CLIENTS"), Err("SHOW CLIENTS".to_owned()));
        assert_eq!(parse("PAUSE"), Err("PAUSE".to_owned()));
        assert_eq!(
            parse("SHOW POOLS extra"),
            Err("SHOW POOLS extra".to_owned())
        );
        assert_eq!(
            parse("SHOW DATABASES; DROP TABLE x"),
            Err("DROP TABLE x".to_owned())
        );
    }
}
