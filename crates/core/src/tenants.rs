//! The tenants one process serves, from the configuration file and from the
//! metadata store, found by id or by TLS server name; and each tenant's live state
//! (client counts, statistics, the signals that end its clients), which outlives
//! changes to its settings.
//!
//! Looked up once per login, never per message: a read lock on a map is enough.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::Tenant;
use crate::metrics::UserStats;
use crate::signal::Beacon;

/// Where a tenant's settings come from, and so where they are changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    File,
    Store,
}

impl TenantSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Store => "store",
        }
    }
}

/// A tenant's current settings and its live state.
#[derive(Clone)]
pub struct TenantEntry {
    pub tenant: Arc<Tenant>,
    pub source: TenantSource,
    pub live: Arc<TenantLive>,
}

/// Why a tenant's clients were sent away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    Deleted,
    Terminated,
    Changed,
}

/// State of a tenant that lives as long as the tenant, across setting changes.
pub struct TenantLive {
    pub id: String,
    clients: AtomicU32,
    users: Mutex<HashMap<String, Arc<UserLive>>>,
    signals: Mutex<Signals>,
    reason: AtomicU8,
    /// Parent signals: the process's shutdown and force tokens.
    parent: Signals,
}

/// Idle clients stop when `stop` fires; clients mid-transaction when `kill` fires.
#[derive(Clone)]
pub struct Signals {
    pub stop: Arc<Beacon>,
    pub kill: Arc<Beacon>,
}

impl Signals {
    pub fn new(stop: Arc<Beacon>, kill: Arc<Beacon>) -> Self {
        Self { stop, kill }
    }

    fn children(&self) -> Self {
        Self {
            stop: self.stop.child(),
            kill: self.kill.child(),
        }
    }
}

/// Live state of one (tenant, user): its client count and statistics.
#[derive(Default)]
pub struct UserLive {
    pub clients: AtomicU32,
    /// Of `clients`, those parked outside the runtime.
    pub parked: AtomicU32,
    pub stats: Arc<UserStats>,
}

/// Why a client was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitError {
    TenantFull,
    UserFull,
}

/// A client's place in its tenant's and user's counts, given back on drop.
pub struct ClientSlot {
    tenant: Arc<TenantLive>,
    user: Arc<UserLive>,
}

impl ClientSlot {
    pub fn stats(&self) -> &Arc<UserStats> {
        &self.user.stats
    }

    pub fn tenant(&self) -> &Arc<TenantLive> {
        &self.tenant
    }

