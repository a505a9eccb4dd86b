//! Tidepool's metadata store: tenants kept in a Postgres database shared by every
//! node, their users' passwords encrypted with AES-256-GCM under
//! `TIDEPOOL_ENCRYPTION_KEY`, and changes announced to the other nodes with
//! `NOTIFY` so each one reloads what changed.
//!
//! It owns the store's schema, its connections and the encryption of stored
//! passwords. It does not validate tenants (the caller does) and it does not touch
//! pools or clients: [`Store::watch`] only reports what changed.
//!
//! TLS to the store is not done yet: connections use `NoTls`, so run the store on a
//! trusted network (passwords are encrypted before they leave, but tenant settings
//! and the store login are not).

mod crypto;
mod error;
mod events;
mod keycheck;
mod migrations;
mod queries;
mod record;
mod session;
mod watch;

use std::time::Duration;

use tidepool_core::config::RawTenant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::crypto::EncryptionKey;
use crate::record::TenantRecord;
use crate::session::{on_connection, Link};

pub use error::StoreError;
pub use events::StoreEvent;
pub use queries::PutOutcome;

/// How long [`Store::ping`] waits for an answer (connecting included).
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// The metadata store. Cheap to share: wrap it in an `Arc`.
pub struct Store {
    link: Link,
    key: EncryptionKey,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres's Config redacts the password.
        f.debug_struct("Store")
            .field("config", self.link.config())
            .field("key", &self.key)
            .finish()
    }
}

impl Store {
    /// Connects, runs migrations, checks the key. `key` is the base64 text of
    /// TIDEPOOL_ENCRYPTION_KEY (None when unset: refuse).
    pub async fn open(url: &str, key: Option<&str>) -> Result<Store, StoreError> {
        let key = EncryptionKey::parse(key)?;
        let store = Store {
            link: Link::new(session::parse_config(url)?),
            key,
        };
        on_connection!(store.link, |client| migrations::apply(client, &store.key))?;
        Ok(store)
    }

    /// Every tenant, passwords decrypted into `RawUser.db_password`; sorted by
    /// external id, users in the order they were put.
    pub async fn load_all(&self) -> Result<Vec<RawTenant>, StoreError> {
        let records = on_connection!(self.link, |client| queries::read(client, None))?;
        records
            .into_iter()
            .map(|record| record.decode(&self.key))
            .collect()
    }

    /// One tenant, passwords decrypted; `None` when absent.
    pub async fn get(&self, id: &str) -> Result<Option<RawTenant>, StoreError> {
        let records = on_connection!(self.link, |client| queries::read(client, Some(id)))?;
        records
            .into_iter()
            .next()
            .map(|record| record.decode(&self.key))
            .transpose()
    }

    /// Upsert in one transaction (tenant row, its users replaced), then NOTIFY;
    /// `external_id` must be Some (the caller validated it).
    pub async fn put(&self, tenant: &RawTenant) -> Result<PutOutcome, StoreError> {
        // Sealed once, so a retry on a fresh connection writes the same values.
        let record = TenantRecord::encode(tenant, &self.key)?;
        on_connection!(self.link, |client| queries::put(client, &record))
    }

    /// Deletes (users cascade) and NOTIFYs; false when absent.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        on_connection!(self.link, |client| queries::delete(client, id))
    }

    /// Tells every node (NOTIFY) to drop the tenant's pools and clients.
    pub async fn announce_terminate(&self, id: &str) -> Result<(), StoreError> {
        on_connection!(self.link, |client| queries::notify(
            &*client,
            events::TERMINATE,
            id
        ))
    }

    /// True when the store answers a trivial query now (within a few seconds,
    /// reconnecting if need be).
    pub async fn ping(&self) -> bool {
        let answer = async { on_connection!(self.link, |client| queries::ping(client)) };
        matches!(tokio::time::timeout(PING_TIMEOUT, answer).await, Ok(Ok(())))
    }

    /// Starts a task (spawned on `tasks`, stopped by `stop`) holding its own
    /// connection that LISTENs on the change channels and forwards events. It
    /// reconnects with backoff (100 ms doubling to 5 s) after losing the connection
    /// and sends `Resync` after every (re)connect, the first included, so the caller
    /// reloads everything it may have missed. The task also ends when the receiver
    /// is dropped.
    pub fn watch(
        &self,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> mpsc::Receiver<StoreEvent> {
        watch::spawn(self.link.config().clone(), tasks, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}
    fn is_shared<T: Send + Sync>() {}

    /// Callers spawn these (the API's handlers run on any worker): a future that
    /// is not `Send` would not compile there, so check it here, without a server.
    #[test]
    fn store_and_its_futures_can_move_between_threads() {
        is_shared::<Store>();
        is_send(&Store::open("", None));
        let check = |store: &Store, tenant: &RawTenant| {
            is_send(&store.load_all());
            is_send(&store.get("t"));
            is_send(&store.put(tenant));
            is_send(&store.delete("t"));
            is_send(&store.announce_terminate("t"));
            is_send(&store.ping());
        };
        let _ = check;
    }
}
