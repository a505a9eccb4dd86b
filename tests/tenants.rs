//! Tenants as a client meets them, through the real binary in front of a real
//! Postgres: which tenant a client reaches (`user.tenant`, the startup option,
//! the TLS server name), the checks made before any password is asked for
//! (`allow_list`, `enforce_ssl`), client limits, users found through
//! `auth_query`, `client_idle_timeout`, and what a client is told when a reload
//! deletes its tenant.
//!
//! Every refusal is checked by its SQLSTATE and its exact words. TLS clients
//! are `psql` (libpq sends the host name as SNI even when `hostaddr` says where
//! to connect), as the dev-dependencies hold no TLS client for tokio-postgres.

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::wire::{tags, PROTOCOL_3_0};
use common::{
    free_port, BackendMessage, PgServer, TidepoolProc, WireClient, HOST, SIGHUP, SUPERUSER,
    SUPERUSER_PASSWORD,
};
use tokio_postgres::Client;

const USER: &str = "app";
const PASSWORD: &str = "tenant-test-pw-3";
/// Bound on anything a test waits for.
const NO_HANG: Duration = Duration::from_secs(15);

// Authentication request codes (protocol docs, "Message Formats").
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;

const NO_TENANT: &str = "no tenant matches this connection (give the user as user.tenant)";

// ---- configuration --------------------------------------------------------

/// A `[[tenants.users]]` table with `extra` lines.
fn user(db_user: &str, password: &str, extra: &str) -> String {
    format!("\n[[tenants.users]]\ndb_user = \"{db_user}\"\ndb_password = \"{password}\"\n{extra}\n")
}

/// A `[[tenants]]` table for tenant `id` on `database` of `pg`, with `extra`
/// lines, followed by its `users`.
fn tenant(pg: &PgServer, id: &str, database: &str, extra: &str, users: &[String]) -> String {
    format!(
        "\n[[tenants]]\nexternal_id = \"{id}\"\ndb_host = \"{HOST}\"\ndb_port = {}\n\
         db_database = \"{database}\"\n{extra}\n{}",
        pg.port(),
        users.concat()
    )
}

/// Whether Tidepool's listener offers TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    Plain,
    Tls,
}

/// Tidepool started from a configuration file it may be told to reload.
struct Pooler {
    proc: TidepoolProc,
    config: PathBuf,
    server_table: String,
    /// The certificate of a TLS listener (DER), for clients to trust.
    cert: Option<Vec<u8>>,
    // Holds the configuration file and the certificate; after `proc` so the
    // process is gone before its files are.
    _dir: tempfile::TempDir,
}

impl Pooler {
    fn start(listener: Listener, tenants: &[String]) -> Pooler {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server_table = format!("[server]\nlisten = \"{HOST}:{port}\"\n");
        let mut cert_der = None;
        if listener == Listener::Tls {
            let certified = rcgen::generate_simple_self_signed(vec![
                "db.example.test".to_owned(),
                "localhost".to_owned(),
            ])
            .unwrap();
            let cert = dir.path().join("tidepool.crt");
            let key = dir.path().join("tidepool.key");
            std::fs::write(&cert, certified.cert.pem()).unwrap();
            std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
            cert_der = Some(certified.cert.der().to_vec());
            server_table.push_str(&format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                key.display()
            ));
        }
        let config = dir.path().join("tidepool.toml");
        std::fs::write(&config, format!("{server_table}{}", tenants.concat())).unwrap();
        let proc = TidepoolProc::start_on(port, &["--config", config.to_str().unwrap()]);
        Pooler {
            proc,
            config,
            server_table,
            cert: cert_der,
            _dir: dir,
        }
    }

    /// Rewrites the file with `tenants` and reloads it with SIGHUP.
    fn reload(&self, tenants: &[String]) {
        let text = format!("{}{}", self.server_table, tenants.concat());
        std::fs::write(&self.config, text).unwrap();
        self.proc.signal(SIGHUP);
        assert!(
            self.proc.wait_for_log("configuration reloaded", NO_HANG),
            "no reload in the log:\n{}",
            self.proc.log()
        );
    }

    fn port(&self) -> u16 {
        self.proc.port()
    }

    fn url(&self, user: &str, password: &str, database: &str) -> String {
        self.proc.url(user, password, database)
    }

    /// A raw client over TLS, logged in as `user` to `postgres`.
    async fn tls_login(&self, user: &str) -> WireClient {
        let cert = self.cert.as_deref().expect("started with Listener::Tls");
        WireClient::connect_tls(self.port(), cert, "localhost")
            .await
            .logged_in(user, PASSWORD)
            .await
    }
}

