//! Keeps one node's store tenants in step with the metadata store: the load at
//! start, then a task that applies what the store's watcher reports (a tenant
//! changed, was deleted, must be terminated, or everything must be reloaded).
//!
//! A stored tenant that no longer validates (an older or newer Tidepool wrote it,
//! or a file now holds a CA path that is gone) is logged by name and skipped; the
//! node keeps serving the others.

use std::collections::HashSet;
use std::sync::Arc;

use tidepool_core::app::ApplyError;
use tidepool_core::config::RawTenant;
use tidepool_core::tenants::TenantSource;
use tidepool_core::App;
use tidepool_store::{Store, StoreError, StoreEvent};
use tokio::sync::mpsc;

/// Loads every stored tenant into `app` and removes store tenants the store no
/// longer has. Returns how many stored tenants are being served.
pub async fn load_all(app: &App, store: &Store) -> Result<usize, StoreError> {
    let stored = store.load_all().await?;
    Ok(reconcile(app, &stored))
}

/// Starts the task (tracked on `app.tasks`, stopped by `app.shutdown`) that
/// applies the store's changes to `app`.
pub fn spawn(app: Arc<App>, store: Arc<Store>) {
    let events = store.watch(&app.tasks, app.shutdown.clone());
    let tasks = app.tasks.clone();
    tasks.spawn(follow(app, store, events));
}

async fn follow(app: Arc<App>, store: Arc<Store>, mut events: mpsc::Receiver<StoreEvent>) {
    let stop = app.shutdown.clone();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = events.recv() => event,
        };
        let Some(event) = event else {
            tracing::warn!("metadata store watcher stopped; tenants are no longer followed");
            break;
        };
        handle(&app, &store, event).await;
    }
}

async fn handle(app: &App, store: &Store, event: StoreEvent) {
    match event {
        StoreEvent::Changed(id) => match store.get(&id).await {
            Ok(Some(raw)) => {
                apply(app, &raw);
            }
            Ok(None) => remove(app, &id),
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "cannot read a changed tenant from the metadata store");
            }
        },
        StoreEvent::Deleted(id) => remove(app, &id),
        StoreEvent::Terminate(id) => {
            if app.terminate_tenant(&id) {
                tracing::info!(tenant = %id, "tenant terminated (announced by another node)");
            }
        }
        StoreEvent::Resync => match load_all(app, store).await {
            Ok(n) => tracing::info!(tenants = n, "tenants reloaded from the metadata store"),
            Err(e) => tracing::warn!(error = %e, "cannot reload tenants from the metadata store"),
        },
    }
}

/// Applies every stored tenant and removes the store tenants not among them.
fn reconcile(app: &App, stored: &[RawTenant]) -> usize {
    let mut served = 0;
    for raw in stored {
        if apply(app, raw) {
            served += 1;
        }
    }
    let ids: HashSet<&str> = stored
        .iter()
        .filter_map(|t| t.external_id.as_deref())
        .collect();
    for entry in app.tenants.list() {
        if entry.source == TenantSource::Store && !ids.contains(entry.tenant.id.as_str()) {
            remove(app, &entry.tenant.id);
        }
    }
    served
}

/// Applies one stored tenant; false when it was skipped.
fn apply(app: &App, raw: &RawTenant) -> bool {
    let id = raw.external_id.as_deref().unwrap_or("<no external_id>");
    // Unchanged: nothing to do (validation derives SCRAM keys, which is not free).
    if app
        .tenants
        .get(id)
        .is_some_and(|e| e.source == TenantSource::Store && e.tenant.raw == *raw)
    {
        return true;
    }
    match app.apply_store_tenant(raw) {
        Ok(outcome) => {
            tracing::info!(tenant = %id, ?outcome, "tenant loaded from the metadata store");
            true
        }
        Err(ApplyError::Invalid(e)) => {
            tracing::error!(tenant = %id, error = %e, "stored tenant is not valid; skipped");
            false
        }
        Err(ApplyError::FileTenant(_)) => {
            tracing::warn!(tenant = %id, "stored tenant is also defined in the configuration file; the file wins");
            false
        }
    }
}

fn remove(app: &App, id: &str) {
    match app.remove_store_tenant(id) {
        Ok(true) => {
            tracing::info!(tenant = %id, "tenant removed (deleted from the metadata store)")
        }
        Ok(false) => {}
        Err(_) => {
            tracing::debug!(tenant = %id, "deletion of a file tenant's id in the store ignored")
        }
    }
}
