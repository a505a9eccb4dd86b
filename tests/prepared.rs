//! Named prepared statements through Tidepool in transaction mode, against a
//! real Postgres: a statement follows its client to a server that never saw
//! the Parse, a repeated Parse replaces the server's copy (fresh after a schema
//! change) while a Close is answered by the pooler, errors
//! skip to Sync without leaving statements behind, each server's cache stays
//! within `max_prepared_statements`, `DISCARD ALL` and `DEALLOCATE ALL` forget
//! statements on both sides, tracking can be turned off, session mode is left
//! alone, and pgbench's prepared mode runs without failures.
//!
//! Pools are smaller than the number of clients, so a client's next
//! transaction may land on any server. Where a test must know that a server
//! lacks a statement, other clients hold the server that has it in an open
//! transaction. Raw-protocol tests send the same bytes to Postgres directly
//! and compare what comes back. Every wait is bounded: a hang fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Buf;
use common::wire::{
    self, bind, describe_portal, describe_statement, execute, flush, parse, query, sync,
    BackendMessage,
};
use common::{bin_dir, free_port, Next, PgServer, PoolMode, TidepoolProc, WireClient, HOST};

const USER: &str = "app";
const PASSWORD: &str = "prepared-pw-1";
/// Bound for things that should take well under a second; only a hang exceeds it.
const NO_HANG: Duration = Duration::from_secs(10);
/// Bound for a whole concurrent workload.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A fresh Postgres with the login role `USER` (allowed to create tables), and
/// Tidepool in front of it.
struct Setup {
    // Declared first, so dropped first: Tidepool stops before Postgres does.
    proc: TidepoolProc,
    pg: PgServer,
    _config_dir: Option<tempfile::TempDir>,
}

impl Setup {
    /// Single-upstream mode with the default statement limit.
    async fn single(pool_size: u32, mode: PoolMode) -> Setup {
        let pg = start_postgres().await;
        let proc = TidepoolProc::start_single(&pg, USER, PASSWORD, pool_size, mode);
        Setup {
            proc,
            pg,
            _config_dir: None,
        }
    }

    /// Transaction mode from a configuration file with
    /// `[pool] max_prepared_statements = max_prepared`.
    async fn with_statement_limit(pool_size: u32, max_prepared: u32) -> Setup {
        let pg = start_postgres().await;
        let dir = tempfile::tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let port = free_port();
        let text = format!(
            r#"
[server]
listen = "{HOST}:{port}"

[pool]
max_prepared_statements = {max_prepared}

[[tenants]]
external_id = "postgres"
db_host = "{HOST}"
db_port = {pg_port}
db_database = "postgres"

[[tenants.users]]
db_user = "{USER}"
db_password = "{PASSWORD}"
pool_size = {pool_size}
mode_type = "transaction"
"#,
            pg_port = pg.port()
        );
        let path = dir.path().join("tidepool.toml");
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        let path = path.to_str().expect("temporary paths are UTF-8");
        let proc = TidepoolProc::start_on(port, &["--config", path]);
        Setup {
            proc,
            pg,
            _config_dir: Some(dir),
        }
    }

    /// A raw client logged in through Tidepool.
    async fn client(&self) -> WireClient {
        WireClient::login(self.proc.port(), USER, PASSWORD).await
    }

    /// A raw client logged in to Postgres directly, as the same user.
    async fn direct(&self) -> WireClient {
        WireClient::login(self.pg.port(), USER, PASSWORD).await
    }

    /// A `tokio-postgres` URL through Tidepool.
    fn url(&self) -> String {
        self.proc.url(USER, PASSWORD, "postgres")
    }
}

async fn start_postgres() -> PgServer {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    // Since Postgres 15 only the owner may create in `public`.
    pg.execute(&format!("GRANT CREATE ON SCHEMA public TO {USER}"))
        .await;
    pg
}

// ---- raw protocol helpers ----------------------------------------------------

/// Close of a prepared statement (the wire helpers have no Close).
fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    wire::message(b'C', &body)
}

/// Parse, Bind and Execute of `SELECT pg_backend_pid()`, unnamed, without Sync.
fn backend_pid_query() -> Vec<u8> {
    [
        parse("", "SELECT pg_backend_pid()"),
        bind("", "", &[]),
        execute("", 0),
    ]
    .concat()
}

/// Sends `batch` in one write (it must end with one Sync or be one Query) and
/// returns everything up to its ReadyForQuery.
async fn run_batch(client: &mut WireClient, batch: &[Vec<u8>]) -> Vec<BackendMessage> {
    client.send(&batch.concat()).await;
    client.read_until_ready().await
}

/// Sends `batch` to Tidepool and to Postgres directly; the two answers must
/// match. Returns the answer's [`outline`].
async fn run_both(pooled: &mut WireClient, direct: &mut WireClient, batch: &[Vec<u8>]) -> String {
    let through_pooler = outline(&run_batch(pooled, batch).await);
    let from_postgres = outline(&run_batch(direct, batch).await);
    assert_eq!(
        through_pooler, from_postgres,
        "Tidepool's answer (left) differs from Postgres's (right)"
    );
    through_pooler
}

