//! Validation of the raw configuration: every default lives here, every error names
//! the key it is about and why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pgauth::ScramSecret;

use super::cidr::AllowList;
use super::raw::{RawConfig, RawTenant, RawUser};
use super::{
    AuthMethod, CaSource, Config, LogFormat, PoolMode, PoolSettings, ServerSettings, SslMode,
    StoredPassword, Tenant, TlsFiles, UnixSocket, UpstreamTls, User,
};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("invalid configuration: {reason}")]
    Parse { reason: String },
    #[error("invalid configuration: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

const DEFAULT_LISTEN: &str = "127.0.0.1:6432";
/// Anyone on the machine may connect, as with Postgres and PgBouncer (they still
/// have to log in).
const DEFAULT_UNIX_SOCKET_MODE: u32 = 0o777;
const DEFAULT_AUTH_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1 << 30;
const DEFAULT_POOL_SIZE: u32 = 20;
const DEFAULT_MIN_IDLE: u32 = 0;
const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
const DEFAULT_MAX_LIFETIME_SECS: u64 = 3600;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_CHECKOUT_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_RESET_QUERY: &str = "DISCARD ALL";
const MAX_POOL_SIZE: u32 = 10_000;
const DEFAULT_MAX_PREPARED_STATEMENTS: u32 = 500;
const DEFAULT_AUTH_QUERY_CACHE_SECS: u64 = 30;
const MAX_AUTH_QUERY_CACHE_SECS: u64 = 3600;
const MAX_PREPARED_STATEMENTS: u32 = 100_000;
/// Iterations for SCRAM secrets derived from plain-text passwords, as Postgres uses.
const SCRAM_ITERATIONS: u32 = 4096;
/// Supavisor's default for `default_max_clients`.
const DEFAULT_MAX_CLIENTS: u32 = 1000;
const MAX_CLIENTS: u32 = 1_000_000;
/// Postgres's stock query for a role's password verifier.
pub const DEFAULT_AUTH_QUERY: &str =
    "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1";

/// `prefix.field`, or `field` alone for a tenant validated on its own (the API).
fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

fn ms_in(key: &str, value: Option<u64>, default: u64, max: u64) -> Result<Duration, ConfigError> {
    let v = value.unwrap_or(default);
    if v == 0 || v > max {
        return Err(invalid(key, format!("must be between 1 and {max}")));
    }
    Ok(Duration::from_millis(v))
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let server = validate_server(&raw)?;
    let pool = validate_pool(&raw)?;
    let api = super::management::validate_api(&raw)?;
    let metadata = super::management::validate_metadata(&raw)?;
    let admin = validate_admin(&raw, &pool)?;
    // With a store, every tenant may come from it.
    if raw.tenants.is_empty() && metadata.url.is_none() {
        return Err(invalid(
            "tenants",
            "at least one tenant is required (or a metadata store: [metadata] url)",
        ));
    }
    let mut tenants: Vec<Arc<Tenant>> = Vec::with_capacity(raw.tenants.len());
    for (i, t) in raw.tenants.iter().enumerate() {
        let tenant = validate_tenant(&format!("tenants[{i}]"), t, &pool)?;
        if let Some(other) = tenants
            .iter()
            .find(|o| o.sni_hostname.is_some() && o.sni_hostname == tenant.sni_hostname)
        {
            return Err(invalid(
                format!("tenants[{i}].sni_hostname"),
                format!("already used by tenant {:?}", other.id),
            ));
        }
        if tenants.iter().any(|other| other.id == tenant.id) {
            return Err(invalid(
                format!("tenants[{i}].external_id"),
                format!("duplicate tenant {:?}", tenant.id),
            ));
        }
        tenants.push(Arc::new(tenant));
    }
    Ok(Config {
        server,
        pool,
        tenants,
        api,
        metadata,
        admin,
    })
}

