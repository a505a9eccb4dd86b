//! Clients of Tidepool's Unix socket (`server.unix_socket_dir`), against a real
//! Postgres and a real Tidepool: the socket file is named as Postgres names its
//! own, so libpq-style clients find it from a directory and a port; its clients
//! are pooled, parked when idle, cancelled and shut down like TCP clients; a
//! tenant's address list treats them as the loopback address and its TLS demand
//! does not apply to them; a stale file left by a killed pooler is taken over and
//! the file goes when the pooler stops.

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    accepts_tcp, connect, free_port, simple_value as text, wait_until, PgServer, TidepoolProc,
    HOST, SIGKILL, SIGTERM,
};
use tokio_postgres::{Client, NoTls};

const USER: &str = "app";
const PASSWORD: &str = "unix-pw-1";
/// Bound for anything that should take a second or two: only a hang exceeds it.
const NO_HANG: Duration = Duration::from_secs(60);

/// A Tidepool from a file whose `[server]` has a Unix socket directory, with its
/// metrics endpoint.
struct Node {
    proc: TidepoolProc,
    port: u16,
    api_port: u16,
    socket_dir: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Node {
    /// `server_extra` goes under `[server]`; `tenants` are (id, tenant keys).
    fn start(pg: &PgServer, server_extra: &str, tenants: &[(&str, &str)]) -> Node {
        let socket_dir = tempfile::tempdir().unwrap();
        Self::start_in(pg, socket_dir, free_port(), server_extra, tenants)
    }

    /// With its socket in `socket_dir` and listening on `port`.
    fn start_in(
        pg: &PgServer,
        socket_dir: tempfile::TempDir,
        port: u16,
        server_extra: &str,
        tenants: &[(&str, &str)],
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidepool.toml");
        let api_port = free_port();
        let mut text = format!(
            "[server]\nlisten = \"{HOST}:{port}\"\nunix_socket_dir = \"{}\"\n{server_extra}\n\n\
             [api]\nlisten = \"{HOST}:{api_port}\"\njwt_secret = \"unix-test-secret\"\n",
            socket_dir.path().display()
        );
        for (id, extra) in tenants {
            text.push_str(&common::tenant_toml(id, pg.port(), extra, USER, PASSWORD));
        }
        std::fs::write(&path, text).unwrap();
        let proc = TidepoolProc::start_on(port, &["--config", path.to_str().unwrap()]);
        let node = Node {
            proc,
            port,
            api_port,
            socket_dir,
            _dir: dir,
        };
        // A connection, not the file: a stale file may be there before the new one.
        assert!(
            wait_until(NO_HANG, || {
                accepts_tcp(api_port)
                    && std::os::unix::net::UnixStream::connect(node.socket()).is_ok()
            }),
            "no API or no socket\n{}",
            node.proc.log()
        );
        node
    }

    fn socket(&self) -> PathBuf {
        self.socket_dir
            .path()
            .join(format!(".s.PGSQL.{}", self.port))
    }

    /// A client of the Unix socket, found as libpq finds a server's: directory
    /// and port.
    fn config(&self, tenant: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir.path())
            .port(self.port)
            .user(format!("{USER}.{tenant}"))
            .password(PASSWORD)
            .dbname("postgres");
        config
    }

    async fn connect_unix(&self, tenant: &str) -> Client {
        match self.try_connect_unix(tenant).await {
            Ok(client) => client,
            Err(e) => panic!("Unix-socket client of {tenant}: {e}\n{}", self.proc.log()),
        }
    }

