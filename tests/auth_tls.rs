//! Client authentication (SCRAM-SHA-256, md5, cleartext over TLS, SCRAM
//! verifier pass-through) and TLS on both sides of the pooler, against a real
//! Postgres. Certificates are made with rcgen for each test.

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, PgServer, TidepoolProc, HOST};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

const USER: &str = "app";
const PASSWORD: &str = "auth-test-pw-7";

// Authentication request codes (protocol docs, "Message Formats").
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;

fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.code().map(|state| state.code().to_owned())
}

fn db_message(error: &tokio_postgres::Error) -> Option<String> {
    error.as_db_error().map(|e| e.message().to_owned())
}

/// Tidepool in single-upstream mode in front of `pg` as `USER`, with `extra`
/// flags.
fn start_single_with(pg: &PgServer, extra: &[&str]) -> TidepoolProc {
    let listen = format!("{HOST}:{}", free_port());
    let upstream = pg.url(USER, PASSWORD, "postgres");
    let mut args = vec![
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--pool-size",
        "2",
    ];
    args.extend_from_slice(extra);
    TidepoolProc::start(&args)
}

/// `start_single_with` plus a throwaway certificate (`--tls-cert`, `--tls-key`)
/// and `extra`; the directory holding the certificate comes back with it.
fn start_tls_with(pg: &PgServer, extra: &[&str]) -> (TidepoolProc, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_self_signed(certs.path());
    let mut args = vec!["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    args.extend_from_slice(extra);
    (start_single_with(pg, &args), certs)
}

/// Sends a StartupMessage for `user` and returns the code of the first
/// Authentication request, or `None` if the answer is not one (an
/// ErrorResponse, say).
fn first_auth_request(port: u16, user: &str) -> Option<i32> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608_i32.to_be_bytes()); // protocol 3.0
    for (key, value) in [("user", user), ("database", "postgres")] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = (i32::try_from(body.len()).unwrap() + 4)
        .to_be_bytes()
        .to_vec();
    packet.extend_from_slice(&body);

    let mut tcp = TcpStream::connect((HOST, port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&packet).unwrap();
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).unwrap();
    (head[0] == b'R').then(|| i32::from_be_bytes([head[5], head[6], head[7], head[8]]))
}

/// Runs `psql -c sql` against Tidepool; stdout on success, stderr on failure.
/// Blocking, which is fine here: nothing else in the test needs the runtime
/// meanwhile.
fn psql(port: u16, sslmode: &str, password: &str, sql: &str) -> Result<String, String> {
    let conninfo = format!("host={HOST} port={port} user={USER} dbname=postgres sslmode={sslmode}");
    common::run_psql(&conninfo, password, sql)
}

/// A certificate authority made for one test.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A server certificate for `names` (IP addresses become IP SANs); returns
    /// the certificate and key as PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "tidepool test server");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A self-signed certificate and key for Tidepool's client side, written to
/// `dir`; returns their paths.
fn write_self_signed(dir: &Path) -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), HOST.to_owned()]).unwrap();
    let cert = dir.join("tidepool.crt");
    let key = dir.join("tidepool.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn scram_login_accepts_the_password_and_nothing_else() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = start_single_with(&pg, &["--auth-method", "scram-sha-256"]);
    assert_eq!(first_auth_request(pooler.port(), USER), Some(AUTH_SASL));

    let client = common::connect(&pooler.url(USER, PASSWORD, "postgres")).await;
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, USER);

    let wrong = common::try_connect(&pooler.url(USER, "not-the-password", "postgres"))
        .await
        .expect_err("a wrong password was accepted");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "{wrong}");
    assert_eq!(
        db_message(&wrong).as_deref(),
        Some("password authentication failed for user \"app\"")
    );

    let unknown = common::try_connect(&pooler.url("ghost", PASSWORD, "postgres"))
        .await
        .expect_err("an unknown user was accepted");
    assert_eq!(sqlstate(&unknown).as_deref(), Some("28P01"), "{unknown}");
    assert_eq!(
        db_message(&unknown).as_deref(),
        Some("password authentication failed for user \"ghost\"")
    );
    assert_eq!(first_auth_request(pooler.port(), "ghost"), Some(AUTH_SASL));
}

