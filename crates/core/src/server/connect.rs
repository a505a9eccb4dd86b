//! Opening a server connection: TCP (optional TLS per `sslmode`) or a Unix-domain
//! socket, the StartupMessage,
//! authentication (SCRAM-SHA-256, md5, cleartext) and the ParameterStatus set up to
//! the first ReadyForQuery.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use pgauth::{md5_client_response, md5_password_hash, ClientKeys, ScramClient};
use pgwire::backend::{AuthRequest, BackendMessage};
use pgwire::{frame::Frame, frontend, startup, tag, TransactionStatus};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UnixStream};

use super::conn::{BackendKey, ServerConn};
use crate::config::SslMode;
use crate::framed::{read_message, send, ReadError, MAX_HANDSHAKE_MESSAGE};
use crate::secret::Secret;
use crate::stream::Stream;

/// Why a server connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("connect timeout")]
    Timeout,
    #[error("server does not support TLS but sslmode requires it")]
    TlsRefused,
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("server refused login: {code} {message}")]
    Refused { code: String, message: String },
    #[error("server asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    #[error("no credential to answer the server's {0} request")]
    NoCredential(&'static str),
    #[error("SCRAM with the server failed: {0}")]
    Scram(String),
    #[error("reading from server: {0}")]
    Read(#[from] ReadError),
    #[error("unexpected message {0:?} during server login")]
    Unexpected(char),
}

/// What the pooler proves to Postgres when it logs in.
#[derive(Debug)]
pub enum ServerCredential {
    /// No password: the server must trust the pooler.
    None,
    /// A plain-text password, with the SCRAM keys derived from it cached per salt.
    Password {
        password: Secret,
        cached: Mutex<Option<CachedKeys>>,
    },
    /// An md5 hash (`md5...`) of the password: enough for md5 logins.
    Md5Hash(Secret),
    /// SCRAM keys recovered from a client's proof (pass-through); empty until a
    /// client has logged in. They only work if Postgres keeps the same verifier, so
    /// its salt and iteration count are kept to check the server's.
    PassThrough {
        salt: Vec<u8>,
        iterations: u32,
        keys: arc_swap::ArcSwapOption<ClientKeys>,
    },
}

#[derive(Debug)]
pub struct CachedKeys {
    salt: Vec<u8>,
    iterations: u32,
    keys: ClientKeys,
}

impl ServerCredential {
    fn scram_keys(&self, salt: &[u8], iterations: u32) -> Option<ClientKeys> {
        match self {
            Self::Password { password, cached } => {
                let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(c) = cached.as_ref() {
                    if c.salt == salt && c.iterations == iterations {
                        return Some(c.keys.clone());
                    }
                }
                let keys = pgauth::derive_client_keys(password.expose(), salt, iterations);
                *cached = Some(CachedKeys {
                    salt: salt.to_vec(),
                    iterations,
                    keys: keys.clone(),
                });
                Some(keys)
            }
            Self::PassThrough {
                salt: ours,
                iterations: our_iterations,
                keys,
            } => {
                if ours != salt || *our_iterations != iterations {
                    tracing::warn!(
                        "the configured SCRAM verifier differs from the one Postgres has \
                         (salt or iteration count); pass-through login is impossible"
                    );
                    return None;
                }
                keys.load_full().map(|k| (*k).clone())
            }
            Self::None | Self::Md5Hash(_) => None,
        }
    }
}

/// Everything needed to open connections to one upstream as one user.
pub struct ServerTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub credential: ServerCredential,
    pub ssl_mode: SslMode,
    pub ca: Option<crate::config::CaSource>,
    pub tls: Option<tokio_rustls::TlsConnector>,
}

/// Where a server listens, as one string: its Unix-domain socket
/// `DIR/.s.PGSQL.PORT` when `host` is a directory (starts with `/`, as libpq reads
/// a host), else `host:port`.
pub fn server_addr(host: &str, port: u16) -> String {
    if host.starts_with('/') {
        format!("{}/.s.PGSQL.{port}", host.trim_end_matches('/'))
    } else {
        format!("{host}:{port}")
    }
}

