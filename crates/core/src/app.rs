//! The running service's shared state: the current configuration, the pools, the
//! cancel registry and the shutdown signals. Passed to every task as `Arc<App>`; no
//! globals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use pgauth::{ClientKeys, ScramSecret};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cancel::CancelRegistry;
use crate::client::park::Parking;
use crate::config::{
    validate_tenant, Config, ConfigError, RawTenant, StoredPassword, Tenant, User,
};
use crate::listen::ListenHub;
use crate::metrics::{Gauges, Labels, Row};
use crate::secret::Secret;
use crate::server::connect::{ServerCredential, ServerTarget};
use crate::server::pool::{Pool, PoolLimits};
use crate::shard::Shards;
use crate::signal::Beacon;
use crate::tenants::{FileTenant, GoneReason, Signals, TenantEntry, Tenants, Upserted};
use crate::tls::{self, TlsError};

/// How often each pool's maintenance pass runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

type PoolKey = (String, String);

/// Shared state of one Tidepool process.
pub struct App {
    config: ArcSwap<Config>,
    tls: ArcSwapOption<tokio_rustls::TlsAcceptor>,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// Tenants from the file and the metadata store.
    pub tenants: Tenants,
    /// Recent auth_query answers.
    pub auth_cache: crate::client::auth_query::AuthCache,
    pub cancels: CancelRegistry,
    /// A SCRAM secret no password matches, for unknown users.
    pub dummy_secret: ScramSecret,
    /// Stop accepting; clients leave at their next idle point. Fired by
    /// [`App::shut_down`], which also stops the clients.
    pub shutdown: CancellationToken,
    /// Close everything now (the shutdown timeout has passed). Fired by
    /// [`App::force_close`].
    pub force: CancellationToken,
    /// The clients' side of `shutdown` and `force` (the tenants' signals derive
    /// from these).
    client_signals: Signals,
    pub tasks: TaskTracker,
    /// Where idle clients wait without a task; opened at the first park (`None`
    /// when it could not be).
    parking: OnceLock<Option<Arc<Parking>>>,
    /// The runtimes client tasks run on; unset, they run on the current one.
    shards: OnceLock<Arc<Shards>>,
    /// Which tenants' pools lend nothing (the admin console's PAUSE): all, or
    /// some. Changed and read under the pools' lock, so a pool made during a
    /// PAUSE starts paused.
    paused: Mutex<Paused>,
    /// Re-reads the configuration from where it came from (the binary's file
    /// and flags), for the admin console's RELOAD; unset, there is nothing to
    /// re-read.
    reloader: OnceLock<Reloader>,
    /// Admin console logins, for the metrics.
    pub console_logins: crate::metrics::ConsoleLogins,
    /// One reload at a time (SIGHUP and RELOAD, from any thread): the steps of
    /// one are not interleaved with another's.
    reloading: Mutex<()>,
}

/// What is paused: everything, or these tenants.
#[derive(Debug, Default)]
struct Paused {
    all: bool,
    tenants: std::collections::HashSet<String>,
}

impl Paused {
    fn covers(&self, tenant: &str) -> bool {
        self.all || self.tenants.contains(tenant)
    }
}

/// See [`App::set_reloader`].
pub type Reloader = Box<dyn Fn(&App) -> Result<(), String> + Send + Sync>;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Why a tenant from the store or the API was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(transparent)]
    FileTenant(#[from] FileTenant),
}

