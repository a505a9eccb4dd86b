//! Single-upstream mode: the command-line flags `--upstream URL --pool-size N
//! --pool-mode M` turned into the same raw configuration a file would give.

use super::raw::{RawConfig, RawServer, RawTenant, RawUser};
use super::ConfigError;
use crate::secret::Secret;

/// The flags of single-upstream mode.
#[derive(Debug, Clone)]
pub struct SingleUpstream {
    pub listen: String,
    /// `postgres://USER:PASS@HOST:PORT/DB[?sslmode=...]`; a HOST that is a
    /// directory (percent-encoded, `%2Frun%2Fpostgresql`, or `?host=/run/postgresql`
    /// as libpq takes it) means the server's Unix-domain socket in it.
    pub upstream: String,
    pub pool_size: u32,
    pub pool_mode: String,
    pub auth_method: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Refuse clients that do not use TLS (the tenant's `enforce_ssl`).
    pub require_tls: bool,
}

/// Builds a one-tenant configuration from the flags. The tenant is named after the
/// database, and clients log in with the upstream user and password.
pub fn single_upstream(flags: &SingleUpstream) -> Result<RawConfig, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        key: "--upstream".into(),
        reason: reason.into(),
    };
    // libpq takes an empty host before the path (`postgresql://user@/db?host=/dir`);
    // the URL parser wants one there, so a stand-in is put in and must be replaced.
    let (text, stand_in) = match empty_host_at(&flags.upstream) {
        Some(at) => {
            let mut text = flags.upstream.clone();
            text.insert_str(at, EMPTY_HOST_STAND_IN);
            (text, true)
        }
        None => (flags.upstream.clone(), false),
    };
    let url = url::Url::parse(&text).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(invalid("scheme must be postgres:// or postgresql://"));
    }
    let user = decode_percent(url.username());
    if user.is_empty() {
        return Err(invalid("a user name is required"));
    }
    let password = url.password().map(|p| Secret::new(decode_percent(p)));
    let query = |key: &str| {
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    // As in libpq, `host` and `port` in the query win over the authority's.
    let host = query("host")
        .or_else(|| {
            url.host_str()
                .filter(|_| !stand_in)
                .map(|h| decode_percent(h.trim_start_matches('[').trim_end_matches(']')))
        })
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("a host is required"))?;
    let port = match query("port") {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| invalid("port must be a number from 1 to 65535"))?,
        None => url.port().unwrap_or(5432),
    };
    let database = match url.path().trim_start_matches('/') {
        "" => user.clone(),
        db => decode_percent(db),
    };
    let sslmode = query("sslmode");
    Ok(RawConfig {
        server: RawServer {
            listen: Some(flags.listen.clone()),
            tls_cert: flags.tls_cert.clone(),
            tls_key: flags.tls_key.clone(),
            ..RawServer::default()
        },
        pool: Default::default(),
        tenants: vec![RawTenant {
            // Tenant ids are restricted to [A-Za-z0-9_-]; a database name may not be.
            external_id: Some(
                database
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect(),
            ),
            db_host: Some(host),
            db_port: Some(port.into()),
            db_database: Some(database),
            auth_method: flags.auth_method.clone(),
            upstream_sslmode: sslmode,
            // One upstream behind one pooler, as with PgBouncer: the operator sizes
            // the machine, not a per-tenant quota.
            default_max_clients: Some(SINGLE_UPSTREAM_MAX_CLIENTS),
            require_user: Some(true),
            enforce_ssl: flags.require_tls.then_some(true),
            users: vec![RawUser {
                db_user: Some(user),
                db_password: password,
                pool_size: Some(flags.pool_size),
                mode_type: Some(flags.pool_mode.clone()),
                ..RawUser::default()
            }],
            ..RawTenant::default()
        }],
        ..RawConfig::default()
    })
}

/// What stands in for an empty host while the URL is parsed.
const EMPTY_HOST_STAND_IN: &str = "localhost";

/// Where an empty host sits in `url` (user info ending right before the path),
/// if it has one.
fn empty_host_at(url: &str) -> Option<usize> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    (authority_end > start && url[..authority_end].ends_with('@')).then_some(authority_end)
}

/// Client limit of the single-upstream mode.
const SINGLE_UPSTREAM_MAX_CLIENTS: u32 = 1_000_000;

/// Percent-decodes a URL component (user names and passwords may hold `@`, `:`, `/`).
fn decode_percent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(url: &str) -> SingleUpstream {
        SingleUpstream {
            listen: "127.0.0.1:6432".into(),
            upstream: url.into(),
            pool_size: 5,
            pool_mode: "transaction".into(),
            auth_method: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
        }
    }

    #[test]
    fn require_tls_enforces_ssl_on_the_tenant() {
        let url = "postgres://app:pw@db.local/shop";
        assert_eq!(
            single_upstream(&flags(url)).unwrap().tenants[0].enforce_ssl,
            None
        );
        let strict = SingleUpstream {
            require_tls: true,
            ..flags(url)
        };
        assert_eq!(
            single_upstream(&strict).unwrap().tenants[0].enforce_ssl,
            Some(true)
        );
    }

    #[test]
    fn parses_url() {
        let raw = single_upstream(&flags(
            "postgres://app:p%40ss@db.local:6543/shop?sslmode=require",
        ))
        .unwrap();
        let t = &raw.tenants[0];
        assert_eq!(t.db_host.as_deref(), Some("db.local"));
        assert_eq!(t.db_port, Some(6543));
        assert_eq!(t.db_database.as_deref(), Some("shop"));
        assert_eq!(t.external_id.as_deref(), Some("shop"));
        assert_eq!(t.upstream_sslmode.as_deref(), Some("require"));
        let u = &t.users[0];
        assert_eq!(u.db_user.as_deref(), Some("app"));
        assert_eq!(u.db_password.as_ref().unwrap().expose(), "p@ss");
    }

    #[test]
    fn a_directory_host_is_kept_for_a_unix_socket() {
        let encoded =
            single_upstream(&flags("postgres://app:pw@%2Frun%2Fpostgresql:5433/shop")).unwrap();
        assert_eq!(
            encoded.tenants[0].db_host.as_deref(),
            Some("/run/postgresql")
        );
        assert_eq!(encoded.tenants[0].db_port, Some(5433));
        let query = single_upstream(&flags(
            "postgres://app:pw@localhost/shop?host=/tmp/pg%20dir&port=6000",
        ))
        .unwrap();
        assert_eq!(query.tenants[0].db_host.as_deref(), Some("/tmp/pg dir"));
        assert_eq!(query.tenants[0].db_port, Some(6000));
        let empty_host =
            single_upstream(&flags("postgresql://app:pw@/shop?host=/run/postgresql")).unwrap();
        assert_eq!(
            empty_host.tenants[0].db_host.as_deref(),
            Some("/run/postgresql")
        );
        assert!(single_upstream(&flags("postgresql://app:pw@/shop")).is_err());
        assert!(single_upstream(&flags("postgres://app:pw@h/shop?port=0")).is_err());
        assert!(single_upstream(&flags("postgres://app:pw@h/shop?port=x")).is_err());
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(single_upstream(&flags("mysql://a:b@h/d")).is_err());
        assert!(single_upstream(&flags("postgres://h/d")).is_err());
        assert!(single_upstream(&flags("not a url")).is_err());
    }
}
