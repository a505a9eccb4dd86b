//! LISTEN / NOTIFY for transaction-mode clients: one listener connection per pool
//! holds the LISTENs of all its clients and fans every notification out to the
//! clients subscribed to its channel. NOTIFY itself needs nothing special: it runs on
//! any server connection, so other poolers and direct clients see it as usual.
//!
//! The hub is a task that owns the listener connection; sessions talk to it with
//! messages. A LISTEN is acknowledged only once the listener connection has run it,
//! so a notification sent after the client's LISTEN completed is never missed.
//! Notifications for a client that does not keep up are dropped past a bound, with a
//! warning, rather than held without limit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgwire::{frontend, tag};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::framed::{read_message, send};
use crate::server::conn::ServerConn;
use crate::server::connect::connect;
use crate::server::pool::Pool;
use crate::sql_hint::quote_identifier;

/// Notifications queued per client before new ones are dropped.
pub const CLIENT_QUEUE: usize = 1024;
/// Largest message read from the listener connection.
const MAX_LISTENER_MESSAGE: usize = 1 << 20;
/// Wait before reconnecting a lost listener connection.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A client's notification inbox: complete NotificationResponse messages.
pub type Inbox = mpsc::Receiver<Bytes>;

enum Command {
    Listen {
        channel: String,
        client: u64,
        sink: mpsc::Sender<Bytes>,
        done: oneshot::Sender<bool>,
    },
    Unlisten {
        channel: String,
        client: u64,
    },
    UnlistenAll {
        client: u64,
    },
}

/// The handle sessions use to reach a pool's listener.
#[derive(Clone)]
pub struct ListenHub {
    commands: mpsc::UnboundedSender<Command>,
}

/// Why a LISTEN could not be served.
#[derive(Debug, thiserror::Error)]
#[error("the listener connection is unavailable")]
pub struct ListenUnavailable;

impl ListenHub {
    /// Starts the hub task of `pool`; it stops when `stop` fires.
    pub fn spawn(
        pool: Arc<Pool>,
        tasks: &tokio_util::task::TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        tasks.spawn(Hub::new(pool, stop.clone()).run(rx, stop));
        Self { commands }
    }

    /// Subscribes `client` to `channel`; returns once the listener runs the LISTEN.
    pub async fn listen(
        &self,
        channel: String,
        client: u64,
        sink: mpsc::Sender<Bytes>,
    ) -> Result<(), ListenUnavailable> {
        let (done, ack) = oneshot::channel();
        self.commands
            .send(Command::Listen {
                channel,
                client,
                sink,
                done,
            })
            .map_err(|_| ListenUnavailable)?;
        match ack.await {
            Ok(true) => Ok(()),
            _ => Err(ListenUnavailable),
        }
    }

    pub fn unlisten(&self, channel: String, client: u64) {
        let _ = self.commands.send(Command::Unlisten { channel, client });
    }

    pub fn unlisten_all(&self, client: u64) {
        let _ = self.commands.send(Command::UnlistenAll { client });
    }
}

struct Hub {
    pool: Arc<Pool>,
    conn: Option<ServerConn>,
    buf: BytesMut,
    channels: HashMap<String, HashMap<u64, mpsc::Sender<Bytes>>>,
    /// One entry per query sent to the listener, acknowledged at its ReadyForQuery.
    pending: VecDeque<Option<oneshot::Sender<bool>>>,
    next_id: AtomicU64,
    /// The connection broke while sending; reconnect from the run loop.
    broken: bool,
    stop: CancellationToken,
}

