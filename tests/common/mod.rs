//! Integration-test harness: a throwaway PostgreSQL server per test
//! ([`PgServer`]) and the `tidepool` binary run as a child process
//! ([`TidepoolProc`]).
//!
//! Test files use it with `mod common;`. It owns processes and temporary
//! directories and cleans both up on drop; it never talks the wire protocol
//! itself (tests use `tokio-postgres` for that), and it does not depend on
//! the crates under test, so it keeps working while they change.
//!
//! Everything here panics with a readable message instead of returning
//! errors: in a test harness a panic *is* the failure report.

// Each test binary uses a different subset of the harness.
#![allow(dead_code, unused_imports)]
// The harness is test-only code that reports failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod pooler;
mod postgres;
pub mod wire;

pub use cluster::bin_dir;
pub use cluster::{psql_program, run_psql};
pub use pooler::{listen_port_from_args, PoolMode, TidepoolProc};
pub use pooler::{SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
pub use postgres::{
    connect, connect_watched, ended_with, ended_with_sqlstate, simple_value, try_connect, PgServer,
    SUPERUSER, SUPERUSER_PASSWORD,
};
pub use wire::{BackendMessage, Next, WireClient};

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Loopback address every server in the tests listens on.
pub const HOST: &str = "127.0.0.1";

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process could take it
/// in between; callers that bind it themselves retry on "address in use".
/// Ports come from below the kernel's ephemeral range when there is room, so an
/// outgoing connection of some other test cannot be holding the port as its
/// local end when the caller binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if low > 12_000 {
        let span = low - 10_000;
        let seed = std::process::id().wrapping_mul(2_654_435_761);
        for _ in 0..200 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = 10_000 + (seed.wrapping_add(n.wrapping_mul(7_919)) % span);
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return port;
            }
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to pick a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the address of a bound socket: {e}"))
        .port()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` right now.
pub fn accepts_tcp(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok()
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
/// Returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `lines` lines of a log file, for panic messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    format!(
        "--- last {} lines of {} ---\n{}\n--- end of log ---",
        all.len() - start,
        path.display(),
        all[start..].join("\n")
    )
}

/// Metric `name` without labels, from the metrics endpoint on `api_port`.
pub fn process_metric(api_port: u16, name: &str) -> u64 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let body = agent
        .get(format!("http://{HOST}:{api_port}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET /metrics body: {e}"));
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
}

/// A `[[tenants]]` entry (pool size 2, database `postgres` on `pg_port`) with
/// `extra` keys, and one `[[tenants.users]]` entry.
pub fn tenant_toml(id: &str, pg_port: u16, extra: &str, user: &str, password: &str) -> String {
    format!(
        "\n[[tenants]]\nexternal_id = \"{id}\"\ndb_host = \"{HOST}\"\ndb_port = {pg_port}\n\
         db_database = \"postgres\"\ndefault_pool_size = 2\n{extra}\n\n\
         [[tenants.users]]\ndb_user = \"{user}\"\ndb_password = \"{password}\"\n"
    )
}

/// `postgres://user:password@127.0.0.1:port/database`, with the user and
/// password percent-encoded so any test credential works.
pub fn postgres_url(user: &str, password: &str, port: u16, database: &str) -> String {
    format!(
        "postgres://{}:{}@{HOST}:{port}/{}",
        percent_encode(user),
        percent_encode(password),
        percent_encode(database)
    )
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
