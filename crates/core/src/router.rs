//! Which tenant and user a client means, from its startup parameters and the TLS
//! server name it asked for. Pure apart from the registry look-ups.
//!
//! In order: the startup option `-c tidepool.tenant=ID` (or Supavisor's
//! `reference=ID`), the user name `user.tenant` (split on the last dot), the TLS
//! server name (an exact `sni_hostname`, else its first label as a tenant id), a
//! database name equal to a tenant id, or the only tenant when there is just one.

use pgwire::startup::StartupParams;

use crate::error::ClientError;
use crate::tenants::{TenantEntry, Tenants};

/// The tenant and database user a client asked for.
#[derive(Clone)]
pub struct Route {
    pub entry: TenantEntry,
    pub user: String,
}

/// Resolves a client's startup parameters (and TLS server name) to a tenant and
/// user.
pub fn route(
    tenants: &Tenants,
    params: &StartupParams,
    server_name: Option<&str>,
) -> Result<Route, ClientError> {
    let raw_user = params
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or(ClientError::NoUser)?;
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(raw_user);

    let (entry, user) = if let Some(id) = params.get("options").and_then(tenant_option) {
        (tenants.get(id).ok_or(ClientError::NoTenant)?, raw_user)
    } else if let Some((user, t)) = raw_user
        .rsplit_once('.')
        .filter(|(u, _)| !u.is_empty())
        .and_then(|(u, id)| tenants.get(id).map(|t| (u, t)))
    {
        (t, user)
    } else if let Some(t) = server_name.and_then(|n| tenants.by_server_name(n)) {
        (t, raw_user)
    } else if let Some(t) = tenants.get(database) {
        (t, raw_user)
    } else if let Some(only) = tenants.only() {
        (only, raw_user)
    } else {
        return Err(ClientError::NoTenant);
    };

    let tenant = &entry.tenant;
    if database != tenant.database && database != tenant.id && database != raw_user {
        return Err(ClientError::UnknownDatabase {
            database: database.to_owned(),
        });
    }
    Ok(Route {
        user: user.to_owned(),
        entry,
    })
}

/// Finds `tidepool.tenant=ID` (as `-c tidepool.tenant=ID`, `-ctidepool.tenant=ID` or
/// `--tidepool.tenant=ID`) or `reference=ID` in a libpq `options` string.
fn tenant_option(options: &str) -> Option<&str> {
    let mut tokens = options.split_ascii_whitespace();
    while let Some(token) = tokens.next() {
        let setting = match token {
            "-c" => tokens.next()?,
            t => t
                .strip_prefix("--")
                .or_else(|| t.strip_prefix("-c"))
                .unwrap_or(t),
        };
        if let Some(id) = setting
            .strip_prefix("tidepool.tenant=")
            .or_else(|| setting.strip_prefix("reference="))
        {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::signal::Beacon;
    use crate::tenants::{Signals, Tenants};

    fn config() -> Tenants {
        let c = Config::from_toml(
            r#"
            [[tenants]]
            external_id = "t1"
            db_host = "h"
            db_database = "app"
            [[tenants.users]]
            db_user = "my.user"
            db_password = "p"
            [[tenants]]
            external_id = "t2"
            db_host = "h"
            db_database = "other"
            [[tenants.users]]
            db_user = "u"
            db_password = "p"
            [[tenants]]
            external_id = "t3"
            db_host = "h"
            db_database = "third"
            sni_hostname = "Pool.Example.com"
            [[tenants.users]]
            db_user = "u"
            db_password = "p"
            "#,
        )
        .unwrap();
        let t = Tenants::new(Signals::new(Beacon::new(), Beacon::new()));
        t.replace_file_tenants(&c.tenants);
        t
    }

    fn params(kv: &[(&str, &str)]) -> StartupParams {
        StartupParams {
            minor_version: 0,
            params: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn user_dot_tenant_splits_on_last_dot() {
        let r = route(
            &config(),
            &params(&[("user", "my.user.t1"), ("database", "app")]),
            None,
        )
        .unwrap();
        assert_eq!(
            (r.entry.tenant.id.as_str(), r.user.as_str()),
            ("t1", "my.user")
        );
    }

    #[test]
    fn options_and_database() {
        let c = config();
        let r = route(
            &c,
            &params(&[("user", "u"), ("options", "-c tidepool.tenant=t2")]),
            None,
        )
        .unwrap();
        assert_eq!(r.entry.tenant.id, "t2");
        let r = route(
            &c,
            &params(&[("user", "u"), ("options", "reference=t2")]),
            None,
        )
        .unwrap();
        assert_eq!(r.entry.tenant.id, "t2");
        let r = route(&c, &params(&[("user", "u"), ("database", "t2")]), None).unwrap();
        assert_eq!(r.entry.tenant.id, "t2");
    }

    #[test]
    fn tls_server_name() {
        let c = config();
        let p = params(&[("user", "u")]);
        let r = route(&c, &p, Some("pool.example.COM")).unwrap();
        assert_eq!(r.entry.tenant.id, "t3");
        let r = route(&c, &p, Some("t2.pool.example.net")).unwrap();
        assert_eq!(r.entry.tenant.id, "t2");
        assert!(matches!(
            route(&c, &p, Some("nope.example.com")),
            Err(ClientError::NoTenant)
        ));
        // An explicit user.tenant wins over the server name.
        let r = route(&c, &params(&[("user", "u.t1")]), Some("pool.example.com")).unwrap();
        assert_eq!(r.entry.tenant.id, "t1");
    }

    #[test]
    fn unknown_tenant_or_database() {
        let c = config();
        assert!(matches!(
            route(&c, &params(&[("user", "u")]), None),
            Err(ClientError::NoTenant)
        ));
        assert!(matches!(
            route(&c, &params(&[("user", "u.t2"), ("database", "nope")]), None),
            Err(ClientError::UnknownDatabase { .. })
        ));
        assert!(matches!(
            route(&c, &params(&[("database", "x")]), None),
            Err(ClientError::NoUser)
        ));
    }
}