fn validate_server(raw: &RawConfig) -> Result<ServerSettings, ConfigError> {
    let s = &raw.server;
    let listen_text = s.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!("{listen_text:?} is not an IP:port address"),
        )
    })?;
    let tls = match (&s.tls_cert, &s.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            for (k, path) in [("server.tls_cert", cert), ("server.tls_key", key)] {
                if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
                    return Err(invalid(k, format!("{path} is not a readable file")));
                }
            }
            Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            })
        }
        (Some(_), None) => return Err(invalid("server.tls_key", "required with tls_cert")),
        (None, Some(_)) => return Err(invalid("server.tls_cert", "required with tls_key")),
    };
    let max_message_size = s.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
    if !(1024..=DEFAULT_MAX_MESSAGE_SIZE).contains(&max_message_size) {
        return Err(invalid(
            "server.max_message_size",
            format!("must be between 1024 and {DEFAULT_MAX_MESSAGE_SIZE}"),
        ));
    }
    let log_format = match s.log_format.as_deref().unwrap_or("human") {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "server.log_format",
                format!("{other:?} is not one of \"human\", \"json\""),
            ))
        }
    };
    let unix_socket =
        match &s.unix_socket_dir {
            None => {
                if s.unix_socket_mode.is_some() {
                    return Err(invalid(
                        "server.unix_socket_mode",
                        "needs server.unix_socket_dir",
                    ));
                }
                None
            }
            Some(_) if listen.port() == 0 => return Err(invalid(
                "server.unix_socket_dir",
                "needs a fixed port in server.listen (not 0): the socket file is named after it",
            )),
            Some(dir) => Some(unix_socket(dir, listen.port(), s.unix_socket_mode)?),
        };
    Ok(ServerSettings {
        listen,
        tls,
        unix_socket,
        auth_timeout: ms_in(
            "server.auth_timeout_ms",
            s.auth_timeout_ms,
            DEFAULT_AUTH_TIMEOUT_MS,
            3_600_000,
        )?,
        shutdown_timeout: ms_in(
            "server.shutdown_timeout_ms",
            s.shutdown_timeout_ms,
            DEFAULT_SHUTDOWN_TIMEOUT_MS,
            86_400_000,
        )?,
        worker_threads: {
            let n = s.worker_threads.unwrap_or(0);
            if n > 1024 {
                return Err(invalid(
                    "server.worker_threads",
                    "must be between 0 and 1024",
                ));
            }
            n
        },
        max_message_size: max_message_size as usize,
        log_format,
        park_idle_clients: s.park_idle_clients.unwrap_or(true),
    })
}

/// The Unix socket in `dir` for port `port`: the directory must exist, and the
/// file's path fit a socket address.
fn unix_socket(dir: &str, port: u16, mode: Option<u32>) -> Result<UnixSocket, ConfigError> {
    let key = "server.unix_socket_dir";
    if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Err(invalid(key, format!("{dir} is not a directory")));
    }
    let path = crate::socket_file::path_in(Path::new(dir), port);
    let len = path.as_os_str().len();
    if len > crate::socket_file::MAX_PATH_LEN {
        return Err(invalid(
            key,
            format!(
                "{} is {len} bytes long; a socket's path may have at most {}",
                path.display(),
                crate::socket_file::MAX_PATH_LEN
            ),
        ));
    }
    let mode = mode.unwrap_or(DEFAULT_UNIX_SOCKET_MODE);
    if mode > 0o777 {
        return Err(invalid(
            "server.unix_socket_mode",
            "must be permission bits, 0o000 to 0o777",
        ));
    }
    Ok(UnixSocket { path, mode })
}

/// A password as the file or the API gives it: none, a SCRAM verifier, an md5
/// hash, or plain text (kept with a SCRAM verifier made from it).
fn stored_password(
    key: &str,
    password: Option<&crate::secret::Secret>,
) -> Result<StoredPassword, ConfigError> {
    Ok(match password {
        None => StoredPassword::None,
        Some(p) if p.expose().is_empty() => return Err(invalid(key, "must not be empty")),
        Some(p) if p.expose().starts_with("SCRAM-SHA-256$") => StoredPassword::Scram(
            ScramSecret::parse(p.expose())
                .map_err(|e| invalid(key, format!("not a valid SCRAM verifier: {e}")))?,
        ),
        Some(p) if is_md5_hash(p.expose()) => StoredPassword::Md5(p.clone()),
        Some(p) => {
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(|e| invalid(key, format!("no randomness: {e}")))?;
            StoredPassword::Plain {
                password: p.clone(),
                scram: ScramSecret::from_password(p.expose(), &salt, SCRAM_ITERATIONS),
            }
        }
    })
}

