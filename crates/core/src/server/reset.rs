//! Bringing a server connection back to a clean state before another client gets it:
//! rolling back an open transaction, and the session-mode reset query.

use std::time::Duration;

use bytes::BytesMut;
use pgwire::backend::BackendMessage;
use pgwire::{frame::Frame, frontend, TransactionStatus};

use super::conn::ServerConn;
use crate::framed::{read_message, send};

/// How long a cleanup query may take before the connection is given up.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message read back from a cleanup query (its results are discarded).
const MAX_CLEANUP_MESSAGE: usize = 1 << 20;

/// Runs `sql` and waits for ReadyForQuery, discarding the results. Returns the final
/// transaction status, or `None` if the connection failed, timed out or errored.
pub async fn run_discarding(conn: &mut ServerConn, sql: &str) -> Option<TransactionStatus> {
    let work = async {
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        frontend::query(sql, &mut out);
        send(&mut conn.stream, &mut out).await.ok()?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut failed = false;
        loop {
            let (tag, body) = read_message(&mut conn.stream, &mut buf, MAX_CLEANUP_MESSAGE)
                .await
                .ok()?;
            match BackendMessage::decode(Frame { tag, body: &body }).ok()? {
                BackendMessage::ReadyForQuery(status) => {
                    return (!failed && buf.is_empty()).then_some(status);
                }
                BackendMessage::ErrorResponse(e) => {
                    tracing::warn!(
                        server = conn.id,
                        code = e.code(),
                        message = e.message(),
                        "cleanup query failed"
                    );
                    failed = true;
                }
                _ => {}
            }
        }
    };
    let status = tokio::time::timeout(CLEANUP_TIMEOUT, work)
        .await
        .ok()
        .flatten();
    if let Some(s) = status {
        conn.status = s;
    }
    status
}

/// Rolls back whatever transaction is open and runs `reset_query` if given. True when
/// the connection ends idle and clean.
pub async fn clean(conn: &mut ServerConn, in_transaction: bool, reset_query: Option<&str>) -> bool {
    if in_transaction && run_discarding(conn, "ROLLBACK").await != Some(TransactionStatus::Idle) {
        return false;
    }
    match reset_query {
        Some(q) if !q.trim().is_empty() => {
            run_discarding(conn, q).await == Some(TransactionStatus::Idle)
        }
        _ => true,
    }
}
