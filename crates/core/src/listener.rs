//! Accepting client connections until shutdown; each gets its own tracked task.
//! With shards, every shard accepts on its own copy of the listening socket, and
//! a client it accepts stays there unless another shard is much less busy.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::app::App;
use crate::client::session;
use crate::shard;

/// Accepts clients until `app.shutdown` fires.
pub async fn accept_loop(app: Arc<App>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => serve(&app, tcp, peer),
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Gives an accepted client its task: here, or on the shard `pick` names, its
/// socket moved to that shard's reactor.
fn serve(app: &Arc<App>, tcp: TcpStream, peer: std::net::SocketAddr) {
    let accepted = move |app: Arc<App>, tcp| Box::new(session::Accepted { app, tcp, peer });
    let Some(shards) = app.shards() else {
        app.spawn_client(session::serve(accepted(app.clone(), tcp)));
        return;
    };
    let target = shards.pick();
    if target == shard::current() as usize {
        shards.spawn_client_on(
            target,
            &app.tasks,
            session::serve(accepted(app.clone(), tcp)),
        );
        return;
    }
    let tcp = match tcp.into_std() {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(error = %e, %peer, "cannot hand an accepted client to a shard");
            return;
        }
    };
    let client = app.clone();
    shards.spawn_client_on(target, &app.tasks, async move {
        match TcpStream::from_std(tcp) {
            Ok(tcp) => session::serve(accepted(client, tcp)).await,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot take an accepted client onto its shard");
            }
        }
    });
}