impl App {
    pub fn new(config: Config) -> Result<Arc<Self>, AppError> {
        let tls = config.server.tls.as_ref().map(tls::acceptor).transpose()?;
        let mut salt = [0u8; 16];
        let _ = getrandom::fill(&mut salt);
        let mut junk = [0u8; 32];
        let _ = getrandom::fill(&mut junk);
        let dummy_secret = ScramSecret::from_password(&base64_of(&junk), &salt, 4096);
        let shutdown = CancellationToken::new();
        let force = CancellationToken::new();
        let client_signals = Signals::new(Beacon::new(), Beacon::new());
        let tenants = Tenants::new(client_signals.clone());
        tenants.replace_file_tenants(&config.tenants);
        Ok(Arc::new(Self {
            config: ArcSwap::from_pointee(config),
            tls: ArcSwapOption::new(tls.map(Arc::new)),
            pools: Mutex::new(HashMap::new()),
            tenants,
            auth_cache: Default::default(),
            cancels: CancelRegistry::default(),
            dummy_secret,
            shutdown,
            force,
            client_signals,
            tasks: TaskTracker::new(),
            parking: OnceLock::new(),
            shards: OnceLock::new(),
            reloader: OnceLock::new(),
            reloading: Mutex::new(()),
            console_logins: crate::metrics::ConsoleLogins::default(),
            paused: Mutex::new(Paused::default()),
        }))
    }

    /// Serves clients on these shards from now on (set once, at start).
    pub fn use_shards(&self, shards: Arc<Shards>) {
        let _ = self.shards.set(shards);
    }

    fn lock_paused(&self) -> std::sync::MutexGuard<'_, Paused> {
        self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pauses every tenant's pools (`None`) or one tenant's: they lend no
    /// connection until [`Self::resume`], and pools made meanwhile start paused.
    /// Returns the pools paused now; `None` when there is no such tenant.
    pub fn pause(&self, tenant: Option<&str>) -> Option<Vec<Arc<Pool>>> {
        if let Some(id) = tenant {
            self.tenants.get(id)?;
        }
        let pools = self.lock_pools();
        let mut paused = self.lock_paused();
        match tenant {
            None => paused.all = true,
            Some(id) => {
                paused.tenants.insert(id.to_owned());
            }
        }
        let chosen: Vec<Arc<Pool>> = pools
            .iter()
            .filter(|((t, _), _)| paused.covers(t))
            .map(|(_, p)| p.clone())
            .collect();
        for p in &chosen {
            p.pause();
        }
        Some(chosen)
    }

    /// Whether `tenant`'s pools are paused.
    pub fn is_paused(&self, tenant: &str) -> bool {
        self.lock_paused().covers(tenant)
    }

    /// Ends a pause of every tenant (`None`, which also ends each tenant's) or
    /// of one; `false` when that tenant was not paused.
    pub fn resume(&self, tenant: Option<&str>) -> bool {
        let pools = self.lock_pools();
        let mut paused = self.lock_paused();
        match tenant {
            None => *paused = Paused::default(),
            Some(id) => {
                if paused.all || !paused.tenants.remove(id) {
                    return false;
                }
            }
        }
        for ((t, _), p) in pools.iter() {
            if !paused.covers(t) {
                p.resume();
            }
        }
        true
    }

    /// How to re-read the configuration (set once, at start, by the binary when
    /// it has a file to re-read).
    pub fn set_reloader(&self, reloader: Reloader) {
        let _ = self.reloader.set(reloader);
    }

