//! A raw PostgreSQL wire-protocol client, for tests that must choose the exact
//! bytes a client sends: pipelines in one write, the COPY sub-protocol, cancel
//! requests, startup variants and malformed packets.
//!
//! [`WireClient`] owns one connection (TCP, or TLS over TCP) and its read buffer; the free
//! functions encode frontend messages into plain byte vectors that a test
//! concatenates and sends in one write. Messages are encoded and decoded here
//! by hand, independently of the `pgwire` crate under test, so a codec bug
//! cannot hide by agreeing with itself; only the SCRAM and md5 arithmetic
//! comes from `pgauth`. Every read and write is bounded ([`IO_TIMEOUT`] unless
//! the caller gives a timeout), so a pooler that hangs fails the test instead
//! of hanging CI. Like the rest of the harness it panics with a readable
//! message instead of returning errors, except where a test asks what
//! happened (the `try_*` and `next_within` functions).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::HOST;

/// Bound on every read and write that does not name its own.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A backend message longer than this is taken as a broken stream, not
/// buffered: tests never ask for results anywhere near this size.
const MAX_BACKEND_MESSAGE: usize = 64 << 20;

/// Protocol 3.0 as the version field of a StartupMessage.
pub const PROTOCOL_3_0: (u16, u16) = (3, 0);
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// One message from the server (or the pooler acting as one).
#[derive(Clone, PartialEq, Eq)]
pub struct BackendMessage {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl BackendMessage {
    /// A field of an ErrorResponse or NoticeResponse (`b'C'` is the SQLSTATE,
    /// `b'M'` the message, `b'S'` the severity).
    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut rest = self.body.as_slice();
        while let Some((&field, after)) = rest.split_first() {
            if field == 0 {
                break;
            }
            let end = after.iter().position(|&b| b == 0)?;
            if field == code {
                return Some(String::from_utf8_lossy(&after[..end]).into_owned());
            }
            rest = &after[end + 1..];
        }
        None
    }

    /// The SQLSTATE of an ErrorResponse or NoticeResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// The status byte of a ReadyForQuery (`b'I'`, `b'T'` or `b'E'`).
    pub fn ready_status(&self) -> Option<u8> {
        match (self.tag, self.body.as_slice()) {
            (b'Z', [status]) => Some(*status),
            _ => None,
        }
    }

    /// Name and value of a ParameterStatus.
    pub fn parameter(&self) -> Option<(String, String)> {
        if self.tag != b'S' {
            return None;
        }
        let mut parts = self.body.split(|&b| b == 0);
        let name = String::from_utf8_lossy(parts.next()?).into_owned();
        let value = String::from_utf8_lossy(parts.next()?).into_owned();
        Some((name, value))
    }

    /// Process id and secret of a BackendKeyData (protocol 3.0 layout).
    pub fn backend_key(&self) -> Option<(u32, u32)> {
        match (self.tag, self.body.as_slice()) {
            (b'K', [p0, p1, p2, p3, s0, s1, s2, s3]) => Some((
                u32::from_be_bytes([*p0, *p1, *p2, *p3]),
                u32::from_be_bytes([*s0, *s1, *s2, *s3]),
            )),
            _ => None,
        }
    }

    /// The command tag of a CommandComplete, e.g. `SELECT 1` or `COPY 10`.
    pub fn command_tag(&self) -> Option<String> {
        match (self.tag, self.body.split_last()) {
            (b'C', Some((0, text))) => Some(String::from_utf8_lossy(text).into_owned()),
            _ => None,
        }
    }

    /// The columns of a DataRow, as text (`None` for NULL).
    pub fn data_row(&self) -> Option<Vec<Option<String>>> {
        if self.tag != b'D' {
            return None;
        }
        let mut body = self.body.as_slice();
        let count = body.try_get_i16().ok()?;
        let mut columns = Vec::new();
        for _ in 0..count {
            let len = body.try_get_i32().ok()?;
            if len < 0 {
                columns.push(None);
                continue;
            }
            let value = body.get(..len as usize)?;
            columns.push(Some(String::from_utf8_lossy(value).into_owned()));
            body.advance(len as usize);
        }
        Some(columns)
    }

