//! Pooling behaviour against a real Postgres: how many server connections
//! Tidepool opens, when a client keeps its server connection (transaction
//! block, session mode), that session state does not leak to the next client,
//! and that a full pool makes clients wait or fail with 53300 instead of
//! hanging.

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use common::{free_port, simple_value, PgServer, PoolMode, TidepoolProc, HOST};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

const USER: &str = "app";
const PASSWORD: &str = "pooling-pw-1";
/// Bound for anything that should take a second or two: only a hang exceeds it.
const NO_HANG: Duration = Duration::from_secs(60);

fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.code().map(|state| state.code().to_owned())
}

async fn backend_pid(client: &Client) -> i32 {
    client
        .query_typed_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap_or_else(|e| panic!("SELECT pg_backend_pid(): {e}"))
        .get(0)
}

/// Writes a one-tenant configuration for `USER` in front of `pg`; returns the
/// directory holding it (keep it alive), the file and the listen port.
fn write_config(pg: &PgServer, user_extra: &str) -> (tempfile::TempDir, PathBuf, u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = format!(
        r#"
[server]
listen = "{HOST}:{port}"

[[tenants]]
external_id = "main"
db_host = "{HOST}"
db_port = {pg_port}
db_database = "postgres"

[[tenants.users]]
db_user = "{USER}"
db_password = "{PASSWORD}"
{user_extra}
"#,
        pg_port = pg.port()
    );
    let path = dir.path().join("tidepool.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_share_a_small_pool_in_transaction_mode() {
    const CLIENTS: i32 = 30;
    const ROUNDS: i32 = 4;
    const POOL_SIZE: i64 = 3;

    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    pg.execute(&format!(
        "CREATE TABLE work (client int NOT NULL, round int NOT NULL);
         GRANT SELECT, INSERT ON work TO {USER};"
    ))
    .await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 3, PoolMode::Transaction);
    let url = pooler.url(USER, PASSWORD, "postgres");

    let mut workers = Vec::new();
    for client_id in 0..CLIENTS {
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut client = common::connect(&url).await;
            for round in 0..ROUNDS {
                let tx = client.transaction().await.unwrap();
                tx.execute("INSERT INTO work VALUES ($1, $2)", &[&client_id, &round])
                    .await
                    .unwrap();
                let mine: i64 = tx
                    .query_one("SELECT count(*) FROM work WHERE client = $1", &[&client_id])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(
                    mine,
                    i64::from(round) + 1,
                    "client {client_id} round {round}"
                );
                tx.commit().await.unwrap();

                // Single statements outside a transaction block, in both protocols.
                let expected = client_id * 1000 + round;
                let simple =
                    simple_value(&client, &format!("SELECT {client_id} * 1000 + {round}")).await;
                assert_eq!(simple, expected.to_string());
                let typed: i32 = client
                    .query_typed_one(
                        "SELECT $1::int4 * 1000 + $2::int4",
                        &[(&client_id, Type::INT4), (&round, Type::INT4)],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(typed, expected);
            }
        }));
    }

    // Sample Postgres's view while the clients run.
    let mut most_backends = 0;
    let sampling = async {
        while !workers.iter().all(|w| w.is_finished()) {
            most_backends = most_backends.max(pg.count_backends(USER).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(NO_HANG, sampling)
        .await
        .expect("the 30 clients did not finish");
    for worker in workers {
        worker.await.expect("a client task failed");
    }

    assert!(
        (1..=POOL_SIZE).contains(&most_backends),
        "Postgres saw {most_backends} backends of {USER} at once; the pool size is {POOL_SIZE}"
    );
    assert!(pg.count_backends(USER).await <= POOL_SIZE);
    let check = pg.client().await;
    let total: i64 = check
        .query_one("SELECT count(*) FROM work", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, i64::from(CLIENTS * ROUNDS));
    let per_client: i64 = check
        .query_one("SELECT count(DISTINCT (client, round)) FROM work", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_client, i64::from(CLIENTS * ROUNDS));
}

/// Far more clients than servers, all asking at once: a client that queues behind
/// a long line gives its relay state back while it waits and keeps only the bytes
/// it read. Each must still get its own answers, through named prepared
/// statements (moved between servers) and simple queries alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_queue_keeps_every_clients_query() {
    const CLIENTS: i32 = 160;
    const ROUNDS: i32 = 3;

    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 2, PoolMode::Transaction);
    let url = pooler.url(USER, PASSWORD, "postgres");
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS as usize));

    let mut workers = Vec::new();
    for client_id in 0..CLIENTS {
        let url = url.clone();
        let start = start.clone();
        workers.push(tokio::spawn(async move {
            let client = common::connect(&url).await;
            // Each server holds a query some milliseconds, so the line grows to
            // nearly every client.
            let statement = client
                .prepare("SELECT $1::int4 * 10 + 1 FROM pg_sleep(0.005)")
                .await
                .unwrap();
            start.wait().await;
            for round in 0..ROUNDS {
                let prepared: i32 = client
                    .query_one(&statement, &[&(client_id * 100 + round)])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(prepared, (client_id * 100 + round) * 10 + 1);
                let simple = simple_value(
                    &client,
                    &format!("SELECT {client_id} * 1000 + {round} FROM pg_sleep(0.002)"),
                )
                .await;
                assert_eq!(simple, (client_id * 1000 + round).to_string());
            }
        }));
    }
    let all = async {
        for worker in workers {
            worker.await.expect("a client task failed");
        }
    };
    tokio::time::timeout(NO_HANG, all)
        .await
        .expect("the clients did not finish");
    assert!(pg.count_backends(USER).await <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_block_keeps_its_server_connection() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 2, PoolMode::Transaction);
    let url = pooler.url(USER, PASSWORD, "postgres");
    let a = common::connect(&url).await;
    let b = common::connect(&url).await;

    a.batch_execute("BEGIN").await.unwrap();
    let first = a
        .query_typed_one("SELECT pg_backend_pid(), txid_current()", &[])
        .await
        .unwrap();
    let (pid_1, txid_1): (i32, i64) = (first.get(0), first.get(1));

    // Had A's server gone back to the pool, B (most recently used first)
    // would get it now and A's next statement would land elsewhere.
    b.batch_execute("BEGIN").await.unwrap();
    let pid_b = backend_pid(&b).await;
    assert_ne!(pid_b, pid_1, "two open transactions share one server");

    let second = a
        .query_typed_one("SELECT pg_backend_pid(), txid_current()", &[])
        .await
        .unwrap();
    let (pid_2, txid_2): (i32, i64) = (second.get(0), second.get(1));
    b.batch_execute("COMMIT").await.unwrap();
    a.batch_execute("COMMIT").await.unwrap();

    assert_eq!(pid_1, pid_2, "the transaction moved to another server");
    assert_eq!(
        txid_1, txid_2,
        "the statements ran in different transactions"
    );

    // A's next transaction is a new one.
    a.batch_execute("BEGIN").await.unwrap();
    let next: i64 = a
        .query_typed_one("SELECT txid_current()", &[])
        .await
        .unwrap()
        .get(0);
    a.batch_execute("COMMIT").await.unwrap();
    assert_ne!(next, txid_1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_client_keeps_one_backend() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 2, PoolMode::Session);
    let url = pooler.url(USER, PASSWORD, "postgres");
    let a = common::connect(&url).await;
    let b = common::connect(&url).await;

    let pid_a = backend_pid(&a).await;
    let pid_b = backend_pid(&b).await;
    assert_ne!(pid_a, pid_b, "two session clients share one server");
    for i in 0..25 {
        assert_eq!(backend_pid(&a).await, pid_a, "statement {i} of A");
        assert_eq!(
            simple_value(&a, "SELECT pg_backend_pid()").await,
            pid_a.to_string()
        );
        assert_eq!(backend_pid(&b).await, pid_b, "statement {i} of B");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_is_reset_before_the_next_client() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 1, PoolMode::Session);
    let url = pooler.url(USER, PASSWORD, "postgres");

    let a = common::connect(&url).await;
    a.batch_execute(
        "CREATE TEMP TABLE scratch (x int);
         INSERT INTO scratch VALUES (1);
         SET application_name = 'client_a_marker';
         SET work_mem = '7MB';",
    )
    .await
    .unwrap();
    assert_eq!(
        simple_value(&a, "SELECT current_setting('application_name')").await,
        "client_a_marker"
    );
    let pid_a = backend_pid(&a).await;
    drop(a);

    let b = tokio::time::timeout(NO_HANG, common::connect(&url))
        .await
        .expect("second client could not log in");
    assert_eq!(
        backend_pid(&b).await,
        pid_a,
        "with pool_size 1, B should get A's server connection"
    );
    let error = b
        .simple_query("SELECT x FROM scratch")
        .await
        .expect_err("A's temporary table is visible to B");
    assert_eq!(sqlstate(&error).as_deref(), Some("42P01"), "{error}");
    assert_ne!(
        simple_value(&b, "SELECT current_setting('application_name')").await,
        "client_a_marker"
    );
    assert_eq!(simple_value(&b, "SHOW work_mem").await, "4MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_session_client_waits_for_the_first() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 1, PoolMode::Session);
    let url = pooler.url(USER, PASSWORD, "postgres");

    let a = common::connect(&url).await;
    let pid_a = backend_pid(&a).await;

    let waiting = tokio::spawn({
        let url = url.clone();
        async move {
            let b = common::connect(&url).await;
            backend_pid(&b).await
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "the second session client was served while the first held the only server"
    );
    assert_eq!(backend_pid(&a).await, pid_a, "A lost its server");
    assert_eq!(pg.count_backends(USER).await, 1);

    drop(a);
    let pid_b = tokio::time::timeout(NO_HANG, waiting)
        .await
        .expect("the second client was not served after the first left")
        .expect("the second client failed");
    assert_eq!(pid_b, pid_a, "the server connection was not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pool_fails_with_53300_after_the_checkout_timeout() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let (_dir, config, port) = write_config(&pg, "pool_size = 1\npool_checkout_timeout = 500");
    let pooler = TidepoolProc::start_on(port, &["--config", config.to_str().unwrap()]);
    let url = pooler.url(USER, PASSWORD, "postgres");

    let a = common::connect(&url).await;
    a.batch_execute("BEGIN").await.unwrap();
    let pid_a = backend_pid(&a).await;

    let error = refused_while_the_only_server_is_held(&url).await;
    let message = error.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message.as_deref().is_some_and(|m| m.contains("500 ms")),
        "message should name the user's checkout timeout: {message:?}"
    );

    // A is unaffected, and the pool serves others once A is done.
    assert_eq!(backend_pid(&a).await, pid_a);
    a.batch_execute("COMMIT").await.unwrap();
    let c = common::connect(&url).await;
    assert_eq!(simple_value(&c, "SELECT 42").await, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_shortens_the_checkout_timeout_ends_the_next_wait_in_time() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    // The pool's expiry timer is first set an hour out, the default of this file.
    let (_dir, config, port) = write_config(&pg, "pool_size = 1\npool_checkout_timeout = 3600000");
    let pooler = TidepoolProc::start_on(port, &["--config", config.to_str().unwrap()]);
    let url = pooler.url(USER, PASSWORD, "postgres");
    let a = common::connect(&url).await;
    a.batch_execute("BEGIN").await.unwrap();

    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "pool_checkout_timeout = 3600000",
            "pool_checkout_timeout = 300",
        ),
    )
    .unwrap();
    pooler.signal(common::SIGHUP);
    assert!(
        pooler.wait_for_log("configuration reloaded", Duration::from_secs(10)),
        "no reload in the log:\n{}",
        pooler.log()
    );

    refused_while_the_only_server_is_held(&url).await;
    a.batch_execute("COMMIT").await.unwrap();
}

/// The error a new client's query gets while another holds the pool's only
/// server in a transaction: 53300 once its checkout timeout passes (well within
/// 10 s in these tests).
async fn refused_while_the_only_server_is_held(url: &str) -> tokio_postgres::Error {
    let b = common::connect(url).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), b.simple_query("SELECT 1")).await;
    let error = match outcome {
        Err(_) => panic!("B's query waited past its checkout timeout"),
        Ok(Ok(_)) => panic!("B's query ran while A held the only server in a transaction"),
        Ok(Err(e)) => e,
    };
    assert_eq!(sqlstate(&error).as_deref(), Some("53300"), "{error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_are_reused_across_clients() {
    const CLIENTS: usize = 200;
    const POOL_SIZE: usize = 3;
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 3, PoolMode::Transaction);
    let url = pooler.url(USER, PASSWORD, "postgres");

    let mut pids = HashSet::new();
    let run = async {
        for i in 0..CLIENTS {
            let client = common::connect(&url).await;
            let pid = simple_value(&client, "SELECT pg_backend_pid()").await;
            pids.insert(pid);
            assert_eq!(
                simple_value(&client, &format!("SELECT {i}")).await,
                i.to_string()
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("200 sequential clients did not finish");

    assert!(
        (1..=POOL_SIZE).contains(&pids.len()),
        "{CLIENTS} clients were served by {} distinct backends: {pids:?}",
        pids.len()
    );
    // Every login Postgres saw for the user, including backends that have
    // already gone (log_connections is on in the test cluster).
    let log = std::fs::read_to_string(pg.log_path()).unwrap();
    let logins = log
        .lines()
        .filter(|line| line.contains(&format!("connection authorized: user={USER} ")))
        .count();
    assert!(
        (1..=POOL_SIZE).contains(&logins),
        "Postgres logged {logins} logins of {USER} for {CLIENTS} clients"
    );
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let comm = task.unwrap().path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            names.push(name.trim().to_owned());
        }
    }
    names
}