    /// Re-reads the configuration and applies it, as SIGHUP does; the reason
    /// when it was not. Blocking (file reads, SCRAM hashing of plain
    /// passwords): call it where blocking is allowed.
    pub fn reload_from_source(&self) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        match self.reloader.get() {
            Some(reload) => reload(self),
            None => Err("no configuration file to reload".into()),
        }
    }

    /// The shards client tasks run on, if any (else the current runtime).
    pub fn shards(&self) -> Option<&Arc<Shards>> {
        self.shards.get()
    }

    /// Runs a client's task, tracked: on a shard (this thread's unless it is much
    /// busier than the least busy one), or on the
    /// current runtime when there are no shards.
    pub fn spawn_client<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self.shards.get() {
            Some(shards) => shards.spawn_client_on(shards.pick(), &self.tasks, task),
            None => {
                self.tasks.spawn(task);
            }
        }
    }

    /// Runs a client's task on this thread's runtime (its shard's, counted there):
    /// for a task that takes over a socket registered with this runtime's reactor.
    pub fn spawn_client_here<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let here = crate::shard::current();
        match self.shards.get() {
            Some(shards) if here != crate::shard::NO_SHARD => {
                shards.spawn_client_on(here as usize, &self.tasks, task);
            }
            _ => {
                self.tasks.spawn(task);
            }
        }
    }

    /// Stops accepting clients; logged-in clients leave at their next idle point.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
        self.client_signals.stop.fire();
        // A pause would hold its waiting clients until the shutdown timeout:
        // they get their connection and finish instead.
        self.resume(None);
    }

    /// Ends every client now, mid-transaction or not (the shutdown timeout passed).
    pub fn force_close(&self) {
        self.force.cancel();
        self.client_signals.kill.fire();
    }

    /// The parking place for idle clients, opened on first use on the current
    /// runtime; `None` when `server.park_idle_clients` is off or it cannot open.
    pub fn parking(&self) -> Option<&Arc<Parking>> {
        if !self.config.load().server.park_idle_clients {
            return None;
        }
        self.parking
            .get_or_init(|| {
                Parking::start(&self.tasks, self.client_signals.stop.clone())
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "cannot open the parking place; idle clients keep their tasks");
                    })
                    .ok()
            })
            .as_ref()
    }

    /// The parking place, if a client has been parked already.
    fn parking_started(&self) -> Option<&Arc<Parking>> {
        self.parking.get().and_then(Option::as_ref)
    }

    /// The parking clock (seconds since the first park); 0 before it.
    pub fn parking_clock(&self) -> u32 {
        self.parking_started().map_or(0, |p| p.clock())
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn tls_acceptor(&self) -> Option<Arc<tokio_rustls::TlsAcceptor>> {
        self.tls.load_full()
    }

    fn lock_pools(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Arc<Pool>>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool of (tenant, user), created on first use.
    pub fn pool(self: &Arc<Self>, tenant: &Tenant, user: &User) -> Result<Arc<Pool>, TlsError> {
        let key = (tenant.id.clone(), user.name.clone());
        if let Some(p) = self.lock_pools().get(&key) {
            // A user found through auth_query may come back with a new password.
            if same_target(p.target(), tenant, user) {
                return Ok(p.clone());
            }
        }
        let target = target_for(tenant, user)?;
        let limits = limits_for(&self.config(), user);
        let stats = self
            .tenants
            .get(&tenant.id)
            .map(|e| e.live.user(&user.name).stats.clone())
            .unwrap_or_default();
        let mut pools = self.lock_pools();
        if let Some(p) = pools.get(&key) {
            if same_target(p.target(), tenant, user) {
                return Ok(p.clone());
            }
            p.close_all();
        }
        let pool = Pool::new(
            format!("{}/{}", tenant.id, user.name),
            target,
            limits,
            stats,
        );
        if self.lock_paused().covers(&tenant.id) {
            pool.pause();
        }
        pools.insert(key.clone(), pool.clone());
        drop(pools);
        self.spawn_maintenance(key, pool.clone());
        Ok(pool)
    }

    /// The pool of (tenant, user) if one is open and reaches the tenant's current
    /// upstream (whatever credential it logs in with).
    pub fn open_pool(&self, tenant: &Tenant, user_name: &str) -> Option<Arc<Pool>> {
        let pools = self.lock_pools();
        pools
            .get(&(tenant.id.clone(), user_name.to_owned()))
            .filter(|p| same_upstream(p.target(), tenant))
            .cloned()
    }

    /// Runs a pool's maintenance until shutdown, until the pool is closed, or until
    /// it has had neither clients nor connections for a whole pass (lazy pools:
    /// an unused tenant costs no task and no connection).
    fn spawn_maintenance(self: &Arc<Self>, key: PoolKey, pool: Arc<Pool>) {
        self.spawn_expiry(&pool);
        let stop = self.shutdown.clone();
        let app = Arc::downgrade(self);
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let closed = pool.closed.clone();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = closed.cancelled() => break,
                    _ = tick.tick() => pool.maintain().await,
                }
                if let Some(app) = app.upgrade() {
                    if app.retire_if_unused(&key, &pool) {
                        break;
                    }
                }
            }
            pool.close_all();
        });
    }

    /// Ends `pool`'s checkouts that waited past their timeout, as their deadlines
    /// come, while the pool lives: it wakes at the earliest deadline (or sooner
    /// when the limits change), not on a tick, so an idle pool costs no wake-ups.
    /// A task of its own: the maintenance pass may wait on a connect. It holds
    /// the pool weakly, so it does not keep a retired pool alive.
    fn spawn_expiry(&self, pool: &Arc<Pool>) {
        let stop = self.shutdown.clone();
        let closed = pool.closed.clone();
        let changed = pool.limits_changed.clone();
        let pool = Arc::downgrade(pool);
        self.tasks.spawn(async move {
            while let Some(next) = pool.upgrade().map(|p| p.expire_waiters()) {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = closed.cancelled() => break,
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep_until(next.into()) => {}
                }
            }
        });
    }

    /// Drops `pool` from the map when nothing but the map and its maintenance task
    /// holds it and it has no server connection.
    fn retire_if_unused(&self, key: &PoolKey, pool: &Arc<Pool>) -> bool {
        if pool.open_connections() > 0 || Arc::strong_count(pool) > 2 {
            return false;
        }
        let mut pools = self.lock_pools();
        // Checked again under the lock: a login takes its clone under it.
        if Arc::strong_count(pool) > 2 || pool.open_connections() > 0 {
            return false;
        }
        if pools.get(key).is_some_and(|p| Arc::ptr_eq(p, pool)) {
            pools.remove(key);
            tracing::debug!(pool = %pool.name, "pool retired after its idle timeout");
            return true;
        }
        false
    }

    /// The LISTEN hub of `pool`, started on first use.
    pub fn listen_hub(&self, pool: &Arc<Pool>) -> ListenHub {
        pool.listen_hub
            .get_or_init(|| ListenHub::spawn(pool.clone(), &self.tasks, pool.closed.clone()))
            .clone()
    }

    /// Records the SCRAM keys recovered from a client's proof, for pass-through logins.
    pub fn offer_passthrough_keys(pool: &Pool, user: &User, client_key: [u8; 32]) {
        if let (StoredPassword::Scram(secret), ServerCredential::PassThrough { keys, .. }) =
            (&user.password, &pool.target().credential)
        {
            keys.store(Some(Arc::new(ClientKeys {
                client_key,
                server_key: secret.server_key,
            })));
        }
    }

    /// Swaps in a new configuration. Pools whose upstream or credentials changed, or
    /// whose tenant or user is gone, are closed (their clients finish on the
    /// connections they hold); others take the new limits in place.
    pub fn reload(&self, config: Config) -> Result<(), AppError> {
        let tls = config.server.tls.as_ref().map(tls::acceptor).transpose()?;
        let changed = self.tenants.replace_file_tenants(&config.tenants);
        for old in changed {
            let id = &old.tenant.id;
            let now = self.tenants.get(id);
            if now.is_none() {
                old.live.end_clients(GoneReason::Deleted);
            }
            self.settle_pools(id, now.as_ref().map(|e| &*e.tenant), &config);
        }
        self.tls.store(tls.map(Arc::new));
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// After tenant `id` changed to `tenant` (or went away): pools whose upstream or
    /// credentials changed are closed (their clients finish on the connections they
    /// hold, then move to a new pool); the others take the new limits in place.
    fn settle_pools(&self, id: &str, tenant: Option<&Tenant>, config: &Config) {
        let mut pools = self.lock_pools();
        pools.retain(|(tenant_id, user_name), pool| {
            if tenant_id != id {
                return true;
            }
            let keep = tenant.and_then(|t| {
                match t.user(user_name) {
                    Some(u) => same_target(pool.target(), t, u).then(|| limits_for(config, u)),
                    // A user found through auth_query: same upstream, tenant's size.
                    None => (crate::client::auth_query::applies(t)
                        && same_upstream(pool.target(), t))
                    .then(|| {
                        let mut limits = (*pool.limits()).clone();
                        limits.size = t.default_pool_size;
                        limits
                    }),
                }
            });
            match keep {
                Some(limits) => {
                    pool.set_limits(limits);
                    true
                }
                None => {
                    pool.close_all();
                    false
                }
            }
        });
    }

    /// Validates a tenant as the API or the store gives it.
    pub fn check_tenant(&self, raw: &RawTenant) -> Result<Tenant, ConfigError> {
        validate_tenant("", raw, &self.config().pool)
    }

    /// Adds or changes a tenant from the metadata store. Only that tenant's pools
    /// are touched.
    pub fn apply_store_tenant(&self, raw: &RawTenant) -> Result<Upserted, ApplyError> {
        let tenant = Arc::new(self.check_tenant(raw)?);
        let id = tenant.id.clone();
        let (outcome, _old) = self.tenants.upsert_store_tenant(tenant.clone())?;
        self.auth_cache.forget_tenant(&id);
        self.settle_pools(&id, Some(&tenant), &self.config());
        Ok(outcome)
    }

    /// Removes a store tenant: its pools close and its clients are told so.
    /// `Ok(false)` when there was no such tenant.
    pub fn remove_store_tenant(&self, id: &str) -> Result<bool, FileTenant> {
        let Some(old) = self.tenants.remove_store_tenant(id)? else {
            return Ok(false);
        };
        self.auth_cache.forget_tenant(id);
        // Clients learn why before their pools go, so none meets a closed pool
        // first and takes it for something else.
        old.live.end_clients(GoneReason::Deleted);
        self.settle_pools(id, None, &self.config());
        Ok(true)
    }

    /// Closes a tenant's pools and sends its clients away; the tenant stays and
    /// new clients start afresh. False when there is no such tenant.
    pub fn terminate_tenant(&self, id: &str) -> bool {
        let Some(entry) = self.tenants.get(id) else {
            return false;
        };
        entry.live.end_clients(GoneReason::Terminated);
        self.settle_pools(id, None, &self.config());
        true
    }

    /// The Prometheus text of every tenant, or of one (`None` if it does not exist).
    pub fn render_metrics(&self, only: Option<&str>) -> Option<String> {
        self.with_rows(only, |rows| {
            let mut out = String::with_capacity(4096 + rows.len() * 2048);
            crate::metrics::render(rows, &mut out);
            if only.is_none() {
                let process = crate::metrics::ProcessCounts {
                    parked_clients: self.parked_clients() as u64,
                    console_logins_ok: self
                        .console_logins
                        .ok
                        .load(std::sync::atomic::Ordering::Relaxed),
                    console_logins_failed: self
                        .console_logins
                        .failed
                        .load(std::sync::atomic::Ordering::Relaxed),
                };
                crate::metrics::render_process(&process, &mut out);
            }
            out
        })
    }

    /// Clients parked now, across tenants.
    pub fn parked_clients(&self) -> usize {
        self.parking_started().map_or(0, |p| p.parked())
    }

    /// Calls `f` with a row of counts for each (tenant, user) of every tenant,
    /// or of one (`None` if it does not exist).
    pub fn with_rows<R>(&self, only: Option<&str>, f: impl FnOnce(&[Row<'_>]) -> R) -> Option<R> {
        let entries: Vec<TenantEntry> = match only {
            Some(id) => vec![self.tenants.get(id)?],
            None => self.tenants.list(),
        };
        let pools: HashMap<PoolKey, Arc<Pool>> = self.lock_pools().clone();
        let mut users = Vec::new();
        for e in &entries {
            for (name, live) in e.live.users() {
                users.push((e, name, live));
            }
        }
        let rows: Vec<Row<'_>> = users
            .iter()
            .map(|(e, name, live)| {
                let mode = e
                    .tenant
                    .user(name)
                    .or_else(|| e.tenant.manager())
                    .map_or("transaction", |u| u.mode.as_str());
                let mut gauges = Gauges {
                    clients: u64::from(live.clients.load(std::sync::atomic::Ordering::Relaxed)),
                    clients_parked: u64::from(
                        live.parked.load(std::sync::atomic::Ordering::Relaxed),
                    ),
                    ..Gauges::default()
                };
                if let Some(pool) = pools.get(&(e.tenant.id.clone(), name.clone())) {
                    let (idle, active, waiting) = pool.gauges();
                    gauges.servers_idle = idle;
                    gauges.servers_active = active;
                    gauges.clients_waiting = waiting;
                }
                Row {
                    labels: Labels {
                        tenant: &e.tenant.id,
                        user: name,
                        db: &e.tenant.database,
                        mode,
                    },
                    gauges,
                    stats: &live.stats,
                }
            })
            .collect();
        Some(f(&rows))
    }

    /// Closes every pool's idle connections (end of shutdown).
    pub fn close_pools(&self) {
        for pool in self.lock_pools().values() {
            pool.close_all();
        }
    }
}

fn limits_for(config: &Config, user: &User) -> PoolLimits {
    PoolLimits {
        size: user.pool_size,
        min_idle: config.pool.min_idle.min(user.pool_size),
        idle_timeout: config.pool.idle_timeout,
        max_lifetime: config.pool.max_lifetime,
        connect_timeout: config.pool.connect_timeout,
        checkout_timeout: user.checkout_timeout,
        max_prepared_statements: match user.mode {
            crate::config::PoolMode::Transaction => config.pool.max_prepared_statements,
            crate::config::PoolMode::Session => 0,
        },
    }
}

fn credential_for(user: &User) -> ServerCredential {
    match &user.password {
        StoredPassword::None => ServerCredential::None,
        StoredPassword::Plain { password, .. } => ServerCredential::Password {
            password: password.clone(),
            cached: Mutex::new(None),
        },
        StoredPassword::Scram(secret) => ServerCredential::PassThrough {
            salt: secret.salt.clone(),
            iterations: secret.iterations,
            keys: ArcSwapOption::empty(),
        },
        StoredPassword::Md5(hash) => ServerCredential::Md5Hash(hash.clone()),
    }
}

fn target_for(tenant: &Tenant, user: &User) -> Result<ServerTarget, TlsError> {
    if tenant.host.starts_with('/')
        && !matches!(
            tenant.upstream_tls.mode,
            crate::config::SslMode::Disable | crate::config::SslMode::Prefer
        )
    {
        // As with libpq: a Unix-domain socket never carries TLS.
        tracing::warn!(tenant = %tenant.id, host = %tenant.host, sslmode = ?tenant.upstream_tls.mode,
            "db_host is a Unix-socket directory: no TLS on it, whatever upstream_sslmode says");
    }
    Ok(ServerTarget {
        host: tenant.host.clone(),
        port: tenant.port,
        database: tenant.database.clone(),
        user: user.db_user.clone(),
        credential: credential_for(user),
        ssl_mode: tenant.upstream_tls.mode,
        ca: tenant.upstream_tls.ca.clone(),
        tls: tls::connector(&tenant.upstream_tls)?,
    })
}

fn password_of(c: &ServerCredential) -> Option<&Secret> {
    match c {
        ServerCredential::Password { password, .. } | ServerCredential::Md5Hash(password) => {
            Some(password)
        }
        ServerCredential::None | ServerCredential::PassThrough { .. } => None,
    }
}

fn verifier_of(c: &ServerCredential) -> Option<(&[u8], u32)> {
    match c {
        ServerCredential::PassThrough {
            salt, iterations, ..
        } => Some((salt, *iterations)),
        _ => None,
    }
}

fn same_upstream(t: &ServerTarget, tenant: &Tenant) -> bool {
    t.host == tenant.host
        && t.port == tenant.port
        && t.database == tenant.database
        && t.ssl_mode == tenant.upstream_tls.mode
        && t.ca == tenant.upstream_tls.ca
}

fn same_target(t: &ServerTarget, tenant: &Tenant, user: &User) -> bool {
    let fresh = credential_for(user);
    same_upstream(t, tenant)
        && t.user == user.db_user
        && std::mem::discriminant(&t.credential) == std::mem::discriminant(&fresh)
        && password_of(&t.credential) == password_of(&fresh)
        && verifier_of(&t.credential) == verifier_of(&fresh)
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
