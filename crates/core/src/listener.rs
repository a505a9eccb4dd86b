//! Accepting client connections until shutdown; each gets its own tracked task, on
//! a shard when there are shards.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::app::App;
use crate::client::session;

/// Accepts clients until `app.shutdown` fires.
pub async fn accept_loop(app: Arc<App>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) if app.sharded() => {
                // The socket moves to the reactor of the shard that serves it.
                let tcp = match tcp.into_std() {
                    Ok(tcp) => tcp,
                    Err(e) => {
                        tracing::warn!(error = %e, %peer, "cannot hand an accepted client to a shard");
                        continue;
                    }
                };
                let client = app.clone();
                app.spawn_client(async move {
                    match TcpStream::from_std(tcp) {
                        Ok(tcp) => {
                            let accepted = Box::new(session::Accepted {
                                app: client,
                                tcp,
                                peer,
                            });
                            session::serve(accepted).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, %peer, "cannot take an accepted client onto its shard");
                        }
                    }
                });
            }
            Ok((tcp, peer)) => {
                let accepted = Box::new(session::Accepted {
                    app: app.clone(),
                    tcp,
                    peer,
                });
                app.spawn_client(session::serve(accepted));
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
