//! A pool of server connections for one (tenant, user): bounded by its admission
//! (waiters served in order, each shard's own first), idle connections kept LIFO so
//! the warmest of the client's shard is reused first, and a maintenance pass that
//! closes idle or old connections and keeps a minimum warm.
//!
//! Checkout is the one synchronisation point per transaction: an admission permit
//! and a short mutex around the idle list; no I/O under either lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::admission::{Admission, NoPermit, Permit};
use arc_swap::ArcSwapOption;

use super::conn::ServerConn;
use super::connect::{connect, ConnectError, ServerTarget};
use crate::client::statements::ServerStatements;
use crate::params::ParamValues;

/// Limits of a pool; swapped on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLimits {
    pub size: u32,
    pub min_idle: u32,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub connect_timeout: Duration,
    pub checkout_timeout: Duration,
    /// Prepared statements each connection keeps; 0 when tracking is off.
    pub max_prepared_statements: u32,
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("timed out after {0:?} waiting for a server connection")]
    Timeout(Duration),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("pool is closed")]
    Closed,
}

/// Counters a pool exposes (read by logs and, later, metrics).
#[derive(Debug, Default)]
pub struct PoolStats {
    pub connections: AtomicU32,
    pub checked_out: AtomicU32,
    pub waiting: AtomicU32,
    pub connects_failed: AtomicU64,
}

pub struct Pool {
    pub name: String,
    /// `host:port` of the upstream, shared by every client's cancel target.
    pub upstream_addr: Arc<str>,
    /// Tracked parameter values of a fresh server connection, shared by clients.
    default_values: ArcSwapOption<ParamValues>,
    /// The values the last client to log in wanted: clients that want the same
    /// (every client of one application, as a rule) share one copy.
    last_wanted: Mutex<Option<Arc<ParamValues>>>,
    target: ServerTarget,
    limits: arc_swap::ArcSwap<PoolLimits>,
    admission: Arc<Admission>,
    /// Boxed, so that lending and taking back moves a pointer, not the connection.
    #[expect(clippy::vec_box, reason = "a lease moves a pointer, not 300 bytes")]
    idle: Mutex<Vec<Box<ServerConn>>>,
    /// ParameterStatus set of the last server connection opened.
    params: ArcSwapOption<Vec<(String, String)>>,
    next_id: AtomicU64,
    pub stats: PoolStats,
    /// Fires when the pool is closed; tasks serving the pool stop with it.
    pub closed: tokio_util::sync::CancellationToken,
    /// Notified when the limits change: the expiry task's next look may be due
    /// sooner (a shorter checkout timeout).
    pub limits_changed: Arc<tokio::sync::Notify>,
    /// The LISTEN hub of this pool, started on the first LISTEN.
    pub listen_hub: std::sync::OnceLock<crate::listen::ListenHub>,
    /// Statistics of this pool's (tenant, user), shared with its clients.
    pub metrics: Arc<crate::metrics::UserStats>,
}

/// A server connection lent to a client; give it back with [`Pool::release`] or
/// [`Pool::discard`]. Dropping it without either closes the connection.
pub struct Lease {
    pub conn: Box<ServerConn>,
    _permit: Permit,
}

