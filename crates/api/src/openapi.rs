//! The OpenAPI 3 description of the API (served at `/api/openapi`, shown by Swagger
//! UI at `/swaggerui`), generated with utoipa from the handlers' annotations and
//! from the schema types here. The tenant schema mirrors core's `RawTenant` field
//! for field (a test keeps them in step); it lives here so core needs no utoipa.
//! These types document; they are never built.

use std::collections::BTreeMap;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// A tenant in Supavisor's shape. Absent fields take their defaults.
#[derive(ToSchema)]
pub struct Tenant {
    /// The tenant's id (`[A-Za-z0-9_-]`, at most 255); taken from the path on PUT.
    pub external_id: Option<String>,
    /// Upstream Postgres host.
    pub db_host: String,
    /// Upstream port (default 5432).
    #[schema(minimum = 1, maximum = 65535)]
    pub db_port: Option<u32>,
    /// Upstream database.
    pub db_database: String,
    /// Pool size of users without their own `pool_size` (default 20).
    pub default_pool_size: Option<u32>,
    /// Clients of the whole tenant at once (default 1000).
    pub default_max_clients: Option<u32>,
    /// Client authentication: `scram-sha-256` (default), `md5`, `password`, `trust`.
    #[schema(example = "scram-sha-256")]
    pub auth_method: Option<String>,
    /// TLS to Postgres, as libpq's sslmode: `disable`, `prefer` (default),
    /// `require`, `verify-full`. Or use `upstream_ssl`/`upstream_verify`.
    pub upstream_sslmode: Option<String>,
    /// Supavisor's spelling: TLS to Postgres on or off.
    pub upstream_ssl: Option<bool>,
    /// Supavisor's spelling, with `upstream_ssl = true`: `none` or `peer`.
    pub upstream_verify: Option<String>,
    /// CA bundle for `verify-full`: PEM text, or a file path on the pooler's host.
    pub upstream_tls_ca: Option<String>,
    /// Clients must use TLS.
    pub enforce_ssl: Option<bool>,
    /// Only listed users may log in (else others are looked up with `auth_query`).
    pub require_user: Option<bool>,
    /// Query run over the manager user's connection to find other users' verifiers.
    pub auth_query: Option<String>,
    /// TLS server name that selects this tenant.
    pub sni_hostname: Option<String>,
    /// Seconds an idle client may stay connected; 0 or absent: no limit.
    pub client_idle_timeout: Option<u64>,
    /// CIDR ranges clients may connect from; absent: anywhere.
    pub allow_list: Option<Vec<String>>,
    /// Parameters reported to clients before a server was ever reached.
    pub default_parameter_status: Option<BTreeMap<String, String>>,
    /// Accepted for Supavisor compatibility: `auto`, `v4`, `v6`.
    pub ip_version: Option<String>,
    /// Accepted for Supavisor compatibility (Tidepool uses TCP keepalive).
    pub client_heartbeat_interval: Option<u64>,
    /// At least one user.
    pub users: Vec<User>,
    /// Where the tenant is defined: `file` (read-only here) or `store`.
    #[schema(read_only, example = "store")]
    pub source: Option<String>,
}

/// One user of a tenant, in Supavisor's shape.
#[derive(ToSchema)]
pub struct User {
    /// The role the pooler logs in to Postgres as.
    pub db_user: String,
    /// The name clients log in with (default `db_user`).
    pub db_user_alias: Option<String>,
    /// Plain text, a SCRAM verifier (`SCRAM-SHA-256$...`) or an md5 hash. Stored
    /// encrypted; never returned.
    #[schema(write_only)]
    pub db_password: Option<String>,
    /// Server connections of this user's pool.
    pub pool_size: Option<u32>,
    /// `transaction` (default) or `session`.
    pub mode_type: Option<String>,
    /// Milliseconds a client waits for a server connection.
    pub pool_checkout_timeout: Option<u64>,
    /// Clients of this user at once.
    pub max_clients: Option<u32>,
    /// Runs the tenant's `auth_query`.
    pub is_manager: Option<bool>,
}

/// Body of `PUT /api/tenants/{id}`.
#[derive(ToSchema)]
pub struct TenantBody {
    pub tenant: Tenant,
}