    async fn try_connect_unix(&self, tenant: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config(tenant).connect(NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    fn tcp_url(&self, tenant: &str) -> String {
        self.proc
            .url(&format!("{USER}.{tenant}"), PASSWORD, "postgres")
    }

    fn parked(&self) -> u64 {
        common::process_metric(self.api_port, "tidepool_parked_clients")
    }

    fn wait_parked(&self, n: u64) {
        let mut last = u64::MAX;
        let seen = wait_until(NO_HANG, || {
            last = self.parked();
            last == n
        });
        assert!(seen, "{last} clients parked, not {n}\n{}", self.proc.log());
    }
}

/// The SQLSTATE of a failed connect or query.
fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_clients_are_pooled_parked_cancelled_and_the_file_goes_at_exit() {
    const CLIENTS: usize = 12;
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let mut node = Node::start(&pg, "unix_socket_mode = 0o770", &[("main", "")]);
    assert_eq!(mode_of(&node.socket()), 0o770, "the configured permissions");

    // More clients than the pool has connections, all through the socket file.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(node.connect_unix("main").await);
    }
    // Idle after their login: parked, like TCP clients.
    node.wait_parked(CLIENTS as u64);
    for (i, client) in clients.iter().enumerate() {
        client
            .batch_execute(&format!("SET application_name = 'unix-{i}'"))
            .await
            .unwrap();
    }
    // Served on the pool's two connections; then parked again, and back with
    // their own settings.
    assert!(pg.count_backends(USER).await <= 2);
    node.wait_parked(CLIENTS as u64);
    for (i, client) in clients.iter().enumerate() {
        assert_eq!(
            text(client, "SHOW application_name").await,
            format!("unix-{i}")
        );
    }
    // Postgres sees the pooler's TCP connection, whatever the client used.
    assert_eq!(
        text(&clients[0], "SELECT inet_client_addr()::text").await,
        "127.0.0.1/32"
    );

    // A cancel request through the socket file reaches that client's query.
    let cancel = clients[0].cancel_token();
    let sleeper = tokio::spawn({
        let client = clients.remove(0);
        async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel_query(NoTls).await.unwrap();
    let cancelled = tokio::time::timeout(NO_HANG, sleeper)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sqlstate(&cancelled.unwrap_err()), "57014");

    // Encryption asked for over the socket is declined, as Postgres does; the
    // login goes on in the clear.
    let mut raw = std::os::unix::net::UnixStream::connect(node.socket()).unwrap();
    raw.set_read_timeout(Some(NO_HANG)).unwrap();
    raw.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .unwrap();
    let mut answer = [0u8; 1];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"N");
    drop(raw);

    // TCP clients are served alongside.
    let tcp = connect(&node.tcp_url("main")).await;
    assert_eq!(text(&tcp, "SELECT 40 + 2").await, "42");
    drop(tcp);

    // The pooler stops: its clients are told, and the file goes with it.
    node.proc.signal(SIGTERM);
    assert!(
        node.proc.wait_exit(NO_HANG).is_some(),
        "tidepool did not exit"
    );
    assert!(!node.socket().exists(), "the socket file is left behind");
    assert!(clients[0].simple_query("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_lists_see_unix_clients_as_loopback_and_tls_demands_skip_them() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let node = Node::start(
        &pg,
        "",
        &[
            ("remote", "allow_list = [\"10.0.0.0/8\"]"),
            ("local", "allow_list = [\"10.0.0.0/8\", \"127.0.0.1/32\"]"),
            ("tls", "enforce_ssl = true"),
            ("cleartext", "auth_method = \"password\""),
        ],
    );

    let refused = node.try_connect_unix("remote").await.unwrap_err();
    assert_eq!(sqlstate(&refused), "28000");
    let message = refused
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("the Unix socket"),
        "names where the client came from: {message:?}"
    );
    let local = node.connect_unix("local").await;
    assert_eq!(text(&local, "SELECT 'local'").await, "local");

    // A tenant that demands TLS: a plain TCP client is refused, a client of the
    // socket (which never leaves the machine) is not.
    let plain_tcp = common::try_connect(&node.tcp_url("tls")).await.unwrap_err();
    assert_eq!(sqlstate(&plain_tcp), "28000");
    let unix = node.connect_unix("tls").await;
    assert_eq!(text(&unix, "SELECT 'tls tenant'").await, "tls tenant");

    // Cleartext passwords: over TLS only on TCP, allowed on the socket.
    let plain_tcp = common::try_connect(&node.tcp_url("cleartext"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&plain_tcp), "28000");
    let unix = node.connect_unix("cleartext").await;
    assert_eq!(text(&unix, "SELECT 'cleartext'").await, "cleartext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_taken_over_and_bad_settings_are_refused() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    // A pooler killed without cleaning up leaves its file: the next one on the
    // same directory and port takes it over.
    let Node {
        mut proc,
        port,
        socket_dir,
        ..
    } = Node::start(&pg, "", &[("main", "")]);
    proc.signal(SIGKILL);
    assert!(proc.wait_exit(NO_HANG).is_some());
    let stale = socket_dir.path().join(format!(".s.PGSQL.{port}"));
    assert!(stale.exists(), "a killed process leaves its socket file");
    let node = Node::start_in(&pg, socket_dir, port, "", &[("main", "")]);
    let client = node.connect_unix("main").await;
    assert_eq!(text(&client, "SELECT 'taken over'").await, "taken over");

    // Settings checked before starting.
    let check = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidepool"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let upstream = pg.url(USER, PASSWORD, "postgres");
    let (code, err) = check(&[
        "--upstream",
        &upstream,
        "--unix-socket-dir",
        "/nonexistent/tidepool",
        "--check",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("server.unix_socket_dir") && err.contains("not a directory"),
        "{err}"
    );
    let long = tempfile::Builder::new()
        .prefix(&"d".repeat(120))
        .tempdir()
        .unwrap();
    let (code, err) = check(&[
        "--upstream",
        &upstream,
        "--unix-socket-dir",
        long.path().to_str().unwrap(),
        "--check",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at most 107"), "{err}");
    let dir = socket_dir_of(&node);
    let (code, err) = check(&[
        "--upstream",
        &upstream,
        "--listen",
        "127.0.0.1:0",
        "--unix-socket-dir",
        &dir,
        "--check",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not 0"), "{err}");
}

fn socket_dir_of(node: &Node) -> String {
    node.socket_dir.path().to_str().unwrap().to_owned()
}