    /// The code of an Authentication request (0 ok, 3 cleartext, 5 md5, 10-12 SASL).
    pub fn auth_code(&self) -> Option<i32> {
        match (self.tag, self.body.get(..4)) {
            (b'R', Some(code)) => Some(i32::from_be_bytes([code[0], code[1], code[2], code[3]])),
            _ => None,
        }
    }
}

impl fmt::Debug for BackendMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag {
            b'E' | b'N' => write!(
                f,
                "{}({} {}: {})",
                char::from(self.tag),
                self.field(b'S').unwrap_or_default(),
                self.sqlstate().unwrap_or_default(),
                self.field(b'M').unwrap_or_default()
            ),
            b'Z' => write!(
                f,
                "Z({})",
                char::from(self.body.first().copied().unwrap_or(b'?'))
            ),
            b'C' => write!(f, "C({})", self.command_tag().unwrap_or_default()),
            b'S' => write!(f, "S({:?})", self.parameter().unwrap_or_default()),
            b'D' => write!(f, "D({:?})", self.data_row().unwrap_or_default()),
            tag => write!(f, "{}[{} bytes]", char::from(tag), self.body.len()),
        }
    }
}

/// Tags of `messages` as one string, e.g. `"12DCZ"`, for compact assertions.
pub fn tags(messages: &[BackendMessage]) -> String {
    messages.iter().map(|m| char::from(m.tag)).collect()
}

