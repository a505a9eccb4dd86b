//! The `tidepool` binary run as a child process for one test.
//!
//! [`TidepoolProc`] spawns the binary cargo built for this test run, sends its
//! stdout and stderr to a log file in a temporary directory, and waits until
//! its listen port accepts TCP. Dropping it kills the process. It knows the
//! command line only well enough to build the common single-upstream form
//! ([`TidepoolProc::start_single`]); everything else is passed through as is.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{accepts_tcp, free_port, log_tail, postgres_url, wait_until, PgServer, HOST};

// Linux signal numbers, for `TidepoolProc::signal`.
pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGQUIT: i32 = 3;
pub const SIGKILL: i32 = 9;
pub const SIGUSR1: i32 = 10;
pub const SIGUSR2: i32 = 12;
pub const SIGTERM: i32 = 15;

/// How long the binary may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
const LOG_TAIL_LINES: usize = 60;

/// Tidepool's `--pool-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    Transaction,
    Session,
}

impl PoolMode {
    pub fn as_arg(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// A running `tidepool` process; killed on drop.
pub struct TidepoolProc {
    child: Child,
    port: u16,
    exit_status: Option<ExitStatus>,
    // Set once a panic message has shown the log tail, so Drop does not
    // print it a second time.
    log_reported: bool,
    // Holds tidepool.log; kept until the process is gone.
    dir: tempfile::TempDir,
}

impl TidepoolProc {
    /// Spawns `tidepool` with `args`, which must contain `--listen
    /// 127.0.0.1:PORT` (or `--listen=...`); waits until that port accepts TCP.
    /// With `--config`, where the address is in the file, use [`Self::start_on`].
    pub fn start(args: &[&str]) -> TidepoolProc {
        let port = listen_port_from_args(args).unwrap_or_else(|| {
            panic!("TidepoolProc::start needs `--listen 127.0.0.1:PORT` in {args:?}; use start_on")
        });
        Self::start_on(port, args)
    }

    /// Spawns `tidepool` with `args` and waits until 127.0.0.1:`port` accepts
    /// TCP; panics with the log tail if it exits first or takes over 15 s.
    pub fn start_on(port: u16, args: &[&str]) -> TidepoolProc {
        Self::start_with_env(port, args, &[])
    }

    /// [`Self::start_on`] with extra environment variables (`RUST_LOG`, say).
    pub fn start_with_env(port: u16, args: &[&str], env: &[(&str, &str)]) -> TidepoolProc {
        let dir = tempfile::Builder::new()
            .prefix("tidepool-proc-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let log_path = dir.path().join("tidepool.log");
        let stdout = File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let stderr = stdout
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the log file handle: {e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", env!("CARGO_BIN_EXE_tidepool")));

        // From here on a panic drops `proc`, which kills the child.
        let mut proc = TidepoolProc {
            child,
            port,
            exit_status: None,
            log_reported: false,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = proc.try_exit_status() {
                proc.log_reported = true;
                panic!(
                    "tidepool {args:?} exited ({status}) before listening on {HOST}:{port}\n{}",
                    log_tail(&proc.log_path(), LOG_TAIL_LINES)
                );
            }
            if accepts_tcp(port) {
                return proc;
            }
            if Instant::now() >= deadline {
                proc.log_reported = true;
                panic!(
                    "tidepool {args:?} did not listen on {HOST}:{port} within {START_TIMEOUT:?}\n{}",
                    log_tail(&proc.log_path(), LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// One pool in front of `pg`: clients log in to Tidepool as
    /// `user`/`password`, which Tidepool also uses upstream (database
    /// `postgres`). Listens on a free port.
    pub fn start_single(
        pg: &PgServer,
        user: &str,
        password: &str,
        pool_size: u32,
        mode: PoolMode,
    ) -> TidepoolProc {
        let listen = format!("{HOST}:{}", free_port());
        let upstream = pg.url(user, password, "postgres");
        let pool_size = pool_size.to_string();
        Self::start(&[
            "--listen",
            &listen,
            "--upstream",
            &upstream,
            "--pool-size",
            &pool_size,
            "--pool-mode",
            mode.as_arg(),
        ])
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A URL for connecting to Tidepool as a client.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        postgres_url(user, password, self.port, database)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tidepool.log")
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle`; returns whether it appeared.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Sends signal number `sig` (see the `SIG*` constants) with `kill -s`.
    pub fn signal(&self, sig: i32) {
        let status = Command::new("kill")
            .args(["-s", &sig.to_string(), &self.pid().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(
            status.success(),
            "kill -s {sig} {} failed ({status})",
            self.pid()
        );
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still
    /// running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has exited (remembered once reaped).
    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("cannot poll tidepool's status: {e}"));
        }
        self.exit_status
    }
}

impl Drop for TidepoolProc {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.log_reported {
            eprintln!("{}", log_tail(&self.log_path(), LOG_TAIL_LINES));
        }
        if self.exit_status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The port of `--listen HOST:PORT` or `--listen=HOST:PORT` in `args`.
pub fn listen_port_from_args(args: &[&str]) -> Option<u16> {
    let value = args.iter().enumerate().find_map(|(i, arg)| match *arg {
        "--listen" => args.get(i + 1).copied(),
        _ => arg.strip_prefix("--listen="),
    })?;
    value.rsplit_once(':')?.1.parse().ok()
}
