//! The admin console (database `pgbouncer` or `tidepool`, the `[admin]` user),
//! against a real Postgres and a real Tidepool: SHOW POOLS, STATS, DATABASES,
//! LISTS and VERSION answer with what the pools did, through tokio-postgres's
//! simple queries and through psql; a wrong password, another user, the
//! extended protocol and an unknown command are refused without ending the
//! session where the protocol allows it; an idle console session does not hold
//! up shutdown; RELOAD re-reads the file; and PAUSE / RESUME let Postgres
//! restart under connected clients without an error reaching them.

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{connect, free_port, run_psql, try_connect, PgServer, TidepoolProc, HOST, SIGTERM};
use tokio_postgres::{Client, SimpleQueryMessage};

const USER: &str = "app";
const PASSWORD: &str = "console-app-pw";
/// A second user of tenant `main`, whose counts the tenant's totals add up.
const OTHER: &str = "other";
const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "console-admin-pw";

/// Tidepool from a file with one tenant `main`, the admin user, and a long
/// shutdown timeout.
fn start(pg: &PgServer, dir: &tempfile::TempDir) -> TidepoolProc {
    start_with(pg, dir, "").0
}

/// [`start`] with `tenant_extra` keys for tenant `main`; also the port of its
/// metrics endpoint.
fn start_with(pg: &PgServer, dir: &tempfile::TempDir, tenant_extra: &str) -> (TidepoolProc, u16) {
    let port = free_port();
    let api_port = free_port();
    let path = dir.path().join("tidepool.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{HOST}:{port}\"\nshutdown_timeout_ms = 60000\n\n\
             [admin]\nuser = \"{ADMIN}\"\npassword = \"{ADMIN_PASSWORD}\"\n\n\
             [api]\nlisten = \"{HOST}:{api_port}\"\njwt_secret = \"console-test-secret\"\n\n\
             [[tenants]]\nexternal_id = \"main\"\ndb_host = \"{HOST}\"\ndb_port = {}\n\
             db_database = \"postgres\"\ndefault_pool_size = 2\n{tenant_extra}\n\n\
             [[tenants.users]]\ndb_user = \"{USER}\"\ndb_password = \"{PASSWORD}\"\n\n\
             [[tenants.users]]\ndb_user = \"{OTHER}\"\ndb_password = \"{PASSWORD}\"\n",
            pg.port()
        ),
    )
    .unwrap();
    let proc = TidepoolProc::start_on(port, &["--config", path.to_str().unwrap()]);
    assert!(
        common::wait_until(Duration::from_secs(60), || common::accepts_tcp(api_port)),
        "no metrics endpoint\n{}",
        proc.log()
    );
    (proc, api_port)
}

