//! A throwaway PostgreSQL server for one test.
//!
//! The cluster is made by `initdb` once per test binary into a template
//! directory, then copied for each server (a copy takes ~0.1 s, `initdb`
//! ~1 s). Each server listens on 127.0.0.1 only, at a free port, with its
//! unix socket, data and log inside its own temporary directory; dropping the
//! [`PgServer`] stops it and removes that directory.
//!
//! Authentication: host connections use SCRAM-SHA-256, except members of the
//! `tidepool_md5_login` role, which use md5 (see [`PgServer::create_md5_user`]);
//! the unix socket trusts everyone.
//!
//! `initdb` and `postgres` refuse to run as root, so when the tests run as
//! root every server-side command runs as the `postgres` OS user.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::cluster::{
    bin_dir, give_to_server_user, psql_program, run, server_command, template_data_dir,
    MD5_LOGIN_ROLE,
};
use super::{accepts_tcp, free_port, log_tail, postgres_url, wait_until, HOST};

/// The superuser of every test server.
pub const SUPERUSER: &str = "postgres";
/// The superuser's password.
pub const SUPERUSER_PASSWORD: &str = SUPERUSER;

/// How many times to retry when another process grabbed the free port.
const PORT_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 40;

/// A running throwaway PostgreSQL server; stopped and deleted on drop.
pub struct PgServer {
    port: u16,
    // Set once a panic message has shown the log tail, so Drop does not
    // print it a second time.
    log_reported: bool,
    // Holds data/, postgres.log and the unix socket; removed when dropped,
    // which happens after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl PgServer {
    /// Starts a fresh server and waits until it accepts connections.
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("tidepool-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        give_to_server_user(dir.path());
        let data = dir.path().join("data");
        run(
            server_command(Path::new("cp"))
                .arg("-a")
                .arg(template_data_dir())
                .arg(&data),
            "copy the template cluster",
        );

        let mut server = PgServer {
            port: 0,
            log_reported: false,
            dir,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            server.write_instance_conf();
            let started = server_command(&bin_dir().join("pg_ctl"))
                .args(["start", "--wait", "--timeout=60", "--silent", "-D"])
                .arg(server.data_dir())
                .arg("-l")
                .arg(server.log_path())
                .stdout(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
            if started.success() {
                break;
            }
            let log = fs::read_to_string(server.log_path()).unwrap_or_default();
            let port_taken = log.contains("could not bind") || log.contains("already in use");
            if !port_taken || attempt == PORT_ATTEMPTS {
                server.log_reported = true;
                panic!(
                    "PostgreSQL did not start ({started}) on port {}\n{}",
                    server.port,
                    log_tail(&server.log_path(), LOG_TAIL_LINES)
                );
            }
        }
        if !wait_until(Duration::from_secs(10), || accepts_tcp(server.port)) {
            server.log_reported = true;
            panic!(
                "PostgreSQL started but does not accept TCP on {HOST}:{}\n{}",
                server.port,
                log_tail(&server.log_path(), LOG_TAIL_LINES)
            );
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The directory holding the server's Unix-domain socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `postgres://postgres:postgres@127.0.0.1:PORT/postgres`
    pub fn superuser_url(&self) -> String {
        self.url(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
    }

    /// A URL for connecting straight to this server (not through Tidepool).
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        postgres_url(user, password, self.port, database)
    }

    /// A superuser connection (SCRAM over TCP).
    pub async fn client(&self) -> Client {
        connect(&self.superuser_url()).await
    }

    /// Creates a LOGIN role whose password is stored as a SCRAM verifier.
    pub async fn create_user(&self, name: &str, password: &str) {
        self.execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE {} LOGIN PASSWORD {};",
            quote_ident(name),
            quote_literal(password)
        ))
        .await;
    }

    /// Creates a LOGIN role whose password is stored as an md5 hash; it logs
    /// in over TCP with md5 authentication.
    pub async fn create_md5_user(&self, name: &str, password: &str) {
        self.execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{MD5_LOGIN_ROLE}') THEN
                     CREATE ROLE {MD5_LOGIN_ROLE} NOLOGIN;
                 END IF;
             END $$;
             SET password_encryption = 'md5';
             CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {MD5_LOGIN_ROLE};",
            quote_ident(name),
            quote_literal(password)
        ))
        .await;
    }

    /// Creates a database owned by `owner`.
    pub async fn create_database(&self, name: &str, owner: &str) {
        self.execute(&format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(name),
            quote_ident(owner)
        ))
        .await;
    }

    /// Runs SQL (one or more statements) as the superuser.
    pub async fn execute(&self, sql: &str) {
        self.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
    }

    /// Client backends connected as `user` right now.
    pub async fn count_backends(&self, user: &str) -> i64 {
        self.client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE usename = $1 AND backend_type = 'client backend'",
                &[&user],
            )
            .await
            .unwrap_or_else(|e| panic!("cannot count backends of {user}: {e}"))
            .get(0)
    }

    /// Runs `psql` as the superuser over TCP with `-X -At -v ON_ERROR_STOP=1`
    /// plus `args`, and returns its stdout. Blocking: fine in tests, but it
    /// holds up the calling runtime thread.
    pub fn psql(&self, args: &[&str]) -> String {
        let output = Command::new(psql_program())
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", HOST, "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, "-d", "postgres"])
            .args(args)
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        if !output.status.success() {
            panic!(
                "psql {args:?} failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn write_instance_conf(&self) {
        let socket_dir = self.dir.path().to_string_lossy().replace('\'', "''");
        let path = self.data_dir().join("instance.conf");
        let conf = format!(
            "port = {}\nunix_socket_directories = '{socket_dir}'\n",
            self.port
        );
        fs::write(&path, conf).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

impl PgServer {
    /// Restarts the server (fast shutdown: its sessions are ended) on the same
    /// port and waits until it accepts connections again.
    pub fn restart(&self) {
        let restarted = server_command(&bin_dir().join("pg_ctl"))
            .args([
                "restart",
                "--mode=fast",
                "--wait",
                "--timeout=60",
                "--silent",
                "-D",
            ])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        assert!(
            restarted.success() && wait_until(Duration::from_secs(10), || accepts_tcp(self.port)),
            "PostgreSQL did not restart\n{}",
            log_tail(&self.log_path(), LOG_TAIL_LINES)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.log_reported {
            eprintln!("{}", log_tail(&self.log_path(), LOG_TAIL_LINES));
        }
        let stopped = server_command(&bin_dir().join("pg_ctl"))
            .args([
                "stop",
                "--mode=immediate",
                "--wait",
                "--timeout=20",
                "--silent",
                "-D",
            ])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !stopped {
            kill_postmaster(&self.data_dir());
        }
    }
}

/// Last resort when `pg_ctl stop` fails: SIGKILL the postmaster named in
/// postmaster.pid so no server outlives its test.
fn kill_postmaster(data_dir: &Path) {
    let Ok(pid_file) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    if let Some(pid) = pid_file.lines().next().filter(|line| !line.is_empty()) {
        let _ = Command::new("kill").args(["-s", "KILL", pid]).status();
    }
}

/// Connects with `tokio-postgres` (no TLS) and drives the connection in a
/// spawned task. Panics if the connection fails.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| match e.as_db_error() {
            Some(db) => panic!(
                "cannot connect to {}: {} {}",
                redact_url(url),
                db.code().code(),
                db.message()
            ),
            None => panic!("cannot connect to {}: {e}", redact_url(url)),
        })
}