/// `[admin]`: both a user and a password, or neither (no console).
fn validate_admin(raw: &RawConfig, pool: &PoolSettings) -> Result<Option<Arc<User>>, ConfigError> {
    let a = &raw.admin;
    let name = match (&a.user, &a.password) {
        (None, None) => return Ok(None),
        (Some(name), Some(_)) if !name.is_empty() => name,
        (Some(_), Some(_)) => return Err(invalid("admin.user", "must not be empty")),
        (None, Some(_)) => return Err(invalid("admin.user", "required with admin.password")),
        (Some(_), None) => {
            return Err(invalid(
                "admin.password",
                "required with admin.user (or env TIDEPOOL_ADMIN_PASSWORD)",
            ))
        }
    };
    Ok(Some(Arc::new(User {
        name: name.clone(),
        db_user: name.clone(),
        max_clients: 0,
        is_manager: false,
        password: stored_password("admin.password", a.password.as_ref())?,
        pool_size: 0,
        mode: PoolMode::Session,
        checkout_timeout: pool.checkout_timeout,
    })))
}

fn validate_pool(raw: &RawConfig) -> Result<PoolSettings, ConfigError> {
    let p = &raw.pool;
    let min_idle = p.min_idle.unwrap_or(DEFAULT_MIN_IDLE);
    if min_idle > MAX_POOL_SIZE {
        return Err(invalid(
            "pool.min_idle",
            format!("must be at most {MAX_POOL_SIZE}"),
        ));
    }
    let secs = |key: &str, v: Option<u64>, default: u64| {
        const MAX_SECS: u64 = 365 * 86_400;
        match v.unwrap_or(default) {
            s @ 1..=MAX_SECS => Ok(Duration::from_secs(s)),
            _ => Err(invalid(
                key,
                format!("must be between 1 and {MAX_SECS} (seconds)"),
            )),
        }
    };
    let reset_query = p
        .reset_query
        .clone()
        .unwrap_or_else(|| DEFAULT_RESET_QUERY.into());
    let max_prepared_statements = p
        .max_prepared_statements
        .unwrap_or(DEFAULT_MAX_PREPARED_STATEMENTS);
    if max_prepared_statements > MAX_PREPARED_STATEMENTS {
        return Err(invalid(
            "pool.max_prepared_statements",
            format!("must be between 0 and {MAX_PREPARED_STATEMENTS}"),
        ));
    }
    let auth_query_cache_secs = p
        .auth_query_cache_secs
        .unwrap_or(DEFAULT_AUTH_QUERY_CACHE_SECS);
    if auth_query_cache_secs > MAX_AUTH_QUERY_CACHE_SECS {
        return Err(invalid(
            "pool.auth_query_cache_secs",
            format!("must be between 0 and {MAX_AUTH_QUERY_CACHE_SECS}"),
        ));
    }
    if reset_query.contains('\0') {
        return Err(invalid("pool.reset_query", "must not contain NUL"));
    }
    Ok(PoolSettings {
        min_idle,
        idle_timeout: secs(
            "pool.idle_timeout_secs",
            p.idle_timeout_secs,
            DEFAULT_IDLE_TIMEOUT_SECS,
        )?,
        max_lifetime: secs(
            "pool.max_lifetime_secs",
            p.max_lifetime_secs,
            DEFAULT_MAX_LIFETIME_SECS,
        )?,
        connect_timeout: ms_in(
            "pool.connect_timeout_ms",
            p.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT_MS,
            600_000,
        )?,
        checkout_timeout: ms_in(
            "pool.checkout_timeout_ms",
            p.checkout_timeout_ms,
            DEFAULT_CHECKOUT_TIMEOUT_MS,
            3_600_000,
        )?,
        reset_query,
        max_prepared_statements,
        auth_query_cache_ttl: Duration::from_secs(auth_query_cache_secs),
    })
}

