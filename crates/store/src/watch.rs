//! The watcher: a task with its own connection that `LISTEN`s on the change channels
//! and forwards what it hears as [`StoreEvent`]s.
//!
//! A notification sent while the watcher is disconnected is lost, so after every
//! (re)connect, the first included, it sends `Resync` and the receiver reloads
//! everything. Reconnects back off from 100 ms, doubling up to 5 s. The task ends
//! when `stop` fires or the receiver is dropped.

use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Config, NoTls, Notification};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::{StoreEvent, LISTEN_ALL};

/// Events buffered for a slow receiver before the watcher waits for it.
const EVENT_BUFFER: usize = 256;
/// After stopping, how long the connection may take to say goodbye to the server.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why one connection's watch ended.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("cannot connect: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("LISTEN failed: {0}")]
    Listen(#[source] tokio_postgres::Error),
    #[error("connection lost: {0}")]
    Lost(#[source] tokio_postgres::Error),
    #[error("connection closed by the server")]
    Closed,
}

/// One connection's watch ended because `stop` fired or the receiver is gone: the
/// task ends (rather than reconnecting).
struct Finished;

/// Spawns the watcher on `tasks`; see the module documentation.
pub(crate) fn spawn(
    config: Config,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> mpsc::Receiver<StoreEvent> {
    let (events, receiver) = mpsc::channel(EVENT_BUFFER);
    tasks.spawn(run(config, events, stop));
    receiver
}

async fn run(config: Config, events: mpsc::Sender<StoreEvent>, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        match watch_once(&config, &events, &stop, &mut backoff).await {
            Ok(Finished) => return,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff.peek(), "metadata store watcher disconnected");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = events.closed() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Connects, listens, sends `Resync`, then forwards notifications until the
/// connection is lost (`Err`) or the watcher should finish.
async fn watch_once(
    config: &Config,
    events: &mpsc::Sender<StoreEvent>,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<Finished, WatchError> {
    let connect = tokio::select! {
        () = stop.cancelled() => return Ok(Finished),
        connect = config.connect(NoTls) => connect,
    };
    let (client, mut connection) = connect.map_err(WatchError::Connect)?;
    // Polling the connection both moves the LISTEN along and collects what arrives
    // meanwhile; a terminal message (None or Err) ends this connection for good.
    let mut heard_early = Vec::new();
    {
        let listen = client.batch_execute(LISTEN_ALL);
        tokio::pin!(listen);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(Finished),
                result = &mut listen => {
                    result.map_err(WatchError::Listen)?;
                    break;
                }
                message = poll_fn(|cx| connection.poll_message(cx)) => {
                    if let Some(notification) = notification_of(message)? {
                        heard_early.push(notification);
                    }
                }
            }
        }
    }
    backoff.reset();
    tracing::info!("metadata store watcher listening");
    let mut pending: Vec<StoreEvent> = std::iter::once(StoreEvent::Resync)
        .chain(heard_early.iter().filter_map(event_of))
        .collect();
    loop {
        for event in pending.drain(..) {
            tokio::select! {
                () = stop.cancelled() => return Ok(finish(client, connection).await),
                sent = events.send(event) => {
                    if sent.is_err() {
                        return Ok(finish(client, connection).await);
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(finish(client, connection).await),
            () = events.closed() => return Ok(finish(client, connection).await),
            message = poll_fn(|cx| connection.poll_message(cx)) => {
                if let Some(event) = notification_of(message)?.as_ref().and_then(event_of) {
                    pending.push(event);
                }
            }
        }
    }
}

/// The notification in one polled message; `Err` when the connection ended.
fn notification_of(
    message: Option<Result<AsyncMessage, tokio_postgres::Error>>,
) -> Result<Option<Notification>, WatchError> {
    match message {
        Some(Ok(AsyncMessage::Notification(notification))) => Ok(Some(notification)),
        Some(Ok(AsyncMessage::Notice(notice))) => {
            tracing::debug!(%notice, "metadata store notice");
            Ok(None)
        }
        Some(Ok(_)) => Ok(None),
        Some(Err(error)) => Err(WatchError::Lost(error)),
        None => Err(WatchError::Closed),
    }
}

fn event_of(notification: &Notification) -> Option<StoreEvent> {
    StoreEvent::from_notification(notification.channel(), notification.payload())
}

/// Closes the connection politely: dropping the client asks the connection to send
/// Terminate, which it does while being polled to its end.
async fn finish<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
) -> Finished
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    drop(client);
    let drain =
        async { while let Some(Ok(_)) = poll_fn(|cx| connection.poll_message(cx)).await {} };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    Finished
}

/// Delay before the next reconnect: 100 ms, doubling up to 5 s, back to 100 ms once
/// a connection is listening again.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    fn peek(&self) -> Duration {
        self.next
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_bound_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| u64::try_from(backoff.next_delay().as_millis()).unwrap_or(u64::MAX))
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
