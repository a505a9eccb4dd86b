//! The wire protocol through Tidepool, byte by byte, against a real Postgres:
//! what a client sees at login, pipelines and Flush, errors inside
//! transactions, COPY in both directions, notices, clients and servers that
//! vanish mid-transaction, cancel requests, malformed input, the auth timeout,
//! encryption requests and protocol-version negotiation.
//!
//! Most tests use the raw client in `common::wire` so they control exactly
//! which bytes go out in which write; the cancel test also uses
//! `tokio-postgres` as a real driver. Every wait is bounded: a hang fails.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::wire::{
    self, bind, copy_data, copy_done, copy_fail, errors, execute, extended_query, flush, parse,
    query, rows, sync, tags, PROTOCOL_3_0,
};
use common::{free_port, Next, PgServer, PoolMode, TidepoolProc, WireClient, HOST};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

const USER: &str = "app";
const PASSWORD: &str = "protocol-pw-1";
/// Bound for things that should take well under a second; only a hang exceeds it.
const NO_HANG: Duration = Duration::from_secs(10);
/// The ParameterStatus set every client must see before its first ReadyForQuery.
const REQUIRED_PARAMETERS: [&str; 7] = [
    "server_version",
    "server_encoding",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "integer_datetimes",
    "standard_conforming_strings",
];

/// A fresh Postgres with the login role `USER`, and Tidepool in front of it in
/// transaction mode. Drop order (Tidepool first) follows from the tuple order.
async fn start(pool_size: u32) -> (PgServer, TidepoolProc) {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let proc = TidepoolProc::start_single(&pg, USER, PASSWORD, pool_size, PoolMode::Transaction);
    (pg, proc)
}

/// The first column of the first row of `sql`, run as the superuser straight
/// on Postgres, as an i64.
async fn scalar(pg: &PgServer, sql: &str) -> i64 {
    pg.client()
        .await
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Polls [`scalar`] until it returns `expected` or `timeout` passes; returns
/// the last value seen.
async fn wait_for_scalar(pg: &PgServer, sql: &str, expected: i64, timeout: Duration) -> i64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let value = scalar(pg, sql).await;
        if value == expected || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Backends of `USER` running a statement that starts with `prefix`.
fn active_query_count_sql(prefix: &str) -> String {
    format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE usename = '{USER}' AND state = 'active' AND query LIKE '{prefix}%'"
    )
}

/// Asks Postgres directly to terminate backend `pid` and waits until it is gone.
async fn terminate_backend(pg: &PgServer, pid: &str) {
    let killed: bool = pg
        .client()
        .await
        .query_one(&format!("SELECT pg_terminate_backend({pid})"), &[])
        .await
        .unwrap_or_else(|e| panic!("pg_terminate_backend({pid}): {e}"))
        .get(0);
    assert!(killed, "pg_terminate_backend({pid}) found no such backend");
    let left = wait_for_scalar(
        pg,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        0,
        NO_HANG,
    )
    .await;
    assert_eq!(left, 0, "backend {pid} did not exit");
}

/// The pooler process is still running and a new client can log in and query.
async fn assert_still_serving(proc: &mut TidepoolProc) {
    assert!(
        proc.wait_exit(Duration::ZERO).is_none(),
        "tidepool exited\n{}",
        proc.log()
    );
    let mut client = WireClient::login(proc.port(), USER, PASSWORD).await;
    assert_eq!(client.query_value("SELECT 40 + 2").await, "42");
}