#[tokio::test]
async fn md5_login_accepts_the_password_and_nothing_else() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = start_single_with(&pg, &["--auth-method", "md5"]);
    assert_eq!(first_auth_request(pooler.port(), USER), Some(AUTH_MD5));

    let client = common::connect(&pooler.url(USER, PASSWORD, "postgres")).await;
    let two: i32 = client.query_one("SELECT 1 + 1", &[]).await.unwrap().get(0);
    assert_eq!(two, 2);

    let wrong = common::try_connect(&pooler.url(USER, "not-the-password", "postgres"))
        .await
        .expect_err("a wrong md5 password was accepted");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "{wrong}");
    assert_eq!(
        db_message(&wrong).as_deref(),
        Some("password authentication failed for user \"app\"")
    );

    let unknown = common::try_connect(&pooler.url("ghost", PASSWORD, "postgres"))
        .await
        .expect_err("an unknown user was accepted");
    assert_eq!(sqlstate(&unknown).as_deref(), Some("28P01"), "{unknown}");
    assert_eq!(
        db_message(&unknown).as_deref(),
        Some("password authentication failed for user \"ghost\"")
    );
    // The exchange does not tell unknown users apart either.
    assert_eq!(first_auth_request(pooler.port(), "ghost"), Some(AUTH_MD5));
}

#[tokio::test]
async fn cleartext_password_is_refused_without_tls() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let pooler = start_single_with(&pg, &["--auth-method", "password"]);

    // Refused before any password is asked for.
    assert_eq!(first_auth_request(pooler.port(), USER), None);
    let error = common::try_connect(&pooler.url(USER, PASSWORD, "postgres"))
        .await
        .expect_err("cleartext login without TLS was accepted");
    assert_eq!(sqlstate(&error).as_deref(), Some("28000"), "{error}");

    // psql asks for TLS first by default; with none offered it falls back to
    // plain text and is refused the same way.
    let refused = psql(pooler.port(), "prefer", PASSWORD, "SELECT 1")
        .expect_err("psql logged in with a cleartext password without TLS");
    assert!(refused.contains("requires TLS"), "{refused}");
}

#[tokio::test]
async fn cleartext_password_works_over_tls() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let (pooler, _certs) = start_tls_with(&pg, &["--auth-method", "password"]);

    let port = pooler.port();
    assert_eq!(psql(port, "require", PASSWORD, "SELECT 1"), Ok("1".into()));
    let conninfo = psql(port, "require", PASSWORD, "\\conninfo").unwrap();
    assert!(conninfo.contains("SSL connection"), "{conninfo}");

    let wrong = psql(port, "require", "not-the-password", "SELECT 1")
        .expect_err("a wrong cleartext password was accepted");
    assert!(
        wrong.contains("password authentication failed for user \"app\""),
        "{wrong}"
    );
    let plain = psql(port, "disable", PASSWORD, "SELECT 1")
        .expect_err("cleartext login without TLS was accepted");
    assert!(plain.contains("requires TLS"), "{plain}");
}

#[tokio::test]
async fn scram_works_with_and_without_tls_when_tls_is_offered() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let (pooler, _certs) = start_tls_with(&pg, &[]);
    let port = pooler.port();

    assert_eq!(psql(port, "disable", PASSWORD, "SELECT 1"), Ok("1".into()));
    let plain = psql(port, "disable", PASSWORD, "\\conninfo").unwrap();
    assert!(!plain.contains("SSL connection"), "{plain}");

    assert_eq!(psql(port, "require", PASSWORD, "SELECT 2"), Ok("2".into()));
    let tls = psql(port, "require", PASSWORD, "\\conninfo").unwrap();
    assert!(tls.contains("SSL connection"), "{tls}");

    let wrong = psql(port, "require", "not-the-password", "SELECT 1")
        .expect_err("a wrong password was accepted over TLS");
    assert!(
        wrong.contains("password authentication failed for user \"app\""),
        "{wrong}"
    );
}

