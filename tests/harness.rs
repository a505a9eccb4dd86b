//! Self-test of the integration-test harness: throwaway Postgres servers
//! start, authenticate as configured, count backends and clean up. Does not
//! need the `tidepool` binary.

mod common;

use std::time::Duration;

use common::{free_port, listen_port_from_args, try_connect, PgServer};

#[tokio::test]
async fn scram_user_logs_in_and_is_counted() {
    let pg = PgServer::start();
    pg.create_user("alice", "alice's secret").await;

    let stored: String = pg
        .client()
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stored.starts_with("SCRAM-SHA-256$"),
        "stored as {stored:.14}"
    );

    let alice = common::connect(&pg.url("alice", "alice's secret", "postgres")).await;
    let user: String = alice
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "alice");
    assert_eq!(pg.count_backends("alice").await, 1);

    drop(alice);
    let mut remaining = 1;
    for _ in 0..100 {
        remaining = pg.count_backends("alice").await;
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(remaining, 0, "alice's backend did not go away");
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let pg = PgServer::start();
    pg.create_user("bob", "right").await;
    let error = try_connect(&pg.url("bob", "wrong", "postgres"))
        .await
        .err()
        .unwrap();
    let code = error.code().map(|state| state.code().to_owned());
    assert_eq!(code.as_deref(), Some("28P01"), "{error}");
}

#[tokio::test]
async fn md5_user_logs_in_with_md5() {
    let pg = PgServer::start();
    pg.create_md5_user("carol", "carol-pw").await;
    let stored: String = pg
        .client()
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'carol'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("md5"), "stored as {stored:.3}");
    let carol = common::connect(&pg.url("carol", "carol-pw", "postgres")).await;
    carol.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn created_database_is_usable() {
    let pg = PgServer::start();
    pg.create_user("dave", "dave-pw").await;
    pg.create_database("daves_db", "dave").await;
    let dave = common::connect(&pg.url("dave", "dave-pw", "daves_db")).await;
    dave.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
}

#[test]
fn psql_runs_as_superuser() {
    let pg = PgServer::start();
    assert_eq!(pg.psql(&["-c", "SELECT current_user"]).trim(), "postgres");
    let settings = pg.psql(&["-c", "SHOW max_connections", "-c", "SHOW listen_addresses"]);
    assert_eq!(settings.lines().collect::<Vec<_>>(), ["300", "127.0.0.1"]);
    assert!(pg.log_path().is_file());
}

#[tokio::test]
async fn drop_stops_the_server_and_removes_its_files() {
    let pg = PgServer::start();
    let url = pg.superuser_url();
    let data_dir = pg.data_dir();
    assert!(data_dir.join("PG_VERSION").is_file());
    drop(pg);
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    assert!(
        try_connect(&url).await.is_err(),
        "server still accepts connections"
    );
}

#[test]
fn servers_run_side_by_side() {
    let first = PgServer::start();
    let second = PgServer::start();
    assert_ne!(first.port(), second.port());
    assert_eq!(
        first.superuser_url(),
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/postgres",
            first.port()
        )
    );
}

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}

#[test]
fn listen_port_is_parsed_from_both_spellings() {
    assert_eq!(
        listen_port_from_args(&["--listen", "127.0.0.1:6432"]),
        Some(6432)
    );
    assert_eq!(
        listen_port_from_args(&["-v", "--listen=127.0.0.1:7000"]),
        Some(7000)
    );
    assert_eq!(listen_port_from_args(&["--config", "x.toml"]), None);
}