/// Opens a socket to `addr` from [`server_addr`]: a Unix-domain one for a path
/// (never TLS, as with libpq), else TCP with Nagle's algorithm off (TLS is the
/// caller's to negotiate).
pub async fn dial(addr: &str) -> std::io::Result<Stream> {
    if addr.starts_with('/') {
        return Ok(Stream::Unix(UnixStream::connect(addr).await?));
    }
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    Ok(Stream::Plain(tcp))
}

/// Opens and logs in one server connection, bounded by `timeout`.
pub async fn connect(
    target: &ServerTarget,
    id: u64,
    timeout: std::time::Duration,
) -> Result<ServerConn, ConnectError> {
    tokio::time::timeout(timeout, connect_inner(target, id))
        .await
        .map_err(|_| ConnectError::Timeout)?
}

async fn connect_inner(target: &ServerTarget, id: u64) -> Result<ServerConn, ConnectError> {
    let addr = server_addr(&target.host, target.port);
    let mut stream = match dial(&addr).await {
        Ok(Stream::Plain(tcp)) => negotiate_tls(tcp, target).await?,
        Ok(other) => other,
        Err(source) => {
            return Err(ConnectError::Io {
                addr: addr.clone(),
                source,
            })
        }
    };

    let mut out = BytesMut::with_capacity(256);
    startup::encode_startup(
        &[
            ("user", target.user.as_str()),
            ("database", target.database.as_str()),
        ],
        &mut out,
    );
    send(&mut stream, &mut out)
        .await
        .map_err(|source| ConnectError::Io {
            addr: addr.clone(),
            source,
        })?;

    let mut buf = BytesMut::with_capacity(1024);
    authenticate(&mut stream, &mut buf, target).await?;

    let mut params = Vec::new();
    let mut backend = BackendKey::default();
    loop {
        let (msg_tag, body) = read_message(&mut stream, &mut buf, MAX_HANDSHAKE_MESSAGE).await?;
        match BackendMessage::decode(Frame {
            tag: msg_tag,
            body: &body,
        })
        .map_err(ReadError::from)?
        {
            BackendMessage::ParameterStatus { name, value } => {
                params.push((name.to_owned(), value.to_owned()));
            }
            BackendMessage::BackendKeyData { process_id, secret } => {
                backend = BackendKey::new(process_id, secret);
            }
            BackendMessage::ReadyForQuery(_) => break,
            BackendMessage::ErrorResponse(e) => {
                return Err(ConnectError::Refused {
                    code: e.code().to_owned(),
                    message: e.message().to_owned(),
                })
            }
            BackendMessage::NoticeResponse(_) | BackendMessage::NegotiateProtocolVersion { .. } => {
            }
            _ => return Err(ConnectError::Unexpected(msg_tag as char)),
        }
    }
    if !buf.is_empty() {
        return Err(ConnectError::Unexpected('?'));
    }
    let now = Instant::now();
    Ok(ServerConn {
        stream,
        backend,
        current: crate::params::ParamValues::from_reported(&params),
        params: Arc::new(params),
        status: TransactionStatus::Idle,
        created: now,
        last_used: now,
        id,
        statements: crate::client::statements::ServerStatements::new(1),
        settings: crate::params::SessionSettings::default(),
        home: crate::shard::current(),
    })
}

async fn negotiate_tls(mut tcp: TcpStream, target: &ServerTarget) -> Result<Stream, ConnectError> {
    let Some(connector) = target.tls.as_ref() else {
        return Ok(Stream::Plain(tcp));
    };
    let mut out = BytesMut::with_capacity(8);
    startup::encode_ssl_request(&mut out);
    let io = |source| ConnectError::Io {
        addr: server_addr(&target.host, target.port),
        source,
    };
    send(&mut tcp, &mut out).await.map_err(io)?;
    let answer = tcp.read_u8().await.map_err(io)?;
    match answer {
        b'S' => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| ConnectError::Tls(std::io::Error::other(e.to_string())))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Ok(Stream::ClientTls(Box::new(tls)))
        }
        b'N' if target.ssl_mode == SslMode::Prefer => Ok(Stream::Plain(tcp)),
        b'N' => Err(ConnectError::TlsRefused),
        other => Err(ConnectError::Unexpected(other as char)),
    }
}

