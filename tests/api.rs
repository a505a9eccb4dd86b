//! The management API end to end: the real `tidepool` binary with its HTTP API
//! and a metadata store in a real Postgres, driven with a real HTTP client
//! (`ureq`) and real Postgres clients (`tokio-postgres`).
//!
//! One Postgres holds both the store (database `tidepool_meta`) and the tenants'
//! upstream database (`postgres`, user `app`).

// Test code reports failures by panicking, helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{accepts_tcp, free_port, wait_until, PgServer, TidepoolProc, HOST};
use serde_json::{json, Value};
use tokio_postgres::Client;

const API_SECRET: &str = "api-test-secret";
/// Base64 of 32 bytes, as `head -c32 /dev/urandom | base64` prints.
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const OTHER_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const APP_PASSWORD: &str = "app-Pa55word";
const NO_HANG: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- HTTP ---

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_with(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn good_token() -> String {
    token_with(API_SECRET, json!({"role": "service", "exp": now() + 600}))
}

/// One HTTP answer.
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A client of one node's API.
struct Api {
    base: String,
    agent: ureq::Agent,
    /// `Authorization` header value sent with every request, if any.
    auth: Option<String>,
}

impl Api {
    fn new(port: u16) -> Api {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(NO_HANG))
            .build()
            .into();
        Api {
            base: format!("http://{HOST}:{port}"),
            agent,
            auth: Some(format!("Bearer {}", good_token())),
        }
    }

    fn with_auth(&self, auth: Option<String>) -> Api {
        Api {
            base: self.base.clone(),
            agent: self.agent.clone(),
            auth,
        }
    }

    fn reply(result: Result<http_response::Response, ureq::Error>) -> Reply {
        let mut response = result.unwrap_or_else(|e| panic!("HTTP request failed: {e}"));
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Reply {
            status: response.status().as_u16(),
            content_type,
            body: response.body_mut().read_to_string().unwrap(),
        }
    }

    fn get(&self, path: &str) -> Reply {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            request = request.header("authorization", auth);
        }
        Self::reply(request.call())
    }

    fn delete(&self, path: &str) -> Reply {
        let mut request = self.agent.delete(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            request = request.header("authorization", auth);
        }
        Self::reply(request.call())
    }

    fn post(&self, path: &str) -> Reply {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            request = request.header("authorization", auth);
        }
        Self::reply(request.send_empty())
    }

    fn put_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Reply {
        let mut request = self
            .agent
            .put(format!("{}{path}", self.base))
            .content_type("application/json");
        if let Some(auth) = &self.auth {
            request = request.header("authorization", auth);
        }
        Self::reply(request.send(body.into()))
    }

    fn put(&self, path: &str, body: &Value) -> Reply {
        self.put_raw(path, body.to_string())
    }
}

/// Sends only the head of a PUT announcing `length` body bytes; returns the
/// status line of the answer.
fn raw_put_headers(api: &Api, path: &str, length: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let address = api.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(NO_HANG)).unwrap();
    let auth = api.auth.clone().unwrap_or_default();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

/// `ureq`'s response type, named once.
mod http_response {
    pub type Response = ureq::http::Response<ureq::Body>;
}

/// Asserts `reply` has `status`, showing the body when not.
#[track_caller]
fn expect(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "body: {}", reply.body);
}

/// The first message under `errors.<field>` of an error reply.
#[track_caller]
fn error_for(reply: &Reply, field: &str) -> String {
    let body = reply.json();
    body["errors"][field][0]
        .as_str()
        .unwrap_or_else(|| panic!("no errors.{field:?} in {body}"))
        .to_owned()
}

// ---------------------------------------------------------------- setup ---

/// A tenant body for `pg`'s `app` user.
fn tenant(pg: &PgServer, pool_size: u32) -> Value {
    json!({"tenant": {
        "db_host": HOST,
        "db_port": pg.port(),
        "db_database": "postgres",
        "default_max_clients": 50,
        "users": [{
            "db_user": "app",
            "db_password": APP_PASSWORD,
            "pool_size": pool_size,
            "mode_type": "transaction",
        }],
    }})
}

