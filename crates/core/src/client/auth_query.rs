//! Users a tenant does not list (`require_user = false`): their password verifier
//! is read with the tenant's `auth_query` over the manager user's connection, then
//! cached briefly. The pooler never learns the password itself: SCRAM verifiers
//! log in upstream by pass-through, md5 hashes by md5.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgauth::ScramSecret;

use crate::app::App;
use crate::config::{StoredPassword, Tenant, User};
use crate::error::ClientError;
use crate::secret::Secret;
use crate::server::reset::{run_params_collect, QueryOutcome};

/// Entries kept at most; beyond it, expired ones are dropped, then all.
const MAX_ENTRIES: usize = 10_000;

type Key = (String, String);
type Entries = HashMap<Key, (Option<Arc<User>>, Instant)>;

/// Recent `auth_query` answers, per (tenant, user).
#[derive(Default)]
pub struct AuthCache {
    entries: Mutex<Entries>,
}

impl AuthCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An answer younger than `ttl` (`pool.auth_query_cache_secs`: a password
    /// changed in Postgres takes effect for new logins at the latest after it).
    /// `Some(None)` means "no such user" was cached.
    fn get(&self, tenant: &str, user: &str, ttl: Duration) -> Option<Option<Arc<User>>> {
        let entries = self.lock();
        let (found, at) = entries.get(&(tenant.to_owned(), user.to_owned()))?;
        (at.elapsed() < ttl).then(|| found.clone())
    }

    fn put(&self, tenant: &str, user: &str, found: Option<Arc<User>>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            (tenant.to_owned(), user.to_owned()),
            (found, Instant::now()),
        );
    }

    /// Drops an answer (after a failed login, so a just-changed password is read
    /// again on the next attempt).
    pub fn forget(&self, tenant: &str, user: &str) {
        self.lock().remove(&(tenant.to_owned(), user.to_owned()));
    }

    /// Drops every answer of a tenant (its settings changed).
    pub fn forget_tenant(&self, tenant: &str) {
        self.lock().retain(|(t, _), _| t != tenant);
    }
}

/// Whether a user missing from `tenant`'s list may be looked up.
pub fn applies(tenant: &Tenant) -> bool {
    !tenant.require_user && tenant.manager().is_some()
}

/// The user `name` of `tenant` as its `auth_query` describes it; `None` when the
/// query finds no usable verifier.
pub async fn lookup(
    app: &Arc<App>,
    tenant: &Arc<Tenant>,
    name: &str,
) -> Result<Option<Arc<User>>, ClientError> {
    let ttl = app.config().pool.auth_query_cache_ttl;
    if let Some(found) = app.auth_cache.get(&tenant.id, name, ttl) {
        return Ok(found);
    }
    let Some(manager) = tenant.manager() else {
        return Ok(None);
    };
    let pool = app
        .pool(tenant, manager)
        .map_err(|_| ClientError::ServerUnavailable)?;
    let mut lease = pool
        .checkout()
        .await
        .map_err(super::login::client_error_of)?;
    let rows = run_params_collect(&mut lease.conn, &tenant.auth_query, &[Some(name)], 2).await;
    let rows = match rows {
        Ok(rows) => {
            pool.release(lease);
            rows
        }
        Err(QueryOutcome::Failed { code, message }) => {
            pool.release(lease);
            tracing::warn!(tenant = %tenant.id, %code, %message, "auth_query failed");
            return Err(ClientError::ServerRefused { code, message });
        }
        Err(_) => {
            pool.discard(lease);
            return Err(ClientError::ServerLost);
        }
    };
    let verifier = rows
        .first()
        .and_then(|row| row.get(1))
        .and_then(|v| v.as_deref());
    let password = match verifier {
        Some(v) if v.starts_with("SCRAM-SHA-256$") => {
            ScramSecret::parse(v).ok().map(StoredPassword::Scram)
        }
        Some(v) if v.len() == 35 && v.starts_with("md5") => {
            Some(StoredPassword::Md5(Secret::new(v)))
        }
        _ => None,
    };
    let found = password.map(|password| {
        Arc::new(User {
            name: name.to_owned(),
            db_user: name.to_owned(),
            max_clients: tenant.max_clients,
            is_manager: false,
            password,
            pool_size: tenant.default_pool_size,
            mode: manager.mode,
            checkout_timeout: manager.checkout_timeout,
        })
    });
    app.auth_cache.put(&tenant.id, name, found.clone(), ttl);
    Ok(found)
}