/// Tidepool in front of `upstream` with one server connection for everyone,
/// transaction mode and four shards, logging when a connection changes shards.
fn start_four_shards_one_connection(upstream: &str) -> TidepoolProc {
    let listen = format!("{HOST}:{}", free_port());
    let args = [
        "--listen",
        listen.as_str(),
        "--upstream",
        upstream,
        "--pool-size",
        "1",
        "--pool-mode",
        "transaction",
        "--worker-threads",
        "4",
    ];
    let port = common::listen_port_from_args(&args).unwrap();
    TidepoolProc::start_with_env(
        port,
        &args,
        &[("RUST_LOG", "info,tidepool_core::server::pool=debug")],
    )
}

/// `clients` clients at once, each running a prepared and a simple query
/// `rounds` times and checking the answers; the backend pids they saw.
async fn clients_take_turns(url: &str, clients: i32, rounds: i32) -> HashSet<i32> {
    let mut workers = Vec::new();
    for client_id in 0..clients {
        let url = url.to_owned();
        workers.push(tokio::spawn(async move {
            let client = common::connect(&url).await;
            let add = client.prepare("SELECT $1::int4 + $2::int4").await.unwrap();
            let mut pids = HashSet::new();
            for round in 0..rounds {
                pids.insert(backend_pid(&client).await);
                let sum: i32 = client
                    .query_one(&add, &[&client_id, &round])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(sum, client_id + round, "client {client_id} round {round}");
                let simple = simple_value(&client, &format!("SELECT {client_id}")).await;
                assert_eq!(simple, client_id.to_string());
            }
            pids
        }));
    }
    let mut pids = HashSet::new();
    let all = async {
        for worker in workers {
            pids.extend(worker.await.expect("a client task failed"));
        }
    };
    tokio::time::timeout(NO_HANG, all)
        .await
        .expect("the clients did not finish");
    pids
}