/// The DataRows among `messages`.
pub fn rows(messages: &[BackendMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(BackendMessage::data_row)
        .collect()
}

/// The ErrorResponses among `messages`.
pub fn errors(messages: &[BackendMessage]) -> Vec<&BackendMessage> {
    messages.iter().filter(|m| m.tag == b'E').collect()
}

/// What waiting for the next message found.
#[derive(Debug)]
pub enum Next {
    Message(BackendMessage),
    /// The peer closed the connection (or reset it).
    Closed,
    TimedOut,
}

/// What a [`WireClient`] talks over: TCP, or TLS over TCP.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// One raw client connection.
pub struct WireClient {
    stream: Box<dyn Conn>,
    buf: BytesMut,
    user: String,
    /// Everything received from the first authentication request up to and
    /// including the ReadyForQuery that ended the login.
    pub login_messages: Vec<BackendMessage>,
    /// ParameterStatus values received during login, in order.
    pub parameters: Vec<(String, String)>,
    /// BackendKeyData received during login.
    pub backend_key: Option<(u32, u32)>,
}

impl WireClient {
    /// Opens a TCP connection to 127.0.0.1:`port` and sends nothing.
    pub async fn connect(port: u16) -> WireClient {
        WireClient::over(Box::new(tcp_connect(port).await))
    }

    /// Opens a TCP connection to 127.0.0.1:`port`, asks for TLS (SSLRequest)
    /// and sets it up, trusting only the certificate `trusted` (DER) and
    /// sending `server_name` as SNI; sends nothing more. Panics if the server
    /// refuses TLS or the handshake fails.
    pub async fn connect_tls(port: u16, trusted: &[u8], server_name: &str) -> WireClient {
        let mut tcp = tcp_connect(port).await;
        let answer = async {
            tcp.write_all(&ssl_request()).await?;
            tcp.read_u8().await
        };
        match tokio::time::timeout(IO_TIMEOUT, answer).await {
            Ok(Ok(b'S')) => {}
            other => panic!("SSLRequest to port {port} answered {other:?}, not 'S'"),
        }
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(trusted.to_vec()))
            .expect("the trusted certificate does not parse");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .expect("a valid server name");
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
            .await
            .unwrap_or_else(|_| panic!("TLS handshake with port {port} timed out"))
            .unwrap_or_else(|e| panic!("TLS handshake with port {port} failed: {e}"));
        WireClient::over(Box::new(tls))
    }

    fn over(stream: Box<dyn Conn>) -> WireClient {
        WireClient {
            stream,
            buf: BytesMut::with_capacity(8192),
            user: String::new(),
            login_messages: Vec::new(),
            parameters: Vec::new(),
            backend_key: None,
        }
    }

    /// Connects and logs in as `user` to database `postgres` with protocol 3.0;
    /// panics if the login fails.
    pub async fn login(port: u16, user: &str, password: &str) -> WireClient {
        WireClient::connect(port)
            .await
            .logged_in(user, password)
            .await
    }

    /// This connection, just opened, logged in as `user` to database
    /// `postgres` with protocol 3.0; panics if the login fails.
    pub async fn logged_in(mut self, user: &str, password: &str) -> WireClient {
        self.startup(PROTOCOL_3_0, &[("user", user), ("database", "postgres")])
            .await;
        if let Err(e) = self.authenticate(password).await {
            panic!("login as {user} failed: {e:?}");
        }
        self
    }

    /// Sends a StartupMessage for protocol `version` with `params` (which
    /// should include `user`, remembered for md5).
    pub async fn startup(&mut self, version: (u16, u16), params: &[(&str, &str)]) {
        if let Some((_, user)) = params.iter().find(|(name, _)| *name == "user") {
            self.user = (*user).to_owned();
        }
        self.send(&startup_message(version, params)).await;
    }

    /// Answers the server's authentication requests with `password` (SCRAM-
    /// SHA-256, md5 or cleartext), then collects ParameterStatus and
    /// BackendKeyData until ReadyForQuery. An ErrorResponse ends it with `Err`.
    pub async fn authenticate(&mut self, password: &str) -> Result<(), BackendMessage> {
        let mut scram_first = None;
        let mut scram_final = None;
        loop {
            let msg = self.read().await;
            self.login_messages.push(msg.clone());
            match (msg.tag, msg.auth_code()) {
                (b'E', _) => return Err(msg),
                (b'R', Some(0)) => break,
                (b'R', Some(3)) => self.send(&password_message(password)).await,
                (b'R', Some(5)) => {
                    let salt = msg
                        .body
                        .get(4..8)
                        .expect("AuthenticationMD5Password without salt");
                    let salt = [salt[0], salt[1], salt[2], salt[3]];
                    let hash = pgauth::md5_password_hash(&self.user, password);
                    let response = pgauth::md5_client_response(&hash, salt);
                    self.send(&password_message(&response)).await;
                }
                (b'R', Some(10)) => {
                    let mechanisms: Vec<&[u8]> = msg.body[4..].split(|&b| b == 0).collect();
                    assert!(
                        mechanisms.contains(&&b"SCRAM-SHA-256"[..]),
                        "server offers no SCRAM-SHA-256: {msg:?}"
                    );
                    let (state, first) = pgauth::ScramClient::new(&nonce());
                    scram_first = Some(state);
                    self.send(&sasl_initial_response("SCRAM-SHA-256", &first))
                        .await;
                }
                (b'R', Some(11)) => {
                    let state = scram_first.take().expect("SASLContinue before SASL");
                    let (state, client_final) = state
                        .handle_server_first(&msg.body[4..], |salt, iterations| {
                            pgauth::derive_client_keys(password, salt, iterations)
                        })
                        .unwrap_or_else(|e| panic!("bad server-first-message: {e}"));
                    scram_final = Some(state);
                    self.send(&message(b'p', &client_final)).await;
                }
                (b'R', Some(12)) => {
                    let state = scram_final.take().expect("SASLFinal before SASLContinue");
                    state
                        .verify_server_final(&msg.body[4..])
                        .unwrap_or_else(|e| panic!("server signature rejected: {e}"));
                }
                (b'v' | b'N', _) => {}
                _ => panic!("unexpected message during authentication: {msg:?}"),
            }
        }
        loop {
            let msg = self.read().await;
            self.login_messages.push(msg.clone());
            if let Some(parameter) = msg.parameter() {
                self.parameters.push(parameter);
            } else if let Some(key) = msg.backend_key() {
                self.backend_key = Some(key);
            }
            match msg.tag {
                b'Z' => return Ok(()),
                b'E' => return Err(msg),
                b'S' | b'K' | b'N' => {}
                _ => panic!("unexpected message after AuthenticationOk: {msg:?}"),
            }
        }
    }

    /// The value of ParameterStatus `name` from the login.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Writes `bytes` as they are; panics on failure or after [`IO_TIMEOUT`].
    pub async fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes).await {
            panic!("cannot send {} bytes: {e}", bytes.len());
        }
    }

    /// Writes `bytes`, returning the error (for peers that may have closed).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(IO_TIMEOUT, write).await {
            Ok(result) => result,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// The next message; panics if the connection closes or nothing complete
    /// arrives within [`IO_TIMEOUT`].
    pub async fn read(&mut self) -> BackendMessage {
        match self.next_within(IO_TIMEOUT).await {
            Next::Message(msg) => msg,
            Next::Closed => panic!("connection closed while waiting for a message"),
            Next::TimedOut => panic!("no message within {IO_TIMEOUT:?}"),
        }
    }

    /// The next message, or why there is none within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(msg) = self.take_buffered() {
                return Next::Message(msg);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Next::TimedOut,
                Ok(Ok(0)) => return Next::Closed,
                Ok(Ok(_)) => {}
                Ok(Err(e)) if is_disconnect(&e) => return Next::Closed,
                Ok(Err(e)) => panic!("read failed: {e}"),
            }
        }
    }

    /// Reads one byte outside message framing (the answer to SSLRequest and
    /// GSSENCRequest).
    pub async fn read_byte(&mut self) -> u8 {
        if self.buf.is_empty() {
            match tokio::time::timeout(IO_TIMEOUT, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => panic!("no answer byte within {IO_TIMEOUT:?}"),
                Ok(Ok(0)) => panic!("connection closed instead of an answer byte"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("read failed: {e}"),
            }
        }
        self.buf.get_u8()
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn read_until_ready(&mut self) -> Vec<BackendMessage> {
        let mut messages = Vec::new();
        loop {
            let msg = match self.next_within(IO_TIMEOUT).await {
                Next::Message(msg) => msg,
                other => panic!("{other:?} while waiting for ReadyForQuery after {messages:?}"),
            };
            let done = msg.tag == b'Z';
            messages.push(msg);
            if done {
                return messages;
            }
        }
    }

    /// Sends a simple Query and returns everything up to its ReadyForQuery.
    pub async fn simple_query(&mut self, sql: &str) -> Vec<BackendMessage> {
        self.send(&query(sql)).await;
        self.read_until_ready().await
    }

    /// Like [`Self::simple_query`], but panics on an ErrorResponse; returns
    /// the rows and the transaction status.
    pub async fn query_ok(&mut self, sql: &str) -> (Vec<Vec<Option<String>>>, u8) {
        let messages = self.simple_query(sql).await;
        assert!(errors(&messages).is_empty(), "{sql:?} failed: {messages:?}");
        let status = messages.last().and_then(BackendMessage::ready_status);
        (rows(&messages), status.unwrap_or(b'?'))
    }

    /// Runs a query whose result is one value and returns it.
    pub async fn query_value(&mut self, sql: &str) -> String {
        let (rows, _) = self.query_ok(sql).await;
        match rows.as_slice() {
            [row] => match row.as_slice() {
                [Some(value)] => value.clone(),
                _ => panic!("{sql:?} returned {row:?}, not one non-null value"),
            },
            _ => panic!("{sql:?} returned {} rows, not one", rows.len()),
        }
    }

    /// Reads until the peer closes the connection and returns what arrived
    /// first; panics if it is still open after `timeout`.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Vec<BackendMessage> {
        let deadline = Instant::now() + timeout;
        let mut messages = Vec::new();
        loop {
            match self
                .next_within(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Next::Message(msg) => messages.push(msg),
                Next::Closed => return messages,
                Next::TimedOut => {
                    panic!("connection still open after {timeout:?}; received {messages:?}")
                }
            }
        }
    }

    /// Closes the connection without a Terminate message, as a crashed client would.
    pub fn drop_without_terminate(self) {
        drop(self);
    }

    fn take_buffered(&mut self) -> Option<BackendMessage> {
        let head = self.buf.get(..5)?;
        let tag = head[0];
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        assert!(
            (4..=MAX_BACKEND_MESSAGE as i32).contains(&len),
            "backend message {:?} with invalid length {len}",
            char::from(tag)
        );
        let len = len as usize;
        if self.buf.len() < len + 1 {
            self.buf.reserve(len + 1 - self.buf.len());
            return None;
        }
        let mut frame = self.buf.split_to(len + 1);
        frame.advance(5);
        Some(BackendMessage {
            tag,
            body: frame.to_vec(),
        })
    }
}

