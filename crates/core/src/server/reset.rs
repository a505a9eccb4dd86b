//! Bringing a server connection back to a clean state before another client gets it:
//! rolling back an open transaction, and the session-mode reset query.

use std::time::Duration;

use bytes::BytesMut;
use pgwire::backend::BackendMessage;
use pgwire::{frame::Frame, frontend, TransactionStatus};

use super::conn::ServerConn;
use crate::framed::{read_message, send};
use crate::params::{SessionSettings, READ_SESSION_SETTINGS};

/// How long a cleanup query may take before the connection is given up.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message read back from a cleanup query (its results are discarded).
const MAX_CLEANUP_MESSAGE: usize = 1 << 20;

/// How a pooler-issued query ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryOutcome {
    /// ReadyForQuery with this status, and no error.
    Ready(TransactionStatus),
    /// The server answered with an error (then ReadyForQuery).
    Failed { code: String, message: String },
    /// The connection broke, timed out or sent something unexpected.
    Broken,
}

/// Runs `sql` and waits for ReadyForQuery, handing each DataRow body to `on_row`
/// (which may refuse it). ParameterStatus changes are recorded in the connection's
/// tracked parameters. Bounded by [`CLEANUP_TIMEOUT`].
async fn run_query(
    conn: &mut ServerConn,
    sql: &str,
    on_row: impl FnMut(&[u8]) -> Option<()>,
) -> QueryOutcome {
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    frontend::query(sql, &mut out);
    run_request(conn, out, on_row).await
}

/// Sends `request` (ending in a Query or a Sync) and waits for ReadyForQuery, as
/// [`run_query`] does.
async fn run_request(
    conn: &mut ServerConn,
    mut out: BytesMut,
    mut on_row: impl FnMut(&[u8]) -> Option<()>,
) -> QueryOutcome {
    let work = async {
        send(&mut conn.stream, &mut out).await.ok()?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut failure = None;
        loop {
            let (tag, body) = read_message(&mut conn.stream, &mut buf, MAX_CLEANUP_MESSAGE)
                .await
                .ok()?;
            match BackendMessage::decode(Frame { tag, body: &body }).ok()? {
                BackendMessage::ReadyForQuery(status) => {
                    if !buf.is_empty() {
                        return None;
                    }
                    conn.status = status;
                    return Some(match failure {
                        Some((code, message)) => QueryOutcome::Failed { code, message },
                        None => QueryOutcome::Ready(status),
                    });
                }
                BackendMessage::ParameterStatus { name, value } => {
                    conn.current.set(name, value);
                }
                BackendMessage::ErrorResponse(e) => {
                    failure = Some((e.code().to_owned(), e.message().to_owned()));
                }
                BackendMessage::Other {
                    tag: pgwire::tag::DATA_ROW,
                } => on_row(&body)?,
                _ => {}
            }
        }
    };
    tokio::time::timeout(CLEANUP_TIMEOUT, work)
        .await
        .ok()
        .flatten()
        .unwrap_or(QueryOutcome::Broken)
}

/// Runs `sql` and waits for ReadyForQuery, discarding rows.
pub async fn run_discarding(conn: &mut ServerConn, sql: &str) -> QueryOutcome {
    run_query(conn, sql, |_| Some(())).await
}

/// The statement [`run_collect_pairs`] prepares and closes in one request.
const OWN_STATEMENT: &str = "tidepool internal: read";

/// Runs a query returning two text columns and collects its rows; `None` if the
/// query failed or the connection broke. It goes over the extended protocol as a
/// named statement, closed in the same request, because a simple Query would drop
/// the unnamed statement, which some drivers (pg8000) Parse in one request and
/// Bind in the next.
async fn run_collect_pairs(conn: &mut ServerConn, sql: &str) -> Option<Vec<(String, String)>> {
    let mut out = BytesMut::with_capacity(sql.len() + 96);
    frontend::parse(OWN_STATEMENT, sql, &mut out);
    frontend::bind_text("", OWN_STATEMENT, &[], &mut out);
    frontend::execute("", 0, &mut out);
    frontend::close_statement(OWN_STATEMENT, &mut out);
    frontend::sync(&mut out);
    let mut rows = Vec::new();
    let outcome = run_request(conn, out, |body| {
        rows.push(two_text_columns(body)?);
        Some(())
    })
    .await;
    matches!(outcome, QueryOutcome::Ready(_)).then_some(rows)
}