/// Clients are spread over the shards (one runtime per thread), and one server
/// connection serves clients on all of them: it moves to the reactor of the shard
/// whose client takes it, and keeps its prepared statements and its backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_server_connection_serves_clients_on_every_shard() {
    const SHARDS: usize = 4;
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = start_four_shards_one_connection(&pg.url(USER, PASSWORD, "postgres"));
    let shards = thread_names(pooler.pid())
        .into_iter()
        .filter(|name| name.starts_with("tidepool-shard"))
        .count();
    assert_eq!(shards, SHARDS, "threads: {:?}", thread_names(pooler.pid()));

    let pids = clients_take_turns(&pooler.url(USER, PASSWORD, "postgres"), 8, 10).await;
    one_backend_that_changed_shards(&pg, &pooler, &pids).await;
}

/// What [`clients_take_turns`] leaves behind with one server connection: one
/// backend, seen by every client, which moved between shards on the way.
async fn one_backend_that_changed_shards(
    pg: &PgServer,
    pooler: &TidepoolProc,
    pids: &HashSet<i32>,
) {
    assert_eq!(
        pids.len(),
        1,
        "one server connection, one backend: {pids:?}"
    );
    assert_eq!(pg.count_backends(USER).await, 1);
    assert!(
        pooler
            .log()
            .contains("server connection moved to this shard"),
        "no server connection changed shards:\n{}",
        pooler.log()
    );
}

