//! The running service's shared state: the current configuration, the pools, the
//! cancel registry and the shutdown signals. Passed to every task as `Arc<App>`; no
//! globals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use pgauth::{ClientKeys, ScramSecret};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cancel::CancelRegistry;
use crate::config::{Config, StoredPassword, Tenant, User};
use crate::listen::ListenHub;
use crate::secret::Secret;
use crate::server::connect::{ServerCredential, ServerTarget};
use crate::server::pool::{Pool, PoolLimits};
use crate::tls::{self, TlsError};

/// How often each pool's maintenance pass runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

type PoolKey = (String, String);

/// Shared state of one Tidepool process.
pub struct App {
    config: ArcSwap<Config>,
    tls: ArcSwapOption<tokio_rustls::TlsAcceptor>,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    pub cancels: CancelRegistry,
    /// A SCRAM secret no password matches, for unknown users.
    pub dummy_secret: ScramSecret,
    /// Stop accepting; clients leave at their next idle point.
    pub shutdown: CancellationToken,
    /// Close everything now (the shutdown timeout has passed).
    pub force: CancellationToken,
    pub tasks: TaskTracker,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl App {
    pub fn new(config: Config) -> Result<Arc<Self>, AppError> {
        let tls = config.server.tls.as_ref().map(tls::acceptor).transpose()?;
        let mut salt = [0u8; 16];
        let _ = getrandom::fill(&mut salt);
        let mut junk = [0u8; 32];
        let _ = getrandom::fill(&mut junk);
        let dummy_secret = ScramSecret::from_password(&base64_of(&junk), &salt, 4096);
        Ok(Arc::new(Self {
            config: ArcSwap::from_pointee(config),
            tls: ArcSwapOption::new(tls.map(Arc::new)),
            pools: Mutex::new(HashMap::new()),
            cancels: CancelRegistry::default(),
            dummy_secret,
            shutdown: CancellationToken::new(),
            force: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
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
            return Ok(p.clone());
        }
        let target = target_for(tenant, user)?;
        let limits = limits_for(&self.config(), user);
        let mut pools = self.lock_pools();
        if let Some(p) = pools.get(&key) {
            return Ok(p.clone());
        }
        let pool = Pool::new(format!("{}/{}", tenant.id, user.name), target, limits);
        pools.insert(key, pool.clone());
        drop(pools);
        self.spawn_maintenance(pool.clone());
        Ok(pool)
    }

    fn spawn_maintenance(self: &Arc<Self>, pool: Arc<Pool>) {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => pool.maintain().await,
                }
            }
            pool.close_all();
        });
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
        let mut pools = self.lock_pools();
        pools.retain(|(tenant_id, user_name), pool| {
            let keep = config
                .tenant(tenant_id)
                .and_then(|t| t.user(user_name).map(|u| (t, u)))
                .filter(|(t, u)| same_target(pool.target(), t, u));
            match keep {
                Some((_, u)) => {
                    pool.set_limits(limits_for(&config, u), &self.tasks);
                    true
                }
                None => {
                    pool.close_all();
                    false
                }
            }
        });
        drop(pools);
        self.tls.store(tls.map(Arc::new));
        self.config.store(Arc::new(config));
        Ok(())
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
    Ok(ServerTarget {
        host: tenant.host.clone(),
        port: tenant.port,
        database: tenant.database.clone(),
        user: user.name.clone(),
        credential: credential_for(user),
        ssl_mode: tenant.upstream_tls.mode,
        ca_file: tenant.upstream_tls.ca_file.clone(),
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

fn same_target(t: &ServerTarget, tenant: &Tenant, user: &User) -> bool {
    let fresh = credential_for(user);
    t.host == tenant.host
        && t.port == tenant.port
        && t.database == tenant.database
        && t.ssl_mode == tenant.upstream_tls.mode
        && std::mem::discriminant(&t.credential) == std::mem::discriminant(&fresh)
        && password_of(&t.credential) == password_of(&fresh)
        && verifier_of(&t.credential) == verifier_of(&fresh)
        && t.ca_file == tenant.upstream_tls.ca_file
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
