//! The configuration file as written: plain serde structs, every field optional where
//! a default exists. Nothing here is trusted; `validate` turns it into domain types.
//!
//! The tenant and user shapes follow Supavisor's tenant object (`external_id`,
//! `db_host`, `users[].db_user`, `mode_type`, ...) so the file and the management API
//! share one model.

use serde::Deserialize;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub external_id: Option<String>,
    pub db_host: Option<String>,
    pub db_port: Option<u32>,
    pub db_database: Option<String>,
    pub default_pool_size: Option<u32>,
    pub auth_method: Option<String>,
    pub upstream_sslmode: Option<String>,
    /// Supavisor's spelling: `upstream_ssl = true` with `upstream_verify = "peer" | "none"`.
    pub upstream_ssl: Option<bool>,
    pub upstream_verify: Option<String>,
    pub upstream_tls_ca: Option<String>,
    #[serde(default)]
    pub users: Vec<RawUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub db_user: Option<String>,
    pub db_password: Option<Secret>,
    pub pool_size: Option<u32>,
    pub mode_type: Option<String>,
    pub pool_checkout_timeout: Option<u64>,
}
