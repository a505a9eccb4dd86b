//! Driver checks for Tidepool from Rust: `tidepool-driver-tests sqlx` or
//! `tidepool-driver-tests tokio-postgres`. Connects with the libpq variables
//! (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE) that scripts/drivers.sh
//! sets, prints one `ok`/`FAIL` line per check and exits 1 if any failed.

mod report;
mod sqlx_driver;
mod tokio_postgres_driver;

use report::Report;

/// Concurrent clients, well above the pool size of 3 that scripts/drivers.sh uses.
pub const CLIENTS: usize = 10;
/// Statements each client runs.
pub const ROUNDS: i32 = 30;
/// How long a new client may wait for a server connection while the others
/// sit idle (Tidepool's own checkout timeout is 60 s).
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The failure of a client that waited too long for a server connection.
pub fn starved(n: usize, last_action: &str) -> String {
    format!(
        "client {} waited over {} s for a server connection while {n} clients sat idle after {last_action} (they still hold their servers)",
        n + 1,
        PROBE_TIMEOUT.as_secs()
    )
}

/// Connection settings from the libpq environment variables.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl Target {
    fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        Ok(Self {
            host: var("PGHOST")?,
            port: var("PGPORT")?
                .parse()
                .map_err(|_| "PGPORT is not a port".to_string())?,
            user: var("PGUSER")?,
            password: var("PGPASSWORD")?,
            database: var("PGDATABASE")?,
        })
    }

    /// As a URL; a host that is a directory (a Unix socket's, as libpq reads
    /// PGHOST) goes in the `host` parameter, which sqlx reads as a socket
    /// directory.
    pub fn url(&self) -> String {
        if self.host.starts_with('/') {
            return format!(
                "postgres://{}:{}@localhost:{}/{}?host={}",
                self.user, self.password, self.port, self.database, self.host
            );
        }
        format!(
            "postgres://{}:{}@{}:{}/{}",
            self.user, self.password, self.host, self.port, self.database
        )
    }
}

#[tokio::main]
async fn main() {
    let driver = std::env::args().nth(1).unwrap_or_default();
    let target = match Target::from_env() {
        Ok(target) => target,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let mut report = Report::default();
    match driver.as_str() {
        "sqlx" => sqlx_driver::run(&target, &mut report).await,
        "tokio-postgres" => tokio_postgres_driver::run(&target, &mut report).await,
        _ => {
            eprintln!("usage: tidepool-driver-tests sqlx|tokio-postgres");
            std::process::exit(2);
        }
    }
    std::process::exit(report.exit_code());
}