impl Pool {
    pub fn new(
        name: String,
        target: ServerTarget,
        limits: PoolLimits,
        metrics: Arc<crate::metrics::UserStats>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            upstream_addr: super::connect::server_addr(&target.host, target.port).into(),
            default_values: ArcSwapOption::empty(),
            last_wanted: Mutex::new(None),
            target,
            admission: Admission::new(limits.size as usize),
            limits: arc_swap::ArcSwap::from_pointee(limits),
            idle: Mutex::new(Vec::new()),
            params: ArcSwapOption::empty(),
            next_id: AtomicU64::new(1),
            stats: PoolStats::default(),
            closed: tokio_util::sync::CancellationToken::new(),
            limits_changed: Arc::new(tokio::sync::Notify::new()),
            metrics,
            listen_hub: std::sync::OnceLock::new(),
        })
    }

    pub fn target(&self) -> &ServerTarget {
        &self.target
    }

    pub fn limits(&self) -> Arc<PoolLimits> {
        self.limits.load_full()
    }

    /// Tracked parameters of a fresh server connection, once one has been opened.
    pub fn default_values(&self) -> Option<Arc<ParamValues>> {
        self.default_values.load_full()
    }

    /// A shared copy of `wanted`: the one the previous login made if equal.
    pub fn share_wanted(&self, wanted: ParamValues) -> Arc<ParamValues> {
        let mut last = self.last_wanted.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some(shared) if **shared == wanted => shared.clone(),
            _ => {
                let shared = Arc::new(wanted);
                *last = Some(shared.clone());
                shared
            }
        }
    }

    /// ParameterStatus values of this pool's server, once a connection has been opened.
    pub fn server_params(&self) -> Option<Arc<Vec<(String, String)>>> {
        self.params.load_full()
    }

    /// Server connections open (idle or lent).
    pub fn open_connections(&self) -> u32 {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// (idle, lent, clients waiting), for metrics.
    pub fn gauges(&self) -> (u64, u64, u64) {
        let open = u64::from(self.stats.connections.load(Ordering::Relaxed));
        let lent = u64::from(self.stats.checked_out.load(Ordering::Relaxed));
        let waiting = u64::from(self.stats.waiting.load(Ordering::Relaxed));
        (open.saturating_sub(lent), lent, waiting)
    }

    #[expect(clippy::vec_box, reason = "see `idle`")]
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Box<ServerConn>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clients waiting for a connection now (a hint: it changes at any time).
    pub fn queued(&self) -> usize {
        self.stats.waiting.load(Ordering::Relaxed) as usize
    }

    /// Lends a server connection: an idle one if any is healthy, else a new one.
    pub async fn checkout(&self) -> Result<Lease, CheckoutError> {
        // Copied out: an arc-swap guard held across the wait below would pin one of
        // the thread's few fast slots per waiting client, and past them every
        // load takes the slow path.
        let (wait, max_lifetime) = {
            let limits = self.limits.load();
            (limits.checkout_timeout, limits.max_lifetime)
        };
        let permit = match self.admission.try_acquire() {
            Ok(p) => p,
            Err(NoPermit::Closed | NoPermit::TimedOut) => return Err(CheckoutError::Closed),
            Err(NoPermit::Busy) => {
                self.stats.waiting.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                // The deadline is kept by the maintenance task (`expire_waiters`).
                let r = self.admission.acquire(started, started + wait).await;
                self.metrics.checkout.observe(started.elapsed());
                self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(p) => p,
                    Err(NoPermit::TimedOut) => return Err(CheckoutError::Timeout(wait)),
                    Err(NoPermit::Closed | NoPermit::Busy) => return Err(CheckoutError::Closed),
                }
            }
        };
        let permit = match self.lease_idle(permit, max_lifetime) {
            Ok(lease) => return Ok(lease),
            Err(permit) => permit,
        };
        // Boxed: a connect (with its login) is rare next to the waits this future
        // mostly stands for, and in line its state would size every client's task.
        let conn = Box::pin(self.open()).await?;
        self.stats.checked_out.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            conn,
            _permit: permit,
        })
    }

    /// A server connection without waiting: a permit is free and an idle
    /// connection is healthy. `None` when the caller must wait for one or a
    /// connection must be opened: [`Self::checkout`] does both. Not async, so
    /// the common case builds no future.
    pub fn try_checkout(&self) -> Option<Lease> {
        let permit = self.admission.try_acquire().ok()?;
        let max_lifetime = self.limits.load().max_lifetime;
        self.lease_idle(permit, max_lifetime).ok()
    }

    /// Lends the holder of `permit` a healthy idle connection, closing the stale
    /// ones found on the way; the permit back when there is none.
    fn lease_idle(&self, permit: Permit, max_lifetime: Duration) -> Result<Lease, Permit> {
        while let Some(mut conn) = self.take_idle() {
            // Its age when it was given back: no clock read per checkout (the
            // maintenance pass closes connections that aged while idle).
            let age = conn.last_used.saturating_duration_since(conn.created);
            if age < max_lifetime && conn.is_quiet() {
                let Some(conn) = self.bring_home(conn) else {
                    continue;
                };
                self.stats.checked_out.fetch_add(1, Ordering::Relaxed);
                return Ok(Lease {
                    conn,
                    _permit: permit,
                });
            }
            self.close(conn);
        }
        Err(permit)
    }

    /// The warmest idle connection of this thread's shard, else the warmest of
    /// any shard.
    fn take_idle(&self) -> Option<Box<ServerConn>> {
        let here = crate::shard::current();
        let mut idle = self.lock_idle();
        match idle.iter().rposition(|c| c.home == here) {
            Some(i) => Some(idle.remove(i)),
            None => idle.pop(),
        }
    }

    /// Moves a plain or Unix connection that another shard's reactor watches to this
    /// shard's (two `epoll_ctl` calls), so that its client's task is woken on its
    /// own thread. A TLS connection stays where it is and is used from here (its
    /// wake-ups cross threads). `None` when the socket could not be moved; it is
    /// closed then.
    fn bring_home(&self, conn: Box<ServerConn>) -> Option<Box<ServerConn>> {
        let here = crate::shard::current();
        if conn.home == here || here == crate::shard::NO_SHARD {
            return Some(conn);
        }
        if conn.stream.is_tls() {
            return Some(conn);
        }
        let mut conn = *conn;
        match conn.stream.reregister() {
            Ok(stream) => {
                tracing::debug!(pool = %self.name, server = conn.id, from = conn.home, to = here, "server connection moved to this shard");
                conn.stream = stream;
                conn.home = here;
                Some(Box::new(conn))
            }
            Err(e) => {
                self.stats.connections.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(pool = %self.name, server = conn.id, error = %e, "cannot move a server connection to this shard; closing it");
                None
            }
        }
    }

    async fn open(&self) -> Result<Box<ServerConn>, ConnectError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // A counted reference, not a guard: it is held across the connect.
        let limits = self.limits.load_full();
        match connect(&self.target, id, limits.connect_timeout).await {
            Ok(mut conn) => {
                conn.statements = ServerStatements::new(limits.max_prepared_statements as usize);
                self.stats.connections.fetch_add(1, Ordering::Relaxed);
                self.params.store(Some(conn.params.clone()));
                match self.default_values.load_full() {
                    // The same values: share the pool's strings (compares become
                    // pointer compares, and this connection's copies are freed).
                    Some(defaults) if *defaults == conn.current => {
                        conn.current.clone_from(&defaults)
                    }
                    _ => self
                        .default_values
                        .store(Some(Arc::new(conn.current.clone()))),
                }
                tracing::debug!(pool = %self.name, server = id, pid = conn.backend.process_id, "server connection opened");
                Ok(Box::new(conn))
            }
            Err(e) => {
                self.stats.connects_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pool = %self.name, error = %e, "cannot open server connection");
                Err(e)
            }
        }
    }

    /// Takes back a connection that is idle and clean.
    pub fn release(&self, lease: Lease) {
        self.release_at(lease, Instant::now());
    }

    /// [`Self::release`] with the time the caller last read (a transaction's end),
    /// which saves a clock read per transaction.
    pub fn release_at(&self, lease: Lease, now: Instant) {
        let Lease { mut conn, _permit } = lease;
        self.stats.checked_out.fetch_sub(1, Ordering::Relaxed);
        conn.last_used = now;
        let age = now.saturating_duration_since(conn.created);
        if self.admission.is_closed() || age >= self.limits.load().max_lifetime {
            self.close(conn);
            return;
        }
        self.lock_idle().push(conn);
    }

    /// Closes a connection that cannot be reused (dirty, broken or mid-query).
    pub fn discard(&self, lease: Lease) {
        let Lease { conn, _permit } = lease;
        self.stats.checked_out.fetch_sub(1, Ordering::Relaxed);
        self.close(conn);
    }

    fn close(&self, conn: Box<ServerConn>) {
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(pool = %self.name, server = conn.id, "server connection closed");
        // Best effort Terminate; a plain socket takes 5 bytes without blocking.
        conn.stream
            .try_write_now(&pgwire::frontend::TERMINATE_MESSAGE);
        drop(conn);
    }

    /// Applies new limits (on reload). A smaller size takes effect as connections
    /// come back; a larger one at once.
    pub fn set_limits(&self, limits: PoolLimits) {
        let old = self.limits.swap(Arc::new(limits.clone()));
        self.limits_changed.notify_one();
        if limits.size > old.size {
            self.admission
                .add_permits((limits.size - old.size) as usize);
        } else if limits.size < old.size {
            // Lent connections count: the surplus leaves as they come back.
            self.admission
                .remove_permits((old.size - limits.size) as usize);
        }
    }

    /// Ends the checkouts that have waited past their timeout (they fail with
    /// [`CheckoutError::Timeout`]). Returns when to call it next: at the earliest
    /// deadline of the waits left, or one checkout timeout from now, before which
    /// no wait that begins later can end (until the limits change).
    pub fn expire_waiters(&self) -> Instant {
        let now = Instant::now();
        let next_wait_ends = now + self.limits.load().checkout_timeout;
        match self.admission.expire(now) {
            Some(earliest) => earliest.min(next_wait_ends),
            None => next_wait_ends,
        }
    }

    /// Closes idle connections past their idle timeout or lifetime (keeping
    /// `min_idle`), then opens connections up to `min_idle`. Called periodically.
    pub async fn maintain(&self) {
        let limits = self.limits.load_full();
        let expired: Vec<Box<ServerConn>> = {
            let mut idle = self.lock_idle();
            let mut expired = Vec::new();
            // The list is in release order: the least recently used come first.
            let mut i = 0;
            while i < idle.len() {
                let c = &mut idle[i];
                let too_old = c.created.elapsed() >= limits.max_lifetime;
                let too_idle = c.last_used.elapsed() >= limits.idle_timeout
                    && idle.len() > limits.min_idle as usize;
                if too_old || too_idle || !idle[i].is_quiet() {
                    expired.push(idle.remove(i));
                } else {
                    i += 1;
                }
            }
            expired
        };
        for c in expired {
            self.close(c);
        }
        if let super::connect::ServerCredential::PassThrough { keys, .. } = &self.target.credential
        {
            if keys.load().is_none() {
                // No client has logged in yet, so there is nothing to log in with.
                return;
            }
        }
        while self.lock_idle().len() < limits.min_idle as usize {
            let Ok(permit) = self.admission.try_acquire() else {
                break;
            };
            match self.open().await {
                Ok(conn) => self.lock_idle().push(conn),
                Err(_) => break,
            }
            drop(permit);
        }
    }

    /// Lends no connection until [`Self::resume`]; checkouts wait meanwhile
    /// (their checkout timeout still counts).
    pub fn pause(&self) {
        self.admission.pause();
    }

    pub fn resume(&self) {
        self.admission.resume();
    }

    /// Permits held now: connections lent, being opened (for a client or for
    /// `min_idle`) or being handed over.
    pub fn lent(&self) -> usize {
        self.admission.lent()
    }

    /// Closes every idle connection (a paused pool, so that the database can
    /// restart without killing any).
    pub fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        for c in idle {
            self.close(c);
        }
    }

    /// Closes every idle connection and refuses new checkouts (shutdown).
    pub fn close_all(&self) {
        self.admission.close();
        self.closed.cancel();
        let idle = std::mem::take(&mut *self.lock_idle());
        for c in idle {
            self.close(c);
        }
    }
}
