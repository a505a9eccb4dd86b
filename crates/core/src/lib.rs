//! Tidepool's service: configuration, client sessions, server pools, cancel routing
//! and shutdown. The binary (`src/main.rs`) parses arguments, sets up logging and
//! calls [`run`].
//!
//! Data flows one way: socket -> codec (`pgwire`) -> client session -> router ->
//! pool -> server connection -> socket, and back.

pub mod app;
pub mod bufpool;
pub mod cancel;
pub mod client;
pub mod config;
pub mod error;
pub mod framed;
pub mod listen;
pub mod listener;
pub mod metrics;
pub mod params;
pub mod router;
pub mod secret;
pub mod server;
pub mod shard;
pub mod signal;
pub mod sql_hint;
pub mod stream;
pub mod tenants;
pub mod tls;

use std::sync::Arc;

pub use app::App;
pub use config::Config;

/// Binds the listener and serves until `app.shutdown` fires; then waits for clients
/// up to the shutdown timeout, forces the rest closed, and returns.
pub async fn run(app: Arc<App>) -> std::io::Result<()> {
    let config = app.config();
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    tracing::info!(listen = %config.server.listen, tenants = config.tenants.len(), "tidepool listening");
    match app.shards() {
        // Each shard accepts on its own copy of the socket, registered with its
        // own reactor (a new client wakes them all; one accepts it).
        Some(shards) => {
            let listener = listener.into_std()?;
            let mut copies = Vec::with_capacity(shards.len());
            for _ in 0..shards.len() {
                copies.push(listener.try_clone()?);
            }
            drop(listener);
            let mut copies = copies.into_iter();
            shards.spawn_on_each(&app.tasks, || {
                let copy = copies.next();
                let app = app.clone();
                async move {
                    let Some(copy) = copy else { return };
                    match tokio::net::TcpListener::from_std(copy) {
                        Ok(listener) => listener::accept_loop(app, listener).await,
                        Err(e) => tracing::error!(error = %e, "a shard cannot accept clients"),
                    }
                }
            });
            app.shutdown.cancelled().await;
        }
        None => listener::accept_loop(app.clone(), listener).await,
    }
    tracing::info!("shutting down: no new clients; waiting for open transactions");
    app.tasks.close();
    let grace = app.config().server.shutdown_timeout;
    if tokio::time::timeout(grace, app.tasks.wait()).await.is_err() {
        tracing::warn!("shutdown timeout reached; closing remaining clients");
        app.force_close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), app.tasks.wait()).await;
    }
    app.close_pools();
    Ok(())
}
