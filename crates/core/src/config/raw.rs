//! The configuration file as written: plain serde structs, every field optional where
//! a default exists. Nothing here is trusted; `validate` turns it into domain types.
//!
//! The tenant and user shapes follow Supavisor's tenant object (`external_id`,
//! `db_host`, `users[].db_user`, `mode_type`, ...) so the file and the management API
//! share one model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub pool: RawPool,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub metadata: RawMetadata,
    #[serde(default)]
    pub admin: RawAdmin,
}

/// `[admin]`: the admin console's user.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub user: Option<String>,
    /// Plain text, a SCRAM verifier or an md5 hash (env
    /// `TIDEPOOL_ADMIN_PASSWORD` wins).
    pub password: Option<Secret>,
}

/// `[api]`: the management HTTP API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub listen: Option<String>,
    /// HS256 secret of the API's bearer tokens (env `API_JWT_SECRET` wins).
    pub jwt_secret: Option<Secret>,
    /// HS256 secret of `/metrics` tokens; absent: metrics are open.
    pub metrics_jwt_secret: Option<Secret>,
}

/// `[metadata]`: the Postgres database that holds the API's tenants.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    /// `postgres://...`; it may hold a password, so it is kept as a secret.
    pub url: Option<Secret>,
    /// Base64 of 32 bytes that encrypt stored passwords (env
    /// `TIDEPOOL_ENCRYPTION_KEY` wins).
    pub encryption_key: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub auth_timeout_ms: Option<u64>,
    pub shutdown_timeout_ms: Option<u64>,
    pub max_message_size: Option<u64>,
    pub log_format: Option<String>,
    pub worker_threads: Option<u32>,
    pub park_idle_clients: Option<bool>,
    pub unix_socket_dir: Option<String>,
    pub unix_socket_mode: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub min_idle: Option<u32>,
    pub idle_timeout_secs: Option<u64>,
    pub max_lifetime_secs: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub checkout_timeout_ms: Option<u64>,
    pub reset_query: Option<String>,
    pub max_prepared_statements: Option<u32>,
    pub auth_query_cache_secs: Option<u64>,
}

/// A tenant as written in the file or sent to the API, in Supavisor's shape. Passwords
/// are read but never written back out (`db_password` is skipped when serialising).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_pool_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_clients: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_sslmode: Option<String>,
    /// Supavisor's spelling: `upstream_ssl = true` with `upstream_verify = "peer" | "none"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ssl: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_verify: Option<String>,
    /// A CA bundle: a file path, or the PEM text itself (as Supavisor's API takes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls_ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce_ssl: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_user: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni_hostname: Option<String>,
    /// Seconds an idle client may stay connected; 0 or absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_idle_timeout: Option<u64>,
    /// CIDR ranges clients may connect from; absent: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_list: Option<Vec<String>>,
    /// Parameters reported to clients before a server was ever reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_parameter_status: Option<BTreeMap<String, String>>,
    /// Accepted for Supavisor compatibility; Tidepool resolves hosts with the system
    /// resolver and tries every address it returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<String>,
    /// Accepted for Supavisor compatibility; Tidepool uses TCP keepalive instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_heartbeat_interval: Option<u64>,
    #[serde(default)]
    pub users: Vec<RawUser>,
}

/// One user of a tenant, in Supavisor's shape.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_user: Option<String>,
    /// The name clients log in with; `db_user` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_user_alias: Option<String>,
    #[serde(default, skip_serializing)]
    pub db_password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_checkout_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<u32>,
    /// Runs the tenant's auth_query for users not listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_manager: Option<bool>,
}