async fn authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    target: &ServerTarget,
) -> Result<(), ConnectError> {
    let mut out = BytesMut::with_capacity(256);
    let mut scram = ScramProgress::NotStarted;
    loop {
        let (msg_tag, body) = read_message(stream, buf, MAX_HANDSHAKE_MESSAGE).await?;
        if msg_tag != tag::AUTHENTICATION {
            if let Ok(BackendMessage::ErrorResponse(e)) = BackendMessage::decode(Frame {
                tag: msg_tag,
                body: &body,
            }) {
                return Err(ConnectError::Refused {
                    code: e.code().to_owned(),
                    message: e.message().to_owned(),
                });
            }
            return Err(ConnectError::Unexpected(msg_tag as char));
        }
        let request = match BackendMessage::decode(Frame {
            tag: msg_tag,
            body: &body,
        })
        .map_err(ReadError::from)?
        {
            BackendMessage::Authentication(r) => r,
            _ => return Err(ConnectError::Unexpected(msg_tag as char)),
        };
        match request {
            AuthRequest::Ok => return Ok(()),
            AuthRequest::Cleartext => match &target.credential {
                ServerCredential::Password { password, .. } => {
                    frontend::password(password.expose(), &mut out)
                }
                _ => return Err(ConnectError::NoCredential("cleartext password")),
            },
            AuthRequest::Md5 { salt } => {
                let hash = match &target.credential {
                    ServerCredential::Password { password, .. } => {
                        md5_password_hash(&target.user, password.expose())
                    }
                    ServerCredential::Md5Hash(hash) => hash.expose().to_owned(),
                    _ => return Err(ConnectError::NoCredential("md5")),
                };
                frontend::password(&md5_client_response(&hash, salt), &mut out);
            }
            AuthRequest::Sasl { mechanisms } => {
                if !mechanisms.contains(&"SCRAM-SHA-256") {
                    return Err(ConnectError::UnsupportedAuth(mechanisms.join(",")));
                }
                let mut nonce = [0u8; 18];
                getrandom::fill(&mut nonce).map_err(|e| ConnectError::Scram(e.to_string()))?;
                let (client, first) = ScramClient::new(&nonce);
                frontend::sasl_initial_response("SCRAM-SHA-256", &first, &mut out);
                scram = ScramProgress::SentFirst(client);
            }
            AuthRequest::SaslContinue { data } => {
                let ScramProgress::SentFirst(client) =
                    std::mem::replace(&mut scram, ScramProgress::NotStarted)
                else {
                    return Err(ConnectError::Unexpected('R'));
                };
                let credential = &target.credential;
                let (client, fin) = client
                    .handle_server_first_checked(data, |salt, iterations| {
                        credential.scram_keys(salt, iterations)
                    })
                    .map_err(|e| match e {
                        pgauth::ScramError::NoKeysForSalt => {
                            ConnectError::NoCredential("SCRAM-SHA-256")
                        }
                        e => ConnectError::Scram(e.to_string()),
                    })?;
                frontend::sasl_response(&fin, &mut out);
                scram = ScramProgress::SentFinal(client);
            }
            AuthRequest::SaslFinal { data } => {
                let ScramProgress::SentFinal(client) =
                    std::mem::replace(&mut scram, ScramProgress::NotStarted)
                else {
                    return Err(ConnectError::Unexpected('R'));
                };
                client
                    .verify_server_final(data)
                    .map_err(|e| ConnectError::Scram(e.to_string()))?;
                continue;
            }
            AuthRequest::Unsupported { code } => {
                return Err(ConnectError::UnsupportedAuth(format!("code {code}")))
            }
        }
        send(stream, &mut out)
            .await
            .map_err(|source| ConnectError::Io {
                addr: server_addr(&target.host, target.port),
                source,
            })?;
    }
}

enum ScramProgress {
    NotStarted,
    SentFirst(pgauth::ScramClientAwaitingServerFirst),
    SentFinal(pgauth::ScramClientAwaitingServerFinal),
}
