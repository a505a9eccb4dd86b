//! Accepting client connections until shutdown, on a TCP address or a Unix
//! socket file; each client gets its own tracked task. With shards, every shard
//! accepts on its own copy of each listening socket, and a client it accepts
//! stays there unless another shard is much less busy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use crate::app::App;
use crate::client::session;
use crate::config::AllowList;
use crate::shard;
use crate::stream::Stream;

/// Where an accepted client came from.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Tcp(SocketAddr),
    /// The pooler's Unix socket file: a process on this machine.
    Unix,
}

impl Peer {
    /// Whether `list` admits this client. A Unix-socket client is on this
    /// machine: a list admits it when it admits the loopback address.
    pub fn allowed_by(&self, list: &AllowList) -> bool {
        match self {
            Self::Tcp(addr) => list.allows(addr.ip()),
            Self::Unix => {
                list.allows(IpAddr::V4(Ipv4Addr::LOCALHOST))
                    || list.allows(IpAddr::V6(Ipv6Addr::LOCALHOST))
            }
        }
    }

    /// Where from, as an error tells the client: its IP address, or the socket.
    pub fn source(&self) -> String {
        match self {
            Self::Tcp(addr) => addr.ip().to_string(),
            Self::Unix => "the Unix socket".into(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => addr.fmt(f),
            Self::Unix => f.write_str("unix"),
        }
    }
}

/// A socket clients connect to.
pub enum ClientListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl ClientListener {
    async fn accept(&self) -> std::io::Result<(Stream, Peer)> {
        match self {
            Self::Tcp(l) => {
                let (tcp, addr) = l.accept().await?;
                // Messages are whole when written: no reason to wait for more.
                let _ = tcp.set_nodelay(true);
                Ok((Stream::Plain(tcp), Peer::Tcp(addr)))
            }
            Self::Unix(l) => {
                let (unix, _) = l.accept().await?;
                Ok((Stream::Unix(unix), Peer::Unix))
            }
        }
    }
}

/// Accepts clients until `app.shutdown` fires.
pub async fn accept_loop(app: Arc<App>, listener: ClientListener) {
    loop {
        let accepted = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => serve(&app, stream, peer),
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
fn serve(app: &Arc<App>, stream: Stream, peer: Peer) {
    let accepted = move |app: Arc<App>, stream| Box::new(session::Accepted { app, stream, peer });
    let Some(shards) = app.shards() else {
        app.spawn_client(session::serve(accepted(app.clone(), stream)));
        return;
    };
    let target = shards.pick();
    if target == shard::current() as usize {
        shards.spawn_client_on(
            target,
            &app.tasks,
            session::serve(accepted(app.clone(), stream)),
        );
        return;
    }
    let bare = match stream.into_bare() {
        Ok(Ok(bare)) => bare,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, %peer, "cannot hand an accepted client to a shard");
            return;
        }
        // Just accepted: plain.
        Err(_) => return,
    };
    let client = app.clone();
    shards.spawn_client_on(target, &app.tasks, async move {
        match bare.into_stream() {
            Ok(stream) => session::serve(accepted(client, stream)).await,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot take an accepted client onto its shard");
            }
        }
    });
}
