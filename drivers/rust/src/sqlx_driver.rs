//! sqlx checks: a pool of 10 connections, each held by one task so that all
//! ten are open at once over Tidepool's 3 server connections. `sqlx::query`
//! prepares named statements and caches them per connection, so every round
//! reuses statements that may live on another server connection.

use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::report::Report;
use crate::{starved, Target, CLIENTS, PROBE_TIMEOUT, ROUNDS};

type Outcome = Result<(), String>;

pub async fn run(target: &Target, report: &mut Report) {
    let pool = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&target.url())
        .await;
    let pool = match pool {
        Ok(pool) => pool,
        Err(error) => return report.check("connect", Err(error)),
    };
    report.check("create table", create_table(&pool).await);
    report.check(
        "10 concurrent connections: cached named statements across transactions",
        concurrent_rounds(&pool).await,
    );
    report.check(
        "rollback leaves nothing behind",
        rollback_discards(&pool).await,
    );
    report.check(
        "idle clients hold no server connection",
        idle_clients_hold_no_server(target).await,
    );
    pool.close().await;
}

/// CLIENTS connections one after another each run a cached query and stay
/// open, idle: every one must still get a server connection.
async fn idle_clients_hold_no_server(target: &Target) -> Outcome {
    let mut idle = Vec::new();
    for n in 0..CLIENTS as i32 {
        let opened = tokio::time::timeout(PROBE_TIMEOUT, async {
            let mut conn = PgConnection::connect(&target.url()).await?;
            let (value,): (i32,) = sqlx::query_as("SELECT $1::int4")
                .bind(n)
                .fetch_one(&mut conn)
                .await?;
            Ok::<_, sqlx::Error>((conn, value))
        })
        .await
        .map_err(|_| starved(n as usize, "a cached query"))?;
        let (conn, value) = opened.map_err(|e| e.to_string())?;
        if value != n {
            return Err(format!("client {n} got {value}"));
        }
        idle.push(conn);
    }
    for conn in idle {
        let _ = conn.close().await;
    }
    Ok(())
}

async fn create_table(pool: &PgPool) -> Outcome {
    for statement in [
        "DROP TABLE IF EXISTS sqlx_items",
        "CREATE TABLE sqlx_items (worker int4, round int4, note text, PRIMARY KEY (worker, round))",
    ] {
        sqlx::query(statement)
            .execute(pool)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn concurrent_rounds(pool: &PgPool) -> Outcome {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for worker in 0..CLIENTS as i32 {
        let pool = pool.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
            // All ten client connections are open before any work starts.
            barrier.wait().await;
            worker_rounds(&mut conn, worker)
                .await
                .map_err(|e| format!("worker {worker}: {e}"))
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn worker_rounds(conn: &mut PgConnection, worker: i32) -> Outcome {
    for round in 0..ROUNDS {
        let (sum,): (i32,) = sqlx::query_as("SELECT $1::int4 + $2::int4")
            .bind(round)
            .bind(worker)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        if sum != round + worker {
            return Err(format!("{round} + {worker} came back as {sum}"));
        }
        let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
        sqlx::query("INSERT INTO sqlx_items (worker, round, note) VALUES ($1, $2, $3)")
            .bind(worker)
            .bind(round)
            .bind(format!("w{worker}r{round}"))
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM sqlx_items WHERE worker = $1")
            .bind(worker)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        if count != i64::from(round) + 1 {
            return Err(format!(
                "round {round}: {count} rows inside the transaction"
            ));
        }
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    // sqlx really used named statements, so Tidepool had to route them.
    if conn.cached_statements_size() < 3 {
        return Err(format!(
            "only {} statements in sqlx's cache",
            conn.cached_statements_size()
        ));
    }
    Ok(())
}

async fn rollback_discards(pool: &PgPool) -> Outcome {
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("INSERT INTO sqlx_items (worker, round) VALUES (1000, 1)")
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    tx.rollback().await.map_err(|e| e.to_string())?;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM sqlx_items WHERE worker = 1000")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    if count != 0 {
        return Err(format!("{count} rows survived the rollback"));
    }
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM sqlx_items")
        .fetch_one(pool)
        .await
        .map_err(|e| e.to_string())?;
    let expected = CLIENTS as i64 * i64::from(ROUNDS);
    if total != expected {
        return Err(format!("{total} rows committed, expected {expected}"));
    }
    Ok(())
}
