//! One Postgres v3 login over TCP, or TLS (`--tls`): connect from a chosen
//! 127.0.0.x source, send the startup packet, answer SCRAM-SHA-256, wait for
//! ReadyForQuery.
//! Only the handful of messages a login needs are encoded or read here.
//! See the Postgres docs, "Message Flow" > "Start-up" and "SASL Authentication".

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::scram::{Exchange, KeyCache};
use crate::tls::{self, Conn};
use crate::Context;

/// Largest backend message a login accepts; anything bigger is a protocol error.
const MAX_MESSAGE_LEN: usize = 64 * 1024;
const PROTOCOL_VERSION_3: u32 = 196_608;

/// Who logs in where.
pub struct LoginTarget {
    pub server: SocketAddr,
    pub user: String,
    pub database: String,
    pub keys: KeyCache,
}

#[derive(Debug)]
pub enum LoginError {
    Io(io::Error),
    /// The server sent an ErrorResponse: SQLSTATE and message.
    Server {
        code: String,
        message: String,
    },
    Protocol(String),
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::Io(error) => write!(f, "i/o: {error}"),
            LoginError::Server { code, message } => write!(f, "server error {code}: {message}"),
            LoginError::Protocol(what) => write!(f, "protocol: {what}"),
        }
    }
}

impl From<io::Error> for LoginError {
    fn from(error: io::Error) -> Self {
        LoginError::Io(error)
    }
}

/// Opens a TCP connection from `source` (port chosen by the kernel).
pub async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects from the context's next source address, over TLS when it has a
/// connector.
pub async fn connect(context: &Context) -> Result<Conn, String> {
    let tcp = connect_from(context.next_source(), context.target.server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match &context.tls {
        None => Ok(Conn::Plain(tcp)),
        Some(connector) => tls::start(tcp, connector)
            .await
            .map_err(|e| format!("TLS: {e}")),
    }
}

/// Logs in on `stream`; returns once the server said ReadyForQuery.
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &LoginTarget,
    nonce: String,
) -> Result<(), LoginError> {
    stream
        .write_all(&startup_packet(&target.user, &target.database))
        .await?;
    let mut exchange: Option<Exchange> = None;
    let mut body = Vec::with_capacity(256);
    loop {
        let tag = read_message(stream, &mut body).await?;
        match tag {
            b'R' => {
                let code = read_u32(&body, 0)?;
                let payload = &body[4..];
                match code {
                    0 => {}
                    10 => {
                        if !sasl_mechanisms(payload).any(|m| m == b"SCRAM-SHA-256") {
                            return Err(LoginError::Protocol(
                                "server does not offer SCRAM-SHA-256".into(),
                            ));
                        }
                        let (started, client_first) = Exchange::start(nonce.clone());
                        exchange = Some(started);
                        stream
                            .write_all(&sasl_initial_response(&client_first))
                            .await?;
                    }
                    11 => {
                        let current = exchange.as_mut().ok_or_else(|| {
                            LoginError::Protocol("SASLContinue before SASL".into())
                        })?;
                        let server_first = std::str::from_utf8(payload).map_err(|_| {
                            LoginError::Protocol("server-first is not UTF-8".into())
                        })?;
                        let client_final = current
                            .respond(&target.keys, server_first)
                            .map_err(LoginError::Protocol)?;
                        stream
                            .write_all(&password_message(client_final.as_bytes()))
                            .await?;
                    }
                    12 => {
                        let current = exchange
                            .as_ref()
                            .ok_or_else(|| LoginError::Protocol("SASLFinal before SASL".into()))?;
                        let server_final = std::str::from_utf8(payload).map_err(|_| {
                            LoginError::Protocol("server-final is not UTF-8".into())
                        })?;
                        current.verify(server_final).map_err(LoginError::Protocol)?;
                    }
                    other => {
                        return Err(LoginError::Protocol(format!(
                            "authentication request {other} not supported (only SCRAM-SHA-256)"
                        )))
                    }
                }
            }
            b'E' => return Err(server_error(&body)),
            b'Z' => return Ok(()),
            // ParameterStatus, BackendKeyData, NoticeResponse: not needed here.
            b'S' | b'K' | b'N' => {}
            other => {
                return Err(LoginError::Protocol(format!(
                    "unexpected message {:?} during login",
                    other as char
                )))
            }
        }
    }
}

/// Sends Terminate; the caller then drops the stream, as libpq's PQfinish does.
pub async fn terminate<S: AsyncWrite + Unpin>(stream: &mut S) -> io::Result<()> {
    stream.write_all(&[b'X', 0, 0, 0, 4]).await?;
    stream.flush().await
}

fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut packet = vec![0u8; 4];
    packet.extend_from_slice(&PROTOCOL_VERSION_3.to_be_bytes());
    for (key, value) in [
        ("user", user),
        ("database", database),
        ("application_name", "pgclients"),
    ] {
        packet.extend_from_slice(key.as_bytes());
        packet.push(0);
        packet.extend_from_slice(value.as_bytes());
        packet.push(0);
    }
    packet.push(0);
    let len = packet.len() as u32;
    packet[..4].copy_from_slice(&len.to_be_bytes());
    packet
}

fn sasl_initial_response(client_first: &str) -> Vec<u8> {
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(client_first.len() as u32).to_be_bytes());
    body.extend_from_slice(client_first.as_bytes());
    password_message(&body)
}

/// A 'p' message (PasswordMessage, SASLInitialResponse and SASLResponse share it).
fn password_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(body.len() + 5);
    message.push(b'p');
    message.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    message.extend_from_slice(body);
    message
}

/// Reads one backend message into `body`; returns its tag.
async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    body: &mut Vec<u8>,
) -> Result<u8, LoginError> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(LoginError::Protocol(format!(
            "message length {len} out of bounds"
        )));
    }
    body.clear();
    body.resize(len - 4, 0);
    stream.read_exact(body).await?;
    Ok(header[0])
}

fn read_u32(body: &[u8], at: usize) -> Result<u32, LoginError> {
    body.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| LoginError::Protocol("message too short".into()))
}

fn sasl_mechanisms(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
}

fn server_error(body: &[u8]) -> LoginError {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|byte| *byte == 0) {
        if let Some((kind, value)) = field.split_first() {
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'C' => code = value,
                b'M' => message = value,
                _ => {}
            }
        }
    }
    LoginError::Server { code, message }
}
