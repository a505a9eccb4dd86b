//! Idle clients parked outside the runtime (`server.park_idle_clients`, on by
//! default): a transaction-mode client is parked after its login and again after
//! a second or two without traffic. These tests check, against a real Postgres
//! and a real Tidepool, that a parked client comes back on its next query with
//! its session intact (settings, prepared statements), that leaving while parked
//! frees it (however it leaves, parked or right after its login), that a parked client is told when its idle timeout passes, when its
//! tenant is deleted and when the pooler shuts down, and that the
//! `tidepool_parked_clients` gauge counts parked clients (zero with parking off).

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    accepts_tcp, connect, free_port, simple_value as text, wait_until, wire, PgServer,
    TidepoolProc, WireClient, HOST, SIGHUP, SIGTERM,
};

const USER: &str = "app";
const PASSWORD: &str = "parking-pw-1";
/// Bound for anything that should take a second or two: only a hang exceeds it.
const NO_HANG: Duration = Duration::from_secs(60);
/// Parking happens between one and two seconds of idleness; this leaves room
/// for a slow machine.
const PARK_WAIT: Duration = Duration::from_secs(20);

/// A Tidepool with its metrics endpoint, serving tenants from a file it rewrites
/// on `reload`.
struct Node {
    proc: TidepoolProc,
    api_port: u16,
    path: PathBuf,
    server_extra: String,
    _dir: tempfile::TempDir,
}

impl Node {
    /// `server_extra` goes under `[server]`; `tenants` are (id, tenant keys).
    fn start(pg: &PgServer, server_extra: &str, tenants: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidepool.toml");
        let port = free_port();
        let api_port = free_port();
        let node_text = config_text(pg, port, api_port, server_extra, tenants);
        std::fs::write(&path, node_text).unwrap();
        let proc = TidepoolProc::start_on(port, &["--config", path.to_str().unwrap()]);
        assert!(
            wait_until(NO_HANG, || accepts_tcp(api_port)),
            "the API does not listen\n{}",
            proc.log()
        );
        Node {
            proc,
            api_port,
            path,
            server_extra: server_extra.to_owned(),
            _dir: dir,
        }
    }

    fn url(&self, tenant: &str) -> String {
        self.proc
            .url(&format!("{USER}.{tenant}"), PASSWORD, "postgres")
    }

    /// Rewrites the file with `tenants` and sends SIGHUP.
    fn reload(&self, pg: &PgServer, tenants: &[(&str, &str)]) {
        let text = config_text(
            pg,
            self.proc.port(),
            self.api_port,
            &self.server_extra,
            tenants,
        );
        std::fs::write(&self.path, text).unwrap();
        self.proc.signal(SIGHUP);
    }

    fn metrics(&self) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(NO_HANG))
            .build()
            .into();
        agent
            .get(format!("http://{HOST}:{}/metrics", self.api_port))
            .call()
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// The value of a metric without labels.
    fn gauge(&self, name: &str) -> u64 {
        let body = self.metrics();
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
    }

    /// Waits until `tidepool_parked_clients` is `n`.
    fn wait_parked(&self, n: u64) {
        let mut last = u64::MAX;
        let seen = wait_until(PARK_WAIT, || {
            last = self.gauge("tidepool_parked_clients");
            last == n
        });
        assert!(
            seen,
            "tidepool_parked_clients is {last}, not {n}\n{}",
            self.proc.log()
        );
    }

    /// Metric `name` of the tenant's user.
    fn of_tenant(&self, name: &str, tenant: &str) -> u64 {
        let body = self.metrics();
        let prefix = format!("{name}{{tenant=\"{tenant}\",");
        body.lines()
            .find(|line| line.starts_with(&prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} for {tenant}:\n{body}"))
    }
}