impl Hub {
    fn new(pool: Arc<Pool>, stop: CancellationToken) -> Self {
        Self {
            pool,
            conn: None,
            buf: BytesMut::new(),
            channels: HashMap::new(),
            pending: VecDeque::new(),
            next_id: AtomicU64::new(1 << 40),
            broken: false,
            stop,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>, stop: CancellationToken) {
        loop {
            let conn = self.conn.as_mut();
            tokio::select! {
                _ = stop.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        self.handle(cmd).await;
                        if std::mem::take(&mut self.broken) {
                            self.lost().await;
                        }
                    }
                    None => break,
                },
                msg = async {
                    match conn {
                        Some(c) => read_message(&mut c.stream, &mut self.buf, MAX_LISTENER_MESSAGE).await.ok(),
                        None => std::future::pending().await,
                    }
                } => match msg {
                    Some((msg_tag, body)) => self.on_message(msg_tag, body),
                    None => self.lost().await,
                },
            }
        }
        if let Some(mut c) = self.conn.take() {
            let mut out = BytesMut::new();
            frontend::terminate(&mut out);
            let _ = send(&mut c.stream, &mut out).await;
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Listen {
                channel,
                client,
                sink,
                done,
            } => {
                let subscribers = self.channels.entry(channel.clone()).or_default();
                let first = subscribers.is_empty();
                subscribers.insert(client, sink);
                // A new connection LISTENs every known channel; the acknowledgement
                // waits for this channel's LISTEN to complete on the listener.
                let connected_now = self.conn.is_none();
                if connected_now && !self.connect().await {
                    let _ = done.send(false);
                    self.drop_subscriber(&channel, client);
                    return;
                }
                if first || connected_now {
                    self.send_query(
                        &format!("LISTEN {}", quote_identifier(&channel)),
                        Some(done),
                    )
                    .await;
                } else {
                    let _ = done.send(true);
                }
            }
            Command::Unlisten { channel, client } => self.drop_subscriber(&channel, client),
            Command::UnlistenAll { client } => {
                let channels: Vec<String> = self
                    .channels
                    .iter()
                    .filter(|(_, s)| s.contains_key(&client))
                    .map(|(c, _)| c.clone())
                    .collect();
                for c in channels {
                    self.drop_subscriber(&c, client);
                }
            }
        }
        self.flush_unlistens().await;
    }

    fn drop_subscriber(&mut self, channel: &str, client: u64) {
        if let Some(s) = self.channels.get_mut(channel) {
            s.remove(&client);
        }
    }

    /// Sends UNLISTEN for channels nobody listens to any more.
    async fn flush_unlistens(&mut self) {
        let empty: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, s)| s.is_empty())
            .map(|(c, _)| c.clone())
            .collect();
        for c in empty {
            self.channels.remove(&c);
            if self.conn.is_some() {
                self.send_query(&format!("UNLISTEN {}", quote_identifier(&c)), None)
                    .await;
            }
        }
    }

    async fn send_query(&mut self, sql: &str, done: Option<oneshot::Sender<bool>>) {
        let Some(conn) = self.conn.as_mut() else {
            if let Some(d) = done {
                let _ = d.send(false);
            }
            return;
        };
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out);
        self.pending.push_back(done);
        if send(&mut conn.stream, &mut out).await.is_err() {
            // The run loop notices and reconnects.
            self.conn = None;
            self.broken = true;
            for d in self.pending.drain(..).flatten() {
                let _ = d.send(false);
            }
        }
    }

    /// Opens the listener connection and LISTENs to every channel; true on success.
    async fn connect(&mut self) -> bool {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let timeout = self.pool.limits().connect_timeout;
        match connect(self.pool.target(), id, timeout).await {
            Ok(conn) => {
                tracing::info!(pool = %self.pool.name, pid = conn.backend.process_id, "listener connection opened");
                self.conn = Some(conn);
                self.buf.clear();
                let channels: Vec<String> = self.channels.keys().cloned().collect();
                for c in channels {
                    self.send_query(&format!("LISTEN {}", quote_identifier(&c)), None)
                        .await;
                }
                !std::mem::take(&mut self.broken)
            }
            Err(e) => {
                tracing::warn!(pool = %self.pool.name, error = %e, "cannot open the listener connection");
                false
            }
        }
    }

    /// The listener connection broke: fail what waits on it, and reconnect if anyone
    /// still listens (notifications sent meanwhile are lost, as on any reconnect).
    async fn lost(&mut self) {
        tracing::warn!(pool = %self.pool.name, "listener connection lost");
        self.conn = None;
        for d in self.pending.drain(..).flatten() {
            let _ = d.send(false);
        }
        while !self.channels.is_empty() {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            }
            if self.connect().await {
                break;
            }
        }
    }

    fn on_message(&mut self, msg_tag: u8, body: BytesMut) {
        match msg_tag {
            tag::NOTIFICATION_RESPONSE => {
                let Some(channel) = notification_channel(&body) else {
                    return;
                };
                let Some(subscribers) = self.channels.get(channel) else {
                    return;
                };
                let mut message = BytesMut::with_capacity(body.len() + 5);
                message.extend_from_slice(&[tag::NOTIFICATION_RESPONSE]);
                message.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                message.extend_from_slice(&body);
                let message = message.freeze();
                for sink in subscribers.values() {
                    if sink.try_send(message.clone()).is_err() {
                        tracing::warn!(pool = %self.pool.name, channel, "client notification queue full; notification dropped");
                    }
                }
            }
            tag::READY_FOR_QUERY => {
                if let Some(Some(done)) = self.pending.pop_front() {
                    let _ = done.send(true);
                }
            }
            tag::ERROR_RESPONSE => {
                let e = pgwire::backend::ErrorBody(&body);
                tracing::warn!(pool = %self.pool.name, code = e.code(), message = e.message(), "listener query failed");
            }
            _ => {}
        }
    }
}

/// The channel name of a NotificationResponse body (process id, channel, payload).
fn notification_channel(body: &[u8]) -> Option<&str> {
    let rest = body.get(4..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}
