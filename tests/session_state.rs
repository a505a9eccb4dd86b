//! Session state a transaction-mode client sets up, against a real Postgres: its
//! settings follow it to whichever server it lands on and never reach another
//! client, and state that cannot move (temporary tables, session advisory locks)
//! pins it to its server until it leaves, after which the server is clean.

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{PgServer, PoolMode, TidepoolProc};
use tokio_postgres::{Client, SimpleQueryMessage};

const USER: &str = "app";
const PASSWORD: &str = "state-pw-1";

async fn show(client: &Client, setting: &str) -> String {
    let rows = client
        .simple_query(&format!("SHOW {setting}"))
        .await
        .unwrap();
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap()
}

async fn pid(client: &Client) -> i32 {
    client
        .query_typed_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_their_client_and_never_leak() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    // One server: every client shares it, so anything left behind would show.
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 1, PoolMode::Transaction);
    let url = pooler.url(USER, PASSWORD, "postgres");
    let a = common::connect(&url).await;
    let b = common::connect(&url).await;
    let default_path = show(&b, "search_path").await;

    a.batch_execute("SET search_path TO pg_catalog, public; SET statement_timeout = '7s'")
        .await
        .unwrap();
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(pid(&a).await, pid(&b).await, "one server for both");
        assert_eq!(show(&a, "search_path").await, "pg_catalog, public");
        assert_eq!(show(&a, "statement_timeout").await, "7s");
        assert_eq!(show(&a, "TimeZone").await, "Asia/Tokyo");
        assert_eq!(show(&b, "search_path").await, default_path);
        assert_eq!(show(&b, "statement_timeout").await, "0");
        assert_ne!(show(&b, "TimeZone").await, "Asia/Tokyo");
    }
    // A SET after another statement, or behind a comment, counts as well (the
    // pre-check passes over `SET` inside an UPDATE and over `OFFSET`). Each is
    // checked before the next: reading one client's settings back reads them all.
    for (sql, setting, value) in [
        (
            "SELECT 1 OFFSET 0;SET lock_timeout = '3s'",
            "lock_timeout",
            "3s",
        ),
        (
            "/* why */ SET idle_in_transaction_session_timeout = '4s'",
            "idle_in_transaction_session_timeout",
            "4s",
        ),
    ] {
        a.batch_execute(sql).await.unwrap();
        assert_eq!(pid(&a).await, pid(&b).await, "one server for both");
        assert_eq!(show(&b, setting).await, "0", "{sql}");
        assert_eq!(show(&a, setting).await, value, "{sql}");
    }
    // Through the extended protocol, after a Parse the pre-check found clean.
    a.execute("SELECT 1", &[]).await.unwrap();
    a.execute("SET idle_session_timeout = '6s'", &[])
        .await
        .unwrap();
    assert_eq!(show(&b, "idle_session_timeout").await, "0");
    assert_eq!(show(&a, "idle_session_timeout").await, "6s");
    // SET LOCAL stays inside its transaction; a rolled-back SET is undone.
    a.batch_execute("BEGIN; SET LOCAL work_mem = '9MB'; COMMIT")
        .await
        .unwrap();
    a.batch_execute("BEGIN; SET work_mem = '7MB'; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(show(&a, "work_mem").await, show(&b, "work_mem").await);
    // RESET ALL gives the client the defaults back, on any server.
    a.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(show(&a, "search_path").await, default_path);
    assert_eq!(show(&a, "statement_timeout").await, "0");
}