/// An upstream host that is a directory is reached over PostgreSQL's Unix-domain
/// socket in it, as libpq does: queries, prepared statements, a server connection
/// shared by clients on every shard (it moves between their reactors), and a
/// cancel, which goes to the same socket. As with libpq, `sslmode=require` does
/// not apply there (the log says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_over_a_unix_socket() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = start_four_shards_one_connection(&format!(
        "postgres://{USER}:{PASSWORD}@localhost:{}/postgres?host={}&sslmode=require",
        pg.port(),
        pg.socket_dir().display()
    ));
    let url = pooler.url(USER, PASSWORD, "postgres");
    let client = common::connect(&url).await;
    // No client address: the backend was reached over a Unix-domain socket.
    assert_eq!(
        simple_value(&client, "SELECT inet_client_addr() IS NULL").await,
        "t"
    );
    let pids = clients_take_turns(&url, 6, 5).await;
    one_backend_that_changed_shards(&pg, &pooler, &pids).await;
    assert!(
        pooler
            .log()
            .contains("no TLS on it, whatever upstream_sslmode says"),
        "no warning about sslmode on a Unix socket:\n{}",
        pooler.log()
    );

    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    let started = std::time::Instant::now();
    loop {
        let running: i64 = pg
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running == 1 {
            break;
        }
        assert!(started.elapsed() < NO_HANG, "the sleep never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = tokio::time::timeout(NO_HANG, sleeper)
        .await
        .expect("the cancelled query did not end")
        .unwrap();
    let error = result.expect_err("pg_sleep(30) finished instead of being cancelled");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{error}"
    );
}