fn required<'a>(key: &str, v: &'a Option<String>) -> Result<&'a str, ConfigError> {
    match v.as_deref() {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(invalid(key, "is required")),
    }
}

/// Validates one tenant; `key` prefixes the names in errors ("" for the API).
pub fn validate_tenant(
    key: &str,
    t: &RawTenant,
    pool: &PoolSettings,
) -> Result<Tenant, ConfigError> {
    let id = required(&join(key, "external_id"), &t.external_id)?;
    if id.len() > 255
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Err(invalid(
            join(key, "external_id"),
            "may hold only ASCII letters, digits, '_' and '-' (at most 255)",
        ));
    }
    let host = required(&join(key, "db_host"), &t.db_host)?;
    let port = t.db_port.unwrap_or(5432);
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(join(key, "db_port"), "must be between 1 and 65535"))?;
    let database = required(&join(key, "db_database"), &t.db_database)?;
    let auth_method = match t.auth_method.as_deref().unwrap_or("scram-sha-256") {
        "scram-sha-256" => AuthMethod::ScramSha256,
        "md5" => AuthMethod::Md5,
        "password" => AuthMethod::Password,
        "trust" => AuthMethod::Trust,
        other => {
            return Err(invalid(
                join(key, "auth_method"),
                format!("{other:?} is not one of scram-sha-256, md5, password, trust"),
            ))
        }
    };
    let upstream_tls = validate_upstream_tls(key, t)?;
    let default_pool_size = t.default_pool_size.unwrap_or(DEFAULT_POOL_SIZE);
    check_pool_size(&join(key, "default_pool_size"), default_pool_size)?;
    let max_clients = t.default_max_clients.unwrap_or(DEFAULT_MAX_CLIENTS);
    check_max_clients(&join(key, "default_max_clients"), max_clients)?;
    let auth_query = t
        .auth_query
        .clone()
        .unwrap_or_else(|| DEFAULT_AUTH_QUERY.to_owned());
    if auth_query.trim().is_empty() || auth_query.contains('\0') {
        return Err(invalid(
            join(key, "auth_query"),
            "must be a non-empty query",
        ));
    }
    if let Some(v) = &t.ip_version {
        if !matches!(v.as_str(), "auto" | "v4" | "v6") {
            return Err(invalid(
                join(key, "ip_version"),
                format!("{v:?} is not one of \"auto\", \"v4\", \"v6\""),
            ));
        }
    }
    let allow_list = match &t.allow_list {
        None => None,
        Some(list) => {
            Some(AllowList::parse(list).map_err(|e| invalid(join(key, "allow_list"), e))?)
        }
    };
    let sni_hostname = match t.sni_hostname.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(h) => Some(h.to_ascii_lowercase()),
    };
    let client_idle_timeout = match t.client_idle_timeout.unwrap_or(0) {
        0 => None,
        s @ 1..=31_536_000 => Some(Duration::from_secs(s)),
        _ => {
            return Err(invalid(
                join(key, "client_idle_timeout"),
                "must be between 0 and 31536000 (seconds)",
            ))
        }
    };
    let mut default_parameter_status = Vec::new();
    for (name, value) in t.default_parameter_status.iter().flatten() {
        if name.is_empty() || name.contains('\0') || value.contains('\0') || name.len() > 64 {
            return Err(invalid(
                join(key, "default_parameter_status"),
                format!("{name:?} is not a valid parameter"),
            ));
        }
        default_parameter_status.push((name.clone(), value.clone()));
    }
    let require_user = t.require_user.unwrap_or(false);
    if t.users.is_empty() {
        return Err(invalid(join(key, "users"), "at least one user is required"));
    }
    let mut users: Vec<Arc<User>> = Vec::with_capacity(t.users.len());
    for (i, u) in t.users.iter().enumerate() {
        let ukey = join(key, &format!("users[{i}]"));
        let user = validate_user(&ukey, u, auth_method, default_pool_size, max_clients, pool)?;
        if users.iter().any(|other| other.name == user.name) {
            return Err(invalid(
                format!("{ukey}.db_user_alias"),
                format!("duplicate user {:?}", user.name),
            ));
        }
        users.push(Arc::new(user));
    }
    Ok(Tenant {
        id: id.to_owned(),
        host: host.to_owned(),
        port,
        database: database.to_owned(),
        auth_method,
        upstream_tls,
        users,
        require_user,
        auth_query,
        default_pool_size,
        max_clients,
        client_idle_timeout,
        enforce_ssl: t.enforce_ssl.unwrap_or(false),
        allow_list,
        sni_hostname,
        default_parameter_status,
        raw: t.clone(),
    })
}

