//! The PostgreSQL installation and the template cluster that every
//! [`super::PgServer`] is copied from.
//!
//! Owns: finding the server binaries, knowing which OS user server-side
//! commands run as (the `postgres` user when we are root, since `initdb` and
//! `postgres` refuse root), and running `initdb` once per test binary. It
//! starts no server itself.

use std::fs;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::postgres::{SUPERUSER, SUPERUSER_PASSWORD};

/// Members of this role log in over TCP with md5 instead of SCRAM.
pub const MD5_LOGIN_ROLE: &str = "tidepool_md5_login";

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

/// Makes `path` owned by the user server-side commands run as (a no-op
/// unless we are root).
pub fn give_to_server_user(path: &Path) {
    if let Some(user) = server_os_user() {
        chown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("cannot chown {} to postgres: {e}", path.display()));
    }
}

/// A command that runs as the `postgres` OS user when we are root, from a
/// working directory that user can enter.
pub fn server_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(std::env::temp_dir());
    if let Some(user) = server_os_user() {
        command.uid(user.uid).gid(user.gid).env("HOME", &user.home);
    }
    command
}

/// Runs a command to completion and panics with its output if it fails.
pub fn run(command: &mut Command, what: &str) {
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
pub fn psql_program() -> PathBuf {
    let local = bin_dir().join("psql");
    if local.is_file() {
        local
    } else {
        PathBuf::from("psql")
    }
}

/// Runs `psql -c sql` with connection string `conninfo` and `password`; its
/// stdout on success, its stderr on failure. The environment's libpq settings
/// that would override the string are removed. Blocking.
pub fn run_psql(conninfo: &str, password: &str, sql: &str) -> Result<String, String> {
    let output = Command::new(psql_program())
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo])
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSSLMODE")
        .env_remove("PGSERVICE")
        .env_remove("PGHOSTADDR")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

const TEMPLATE_PREFIX: &str = "tidepool-pg-template-";

/// A freshly initialised cluster, made once per test binary run and copied
/// by every [`PgServer::start`]. It lives in the temp dir under this
/// process's pid, since statics are never dropped; templates left by
/// processes that have exited are removed the next time one is made.
pub fn template_data_dir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        remove_stale_templates();
        let dir = std::env::temp_dir().join(format!("{TEMPLATE_PREFIX}{}", std::process::id()));
        // A directory with our pid can only be left over from a dead process.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        give_to_server_user(&dir);
        init_cluster(&dir)
    })
}

fn init_cluster(dir: &Path) -> PathBuf {
    let password_file = dir.join("password");
    fs::write(&password_file, SUPERUSER_PASSWORD)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", password_file.display()));
    give_to_server_user(&password_file);
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