/// The rows of a simple query's result, as text.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The column names of a simple query's result.
async fn columns(client: &Client, sql: &str) -> Vec<String> {
    for m in client.simple_query(sql).await.unwrap() {
        if let SimpleQueryMessage::RowDescription(cols) = m {
            return cols.iter().map(|c| c.name().to_owned()).collect();
        }
    }
    panic!("{sql}: no RowDescription");
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_what_the_pools_did() {
    const TRANSACTIONS: u64 = 25;
    const OTHER_TRANSACTIONS: u64 = 5;
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    pg.create_user(OTHER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proc = start(&pg, &dir);

    let app = connect(&proc.url(&format!("{USER}.main"), PASSWORD, "postgres")).await;
    for i in 0..TRANSACTIONS {
        app.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    let other = connect(&proc.url(&format!("{OTHER}.main"), PASSWORD, "postgres")).await;
    for i in 0..OTHER_TRANSACTIONS {
        other.simple_query(&format!("SELECT {i}")).await.unwrap();
    }
    drop(other);
    let console = connect(&proc.url(ADMIN, ADMIN_PASSWORD, "pgbouncer")).await;

    let pools = rows(&console, "SHOW POOLS").await;
    assert_eq!(
        columns(&console, "show pools;").await,
        [
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_parked",
            "sv_active",
            "sv_idle",
            "pool_mode"
        ]
    );
    assert_eq!(pools.len(), 2, "{pools:?}");
    let pool = pools.iter().find(|p| p[1] == USER).unwrap();
    assert_eq!((pool[0].as_str(), pool[1].as_str()), ("main", USER));
    // The one client, between transactions: active or parked, none waiting; the
    // pool's one connection idle.
    let active: u64 = pool[2].parse().unwrap();
    let parked: u64 = pool[4].parse().unwrap();
    assert_eq!(active, 1, "{pool:?}");
    assert!(parked <= 1, "{pool:?}");
    assert_eq!(pool[3], "0");
    assert_eq!((pool[5].as_str(), pool[6].as_str()), ("0", "1"), "{pool:?}");
    assert_eq!(pool[7], "transaction");

    // Statistics per tenant, as PgBouncer's per database: both users' work.
    let stats = rows(&console, "SHOW STATS").await;
    assert_eq!(stats.len(), 1, "one tenant: {stats:?}");
    let stat = &stats[0];
    assert_eq!(stat[0], "main");
    let xacts: u64 = stat[1].parse().unwrap();
    let queries: u64 = stat[2].parse().unwrap();
    let run = TRANSACTIONS + OTHER_TRANSACTIONS;
    assert!(
        (run..run + 3).contains(&xacts),
        "{run} transactions run, {xacts} counted: {stat:?}"
    );
    assert!(queries >= run, "{stat:?}");
    let received: u64 = stat[3].parse().unwrap();
    assert!(
        received > 0 && stat[4].parse::<u64>().unwrap() > 0,
        "{stat:?}"
    );
    assert_eq!(stat[7], "2", "two logins: {stat:?}");
    let totals = rows(&console, "SHOW STATS_TOTALS").await;
    assert_eq!(
        columns(&console, "SHOW STATS_TOTALS").await,
        [
            "database",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "wait_time"
        ]
    );
    assert_eq!(totals[0][..3], stat[..3], "the same counts: {totals:?}");

    // The settings in force, as a monitoring tool reads them.
    let config = rows(&console, "SHOW CONFIG").await;
    let listen = config.iter().find(|r| r[0] == "listen").unwrap();
    assert_eq!(listen[1], format!("{HOST}:{}", proc.port()));
    assert_eq!(listen[2], "no");
    let shutdown = config
        .iter()
        .find(|r| r[0] == "shutdown_timeout_ms")
        .unwrap();
    assert_eq!(
        (shutdown[1].as_str(), shutdown[2].as_str()),
        ("60000", "yes")
    );

    let databases = rows(&console, "SHOW DATABASES").await;
    assert_eq!(databases.len(), 1);
    assert_eq!(databases[0][0], "main");
    assert_eq!(databases[0][2], pg.port().to_string());
    assert_eq!(databases[0][6], "1", "one client left: {databases:?}");

    let lists = rows(&console, "SHOW LISTS").await;
    let item = |name: &str| {
        lists
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no {name} in {lists:?}"))[1]
            .clone()
    };
    assert_eq!(item("databases"), "1");
    assert_eq!(item("used_clients"), "1");
    // Each user's pool keeps the one connection it opened, idle.
    assert_eq!(item("used_servers"), "2");
    assert_eq!(item("idle_servers"), "2");

    let version = rows(&console, "SHOW VERSION").await;
    assert!(version[0][0].starts_with("Tidepool "), "{version:?}");

    // An unknown command, and the extended protocol: errors, and the session
    // goes on.
    let unknown = console.simple_query("SHOW CLIENTS").await.unwrap_err();
    assert_eq!(sqlstate(&unknown), "0A000");
    // Commands before an unknown one run, as in a multi-statement query.
    let replies = console.simple_query("SHOW VERSION; SHOW CLIENTS").await;
    assert_eq!(sqlstate(&replies.unwrap_err()), "0A000");
    // An empty query: answered (EmptyQueryResponse), no rows.
    let empty = console.simple_query("").await.unwrap();
    assert!(!empty
        .iter()
        .any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    let extended = console.query("SHOW POOLS", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&extended), "0A000");
    assert_eq!(rows(&console, "SHOW POOLS").await.len(), 2);

    // psql, as an operator types it.
    let conninfo = format!(
        "host={HOST} port={} user={ADMIN} dbname=tidepool",
        proc.port()
    );
    let out = run_psql(&conninfo, ADMIN_PASSWORD, "SHOW POOLS").unwrap();
    assert!(out.contains(&format!("main|{USER}|")), "{out}");

    // The console holds no one up at shutdown (the file allows 60 s).
    drop(app);
    proc.signal(SIGTERM);
    assert!(
        proc.wait_exit(Duration::from_secs(20)).is_some(),
        "an idle console session held up shutdown\n{}",
        proc.log()
    );
    assert!(console.simple_query("SHOW POOLS").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_with_its_password_reaches_the_console() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let (proc, api_port) = start_with(&pg, &dir, "");

    let wrong = try_connect(&proc.url(ADMIN, "not-it", "pgbouncer"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&wrong), "28P01");

    // With a console configured its databases are its own: another user, even
    // a tenant's with its right password, fails as an unknown user does.
    let e = try_connect(&proc.url(&format!("{USER}.main"), PASSWORD, "pgbouncer"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");
    let e = try_connect(&proc.url("nobody", "x", "tidepool"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01", "{e}");

    // No client has reached tenant main yet (the refusals above were the
    // console's): it has a row all the same, of zeros.
    let admin = connect(&proc.url(ADMIN, ADMIN_PASSWORD, "pgbouncer")).await;
    let stats = rows(&admin, "SHOW STATS").await;
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0][0], "main");
    assert!(stats[0][1..].iter().all(|n| n == "0"), "{stats:?}");

    // The admin's name with another database is no console either: no such
    // user in the tenant (a failed login of tenant main).
    let e = try_connect(&proc.url(&format!("{ADMIN}.main"), ADMIN_PASSWORD, "postgres"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");

    // Counted: three refused (a wrong password, a tenant's user, an unknown
    // name), one let in.
    assert_eq!(
        common::process_metric(api_port, "tidepool_console_logins_failed_total"),
        3
    );
    assert_eq!(
        common::process_metric(api_port, "tidepool_console_logins_total"),
        1
    );

    // When a tenant demands TLS, so does the console.
    let tls_dir = tempfile::tempdir().unwrap();
    let (strict, _) = start_with(&pg, &tls_dir, "enforce_ssl = true");
    let e = try_connect(&strict.url(ADMIN, ADMIN_PASSWORD, "pgbouncer"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "28000", "{e}");
    drop(strict);

    // A half-configured console is refused before starting.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .args([
            "--upstream",
            &pg.url(USER, PASSWORD, "postgres"),
            "--admin-user",
            ADMIN,
            "--check",
        ])
        .env_remove("TIDEPOOL_ADMIN_PASSWORD")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("admin.password"), "{err}");
    drop(proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rereads_the_file_and_keeps_the_old_one_when_it_is_bad() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let proc = start(&pg, &dir);
    let console = connect(&proc.url(ADMIN, ADMIN_PASSWORD, "pgbouncer")).await;
    let setting = |rows: Vec<Vec<String>>, key: &str| {
        rows.into_iter()
            .find(|r| r[0] == key)
            .unwrap_or_else(|| panic!("no {key}"))[1]
            .clone()
    };
    assert_eq!(
        setting(rows(&console, "SHOW CONFIG").await, "shutdown_timeout_ms"),
        "60000"
    );

    let path = dir.path().join("tidepool.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("shutdown_timeout_ms = 60000", "shutdown_timeout_ms = 45000"),
    )
    .unwrap();
    console.simple_query("RELOAD").await.unwrap();
    assert_eq!(
        setting(rows(&console, "SHOW CONFIG").await, "shutdown_timeout_ms"),
        "45000"
    );

    // A file that does not validate: an error, and the settings in force stay.
    std::fs::write(&path, "[server]\nlisten = \"nowhere\"\n").unwrap();
    let e = console.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(sqlstate(&e), "F0000", "{e}");
    assert_eq!(
        setting(rows(&console, "SHOW CONFIG").await, "shutdown_timeout_ms"),
        "45000"
    );
    // And clients are still served.
    let app = connect(&proc.url(&format!("{USER}.main"), PASSWORD, "postgres")).await;
    app.simple_query("SELECT 1").await.unwrap();

    // Single-upstream mode has no file to re-read.
    let port = free_port();
    let listen = format!("{HOST}:{port}");
    let upstream = pg.url(USER, PASSWORD, "postgres");
    let single = TidepoolProc::start_with_env(
        port,
        &[
            "--listen",
            &listen,
            "--upstream",
            &upstream,
            "--admin-user",
            ADMIN,
        ],
        &[("TIDEPOOL_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    let console = connect(&single.url(ADMIN, ADMIN_PASSWORD, "tidepool")).await;
    let e = console.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(sqlstate(&e), "F0000", "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("no configuration file"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_lets_the_database_restart_under_clients_without_an_error() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let proc = start(&pg, &dir);
    let url = proc.url(&format!("{USER}.main"), PASSWORD, "postgres");
    let console = connect(&proc.url(ADMIN, ADMIN_PASSWORD, "pgbouncer")).await;
    let unknown = console.simple_query("PAUSE nosuch").await.unwrap_err();
    assert_eq!(sqlstate(&unknown), "3D000");

    // A transaction is open: PAUSE waits for it to end.
    let busy = connect(&url).await;
    let waiting = connect(&url).await;
    busy.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let pause =
        tokio::spawn(async move { console.simple_query("PAUSE main").await.map(|_| console) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction was open"
    );
    busy.batch_execute("COMMIT").await.unwrap();
    let console = tokio::time::timeout(Duration::from_secs(20), pause)
        .await
        .expect("PAUSE did not return once the transaction ended")
        .unwrap()
        .unwrap();
    // Paused: the pool's connections are closed, so Postgres could restart.
    let mut backends = i64::MAX;
    for _ in 0..200 {
        backends = pg.count_backends(USER).await;
        if backends == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backends, 0, "server connections still open while paused");

    let databases = rows(&console, "SHOW DATABASES").await;
    assert_eq!(databases[0][7], "1", "paused: {databases:?}");
    // What a pause is for: the database restarts, and no client notices.
    pg.restart();

    // A new transaction waits while paused, and runs once resumed.
    let held = tokio::spawn(async move {
        let row = waiting.simple_query("SELECT 40 + 2").await;
        (waiting, row)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "a transaction ran while paused");
    let e = console.simple_query("RESUME other").await.unwrap_err();
    assert_eq!(sqlstate(&e), "55000", "not paused: {e}");
    console.simple_query("RESUME main").await.unwrap();
    let (waiting, rows) = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("the held transaction did not run after RESUME")
        .unwrap();
    let value = rows
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap();
    assert_eq!(value, "42");
    busy.simple_query("SELECT 1").await.unwrap();
    drop(waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_does_not_hold_up_shutdown() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proc = start(&pg, &dir);
    let client = connect(&proc.url(&format!("{USER}.main"), PASSWORD, "postgres")).await;
    let console = connect(&proc.url(ADMIN, ADMIN_PASSWORD, "pgbouncer")).await;
    console.simple_query("PAUSE").await.unwrap();
    let held = tokio::spawn(async move { client.simple_query("SELECT 1").await.map(drop) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a transaction ran while paused");
    // The file gives clients 60 s to finish; a pause must not make them use it.
    proc.signal(SIGTERM);
    assert!(
        proc.wait_exit(Duration::from_secs(20)).is_some(),
        "shutdown waited on a paused pool\n{}",
        proc.log()
    );
    // Told, not left hanging (57P01, or its result if it got a connection).
    let answered = tokio::time::timeout(Duration::from_secs(5), held).await;
    assert!(answered.is_ok(), "the held client got no answer");
}