fn check_max_clients(key: &str, n: u32) -> Result<(), ConfigError> {
    if n == 0 || n > MAX_CLIENTS {
        return Err(invalid(key, format!("must be between 1 and {MAX_CLIENTS}")));
    }
    Ok(())
}

fn validate_upstream_tls(key: &str, t: &RawTenant) -> Result<UpstreamTls, ConfigError> {
    let from_supavisor = match (t.upstream_ssl, t.upstream_verify.as_deref()) {
        (None, None) => None,
        (Some(false), None | Some("none")) => Some(SslMode::Disable),
        (Some(true), None | Some("none")) => Some(SslMode::Require),
        (Some(true), Some("peer")) => Some(SslMode::VerifyFull),
        (None | Some(false), Some(_)) => {
            return Err(invalid(
                join(key, "upstream_verify"),
                "needs upstream_ssl = true",
            ))
        }
        (Some(true), Some(other)) => {
            return Err(invalid(
                join(key, "upstream_verify"),
                format!("{other:?} is not one of \"none\", \"peer\""),
            ))
        }
    };
    let mode = match (t.upstream_sslmode.as_deref(), from_supavisor) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                join(key, "upstream_sslmode"),
                "give either upstream_sslmode or upstream_ssl/upstream_verify, not both",
            ))
        }
        (None, Some(mode)) => mode,
        (None, None) => SslMode::Prefer,
        (Some("disable"), None) => SslMode::Disable,
        (Some("prefer"), None) => SslMode::Prefer,
        (Some("require"), None) => SslMode::Require,
        (Some("verify-full"), None) => SslMode::VerifyFull,
        (Some(other), None) => {
            return Err(invalid(
                join(key, "upstream_sslmode"),
                format!("{other:?} is not one of disable, prefer, require, verify-full"),
            ))
        }
    };
    let ca = match t.upstream_tls_ca.as_deref() {
        None => None,
        Some(pem) if pem.trim_start().starts_with("-----BEGIN") => {
            Some(CaSource::Pem(Arc::from(pem)))
        }
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(invalid(
                    join(key, "upstream_tls_ca"),
                    format!("{} is not a readable file", path.display()),
                ));
            }
            Some(CaSource::File(path))
        }
    };
    Ok(UpstreamTls { mode, ca })
}

fn check_pool_size(key: &str, size: u32) -> Result<(), ConfigError> {
    if size == 0 || size > MAX_POOL_SIZE {
        return Err(invalid(
            key,
            format!("must be between 1 and {MAX_POOL_SIZE}"),
        ));
    }
    Ok(())
}

