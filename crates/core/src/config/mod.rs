//! Validated configuration: the domain types every other module reads.
//!
//! Loading is two-staged (see `raw` and `validate`): serde reads the file into raw
//! structs, then one validation pass checks every key, applies defaults (all of them
//! live in `validate`) and derives what authentication needs (SCRAM secrets), so the
//! running service never re-checks or re-derives.

mod cidr;
mod management;
mod raw;
mod single;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use cidr::AllowList;
pub use management::{ApiSettings, MetadataSettings};
pub use raw::{RawAdmin, RawApi, RawConfig, RawMetadata, RawTenant, RawUser};
pub use single::{single_upstream, SingleUpstream};
pub use validate::{validate_tenant, ConfigError, DEFAULT_AUTH_QUERY};

use pgauth::ScramSecret;

use crate::secret::Secret;

/// The whole validated configuration. Swapped atomically on reload.
#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub pool: PoolSettings,
    pub tenants: Vec<Arc<Tenant>>,
    /// `[api]`: the management HTTP API.
    pub api: ApiSettings,
    /// `[metadata]`: the store of API tenants.
    pub metadata: MetadataSettings,
    /// `[admin]`: who may use the admin console (`client::console`); `None`
    /// turns it off.
    pub admin: Option<Arc<User>>,
}

impl Config {
    /// Reads and validates a TOML configuration file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            reason: e.to_string(),
        })?;
        validate::validate(raw)
    }

    /// Validates an already built raw configuration.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        validate::validate(raw)
    }

    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| t.id == id)
    }
}

/// Settings of the client-facing side.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub auth_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_message_size: usize,
    pub log_format: LogFormat,
    /// Threads serving clients, each a single-threaded runtime with its own reactor
    /// (see `shard`); 0 means one per CPU core. With 1 the whole service runs on
    /// one thread, as PgBouncer does.
    pub worker_threads: u32,
    /// Whether idle plain-TCP transaction-mode clients leave the runtime (see
    /// `client::park`).
    pub park_idle_clients: bool,
    /// A Unix socket file clients may connect to as well (`socket_file`).
    pub unix_socket: Option<UnixSocket>,
}

/// The Unix socket clients may connect to, besides the TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// `.s.PGSQL.<port>` in the configured directory, the port `listen`'s.
    pub path: PathBuf,
    /// Its permission bits (who may connect).
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Settings shared by every pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub min_idle: u32,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub connect_timeout: Duration,
    pub checkout_timeout: Duration,
    /// Run on a server connection when a session-mode client lets it go.
    pub reset_query: String,
    /// Named prepared statements kept per server connection in transaction mode
    /// (least recently used closed first); 0 turns statement tracking off.
    pub max_prepared_statements: u32,
    /// How long an auth_query answer is reused; zero asks every time.
    pub auth_query_cache_ttl: Duration,
}

/// One upstream database and the users that may reach it.
#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub auth_method: AuthMethod,
    pub upstream_tls: UpstreamTls,
    pub users: Vec<Arc<User>>,
    /// Only listed users may log in; when false, other names are looked up with
    /// `auth_query` over the manager user's connection.
    pub require_user: bool,
    pub auth_query: String,
    /// Pool size of users found through `auth_query`.
    pub default_pool_size: u32,
    /// Clients of the whole tenant at once (`default_max_clients`).
    pub max_clients: u32,
    pub client_idle_timeout: Option<Duration>,
    /// Clients must use TLS.
    pub enforce_ssl: bool,
    /// Client addresses allowed; `None` allows any.
    pub allow_list: Option<AllowList>,
    /// TLS server name that selects this tenant (lower case).
    pub sni_hostname: Option<String>,
    /// Reported to clients of a pool that has never reached its server.
    pub default_parameter_status: Vec<(String, String)>,
    /// The tenant as written (passwords included, never serialised), for the API.
    pub raw: RawTenant,
}

impl Tenant {
    pub fn user(&self, name: &str) -> Option<&Arc<User>> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The user whose connection runs `auth_query`.
    pub fn manager(&self) -> Option<&Arc<User>> {
        self.users.iter().find(|u| u.is_manager)
    }
}

/// One database user of a tenant and its pool.
#[derive(Debug)]
pub struct User {
    /// The name clients log in with (`db_user_alias`, else `db_user`).
    pub name: String,
    /// The role the pooler logs in to Postgres as.
    pub db_user: String,
    /// Clients of this user at once.
    pub max_clients: u32,
    /// Runs the tenant's `auth_query`.
    pub is_manager: bool,
    pub password: StoredPassword,
    pub pool_size: u32,
    pub mode: PoolMode,
    pub checkout_timeout: Duration,
}

/// How a password is kept, and what it allows.
#[derive(Debug)]
pub enum StoredPassword {
    /// No password: only `trust` client authentication, and a server that trusts us.
    None,
    /// Plain text: every client method works and the pooler can log in to Postgres.
    Plain {
        password: Secret,
        scram: ScramSecret,
    },
    /// A Postgres SCRAM verifier: clients use SCRAM; the pooler logs in to Postgres
    /// with the ClientKey recovered from a client's proof (pass-through).
    Scram(ScramSecret),
    /// An `md5...` hash: clients use md5, and so does the pooler towards Postgres.
    Md5(Secret),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection is held from a transaction's first message to its end.
    Transaction,
    /// A server connection is held for the client's whole session.
    Session,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transaction => "transaction",
            Self::Session => "session",
        }
    }
}

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ScramSha256,
    Md5,
    /// Cleartext password; refused on connections without TLS.
    Password,
    Trust,
}

impl AuthMethod {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha256 => "scram-sha-256",
            Self::Md5 => "md5",
            Self::Password => "password",
            Self::Trust => "trust",
        }
    }
}

/// How the pooler's connections to Postgres use TLS, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub mode: SslMode,
    /// CA bundle for `verify-full`; the system bundle when absent.
    pub ca: Option<CaSource>,
}

/// Where a CA bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    File(PathBuf),
    Pem(Arc<str>),
}