/// What must match between Tidepool and Postgres, one word per message:
/// `1` ParseComplete, `2` BindComplete, `3` CloseComplete, `D[col,...]`,
/// `C(tag)`, `E(sqlstate)`, `Z(status)`, `t[type oids]`,
/// `T[name:type oid,...]`. Notices and ParameterStatus are left out.
fn outline(messages: &[BackendMessage]) -> String {
    messages
        .iter()
        .filter(|m| !matches!(m.tag, b'N' | b'S'))
        .map(|m| match m.tag {
            b'E' => format!("E({})", m.sqlstate().unwrap_or_default()),
            b'C' => format!("C({})", m.command_tag().unwrap_or_default()),
            b'Z' => format!("Z({})", char::from(m.ready_status().unwrap_or(b'?'))),
            b'D' => {
                let columns: Vec<String> = m
                    .data_row()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| c.unwrap_or_else(|| "NULL".to_owned()))
                    .collect();
                format!("D[{}]", columns.join(","))
            }
            b't' => format!("t[{}]", parameter_types(&m.body).join(",")),
            b'T' => format!("T[{}]", row_columns(&m.body).join(",")),
            tag => char::from(tag).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The type OIDs of a ParameterDescription.
fn parameter_types(mut body: &[u8]) -> Vec<String> {
    let count = body.try_get_i16().unwrap_or(0);
    (0..count)
        .map_while(|_| body.try_get_u32().ok())
        .map(|oid| oid.to_string())
        .collect()
}

/// `name:type oid` of each column of a RowDescription.
fn row_columns(mut body: &[u8]) -> Vec<String> {
    let count = body.try_get_i16().unwrap_or(0);
    let mut columns = Vec::new();
    for _ in 0..count {
        let Some(end) = body.iter().position(|&b| b == 0) else {
            break;
        };
        let name = String::from_utf8_lossy(&body[..end]).into_owned();
        body.advance(end + 1);
        // Table OID (4), column number (2), type OID (4), size (2), modifier (4), format (2).
        if body.len() < 18 {
            break;
        }
        let type_oid = u32::from_be_bytes([body[6], body[7], body[8], body[9]]);
        body.advance(18);
        columns.push(format!("{name}:{type_oid}"));
    }
    columns
}

/// The message of the first ErrorResponse in `messages`.
fn error_message(messages: &[BackendMessage]) -> String {
    messages
        .iter()
        .find(|m| m.tag == b'E')
        .and_then(|m| m.field(b'M'))
        .unwrap_or_default()
}

/// The backend pid of the server the client's next transaction gets.
async fn backend_pid(client: &mut WireClient) -> String {
    client.query_value("SELECT pg_backend_pid()").await
}

/// `(name, statement)` of every prepared statement on the server the client's
/// next transaction gets, by name. Uses the simple protocol, which prepares
/// nothing itself.
async fn server_statements(client: &mut WireClient) -> Vec<(String, String)> {
    let (rows, _) = client
        .query_ok("SELECT name, statement FROM pg_prepared_statements ORDER BY name")
        .await;
    rows.into_iter()
        .map(|row| match row.as_slice() {
            [Some(name), Some(statement)] => (name.clone(), statement.clone()),
            other => panic!("unexpected pg_prepared_statements row {other:?}"),
        })
        .collect()
}

/// Whether `name` has the shape of a pooler-wide statement name, `tp_` and 16
/// lowercase hex digits.
fn is_pooler_name(name: &str) -> bool {
    name.strip_prefix("tp_").is_some_and(|hex| {
        hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Prepares `statements` (name, SQL) in one batch, with `SELECT
/// pg_backend_pid()` before the Sync, so all of it runs on one server; returns
/// that server's pid.
async fn prepare_on_one_server(client: &mut WireClient, statements: &[(&str, &str)]) -> String {
    let mut batch: Vec<Vec<u8>> = statements
        .iter()
        .map(|(name, sql)| parse(name, sql))
        .collect();
    batch.push(backend_pid_query());
    batch.push(sync());
    let answer = run_batch(client, &batch).await;
    let expected_tags = format!("{}12DCZ", "1".repeat(statements.len()));
    assert_eq!(wire::tags(&answer), expected_tags, "{answer:?}");
    match wire::rows(&answer).as_slice() {
        [row] => match row.as_slice() {
            [Some(pid)] => pid.clone(),
            _ => panic!("pg_backend_pid() returned {row:?}"),
        },
        rows => panic!("pg_backend_pid() returned {rows:?}"),
    }
}

/// With a pool of two servers, makes every other client's next transaction
/// land on the server that is not `pid`: two new clients open a transaction
/// each, which takes both servers; the one holding `pid` is returned with its
/// transaction still open, the other commits.
async fn occupy_server(setup: &Setup, pid: &str) -> WireClient {
    let mut first = setup.client().await;
    let mut second = setup.client().await;
    assert_eq!(first.query_ok("BEGIN").await.1, b'T');
    assert_eq!(second.query_ok("BEGIN").await.1, b'T');
    let first_pid = backend_pid(&mut first).await;
    let second_pid = backend_pid(&mut second).await;
    assert_ne!(
        first_pid, second_pid,
        "two open transactions share one server"
    );
    let (mut holder, mut other) = if first_pid == pid {
        (first, second)
    } else {
        assert_eq!(second_pid, pid, "neither transaction got server {pid}");
        (second, first)
    };
    assert_eq!(other.query_ok("COMMIT").await.1, b'I');
    other.send(&wire::terminate()).await;
    assert_eq!(backend_pid(&mut holder).await, pid);
    holder
}

// ---- tests -------------------------------------------------------------------

/// What one `tokio-postgres` client inserted: (rows, sum of `n`).
type Totals = (i64, i64);

/// One client of [`tokio_postgres_clients_share_a_small_pool`]: prepares three
/// statements once (one text shared by all clients, two of its own) and runs
/// each 50 times, outside transactions (two requests pipelined), in committed
/// transactions and in rolled-back ones, checking every result.
async fn prepared_workload(url: String, id: i32) -> Totals {
    let fail = |what: &str, e: tokio_postgres::Error| -> ! { panic!("client {id}: {what}: {e}") };
    let mut client = common::connect(&url).await;
    let add_one = client
        .prepare("SELECT $1::int + 1")
        .await
        .unwrap_or_else(|e| fail("prepare add_one", e));
    let insert = client
        .prepare(&format!(
            "INSERT INTO items (client, n) VALUES ($1, $2) /* client {id} */"
        ))
        .await
        .unwrap_or_else(|e| fail("prepare insert", e));
    let totals = client
        .prepare(&format!(
            "SELECT count(*), coalesce(sum(n), 0)::bigint FROM items WHERE client = $1 \
             /* client {id} */"
        ))
        .await
        .unwrap_or_else(|e| fail("prepare totals", e));
    let read_totals = |row: tokio_postgres::Row| -> Totals { (row.get(0), row.get(1)) };

    let mut expected: Totals = (0, 0);
    for i in 0..50i32 {
        match i % 3 {
            0 => {
                let (add_params, totals_params) = ([&i as _], [&id as _]);
                let (sum, seen) = tokio::try_join!(
                    client.query_one(&add_one, &add_params),
                    client.query_one(&totals, &totals_params),
                )
                .unwrap_or_else(|e| fail("pipelined add_one and totals", e));
                assert_eq!(sum.get::<_, i32>(0), i + 1, "client {id} round {i}");
                assert_eq!(read_totals(seen), expected, "client {id} round {i}");
                let inserted = client
                    .execute(&insert, &[&id, &i])
                    .await
                    .unwrap_or_else(|e| fail("insert", e));
                assert_eq!(inserted, 1);
                expected = (expected.0 + 1, expected.1 + i64::from(i));
            }
            1 => {
                let tx = client
                    .transaction()
                    .await
                    .unwrap_or_else(|e| fail("BEGIN", e));
                let sum = tx
                    .query_one(&add_one, &[&i])
                    .await
                    .unwrap_or_else(|e| fail("add_one in a transaction", e));
                assert_eq!(sum.get::<_, i32>(0), i + 1, "client {id} round {i}");
                tx.execute(&insert, &[&id, &i])
                    .await
                    .unwrap_or_else(|e| fail("insert in a transaction", e));
                expected = (expected.0 + 1, expected.1 + i64::from(i));
                let seen = tx
                    .query_one(&totals, &[&id])
                    .await
                    .unwrap_or_else(|e| fail("totals in a transaction", e));
                assert_eq!(read_totals(seen), expected, "client {id} round {i}");
                tx.commit().await.unwrap_or_else(|e| fail("COMMIT", e));
            }
            _ => {
                let tx = client
                    .transaction()
                    .await
                    .unwrap_or_else(|e| fail("BEGIN", e));
                tx.execute(&insert, &[&id, &i])
                    .await
                    .unwrap_or_else(|e| fail("insert to roll back", e));
                let seen = tx
                    .query_one(&totals, &[&id])
                    .await
                    .unwrap_or_else(|e| fail("totals before rollback", e));
                assert_eq!(
                    read_totals(seen),
                    (expected.0 + 1, expected.1 + i64::from(i)),
                    "client {id} round {i}"
                );
                let sum = tx
                    .query_one(&add_one, &[&i])
                    .await
                    .unwrap_or_else(|e| fail("add_one before rollback", e));
                assert_eq!(sum.get::<_, i32>(0), i + 1, "client {id} round {i}");
                tx.rollback().await.unwrap_or_else(|e| fail("ROLLBACK", e));
                let seen = client
                    .query_one(&totals, &[&id])
                    .await
                    .unwrap_or_else(|e| fail("totals after rollback", e));
                assert_eq!(read_totals(seen), expected, "client {id} round {i}");
            }
        }
        tokio::task::yield_now().await;
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_clients_share_a_small_pool() {
    const CLIENTS: i32 = 8;
    const POOL_SIZE: i64 = 2;
    let setup = Setup::single(POOL_SIZE as u32, PoolMode::Transaction).await;
    common::connect(&setup.url())
        .await
        .batch_execute("CREATE TABLE items (client int NOT NULL, n int NOT NULL)")
        .await
        .unwrap();

    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let url = setup.url();
            tokio::spawn(async move {
                tokio::time::timeout(RUN_LIMIT, prepared_workload(url, id))
                    .await
                    .unwrap_or_else(|_| panic!("client {id} still running after {RUN_LIMIT:?}"))
            })
        })
        .collect();
    // Never more server connections than the pool allows, checked on Postgres
    // while the clients run.
    let mut most_backends = 0;
    while !workers.iter().all(|w| w.is_finished()) {
        most_backends = most_backends.max(setup.pg.count_backends(USER).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut expected = Vec::new();
    for (id, worker) in (0..CLIENTS).zip(workers) {
        let totals = worker
            .await
            .unwrap_or_else(|e| panic!("client {id} failed: {e}"));
        expected.push((id, totals.0, totals.1));
    }
    assert!(
        (1..=POOL_SIZE).contains(&most_backends),
        "{most_backends} server connections for a pool of {POOL_SIZE}"
    );
    assert!(setup.pg.count_backends(USER).await <= POOL_SIZE);

    // What the clients saw is what Postgres has.
    let stored: Vec<(i32, i64, i64)> = setup
        .pg
        .client()
        .await
        .query(
            "SELECT client, count(*), sum(n)::bigint FROM items GROUP BY client ORDER BY client",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(stored, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_follows_its_client_to_a_server_that_never_saw_the_parse() {
    let setup = Setup::single(2, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    let doubled = "SELECT $1::int * 2 AS doubled, 'x' || $2::text AS tagged";
    let described = "SELECT $1::text AS echoed, 7::int8 AS seven";
    // Larger than any read buffer: the Parse re-sent to the second server must
    // be complete too.
    let big = format!("SELECT 'big' AS size /* {} */", "x".repeat(200_000));
    let statements = [("s1", doubled), ("s2", described), ("s_big", big.as_str())];

    let first_server = prepare_on_one_server(&mut client, &statements).await;
    let prepare_directly: Vec<Vec<u8>> = statements
        .iter()
        .map(|(name, sql)| parse(name, sql))
        .chain([sync()])
        .collect();
    assert_eq!(
        outline(&run_batch(&mut direct, &prepare_directly).await),
        "1 1 1 Z(I)"
    );

    let holder = occupy_server(&setup, &first_server).await;
    // Only the other server is free now; it has never seen the Parse, yet the
    // client sees exactly what Postgres sends: no extra ParseComplete.
    let answer = run_both(
        &mut client,
        &mut direct,
        &[
            bind("", "s1", &[Some("21"), Some("y")]),
            execute("", 0),
            sync(),
        ],
    )
    .await;
    assert_eq!(answer, "2 D[42,xy] C(SELECT 1) Z(I)");
    assert_ne!(
        backend_pid(&mut client).await,
        first_server,
        "the Bind should have run on the other server"
    );
    // The pooler prepared it there under its pooler-wide name.
    let on_second_server = server_statements(&mut client).await;
    assert!(
        matches!(on_second_server.as_slice(),
            [(name, text)] if is_pooler_name(name) && text == doubled),
        "{on_second_server:?}"
    );

    // Describe of a statement the server lacks: prepared first, same answer.
    let answer = run_both(
        &mut client,
        &mut direct,
        &[describe_statement("s2"), sync()],
    )
    .await;
    assert_eq!(answer, "t[25] T[echoed:25,seven:20] Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "s_big", &[]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(answer, "2 D[big] C(SELECT 1) Z(I)");
    assert_eq!(server_statements(&mut client).await.len(), 3);

    // Both servers free again: the statements work wherever the client lands.
    let mut holder = holder;
    assert_eq!(holder.query_ok("COMMIT").await.1, b'I');
    for round in 0..6 {
        let value = round.to_string();
        let answer = outline(
            &run_batch(
                &mut client,
                &[
                    bind("", "s1", &[Some(&value), Some("z")]),
                    execute("", 0),
                    sync(),
                ],
            )
            .await,
        );
        assert_eq!(
            answer,
            format!("2 D[{},xz] C(SELECT 1) Z(I)", round * 2),
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_parse_replaces_the_servers_copy_and_the_pooler_answers_a_close() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let add_one = "SELECT $1::int + 1";

    let prepare = [parse("s1", add_one), sync()];
    assert_eq!(outline(&run_batch(&mut client, &prepare).await), "1 Z(I)");
    // A second Parse of s1 is refused, as Postgres does (see
    // a_parse_of_a_name_in_use_is_refused_and_keeps_the_old_statement_like_on_postgres).
    assert_eq!(
        outline(&run_batch(&mut client, &prepare).await),
        "E(42P05) Z(I)"
    );
    let statements = server_statements(&mut client).await;
    assert!(
        matches!(statements.as_slice(), [(name, text)] if is_pooler_name(name) && text == add_one),
        "{statements:?}"
    );

    // The pooler's ParseComplete waits its turn behind a long result (s2 has the
    // text the server has under its pooler-wide name).
    let answer = run_batch(
        &mut client,
        &[
            parse("", "SELECT generate_series(1, 2000)"),
            bind("", "", &[]),
            execute("", 0),
            parse("s2", add_one),
            bind("", "s1", &[Some("41")]),
            execute("", 0),
            sync(),
        ],
    )
    .await;
    assert_eq!(wire::tags(&answer), format!("12{}C12DCZ", "D".repeat(2000)));
    assert_eq!(
        wire::rows(&answer).last(),
        Some(&vec![Some("42".to_owned())])
    );

    // Close after a Bind and Execute of the same batch: CloseComplete in its place.
    let answer = run_batch(
        &mut client,
        &[
            bind("", "s1", &[Some("41")]),
            execute("", 0),
            close_statement("s1"),
            sync(),
        ],
    )
    .await;
    assert_eq!(outline(&answer), "2 D[42] C(SELECT 1) 3 Z(I)");

    // The name is gone for this client: Postgres's own error, then ReadyForQuery.
    let answer = run_batch(
        &mut client,
        &[bind("", "s1", &[Some("1")]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(outline(&answer), "E(26000) Z(I)");
    assert!(
        error_message(&answer).contains("\"s1\""),
        "the error should name the client's statement: {answer:?}"
    );
    assert_eq!(client.query_value("SELECT 40 + 2").await, "42");
    // The server keeps the statement for other clients that prepared the same text.
    assert_eq!(server_statements(&mut client).await.len(), 1);

    // Preparing it again works, and its ParseComplete arrives on Flush too,
    // without a Sync.
    let answer = run_batch(
        &mut client,
        &[
            parse("s1", add_one),
            bind("", "s1", &[Some("1")]),
            execute("", 0),
            sync(),
        ],
    )
    .await;
    assert_eq!(outline(&answer), "1 2 D[2] C(SELECT 1) Z(I)");
    client.send(&[parse("s3", add_one), flush()].concat()).await;
    match client.next_within(NO_HANG).await {
        Next::Message(m) if m.tag == b'1' => {}
        other => panic!("expected ParseComplete after Flush, got {other:?}"),
    }
    let answer = run_batch(
        &mut client,
        &[bind("", "s3", &[Some("2")]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(outline(&answer), "2 D[3] C(SELECT 1) Z(I)");
}

/// After a schema change, a statement prepared before it fails as on Postgres
/// ("cached plan must not change result type"); preparing the same text again,
/// by the same client or another, gives a fresh statement, although the server
/// had the old one under the same pooler-wide name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_again_after_a_schema_change_is_fresh() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let a = common::connect(&setup.url()).await;
    a.batch_execute("CREATE TABLE shape (x int); INSERT INTO shape VALUES (1)")
        .await
        .unwrap();
    let old = a.prepare("SELECT * FROM shape").await.unwrap();
    assert_eq!(a.query(&old, &[]).await.unwrap()[0].len(), 1);

    a.batch_execute("ALTER TABLE shape ADD COLUMN y text DEFAULT 'new'")
        .await
        .unwrap();
    let stale = a.query(&old, &[]).await.unwrap_err();
    assert_eq!(
        stale.code().map(|c| c.code()),
        Some("0A000"),
        "Postgres's own error for a stale statement: {stale}"
    );

    let again = a.prepare("SELECT * FROM shape").await.unwrap();
    assert_eq!(again.columns().len(), 2, "described fresh");
    let rows = a.query(&again, &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, &str>(1), "new");

    // Another client, same text: the statement it gets is the fresh one too.
    a.batch_execute("ALTER TABLE shape ALTER COLUMN x TYPE bigint")
        .await
        .unwrap();
    let b = common::connect(&setup.url()).await;
    let typed = b.prepare("SELECT x FROM shape WHERE x = $1").await.unwrap();
    assert_eq!(typed.params(), &[tokio_postgres::types::Type::INT8]);
    let rows = b.query(&typed, &[&1i64]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    a.batch_execute("ALTER TABLE shape ALTER COLUMN x TYPE int")
        .await
        .unwrap();
    let typed = a.prepare("SELECT x FROM shape WHERE x = $1").await.unwrap();
    assert_eq!(typed.params(), &[tokio_postgres::types::Type::INT4]);
    assert_eq!(a.query(&typed, &[&1i32]).await.unwrap().len(), 1);
}

/// A client whose Parse failed, seen after a Flush, goes on to send a Bind and an
/// Execute before its Sync: Postgres skips them and answers the Sync alone. The
/// pooler must see the transaction end there and give the server back (a pool
/// of one: another client gets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_after_a_flushed_error_end_at_the_sync_like_on_postgres() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    for c in [&mut client, &mut direct] {
        fail_a_parse_and_flush(c, "s_bad").await;
    }
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "s_bad", &[]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(answer, "Z(I)");
    let mut other = setup.client().await;
    let answer = tokio::time::timeout(NO_HANG, other.query_ok("SELECT 1"))
        .await
        .expect("the only server was never given back");
    assert_eq!(answer.1, b'I');
    assert_eq!(
        outline(&run_batch(&mut client, &[query("SELECT 2")]).await),
        "T[?column?:23] D[2] C(SELECT 1) Z(I)"
    );
}

/// Sends a Parse of bad SQL as `name` and a Flush, and reads the error: the
/// server now skips everything up to the next Sync.
async fn fail_a_parse_and_flush(client: &mut WireClient, name: &str) {
    client
        .send(&[parse(name, "SELEC 1"), flush()].concat())
        .await;
    match client.next_within(NO_HANG).await {
        Next::Message(m) if m.tag == b'E' => {}
        other => panic!("expected the Parse's error after Flush, got {other:?}"),
    }
}

/// Reads messages until the `count`-th ReadyForQuery; the outline, with what
/// ended the wait early if something did.
async fn read_until_ready_n(client: &mut WireClient, count: usize) -> String {
    let mut got = Vec::new();
    let mut seen = 0;
    while seen < count {
        match client.next_within(NO_HANG).await {
            Next::Message(m) => {
                seen += usize::from(m.tag == b'Z');
                got.push(m);
            }
            other => return format!("{} (then {other:?})", outline(&got)),
        }
    }
    outline(&got)
}

/// After a flushed Parse error, a client pipelines Bind/Execute/Sync and then a
/// Close of another statement (which the pooler answers itself) and a second
/// Sync. Postgres answers `Z 3 Z`; the CloseComplete must not be lost behind
/// the requests the server skipped, nor the server kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_after_skipped_requests_is_answered_like_on_postgres() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    let answer = run_both(
        &mut client,
        &mut direct,
        &[parse("s_keep", "SELECT 4"), sync()],
    )
    .await;
    assert_eq!(answer, "1 Z(I)");
    let mut answers = Vec::new();
    for c in [&mut client, &mut direct] {
        fail_a_parse_and_flush(c, "s_bad").await;
        let batch = [
            bind("", "s_bad", &[]),
            execute("", 0),
            sync(),
            close_statement("s_keep"),
            sync(),
        ];
        c.send(&batch.concat()).await;
        answers.push(read_until_ready_n(c, 2).await);
    }
    assert_eq!(answers[0], answers[1], "Tidepool (left), Postgres (right)");
    assert_eq!(answers[0], "Z(I) 3 Z(I)");
    let mut other = setup.client().await;
    tokio::time::timeout(NO_HANG, other.query_ok("SELECT 1"))
        .await
        .expect("the only server was never given back");
}

/// A client sends a Sync after a flushed error and, in the same write, runs a
/// statement another client has since prepared again with new columns. The
/// server stops skipping at that Sync, so the statement must be checked and
/// fail as on Postgres, not run with the new columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_after_the_sync_that_ends_an_error_is_checked_like_any_other() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut a = setup.client().await;
    let mut b = setup.client().await;
    let mut direct = setup.direct().await;
    a.query_ok("CREATE TABLE after_sync (x int); INSERT INTO after_sync VALUES (1)")
        .await;
    let sql = "SELECT * FROM after_sync";
    let prepare = [parse("s1", sql), describe_statement("s1"), sync()];
    let answer = run_both(&mut a, &mut direct, &prepare).await;
    assert_eq!(answer, "1 t[] T[x:23] Z(I)");
    a.query_ok("ALTER TABLE after_sync ADD COLUMN y text DEFAULT 'new'")
        .await;
    let answer = run_batch(&mut b, &[parse("t1", sql), sync()]).await;
    assert_eq!(outline(&answer), "1 Z(I)");
    let mut answers = Vec::new();
    for c in [&mut a, &mut direct] {
        fail_a_parse_and_flush(c, "bad").await;
        c.send(&[sync(), bind("", "s1", &[]), execute("", 0), sync()].concat())
            .await;
        answers.push(read_until_ready_n(c, 2).await);
    }
    assert_eq!(answers[0], answers[1], "Tidepool (left), Postgres (right)");
    assert_eq!(answers[0], "Z(I) E(0A000) Z(I)");
}

/// Server Y has an old copy of a statement (prepared before a schema change and
/// never described); a client that prepared the text after the change, on
/// server X, runs it on Y. Postgres would run it (the client's statement is
/// new), so the pooler must not describe Y's old copy (Postgres fails that
/// Describe with 0A000) but prepare it again there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_copy_on_another_server_is_prepared_again_for_a_new_statement() {
    let setup = Setup::single(2, PoolMode::Transaction).await;
    let mut a = setup.client().await;
    let mut b = setup.client().await;
    a.query_ok("CREATE TABLE old_copy (x int); INSERT INTO old_copy VALUES (1)")
        .await;
    let sql = "SELECT * FROM old_copy";
    let pid_y = prepare_on_one_server(&mut b, &[("t1", sql)]).await;
    a.query_ok("ALTER TABLE old_copy ADD COLUMN y text DEFAULT 'new'")
        .await;
    let holder = occupy_server(&setup, &pid_y).await;
    let answer = run_batch(
        &mut a,
        &[
            parse("s1", sql),
            describe_statement("s1"),
            backend_pid_query(),
            sync(),
        ],
    )
    .await;
    let pid_x = wire::rows(&answer)[0][0].clone().unwrap();
    assert_ne!(pid_x, pid_y);
    drop(holder);
    let mut holder = occupy_server(&setup, &pid_x).await;
    for _ in 0..3 {
        let answer = run_batch(&mut a, &[bind("", "s1", &[]), execute("", 0), sync()]).await;
        assert_eq!(outline(&answer), "2 D[1,new] C(SELECT 1) Z(I)");
    }
    assert_eq!(holder.query_ok("COMMIT").await.1, b'I');
}

/// Server Y has an old copy of a statement, prepared before a schema change; a
/// client prepared the same text after the change (on server X) without
/// describing it, and runs it on Y. Postgres refuses Y's old copy (0A000), so
/// that first run fails where a direct connection's statement would run (the
/// pooler cannot know the copy is stale before the server says so). The
/// pooler must then prepare Y's copy again: the next run works, for a driver
/// that does not prepare again by itself too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_copy_that_fails_is_prepared_again_before_its_next_use() {
    let setup = Setup::single(2, PoolMode::Transaction).await;
    let mut a = setup.client().await;
    let mut b = setup.client().await;
    let mut direct = setup.direct().await;
    a.query_ok("CREATE TABLE failed_copy (x int); INSERT INTO failed_copy VALUES (1)")
        .await;
    let sql = "SELECT * FROM failed_copy";
    let pid_y = prepare_on_one_server(&mut b, &[("t1", sql)]).await;
    a.query_ok("ALTER TABLE failed_copy ADD COLUMN y text DEFAULT 'new'")
        .await;
    let holder = occupy_server(&setup, &pid_y).await;
    let answer = run_batch(&mut a, &[parse("s1", sql), backend_pid_query(), sync()]).await;
    let pid_x = wire::rows(&answer)[0][0].clone().unwrap();
    assert_ne!(pid_x, pid_y);
    drop(holder);
    let mut holder = occupy_server(&setup, &pid_x).await;
    let run = [
        bind("", "s1", &[]),
        describe_portal(""),
        execute("", 0),
        sync(),
    ];
    let first = run_batch(&mut a, &run).await;
    assert_eq!(outline(&first), "E(0A000) Z(I)", "Y's own copy is stale");
    run_batch(&mut direct, &[parse("s1", sql), sync()]).await;
    for _ in 0..2 {
        let answer = run_both(&mut a, &mut direct, &run).await;
        assert_eq!(answer, "2 T[x:23,y:25] D[1,new] C(SELECT 1) Z(I)");
    }
    assert_eq!(holder.query_ok("COMMIT").await.1, b'I');
}

/// The error Postgres gives a client that runs a statement whose result columns
/// changed since the client described it.
fn assert_stale(result: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>, who: &str) {
    match result {
        Err(e) => assert_eq!(
            e.code().map(|c| c.code()),
            Some("0A000"),
            "{who}: Postgres's error for a stale statement, got {e}"
        ),
        Ok(rows) => panic!(
            "{who}: rows in a shape the client was never told ({} values in the first, \
             statement described with fewer)",
            rows.first().map_or(0, |r| r.len())
        ),
    }
}

/// Two clients prepare the same text on one server; after a schema change one
/// of them prepares it again. The other client described the old columns, so
/// running its statement must fail as it would on Postgres (0A000, which
/// drivers answer by preparing again), not return rows of the new shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_again_by_another_client_does_not_change_shape_under_this_one() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let a = common::connect(&setup.url()).await;
    let b = common::connect(&setup.url()).await;
    a.batch_execute("CREATE TABLE shared_shape (x int); INSERT INTO shared_shape VALUES (1)")
        .await
        .unwrap();
    let a_old = a.prepare("SELECT * FROM shared_shape").await.unwrap();
    let b_old = b.prepare("SELECT * FROM shared_shape").await.unwrap();
    assert_eq!(b.query(&b_old, &[]).await.unwrap()[0].len(), 1);
    a.batch_execute("ALTER TABLE shared_shape ADD COLUMN y text DEFAULT 'new'")
        .await
        .unwrap();
    assert_stale(a.query(&a_old, &[]).await, "a, before preparing again");
    let a_new = a.prepare("SELECT * FROM shared_shape").await.unwrap();
    assert_eq!(
        a.query(&a_new, &[]).await.unwrap()[0].get::<_, &str>(1),
        "new"
    );

    assert_stale(b.query(&b_old, &[]).await, "b, after a prepared again");
    let b_new = b.prepare("SELECT * FROM shared_shape").await.unwrap();
    assert_eq!(
        b.query(&b_new, &[]).await.unwrap()[0].get::<_, &str>(1),
        "new"
    );
    // Unchanged statements keep working for both, again and again.
    for _ in 0..3 {
        assert_eq!(a.query(&a_new, &[]).await.unwrap()[0].len(), 2);
        assert_eq!(b.query(&b_new, &[]).await.unwrap()[0].len(), 2);
    }
}

/// pgjdbc learns a statement's columns from a Describe of the portal it bound,
/// once, and later sends only Bind and Execute (with a result format per column
/// it knows). Another client prepares the same text again after a schema change;
/// this client must then get Postgres's error for a stale statement, exactly as
/// from Postgres itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_learned_from_a_portal_describe_are_kept_like_on_postgres() {
    for portal in ["", "C_1"] {
        portal_describe_case(portal).await;
    }
}

/// One run of [`columns_learned_from_a_portal_describe_are_kept_like_on_postgres`],
/// with the unnamed portal or a named one (pgjdbc's fetch-size cursors).
async fn portal_describe_case(portal: &str) {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    let mut other = setup.client().await;
    client
        .query_ok("CREATE TABLE portal_shape (x int); INSERT INTO portal_shape VALUES (1)")
        .await;
    let sql = "SELECT * FROM portal_shape";
    let first = [
        parse("s1", sql),
        bind(portal, "s1", &[]),
        describe_portal(portal),
        execute(portal, 0),
        sync(),
    ];
    let answer = run_both(&mut client, &mut direct, &first).await;
    assert_eq!(answer, "1 2 T[x:23] D[1] C(SELECT 1) Z(I)");
    client
        .query_ok("ALTER TABLE portal_shape ADD COLUMN y int DEFAULT 2")
        .await;
    let answer = run_batch(
        &mut other,
        &[
            parse("o1", sql),
            bind("", "o1", &[]),
            execute("", 0),
            sync(),
        ],
    )
    .await;
    assert_eq!(outline(&answer), "1 2 D[1,2] C(SELECT 1) Z(I)");
    let again = [bind(portal, "s1", &[]), execute(portal, 0), sync()];
    let answer = run_both(&mut client, &mut direct, &again).await;
    assert_eq!(answer, "E(0A000) Z(I)");
}

/// A client's statement, prepared on one server before a schema change, is run
/// on the other server, which never had it: the pooler prepares it there, and
/// the columns it would now return are not the ones the client was told. The
/// client must get Postgres's error for a stale statement (the statement does
/// not run), then preparing again works; a statement whose columns did not
/// change runs on the new server as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_follows_its_client_after_a_schema_change_keeps_its_shape_or_fails() {
    let setup = Setup::single(2, PoolMode::Transaction).await;
    let b = common::connect(&setup.url()).await;
    b.batch_execute(
        "CREATE TABLE moved_shape (x int, z int); INSERT INTO moved_shape VALUES (1, 2)",
    )
    .await
    .unwrap();
    // Hold server A, so b prepares on server B.
    let mut holder = setup.client().await;
    assert_eq!(holder.query_ok("BEGIN").await.1, b'T');
    let pid_a = backend_pid(&mut holder).await;
    let mut probe = setup.client().await;
    let pid_b = backend_pid(&mut probe).await;
    assert_ne!(pid_a, pid_b);
    let star = b.prepare("SELECT * FROM moved_shape").await.unwrap();
    let steady = b.prepare("SELECT z FROM moved_shape").await.unwrap();
    assert_eq!(b.query(&star, &[]).await.unwrap()[0].len(), 2);
    assert_eq!(holder.query_ok("COMMIT").await.1, b'I');
    probe
        .query_ok("ALTER TABLE moved_shape ALTER COLUMN x TYPE bigint")
        .await;

    // Now hold server B: b's next statements run on A, which lacks them.
    let mut holder = occupy_server(&setup, &pid_b).await;
    let z: i32 = b.query(&steady, &[]).await.unwrap()[0].get(0);
    assert_eq!(z, 2, "a statement whose columns did not change runs on A");
    assert_stale(b.query(&star, &[]).await, "b on server A");
    let star = b.prepare("SELECT * FROM moved_shape").await.unwrap();
    let x: i64 = b.query(&star, &[]).await.unwrap()[0].get(0);
    assert_eq!(x, 1);
    assert_eq!(holder.query_ok("COMMIT").await.1, b'I');
}

/// pg8000 Parses the unnamed statement in one request and Binds it in the next.
/// A query too large to be looked at whole (over 64 KiB) makes Tidepool read the
/// server's settings back after it; that read must not drop the unnamed
/// statement, as a simple Query would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_unnamed_statement_survives_until_its_bind() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    let sql = format!("SELECT 42 AS answer -- {}", "x".repeat(70_000));
    let answer = run_both(&mut client, &mut direct, &[parse("", &sql), sync()]).await;
    assert_eq!(answer, "1 Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "", &[]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(answer, "2 D[42] C(SELECT 1) Z(I)");
}

/// An error that happens in Execute, not earlier: `random()` is volatile, so
/// the planner cannot fold the division into an error at Bind.
const FAILS_AT_EXECUTE: &str = "SELECT 1 / (random() * 0)::int";

/// A batch whose unnamed statement fails in Execute, then `skipped` (which the
/// server skips after the error), then Sync.
fn after_a_failed_execute(skipped: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut batch = vec![
        parse("", FAILS_AT_EXECUTE),
        bind("", "", &[]),
        execute("", 0),
    ];
    batch.extend(skipped);
    batch.push(sync());
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_parse_leaves_no_statement_behind() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;

    // A syntax error in Parse: one ErrorResponse, the rest skipped to Sync.
    let answer = run_both(
        &mut client,
        &mut direct,
        &[
            parse("s_bad", "SELEC 1"),
            bind("", "s_bad", &[]),
            execute("", 0),
            sync(),
        ],
    )
    .await;
    assert_eq!(answer, "E(42601) Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "s_bad", &[]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(answer, "E(26000) Z(I)", "the failed statement was kept");

    // A Parse after a failing Execute in the same batch is skipped too.
    let answer = run_both(
        &mut client,
        &mut direct,
        &after_a_failed_execute(vec![parse("s_new", "SELECT 2")]),
    )
    .await;
    assert_eq!(answer, "1 2 E(22012) Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "s_new", &[]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(answer, "E(26000) Z(I)", "a skipped Parse was kept");

    // Nothing was left on the server, and both names can be prepared now.
    assert_eq!(server_statements(&mut client).await, vec![]);
    let answer = run_both(
        &mut client,
        &mut direct,
        &[
            parse("s_bad", "SELECT 1"),
            parse("s_new", "SELECT 2"),
            bind("", "s_bad", &[]),
            execute("", 0),
            bind("", "s_new", &[]),
            execute("", 0),
            sync(),
        ],
    )
    .await;
    assert_eq!(answer, "1 1 2 D[1] C(SELECT 1) 2 D[2] C(SELECT 1) Z(I)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_of_a_name_in_use_is_refused_and_keeps_the_old_statement_like_on_postgres() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    let run_s1 = || [bind("", "s1", &[]), execute("", 0), sync()];

    let answer = run_both(&mut client, &mut direct, &[parse("s1", "SELECT 1"), sync()]).await;
    assert_eq!(answer, "1 Z(I)");
    // Another text under the same name: refused, and the rest skipped to Sync.
    let batch = [
        parse("s1", "SELECT 2"),
        bind("", "s1", &[]),
        execute("", 0),
        sync(),
    ];
    let pooled = run_batch(&mut client, &batch).await;
    let from_postgres = run_batch(&mut direct, &batch).await;
    assert_eq!(outline(&pooled), "E(42P05) Z(I)");
    assert_eq!(outline(&pooled), outline(&from_postgres));
    assert_eq!(error_message(&pooled), error_message(&from_postgres));
    assert_eq!(
        error_message(&pooled),
        r#"prepared statement "s1" already exists"#
    );
    let answer = run_both(&mut client, &mut direct, &run_s1()).await;
    assert_eq!(
        answer, "2 D[1] C(SELECT 1) Z(I)",
        "the old statement was replaced"
    );

    // The same text again is refused too; a syntax error is reported first.
    let answer = run_both(&mut client, &mut direct, &[parse("s1", "SELECT 1"), sync()]).await;
    assert_eq!(answer, "E(42P05) Z(I)");
    let answer = run_both(&mut client, &mut direct, &[parse("s1", "SELEC 1"), sync()]).await;
    assert_eq!(answer, "E(42601) Z(I)");

    // Inside a transaction block the refusal aborts it.
    let answer = run_both(&mut client, &mut direct, &[query("BEGIN")]).await;
    assert_eq!(answer, "C(BEGIN) Z(T)");
    let answer = run_both(&mut client, &mut direct, &[parse("s1", "SELECT 3"), sync()]).await;
    assert_eq!(answer, "E(42P05) Z(E)");
    let answer = run_both(&mut client, &mut direct, &[query("SELECT 1")]).await;
    assert_eq!(answer, "E(25P02) Z(E)");
    let answer = run_both(&mut client, &mut direct, &[query("ROLLBACK")]).await;
    assert_eq!(answer, "C(ROLLBACK) Z(I)");
    let answer = run_both(&mut client, &mut direct, &run_s1()).await;
    assert_eq!(answer, "2 D[1] C(SELECT 1) Z(I)");

    // The server (the pool has one) keeps nothing under the client's name.
    let names: Vec<String> = server_statements(&mut client)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(names.iter().all(|n| is_pooler_name(n)), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_the_pooler_would_answer_is_skipped_after_an_error_like_on_postgres() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;

    // The server has "SELECT 3" already, so a Parse of that text under another
    // name is answered by the pooler, unless an error skips it first.
    let answer = run_both(
        &mut client,
        &mut direct,
        &[parse("s_have", "SELECT 3"), sync()],
    )
    .await;
    assert_eq!(answer, "1 Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &after_a_failed_execute(vec![parse("s_same_text", "SELECT 3")]),
    )
    .await;
    assert_eq!(answer, "1 2 E(22012) Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "s_same_text", &[]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(
        answer, "E(26000) Z(I)",
        "Postgres skipped the Parse, so the statement does not exist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_skipped_after_an_error_keeps_the_statement_like_on_postgres() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;

    let answer = run_both(
        &mut client,
        &mut direct,
        &[parse("s_keep", "SELECT 4"), sync()],
    )
    .await;
    assert_eq!(answer, "1 Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &after_a_failed_execute(vec![close_statement("s_keep")]),
    )
    .await;
    assert_eq!(answer, "1 2 E(22012) Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "s_keep", &[]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(
        answer, "2 D[4] C(SELECT 1) Z(I)",
        "Postgres skipped the Close, so the statement still exists"
    );

    // A Close and a Parse of the same text under the same name, both skipped.
    let answer = run_both(
        &mut client,
        &mut direct,
        &after_a_failed_execute(vec![close_statement("s_keep"), parse("s_keep", "SELECT 4")]),
    )
    .await;
    assert_eq!(answer, "1 2 E(22012) Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "s_keep", &[]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(
        answer, "2 D[4] C(SELECT 1) Z(I)",
        "Postgres skipped the Close and the Parse, so the statement still exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_injected_parse_reports_the_error_and_is_retried_later() {
    let setup = Setup::single(2, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    client.query_ok("CREATE TABLE t AS SELECT 1 AS id").await;
    let first_server = prepare_on_one_server(&mut client, &[("s2", "SELECT * FROM t")]).await;
    setup.pg.execute("DROP TABLE t").await;

    let mut holder = occupy_server(&setup, &first_server).await;
    // The other server lacks s2: the Parse the pooler sends first fails, and
    // the client gets that error and its ReadyForQuery, no hang.
    let answer = tokio::time::timeout(
        NO_HANG,
        run_batch(&mut client, &[bind("", "s2", &[]), execute("", 0), sync()]),
    )
    .await
    .expect("no answer to a Bind whose injected Parse failed");
    assert_eq!(outline(&answer), "E(42P01) Z(I)");
    assert_ne!(backend_pid(&mut client).await, first_server);
    assert_eq!(
        server_statements(&mut client).await,
        vec![],
        "the failed Parse left a statement"
    );

    // Once the table is back, the statement is prepared on this server again.
    client.query_ok("CREATE TABLE t AS SELECT 7 AS id").await;
    let answer = run_batch(&mut client, &[bind("", "s2", &[]), execute("", 0), sync()]).await;
    assert_eq!(outline(&answer), "2 D[7] C(SELECT 1) Z(I)");
    assert_eq!(holder.query_ok("COMMIT").await.1, b'I');
}

/// `SELECT count(*) FROM pg_prepared_statements` on the (only) server, over the
/// simple protocol, which prepares nothing itself.
async fn count_server_statements(client: &tokio_postgres::Client) -> i64 {
    let messages = client
        .simple_query("SELECT count(*) FROM pg_prepared_statements")
        .await
        .unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("count(*) returned no row")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_server_cache_stays_within_its_limit() {
    const LIMIT: i64 = 3;
    let setup = Setup::with_statement_limit(1, LIMIT as u32).await;
    let texts: Vec<String> = (0..6).map(|k| format!("SELECT $1::int + {k}")).collect();
    // Two clients prepare the same six texts: they share the server's statements.
    let first = common::connect(&setup.url()).await;
    let second = common::connect(&setup.url()).await;
    let mut prepared = Vec::new();
    for client in [&first, &second] {
        let mut statements = Vec::new();
        for text in &texts {
            statements.push(client.prepare(text).await.unwrap());
        }
        prepared.push(statements);
    }

    let run = async {
        for round in 0..10i32 {
            // A different order each round, so every one is evicted and
            // prepared again now and then.
            for step in 0..texts.len() {
                let k = (step * (1 + round as usize % 5) + round as usize) % texts.len();
                for (client, statements) in [&first, &second].into_iter().zip(&prepared) {
                    let row = client
                        .query_one(&statements[k], &[&round])
                        .await
                        .unwrap_or_else(|e| panic!("round {round}, statement {k}: {e}"));
                    assert_eq!(row.get::<_, i32>(0), round + k as i32);
                }
            }
            let count = count_server_statements(&first).await;
            assert!(
                count <= LIMIT,
                "round {round}: {count} statements on the server, limit {LIMIT}"
            );
        }
    };
    tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("the workload did not finish");
    // Six distinct statements were used: the cache is full, not empty.
    assert_eq!(count_server_statements(&first).await, LIMIT);
    assert_eq!(setup.pg.count_backends(USER).await, 1);

    // An error skips the Close of an evicted statement and the Parse that
    // needed the room: the server still has the evicted one, and the cache
    // must still know it.
    let mut raw = setup.client().await;
    let answer = run_batch(
        &mut raw,
        &after_a_failed_execute(vec![parse("s_new", "SELECT $1::int + 100")]),
    )
    .await;
    assert_eq!(outline(&answer), "1 2 E(22012) Z(I)");
    assert_eq!(count_server_statements(&first).await, LIMIT);
    let answer = run_batch(
        &mut raw,
        &[
            parse("s_new", "SELECT $1::int + 100"),
            bind("", "s_new", &[Some("1")]),
            execute("", 0),
            sync(),
        ],
    )
    .await;
    assert_eq!(outline(&answer), "1 2 D[101] C(SELECT 1) Z(I)");
    assert_eq!(count_server_statements(&first).await, LIMIT);
    for (k, statement) in prepared[0].iter().enumerate() {
        let row = first.query_one(statement, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1 + k as i32);
        assert!(count_server_statements(&first).await <= LIMIT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_portal_outlives_the_eviction_of_its_statement() {
    const LIMIT: usize = 3;
    let setup = Setup::with_statement_limit(1, LIMIT as u32).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    let texts: Vec<String> = (0..=LIMIT)
        .map(|k| format!("SELECT generate_series(1, 3) + {k}"))
        .collect();
    let prepare: Vec<Vec<u8>> = texts
        .iter()
        .enumerate()
        .map(|(k, text)| parse(&format!("s{k}"), text))
        .chain([sync()])
        .collect();
    assert_eq!(
        run_both(&mut client, &mut direct, &prepare).await,
        "1 1 1 1 Z(I)"
    );

    // A named portal over s0, read partly, inside a transaction.
    assert_eq!(
        run_both(&mut client, &mut direct, &[query("BEGIN")]).await,
        "C(BEGIN) Z(T)"
    );
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("c0", "s0", &[]), execute("c0", 1), sync()],
    )
    .await;
    assert_eq!(answer, "2 D[1] s Z(T)");
    // Three other statements push s0 out of the server's cache of three.
    for k in 1..=LIMIT {
        let answer = run_both(
            &mut client,
            &mut direct,
            &[bind("", &format!("s{k}"), &[]), execute("", 1), sync()],
        )
        .await;
        assert_eq!(answer, format!("2 D[{}] s Z(T)", 1 + k));
    }
    let on_server: Vec<String> = server_statements(&mut client)
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(on_server.len(), LIMIT, "{on_server:?}");
    assert!(
        !on_server.contains(&texts[0]),
        "s0 was not evicted: {on_server:?}"
    );
    // The portal still has its rows, as on Postgres.
    let answer = run_both(&mut client, &mut direct, &[execute("c0", 0), sync()]).await;
    assert_eq!(answer, "D[2] D[3] C(SELECT 2) Z(T)");
    assert_eq!(
        run_both(&mut client, &mut direct, &[query("COMMIT")]).await,
        "C(COMMIT) Z(I)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_and_deallocate_all_forget_statements_like_on_postgres() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    let add_one = "SELECT $1::int + 1";
    for command in ["DISCARD ALL", "DEALLOCATE ALL"] {
        let answer = run_both(&mut client, &mut direct, &[parse("s1", add_one), sync()]).await;
        assert_eq!(answer, "1 Z(I)", "before {command}");
        let use_s1 = [bind("", "s1", &[Some("41")]), execute("", 0), sync()];
        let answer = run_both(&mut client, &mut direct, &use_s1).await;
        assert_eq!(answer, "2 D[42] C(SELECT 1) Z(I)", "before {command}");

        let answer = run_both(&mut client, &mut direct, &[query(command)]).await;
        assert_eq!(answer, format!("C({command}) Z(I)"));
        let answer = run_both(&mut client, &mut direct, &use_s1).await;
        assert_eq!(answer, "E(26000) Z(I)", "after {command}");
        assert_eq!(
            server_statements(&mut client).await,
            vec![],
            "after {command}"
        );

        // Preparing it again reaches the server (which would otherwise lack it).
        let answer = run_both(
            &mut client,
            &mut direct,
            &[
                parse("s1", add_one),
                bind("", "s1", &[Some("1")]),
                execute("", 0),
                sync(),
            ],
        )
        .await;
        assert_eq!(answer, "1 2 D[2] C(SELECT 1) Z(I)", "after {command}");
        assert_eq!(server_statements(&mut client).await.len(), 1);
        let answer = run_both(&mut client, &mut direct, &use_s1).await;
        assert_eq!(answer, "2 D[42] C(SELECT 1) Z(I)", "after {command}");
        let answer = run_both(&mut client, &mut direct, &[close_statement("s1"), sync()]).await;
        assert_eq!(answer, "3 Z(I)", "after {command}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_from_another_client_does_not_lose_a_statement() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut other = setup.client().await;
    let answer = run_batch(&mut client, &[parse("s1", "SELECT $1::int + 1"), sync()]).await;
    assert_eq!(outline(&answer), "1 Z(I)");
    // Same single server: the other client's DISCARD ALL drops the statement there.
    other.query_ok("DISCARD ALL").await;
    assert_eq!(server_statements(&mut other).await, vec![]);
    // On Postgres the other session's DISCARD ALL would not touch this one's
    // statement; through the pooler it is prepared again.
    let answer = run_batch(
        &mut client,
        &[bind("", "s1", &[Some("41")]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(outline(&answer), "2 D[42] C(SELECT 1) Z(I)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracking_off_statements_pass_through_unchanged() {
    let setup = Setup::with_statement_limit(2, 0).await;
    let mut client = setup.client().await;
    let add_one = "SELECT $1::int + 1";

    // Within one transaction the client keeps its server, and the statement
    // lives there under the client's own name.
    assert_eq!(client.query_ok("BEGIN").await.1, b'T');
    let answer = run_batch(
        &mut client,
        &[
            parse("s1", add_one),
            bind("", "s1", &[Some("41")]),
            execute("", 0),
            sync(),
        ],
    )
    .await;
    assert_eq!(outline(&answer), "1 2 D[42] C(SELECT 1) Z(T)");
    assert_eq!(
        server_statements(&mut client).await,
        vec![("s1".to_owned(), add_one.to_owned())]
    );
    // A second Parse reaches Postgres, which refuses it as it would directly.
    let answer = run_batch(&mut client, &[parse("s1", add_one), sync()]).await;
    assert_eq!(outline(&answer), "E(42P05) Z(E)");
    assert_eq!(client.query_ok("ROLLBACK").await.1, b'I');
    // Across transactions nothing follows the client: s1 stays on the server
    // that prepared it, and a later Bind works only if the client happens to
    // get that server again (otherwise Postgres answers 26000). Which server
    // it gets depends on timing, so that is not asserted here.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_statements_on_the_pinned_server() {
    let setup = Setup::single(1, PoolMode::Session).await;
    let mut client = setup.client().await;
    let add_one = "SELECT $1::int + 1";

    let answer = run_batch(&mut client, &[parse("s1", add_one), sync()]).await;
    assert_eq!(outline(&answer), "1 Z(I)");
    assert_eq!(
        server_statements(&mut client).await,
        vec![("s1".to_owned(), add_one.to_owned())]
    );
    // Postgres answers everything: a duplicate Parse is refused, Close reaches it.
    let answer = run_batch(&mut client, &[parse("s1", add_one), sync()]).await;
    assert_eq!(outline(&answer), "E(42P05) Z(I)");
    let answer = run_batch(
        &mut client,
        &[
            bind("", "s1", &[Some("41")]),
            execute("", 0),
            close_statement("s1"),
            sync(),
        ],
    )
    .await;
    assert_eq!(outline(&answer), "2 D[42] C(SELECT 1) 3 Z(I)");
    assert_eq!(server_statements(&mut client).await, vec![]);

    // A statement left behind is dropped by the reset query (DISCARD ALL)
    // before the next client gets the server.
    let answer = run_batch(&mut client, &[parse("s_left", add_one), sync()]).await;
    assert_eq!(outline(&answer), "1 Z(I)");
    client.send(&wire::terminate()).await;
    let mut next = setup.client().await;
    assert_eq!(server_statements(&mut next).await, vec![]);
}

// ---- pgbench -----------------------------------------------------------------

fn pgbench_program() -> PathBuf {
    let local = bin_dir().join("pgbench");
    if local.is_file() {
        local
    } else {
        PathBuf::from("/usr/bin/pgbench")
    }
}

/// Runs `program` with `args` and `PGPASSWORD` set, its output in a temporary
/// file; kills it and panics if it runs longer than `limit`. Blocking.
fn run_bounded(program: &Path, args: &[String], limit: Duration) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("output");
    let out = File::create(&out_path).unwrap();
    let err = out.try_clone().unwrap();
    let mut child = Command::new(program)
        .args(args)
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let output = || String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, output());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} still running after {limit:?}; output:\n{}",
                program.display(),
                output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs pgbench with `args` (connection options added) against `port`.
async fn pgbench(port: u16, args: &[&str]) -> (ExitStatus, String) {
    let mut all: Vec<String> = ["-h", HOST, "-p", &port.to_string(), "-U", USER]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    all.extend(args.iter().map(|s| (*s).to_owned()));
    all.push("postgres".to_owned());
    tokio::task::spawn_blocking(move || run_bounded(&pgbench_program(), &all, RUN_LIMIT))
        .await
        .unwrap()
}

/// The number after `label` in pgbench's report.
fn report_number(output: &str, label: &str) -> Option<u64> {
    let line = output.lines().find(|l| l.starts_with(label))?;
    line[label.len()..].split_whitespace().next()?.parse().ok()
}

/// Initialises pgbench's tables at scale 1 on Postgres directly, then runs
/// pgbench through Tidepool with `args`; asserts it finished with
/// transactions done and none failed.
async fn pgbench_through_pooler(setup: &Setup, args: &[&str]) {
    let (status, output) = pgbench(setup.pg.port(), &["-i", "-s", "1", "-q"]).await;
    assert!(status.success(), "pgbench -i failed ({status}):\n{output}");

    let (status, output) = pgbench(setup.proc.port(), args).await;
    assert!(
        status.success(),
        "pgbench {args:?} failed ({status}):\n{output}"
    );
    let processed = report_number(&output, "number of transactions actually processed:");
    assert!(
        processed.is_some_and(|n| n > 0),
        "no transactions processed:\n{output}"
    );
    assert_eq!(
        report_number(&output, "number of failed transactions:"),
        Some(0),
        "{output}"
    );
    assert!(!output.contains("aborted"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_select_only_through_a_small_pool() {
    let setup = Setup::single(4, PoolMode::Transaction).await;
    // Twenty clients in one pgbench thread: each transaction is one statement,
    // so a server goes back to the pool as soon as its answer is written and a
    // client's blocking first prepare always gets one eventually.
    pgbench_through_pooler(
        &setup,
        &["-n", "-M", "prepared", "-S", "-c", "20", "-T", "5"],
    )
    .await;
    assert!(setup.pg.count_backends(USER).await <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_tpcb_through_a_small_pool() {
    let setup = Setup::single(4, PoolMode::Transaction).await;
    // One thread per client. pgbench prepares each command lazily, the first
    // time it runs it, with a blocking PQprepare. With several clients per
    // thread, the thread can block in one client's PQprepare waiting for a
    // server while every server is held by that same thread's other clients in
    // the middle of their BEGIN ... END, which cannot move on until the thread
    // does: pgbench stalls until the checkout timeout. That is pgbench's
    // client-side limit with any transaction pool smaller than its clients,
    // not the pooler's doing.
    pgbench_through_pooler(
        &setup,
        &["-n", "-M", "prepared", "-c", "6", "-j", "6", "-T", "5"],
    )
    .await;
    assert!(setup.pg.count_backends(USER).await <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_pipelined_after_discard_all_reaches_the_server() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    let add_one = "SELECT $1::int + 1";
    let answer = run_both(&mut client, &mut direct, &[parse("s1", add_one), sync()]).await;
    assert_eq!(answer, "1 Z(I)");

    // A reset and a new Parse of the same statement in one write, as a
    // pipelining driver resetting its session would send them.
    let batch = [
        query("DISCARD ALL"),
        parse("s1", add_one),
        bind("", "s1", &[Some("41")]),
        execute("", 0),
        sync(),
    ];
    let mut answers = Vec::new();
    for target in [&mut client, &mut direct] {
        target.send(&batch.concat()).await;
        let mut answer = target.read_until_ready().await;
        answer.extend(target.read_until_ready().await);
        answers.push(outline(&answer));
    }
    assert_eq!(
        answers[0], answers[1],
        "Tidepool's answer (left) differs from Postgres's (right)"
    );
    assert_eq!(answers[1], "C(DISCARD ALL) Z(I) 1 2 D[42] C(SELECT 1) Z(I)");
    // And s1 exists afterwards, as on Postgres.
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "s1", &[Some("1")]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(answer, "2 D[2] C(SELECT 1) Z(I)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_deallocate_of_a_protocol_statement_works_like_on_postgres() {
    // Some drivers prepare over the protocol but deallocate with SQL (Ruby on
    // Rails' statement pool does).
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let mut client = setup.client().await;
    let mut direct = setup.direct().await;
    let answer = run_both(&mut client, &mut direct, &[parse("s1", "SELECT 1"), sync()]).await;
    assert_eq!(answer, "1 Z(I)");
    let answer = run_both(&mut client, &mut direct, &[query("DEALLOCATE s1")]).await;
    assert_eq!(answer, "C(DEALLOCATE) Z(I)");
    let answer = run_both(
        &mut client,
        &mut direct,
        &[bind("", "s1", &[]), execute("", 0), sync()],
    )
    .await;
    assert_eq!(answer, "E(26000) Z(I)");
}

/// Large messages stream through instead of being held whole: a Bind of a named
/// statement with a 300 KB parameter (its head is renamed, its body streamed) and
/// a 200 KB unnamed Parse, each while another client shares the single server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_binds_and_parses_stream_through() {
    let setup = Setup::single(1, PoolMode::Transaction).await;
    let a = common::connect(&setup.url()).await;
    let b = common::connect(&setup.url()).await;
    let statement = a
        .prepare("SELECT length($1::text), md5($1::text)")
        .await
        .unwrap();
    let big: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for round in 0..3 {
        let row = a.query_one(&statement, &[&big]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 300_000, "round {round}");
        let other = b.query_one("SELECT $1::int + 1", &[&round]).await.unwrap();
        assert_eq!(other.get::<_, i32>(0), round + 1);
    }
    // A statement whose text is larger than the pooler takes whole by default.
    let long_sql = format!("SELECT length('{}')", "y".repeat(200_000));
    let row = a.query_one(long_sql.as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 200_000);
    let row = a.query_one(&statement, &[&"xyz"]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
}
