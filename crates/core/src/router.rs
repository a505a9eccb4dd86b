//! Which tenant and user a client means, from its startup parameters. Pure.
//!
//! In order: the startup option `-c tidepool.tenant=ID` (or Supavisor's
//! `reference=ID`), the user name `user.tenant` (split on the last dot), a database
//! name equal to a tenant id, or the only tenant when there is just one.

use std::sync::Arc;

use pgwire::startup::StartupParams;

use crate::config::{Config, Tenant};
use crate::error::ClientError;

/// The tenant and database user a client asked for.
#[derive(Debug, Clone)]
pub struct Route {
    pub tenant: Arc<Tenant>,
    pub user: String,
}

/// Resolves a client's startup parameters to a tenant and user.
pub fn route(config: &Config, params: &StartupParams) -> Result<Route, ClientError> {
    let raw_user = params
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or(ClientError::NoUser)?;
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(raw_user);

    let (tenant, user) = if let Some(id) = params.get("options").and_then(tenant_option) {
        (config.tenant(id).ok_or(ClientError::NoTenant)?, raw_user)
    } else if let Some((user, t)) = raw_user
        .rsplit_once('.')
        .and_then(|(u, id)| config.tenant(id).map(|t| (u, t)))
        .filter(|(u, _)| !u.is_empty())
    {
        (t, user)
    } else if let Some(t) = config.tenant(database) {
        (t, raw_user)
    } else if let [only] = config.tenants.as_slice() {
        (only, raw_user)
    } else {
        return Err(ClientError::NoTenant);
    };

    if database != tenant.database && database != tenant.id && database != raw_user {
        return Err(ClientError::UnknownDatabase {
            database: database.to_owned(),
        });
    }
    Ok(Route {
        tenant: tenant.clone(),
        user: user.to_owned(),
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

    fn config() -> Config {
        Config::from_toml(
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
            "#,
        )
        .unwrap()
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
        )
        .unwrap();
        assert_eq!((r.tenant.id.as_str(), r.user.as_str()), ("t1", "my.user"));
    }

    #[test]
    fn options_and_database() {
        let c = config();
        let r = route(
            &c,
            &params(&[("user", "u"), ("options", "-c tidepool.tenant=t2")]),
        )
        .unwrap();
        assert_eq!(r.tenant.id, "t2");
        let r = route(&c, &params(&[("user", "u"), ("options", "reference=t2")])).unwrap();
        assert_eq!(r.tenant.id, "t2");
        let r = route(&c, &params(&[("user", "u"), ("database", "t2")])).unwrap();
        assert_eq!(r.tenant.id, "t2");
    }

    #[test]
    fn unknown_tenant_or_database() {
        let c = config();
        assert!(matches!(
            route(&c, &params(&[("user", "u")])),
            Err(ClientError::NoTenant)
        ));
        assert!(matches!(
            route(&c, &params(&[("user", "u.t2"), ("database", "nope")])),
            Err(ClientError::UnknownDatabase { .. })
        ));
        assert!(matches!(
            route(&c, &params(&[("database", "x")])),
            Err(ClientError::NoUser)
        ));
    }
}