/// Errors that mean the peer went away. Over TLS a close without close_notify
/// (what Postgres and poolers do after a FATAL) reads as `UnexpectedEof`.
fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

async fn tcp_connect(port: u16) -> TcpStream {
    let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect((HOST, port)))
        .await
        .unwrap_or_else(|_| panic!("connecting to {HOST}:{port} timed out"))
        .unwrap_or_else(|e| panic!("cannot connect to {HOST}:{port}: {e}"));
    let _ = stream.set_nodelay(true);
    stream
}

/// 18 bytes for a SCRAM client nonce. They only need to differ between logins,
/// so std's randomly keyed hasher is enough and no RNG crate is needed.
fn nonce() -> [u8; 18] {
    use std::hash::{BuildHasher, Hasher};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut out = [0u8; 18];
    for chunk in out.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(now);
        chunk.copy_from_slice(&hasher.finish().to_le_bytes()[..chunk.len()]);
    }
    out
}

// ---- frontend messages -------------------------------------------------------
// Layouts: https://www.postgresql.org/docs/current/protocol-message-formats.html

fn put_cstr(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

/// A tagged message: `tag`, Int32 length (itself included), `body`.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A StartupMessage for protocol `(major, minor)`.
pub fn startup_message(version: (u16, u16), params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.0.to_be_bytes());
    body.extend_from_slice(&version.1.to_be_bytes());
    for (name, value) in params {
        put_cstr(&mut body, name);
        put_cstr(&mut body, value);
    }
    body.push(0);
    untagged(&body)
}

