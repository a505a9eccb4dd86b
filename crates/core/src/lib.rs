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
pub mod socket_file;
pub mod sql_hint;
pub mod stream;
pub mod tenants;
pub mod tls;

use std::sync::Arc;

pub use app::App;
pub use config::Config;

/// Binds the listeners and serves until `app.shutdown` fires; then waits for
/// clients up to the shutdown timeout, forces the rest closed, and returns.
pub async fn run(app: Arc<App>) -> std::io::Result<()> {
    let config = app.config();
    let tcp = tokio::net::TcpListener::bind(config.server.listen).await?;
    // Removed when `run` returns, however it returns.
    let (socket_file, unix) = match &config.server.unix_socket {
        Some(unix) => {
            let (file, listener) = socket_file::SocketFile::bind(&unix.path, unix.mode)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            (Some(file), Some(listener))
        }
        None => (None, None),
    };
    tracing::info!(
        listen = %config.server.listen,
        unix_socket = socket_file.as_ref().map(|f| f.path().display().to_string()),
        tenants = config.tenants.len(),
        "tidepool listening"
    );
    let bound = Bound {
        tcp: tcp.into_std()?,
        unix,
    };
    match app.shards() {
        // Each shard accepts on its own copy of every socket, registered with its
        // own reactor (a new client wakes them all; one accepts it).
        Some(shards) => {
            let mut copies = Vec::with_capacity(shards.len());
            for _ in 0..shards.len() {
                copies.push(bound.try_clone()?);
            }
            drop(bound);
            let mut copies = copies.into_iter();
            shards.spawn_on_each(&app.tasks, || {
                let copy = copies.next();
                let app = app.clone();
                async move {
                    if let Some(copy) = copy {
                        copy.accept(app).await;
                    }
                }
            });
            app.shutdown.cancelled().await;
        }
        None => bound.accept(app.clone()).await,
    }
    // No new clients: the socket file goes now, as the TCP listener has.
    drop(socket_file);
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

/// The listening sockets before they join a reactor.
struct Bound {
    tcp: std::net::TcpListener,
    unix: Option<std::os::unix::net::UnixListener>,
}

impl Bound {
    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            tcp: self.tcp.try_clone()?,
            unix: self.unix.as_ref().map(|l| l.try_clone()).transpose()?,
        })
    }

    /// Registers the sockets with this thread's reactor and accepts on them until
    /// shutdown.
    async fn accept(self, app: Arc<App>) {
        use listener::{accept_loop, ClientListener};
        let tcp = match tokio::net::TcpListener::from_std(self.tcp) {
            Ok(l) => Some(accept_loop(app.clone(), ClientListener::Tcp(l))),
            Err(e) => {
                tracing::error!(error = %e, "cannot accept TCP clients here");
                None
            }
        };
        let unix = match self.unix.map(tokio::net::UnixListener::from_std) {
            Some(Ok(l)) => Some(accept_loop(app, ClientListener::Unix(l))),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot accept Unix-socket clients here");
                None
            }
            None => None,
        };
        tokio::join!(run_some(tcp), run_some(unix));
    }
}

async fn run_some(f: Option<impl std::future::Future<Output = ()>>) {
    if let Some(f) = f {
        f.await;
    }
}