/// One tenant.
#[derive(ToSchema)]
pub struct TenantData {
    pub data: Tenant,
}

/// Every tenant.
#[derive(ToSchema)]
pub struct TenantList {
    pub data: Vec<Tenant>,
}

/// Why a request failed: messages by field (`db_port`, `users[0].pool_size`), or
/// under `detail`.
#[derive(ToSchema)]
#[schema(example = json!({"errors": {"db_port": ["must be between 1 and 65535"]}}))]
pub struct ErrorsDoc {
    pub errors: BTreeMap<String, Vec<String>>,
}

/// Health of this node.
#[derive(ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// `ok`, `unavailable` or `none` (no store configured).
    pub store: String,
    pub shutting_down: bool,
    /// Tenants served.
    pub tenants: u64,
}

#[derive(ToSchema)]
pub struct HealthData {
    pub data: Health,
}

/// Adds the bearer-token scheme the tenant paths name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT signed with API_JWT_SECRET (METRICS_JWT_SECRET for /metrics)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tidepool management API",
        description = "Tenants, health and metrics of a Tidepool node (Supavisor-compatible shapes)."
    ),
    paths(
        crate::tenants::list_tenants,
        crate::tenants::get_tenant,
        crate::tenants::put_tenant,
        crate::tenants::delete_tenant,
        crate::tenants::terminate_tenant,
        crate::health::health,
        crate::metrics::all_metrics,
        crate::metrics::tenant_metrics,
    ),
    components(schemas(Tenant, User, TenantBody, TenantData, TenantList, ErrorsDoc, Health, HealthData)),
    modifiers(&BearerAuth),
    tags(
        (name = "tenants", description = "Tenants from the file (read-only) and the metadata store"),
        (name = "health", description = "Readiness of this node"),
        (name = "metrics", description = "Prometheus metrics"),
    )
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;
    use tidepool_core::config::{RawTenant, RawUser};
    use utoipa::openapi::{RefOr, Schema};
    use utoipa::PartialSchema;

    fn properties(schema: RefOr<Schema>) -> Vec<String> {
        match schema {
            RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
            _ => panic!("not an object schema"),
        }
    }

    fn keys(value: serde_json::Value) -> Vec<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    /// Every field of core's RawTenant and RawUser is documented, and nothing else.
    #[test]
    fn schema_follows_raw_tenant() {
        let full: RawTenant = serde_json::from_value(serde_json::json!({
            "external_id": "t", "db_host": "h", "db_port": 1, "db_database": "d",
            "default_pool_size": 1, "default_max_clients": 1, "auth_method": "md5",
            "upstream_sslmode": "disable", "upstream_ssl": false, "upstream_verify": "none",
            "upstream_tls_ca": "x", "enforce_ssl": false, "require_user": true,
            "auth_query": "q", "sni_hostname": "s", "client_idle_timeout": 1,
            "allow_list": [], "default_parameter_status": {}, "ip_version": "auto",
            "client_heartbeat_interval": 1,
            "users": [{"db_user": "u", "db_user_alias": "a", "pool_size": 1,
                       "mode_type": "session", "pool_checkout_timeout": 1,
                       "max_clients": 1, "is_manager": false}]
        }))
        .unwrap();
        let mut raw = keys(serde_json::to_value(&full).unwrap());
        raw.push("source".into());
        raw.sort();
        let mut doc = properties(Tenant::schema());
        doc.sort();
        assert_eq!(raw, doc);

        let user = RawUser {
            db_password: Some(tidepool_core::secret::Secret::new("p")),
            ..full.users[0].clone()
        };
        let mut raw = keys(serde_json::to_value(&user).unwrap());
        raw.push("db_password".into()); // never serialised, but accepted
        raw.sort();
        let mut doc = properties(User::schema());
        doc.sort();
        assert_eq!(raw, doc);
    }

    #[test]
    fn document_has_every_path() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for path in [
            "/api/tenants",
            "/api/tenants/{id}",
            "/api/tenants/{id}/terminate",
            "/api/health",
            "/metrics",
            "/metrics/{tenant}",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
    }
}
