//! Tidepool's metadata store: tenants kept in a Postgres database shared by every
//! node, their users' passwords encrypted with AES-256-GCM under
//! `TIDEPOOL_ENCRYPTION_KEY`, and changes announced to the other nodes with
//! `NOTIFY` so each one reloads what changed.
//!
//! It owns the store's schema, its connections and the encryption of stored
//! passwords. It does not validate tenants (the caller does) and it does not touch
//! pools or clients: [`Store::watch`] only reports what changed.
//!
//! TLS to the store is not done yet: connections use `NoTls`.

mod error;

use tidepool_core::config::RawTenant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::StoreError;

/// Whether `put` created the tenant or replaced an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Updated,
}

/// A change reported by [`Store::watch`]; strings are tenant external ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The tenant was created or replaced: reload it.
    Changed(String),
    /// The tenant was deleted.
    Deleted(String),
    /// Drop the tenant's pools and clients.
    Terminate(String),
    /// The watcher (re)connected and may have missed changes: reload everything.
    Resync,
}

/// The metadata store. Cheap to share: wrap it in an `Arc`.
pub struct Store {}

impl Store {
    /// Connects, runs migrations, checks the key. `key` is the base64 text of
    /// TIDEPOOL_ENCRYPTION_KEY (None when unset: refuse).
    pub async fn open(url: &str, key: Option<&str>) -> Result<Store, StoreError> {
        let _ = (url, key);
        todo!()
    }

    /// Every tenant, passwords decrypted into `RawUser.db_password`.
    pub async fn load_all(&self) -> Result<Vec<RawTenant>, StoreError> {
        todo!()
    }

    pub async fn get(&self, id: &str) -> Result<Option<RawTenant>, StoreError> {
        let _ = id;
        todo!()
    }

    /// Upsert in one transaction (tenant row, its users replaced), then NOTIFY;
    /// `external_id` must be Some (the caller validated it).
    pub async fn put(&self, tenant: &RawTenant) -> Result<PutOutcome, StoreError> {
        let _ = tenant;
        todo!()
    }

    /// Deletes (users cascade) and NOTIFYs; false when absent.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let _ = id;
        todo!()
    }

    /// Tells every node (NOTIFY) to drop the tenant's pools and clients.
    pub async fn announce_terminate(&self, id: &str) -> Result<(), StoreError> {
        let _ = id;
        todo!()
    }

    /// True when the store answers a trivial query now.
    pub async fn ping(&self) -> bool {
        todo!()
    }

    /// Starts a task (spawned on `tasks`, stopped by `stop`) that listens for changes
    /// and forwards them; sends `Resync` after every (re)connect.
    pub fn watch(
        &self,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> mpsc::Receiver<StoreEvent> {
        let _ = (tasks, stop);
        todo!()
    }
}