/// The first column of the first row of a simple query, as text.
pub async fn simple_value(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some(row.get(0).unwrap_or("<null>").to_owned())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql} returned no row"))
}

/// Like [`connect`], but returns the error, for tests that expect a refusal.
pub async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; an error
        // then surfaces on the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A client whose connection task is kept, so a test sees how the server ended
/// the session (an unsolicited FATAL surfaces there). The login must finish within
/// `timeout`.
pub async fn connect_watched(
    url: &str,
    timeout: std::time::Duration,
) -> (
    Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let login = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(timeout, login)
        .await
        .expect("the login did not finish")
        .unwrap_or_else(|e| panic!("cannot log in to {}: {e}", redact_url(url)));
    (client, tokio::spawn(connection))
}

/// Waits (at most `timeout`) for a watched connection to end, and returns the
/// error it ended with.
pub async fn ended_with(
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    timeout: std::time::Duration,
) -> tokio_postgres::Error {
    tokio::time::timeout(timeout, connection)
        .await
        .unwrap_or_else(|_| panic!("the client was still connected after {timeout:?}"))
        .expect("the connection task panicked")
        .expect_err("the connection ended without an error")
}

/// The SQLSTATE a watched connection ended with, or a text naming the error
/// when it carried none.
pub async fn ended_with_sqlstate(
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    timeout: std::time::Duration,
) -> String {
    let error = ended_with(connection, timeout).await;
    error
        .code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {error}"))
}
