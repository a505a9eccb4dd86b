//! `pgclients`: the benchmark's own Postgres client, for what pgbench cannot
//! do: hold thousands of idle authenticated connections (`idle`), and open,
//! log in and close connections as fast as a pooler accepts them (`storm`).
//!
//! It only ever connects to 127.0.0.0/8, spreads its source addresses over
//! 127.0.0.2..=127.0.0.250 so that thousands of connections do not exhaust one
//! address's ephemeral ports, and stops by itself (every wait is bounded).
//! The password comes from `PGPASSWORD`. Results are printed as `key=value`
//! lines on stdout for bench/run.sh to read.

mod idle;
mod login;
mod scram;
mod storm;
mod tls;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use login::LoginTarget;
use scram::KeyCache;

const USAGE: &str = "usage:
  pgclients idle  --server 127.0.0.1:PORT --user U --database D --count N
                  [--concurrency 64] [--ready-file PATH] [--hold-secs 600]
                  [--login-timeout-secs 30] [--open-timeout-secs 600] [--tls on|off]
  pgclients storm --server 127.0.0.1:PORT --user U --database D --secs T
                  [--concurrency 32] [--login-timeout-secs 10] [--tls on|off]
The password is read from PGPASSWORD. --tls on: TLS as sslmode=require (no
certificate check).";

/// What every login shares: where to go, as whom, and the unique parts.
pub struct Context {
    pub target: LoginTarget,
    pub login_timeout: Duration,
    /// Set with `--tls on`.
    pub tls: Option<tokio_rustls::TlsConnector>,
    nonce_seed: [u8; 16],
    nonce_counter: AtomicU64,
    next_source: AtomicUsize,
}

impl Context {
    /// A client nonce unique within this process (random seed + counter).
    pub fn next_nonce(&self) -> String {
        let mut raw = [0u8; 24];
        raw[..16].copy_from_slice(&self.nonce_seed);
        let count = self.nonce_counter.fetch_add(1, Ordering::Relaxed);
        raw[16..].copy_from_slice(&count.to_be_bytes());
        BASE64.encode(raw)
    }

    /// The next source address, round robin over 127.0.0.2..=127.0.0.250.
    pub fn next_source(&self) -> Ipv4Addr {
        let index = self.next_source.fetch_add(1, Ordering::Relaxed) % 249;
        Ipv4Addr::new(127, 0, 0, 2 + index as u8)
    }
}

struct Args {
    mode: String,
    options: Vec<(String, String)>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut raw = std::env::args().skip(1);
        let mode = raw.next().ok_or("missing mode")?;
        let mut options = Vec::new();
        while let Some(key) = raw.next() {
            let name = key
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {key:?}"))?;
            let value = raw.next().ok_or_else(|| format!("{key} needs a value"))?;
            options.push((name.to_string(), value));
        }
        Ok(Args { mode, options })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("--{name} is required"))
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|_| format!("--{name}: {value:?} is not a whole number")),
        }
    }

    fn check_known(&self, known: &[&str]) -> Result<(), String> {
        match self
            .options
            .iter()
            .find(|(key, _)| !known.contains(&key.as_str()))
        {
            Some((key, _)) => Err(format!("unknown option --{key} for {}", self.mode)),
            None => Ok(()),
        }
    }
}

fn build_context(args: &Args, default_login_timeout: u64) -> Result<Context, String> {
    let server: SocketAddr = args
        .required("server")?
        .parse()
        .map_err(|_| "--server must be IP:PORT".to_string())?;
    match server {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {}
        _ => return Err("--server must be an IPv4 loopback address (127.0.0.0/8)".into()),
    }
    let password = std::env::var("PGPASSWORD").map_err(|_| "PGPASSWORD is not set".to_string())?;
    let tls = match args.get("tls").unwrap_or("off") {
        "on" => Some(tls::connector()),
        "off" => None,
        other => return Err(format!("--tls: {other:?} is neither on nor off")),
    };
    let mut nonce_seed = [0u8; 16];
    read_urandom(&mut nonce_seed).map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(Context {
        target: LoginTarget {
            server,
            user: args.required("user")?.to_string(),
            database: args.required("database")?.to_string(),
            keys: KeyCache::new(password),
        },
        login_timeout: Duration::from_secs(
            args.number("login-timeout-secs", default_login_timeout)?
                .max(1),
        ),
        tls,
        nonce_seed,
        nonce_counter: AtomicU64::new(0),
        next_source: AtomicUsize::new(0),
    })
}

fn read_urandom(buffer: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buffer)
}

fn run() -> Result<(), String> {
    let args = Args::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    match args.mode.as_str() {
        "idle" => {
            args.check_known(&[
                "server",
                "user",
                "database",
                "count",
                "concurrency",
                "ready-file",
                "hold-secs",
                "login-timeout-secs",
                "open-timeout-secs",
                "tls",
            ])?;
            let context = build_context(&args, 30)?;
            let plan = idle::IdlePlan {
                count: args.number("count", 0)? as usize,
                concurrency: args.number("concurrency", 64)?.max(1) as usize,
                ready_file: args.get("ready-file").map(str::to_string),
                hold: Duration::from_secs(args.number("hold-secs", 600)?),
                open_timeout: Duration::from_secs(args.number("open-timeout-secs", 600)?.max(1)),
            };
            runtime.block_on(idle::run(context, plan))
        }
        "storm" => {
            args.check_known(&[
                "server",
                "user",
                "database",
                "secs",
                "concurrency",
                "login-timeout-secs",
                "tls",
            ])?;
            let context = build_context(&args, 10)?;
            let plan = storm::StormPlan {
                duration: Duration::from_secs(args.number("secs", 10)?.max(1)),
                concurrency: args.number("concurrency", 32)?.max(1) as usize,
            };
            runtime.block_on(storm::run(context, plan))
        }
        other => Err(format!("unknown mode {other:?}")),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pgclients: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
