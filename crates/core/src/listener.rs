//! Accepting client connections until shutdown; each gets its own tracked task.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

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
            Ok((tcp, peer)) => {
                let accepted = Box::new(session::Accepted {
                    app: app.clone(),
                    tcp,
                    peer,
                });
                app.tasks.spawn(session::serve(accepted));
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