// ---- clients --------------------------------------------------------------

/// A login that must finish (either way) within [`NO_HANG`].
async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    tokio::time::timeout(NO_HANG, common::try_connect(url))
        .await
        .unwrap_or_else(|_| panic!("the login did not finish within {NO_HANG:?}"))
}

async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot log in: {e}"))
}

async fn refused(url: &str) -> tokio_postgres::Error {
    match try_connect(url).await {
        Ok(_) => panic!("the login was accepted"),
        Err(e) => e,
    }
}

fn assert_error(error: &tokio_postgres::Error, code: &str, message: &str) {
    let actual_code = error.code().map(|state| state.code());
    let actual_message = error.as_db_error().map(|e| e.message());
    assert_eq!(
        (actual_code, actual_message),
        (Some(code), Some(message)),
        "{error:?}"
    );
}

fn assert_wire_error(error: &BackendMessage, code: &str, message: &str) {
    assert_eq!(error.tag, b'E', "{error:?}");
    assert_eq!(error.field(b'S').as_deref(), Some("FATAL"), "{error:?}");
    assert_eq!(
        (error.sqlstate().as_deref(), error.field(b'M').as_deref()),
        (Some(code), Some(message)),
        "{error:?}"
    );
}

async fn text(client: &Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql:?} failed: {e}"))
        .get(0)
}

/// Sends a StartupMessage with `params` and returns the first answer.
async fn first_answer(port: u16, params: &[(&str, &str)]) -> (WireClient, BackendMessage) {
    let mut wire = WireClient::connect(port).await;
    wire.startup(PROTOCOL_3_0, params).await;
    let answer = wire.read().await;
    (wire, answer)
}

/// Logs in with a raw client: `params` in the StartupMessage, then every
/// authentication request answered with `password`.
async fn wire_login(
    port: u16,
    params: &[(&str, &str)],
    password: &str,
) -> (WireClient, Result<(), BackendMessage>) {
    let mut wire = WireClient::connect(port).await;
    wire.startup(PROTOCOL_3_0, params).await;
    let outcome = wire.authenticate(password).await;
    (wire, outcome)
}

/// Logs in until a client gets in, as long as each refusal is `code`; panics
/// on another error or after [`NO_HANG`].
async fn connect_once_admitted(url: &str, code: &str) -> Client {
    let deadline = Instant::now() + NO_HANG;
    loop {
        match try_connect(url).await {
            Ok(client) => return client,
            Err(e) if e.code().map(|s| s.code()) == Some(code) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("still refused after {NO_HANG:?}: {e}"),
        }
    }
}