#[tokio::test]
async fn require_tls_refuses_plain_clients() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let (pooler, _certs) = start_tls_with(&pg, &["--require-tls"]);
    let port = pooler.port();

    let tls = psql(port, "require", PASSWORD, "\\conninfo").unwrap();
    assert!(tls.contains("SSL connection"), "{tls}");
    let plain = psql(port, "disable", PASSWORD, "SELECT 1")
        .expect_err("a plain client was accepted with --require-tls");
    assert!(
        plain.contains("requires an SSL connection (sslmode=require)"),
        "{plain}"
    );
    // libpq's default, prefer, takes TLS when it is offered.
    assert_eq!(psql(port, "prefer", PASSWORD, "SELECT 3"), Ok("3".into()));
}

#[tokio::test]
async fn scram_verifier_logs_in_by_pass_through() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let verifier: String = pg
        .client()
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&USER],
        )
        .await
        .unwrap()
        .get(0);
    assert!(verifier.starts_with("SCRAM-SHA-256$"));

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("tidepool.toml");
    std::fs::write(
        &config,
        format!(
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
db_password = "{verifier}"
pool_size = 2
"#,
            pg_port = pg.port()
        ),
    )
    .unwrap();
    let pooler = TidepoolProc::start_on(port, &["--config", config.to_str().unwrap()]);
    assert!(
        !pooler.log().contains(&verifier),
        "the verifier appears in the log"
    );

    let wrong = common::try_connect(&pooler.url(USER, "not-the-password", "postgres"))
        .await
        .expect_err("a wrong password was accepted against a verifier");
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "{wrong}");

    // The first login opens the first server connection, with the keys from
    // this client's proof: Tidepool never had the password.
    let client = common::connect(&pooler.url(USER, PASSWORD, "postgres")).await;
    let row = client
        .query_one("SELECT current_user::text, pg_backend_pid()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), USER);
    let pid: i32 = row.get(1);
    assert!(pg.count_backends(USER).await >= 1);

    // A second client is served too (by a new or the same server connection).
    let second = common::connect(&pooler.url(USER, PASSWORD, "postgres")).await;
    second.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let pid_2: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let pid_1: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(pid_1, pid_2, "two open transactions share a server");
    assert!(pid_1 == pid || pid_2 == pid);
    second.batch_execute("COMMIT").await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
}