/// A server connection is reused while it is younger than `pool.max_lifetime_secs`
/// and replaced once older: when it comes back, or while it sits idle (the
/// maintenance pass, every second, closes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_are_replaced_after_their_lifetime() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let (_dir, config, port) = write_config(&pg, "pool_size = 1\n\n[pool]\nmax_lifetime_secs = 2");
    let pooler = TidepoolProc::start_on(port, &["--config", config.to_str().unwrap()]);
    let client = common::connect(&pooler.url(USER, PASSWORD, "postgres")).await;
    let first = backend_pid(&client).await;
    assert_eq!(
        backend_pid(&client).await,
        first,
        "reused within its lifetime"
    );
    // Lifetime (2 s) plus a maintenance pass (1 s), with room to spare.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = backend_pid(&client).await;
    assert_ne!(
        later, first,
        "a connection past its lifetime was lent again"
    );
    assert_eq!(backend_pid(&client).await, later);
}

/// A client that leaves inside a transaction: its work is rolled back and the
/// next client gets the server connection idle.
async fn check_abandoned_transaction(mode: PoolMode) {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    pg.execute(&format!(
        "CREATE TABLE ledger (n int); GRANT SELECT, INSERT ON ledger TO {USER};"
    ))
    .await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 1, mode);
    let url = pooler.url(USER, PASSWORD, "postgres");

    let a = common::connect(&url).await;
    a.batch_execute("BEGIN; INSERT INTO ledger VALUES (1);")
        .await
        .unwrap();
    let pid_a = backend_pid(&a).await;
    drop(a);

    let b = tokio::time::timeout(NO_HANG, common::connect(&url))
        .await
        .expect("the next client could not log in");
    assert_eq!(
        backend_pid(&b).await,
        pid_a,
        "pool_size 1 opened a second server"
    );
    assert_eq!(simple_value(&b, "SELECT count(*) FROM ledger").await, "0");
    assert_eq!(
        simple_value(
            &b,
            "SELECT coalesce(txid_current_if_assigned()::text, 'none')"
        )
        .await,
        "none",
        "B runs inside A's transaction"
    );
    // B's own transaction commits normally.
    b.batch_execute("BEGIN; INSERT INTO ledger VALUES (2); COMMIT;")
        .await
        .unwrap();
    let committed: Vec<i32> = pg
        .client()
        .await
        .query("SELECT n FROM ledger", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(committed, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_transaction_is_rolled_back_in_transaction_mode() {
    check_abandoned_transaction(PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_transaction_is_rolled_back_in_session_mode() {
    check_abandoned_transaction(PoolMode::Session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transaction_keeps_its_server_until_rollback() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 2, PoolMode::Transaction);
    let url = pooler.url(USER, PASSWORD, "postgres");
    let a = common::connect(&url).await;
    let b = common::connect(&url).await;

    a.batch_execute("BEGIN").await.unwrap();
    let pid_a = backend_pid(&a).await;
    let error = a
        .simple_query("SELECT 1 / 0")
        .await
        .expect_err("division by zero succeeded");
    assert_eq!(sqlstate(&error).as_deref(), Some("22012"), "{error}");

    // A's failed transaction still holds its server: B gets the other one.
    b.batch_execute("BEGIN").await.unwrap();
    assert_ne!(backend_pid(&b).await, pid_a);
    b.batch_execute("COMMIT").await.unwrap();

    let aborted = a
        .simple_query("SELECT 1")
        .await
        .expect_err("a statement ran in an aborted transaction");
    assert_eq!(sqlstate(&aborted).as_deref(), Some("25P02"), "{aborted}");
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(simple_value(&a, "SELECT 7").await, "7");
}
