//! Cancel keys: the pooler hands each client its own BackendKeyData, and maps it to
//! whichever server backend the client is using at the moment.
//!
//! A CancelRequest must reach the backend running *that client's* query and nothing
//! else. The session publishes its server's key when it binds a server and clears it
//! before giving the server back; a cancel in flight is counted, and the session waits
//! for it to finish before releasing the server (sequentially consistent handshake on
//! two atomics, so either the canceller sees the key cleared or the session sees the
//! cancel in flight). The registry lock is taken at login and logout only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::conn::BackendKey;

const SHARDS: usize = 16;

/// One shard: client process id -> (client secret, where its queries run).
type Shard = HashMap<u32, (u32, Arc<CancelTarget>)>;
/// How long a cancel may take to be delivered before the session stops waiting.
const CANCEL_DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The key a client received in BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub process_id: u32,
    pub secret: u32,
}

/// Where a client's queries run right now. Every logged-in client has one, so it
/// is kept small: no wake-up list (a session waits for a cancel in flight, which
/// is rare, by looking again every millisecond).
#[derive(Debug)]
pub struct CancelTarget {
    /// Where the client's upstream listens (`server_addr`: `host:port` or a
    /// Unix socket's path).
    upstream: Arc<str>,
    /// The bound backend as `process_id << 32 | secret`, 0 when none is bound.
    backend: AtomicU64,
    in_flight: AtomicU32,
}

/// How often a session looks whether the cancels in flight to its server are done.
const CANCEL_DONE_POLL: Duration = Duration::from_millis(1);

impl CancelTarget {
    /// Publishes the server a client has just bound.
    pub fn bind(&self, key: BackendKey) {
        let packed = (u64::from(key.process_id) << 32) | u64::from(u32::from_be_bytes(key.secret));
        self.backend.store(packed, Ordering::SeqCst);
    }

    /// Clears the bound server and waits for cancels already on their way to it.
    pub async fn unbind(&self) {
        if !self.unbind_now() {
            self.wait_unbound().await;
        }
    }

    /// The first half of [`Self::unbind`], without awaiting: true when no cancel
    /// is on its way (nearly always), else the caller awaits
    /// [`Self::wait_unbound`].
    pub fn unbind_now(&self) -> bool {
        self.backend.store(0, Ordering::SeqCst);
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Waits, for a bounded time, for the cancels on their way to be delivered.
    pub async fn wait_unbound(&self) {
        let _ = tokio::time::timeout(CANCEL_DELIVERY_TIMEOUT, async {
            while self.in_flight.load(Ordering::SeqCst) != 0 {
                tokio::time::sleep(CANCEL_DONE_POLL).await;
            }
        })
        .await;
    }
}

/// All live client keys, sharded to keep logins from contending.
#[derive(Debug)]
pub struct CancelRegistry {
    shards: Vec<Mutex<Shard>>,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl CancelRegistry {
    fn shard(&self, process_id: u32) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[process_id as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh key for a client of `upstream` (from `server_addr`).
    pub fn register(&self, upstream: Arc<str>) -> (ClientKey, Arc<CancelTarget>) {
        let target = Arc::new(CancelTarget {
            upstream,
            backend: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
        });
        loop {
            let mut raw = [0u8; 8];
            if getrandom::fill(&mut raw).is_err() {
                // No randomness: fall back on the clock; keys stay unique via the map.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                raw = t.to_le_bytes();
            }
            let process_id = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) & 0x7fff_ffff;
            let secret = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
            if process_id == 0 {
                continue;
            }
            let mut shard = self.shard(process_id);
            if shard.contains_key(&process_id) {
                continue;
            }
            shard.insert(process_id, (secret, target.clone()));
            return (ClientKey { process_id, secret }, target);
        }
    }

    pub fn unregister(&self, key: ClientKey) {
        self.shard(key.process_id).remove(&key.process_id);
    }

    /// Forwards a client's CancelRequest to the backend that client is using, if any.
    /// Unknown keys and idle clients are ignored silently, as Postgres does.
    pub async fn cancel(&self, process_id: u32, secret: &[u8]) {
        let target = {
            let shard = self.shard(process_id);
            match shard.get(&process_id) {
                Some((s, t)) if secret == s.to_be_bytes() => t.clone(),
                _ => {
                    tracing::debug!(process_id, "cancel request with an unknown key ignored");
                    return;
                }
            }
        };
        target.in_flight.fetch_add(1, Ordering::SeqCst);
        let packed = target.backend.load(Ordering::SeqCst);
        if packed != 0 {
            let pid = (packed >> 32) as u32;
            let key = (packed as u32).to_be_bytes();
            if let Err(e) = tokio::time::timeout(
                CANCEL_DELIVERY_TIMEOUT,
                send_cancel(&target.upstream, pid, &key),
            )
            .await
            {
                tracing::warn!(error = %e, "cancel request to server timed out");
            }
        }
        target.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends a CancelRequest and waits for the server to close the connection, which it
/// does once it has signalled the backend.
async fn send_cancel(upstream: &str, process_id: u32, secret: &[u8]) {
    let Ok(mut tcp) = crate::server::connect::dial(upstream).await else {
        tracing::warn!(upstream, "cannot connect to deliver a cancel request");
        return;
    };
    let mut out = BytesMut::with_capacity(16);
    pgwire::startup::encode_cancel_request(process_id, secret, &mut out);
    if tcp.write_all(&out).await.is_ok() {
        let mut sink = [0u8; 16];
        let _ = tcp.read(&mut sink).await;
    }
}