// ---- tests ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_their_tenant_by_user_name_or_startup_option() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    pg.create_user("real_role", "alias-pw").await;
    pg.create_database("db1", USER).await;
    pg.create_database("db2", USER).await;
    let pooler = Pooler::start(
        Listener::Plain,
        &[
            tenant(
                &pg,
                "t1",
                "db1",
                "",
                &[
                    user(USER, PASSWORD, "pool_size = 2"),
                    user("real_role", "alias-pw", "db_user_alias = \"nick\""),
                ],
            ),
            tenant(
                &pg,
                "t2",
                "db2",
                "",
                &[user(USER, PASSWORD, "pool_size = 2")],
            ),
        ],
    );

    let t1 = connect(&pooler.url("app.t1", PASSWORD, "db1")).await;
    assert_eq!(text(&t1, "SELECT current_database()::text").await, "db1");
    let t2 = connect(&pooler.url("app.t2", PASSWORD, "db2")).await;
    assert_eq!(text(&t2, "SELECT current_database()::text").await, "db2");
    assert_eq!(text(&t2, "SELECT current_user::text").await, USER);

    // The tenant as a startup option, with a plain user name.
    let by_option = format!(
        "{}?options=-c%20tidepool.tenant%3Dt2",
        pooler.url(USER, PASSWORD, "db2")
    );
    let client = connect(&by_option).await;
    assert_eq!(
        text(&client, "SELECT current_database()::text").await,
        "db2"
    );

    // An alias logs in as the role it stands for; the role's own name is not
    // a user of the tenant.
    let nick = connect(&pooler.url("nick.t1", "alias-pw", "db1")).await;
    assert_eq!(text(&nick, "SELECT current_user::text").await, "real_role");
    let error = refused(&pooler.url("real_role.t1", "alias-pw", "db1")).await;
    assert_error(
        &error,
        "28P01",
        "password authentication failed for user \"real_role\"",
    );

    // An unknown tenant is told so only after a password exchange, like a
    // wrong password.
    let (wire, outcome) = wire_login(
        pooler.port(),
        &[("user", "app.nowhere"), ("database", "db1")],
        PASSWORD,
    )
    .await;
    let error = outcome.expect_err("a client of an unknown tenant logged in");
    assert_wire_error(&error, "28000", NO_TENANT);
    let asked = &wire.login_messages;
    assert_eq!(tags(asked), "RRE", "{asked:?}");
    assert_eq!(asked[0].auth_code(), Some(AUTH_SASL), "{asked:?}");
    let error = refused(&pooler.url("app.nowhere", PASSWORD, "db1")).await;
    assert_error(&error, "28000", NO_TENANT);
    // With two tenants, a plain user name chooses neither.
    let error = refused(&pooler.url(USER, PASSWORD, "postgres")).await;
    assert_error(&error, "28000", NO_TENANT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_name_chooses_the_tenant() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    pg.create_database("db1", USER).await;
    pg.create_database("db2", USER).await;
    let pooler = Pooler::start(
        Listener::Tls,
        &[
            tenant(
                &pg,
                "t1",
                "db1",
                "sni_hostname = \"db.example.test\"",
                &[user(USER, PASSWORD, "")],
            ),
            tenant(&pg, "t2", "db2", "", &[user(USER, PASSWORD, "")]),
        ],
    );
    // `host` is what libpq sends as the server name; `hostaddr` is where it
    // connects.
    let port = pooler.port();
    let by_name = |host: &str, database: &str| {
        format!(
            "host={host} hostaddr={HOST} port={port} user={USER} dbname={database} \
             sslmode=require sslsni=1"
        )
    };
    let database = "SELECT current_database()";

    assert_eq!(
        common::run_psql(&by_name("db.example.test", "db1"), PASSWORD, database).as_deref(),
        Ok("db1")
    );
    assert_eq!(
        common::run_psql(&by_name("DB.Example.Test", "db1"), PASSWORD, database).as_deref(),
        Ok("db1"),
        "the server name is compared without case"
    );
    // Without an exact sni_hostname, the name's first label is the tenant.
    assert_eq!(
        common::run_psql(&by_name("t2.anything.test", "db2"), PASSWORD, database).as_deref(),
        Ok("db2")
    );
    let unknown = common::run_psql(&by_name("nobody.example.test", "db1"), PASSWORD, database)
        .expect_err("a server name that names no tenant was routed");
    assert!(unknown.contains(NO_TENANT), "{unknown}");
    // The same user name without TLS names no tenant.
    let plain = format!("host={HOST} port={port} user={USER} dbname=db1 sslmode=disable");
    let unrouted = common::run_psql(&plain, PASSWORD, database)
        .expect_err("a plain user name was routed without SNI");
    assert!(unrouted.contains(NO_TENANT), "{unrouted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_refuses_other_addresses_before_authentication() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let users = [user(USER, PASSWORD, "")];
    let pooler = Pooler::start(
        Listener::Plain,
        &[
            tenant(
                &pg,
                "far",
                "postgres",
                "allow_list = [\"10.0.0.0/8\"]",
                &users,
            ),
            tenant(
                &pg,
                "near",
                "postgres",
                "allow_list = [\"127.0.0.0/8\"]",
                &users,
            ),
            tenant(
                &pg,
                "either",
                "postgres",
                "allow_list = [\"10.0.0.0/8\", \"::1/128\", \"127.0.0.1/32\"]",
                &users,
            ),
        ],
    );
    let not_allowed = "connections from 127.0.0.1 are not allowed for tenant \"far\"";

    let (mut wire, answer) = first_answer(
        pooler.port(),
        &[("user", "app.far"), ("database", "postgres")],
    )
    .await;
    assert_wire_error(&answer, "28000", not_allowed);
    wire.expect_closed(NO_HANG).await;
    let error = refused(&pooler.url("app.far", PASSWORD, "postgres")).await;
    assert_error(&error, "28000", not_allowed);

    for id in ["near", "either"] {
        let client = connect(&pooler.url(&format!("app.{id}"), PASSWORD, "postgres")).await;
        assert_eq!(text(&client, "SELECT current_user::text").await, USER);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_ssl_refuses_plain_connections_before_authentication() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let users = [user(USER, PASSWORD, "")];
    let pooler = Pooler::start(
        Listener::Tls,
        &[
            tenant(&pg, "strict", "postgres", "enforce_ssl = true", &users),
            tenant(&pg, "lax", "postgres", "", &users),
        ],
    );
    let requires_ssl = "tenant \"strict\" requires an SSL connection (sslmode=require)";

    let (mut wire, answer) = first_answer(
        pooler.port(),
        &[("user", "app.strict"), ("database", "postgres")],
    )
    .await;
    assert_wire_error(&answer, "28000", requires_ssl);
    wire.expect_closed(NO_HANG).await;
    let error = refused(&pooler.url("app.strict", PASSWORD, "postgres")).await;
    assert_error(&error, "28000", requires_ssl);

    let conninfo = |sslmode: &str| {
        format!(
            "host={HOST} port={} user=app.strict dbname=postgres sslmode={sslmode}",
            pooler.port()
        )
    };
    assert_eq!(
        common::run_psql(&conninfo("require"), PASSWORD, "SELECT 1").as_deref(),
        Ok("1")
    );
    let plain = common::run_psql(&conninfo("disable"), PASSWORD, "SELECT 1")
        .expect_err("a plain connection logged in to an enforce_ssl tenant");
    assert!(plain.contains(requires_ssl), "{plain}");

    // Other tenants still take plain connections.
    let lax = connect(&pooler.url("app.lax", PASSWORD, "postgres")).await;
    assert_eq!(text(&lax, "SELECT current_user::text").await, USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_limit_users_and_tenants() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    pg.create_user("second", PASSWORD).await;
    let pooler = Pooler::start(
        Listener::Plain,
        &[
            tenant(
                &pg,
                "t1",
                "postgres",
                "",
                &[user(USER, PASSWORD, "max_clients = 2")],
            ),
            tenant(
                &pg,
                "t2",
                "postgres",
                "default_max_clients = 2",
                &[user(USER, PASSWORD, ""), user("second", PASSWORD, "")],
            ),
        ],
    );
    let t1 = pooler.url("app.t1", PASSWORD, "postgres");

    let first = connect(&t1).await;
    let second = connect(&t1).await;
    for client in [&first, &second] {
        assert_eq!(text(client, "SELECT current_user::text").await, USER);
    }
    let error = refused(&t1).await;
    assert_error(
        &error,
        "53300",
        "too many client connections for user \"app\" of tenant \"t1\"",
    );

    // Once a client leaves, its place is free again.
    drop(first);
    let third = connect_once_admitted(&t1, "53300").await;
    assert_eq!(text(&third, "SELECT 1::text").await, "1");
    assert_eq!(text(&second, "SELECT 2::text").await, "2");
    // Also when a client goes away without a Terminate message.
    drop(second);
    let params = [("user", "app.t1"), ("database", "postgres")];
    let mut wire = None;
    let deadline = Instant::now() + NO_HANG;
    while wire.is_none() {
        match wire_login(pooler.port(), &params, PASSWORD).await {
            (client, Ok(())) => wire = Some(client),
            (_, Err(e)) if e.sqlstate().as_deref() == Some("53300") => {
                assert!(Instant::now() < deadline, "still refused: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (_, Err(e)) => panic!("app.t1 refused: {e:?}"),
        }
    }
    let error = refused(&t1).await;
    assert_error(
        &error,
        "53300",
        "too many client connections for user \"app\" of tenant \"t1\"",
    );
    wire.unwrap().drop_without_terminate();
    let fourth = connect_once_admitted(&t1, "53300").await;
    assert_eq!(text(&fourth, "SELECT 1::text").await, "1");

    // The tenant's limit counts every user.
    let a = connect(&pooler.url("app.t2", PASSWORD, "postgres")).await;
    let b = connect(&pooler.url("second.t2", PASSWORD, "postgres")).await;
    let tenant_full = "too many client connections for tenant \"t2\"";
    for name in ["app.t2", "second.t2"] {
        let error = refused(&pooler.url(name, PASSWORD, "postgres")).await;
        assert_error(&error, "53300", tenant_full);
    }
    assert_eq!(text(&a, "SELECT 1::text").await, "1");
    assert_eq!(text(&b, "SELECT 1::text").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_logs_in_roles_the_file_does_not_list() {
    const ALICE_PW: &str = "alice-first-pw";
    const ALICE_NEW_PW: &str = "alice-second-pw";
    const BOB_PW: &str = "bob-md5-pw";
    let pg = PgServer::start();
    pg.create_user("alice", ALICE_PW).await;
    pg.create_md5_user("bob", BOB_PW).await;
    let pooler = Pooler::start(
        Listener::Plain,
        &[tenant(
            &pg,
            "t1",
            "postgres",
            "require_user = false",
            &[user(
                SUPERUSER,
                SUPERUSER_PASSWORD,
                "is_manager = true\npool_size = 1",
            )],
        )],
    );
    let port = pooler.port();
    let alice = |password: &str| pooler.url("alice.t1", password, "postgres");

    // alice's verifier is SCRAM: the client is asked for SCRAM, and the
    // server connection logs in by pass-through (Tidepool never had the
    // password).
    let (_, answer) = first_answer(port, &[("user", "alice.t1"), ("database", "postgres")]).await;
    assert_eq!(answer.auth_code(), Some(AUTH_SASL), "{answer:?}");
    let client = connect(&alice(ALICE_PW)).await;
    assert_eq!(text(&client, "SELECT current_user::text").await, "alice");
    drop(client);
    let error = refused(&alice("not-alice's-pw")).await;
    assert_error(
        &error,
        "28P01",
        "password authentication failed for user \"alice\"",
    );

    // bob's verifier is md5: the client is asked for md5. md5 salts the hash
    // with the role name, so bob names the tenant in the startup options.
    let bob_params = [
        ("user", "bob"),
        ("database", "postgres"),
        ("options", "-c tidepool.tenant=t1"),
    ];
    let (mut wire, outcome) = wire_login(port, &bob_params, BOB_PW).await;
    outcome.unwrap_or_else(|e| panic!("bob's md5 login failed: {e:?}"));
    let first = &wire.login_messages[0];
    assert_eq!(first.auth_code(), Some(AUTH_MD5), "{first:?}");
    assert_eq!(wire.query_value("SELECT current_user").await, "bob");
    let bob_url = format!(
        "{}?options=-c%20tidepool.tenant%3Dt1",
        pooler.url("bob", "not-bob's-pw", "postgres")
    );
    let error = refused(&bob_url).await;
    assert_error(
        &error,
        "28P01",
        "password authentication failed for user \"bob\"",
    );

    // A role Postgres does not have fails like a wrong password.
    let (_, answer) = first_answer(port, &[("user", "ghost.t1"), ("database", "postgres")]).await;
    assert_eq!(answer.auth_code(), Some(AUTH_SASL), "{answer:?}");
    let error = refused(&pooler.url("ghost.t1", PASSWORD, "postgres")).await;
    assert_error(
        &error,
        "28P01",
        "password authentication failed for user \"ghost\"",
    );

    // A password changed in Postgres: the cached verifier may refuse the new
    // password once; the next login reads it again.
    pg.execute(&format!("ALTER ROLE alice PASSWORD '{ALICE_NEW_PW}'"))
        .await;
    let client = match try_connect(&alice(ALICE_NEW_PW)).await {
        Ok(client) => client,
        Err(error) => {
            assert_error(
                &error,
                "28P01",
                "password authentication failed for user \"alice\"",
            );
            connect(&alice(ALICE_NEW_PW)).await
        }
    };
    assert_eq!(text(&client, "SELECT current_user::text").await, "alice");
    let error = refused(&alice(ALICE_PW)).await;
    assert_error(
        &error,
        "28P01",
        "password authentication failed for user \"alice\"",
    );
    // A new server connection for alice logs in with the new password.
    client.batch_execute("BEGIN").await.unwrap();
    let other = connect(&alice(ALICE_NEW_PW)).await;
    assert_eq!(text(&other, "SELECT current_user::text").await, "alice");
    client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_ends_idle_clients() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = Pooler::start(
        Listener::Plain,
        &[tenant(
            &pg,
            "t1",
            "postgres",
            "client_idle_timeout = 1",
            &[user(USER, PASSWORD, "")],
        )],
    );
    let (client, connection) =
        common::connect_watched(&pooler.url("app.t1", PASSWORD, "postgres"), NO_HANG).await;

    // A client that keeps working for longer than the timeout stays.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        client.simple_query("SELECT 1").await.unwrap();
    }
    let idle_since = Instant::now();
    let error = common::ended_with(connection, Duration::from_secs(5)).await;
    let idle = idle_since.elapsed();
    assert_error(
        &error,
        "57P05",
        "terminating connection due to idle-session timeout",
    );
    assert!(idle >= Duration::from_millis(500), "ended after {idle:?}");
    assert!(client.simple_query("SELECT 1").await.is_err());
}

/// A TLS client waits between transactions as a plain one does (not inside a
/// read with a relay's buffers): its idle timeout ends it, and a notification
/// reaches it while it sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_clients_time_out_and_get_notifications() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let users = [user(USER, PASSWORD, "")];
    let pooler = Pooler::start(
        Listener::Tls,
        &[
            tenant(&pg, "t1", "postgres", "client_idle_timeout = 1", &users),
            tenant(&pg, "t2", "postgres", "", &users),
        ],
    );
    let mut client = pooler.tls_login("app.t1").await;
    // Queries in several TLS records, with pauses shorter than the timeout.
    let long = format!("SELECT length('{}')", "x".repeat(40_000));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(client.query_value(&long).await, "40000");
    }
    let idle_since = Instant::now();
    let received = client.expect_closed(Duration::from_secs(5)).await;
    match received.as_slice() {
        [fatal] => assert_wire_error(
            fatal,
            "57P05",
            "terminating connection due to idle-session timeout",
        ),
        other => panic!("expected one FATAL, got {other:?}"),
    }
    assert!(idle_since.elapsed() >= Duration::from_millis(500));

    let mut listener = pooler.tls_login("app.t2").await;
    listener.query_ok("LISTEN tls_channel").await;
    let notifier = connect(&pooler.url("app.t2", PASSWORD, "postgres")).await;
    notifier
        .batch_execute("NOTIFY tls_channel, 'over tls'")
        .await
        .unwrap();
    match listener.next_within(NO_HANG).await {
        common::wire::Next::Message(m) => {
            assert_eq!(m.tag, b'A', "{m:?}");
            assert!(m.body.ends_with(b"tls_channel\0over tls\0"), "{m:?}");
        }
        other => panic!("no notification while idle: {other:?}"),
    }
    assert_eq!(
        listener.query_value("SELECT 'still here'").await,
        "still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_ends_idle_session_mode_clients() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = Pooler::start(
        Listener::Plain,
        &[tenant(
            &pg,
            "t1",
            "postgres",
            "client_idle_timeout = 1",
            &[user(USER, PASSWORD, "mode_type = \"session\"")],
        )],
    );
    let (client, connection) =
        common::connect_watched(&pooler.url("app.t1", PASSWORD, "postgres"), NO_HANG).await;
    client.simple_query("SELECT 1").await.unwrap();
    let error = common::ended_with(connection, Duration::from_secs(5)).await;
    assert_error(
        &error,
        "57P05",
        "terminating connection due to idle-session timeout",
    );
}

/// Tenants `ids` on `pg`, each with the transaction-mode user `USER`; t2 also
/// has the session-mode user `sess`.
fn reload_tenants(pg: &PgServer, ids: &[&str]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            let mut users = vec![user(USER, PASSWORD, "")];
            if *id == "t2" {
                users.push(user("sess", PASSWORD, "mode_type = \"session\""));
            }
            tenant(pg, id, "postgres", "", &users)
        })
        .collect()
}

const T2_DELETED: &str = "terminating connection because tenant \"t2\" was deleted";

/// Reads what a client of a deleted tenant receives until it is closed: one
/// FATAL 57P01 saying why.
async fn assert_told_deleted(client: &mut WireClient) {
    let received = client.expect_closed(NO_HANG).await;
    match received.as_slice() {
        [fatal] => assert_wire_error(fatal, "57P01", T2_DELETED),
        other => panic!("expected one FATAL 57P01, received {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_deletes_a_tenant_ends_its_idle_clients() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = Pooler::start(Listener::Plain, &reload_tenants(&pg, &["t1", "t2", "t3"]));
    let (doomed, doomed_connection) =
        common::connect_watched(&pooler.url("app.t2", PASSWORD, "postgres"), NO_HANG).await;
    doomed.simple_query("SELECT 1").await.unwrap();
    let (survivor, survivor_connection) =
        common::connect_watched(&pooler.url("app.t1", PASSWORD, "postgres"), NO_HANG).await;
    survivor.simple_query("SELECT 1").await.unwrap();

    pooler.reload(&reload_tenants(&pg, &["t1", "t3"]));

    let error = common::ended_with(doomed_connection, NO_HANG).await;
    assert_error(&error, "57P01", T2_DELETED);
    assert_eq!(text(&survivor, "SELECT current_user::text").await, USER);
    assert!(!survivor_connection.is_finished());
    let error = refused(&pooler.url("app.t2", PASSWORD, "postgres")).await;
    assert_error(&error, "28000", NO_TENANT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_deletes_a_tenant_tells_its_session_mode_clients() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    pg.create_user("sess", PASSWORD).await;
    let pooler = Pooler::start(Listener::Plain, &reload_tenants(&pg, &["t1", "t2", "t3"]));
    let params = [("user", "sess.t2"), ("database", "postgres")];
    let (mut session, outcome) = wire_login(pooler.port(), &params, PASSWORD).await;
    outcome.unwrap_or_else(|e| panic!("sess.t2 cannot log in: {e:?}"));
    assert_eq!(session.query_value("SELECT current_user").await, "sess");

    pooler.reload(&reload_tenants(&pg, &["t1", "t3"]));
    assert_told_deleted(&mut session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_deletes_a_tenant_tells_its_clients_in_a_transaction() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = Pooler::start(Listener::Plain, &reload_tenants(&pg, &["t1", "t2", "t3"]));
    let params = [("user", "app.t2"), ("database", "postgres")];
    let (mut busy, outcome) = wire_login(pooler.port(), &params, PASSWORD).await;
    outcome.unwrap_or_else(|e| panic!("app.t2 cannot log in: {e:?}"));
    let (_, status) = busy.query_ok("BEGIN").await;
    assert_eq!(status, b'T');

    pooler.reload(&reload_tenants(&pg, &["t1", "t3"]));
    assert_told_deleted(&mut busy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_logins_work_with_user_dot_tenant_names() {
    let pg = PgServer::start();
    pg.create_md5_user(USER, PASSWORD).await;
    let md5 = "auth_method = \"md5\"";
    let users = [user(USER, PASSWORD, "")];
    let pooler = Pooler::start(
        Listener::Plain,
        &[
            tenant(&pg, "t1", "postgres", md5, &users),
            tenant(&pg, "t2", "postgres", md5, &users),
        ],
    );
    // The startup option keeps the user name the hash is salted with.
    let by_option = format!(
        "{}?options=-c%20tidepool.tenant%3Dt1",
        pooler.url(USER, PASSWORD, "postgres")
    );
    let client = connect(&by_option).await;
    assert_eq!(text(&client, "SELECT current_user::text").await, USER);

    let params = [("user", "app.t1"), ("database", "postgres")];
    let (mut wire, outcome) = wire_login(pooler.port(), &params, PASSWORD).await;
    let first = &wire.login_messages[0];
    assert_eq!(first.auth_code(), Some(AUTH_MD5), "{first:?}");
    outcome.unwrap_or_else(|e| panic!("md5 login as app.t1 failed: {e:?}"));
    assert_eq!(wire.query_value("SELECT current_user").await, USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_parameter_status_answers_logins_on_a_cold_pool() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = Pooler::start(
        Listener::Plain,
        &[tenant(
            &pg,
            "t1",
            "postgres",
            "default_parameter_status = { server_version = \"15.0-standin\" }",
            &[user(USER, PASSWORD, "")],
        )],
    );
    let conninfo = pooler.url("app.t1", PASSWORD, "postgres");
    // psql's SERVER_VERSION_NAME is the ParameterStatus of the login; \echo
    // sends no query, so the pool has no reason to connect.
    let reported = common::run_psql(&conninfo, PASSWORD, "\\echo :SERVER_VERSION_NAME").unwrap();
    assert_eq!(reported, "15.0-standin");
    assert_eq!(
        pg.count_backends(USER).await,
        0,
        "a login on a cold pool opened a server connection"
    );
    // A query needs a server; after it, logins report the real server's values.
    assert_eq!(
        common::run_psql(&conninfo, PASSWORD, "SELECT 1").unwrap(),
        "1"
    );
    assert!(pg.count_backends(USER).await >= 1);
    let reported = common::run_psql(&conninfo, PASSWORD, "\\echo :SERVER_VERSION_NAME").unwrap();
    assert!(reported.starts_with("15."), "{reported}");
    assert_ne!(reported, "15.0-standin");
}
