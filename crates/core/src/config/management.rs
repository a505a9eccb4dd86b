//! Validation of `[api]` and `[metadata]`: where the management API listens, the
//! secrets of its bearer tokens, and the metadata store that holds API tenants.
//! Environment variables and flags are applied by the binary before validation,
//! so this module only checks what it is given.

use std::net::SocketAddr;

use super::raw::RawConfig;
use super::ConfigError;
use crate::secret::Secret;

/// The management API's settings.
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// Where the HTTP API listens; `None`: no API.
    pub listen: Option<SocketAddr>,
    /// HS256 secret of `/api/tenants*` tokens; required when the API listens.
    pub jwt_key: Option<Secret>,
    /// HS256 secret of `/metrics` tokens; `None`: metrics are open.
    pub metrics_jwt_key: Option<Secret>,
}

/// The metadata store's settings.
#[derive(Debug, Clone, Default)]
pub struct MetadataSettings {
    /// `postgres://...` of the store; `None`: no store, tenants come from the file.
    pub url: Option<Secret>,
    /// Key that encrypts stored passwords (base64 of 32 bytes); checked by the store.
    pub encryption_key: Option<Secret>,
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A secret given as an empty string counts as not given.
fn non_empty(s: &Option<Secret>) -> Option<Secret> {
    s.clone().filter(|s| !s.expose().trim().is_empty())
}

pub(super) fn validate_api(raw: &RawConfig) -> Result<ApiSettings, ConfigError> {
    let a = &raw.api;
    let listen =
        match a.listen.as_deref() {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                invalid("api.listen", &format!("{text:?} is not an IP:port address"))
            })?),
        };
    let jwt_key = non_empty(&a.jwt_secret);
    if listen.is_some() && jwt_key.is_none() {
        return Err(invalid(
            "api.jwt_secret",
            "is required when the API listens (set API_JWT_SECRET or [api] jwt_secret)",
        ));
    }
    Ok(ApiSettings {
        listen,
        jwt_key,
        metrics_jwt_key: non_empty(&a.metrics_jwt_secret),
    })
}

pub(super) fn validate_metadata(raw: &RawConfig) -> Result<MetadataSettings, ConfigError> {
    let m = &raw.metadata;
    let url = non_empty(&m.url);
    if let Some(url) = &url {
        let text = url.expose();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            // The URL may hold a password: the reason never quotes it.
            return Err(invalid(
                "metadata.url",
                "must start with postgres:// or postgresql://",
            ));
        }
    }
    Ok(MetadataSettings {
        url,
        encryption_key: non_empty(&m.encryption_key),
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    const TENANT: &str = r#"
        [[tenants]]
        external_id = "t1"
        db_host = "127.0.0.1"
        db_database = "app"
        [[tenants.users]]
        db_user = "app"
        db_password = "secret"
    "#;

    #[test]
    fn api_needs_a_secret_when_it_listens() {
        let err = Config::from_toml(&format!("[api]\nlisten = \"127.0.0.1:4000\"\n{TENANT}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.jwt_secret"), "{err}");
        let c = Config::from_toml(&format!(
            "[api]\nlisten = \"127.0.0.1:4000\"\njwt_secret = \"s3cr3t\"\n{TENANT}"
        ))
        .unwrap();
        assert_eq!(c.api.listen.map(|a| a.port()), Some(4000));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_store_allows_zero_file_tenants() {
        assert!(Config::from_toml("").is_err());
        let c = Config::from_toml(
            "[metadata]\nurl = \"postgres://u:pw@127.0.0.1/meta\"\nencryption_key = \"k\"",
        )
        .unwrap();
        assert!(c.tenants.is_empty());
        assert!(!format!("{c:?}").contains("pw@"));
        let err = Config::from_toml("[metadata]\nurl = \"mysql://u:pw@h/x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata.url") && !err.contains("pw"), "{err}");
    }
}