/// Reads a connection's session-level settings back ([`READ_SESSION_SETTINGS`], in
/// the server's canonical form) and records them as what it carries; `None` if
/// the read failed or the connection broke.
pub async fn read_session_settings(conn: &mut ServerConn) -> Option<SessionSettings> {
    let rows = run_collect_pairs(conn, READ_SESSION_SETTINGS).await?;
    let settings = SessionSettings::from_rows(rows);
    conn.settings.clone_from(&settings);
    Some(settings)
}

/// Closes the server's statements `names` (Close is not an error for a name the
/// server lacks). True when the connection ends ready.
pub async fn close_statements(conn: &mut ServerConn, names: &[Box<str>]) -> bool {
    let mut out = BytesMut::with_capacity(names.iter().map(|n| n.len() + 8).sum::<usize>() + 8);
    for name in names {
        frontend::close_statement(name, &mut out);
    }
    frontend::sync(&mut out);
    matches!(
        run_request(conn, out, |_| Some(())).await,
        QueryOutcome::Ready(_)
    )
}

/// Runs `sql` with text parameters over the extended protocol (unnamed statement
/// and portal; values never spliced into SQL) and collects its rows, NULL as
/// `None`. At most `max_rows` rows are kept.
pub async fn run_params_collect(
    conn: &mut ServerConn,
    sql: &str,
    params: &[Option<&str>],
    max_rows: usize,
) -> Result<Vec<Vec<Option<String>>>, QueryOutcome> {
    let mut out = BytesMut::with_capacity(sql.len() + 64);
    frontend::parse("", sql, &mut out);
    frontend::bind_text("", "", params, &mut out);
    frontend::execute("", 0, &mut out);
    frontend::sync(&mut out);
    let mut rows = Vec::new();
    let outcome = run_request(conn, out, |body| {
        if rows.len() < max_rows {
            rows.push(text_columns(body)?);
        }
        Some(())
    })
    .await;
    match outcome {
        QueryOutcome::Ready(TransactionStatus::Idle) => Ok(rows),
        QueryOutcome::Ready(_) => Err(QueryOutcome::Broken),
        other => Err(other),
    }
}

/// The text columns of a DataRow body, NULL as `None`.
fn text_columns(body: &[u8]) -> Option<Vec<Option<String>>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = usize::try_from(i16::from_be_bytes(*count)).ok()?;
    let mut columns = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            columns.push(None);
            rest = tail;
            continue;
        }
        let len = usize::try_from(len).ok()?;
        let value = tail.get(..len)?;
        rest = tail.get(len..)?;
        columns.push(Some(String::from_utf8(value.to_vec()).ok()?));
    }
    Some(columns)
}

/// The two non-null text columns of a DataRow body.
fn two_text_columns(body: &[u8]) -> Option<(String, String)> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    if i16::from_be_bytes(*count) != 2 {
        return None;
    }
    let mut column = || {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(i32::from_be_bytes(*len)).ok()?;
        let value = tail.get(..len)?;
        rest = &tail[len..];
        String::from_utf8(value.to_vec()).ok()
    };
    Some((column()?, column()?))
}

/// Rolls back whatever transaction is open and runs `reset_query` if given. True when
/// the connection ends idle and clean.
pub async fn clean(conn: &mut ServerConn, in_transaction: bool, reset_query: Option<&str>) -> bool {
    let idle = QueryOutcome::Ready(TransactionStatus::Idle);
    if in_transaction && run_discarding(conn, "ROLLBACK").await != idle {
        return false;
    }
    match reset_query {
        Some(q) if !q.trim().is_empty() => {
            // The reset may drop prepared statements and settings (DISCARD ALL
            // does): forget them.
            conn.statements.clear();
            conn.settings.clear();
            run_discarding(conn, q).await == idle
        }
        _ => true,
    }
}