/// Writes a one-tenant configuration file for `USER` in front of `pg` with
/// `server_extra` added to `[server]`; returns the directory (keep it alive),
/// the file and the listen port.
fn write_config(pg: &PgServer, server_extra: &str) -> (tempfile::TempDir, PathBuf, u16) {
    let dir =
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let port = free_port();
    let text = format!(
        r#"
[server]
listen = "{HOST}:{port}"
{server_extra}

[[tenants]]
external_id = "postgres"
db_host = "{HOST}"
db_port = {pg_port}
db_database = "postgres"

[[tenants.users]]
db_user = "{USER}"
db_password = "{PASSWORD}"
pool_size = 2
"#,
        pg_port = pg.port()
    );
    let path = dir.path().join("tidepool.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    (dir, path, port)
}

/// Messages after AuthenticationOk, up to and including ReadyForQuery.
fn after_auth_ok(client: &WireClient) -> Vec<wire::BackendMessage> {
    client
        .login_messages
        .iter()
        .skip_while(|m| m.auth_code() != Some(0))
        .skip(1)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_pool_login_reports_server_parameters_and_a_key() {
    let (pg, proc) = start(2).await;
    assert_eq!(
        pg.count_backends(USER).await,
        0,
        "the pool should start cold"
    );

    let mut first = WireClient::login(proc.port(), USER, PASSWORD).await;
    let answer = after_auth_ok(&first);
    let (ready, before_ready) = answer.split_last().unwrap();
    assert_eq!(ready.ready_status(), Some(b'I'), "{answer:?}");
    assert!(
        before_ready.iter().all(|m| m.tag == b'S' || m.tag == b'K'),
        "only ParameterStatus and BackendKeyData belong between AuthenticationOk and ReadyForQuery: {answer:?}"
    );
    assert_eq!(
        before_ready.iter().filter(|m| m.tag == b'K').count(),
        1,
        "{answer:?}"
    );
    for name in REQUIRED_PARAMETERS {
        assert!(
            first.parameter(name).is_some_and(|v| !v.is_empty()),
            "no {name} before ReadyForQuery: {answer:?}"
        );
    }

    // The values are the server's own: a direct login with the same startup
    // parameters as Tidepool's server connections reports the same set.
    let mut direct = WireClient::login(pg.port(), USER, PASSWORD).await;
    let mut through_pooler = first.parameters.clone();
    let mut from_postgres = direct.parameters.clone();
    through_pooler.sort();
    from_postgres.sort();
    assert_eq!(through_pooler, from_postgres);
    direct.send(&wire::terminate()).await;

    assert_eq!(first.query_value("SELECT 1").await, "1");
    // A warm pool answers the next login from what it remembers.
    let second = WireClient::login(proc.port(), USER, PASSWORD).await;
    let mut again = second.parameters.clone();
    again.sort();
    assert_eq!(again, through_pooler);
    assert_ne!(
        second.backend_key, first.backend_key,
        "two clients got the same cancel key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_from_startup_is_reported_back() {
    let (_pg, proc) = start(1).await;
    let mut client = WireClient::connect(proc.port()).await;
    client
        .startup(
            PROTOCOL_3_0,
            &[
                ("user", USER),
                ("database", "postgres"),
                ("application_name", "protocol-test"),
            ],
        )
        .await;
    client.authenticate(PASSWORD).await.unwrap();
    assert_eq!(client.parameter("application_name"), Some("protocol-test"));
}

/// One client's pipelines: each round is two Syncs' worth of extended queries
/// in a single write, whose answers must come back complete and in order.
async fn run_pipelines(port: u16, label: &str, rounds: usize) {
    let mut client = WireClient::login(port, USER, PASSWORD).await;
    for round in 0..rounds {
        let first = format!("{label}-{round}-first");
        let second = format!("{label}-{round}-second");
        let third = format!("{label}-{round}-third");
        let batch = [
            extended_query("SELECT $1::text", &[Some(&first)]),
            sync(),
            extended_query("SELECT $1::text || '!'", &[Some(&second)]),
            extended_query("SELECT upper($1::text), length($1::text)", &[Some(&third)]),
            sync(),
        ]
        .concat();
        client.send(&batch).await;
        let mut answers = client.read_until_ready().await;
        answers.extend(client.read_until_ready().await);
        assert_eq!(
            tags(&answers),
            "12DCZ12DC12DCZ",
            "{label} round {round}: {answers:?}"
        );
        let expected = vec![
            vec![Some(first)],
            vec![Some(format!("{second}!"))],
            vec![Some(third.to_uppercase()), Some(third.len().to_string())],
        ];
        assert_eq!(rows(&answers), expected, "{label} round {round}");
        assert!(answers
            .iter()
            .filter(|m| m.tag == b'Z')
            .all(|m| m.ready_status() == Some(b'I')));
    }
    client.send(&wire::terminate()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_come_back_in_order_on_a_shared_server() {
    let (pg, proc) = start(1).await;
    let port = proc.port();
    let a = tokio::spawn(async move { run_pipelines(port, "a", 30).await });
    let b = tokio::spawn(async move { run_pipelines(port, "b", 30).await });
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), async { (a.await, b.await) })
        .await
        .expect("pipelines did not finish");
    a.unwrap();
    b.unwrap();
    assert_eq!(pg.count_backends(USER).await, 1, "pool_size 1 was exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_a_pipeline_skips_to_sync_and_the_next_batch_runs() {
    let (_pg, proc) = start(1).await;
    let mut client = WireClient::login(proc.port(), USER, PASSWORD).await;
    let batch = [
        extended_query("SELECT 1 / $1::int", &[Some("0")]),
        // Skipped by the server: it discards everything up to Sync after an error.
        extended_query("SELECT 'never'", &[]),
        sync(),
        extended_query("SELECT 'after'", &[]),
        sync(),
    ]
    .concat();
    client.send(&batch).await;
    let failed = client.read_until_ready().await;
    let errs = errors(&failed);
    assert_eq!(errs.len(), 1, "{failed:?}");
    assert_eq!(errs[0].sqlstate().as_deref(), Some("22012"));
    assert!(rows(&failed).is_empty(), "{failed:?}");
    assert_eq!(failed.last().unwrap().ready_status(), Some(b'I'));
    let next = client.read_until_ready().await;
    assert_eq!(tags(&next), "12DCZ", "{next:?}");
    assert_eq!(rows(&next), vec![vec![Some("after".to_owned())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_partial_execute_in_one_batch() {
    let (_pg, proc) = start(1).await;
    let mut client = WireClient::login(proc.port(), USER, PASSWORD).await;
    let batch = [
        parse("series", "SELECT generate_series(1, $1::int) AS n"),
        wire::describe_statement("series"),
        bind("rows", "series", &[Some("3")]),
        wire::describe_portal("rows"),
        execute("rows", 2),
        execute("rows", 0),
        sync(),
    ]
    .concat();
    client.send(&batch).await;
    let answer = client.read_until_ready().await;
    // ParseComplete, ParameterDescription, RowDescription, BindComplete,
    // RowDescription, two rows and PortalSuspended, the last row and
    // CommandComplete, ReadyForQuery.
    assert_eq!(tags(&answer), "1tT2TDDsDCZ", "{answer:?}");
    let numbers: Vec<Vec<Option<String>>> = (1..=3).map(|n| vec![Some(n.to_string())]).collect();
    assert_eq!(rows(&answer), numbers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_stream_through_intact() {
    let (_pg, proc) = start(1).await;
    let port = proc.port();
    // Two clients share one server connection; each result is about 20 MB,
    // far more than any socket buffer, so both directions must keep moving.
    let fetch = |label: &'static str| async move {
        let mut client = WireClient::login(port, USER, PASSWORD).await;
        for round in 0..3 {
            let answer = client
                .simple_query(&format!(
                    "SELECT '{label}' || n, repeat('x', 1000) FROM generate_series(1, 20000) AS n"
                ))
                .await;
            let rows = rows(&answer);
            assert_eq!(rows.len(), 20_000, "{label} round {round}");
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(row[0], Some(format!("{label}{}", i + 1)));
                assert_eq!(row[1].as_ref().map(String::len), Some(1000));
            }
            let tail = &answer[answer.len() - 2..];
            assert_eq!(tail[0].command_tag().as_deref(), Some("SELECT 20000"));
            assert_eq!(tail[1].ready_status(), Some(b'I'));
        }
    };
    let a = tokio::spawn(fetch("a"));
    let b = tokio::spawn(fetch("b"));
    let (a, b) = tokio::time::timeout(Duration::from_secs(120), async { (a.await, b.await) })
        .await
        .expect("large results did not finish");
    a.unwrap();
    b.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_without_sync_returns_results_and_keeps_the_server() {
    let (_pg, proc) = start(1).await;
    let mut a = WireClient::login(proc.port(), USER, PASSWORD).await;
    let mut b = WireClient::login(proc.port(), USER, PASSWORD).await;

    a.send(
        &[
            extended_query("SELECT $1::text", &[Some("flushed")]),
            flush(),
        ]
        .concat(),
    )
    .await;
    let mut early = Vec::new();
    for _ in 0..4 {
        early.push(a.read().await);
    }
    assert_eq!(tags(&early), "12DC", "{early:?}");
    assert_eq!(rows(&early), vec![vec![Some("flushed".to_owned())]]);
    match a.next_within(Duration::from_millis(300)).await {
        Next::TimedOut => {}
        other => panic!("nothing is owed before Sync, got {other:?}"),
    }

    // A's batch is still open, so the only server connection stays A's: B
    // waits. (Only a wrongly released server can make B finish early.)
    b.send(&query("SELECT 'b'")).await;
    match b.next_within(Duration::from_millis(500)).await {
        Next::TimedOut => {}
        other => panic!("B was served while A's extended batch was open: {other:?}"),
    }

    a.send(
        &[
            parse("", "SELECT 'more'"),
            bind("", "", &[]),
            execute("", 0),
            sync(),
        ]
        .concat(),
    )
    .await;
    let rest = a.read_until_ready().await;
    assert_eq!(tags(&rest), "12DCZ", "{rest:?}");
    assert_eq!(rest.last().unwrap().ready_status(), Some(b'I'));

    let b_answer = b.read_until_ready().await;
    assert_eq!(rows(&b_answer), vec![vec![Some("b".to_owned())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transaction_rolls_back_and_the_server_is_reused_clean() {
    let (pg, proc) = start(1).await;
    let mut a = WireClient::login(proc.port(), USER, PASSWORD).await;

    let (_, status) = a.query_ok("BEGIN").await;
    assert_eq!(status, b'T');
    let pid = a.query_value("SELECT pg_backend_pid()").await;
    let failed = a.simple_query("SELECT 1 / 0").await;
    assert_eq!(errors(&failed)[0].sqlstate().as_deref(), Some("22012"));
    assert_eq!(failed.last().unwrap().ready_status(), Some(b'E'));
    let aborted = a.simple_query("SELECT 1").await;
    assert_eq!(
        errors(&aborted)[0].sqlstate().as_deref(),
        Some("25P02"),
        "{aborted:?}"
    );
    assert_eq!(aborted.last().unwrap().ready_status(), Some(b'E'));
    let (_, status) = a.query_ok("ROLLBACK").await;
    assert_eq!(status, b'I');
    a.send(&wire::terminate()).await;

    let mut b = WireClient::login(proc.port(), USER, PASSWORD).await;
    let (rows, status) = b.query_ok("SELECT pg_backend_pid()").await;
    assert_eq!(status, b'I');
    assert_eq!(
        rows,
        vec![vec![Some(pid)]],
        "the server connection was not reused"
    );
    assert_eq!(pg.count_backends(USER).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_through_the_pooler() {
    let (pg, proc) = start(1).await;
    pg.execute(&format!(
        "CREATE TABLE copied (id int PRIMARY KEY, name text NOT NULL);
         GRANT ALL ON copied TO {USER};"
    ))
    .await;
    let mut client = WireClient::login(proc.port(), USER, PASSWORD).await;

    client
        .send(&query("COPY copied (id, name) FROM STDIN"))
        .await;
    let response = client.read().await;
    assert_eq!(response.tag, b'G', "{response:?}");
    let data: String = (1..=1000).map(|i| format!("{i}\tname-{i}\n")).collect();
    // Uneven chunks that cut rows apart, each in its own write.
    for chunk in data.as_bytes().chunks(777) {
        client.send(&copy_data(chunk)).await;
    }
    client.send(&copy_done()).await;
    let done = client.read_until_ready().await;
    assert_eq!(tags(&done), "CZ", "{done:?}");
    assert_eq!(done[0].command_tag().as_deref(), Some("COPY 1000"));
    assert_eq!(done[1].ready_status(), Some(b'I'));
    assert_eq!(scalar(&pg, "SELECT count(*) FROM copied").await, 1000);
    assert_eq!(scalar(&pg, "SELECT sum(id) FROM copied").await, 500_500);

    let out = client
        .simple_query("COPY (SELECT id, name FROM copied ORDER BY id) TO STDOUT")
        .await;
    assert_eq!(out.first().map(|m| m.tag), Some(b'H'), "{:?}", &out[..1]);
    let copied: Vec<u8> = out
        .iter()
        .filter(|m| m.tag == b'd')
        .flat_map(|m| m.body.iter().copied())
        .collect();
    assert_eq!(String::from_utf8(copied).unwrap(), data);
    let tail = &out[out.len() - 3..];
    assert_eq!(tags(tail), "cCZ", "{tail:?}");
    assert_eq!(tail[1].command_tag().as_deref(), Some("COPY 1000"));

    // CopyFail aborts the COPY; nothing is written and the server stays usable.
    client
        .send(&query("COPY copied (id, name) FROM STDIN"))
        .await;
    assert_eq!(client.read().await.tag, b'G');
    client
        .send(&[copy_data(b"5000\tpartial\n"), copy_fail("client gave up")].concat())
        .await;
    let failed = client.read_until_ready().await;
    assert_eq!(
        errors(&failed)[0].sqlstate().as_deref(),
        Some("57014"),
        "{failed:?}"
    );
    assert_eq!(failed.last().unwrap().ready_status(), Some(b'I'));
    assert_eq!(scalar(&pg, "SELECT count(*) FROM copied").await, 1000);

    let mut other = WireClient::login(proc.port(), USER, PASSWORD).await;
    assert_eq!(
        other.query_value("SELECT count(*) FROM copied").await,
        "1000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_forwarded() {
    let (_pg, proc) = start(1).await;
    let mut client = WireClient::login(proc.port(), USER, PASSWORD).await;
    let answer = client
        .simple_query("DO $$ BEGIN RAISE NOTICE 'hi from plpgsql'; END $$")
        .await;
    assert_eq!(tags(&answer), "NCZ", "{answer:?}");
    assert_eq!(answer[0].field(b'M').as_deref(), Some("hi from plpgsql"));
    assert_eq!(answer[0].field(b'V').as_deref(), Some("NOTICE"));
    assert_eq!(answer[0].sqlstate().as_deref(), Some("00000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_is_rolled_back() {
    let (pg, proc) = start(1).await;
    pg.execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY); GRANT ALL ON items TO {USER};"
    ))
    .await;

    let mut a = WireClient::login(proc.port(), USER, PASSWORD).await;
    assert_eq!(a.query_ok("BEGIN").await.1, b'T');
    assert_eq!(a.query_ok("INSERT INTO items VALUES (1)").await.1, b'T');
    a.drop_without_terminate();

    let idle_in_transaction = format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE usename = '{USER}' AND state LIKE 'idle in transaction%'"
    );
    assert_eq!(
        wait_for_scalar(&pg, &idle_in_transaction, 0, NO_HANG).await,
        0,
        "the abandoned transaction stays open on Postgres"
    );
    assert_eq!(scalar(&pg, "SELECT count(*) FROM items").await, 0);

    // The same key again: it would block on the abandoned row lock if the
    // transaction were still open anywhere.
    let mut b = WireClient::login(proc.port(), USER, PASSWORD).await;
    assert_eq!(b.query_ok("INSERT INTO items VALUES (1)").await.1, b'I');
    assert_eq!(scalar(&pg, "SELECT count(*) FROM items").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_batch_leaves_nothing_behind() {
    let (pg, proc) = start(1).await;
    pg.execute(&format!(
        "CREATE TABLE items (id int PRIMARY KEY); GRANT ALL ON items TO {USER};"
    ))
    .await;

    let mut a = WireClient::login(proc.port(), USER, PASSWORD).await;
    assert_eq!(a.query_ok("BEGIN").await.1, b'T');
    // An extended batch with no Sync, then the socket goes away.
    a.send(&[extended_query("INSERT INTO items VALUES (7)", &[]), flush()].concat())
        .await;
    let mut early = Vec::new();
    for _ in 0..3 {
        early.push(a.read().await);
    }
    assert_eq!(tags(&early), "12C", "{early:?}");
    a.drop_without_terminate();

    let open = format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE usename = '{USER}' AND state LIKE 'idle in transaction%'"
    );
    assert_eq!(wait_for_scalar(&pg, &open, 0, NO_HANG).await, 0);
    assert_eq!(scalar(&pg, "SELECT count(*) FROM items").await, 0);
    let mut b = WireClient::login(proc.port(), USER, PASSWORD).await;
    assert_eq!(b.query_ok("INSERT INTO items VALUES (7)").await.1, b'I');
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_transaction_fails_the_client_and_is_replaced() {
    let (pg, proc) = start(1).await;
    let mut a = WireClient::login(proc.port(), USER, PASSWORD).await;
    assert_eq!(a.query_ok("BEGIN").await.1, b'T');
    let pid = a.query_value("SELECT pg_backend_pid()").await;

    terminate_backend(&pg, &pid).await;
    // The client may already be gone when this arrives; what matters is that
    // it is told, then disconnected, instead of being left hanging.
    let _ = a.try_send(&query("SELECT 1")).await;
    let last_words = a.expect_closed(NO_HANG).await;
    let codes: Vec<String> = errors(&last_words)
        .iter()
        .filter_map(|e| e.sqlstate())
        .collect();
    assert!(
        codes.iter().any(|c| c == "57P01" || c == "08006"),
        "expected 57P01 or 08006, got {last_words:?}"
    );
    assert!(
        !last_words.iter().any(|m| m.ready_status() == Some(b'I')),
        "a client whose transaction was lost must not be told it is idle: {last_words:?}"
    );

    let mut b = WireClient::login(proc.port(), USER, PASSWORD).await;
    let new_pid = b.query_value("SELECT pg_backend_pid()").await;
    assert_ne!(new_pid, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_while_idle_in_the_pool_is_replaced_unnoticed() {
    let (pg, proc) = start(1).await;
    let mut a = WireClient::login(proc.port(), USER, PASSWORD).await;
    let first_pid = a.query_value("SELECT pg_backend_pid()").await;

    terminate_backend(&pg, &first_pid).await;
    // Let the pooler's event loop see the closed socket; the check under test
    // is the one at checkout, not a race with the kernel.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second_pid = a.query_value("SELECT pg_backend_pid()").await;
    assert_ne!(second_pid, first_pid);

    terminate_backend(&pg, &second_pid).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut b = WireClient::login(proc.port(), USER, PASSWORD).await;
    assert_eq!(b.query_value("SELECT 'still here'").await, "still here");
    assert_eq!(a.query_value("SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_the_pooler_stops_the_query() {
    let (pg, proc) = start(2).await;
    let client = common::connect(&proc.url(USER, PASSWORD, "postgres")).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (client, result)
    });
    let running =
        wait_for_scalar(&pg, &active_query_count_sql("SELECT pg_sleep"), 1, NO_HANG).await;
    assert_eq!(running, 1, "the sleep never started");

    token.cancel_query(NoTls).await.unwrap();
    let (client, result) = tokio::time::timeout(NO_HANG, sleeper)
        .await
        .expect("the cancelled query did not end")
        .unwrap();
    let Err(error) = result else {
        panic!("pg_sleep(30) finished instead of being cancelled");
    };
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error}");

    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty(), "the client is unusable after a cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_wrong_key_cancels_nothing() {
    let (pg, proc) = start(2).await;
    let mut sleeper = WireClient::login(proc.port(), USER, PASSWORD).await;
    let (pid, secret) = sleeper.backend_key.unwrap();
    sleeper.send(&query("SELECT pg_sleep(2)")).await;
    let running =
        wait_for_scalar(&pg, &active_query_count_sql("SELECT pg_sleep"), 1, NO_HANG).await;
    assert_eq!(running, 1, "the sleep never started");

    for (wrong_pid, wrong_secret) in [
        (pid, secret ^ 1),
        (pid, 0),
        (pid.wrapping_add(1), secret),
        (pid ^ 0x4000_0000, secret),
    ] {
        let mut canceller = WireClient::connect(proc.port()).await;
        canceller
            .send(&wire::cancel_request(wrong_pid, wrong_secret))
            .await;
        let reply = canceller.expect_closed(NO_HANG).await;
        assert!(
            reply.is_empty(),
            "a cancel request gets no answer: {reply:?}"
        );
    }

    let answer = sleeper.read_until_ready().await;
    assert!(
        errors(&answer).is_empty(),
        "the sleep was cancelled: {answer:?}"
    );
    assert_eq!(tags(&answer), "TDCZ", "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_an_idle_client_does_not_hit_its_former_server() {
    let (pg, proc) = start(1).await;
    let mut idle = WireClient::login(proc.port(), USER, PASSWORD).await;
    let (pid, secret) = idle.backend_key.unwrap();
    // `idle` uses the only server connection once and gives it back.
    let shared_pid = idle.query_value("SELECT pg_backend_pid()").await;

    let mut busy = WireClient::login(proc.port(), USER, PASSWORD).await;
    busy.send(&query("SELECT pg_sleep(2), pg_backend_pid()"))
        .await;
    let running =
        wait_for_scalar(&pg, &active_query_count_sql("SELECT pg_sleep"), 1, NO_HANG).await;
    assert_eq!(running, 1, "the sleep never started");

    let mut canceller = WireClient::connect(proc.port()).await;
    canceller.send(&wire::cancel_request(pid, secret)).await;
    canceller.expect_closed(NO_HANG).await;

    let answer = busy.read_until_ready().await;
    assert!(
        errors(&answer).is_empty(),
        "another client's query was cancelled: {answer:?}"
    );
    assert_eq!(rows(&answer)[0][1].as_deref(), Some(shared_pid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_is_refused_quickly() {
    let (_pg, mut proc) = start(1).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: tidepool\r\n\r\n".to_vec(),
        ),
        (
            "length 0x7fffffff",
            vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        ),
        ("length 4", vec![0, 0, 0, 4]),
        ("negative length", vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0]),
        (
            "protocol 2.0",
            wire::startup_message((2, 0), &[("user", USER)]),
        ),
        (
            "protocol 4.0",
            wire::startup_message((4, 0), &[("user", USER)]),
        ),
        ("parameters without terminator", {
            let mut packet = wire::startup_message(PROTOCOL_3_0, &[("user", USER)]);
            let last = packet.len() - 1;
            packet[last] = b'x';
            packet
        }),
        ("SSLRequest with a body", {
            let mut packet = wire::ssl_request();
            packet.extend_from_slice(&[0, 0, 0, 0]);
            packet[3] = 12;
            packet
        }),
    ];
    for (what, bytes) in cases {
        let mut client = WireClient::connect(proc.port()).await;
        client.send(&bytes).await;
        let reply = client.expect_closed(NO_HANG).await;
        assert!(
            reply.iter().all(|m| m.tag == b'E'),
            "{what}: only an ErrorResponse may come before the close: {reply:?}"
        );
        eprintln!("{what}: {reply:?}");
        assert_still_serving(&mut proc).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_during_authentication_are_refused() {
    let (_pg, mut proc) = start(1).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length 3", vec![b'p', 0, 0, 0, 3]),
        ("a 100 MB password message", vec![b'p', 0x06, 0x40, 0, 0]),
        ("a query instead of a password", query("SELECT 1")),
        (
            "an unknown SASL mechanism",
            wire::sasl_initial_response("SCRAM-SHA-1", b"n,,n=,r=abc"),
        ),
    ];
    for (what, bytes) in cases {
        let mut client = WireClient::connect(proc.port()).await;
        client
            .startup(PROTOCOL_3_0, &[("user", USER), ("database", "postgres")])
            .await;
        let request = client.read().await;
        assert_eq!(request.auth_code(), Some(10), "{request:?}");
        client.send(&bytes).await;
        let reply = client.expect_closed(NO_HANG).await;
        let codes: Vec<String> = errors(&reply).iter().filter_map(|e| e.sqlstate()).collect();
        assert_eq!(
            codes,
            ["08P01"],
            "{what}: expected one protocol-violation error, got {reply:?}"
        );
        assert_still_serving(&mut proc).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_after_login_end_the_session() {
    let (_pg, mut proc) = start(1).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length 3", vec![b'Q', 0, 0, 0, 3]),
        ("length 0", vec![b'S', 0, 0, 0, 0]),
        ("negative length", vec![b'Q', 0x80, 0, 0, 0]),
        // Tidepool forwards it; Postgres allows at most 10000 bytes for Sync.
        ("a 100 MB Sync", vec![b'S', 0x06, 0x40, 0, 0]),
    ];
    for (what, bytes) in cases {
        let mut client = WireClient::login(proc.port(), USER, PASSWORD).await;
        assert_eq!(client.query_value("SELECT 1").await, "1");
        client.send(&bytes).await;
        let reply = client.expect_closed(NO_HANG).await;
        assert!(
            !errors(&reply).is_empty() && reply.iter().all(|m| m.tag == b'E'),
            "{what}: expected an ErrorResponse, then the close: {reply:?}"
        );
        eprintln!("{what}: {reply:?}");
        assert_still_serving(&mut proc).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_claim_is_refused_by_max_message_size() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let (_dir, path, port) = write_config(&pg, "max_message_size = 1048576");
    let mut proc = TidepoolProc::start_on(port, &["--config", path.to_str().unwrap()]);

    let mut client = WireClient::login(port, USER, PASSWORD).await;
    assert_eq!(client.query_value("SELECT 1").await, "1");
    // A Query claiming 100 MB, of which only the head and a little body arrive.
    let mut claim = vec![b'Q', 0x06, 0x40, 0, 0];
    claim.extend_from_slice(b"SELECT ");
    client.send(&claim).await;
    let reply = client.expect_closed(NO_HANG).await;
    let codes: Vec<String> = errors(&reply).iter().filter_map(|e| e.sqlstate()).collect();
    assert_eq!(codes, ["08P01"], "{reply:?}");
    assert_still_serving(&mut proc).await;

    // A message under the limit still goes through.
    let mut client = WireClient::login(port, USER, PASSWORD).await;
    let long = format!("SELECT length('{}')", "x".repeat(500_000));
    assert_eq!(client.query_value(&long).await, "500000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_clients_are_closed_after_the_auth_timeout() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let (_dir, path, port) = write_config(&pg, "auth_timeout_ms = 1000");
    let mut proc = TidepoolProc::start_on(port, &["--config", path.to_str().unwrap()]);

    let mut silent = WireClient::connect(port).await;
    let reply = silent.expect_closed(Duration::from_secs(3)).await;
    assert!(
        reply.iter().all(|m| m.tag == b'E'),
        "a silent client was sent {reply:?}"
    );

    // Startup sent, then the SCRAM exchange is never answered.
    let mut stalled = WireClient::connect(port).await;
    stalled
        .startup(PROTOCOL_3_0, &[("user", USER), ("database", "postgres")])
        .await;
    assert_eq!(stalled.read().await.auth_code(), Some(10));
    let reply = stalled.expect_closed(Duration::from_secs(3)).await;
    let codes: Vec<String> = errors(&reply).iter().filter_map(|e| e.sqlstate()).collect();
    assert_eq!(codes, ["08006"], "{reply:?}");

    // The timeout ends at login: a logged-in client may stay quiet longer.
    let mut client = WireClient::login(port, USER, PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(client.query_value("SELECT 'awake'").await, "awake");
    assert_still_serving(&mut proc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_without_tls_is_declined_then_login_works() {
    let (_pg, proc) = start(1).await;
    let mut client = WireClient::connect(proc.port()).await;
    client.send(&wire::ssl_request()).await;
    assert_eq!(client.read_byte().await, b'N');
    client
        .startup(PROTOCOL_3_0, &[("user", USER), ("database", "postgres")])
        .await;
    client.authenticate(PASSWORD).await.unwrap();
    assert_eq!(client.query_value("SELECT 'plain'").await, "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_is_declined_then_login_works() {
    let (_pg, proc) = start(1).await;
    let mut client = WireClient::connect(proc.port()).await;
    client.send(&wire::gssenc_request()).await;
    assert_eq!(client.read_byte().await, b'N');
    client
        .startup(PROTOCOL_3_0, &[("user", USER), ("database", "postgres")])
        .await;
    client.authenticate(PASSWORD).await.unwrap();
    assert_eq!(client.query_value("SELECT 'plain'").await, "plain");
}

/// libpq with `gssencmode=prefer` and `sslmode=prefer` asks for GSSAPI
/// encryption first and, when declined, for TLS on the same connection;
/// Postgres accepts one request of each kind (postmaster.c,
/// ProcessStartupPacket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_then_ssl_request_are_both_declined_then_login_works() {
    let (_pg, proc) = start(1).await;
    for order in [
        [wire::gssenc_request(), wire::ssl_request()],
        [wire::ssl_request(), wire::gssenc_request()],
    ] {
        let mut client = WireClient::connect(proc.port()).await;
        client.send(&order[0]).await;
        assert_eq!(client.read_byte().await, b'N');
        client.send(&order[1]).await;
        assert_eq!(client.read_byte().await, b'N');
        client
            .startup(PROTOCOL_3_0, &[("user", USER), ("database", "postgres")])
            .await;
        client.authenticate(PASSWORD).await.unwrap();
        assert_eq!(client.query_value("SELECT 'plain'").await, "plain");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_minor_version_and_protocol_options_are_negotiated_down() {
    let (_pg, proc) = start(1).await;
    for (version, options) in [
        ((3, 1), vec![]),
        ((3, 0), vec!["_pq_.some_option"]),
        ((3, 5), vec!["_pq_.first", "_pq_.second"]),
    ] {
        let mut client = WireClient::connect(proc.port()).await;
        let mut params = vec![("user", USER), ("database", "postgres")];
        params.extend(options.iter().map(|o| (*o, "on")));
        client.startup(version, &params).await;
        client.authenticate(PASSWORD).await.unwrap();

        let negotiate = &client.login_messages[0];
        assert_eq!(negotiate.tag, b'v', "{:?}", client.login_messages);
        let mut expected = 0i32.to_be_bytes().to_vec();
        expected.extend_from_slice(&(options.len() as i32).to_be_bytes());
        for option in &options {
            expected.extend_from_slice(option.as_bytes());
            expected.push(0);
        }
        assert_eq!(negotiate.body, expected, "{version:?} {options:?}");
        assert_eq!(
            client
                .login_messages
                .iter()
                .filter(|m| m.tag == b'v')
                .count(),
            1
        );
        assert_eq!(
            client.query_value("SELECT 'negotiated'").await,
            "negotiated"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_login_and_cleartext_refused_without_tls() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let upstream = pg.url(USER, PASSWORD, "postgres");

    let listen = format!("{HOST}:{}", free_port());
    let md5 = TidepoolProc::start(&[
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--auth-method",
        "md5",
    ]);
    let mut client = WireClient::login(md5.port(), USER, PASSWORD).await;
    assert_eq!(client.login_messages[0].auth_code(), Some(5));
    assert_eq!(client.query_value("SELECT current_user").await, USER);
    let mut wrong = WireClient::connect(md5.port()).await;
    wrong
        .startup(PROTOCOL_3_0, &[("user", USER), ("database", "postgres")])
        .await;
    let refused = wrong.authenticate("not the password").await.unwrap_err();
    assert_eq!(refused.sqlstate().as_deref(), Some("28P01"));

    let listen = format!("{HOST}:{}", free_port());
    let cleartext = TidepoolProc::start(&[
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--auth-method",
        "password",
    ]);
    let mut plain = WireClient::connect(cleartext.port()).await;
    plain
        .startup(PROTOCOL_3_0, &[("user", USER), ("database", "postgres")])
        .await;
    let refused = plain.authenticate(PASSWORD).await.unwrap_err();
    assert_eq!(refused.sqlstate().as_deref(), Some("28000"), "{refused:?}");
    assert!(
        plain
            .login_messages
            .iter()
            .all(|m| m.auth_code() != Some(3)),
        "the password was asked for in clear text without TLS"
    );
}
