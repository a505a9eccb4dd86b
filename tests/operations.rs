//! Running Tidepool as an operator would: configuration errors and exit
//! codes, reload on SIGHUP, graceful shutdown on SIGTERM, and what the log
//! contains (JSON lines, never a password).

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{accepts_tcp, free_port, wait_until, PgServer, TidepoolProc, HOST, SIGHUP, SIGTERM};
use tokio_postgres::Client;

const NO_HANG: Duration = Duration::from_secs(15);

fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.code().map(|state| state.code().to_owned())
}

/// A tenant `main` on `pg` with the given `[[tenants.users]]` bodies, after a
/// `[server]` table listening on `port` with `server_extra` lines.
fn config_text(pg: &PgServer, port: u16, server_extra: &str, users: &[String]) -> String {
    let mut text = format!(
        "[server]\nlisten = \"{HOST}:{port}\"\n{server_extra}\n\n\
         [[tenants]]\nexternal_id = \"main\"\ndb_host = \"{HOST}\"\n\
         db_port = {}\ndb_database = \"postgres\"\n",
        pg.port()
    );
    for user in users {
        text.push_str("\n[[tenants.users]]\n");
        text.push_str(user);
        text.push('\n');
    }
    text
}

fn user_entry(name: &str, password: &str, extra: &str) -> String {
    format!("db_user = \"{name}\"\ndb_password = \"{password}\"\n{extra}")
}