/// Settings given at startup (`options=-c ...`, or as startup parameters, as
/// asyncpg's `server_settings` sends them) follow their client like a SET, and a
/// startup option Tidepool cannot honour, or a setting Postgres refuses, ends
/// the login with an error instead of being dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_follow_their_client_and_never_leak() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 1, PoolMode::Transaction);
    let url = pooler.url(USER, PASSWORD, "postgres");
    let options =
        "-c%20search_path%3Dpg_catalog%20--statement-timeout%3D7s%20-c%20TimeZone%3DAsia/Tokyo";
    let a = common::connect(&format!("{url}?options={options}")).await;
    let b = common::connect(&url).await;
    let default_path = show(&b, "search_path").await;
    assert_ne!(default_path, "pg_catalog");
    for _ in 0..3 {
        assert_eq!(pid(&a).await, pid(&b).await, "one server for both");
        assert_eq!(show(&a, "search_path").await, "pg_catalog");
        assert_eq!(show(&a, "statement_timeout").await, "7s");
        assert_eq!(show(&a, "TimeZone").await, "Asia/Tokyo");
        assert_eq!(show(&b, "search_path").await, default_path);
        assert_eq!(show(&b, "statement_timeout").await, "0");
        assert_ne!(show(&b, "TimeZone").await, "Asia/Tokyo");
    }

    // A startup parameter that is a setting, and one in `options` that the
    // client is told about (ParameterStatus) as Postgres would.
    let mut raw = common::WireClient::connect(pooler.port()).await;
    raw.startup(
        (3, 0),
        &[
            ("user", USER),
            ("database", "postgres"),
            ("lock_timeout", "3s"),
            (
                "options",
                r"-c standard_conforming_strings=off -c application_name=two\ words",
            ),
        ],
    )
    .await;
    raw.authenticate(PASSWORD).await.unwrap();
    assert_eq!(raw.parameter("standard_conforming_strings"), Some("off"));
    assert_eq!(raw.parameter("application_name"), Some("two words"));
    assert_eq!(raw.query_value("SHOW lock_timeout").await, "3s");
    assert_eq!(
        raw.query_value("SHOW standard_conforming_strings").await,
        "off"
    );
    assert_eq!(show(&b, "lock_timeout").await, "0");
    assert_eq!(show(&b, "standard_conforming_strings").await, "on");

    for (options, code) in [("-e", "42601"), ("-c%20no_such_setting%3D1", "42704")] {
        let refused = common::try_connect(&format!("{url}?options={options}"))
            .await
            .err()
            .unwrap_or_else(|| panic!("options {options} were accepted"));
        assert_eq!(
            refused.code().map(|c| c.code()),
            Some(code),
            "options {options}: {refused}"
        );
    }
    // The refused logins left nothing behind.
    assert_eq!(show(&b, "search_path").await, default_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_tables_and_advisory_locks_pin_their_client() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = TidepoolProc::start_single(&pg, USER, PASSWORD, 2, PoolMode::Transaction);
    let url = pooler.url(USER, PASSWORD, "postgres");
    let a = common::connect(&url).await;
    let b = common::connect(&url).await;

    a.batch_execute("CREATE TEMP TABLE scratch (n int); INSERT INTO scratch VALUES (1)")
        .await
        .unwrap();
    let pinned = pid(&a).await;
    for i in 0..10 {
        // B works meanwhile, on the other server only.
        assert_ne!(pid(&b).await, pinned, "round {i}: B got A's pinned server");
        let n: i64 = a
            .query_typed_one("SELECT count(*) FROM scratch", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        assert_eq!(pid(&a).await, pinned);
    }
    assert!(
        b.simple_query("SELECT * FROM scratch").await.is_err(),
        "B sees A's temp table"
    );

    let c = common::connect(&url).await;
    c.batch_execute("SELECT pg_advisory_lock(42)")
        .await
        .unwrap();
    let locked_pid = pid(&c).await;
    // The lock stays with C's server across transactions.
    for _ in 0..5 {
        assert_eq!(pid(&c).await, locked_pid);
    }
    drop(c);
    drop(a);
    // After they leave, their servers are reset: no temp table, no lock held.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let d = common::connect(&url).await;
    let e = common::connect(&url).await;
    d.batch_execute("BEGIN").await.unwrap();
    e.batch_execute("BEGIN").await.unwrap();
    assert_ne!(pid(&d).await, pid(&e).await, "D and E hold both servers");
    for client in [&d, &e] {
        let temp: i64 = client
            .query_typed_one(
                "SELECT count(*) FROM pg_class WHERE relname = 'scratch' AND relpersistence = 't'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(temp, 0, "a temp table outlived its client");
    }
    let locks: i64 = d
        .query_typed_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0, "an advisory lock outlived its client");
}
