//! The store's query connection: opened lazily, shared by one caller at a time, and
//! replaced after it is lost, so the store survives its database restarting.
//!
//! Callers run one operation at a time (a `tokio::sync::Mutex` held across the
//! operation, as a transaction needs the connection to itself); metadata traffic is
//! light, so this costs nothing that matters. An operation that fails because the
//! connection was lost is retried once on a fresh one.

use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::StoreError;

/// Connecting gives up after this long unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive notices a silently dead store sooner than the system default.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Shown in `pg_stat_activity` unless the URL names the application itself.
const APPLICATION_NAME: &str = "tidepool-store";

/// Parses the store URL (or key=value string) and applies the store's defaults.
pub(crate) fn parse_config(url: &str) -> Result<Config, StoreError> {
    let mut config: Config = url.parse().map_err(|_| StoreError::Url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    config.keepalives_idle(KEEPALIVE_IDLE);
    Ok(config)
}

/// One open connection and the task that drives it.
struct Session {
    client: Client,
    /// Ends by itself once `client` is dropped (or the server goes away).
    _driver: JoinHandle<()>,
}

impl Session {
    async fn connect(config: &Config) -> Result<Session, StoreError> {
        let (client, connection) = config.connect(NoTls).await.map_err(StoreError::Connect)?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "metadata store connection lost");
            }
        });
        Ok(Session {
            client,
            _driver: driver,
        })
    }
}

/// The store's query connection, reconnected on demand.
pub(crate) struct Link {
    config: Config,
    session: Mutex<Option<Session>>,
}

impl Link {
    pub(crate) fn new(config: Config) -> Link {
        Link {
            config,
            session: Mutex::new(None),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Takes the connection for one operation; other callers wait until the
    /// returned [`Held`] is dropped.
    pub(crate) async fn hold(&self) -> Held<'_> {
        Held {
            config: &self.config,
            slot: self.session.lock().await,
            retried: false,
        }
    }
}

/// The connection, held for one operation (see [`on_connection!`]).
pub(crate) struct Held<'a> {
    config: &'a Config,
    slot: MutexGuard<'a, Option<Session>>,
    retried: bool,
}

impl Held<'_> {
    /// The client, (re)connecting first when there is none or it is closed.
    pub(crate) async fn client(&mut self) -> Result<&mut Client, StoreError> {
        let session = match self.slot.take() {
            Some(session) if !session.client.is_closed() => session,
            _ => Session::connect(self.config).await?,
        };
        Ok(&mut self.slot.insert(session).client)
    }

    /// What to do with an operation's result: `Some` to return it, `None` to run
    /// the operation again (the connection was lost, and it is the first time).
    pub(crate) fn settle<T>(
        &mut self,
        result: Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let error = match result {
            Ok(value) => return Some(Ok(value)),
            Err(error) => error,
        };
        let closed = self
            .slot
            .as_ref()
            .is_some_and(|session| session.client.is_closed());
        let lost = closed || error.is_connection_lost();
        if lost {
            *self.slot = None;
        }
        if !lost || self.retried {
            return Some(Err(error));
        }
        tracing::info!(%error, "metadata store connection lost; reconnecting");
        self.retried = true;
        None
    }
}

/// Runs `$operation` (an expression using the client bound to `$client`) on the
/// link's connection, once more on a fresh connection when the first was lost;
/// evaluates to the operation's `Result`. Operations must therefore be safe to
/// repeat: they are single transactions, upserts or notifications.
///
/// A macro rather than a function taking a closure: a closure whose future borrows
/// the client makes the caller's future not `Send` (a compiler limitation with
/// higher-ranked lifetimes), and the API spawns these futures.
macro_rules! on_connection {
    ($link:expr, |$client:ident| $operation:expr) => {{
        let mut held = $link.hold().await;
        loop {
            let result = match held.client().await {
                Ok($client) => $operation.await,
                Err(error) => Err(error),
            };
            if let Some(result) = held.settle(result) {
                break result;
            }
        }
    }};
}
pub(crate) use on_connection;