fn config_text(
    pg: &PgServer,
    port: u16,
    api_port: u16,
    server_extra: &str,
    tenants: &[(&str, &str)],
) -> String {
    let mut text = format!(
        "[server]\nlisten = \"{HOST}:{port}\"\nshutdown_timeout_ms = 20000\n{server_extra}\n\n\
         [api]\nlisten = \"{HOST}:{api_port}\"\njwt_secret = \"parking-test-secret\"\n"
    );
    for (id, extra) in tenants {
        text.push_str(&common::tenant_toml(id, pg.port(), extra, USER, PASSWORD));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_clients_come_back_with_their_session_and_leave_cleanly() {
    const CLIENTS: usize = 30;
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let node = Node::start(&pg, "", &[("main", "")]);
    let url = node.url("main");

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(&url).await);
    }
    // Parked right after the login, and counted for their tenant too.
    node.wait_parked(CLIENTS as u64);
    assert_eq!(
        node.of_tenant("tidepool_client_connections_parked", "main"),
        CLIENTS as u64
    );

    // Each client sets something of its own and prepares a statement: that gives
    // it a task again, and when it has been idle for a while it parks again.
    let mut statements = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        client
            .batch_execute(&format!("SET application_name = 'parked-{i}'"))
            .await
            .unwrap();
        statements.push(client.prepare("SELECT $1::int * 2").await.unwrap());
    }
    node.wait_parked(CLIENTS as u64);

    // Back from the parking place with everything they had.
    for (i, (client, statement)) in clients.iter().zip(&statements).enumerate() {
        assert_eq!(
            text(client, "SHOW application_name").await,
            format!("parked-{i}")
        );
        let n = i32::try_from(i).unwrap();
        let row = client.query_one(statement, &[&n]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 2 * n);
    }

    // Clients that leave while parked are gone from the parking place and from
    // the counts.
    node.wait_parked(CLIENTS as u64);
    clients.truncate(CLIENTS / 3);
    node.wait_parked((CLIENTS / 3) as u64);
    let mut last = 0;
    assert!(
        wait_until(NO_HANG, || {
            last = node.of_tenant("tidepool_client_connections", "main");
            last == (CLIENTS / 3) as u64
        }),
        "{last} clients counted"
    );
    assert_eq!(
        node.of_tenant("tidepool_client_connections_parked", "main"),
        (CLIENTS / 3) as u64
    );
    for client in &clients {
        assert_eq!(text(client, "SELECT 41 + 1").await, "42");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_clients_are_told_of_their_idle_timeout_their_tenant_and_the_shutdown() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let tenants = [
        ("slow", "client_idle_timeout = 4"),
        ("doomed", ""),
        ("main", ""),
    ];
    let mut node = Node::start(&pg, "", &tenants);

    // Idle timeout: a client parked mid-wait is still sent away on time.
    let (sleepy, sleepy_connection) = common::connect_watched(&node.url("slow"), NO_HANG).await;
    sleepy.simple_query("SELECT 1").await.unwrap();
    let idle_since = Instant::now();
    let (doomed, doomed_connection) = common::connect_watched(&node.url("doomed"), NO_HANG).await;
    doomed.simple_query("SELECT 1").await.unwrap();
    let (last, last_connection) = common::connect_watched(&node.url("main"), NO_HANG).await;
    last.simple_query("SELECT 1").await.unwrap();
    node.wait_parked(3);
    let error = common::ended_with(sleepy_connection, NO_HANG).await;
    let idle = idle_since.elapsed();
    assert_eq!(
        error.code().map(|c| c.code()),
        Some("57P05"),
        "{error} after {idle:?}"
    );
    assert!(idle >= Duration::from_secs(3), "ended after {idle:?}");

    // Tenant deleted: its parked client is told why.
    node.reload(&pg, &[("main", "")]);
    let error = common::ended_with(doomed_connection, NO_HANG).await;
    assert_eq!(error.code().map(|c| c.code()), Some("57P01"), "{error}");
    let message = error.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("tenant \"doomed\" was deleted")),
        "{message:?}"
    );
    node.wait_parked(1);

    // Shutdown: the last parked client is told, and the pooler exits.
    node.proc.signal(SIGTERM);
    let error = common::ended_with(last_connection, NO_HANG).await;
    assert_eq!(error.code().map(|c| c.code()), Some("57P01"), "{error}");
    let status = node
        .proc
        .wait_exit(NO_HANG)
        .expect("tidepool did not exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", node.proc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_parking_off_idle_clients_keep_their_tasks() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let node = Node::start(&pg, "park_idle_clients = false", &[("main", "")]);
    let client = connect(&node.url("main")).await;
    assert_eq!(text(&client, "SELECT 1").await, "1");
    // Longer than parking takes when it is on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(node.gauge("tidepool_parked_clients"), 0);
    assert_eq!(text(&client, "SELECT 2").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_parked_or_just_logged_in_are_freed_however_they_leave() {
    let pg = PgServer::start();
    pg.create_user(USER, PASSWORD).await;
    let node = Node::start(&pg, "", &[("main", "")]);
    let user = format!("{USER}.main");
    let port = node.proc.port();
    let terminate = wire::message(b'X', &[]);
    let mut query = wire::query("SELECT 1");

    // Right after the login, before any query: a Terminate, a bare close.
    let mut prompt = WireClient::login(port, &user, PASSWORD).await;
    prompt.send(&terminate).await;
    prompt.expect_closed(NO_HANG).await;
    WireClient::login(port, &user, PASSWORD)
        .await
        .drop_without_terminate();

    // While parked: a Terminate; a bare close; a Terminate with bytes after it;
    // the first bytes of a query, then a close. And one that stays.
    let mut parked = Vec::new();
    for _ in 0..5 {
        parked.push(WireClient::login(port, &user, PASSWORD).await);
    }
    node.wait_parked(5);
    let mut stays = parked.pop().unwrap();
    let mut torn = parked.pop().unwrap();
    torn.send(&query[..3]).await;
    torn.drop_without_terminate();
    let mut chatty = parked.pop().unwrap();
    let mut last_words = terminate.clone();
    last_words.append(&mut query);
    chatty.send(&last_words).await;
    chatty.expect_closed(NO_HANG).await;
    parked.pop().unwrap().drop_without_terminate();
    let mut polite = parked.pop().unwrap();
    polite.send(&terminate).await;
    polite.expect_closed(NO_HANG).await;

    node.wait_parked(1);
    let mut last = 0;
    assert!(
        wait_until(NO_HANG, || {
            last = node.of_tenant("tidepool_client_connections", "main");
            last == 1
        }),
        "{last} clients counted, not 1\n{}",
        node.proc.log()
    );
    assert_eq!(stays.query_value("SELECT 41 + 1").await, "42");
    assert!(!node.proc.log().contains("panicked"), "{}", node.proc.log());
}