    /// Counts this client in or out of its user's parked clients.
    pub fn count_parked(&self, parked: bool) {
        if parked {
            self.user.parked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.user.parked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.tenant.clients.fetch_sub(1, Ordering::Relaxed);
        self.user.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TenantLive {
    fn new(id: &str, parent: &Signals) -> Arc<Self> {
        Arc::new(Self {
            id: id.to_owned(),
            clients: AtomicU32::new(0),
            users: Mutex::new(HashMap::new()),
            signals: Mutex::new(parent.children()),
            reason: AtomicU8::new(0),
            parent: parent.clone(),
        })
    }

    pub fn clients(&self) -> u32 {
        self.clients.load(Ordering::Relaxed)
    }

    /// The live state of one user, created on first use.
    pub fn user(&self, name: &str) -> Arc<UserLive> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.entry(name.to_owned()).or_default().clone()
    }

    /// Every user seen so far, for metrics.
    pub fn users(&self) -> Vec<(String, Arc<UserLive>)> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Counts a login of `user` that was refused.
    pub fn count_failed_login(&self, user: &str) {
        self.user(user)
            .stats
            .logins_failed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a client in, within `tenant_max` clients of the tenant and
    /// `user_max` of the user.
    pub fn admit(
        self: &Arc<Self>,
        user: &str,
        tenant_max: u32,
        user_max: u32,
    ) -> Result<ClientSlot, AdmitError> {
        let user = self.user(user);
        if self.clients.fetch_add(1, Ordering::Relaxed) >= tenant_max {
            self.clients.fetch_sub(1, Ordering::Relaxed);
            return Err(AdmitError::TenantFull);
        }
        if user.clients.fetch_add(1, Ordering::Relaxed) >= user_max {
            user.clients.fetch_sub(1, Ordering::Relaxed);
            self.clients.fetch_sub(1, Ordering::Relaxed);
            return Err(AdmitError::UserFull);
        }
        Ok(ClientSlot {
            tenant: self.clone(),
            user,
        })
    }

    /// The signals a newly logged-in client watches.
    pub fn signals(&self) -> Signals {
        self.signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends every current client away (they are told `reason`); later clients
    /// get fresh signals.
    pub fn end_clients(&self, reason: GoneReason) {
        self.reason.store(reason as u8 + 1, Ordering::Relaxed);
        let old = {
            let mut signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *signals, self.parent.children())
        };
        old.stop.fire();
        old.kill.fire();
    }

    /// Why the clients were last sent away, if they were.
    pub fn gone_reason(&self) -> Option<GoneReason> {
        match self.reason.load(Ordering::Relaxed) {
            1 => Some(GoneReason::Deleted),
            2 => Some(GoneReason::Terminated),
            3 => Some(GoneReason::Changed),
            _ => None,
        }
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
}

/// A change the store may not make: the tenant belongs to the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {0:?} is defined in the configuration file; change it there")]
pub struct FileTenant(pub String);

/// Every tenant, by id and by TLS server name.
pub struct Tenants {
    parent: Signals,
    inner: RwLock<Maps>,
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<String, TenantEntry>,
    by_sni: HashMap<String, String>,
}

impl Maps {
    fn insert(&mut self, entry: TenantEntry) -> Option<TenantEntry> {
        if let Some(host) = &entry.tenant.sni_hostname {
            self.by_sni.insert(host.clone(), entry.tenant.id.clone());
        }
        let old = self.by_id.insert(entry.tenant.id.clone(), entry);
        self.forget_sni(old.as_ref());
        old
    }

    fn remove(&mut self, id: &str) -> Option<TenantEntry> {
        let old = self.by_id.remove(id);
        self.forget_sni(old.as_ref());
        old
    }

    /// Drops the server-name route of a replaced or removed tenant, unless the
    /// name now leads to another tenant or to the tenant's new settings.
    fn forget_sni(&mut self, old: Option<&TenantEntry>) {
        let Some(host) = old.and_then(|o| o.tenant.sni_hostname.as_ref()) else {
            return;
        };
        let Some(id) = self.by_sni.get(host) else {
            return;
        };
        let still_used = self
            .by_id
            .get(id)
            .is_some_and(|e| e.tenant.sni_hostname.as_ref() == Some(host));
        if !still_used {
            self.by_sni.remove(host);
        }
    }
}

impl Tenants {
    /// An empty registry whose tenants' signals derive from `parent`.
    pub fn new(parent: Signals) -> Self {
        Self {
            parent,
            inner: RwLock::new(Maps::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<TenantEntry> {
        self.read().by_id.get(id).cloned()
    }

    /// The tenant a TLS server name selects: an exact `sni_hostname`, else the
    /// tenant whose id is the name's first label (`t1.pool.example.com`).
    pub fn by_server_name(&self, name: &str) -> Option<TenantEntry> {
        let name = name.to_ascii_lowercase();
        let maps = self.read();
        if let Some(entry) = maps.by_sni.get(&name).and_then(|id| maps.by_id.get(id)) {
            return Some(entry.clone());
        }
        let first = name.split('.').next()?;
        maps.by_id.get(first).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The one tenant, when there is exactly one.
    pub fn only(&self) -> Option<TenantEntry> {
        let maps = self.read();
        match maps.by_id.len() {
            1 => maps.by_id.values().next().cloned(),
            _ => None,
        }
    }

    /// Every tenant, sorted by id.
    pub fn list(&self) -> Vec<TenantEntry> {
        let mut all: Vec<TenantEntry> = self.read().by_id.values().cloned().collect();
        all.sort_by(|a, b| a.tenant.id.cmp(&b.tenant.id));
        all
    }

    /// Puts `tenant` in place with `source`, keeping its live state if it existed.
    /// Returns the entry it replaced.
    fn put(&self, tenant: Arc<Tenant>, source: TenantSource) -> Option<TenantEntry> {
        let mut maps = self.write();
        let live = maps
            .by_id
            .get(&tenant.id)
            .map(|e| e.live.clone())
            .unwrap_or_else(|| TenantLive::new(&tenant.id, &self.parent));
        maps.insert(TenantEntry {
            tenant,
            source,
            live,
        })
    }

    /// Replaces the file's tenants. Store tenants with the same id give way to the
    /// file. Returns the entries that were replaced or removed (the caller settles
    /// their pools and clients).
    pub fn replace_file_tenants(&self, tenants: &[Arc<Tenant>]) -> Vec<TenantEntry> {
        let mut changed = Vec::new();
        let stale: Vec<String> = {
            let maps = self.read();
            maps.by_id
                .values()
                .filter(|e| e.source == TenantSource::File)
                .filter(|e| !tenants.iter().any(|t| t.id == e.tenant.id))
                .map(|e| e.tenant.id.clone())
                .collect()
        };
        for id in stale {
            if let Some(old) = self.write().remove(&id) {
                changed.push(old);
            }
        }
        for t in tenants {
            if let Some(old) = self.put(t.clone(), TenantSource::File) {
                changed.push(old);
            }
        }
        changed
    }

    /// Adds or replaces a tenant from the metadata store.
    pub fn upsert_store_tenant(
        &self,
        tenant: Arc<Tenant>,
    ) -> Result<(Upserted, Option<TenantEntry>), FileTenant> {
        if self
            .get(&tenant.id)
            .is_some_and(|e| e.source == TenantSource::File)
        {
            return Err(FileTenant(tenant.id.clone()));
        }
        if let Some(host) = &tenant.sni_hostname {
            let maps = self.read();
            if let Some(other) = maps.by_sni.get(host).filter(|id| **id != tenant.id) {
                if maps.by_id.contains_key(other) {
                    tracing::warn!(tenant = %tenant.id, other = %other, sni = %host, "sni_hostname already used; the newer tenant takes it");
                }
            }
        }
        let old = self.put(tenant, TenantSource::Store);
        let outcome = match old {
            Some(_) => Upserted::Updated,
            None => Upserted::Created,
        };
        Ok((outcome, old))
    }

    /// Removes a store tenant. `Ok(None)` when there was none.
    pub fn remove_store_tenant(&self, id: &str) -> Result<Option<TenantEntry>, FileTenant> {
        let mut maps = self.write();
        match maps.by_id.get(id) {
            None => Ok(None),
            Some(e) if e.source == TenantSource::File => Err(FileTenant(id.to_owned())),
            Some(_) => Ok(maps.remove(id)),
        }
    }
}