fn validate_user(
    key: &str,
    u: &RawUser,
    auth_method: AuthMethod,
    default_pool_size: u32,
    default_max_clients: u32,
    pool: &PoolSettings,
) -> Result<User, ConfigError> {
    let db_user = required(&format!("{key}.db_user"), &u.db_user)?;
    let name = match u.db_user_alias.as_deref() {
        None => db_user,
        Some(alias) => {
            required(&format!("{key}.db_user_alias"), &u.db_user_alias).map(|_| alias)?
        }
    };
    for (field, v) in [("db_user", db_user), ("db_user_alias", name)] {
        if v.len() > 63 || v.contains('\0') {
            return Err(invalid(
                format!("{key}.{field}"),
                "must be at most 63 bytes, without NUL",
            ));
        }
    }
    let max_clients = u.max_clients.unwrap_or(default_max_clients);
    check_max_clients(&format!("{key}.max_clients"), max_clients)?;
    let pool_size = u.pool_size.unwrap_or(default_pool_size);
    check_pool_size(&format!("{key}.pool_size"), pool_size)?;
    let mode = match u.mode_type.as_deref().unwrap_or("transaction") {
        "transaction" => PoolMode::Transaction,
        "session" => PoolMode::Session,
        other => {
            return Err(invalid(
                format!("{key}.mode_type"),
                format!("{other:?} is not one of \"transaction\", \"session\""),
            ))
        }
    };
    let checkout_timeout = match u.pool_checkout_timeout {
        None => pool.checkout_timeout,
        Some(ms) => ms_in(
            &format!("{key}.pool_checkout_timeout"),
            Some(ms),
            0,
            3_600_000,
        )?,
    };
    let pkey = format!("{key}.db_password");
    let password = stored_password(&pkey, u.db_password.as_ref())?;
    let usable = match (&password, auth_method) {
        // Pass-through needs a client's SCRAM proof, which trust never asks for.
        (StoredPassword::Scram(_), AuthMethod::Trust) => false,
        (_, AuthMethod::Trust) => true,
        (StoredPassword::None, _) => false,
        (StoredPassword::Plain { .. }, _) => true,
        (StoredPassword::Scram(_), m) => m == AuthMethod::ScramSha256,
        (StoredPassword::Md5(_), m) => m == AuthMethod::Md5,
    };
    if !usable {
        return Err(invalid(
            pkey,
            format!(
                "{} cannot be used with auth_method {}: give a plain-text password, \
                 a SCRAM verifier with scram-sha-256, or an md5 hash with md5",
                match password {
                    StoredPassword::None => "a missing password",
                    StoredPassword::Scram(_) => "a SCRAM verifier",
                    StoredPassword::Md5(_) => "an md5 hash",
                    StoredPassword::Plain { .. } => "this password",
                },
                auth_method.as_str()
            ),
        ));
    }
    Ok(User {
        name: name.to_owned(),
        db_user: db_user.to_owned(),
        max_clients,
        is_manager: u.is_manager.unwrap_or(false),
        password,
        pool_size,
        mode,
        checkout_timeout,
    })
}

fn is_md5_hash(s: &str) -> bool {
    s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    const GOOD: &str = r#"
        [server]
        listen = "127.0.0.1:7000"
        [[tenants]]
        external_id = "t1"
        db_host = "127.0.0.1"
        db_database = "app"
        [[tenants.users]]
        db_user = "app"
        db_password = "secret"
        pool_size = 7
        mode_type = "session"
    "#;

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn good_config_and_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.server.listen.port(), 7000);
        let t = c.tenant("t1").unwrap();
        assert_eq!(t.port, 5432);
        let u = t.user("app").unwrap();
        assert_eq!(u.pool_size, 7);
        assert_eq!(u.mode, super::PoolMode::Session);
        assert_eq!(c.pool.reset_query, "DISCARD ALL");
        assert_eq!(c.pool.auth_query_cache_ttl.as_secs(), 30);
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err(&GOOD.replace("pool_size = 7", "pool_size = 0"))
            .contains("tenants[0].users[0].pool_size"));
        assert!(err(&GOOD.replace("\"session\"", "\"statement\"")).contains("mode_type"));
        assert!(err(&GOOD.replace("127.0.0.1:7000", "nowhere")).contains("server.listen"));
        assert!(err(&GOOD.replace("db_host = \"127.0.0.1\"", "")).contains("tenants[0].db_host"));
        assert!(err(&GOOD.replace("pool_size = 7", "pool_sise = 7")).contains("pool_sise"));
        assert!(err(&GOOD.replace(
            "db_password = \"secret\"",
            "db_password = \"SCRAM-SHA-256$x\""
        ))
        .contains("db_password"));
        assert!(
            err(&format!("[pool]\nauth_query_cache_secs = 3601\n{GOOD}"))
                .contains("pool.auth_query_cache_secs")
        );
        assert!(err("").contains("tenants"));
        assert!(err("[server\n").contains("invalid configuration"));
    }
}
