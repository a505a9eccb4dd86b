//! How a tenant is laid out in the store's rows, and back.
//!
//! A tenant row holds the tenant's JSON (Supavisor's shape, without `users`); each
//! user row holds the user's JSON (without the password, which serde never writes)
//! plus the password sealed for that row. Reading the rows back gives an equal
//! `RawTenant`, users in the order they were given. Pure: no I/O.

use std::collections::HashSet;

use tidepool_core::config::{RawTenant, RawUser};
use tidepool_core::secret::Secret;

use crate::crypto::{Binding, CryptoError, EncryptionKey};
use crate::error::StoreError;

/// A tenant ready to be written.
#[derive(Debug)]
pub(crate) struct TenantRecord {
    pub(crate) external_id: String,
    /// JSON text of the tenant without `users`.
    pub(crate) spec: String,
    pub(crate) users: Vec<UserRecord>,
}

/// A user ready to be written, or as read back.
#[derive(Debug)]
pub(crate) struct UserRecord {
    /// The name clients log in with: the primary key within the tenant.
    pub(crate) alias: String,
    pub(crate) db_user: String,
    /// `nonce || ciphertext || tag`; `None` for a user without a password.
    pub(crate) sealed_password: Option<Vec<u8>>,
    /// JSON text of the user without the password.
    pub(crate) spec: String,
}

impl TenantRecord {
    /// Lays `tenant` out as rows, sealing each password for its own row.
    pub(crate) fn encode(tenant: &RawTenant, key: &EncryptionKey) -> Result<Self, StoreError> {
        let external_id = match tenant.external_id.as_deref() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => return Err(invalid("external_id is missing")),
        };
        let mut value = serde_json::to_value(tenant).map_err(|e| invalid(&e.to_string()))?;
        if let Some(object) = value.as_object_mut() {
            object.remove("users");
        }
        let spec = value.to_string();
        let mut seen = HashSet::new();
        let mut users = Vec::with_capacity(tenant.users.len());
        for user in &tenant.users {
            let Some(db_user) = user.db_user.clone() else {
                return Err(invalid("a user has no db_user"));
            };
            let alias = user
                .db_user_alias
                .clone()
                .unwrap_or_else(|| db_user.clone());
            if !seen.insert(alias.clone()) {
                return Err(invalid(&format!("user {alias:?} is listed twice")));
            }
            let binding = Binding::Password {
                tenant: &external_id,
                alias: &alias,
            };
            let sealed_password = user
                .db_password
                .as_ref()
                .map(|password| key.seal(password.expose().as_bytes(), binding))
                .transpose()?;
            let spec = serde_json::to_string(user).map_err(|e| invalid(&e.to_string()))?;
            users.push(UserRecord {
                alias,
                db_user,
                sealed_password,
                spec,
            });
        }
        Ok(TenantRecord {
            external_id,
            spec,
            users,
        })
    }

    /// Rebuilds the tenant, opening each password with the row it was read from.
    pub(crate) fn decode(self, key: &EncryptionKey) -> Result<RawTenant, StoreError> {
        let tenant_id = self.external_id;
        let bad = |reason: String| StoreError::BadRow {
            tenant: tenant_id.clone(),
            reason,
        };
        let mut tenant: RawTenant =
            serde_json::from_str(&self.spec).map_err(|e| bad(format!("tenant spec: {e}")))?;
        tenant.external_id = Some(tenant_id.clone());
        tenant.users = Vec::with_capacity(self.users.len());
        for record in self.users {
            let mut user: RawUser = serde_json::from_str(&record.spec)
                .map_err(|e| bad(format!("spec of user {:?}: {e}", record.alias)))?;
            if let Some(sealed) = record.sealed_password {
                let binding = Binding::Password {
                    tenant: &tenant_id,
                    alias: &record.alias,
                };
                let plaintext = key.open(&sealed, binding).map_err(|error| match error {
                    CryptoError::Open => StoreError::Undecryptable {
                        tenant: tenant_id.clone(),
                        user: record.alias.clone(),
                    },
                    other => other.into(),
                })?;
                let password = String::from_utf8(plaintext).map_err(|_| {
                    bad(format!("password of user {:?} is not UTF-8", record.alias))
                })?;
                user.db_password = Some(Secret::new(password));
            }
            tenant.users.push(user);
        }
        Ok(tenant)
    }
}

fn invalid(reason: &str) -> StoreError {
    StoreError::InvalidTenant {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn key() -> EncryptionKey {
        EncryptionKey::parse(Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")).unwrap()
    }

    fn tenant() -> RawTenant {
        RawTenant {
            external_id: Some("t1".into()),
            db_host: Some("db.example".into()),
            db_port: Some(5432),
            db_database: Some("app".into()),
            default_parameter_status: Some(BTreeMap::from([(
                "server_version".to_owned(),
                "16".to_owned(),
            )])),
            allow_list: Some(vec!["10.0.0.0/8".into()]),
            users: vec![
                RawUser {
                    db_user: Some("zed".into()),
                    db_password: Some(Secret::new("zed's secret")),
                    pool_size: Some(3),
                    ..RawUser::default()
                },
                RawUser {
                    db_user: Some("app".into()),
                    db_user_alias: Some("alpha".into()),
                    mode_type: Some("session".into()),
                    ..RawUser::default()
                },
            ],
            ..RawTenant::default()
        }
    }

    #[test]
    fn round_trip_keeps_everything_and_user_order() {
        let record = TenantRecord::encode(&tenant(), &key()).unwrap();
        assert_eq!(record.external_id, "t1");
        assert!(!record.spec.contains("users"));
        assert_eq!(record.users[0].alias, "zed");
        assert_eq!(record.users[1].alias, "alpha");
        assert!(record.users[1].sealed_password.is_none());
        assert!(!record.users[0].spec.contains("secret"));
        assert_eq!(record.decode(&key()).unwrap(), tenant());
    }

    #[test]
    fn password_moved_to_another_user_does_not_decrypt() {
        let mut record = TenantRecord::encode(&tenant(), &key()).unwrap();
        record.users[1].sealed_password = record.users[0].sealed_password.clone();
        match record.decode(&key()) {
            Err(StoreError::Undecryptable { tenant, user }) => {
                assert_eq!((tenant.as_str(), user.as_str()), ("t1", "alpha"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_cannot_be_keyed() {
        let mut no_id = tenant();
        no_id.external_id = None;
        let mut no_user = tenant();
        no_user.users[0].db_user = None;
        let mut twice = tenant();
        twice.users[1].db_user_alias = Some("zed".into());
        for bad in [no_id, no_user, twice] {
            assert!(matches!(
                TenantRecord::encode(&bad, &key()),
                Err(StoreError::InvalidTenant { .. })
            ));
        }
    }

    #[test]
    fn unreadable_spec_is_a_bad_row() {
        let mut record = TenantRecord::encode(&tenant(), &key()).unwrap();
        record.spec = "{\"no_such_field\": 1}".into();
        assert!(matches!(
            record.decode(&key()),
            Err(StoreError::BadRow { .. })
        ));
    }
}