/// Runs the binary to completion (it must exit within 15 s) and returns its
/// output.
fn run_tidepool(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + NO_HANG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tidepool {args:?} did not exit within {NO_HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

const VALID: &str = r#"
[server]
listen = "127.0.0.1:6499"

[pool]
checkout_timeout_ms = 2000

[[tenants]]
external_id = "acme"
db_host = "127.0.0.1"
db_database = "acme"

[[tenants.users]]
db_user = "app"
db_password = "valid-config-pw"
pool_size = 4

[[tenants]]
external_id = "globex"
db_host = "127.0.0.1"
db_database = "globex"
auth_method = "md5"

[[tenants.users]]
db_user = "orders"
db_password = "md5423bae14f65e4d3e752e9ff1aec0bebe"
mode_type = "session"
"#;

#[test]
fn invalid_configuration_exits_2_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "pool_size = 4",
            "pool_size = 0",
            "tenants[0].users[0].pool_size",
        ),
        ("127.0.0.1:6499", "localhost:6499", "server.listen"),
        ("pool_size = 4", "pool_sise = 4", "pool_sise"),
        (
            "db_host = \"127.0.0.1\"\ndb_database = \"acme\"",
            "db_database = \"acme\"",
            "tenants[0].db_host",
        ),
        (
            "\"session\"",
            "\"statement\"",
            "tenants[1].users[0].mode_type",
        ),
        (
            "auth_method = \"md5\"",
            "auth_method = \"scram-sha-256\"",
            "tenants[1].users[0].db_password",
        ),
        (
            "checkout_timeout_ms = 2000",
            "checkout_timeout_ms = 0",
            "pool.checkout_timeout_ms",
        ),
        (
            "external_id = \"globex\"",
            "external_id = \"acme\"",
            "tenants[1].external_id",
        ),
    ];
    for (i, (from, to, key)) in cases.iter().enumerate() {
        assert!(
            VALID.contains(from),
            "case {i}: {from:?} is not in the config"
        );
        let path = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&path, VALID.replacen(from, to, 1)).unwrap();
        let output = run_tidepool(&["--config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "case {i} ({key}): {stderr}");
        assert!(
            stderr.contains(key),
            "case {i}: stderr does not name {key}: {stderr}"
        );
        for secret in ["valid-config-pw", "md5423bae14f65e4d3e752e9ff1aec0bebe"] {
            assert!(
                !stderr.contains(secret),
                "case {i}: a password is in: {stderr}"
            );
        }
    }

    let missing = dir.path().join("absent.toml");
    let output = run_tidepool(&["--config", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));

    // Single-upstream flags report the key they map to.
    let output = run_tidepool(&[
        "--upstream",
        "postgres://app:pw@127.0.0.1:5432/app",
        "--pool-size",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tenants[0].users[0].pool_size"), "{stderr}");
}

#[test]
fn check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valid.toml");
    std::fs::write(&path, VALID).unwrap();
    let output = run_tidepool(&["--config", path.to_str().unwrap(), "--check"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("configuration is valid"));

    // --check validates: the same file with an error fails it.
    std::fs::write(&path, VALID.replace("pool_size = 4", "pool_size = 10001")).unwrap();
    let output = run_tidepool(&["--config", path.to_str().unwrap(), "--check"]);
    assert_eq!(output.status.code(), Some(2));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_passwords_and_pool_sizes() {
    const OLD: &str = "old-pw-A";
    const NEW: &str = "new-pw-B";
    const OLD_TX: &str = "old-pw-A2";
    const NEW_TX: &str = "new-pw-B2";
    const STEADY: &str = "steady-pw";
    const LEAVING: &str = "leaving-pw";
    let pg = PgServer::start();
    pg.create_user("rotating", OLD).await;
    pg.create_user("rotating_tx", OLD_TX).await;
    pg.create_user("steady", STEADY).await;
    pg.create_user("leaving", LEAVING).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidepool.toml");
    let port = free_port();
    let users = |rotating: &str, rotating_size: u32, rotating_tx: &str, steady_size: u32| {
        vec![
            user_entry(
                "rotating",
                rotating,
                &format!("pool_size = {rotating_size}\nmode_type = \"session\""),
            ),
            user_entry("rotating_tx", rotating_tx, "pool_size = 2"),
            user_entry(
                "steady",
                STEADY,
                &format!("pool_size = {steady_size}\npool_checkout_timeout = 1000"),
            ),
        ]
    };
    let mut before = users(OLD, 2, OLD_TX, 1);
    before.push(user_entry("leaving", LEAVING, ""));
    write(&config, &config_text(&pg, port, "", &before));
    let pooler = TidepoolProc::start_on(port, &["--config", config.to_str().unwrap()]);
    let url = |user: &str, password: &str| pooler.url(user, password, "postgres");

    let session = common::connect(&url("rotating", OLD)).await;
    let session_pid: i32 = pid_of(&session).await;
    let (transaction, transaction_conn) =
        common::connect_watched(&url("rotating_tx", OLD_TX), NO_HANG).await;
    let transaction_pid = pid_of(&transaction).await;
    let leaving = common::connect(&url("leaving", LEAVING)).await;
    leaving.simple_query("SELECT 1").await.unwrap();
    let steady = common::connect(&url("steady", STEADY)).await;
    let steady_pid = pid_of(&steady).await;

    // Before the reload, steady's pool holds one server connection.
    steady.batch_execute("BEGIN").await.unwrap();
    let crowded = common::connect(&url("steady", STEADY)).await;
    let error = crowded
        .simple_query("SELECT 1")
        .await
        .expect_err("pool_size 1 served two transactions");
    assert_eq!(sqlstate(&error).as_deref(), Some("53300"), "{error}");
    steady.batch_execute("COMMIT").await.unwrap();

    pg.execute(&format!(
        "ALTER ROLE rotating PASSWORD '{NEW}'; ALTER ROLE rotating_tx PASSWORD '{NEW_TX}';"
    ))
    .await;
    write(
        &config,
        &config_text(&pg, port, "", &users(NEW, 3, NEW_TX, 2)),
    );
    pooler.signal(SIGHUP);
    assert!(
        pooler.wait_for_log("configuration reloaded", NO_HANG),
        "no reload in the log:\n{}",
        pooler.log()
    );

    // New logins use the new password, and only it.
    let fresh = common::connect(&url("rotating", NEW)).await;
    assert!(pid_of(&fresh).await > 0);
    let refused = common::try_connect(&url("rotating", OLD))
        .await
        .expect_err("the old password still works after the reload");
    assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"), "{refused}");

    // The session-mode client connected before the reload keeps its server.
    assert_eq!(pid_of(&session).await, session_pid);
    session.simple_query("SELECT 1").await.unwrap();

    // steady's pool was kept and now holds two server connections.
    steady.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        pid_of(&steady).await,
        steady_pid,
        "steady's pool was replaced"
    );
    let second = common::connect(&url("steady", STEADY)).await;
    second.batch_execute("BEGIN").await.unwrap();
    let second_pid = tokio::time::timeout(NO_HANG, pid_of(&second))
        .await
        .expect("the larger pool_size was not applied");
    assert_ne!(second_pid, steady_pid);
    second.batch_execute("COMMIT").await.unwrap();
    steady.batch_execute("COMMIT").await.unwrap();

    // A transaction-mode client whose pool was replaced (its password
    // changed) goes on, on a server connection that logged in with the new
    // password: the old pool's idle connection was closed by the reload.
    let rows = transaction.simple_query("SELECT 1").await;
    assert!(
        rows.is_ok(),
        "a connected client failed after the reload: {rows:?}"
    );
    assert_ne!(pid_of(&transaction).await, transaction_pid);
    assert!(!transaction_conn.is_finished());
    let again = common::connect(&url("rotating_tx", NEW_TX)).await;
    again.simple_query("SELECT 1").await.unwrap();
    assert!(common::try_connect(&url("rotating_tx", OLD_TX))
        .await
        .is_err());

    // A client of a user the reload removed is told at its next transaction.
    let error = leaving
        .simple_query("SELECT 1")
        .await
        .expect_err("a removed user's client went on after the reload");
    assert_eq!(sqlstate(&error).as_deref(), Some("57P01"), "{error}");
    let error = common::try_connect(&url("leaving", LEAVING))
        .await
        .expect_err("a removed user logged in");
    assert_eq!(sqlstate(&error).as_deref(), Some("28P01"), "{error}");
}

async fn pid_of(client: &Client) -> i32 {
    client
        .query_typed_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap_or_else(|e| panic!("SELECT pg_backend_pid(): {e}"))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_finish() {
    const PASSWORD: &str = "shutdown-pw";
    let pg = PgServer::start();
    pg.create_user("app", PASSWORD).await;
    pg.create_user("pinned", PASSWORD).await;
    pg.execute(
        "CREATE TABLE done (n int);
         GRANT INSERT, SELECT ON done TO app, pinned;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidepool.toml");
    let port = free_port();
    write(
        &config,
        &config_text(
            &pg,
            port,
            "shutdown_timeout_ms = 20000",
            &[
                user_entry("app", PASSWORD, "pool_size = 3"),
                user_entry("pinned", PASSWORD, "pool_size = 3\nmode_type = \"session\""),
            ],
        ),
    );
    let mut pooler = TidepoolProc::start_on(port, &["--config", config.to_str().unwrap()]);
    let url = pooler.url("app", PASSWORD, "postgres");
    let session_url = pooler.url("pinned", PASSWORD, "postgres");

    // Transaction and session mode: one client inside a transaction, one idle.
    let (busy, busy_conn) = common::connect_watched(&url, NO_HANG).await;
    busy.batch_execute("BEGIN; INSERT INTO done VALUES (1);")
        .await
        .unwrap();
    let (idle, idle_conn) = common::connect_watched(&url, NO_HANG).await;
    idle.simple_query("SELECT 1").await.unwrap();
    let (session_busy, session_busy_conn) = common::connect_watched(&session_url, NO_HANG).await;
    session_busy
        .batch_execute("BEGIN; INSERT INTO done VALUES (10);")
        .await
        .unwrap();
    let (session_idle, session_idle_conn) = common::connect_watched(&session_url, NO_HANG).await;
    session_idle.simple_query("SELECT 1").await.unwrap();

    pooler.signal(SIGTERM);

    // Idle clients are told at once.
    assert_eq!(
        common::ended_with_sqlstate(idle_conn, NO_HANG).await,
        "57P01"
    );
    assert_eq!(
        common::ended_with_sqlstate(session_idle_conn, NO_HANG).await,
        "57P01"
    );
    // No new clients.
    assert!(
        wait_until(NO_HANG, || !accepts_tcp(port)),
        "still accepting connections after SIGTERM"
    );
    assert!(common::try_connect(&url).await.is_err());

    // Open transactions finish, then their clients are told too.
    busy.batch_execute("INSERT INTO done VALUES (2)")
        .await
        .unwrap();
    busy.batch_execute("COMMIT")
        .await
        .expect("COMMIT after SIGTERM failed");
    assert_eq!(
        common::ended_with_sqlstate(busy_conn, NO_HANG).await,
        "57P01"
    );
    session_busy
        .batch_execute("INSERT INTO done VALUES (20)")
        .await
        .unwrap();
    session_busy
        .batch_execute("COMMIT")
        .await
        .expect("COMMIT after SIGTERM failed in session mode");
    assert_eq!(
        common::ended_with_sqlstate(session_busy_conn, NO_HANG).await,
        "57P01"
    );

    let status = pooler
        .wait_exit(Duration::from_secs(20))
        .expect("tidepool did not exit within shutdown_timeout_ms");
    assert!(status.success(), "exit status {status}");
    let rows: Vec<i32> = pg
        .client()
        .await
        .query("SELECT n FROM done ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        rows,
        [1, 2, 10, 20],
        "a transaction committed after SIGTERM was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_closes_stuck_transactions() {
    const PASSWORD: &str = "shutdown-pw";
    let pg = PgServer::start();
    pg.create_user("app", PASSWORD).await;
    pg.execute("CREATE TABLE done (n int); GRANT INSERT, SELECT ON done TO app;")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidepool.toml");
    let port = free_port();
    write(
        &config,
        &config_text(
            &pg,
            port,
            "shutdown_timeout_ms = 1000",
            &[user_entry("app", PASSWORD, "pool_size = 2")],
        ),
    );
    let mut pooler = TidepoolProc::start_on(port, &["--config", config.to_str().unwrap()]);
    let (stuck, stuck_conn) =
        common::connect_watched(&pooler.url("app", PASSWORD, "postgres"), NO_HANG).await;
    stuck
        .batch_execute("BEGIN; INSERT INTO done VALUES (1);")
        .await
        .unwrap();

    pooler.signal(SIGTERM);
    let status = pooler
        .wait_exit(NO_HANG)
        .expect("tidepool waited for a transaction past shutdown_timeout_ms");
    assert!(status.success(), "exit status {status}");
    let _ = tokio::time::timeout(NO_HANG, stuck_conn)
        .await
        .expect("the stuck client's connection is still open");
    assert!(stuck.simple_query("SELECT 1").await.is_err());
    // The unfinished transaction was rolled back, not committed.
    let rows: i64 = pg
        .client()
        .await
        .query_one("SELECT count(*) FROM done", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

/// A `tidepool` child with stdout and stderr in separate files; killed on drop.
struct LoggedProc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl LoggedProc {
    fn start(dir: &Path, port: u16, args: &[&str]) -> LoggedProc {
        let stdout = dir.join("stdout.log");
        let stderr = dir.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut proc = LoggedProc {
            child,
            stdout,
            stderr,
        };
        let listening = wait_until(NO_HANG, || {
            accepts_tcp(port) || proc.child.try_wait().unwrap().is_some()
        });
        assert!(
            listening && proc.child.try_wait().unwrap().is_none(),
            "tidepool did not start:\n{}",
            proc.stderr()
        );
        proc
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        let status = Command::new("kill")
            .args(["-s", &signal.to_string(), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for LoggedProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_hold_no_password() {
    const PASSWORD: &str = "Log-Secret-Pw-31";
    const WRONG: &str = "Wrong-Secret-Pw-62";
    const MISMATCH: &str = "Upstream-Mismatch-Pw-93";
    const VERIFIED_PW: &str = "Verifier-Owner-Pw-17";
    let pg = PgServer::start();
    pg.create_user("app", PASSWORD).await;
    pg.create_user("mismatch", "what-postgres-has").await;
    pg.create_user("verified", VERIFIED_PW).await;
    let verifier: String = pg
        .client()
        .await
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'verified'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidepool.toml");
    let port = free_port();
    write(
        &config,
        &config_text(
            &pg,
            port,
            "",
            &[
                user_entry("app", PASSWORD, "pool_size = 2"),
                user_entry("mismatch", MISMATCH, ""),
                user_entry("verified", &verifier, ""),
            ],
        ),
    );
    let mut proc = LoggedProc::start(
        dir.path(),
        port,
        &["--config", config.to_str().unwrap(), "--log-format", "json"],
    );
    let url = |user: &str, password: &str| common::postgres_url(user, password, port, "postgres");

    let app = common::connect(&url("app", PASSWORD)).await;
    app.simple_query("SELECT 1").await.unwrap();
    let verified = common::connect(&url("verified", VERIFIED_PW)).await;
    verified.simple_query("SELECT 1").await.unwrap();
    for (user, password) in [
        ("app", WRONG),
        ("nobody", WRONG),
        ("mismatch", MISMATCH),
        ("verified", WRONG),
    ] {
        assert!(
            common::try_connect(&url(user, password)).await.is_err(),
            "{user} logged in"
        );
    }
    proc.signal(SIGHUP);
    assert!(wait_until(NO_HANG, || proc
        .stderr()
        .contains("configuration reloaded")));
    drop(app);
    drop(verified);
    proc.signal(SIGTERM);
    let exited = wait_until(NO_HANG, || proc.child.try_wait().unwrap().is_some());
    assert!(exited, "tidepool did not exit after SIGTERM");

    let stderr = proc.stderr();
    let stdout = proc.stdout();
    assert_eq!(stdout, "", "tidepool wrote to stdout");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 5, "too few log lines:\n{stderr}");
    for line in &lines {
        assert!(
            json::is_object(line),
            "log line is not a JSON object: {line}"
        );
    }
    assert!(
        stderr.contains(r#""level":"DEBUG""#),
        "RUST_LOG=debug did not apply"
    );
    assert!(stderr.contains("tidepool listening"), "{stderr}");
    assert!(stderr.contains("client authentication failed"), "{stderr}");

    let (_, keys) = verifier.split_once('$').unwrap();
    let mut secrets = vec![PASSWORD, WRONG, MISMATCH, VERIFIED_PW, verifier.as_str()];
    secrets.extend(keys.split(['$', ':']).skip(1));
    for secret in secrets {
        assert!(
            !stderr.contains(secret),
            "the log contains the secret {secret:?}"
        );
    }
}

/// Just enough of a JSON parser to tell whether a line is one JSON object.
mod json {
    pub fn is_object(text: &str) -> bool {
        let bytes = text.trim().as_bytes();
        let mut parser = Parser { bytes, at: 0 };
        bytes.first() == Some(&b'{') && parser.value() && parser.at == bytes.len()
    }

    struct Parser<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.at).copied()
        }

        fn skip_space(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.at += 1;
            }
        }

        fn eat(&mut self, byte: u8) -> bool {
            self.skip_space();
            if self.peek() == Some(byte) {
                self.at += 1;
                true
            } else {
                false
            }
        }

        fn value(&mut self) -> bool {
            self.skip_space();
            match self.peek() {
                Some(b'{') => self.sequence(b'{', b'}', |p| p.string() && p.eat(b':') && p.value()),
                Some(b'[') => self.sequence(b'[', b']', Parser::value),
                Some(b'"') => self.string(),
                Some(b't') => self.literal("true"),
                Some(b'f') => self.literal("false"),
                Some(b'n') => self.literal("null"),
                Some(b'-' | b'0'..=b'9') => self.number(),
                _ => false,
            }
        }

        fn sequence(
            &mut self,
            open: u8,
            close: u8,
            mut item: impl FnMut(&mut Self) -> bool,
        ) -> bool {
            if !self.eat(open) {
                return false;
            }
            if self.eat(close) {
                return true;
            }
            loop {
                self.skip_space();
                if !item(self) {
                    return false;
                }
                if self.eat(close) {
                    return true;
                }
                if !self.eat(b',') {
                    return false;
                }
            }
        }

        fn string(&mut self) -> bool {
            self.skip_space();
            if self.peek() != Some(b'"') {
                return false;
            }
            self.at += 1;
            while let Some(byte) = self.peek() {
                self.at += 1;
                match byte {
                    b'"' => return true,
                    b'\\' => self.at += 1,
                    0..=0x1f => return false,
                    _ => {}
                }
            }
            false
        }

        fn literal(&mut self, word: &str) -> bool {
            let end = self.at + word.len();
            if self.bytes.get(self.at..end) == Some(word.as_bytes()) {
                self.at = end;
                true
            } else {
                false
            }
        }

        fn number(&mut self) -> bool {
            let start = self.at;
            while matches!(
                self.peek(),
                Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
            ) {
                self.at += 1;
            }
            self.at > start
        }
    }

    #[test]
    fn tells_objects_from_other_text() {
        assert!(is_object(
            r#"{"a":1,"b":[true,null,"x\"y"],"c":{"d":-1.5e3}}"#
        ));
        assert!(is_object("{}"));
        assert!(!is_object("[1]"));
        assert!(!is_object(r#"{"a":1"#));
        assert!(!is_object(r#"{"a":1} trailing"#));
        assert!(!is_object("2024-01-01T00:00:00Z INFO tidepool listening"));
    }
}