fn untagged(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn ssl_request() -> Vec<u8> {
    untagged(&SSL_REQUEST_CODE.to_be_bytes())
}

pub fn gssenc_request() -> Vec<u8> {
    untagged(&GSSENC_REQUEST_CODE.to_be_bytes())
}

/// CancelRequest with a protocol-3.0 key.
pub fn cancel_request(process_id: u32, secret: u32) -> Vec<u8> {
    let mut body = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
    body.extend_from_slice(&process_id.to_be_bytes());
    body.extend_from_slice(&secret.to_be_bytes());
    untagged(&body)
}

/// PasswordMessage (cleartext or md5 response).
pub fn password_message(password: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, password);
    message(b'p', &body)
}

pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, mechanism);
    body.extend_from_slice(&(data.len() as i32).to_be_bytes());
    body.extend_from_slice(data);
    message(b'p', &body)
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, sql);
    message(b'Q', &body)
}

/// Parse with no parameter types given.
pub fn parse(statement: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, statement);
    put_cstr(&mut body, sql);
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'P', &body)
}

/// Bind with text parameters (`None` is NULL) and text results.
pub fn bind(portal: &str, statement: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, portal);
    put_cstr(&mut body, statement);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for param in params {
        match param {
            Some(text) => {
                body.extend_from_slice(&(text.len() as i32).to_be_bytes());
                body.extend_from_slice(text.as_bytes());
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'B', &body)
}

pub fn describe_portal(portal: &str) -> Vec<u8> {
    let mut body = vec![b'P'];
    put_cstr(&mut body, portal);
    message(b'D', &body)
}

pub fn describe_statement(statement: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    put_cstr(&mut body, statement);
    message(b'D', &body)
}

/// Execute; `max_rows` 0 means all rows.
pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, portal);
    body.extend_from_slice(&max_rows.to_be_bytes());
    message(b'E', &body)
}

pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

pub fn flush() -> Vec<u8> {
    message(b'H', &[])
}

pub fn copy_data(data: &[u8]) -> Vec<u8> {
    message(b'd', data)
}

pub fn copy_done() -> Vec<u8> {
    message(b'c', &[])
}

pub fn copy_fail(reason: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, reason);
    message(b'f', &body)
}

pub fn terminate() -> Vec<u8> {
    message(b'X', &[])
}

/// Parse, Bind and Execute of `sql` as the unnamed statement and portal,
/// without Sync.
pub fn extended_query(sql: &str, params: &[Option<&str>]) -> Vec<u8> {
    [parse("", sql), bind("", "", params), execute("", 0)].concat()
}