/// A Postgres with the `app` user and an empty store database.
/// The value of metric `name` for tenant `tenant` in a Prometheus text body.
fn metric_value(body: &str, name: &str, tenant: &str) -> Option<f64> {
    let prefix = format!("{name}{{tenant=\"{tenant}\",");
    body.lines()
        .find(|line| line.starts_with(&prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn postgres() -> PgServer {
    let pg = PgServer::start();
    pg.create_user("app", APP_PASSWORD).await;
    pg.execute("CREATE DATABASE tidepool_meta").await;
    pg
}

fn store_url(pg: &PgServer) -> String {
    pg.url("postgres", "postgres", "tidepool_meta")
}

/// One Tidepool process with its API.
struct Node {
    proc: TidepoolProc,
    api: Api,
    _dir: tempfile::TempDir,
}

impl Node {
    /// A node on `store` with `extra` TOML appended (file tenants, say).
    fn start(store: &str, extra: &str) -> Node {
        Self::start_with(&format!(
            "[metadata]\nurl = \"{store}\"\nencryption_key = \"{KEY}\"\n{extra}"
        ))
    }

    /// A node whose file holds `body` after `[server]` and `[api]`.
    fn start_with(body: &str) -> Node {
        let port = free_port();
        let api_port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidepool.toml");
        let text = format!(
            "[server]\nlisten = \"{HOST}:{port}\"\nshutdown_timeout_ms = 2000\n\n\
             [api]\nlisten = \"{HOST}:{api_port}\"\njwt_secret = \"{API_SECRET}\"\n\n{body}"
        );
        std::fs::write(&path, text).unwrap();
        let proc = TidepoolProc::start_on(port, &["--config", path.to_str().unwrap()]);
        assert!(
            wait_until(NO_HANG, || accepts_tcp(api_port)),
            "the API does not listen\n{}",
            proc.log()
        );
        Node {
            proc,
            api: Api::new(api_port),
            _dir: dir,
        }
    }

    fn url(&self, tenant: &str) -> String {
        self.proc
            .url(&format!("app.{tenant}"), APP_PASSWORD, "postgres")
    }
}

async fn login(url: &str) -> Result<Client, tokio_postgres::Error> {
    common::try_connect(url).await
}

/// Waits until a client has nothing in flight. After `query_one`, tokio-postgres
/// closes its statement in the background; a FATAL arriving while that Close is
/// unanswered goes to the Close's (dropped) caller, and the connection then ends
/// as merely "closed". A simple query sent now is answered after the Close.
async fn settle(client: &Client) {
    client.batch_execute("SELECT 1").await.unwrap();
}

async fn select_one(client: &Client) -> i32 {
    client.query_one("SELECT 1", &[]).await.unwrap().get(0)
}

/// Polls `path` on `api` until it answers `status`; returns how long it took.
fn wait_for_status(api: &Api, path: &str, status: u16, timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut last = 0;
    let seen = wait_until(timeout, || {
        last = api.get(path).status;
        last == status
    });
    assert!(seen, "GET {path} still answers {last}, not {status}");
    start.elapsed()
}

// ---------------------------------------------------------------- tests ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_lifecycle_through_the_api() {
    let pg = postgres().await;
    let node = Node::start(&store_url(&pg), "");
    let api = &node.api;

    // Create.
    let created = api.put("/api/tenants/t1", &tenant(&pg, 2));
    expect(&created, 201);
    let data = &created.json()["data"];
    assert_eq!(data["external_id"], "t1");
    assert_eq!(data["source"], "store");
    assert_eq!(data["users"][0]["pool_size"], 2);

    let client = login(&node.url("t1")).await.unwrap();
    assert_eq!(select_one(&client).await, 1);

    // Replace: 200, and the change is visible.
    let updated = api.put("/api/tenants/t1", &tenant(&pg, 3));
    expect(&updated, 200);
    assert_eq!(updated.json()["data"]["users"][0]["pool_size"], 3);
    let read = api.get("/api/tenants/t1");
    expect(&read, 200);
    assert_eq!(read.json()["data"]["users"][0]["pool_size"], 3);
    assert_eq!(select_one(&client).await, 1, "an update keeps clients");

    // Read and list: never a password.
    let list = api.get("/api/tenants");
    expect(&list, 200);
    let all = list.json()["data"].as_array().unwrap().clone();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["external_id"], "t1");
    assert_eq!(all[0]["source"], "store");
    for reply in [&created, &updated, &read, &list] {
        assert!(!reply.body.contains(APP_PASSWORD), "{}", reply.body);
        assert!(!reply.body.contains("db_password"), "{}", reply.body);
    }

    // Metrics of the tenant.
    let metrics = api.get("/metrics");
    expect(&metrics, 200);
    assert!(metrics
        .content_type
        .starts_with("text/plain; version=0.0.4"));
    assert!(
        metrics
            .body
            .contains(r#"tidepool_client_connections{tenant="t1",user="app""#),
        "{}",
        metrics.body
    );
    // The work done so far is counted: one login, its queries (tokio-postgres
    // prepares named statements, so the statement cache saw them) and bytes.
    let of_t1 = api.get("/metrics/t1");
    expect(&of_t1, 200);
    for (name, at_least) in [
        ("tidepool_client_connections", 1.0),
        ("tidepool_client_logins_total", 1.0),
        ("tidepool_transactions_total", 2.0),
        ("tidepool_queries_total", 2.0),
        ("tidepool_client_received_bytes_total", 1.0),
        ("tidepool_client_sent_bytes_total", 1.0),
        ("tidepool_prepared_statement_prepares_total", 1.0),
        ("tidepool_server_connections_idle", 1.0),
        ("tidepool_transaction_duration_seconds_count", 2.0),
    ] {
        let value = metric_value(&of_t1.body, name, "t1")
            .unwrap_or_else(|| panic!("{name} missing:\n{}", of_t1.body));
        assert!(value >= at_least, "{name} = {value}:\n{}", of_t1.body);
    }
    expect(&api.get("/metrics/nope"), 404);

    // Terminate: the client is sent away, the tenant stays, new clients work.
    let (watched, connection) = common::connect_watched(&node.url("t1"), NO_HANG).await;
    assert_eq!(select_one(&watched).await, 1);
    settle(&watched).await;
    expect(&api.post("/api/tenants/t1/terminate"), 204);
    assert_eq!(
        common::ended_with_sqlstate(connection, NO_HANG).await,
        "57P01"
    );
    let again = login(&node.url("t1")).await.unwrap();
    assert_eq!(select_one(&again).await, 1);
    expect(&api.post("/api/tenants/nope/terminate"), 404);

    // Delete: the client gets a FATAL, new logins fail, the tenant is gone.
    let (watched, connection) = common::connect_watched(&node.url("t1"), NO_HANG).await;
    assert_eq!(select_one(&watched).await, 1);
    settle(&watched).await;
    expect(&api.delete("/api/tenants/t1"), 204);
    assert_eq!(
        common::ended_with_sqlstate(connection, NO_HANG).await,
        "57P01"
    );
    assert!(login(&node.url("t1")).await.is_err());
    let gone = api.get("/api/tenants/t1");
    expect(&gone, 404);
    assert!(gone.json()["errors"].is_object());
    expect(&api.delete("/api/tenants/t1"), 404);
    let list = api.get("/api/tenants");
    assert_eq!(list.json()["data"], json!([]));
    expect(&api.get("/api/nothing-here"), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_naming_the_field() {
    let pg = postgres().await;
    let node = Node::start(&store_url(&pg), "");
    let api = &node.api;

    let mut bad_port = tenant(&pg, 2);
    bad_port["tenant"]["db_port"] = json!(70000);
    let reply = api.put("/api/tenants/t1", &bad_port);
    expect(&reply, 422);
    assert_eq!(error_for(&reply, "db_port"), "must be between 1 and 65535");

    let mut bad_mode = tenant(&pg, 2);
    bad_mode["tenant"]["users"][0]["mode_type"] = json!("statement");
    let reply = api.put("/api/tenants/t1", &bad_mode);
    expect(&reply, 422);
    assert!(error_for(&reply, "users[0].mode_type").contains("statement"));

    let mut unknown = tenant(&pg, 2);
    unknown["tenant"]["bogus"] = json!(1);
    let reply = api.put("/api/tenants/t1", &unknown);
    expect(&reply, 422);
    assert!(error_for(&reply, "bogus").contains("unknown field"));

    let mut wrong_type = tenant(&pg, 2);
    wrong_type["tenant"]["users"][0]["pool_size"] = json!("big");
    let reply = api.put("/api/tenants/t1", &wrong_type);
    expect(&reply, 422);
    error_for(&reply, "users[0].pool_size");

    let reply = api.put_raw("/api/tenants/t1", "{\"tenant\": {");
    expect(&reply, 422);
    assert!(error_for(&reply, "body").contains("invalid JSON"));
    let reply = api.put_raw("/api/tenants/t1", vec![0xff, 0x00, 0x7b]);
    expect(&reply, 422);
    let reply = api.put_raw("/api/tenants/t1", "{}");
    expect(&reply, 422);
    error_for(&reply, "tenant");

    let mut other_id = tenant(&pg, 2);
    other_id["tenant"]["external_id"] = json!("t2");
    let reply = api.put("/api/tenants/t1", &other_id);
    expect(&reply, 422);
    error_for(&reply, "external_id");
    let reply = api.put("/api/tenants/bad%20id", &tenant(&pg, 2));
    expect(&reply, 422);
    error_for(&reply, "external_id");

    let mut no_users = tenant(&pg, 2);
    no_users["tenant"]["users"] = json!([]);
    let reply = api.put("/api/tenants/t1", &no_users);
    expect(&reply, 422);
    error_for(&reply, "users");

    // Over 1 MiB: refused on its Content-Length, before the body is read (a client
    // still sending it could see its write fail instead of the answer, so the
    // request is written by hand).
    let status_line = raw_put_headers(&node.api, "/api/tenants/t1", 2 * 1024 * 1024);
    assert!(status_line.contains(" 413 "), "{status_line}");

    // Nothing was stored, and the node still serves.
    expect(&api.get("/api/tenants/t1"), 404);
    expect(&api.put("/api/tenants/t1", &tenant(&pg, 2)), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked() {
    let pg = postgres().await;
    let node = Node::start(&store_url(&pg), "");
    let api = &node.api;

    let missing = api.with_auth(None).get("/api/tenants");
    expect(&missing, 401);
    error_for(&missing, "detail");
    expect(
        &api.with_auth(None).put("/api/tenants/t1", &tenant(&pg, 2)),
        401,
    );

    let forged = token_with("not-the-secret", json!({"exp": now() + 600}));
    let reply = api
        .with_auth(Some(format!("Bearer {forged}")))
        .get("/api/tenants");
    expect(&reply, 403);
    assert!(!reply.body.contains(&forged));

    let expired = token_with(API_SECRET, json!({"exp": now() - 3600}));
    let reply = api
        .with_auth(Some(format!("Bearer {expired}")))
        .get("/api/tenants");
    expect(&reply, 403);
    assert!(error_for(&reply, "detail").contains("expired"));

    for junk in ["Bearer", "Bearer not-a-jwt", "Basic YWRtaW46YWRtaW4="] {
        expect(
            &api.with_auth(Some(junk.into())).delete("/api/tenants/t1"),
            403,
        );
    }

    // Without `exp` (as Supavisor accepts them).
    let forever = token_with(API_SECRET, json!({"role": "service"}));
    expect(
        &api.with_auth(Some(format!("Bearer {forever}")))
            .get("/api/tenants"),
        200,
    );

    // Open endpoints.
    let open = api.with_auth(None);
    expect(&open.get("/api/health"), 200);
    expect(&open.get("/metrics"), 200);
    expect(&open.get("/api/openapi"), 200);
    assert!(!node.proc.log().contains(&good_token()[..20]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_survive_a_restart() {
    let pg = postgres().await;
    let store = store_url(&pg);
    let node = Node::start(&store, "");
    expect(&node.api.put("/api/tenants/t1", &tenant(&pg, 2)), 201);
    drop(node);

    let node = Node::start(&store, "");
    let read = node.api.get("/api/tenants/t1");
    expect(&read, 200);
    assert_eq!(read.json()["data"]["source"], "store");
    let client = login(&node.url("t1")).await.unwrap();
    assert_eq!(select_one(&client).await, 1);
    // The password was stored encrypted, and decrypted with the key.
    let stored = pg
        .psql(&["-d", "tidepool_meta", "-c", "SELECT 1"])
        .trim()
        .to_owned();
    assert_eq!(stored, "1");
    let dump = pg_dump_text(&pg);
    assert!(!dump.contains(APP_PASSWORD), "password stored in clear");
}

/// Every row of every table of the store database, as text.
fn pg_dump_text(pg: &PgServer) -> String {
    let tables = pg.psql(&[
        "-d",
        "tidepool_meta",
        "-c",
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    ]);
    let mut out = String::new();
    for table in tables.lines().filter(|l| !l.is_empty()) {
        out.push_str(&pg.psql(&[
            "-d",
            "tidepool_meta",
            "-c",
            &format!("SELECT t::text FROM {table} t"),
        ]));
    }
    assert!(!out.is_empty(), "the store holds nothing");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_follow_one_store() {
    let pg = postgres().await;
    let store = store_url(&pg);
    let a = Node::start(&store, "");
    let b = Node::start(&store, "");

    expect(&a.api.put("/api/tenants/t1", &tenant(&pg, 2)), 201);
    let took = wait_for_status(&b.api, "/api/tenants/t1", 200, Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(3),
        "B saw the tenant after {took:?}"
    );
    let client = login(&b.url("t1")).await.unwrap();
    assert_eq!(select_one(&client).await, 1);

    // A change on B reaches A.
    expect(&b.api.put("/api/tenants/t1", &tenant(&pg, 4)), 200);
    let start = Instant::now();
    let seen = wait_until(Duration::from_secs(5), || {
        a.api.get("/api/tenants/t1").json()["data"]["users"][0]["pool_size"] == 4
    });
    assert!(seen, "A did not see B's change");
    assert!(start.elapsed() < Duration::from_secs(3));

    // Terminate on A sends B's clients away.
    let (watched, connection) = common::connect_watched(&b.url("t1"), NO_HANG).await;
    assert_eq!(select_one(&watched).await, 1);
    settle(&watched).await;
    expect(&a.api.post("/api/tenants/t1/terminate"), 204);
    assert_eq!(
        common::ended_with_sqlstate(connection, NO_HANG).await,
        "57P01"
    );

    // Delete on A removes it from B.
    let (watched, connection) = common::connect_watched(&b.url("t1"), NO_HANG).await;
    assert_eq!(select_one(&watched).await, 1);
    settle(&watched).await;
    expect(&a.api.delete("/api/tenants/t1"), 204);
    wait_for_status(&b.api, "/api/tenants/t1", 404, Duration::from_secs(5));
    assert_eq!(
        common::ended_with_sqlstate(connection, NO_HANG).await,
        "57P01"
    );
    assert!(login(&b.url("t1")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_store() {
    let upstream = postgres().await;
    let store_pg = PgServer::start();
    store_pg.execute("CREATE DATABASE tidepool_meta").await;
    let node = Node::start(&store_url(&store_pg), "");
    let open = node.api.with_auth(None);

    let health = open.get("/api/health");
    expect(&health, 200);
    let data = &health.json()["data"];
    assert_eq!(data["status"], "ok");
    assert_eq!(data["store"], "ok");
    expect(&node.api.put("/api/tenants/t1", &tenant(&upstream, 2)), 201);

    drop(store_pg);
    let health = open.get("/api/health");
    expect(&health, 503);
    assert_eq!(health.json()["data"]["store"], "unavailable");
    // Tenants already loaded keep working without the store.
    let client = login(&node.url("t1")).await.unwrap();
    assert_eq!(select_one(&client).await, 1);
    // Writes answer 503 instead of hanging.
    let reply = node.api.put("/api/tenants/t2", &tenant(&upstream, 2));
    expect(&reply, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_shutdown() {
    let pg = postgres().await;
    let node = Node::start(&store_url(&pg), "");
    expect(&node.api.put("/api/tenants/t1", &tenant(&pg, 2)), 201);
    let client = login(&node.url("t1")).await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();

    // An open transaction holds the shutdown; the API answers meanwhile.
    node.proc.signal(common::SIGTERM);
    let open = node.api.with_auth(None);
    let mut last = String::new();
    let seen = wait_until(Duration::from_secs(5), || {
        let health = open.get("/api/health");
        last = health.body.clone();
        health.status == 503 && health.json()["data"]["shutting_down"] == true
    });
    assert!(seen, "health during shutdown: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_swagger_ui_are_served() {
    let pg = postgres().await;
    let node = Node::start(&store_url(&pg), "");
    let open = node.api.with_auth(None);

    let doc = open.get("/api/openapi");
    expect(&doc, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/tenants",
        "/api/tenants/{id}",
        "/api/tenants/{id}/terminate",
        "/api/health",
        "/metrics",
        "/metrics/{tenant}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} not documented");
    }
    assert!(doc["paths"]["/api/tenants/{id}"].get("put").is_some());
    assert!(doc["components"]["schemas"].get("Tenant").is_some());

    for path in ["/swaggerui", "/swaggerui/"] {
        let ui = open.get(path);
        expect(&ui, 200);
        assert!(
            ui.content_type.starts_with("text/html"),
            "{}",
            ui.content_type
        );
        assert!(ui.body.contains("swagger"), "{}", ui.body);
    }
    let init = open.get("/swaggerui/swagger-initializer.js");
    expect(&init, 200);
    assert!(init.body.contains("/api/openapi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_tenants_are_read_only() {
    let pg = postgres().await;
    let file_tenant = format!(
        "[[tenants]]\nexternal_id = \"main\"\ndb_host = \"{HOST}\"\ndb_port = {}\n\
         db_database = \"postgres\"\n[[tenants.users]]\ndb_user = \"app\"\n\
         db_password = \"{APP_PASSWORD}\"\n",
        pg.port()
    );
    let node = Node::start(&store_url(&pg), &file_tenant);
    let api = &node.api;

    let read = api.get("/api/tenants/main");
    expect(&read, 200);
    assert_eq!(read.json()["data"]["source"], "file");
    assert!(!read.body.contains(APP_PASSWORD));

    let reply = api.put("/api/tenants/main", &tenant(&pg, 2));
    expect(&reply, 409);
    assert_eq!(
        error_for(&reply, "external_id"),
        "tenant is defined in the configuration file; change it there"
    );
    expect(&api.delete("/api/tenants/main"), 409);
    let client = login(&node.url("main")).await.unwrap();
    assert_eq!(select_one(&client).await, 1);

    // Store tenants live beside file tenants.
    expect(&api.put("/api/tenants/t1", &tenant(&pg, 2)), 201);
    let list = api.get("/api/tenants").json();
    let sources: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["external_id"].as_str().unwrap().to_owned(),
                t["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("main".into(), "file".into()),
            ("t1".into(), "store".into())
        ]
    );
}

// ------------------------------------------- environment and start-up ---

/// A `tidepool` started with environment variables; killed on drop.
struct EnvProc {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EnvProc {
    /// Starts `tidepool args` with `env` and waits until `port` accepts TCP.
    fn start(args: &[&str], env: &[(&str, &str)], port: u16) -> EnvProc {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tidepool.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidepool"));
        command
            .args(args)
            .env_remove("API_JWT_SECRET")
            .env_remove("METRICS_JWT_SECRET")
            .env_remove("TIDEPOOL_ENCRYPTION_KEY")
            .env_remove("TIDEPOOL_METADATA_URL")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut proc = EnvProc {
            child: command.spawn().unwrap(),
            log,
            _dir: dir,
        };
        let up = wait_until(NO_HANG, || {
            accepts_tcp(port) || proc.child.try_wait().unwrap().is_some()
        });
        assert!(
            up && accepts_tcp(port),
            "tidepool {args:?} did not listen on {port}:\n{}",
            std::fs::read_to_string(&proc.log).unwrap_or_default()
        );
        proc
    }
}

impl Drop for EnvProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tidepool args` with `env` to completion; returns (exit code, output).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidepool"));
    command
        .args(args)
        .env_remove("API_JWT_SECRET")
        .env_remove("METRICS_JWT_SECRET")
        .env_remove("TIDEPOOL_ENCRYPTION_KEY")
        .env_remove("TIDEPOOL_METADATA_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + NO_HANG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tidepool {args:?} did not exit within {NO_HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_store_from_the_environment() {
    let pg = postgres().await;
    let port = free_port();
    let api_port = free_port();
    let listen = format!("{HOST}:{port}");
    let api_listen = format!("{HOST}:{api_port}");
    let store = store_url(&pg);
    let metrics_secret = "metrics-secret";
    let upstream = pg.url("app", APP_PASSWORD, "postgres");
    let _node = EnvProc::start(
        &[
            "--upstream",
            &upstream,
            "--listen",
            &listen,
            "--api-listen",
            &api_listen,
        ],
        &[
            ("API_JWT_SECRET", API_SECRET),
            ("METRICS_JWT_SECRET", metrics_secret),
            ("TIDEPOOL_METADATA_URL", &store),
            ("TIDEPOOL_ENCRYPTION_KEY", KEY),
        ],
        port,
    );
    assert!(wait_until(NO_HANG, || accepts_tcp(api_port)));
    let api = Api::new(api_port);
    // The single-upstream tenant is a file-like tenant; store tenants sit beside it.
    let list = api.get("/api/tenants");
    expect(&list, 200);
    assert_eq!(list.json()["data"][0]["source"], "file");
    expect(&api.put("/api/tenants/t1", &tenant(&pg, 2)), 201);
    let client = login(&format!(
        "postgres://app.t1:{APP_PASSWORD}@{HOST}:{port}/postgres"
    ))
    .await
    .unwrap();
    assert_eq!(select_one(&client).await, 1);

    // Metrics need a token signed with the metrics secret.
    let open = api.with_auth(None);
    expect(&open.get("/metrics"), 401);
    expect(&api.get("/metrics"), 403);
    let metrics = api.with_auth(Some(format!(
        "Bearer {}",
        token_with(metrics_secret, json!({"exp": now() + 60}))
    )));
    let reply = metrics.get("/metrics/t1");
    expect(&reply, 200);
    assert!(reply.body.contains("tidepool_client_connections"));
    expect(&open.get("/api/health"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_tenants_are_read_only() {
    let pg = postgres().await;
    let port = free_port();
    let api_port = free_port();
    let listen = format!("{HOST}:{port}");
    let api_listen = format!("{HOST}:{api_port}");
    let upstream = pg.url("app", APP_PASSWORD, "postgres");
    let _node = EnvProc::start(
        &[
            "--upstream",
            &upstream,
            "--listen",
            &listen,
            "--api-listen",
            &api_listen,
        ],
        &[("API_JWT_SECRET", API_SECRET)],
        port,
    );
    assert!(wait_until(NO_HANG, || accepts_tcp(api_port)));
    let api = Api::new(api_port);
    let list = api.get("/api/tenants");
    expect(&list, 200);
    let id = list.json()["data"][0]["external_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(id, "postgres");
    assert!(!list.body.contains(APP_PASSWORD));
    let reply = api.put("/api/tenants/t1", &tenant(&pg, 2));
    expect(&reply, 503);
    assert!(error_for(&reply, "detail").contains("no metadata store"));
    expect(&api.put("/api/tenants/postgres", &tenant(&pg, 2)), 409);
    expect(&api.delete("/api/tenants/t1"), 503);
    expect(&api.post("/api/tenants/postgres/terminate"), 204);
    let health = api.with_auth(None).get("/api/health");
    expect(&health, 200);
    assert_eq!(health.json()["data"]["store"], "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refusals() {
    let pg = postgres().await;
    let store = store_url(&pg);
    let listen = format!("{HOST}:{}", free_port());
    let api_listen = format!("{HOST}:{}", free_port());
    let upstream = pg.url("app", APP_PASSWORD, "postgres");

    // The API without its secret.
    let (code, out) = run_to_exit(
        &[
            "--upstream",
            &upstream,
            "--listen",
            &listen,
            "--api-listen",
            &api_listen,
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("API_JWT_SECRET"), "{out}");

    // A store without its key, with a malformed key, with the wrong key.
    let meta = ["--metadata-url", &store, "--listen", &listen];
    let (code, out) = run_to_exit(&meta, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("TIDEPOOL_ENCRYPTION_KEY"), "{out}");
    let (code, out) = run_to_exit(&meta, &[("TIDEPOOL_ENCRYPTION_KEY", "not-a-key-xyz")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("malformed") && !out.contains("not-a-key-xyz"),
        "{out}"
    );
    // First start with KEY creates the store; OTHER_KEY is then refused.
    {
        let node = Node::start(&store, "");
        expect(&node.api.get("/api/health"), 200);
    }
    let (code, out) = run_to_exit(&meta, &[("TIDEPOOL_ENCRYPTION_KEY", OTHER_KEY)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("TIDEPOOL_ENCRYPTION_KEY"), "{out}");
    assert!(!out.contains(OTHER_KEY) && !out.contains(KEY), "{out}");
    assert!(!out.contains("postgres:postgres@"), "{out}");

    // --check: zero file tenants are fine with a store, not without one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        format!("[metadata]\nurl = \"{store}\"\n[api]\nlisten = \"{api_listen}\"\n"),
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let (code, out) = run_to_exit(
        &["--config", config, "--check"],
        &[("API_JWT_SECRET", API_SECRET)],
    );
    assert_eq!(code, Some(0), "{out}");
    std::fs::write(&path, "[server]\n").unwrap();
    let (code, out) = run_to_exit(&["--config", config, "--check"], &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("tenants"), "{out}");
}
