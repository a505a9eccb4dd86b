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
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::{accepts_tcp, free_port, log_tail, postgres_url, wait_until, HOST};

/// The superuser of every test server.
pub const SUPERUSER: &str = "postgres";
/// The superuser's password.
pub const SUPERUSER_PASSWORD: &str = SUPERUSER;

/// Members of this role log in over TCP with md5 instead of SCRAM.
const MD5_LOGIN_ROLE: &str = "tidepool_md5_login";

/// Settings shared by every test server, written into the template once.
/// Durability is off: a test server's data is thrown away anyway.
const SHARED_SETTINGS: &str = "
# --- tidepool test harness ---
listen_addresses = '127.0.0.1'
max_connections = 300
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_connections = on
log_disconnections = on
log_line_prefix = '%m [%p] %q%u@%d '
include_if_exists = 'instance.conf'
";

const PG_HBA: &str = "\
local all all trust
host all +tidepool_md5_login 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256
";

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
        let owner = server_os_user();
        let dir = tempfile::Builder::new()
            .prefix("tidepool-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        if let Some(user) = owner {
            chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap_or_else(|e| {
                panic!("cannot chown {} to postgres: {e}", dir.path().display())
            });
        }
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
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", redact_url(url)))
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

// ---------------------------------------------------------------------------
// Finding binaries, the OS user, and the template cluster.

/// The OS account that server-side commands run as when we are root.
struct OsUser {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// `Some(postgres)` when running as root, `None` otherwise.
fn server_os_user() -> Option<&'static OsUser> {
    static USER: OnceLock<Option<OsUser>> = OnceLock::new();
    USER.get_or_init(|| {
        if effective_uid() != 0 {
            return None;
        }
        let passwd = fs::read_to_string("/etc/passwd")
            .unwrap_or_else(|e| panic!("cannot read /etc/passwd: {e}"));
        let user = passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, _, home, ..] => Some(OsUser {
                    uid: uid.parse().ok()?,
                    gid: gid.parse().ok()?,
                    home: PathBuf::from(home),
                }),
                _ => None,
            }
        });
        Some(user.unwrap_or_else(|| {
            panic!(
                "running as root, but there is no `postgres` OS user to run initdb and \
                 postgres as (installing the postgresql package creates it)"
            )
        }))
    })
    .as_ref()
}

fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("cannot read /proc/self/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .unwrap_or_else(|| panic!("no effective uid in /proc/self/status"))
}

/// A command that runs as the `postgres` OS user when we are root, from a
/// working directory that user can enter.
fn server_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(std::env::temp_dir());
    if let Some(user) = server_os_user() {
        command.uid(user.uid).gid(user.gid).env("HOME", &user.home);
    }
    command
}

/// Runs a command to completion and panics with its output if it fails.
fn run(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot {what}: {e}"));
    if !output.status.success() {
        panic!(
            "cannot {what} ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The directory holding initdb, pg_ctl and postgres: `$TIDEPOOL_PG_BIN`,
/// else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin,
/// else wherever `initdb` is on PATH.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(find_bin_dir)
}

fn find_bin_dir() -> PathBuf {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("TIDEPOOL_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_initdb(&dir),
            "TIDEPOOL_PG_BIN={} has no initdb",
            dir.display()
        );
        return dir;
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_initdb(&dir) {
            return dir;
        }
    }
    let newest_debian = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path().join("bin");
            has_initdb(&dir).then_some((version, dir))
        })
        .max_by_key(|(version, _)| *version);
    if let Some((_, dir)) = newest_debian {
        return dir;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_initdb(dir)));
    on_path.unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries (initdb) found: run scripts/test.sh, which \
             installs them, or set TIDEPOOL_PG_BIN to their directory"
        )
    })
}

/// psql of the same installation if it has one, else the one on PATH.
fn psql_program() -> PathBuf {
    let local = bin_dir().join("psql");
    if local.is_file() {
        local
    } else {
        PathBuf::from("psql")
    }
}

const TEMPLATE_PREFIX: &str = "tidepool-pg-template-";

/// A freshly initialised cluster, made once per test binary run and copied
/// by every [`PgServer::start`]. It lives in the temp dir under this
/// process's pid, since statics are never dropped; templates left by
/// processes that have exited are removed the next time one is made.
fn template_data_dir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        remove_stale_templates();
        let dir = std::env::temp_dir().join(format!("{TEMPLATE_PREFIX}{}", std::process::id()));
        // A directory with our pid can only be left over from a dead process.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        if let Some(user) = server_os_user() {
            chown(&dir, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("cannot chown {} to postgres: {e}", dir.display()));
        }
        init_cluster(&dir)
    })
}

fn init_cluster(dir: &Path) -> PathBuf {
    let password_file = dir.join("password");
    fs::write(&password_file, SUPERUSER_PASSWORD)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", password_file.display()));
    if let Some(user) = server_os_user() {
        chown(&password_file, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("cannot chown {}: {e}", password_file.display()));
    }
    let data = dir.join("data");
    run(
        server_command(&bin_dir().join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["--username", SUPERUSER])
            .arg(format!("--pwfile={}", password_file.display()))
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["--encoding=UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]),
        "initdb the template cluster",
    );
    let _ = fs::remove_file(&password_file);
    append(&data.join("postgresql.conf"), SHARED_SETTINGS);
    let hba = data.join("pg_hba.conf");
    fs::write(&hba, PG_HBA).unwrap_or_else(|e| panic!("cannot write {}: {e}", hba.display()));
    data
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", path.display()));
}

fn remove_stale_templates() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(TEMPLATE_PREFIX)) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists();
        if !alive && pid.parse::<u32>().is_ok() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