/// Turns on TLS in `pg` with the given certificate and key, and waits until a
/// TLS connection straight to it works.
async fn enable_server_tls(pg: &PgServer, cert_pem: &str, key_pem: &str) {
    let data = pg.data_dir();
    let owner = std::fs::metadata(&data).unwrap();
    for (name, pem, mode) in [
        ("server.crt", cert_pem, 0o644),
        ("server.key", key_pem, 0o600),
    ] {
        let path = data.join(name);
        std::fs::write(&path, pem).unwrap();
        chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // ALTER SYSTEM refuses to run in the implicit transaction of a batch.
    pg.execute("ALTER SYSTEM SET ssl = on").await;
    pg.execute("SELECT pg_reload_conf()").await;
    let mut direct = Err(String::new());
    for _ in 0..100 {
        direct = psql_direct(
            pg.port(),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        );
        if direct.as_deref() == Ok("t") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        direct.as_deref(),
        Ok("t"),
        "Postgres did not start TLS:\n{}",
        common::log_tail(&pg.log_path(), 20)
    );
}

/// psql straight to Postgres as the superuser with sslmode=require.
fn psql_direct(port: u16, sql: &str) -> Result<String, String> {
    let conninfo = format!(
        "host={HOST} port={port} user={} dbname=postgres sslmode=require",
        common::SUPERUSER
    );
    let output = Command::new(common::psql_program())
        .args(["-X", "-A", "-t", "-d", &conninfo, "-c", sql])
        .env("PGPASSWORD", common::SUPERUSER_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// One `[[tenants]]` table for `USER` on `pg`, reached at `db_host`, with
/// `tls` lines (upstream_sslmode and friends).
fn upstream_tenant(pg: &PgServer, id: &str, db_host: &str, tls: &str) -> String {
    format!(
        r#"
[[tenants]]
external_id = "{id}"
db_host = "{db_host}"
db_port = {pg_port}
db_database = "postgres"
{tls}

[[tenants.users]]
db_user = "{USER}"
db_password = "{PASSWORD}"
pool_size = 2
"#,
        pg_port = pg.port()
    )
}

fn verify_full(ca_file: &Path) -> String {
    format!(
        "upstream_sslmode = \"verify-full\"\nupstream_tls_ca = \"{}\"",
        ca_file.display()
    )
}

/// Starts Tidepool with these tenants; the file lives in `dir`.
fn start_with_tenants(dir: &Path, tenants: &[String]) -> TidepoolProc {
    let port = free_port();
    let config = dir.join("tidepool.toml");
    let text = format!("[server]\nlisten = \"{HOST}:{port}\"\n{}", tenants.concat());
    std::fs::write(&config, text).unwrap();
    TidepoolProc::start_on(port, &["--config", config.to_str().unwrap()])
}

/// Whether the server connection Tidepool uses for `USER` of `tenant` is TLS,
/// as Postgres sees it.
async fn upstream_uses_tls(
    pooler: &TidepoolProc,
    tenant: &str,
) -> Result<bool, tokio_postgres::Error> {
    let url = pooler.url(&format!("{USER}.{tenant}"), PASSWORD, "postgres");
    let client = common::try_connect(&url).await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

fn assert_cannot_connect(result: Result<bool, tokio_postgres::Error>, why: &str) {
    let error = result.expect_err(why);
    assert_eq!(sqlstate(&error).as_deref(), Some("08006"), "{error}");
    assert_eq!(
        db_message(&error).as_deref(),
        Some("could not connect to the database server")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_require_and_verify_full() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let ca = TestCa::new("tidepool test CA");
    let (server_cert, server_key) = ca.issue(&[HOST, "localhost"]);
    enable_server_tls(&pg, &server_cert, &server_key).await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let other_ca_file = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca_file, TestCa::new("some other CA").cert.pem()).unwrap();
    let pooler = start_with_tenants(
        dir.path(),
        &[
            upstream_tenant(&pg, "plain", HOST, "upstream_sslmode = \"disable\""),
            upstream_tenant(&pg, "required", HOST, "upstream_sslmode = \"require\""),
            upstream_tenant(&pg, "verified", HOST, &verify_full(&ca_file)),
            upstream_tenant(&pg, "wrongca", HOST, &verify_full(&other_ca_file)),
        ],
    );

    assert!(
        !upstream_uses_tls(&pooler, "plain").await.unwrap(),
        "sslmode=disable used TLS"
    );
    assert!(
        upstream_uses_tls(&pooler, "required").await.unwrap(),
        "sslmode=require did not use TLS"
    );
    match upstream_uses_tls(&pooler, "verified").await {
        Ok(ssl) => assert!(ssl, "sslmode=verify-full did not use TLS"),
        Err(e) => panic!(
            "verify-full against a certificate with IP SAN {HOST}, signed by the configured CA, \
             failed: {e}\n{}",
            common::log_tail(&pooler.log_path(), 20)
        ),
    }
    assert_cannot_connect(
        upstream_uses_tls(&pooler, "wrongca").await,
        "verify-full accepted a certificate from a CA it was not given",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_verify_full_checks_the_host_name() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let ca = TestCa::new("tidepool test CA");
    // Valid for the name "localhost" only, not for the address 127.0.0.1.
    let (server_cert, server_key) = ca.issue(&["localhost"]);
    enable_server_tls(&pg, &server_cert, &server_key).await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let pooler = start_with_tenants(
        dir.path(),
        &[
            upstream_tenant(&pg, "byname", "localhost", &verify_full(&ca_file)),
            upstream_tenant(&pg, "byaddress", HOST, &verify_full(&ca_file)),
            upstream_tenant(&pg, "unchecked", HOST, "upstream_sslmode = \"require\""),
        ],
    );

    assert!(upstream_uses_tls(&pooler, "byname").await.unwrap());
    assert_cannot_connect(
        upstream_uses_tls(&pooler, "byaddress").await,
        "verify-full accepted a certificate issued for another name",
    );
    assert!(upstream_uses_tls(&pooler, "unchecked").await.unwrap());
}
