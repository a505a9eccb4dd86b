//! The first packets of a client connection: TLS or GSSAPI encryption requests, a
//! CancelRequest, or the StartupMessage. Ends with a stream (TLS if negotiated) and
//! the startup parameters.

use bytes::BytesMut;
use pgwire::startup::{StartupPacket, StartupParams};
use pgwire::WireError;
use tokio::io::AsyncWriteExt;

use crate::app::App;
use crate::error::ClientError;
use crate::framed::{read_startup, ReadError};
use crate::stream::Stream;

/// What the opening packets asked for.
pub enum Opening {
    /// A login: go on to authentication.
    Startup(Stream, StartupParams),
    /// A cancel request was handled; close the connection.
    Cancelled,
}

/// Why the opening failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("TLS handshake with client failed: {0}")]
    Tls(std::io::Error),
    #[error("client sent data after SSLRequest before the TLS handshake")]
    DataBeforeTls,
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        Self::Read(ReadError::Io(e))
    }
}

impl From<WireError> for HandshakeError {
    fn from(e: WireError) -> Self {
        Self::Read(ReadError::Wire(e))
    }
}

/// Reads startup packets until a StartupMessage or CancelRequest.
pub async fn open(
    app: &App,
    mut stream: Stream,
    buf: &mut BytesMut,
) -> Result<Opening, HandshakeError> {
    // A client may ask for each kind of encryption once, in either order (libpq
    // tries GSSAPI first when it has Kerberos credentials), and never after TLS.
    let mut ssl_asked = false;
    let mut gss_asked = false;
    loop {
        let packet = match read_startup(&mut stream, buf).await {
            Ok(p) => p,
            Err(ReadError::Wire(e)) => return Err(refuse(&mut stream, e).await),
            Err(e) => return Err(e.into()),
        };
        match packet {
            StartupPacket::SslRequest if ssl_asked || stream.is_tls() => {
                let e = WireError::Malformed {
                    what: "second SSLRequest",
                };
                return Err(refuse(&mut stream, e).await);
            }
            StartupPacket::GssEncRequest if gss_asked || stream.is_tls() => {
                let e = WireError::Malformed {
                    what: "second GSSENCRequest",
                };
                return Err(refuse(&mut stream, e).await);
            }
            StartupPacket::GssEncRequest => {
                gss_asked = true;
                stream.write_all(b"N").await?;
            }
            StartupPacket::SslRequest => {
                ssl_asked = true;
                stream = match (stream, app.tls_acceptor()) {
                    (Stream::Plain(mut tcp), Some(acceptor)) => {
                        if !buf.is_empty() {
                            // Bytes sent before the handshake could have been injected
                            // by a third party (CVE-2021-23214): refuse them.
                            return Err(HandshakeError::DataBeforeTls);
                        }
                        tcp.write_all(b"S").await?;
                        let tls = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
                        Stream::ServerTls(Box::new(tls))
                    }
                    // No TLS offered, or a Unix socket (as Postgres: TLS only on TCP).
                    (mut plain, _) => {
                        plain.write_all(b"N").await?;
                        plain
                    }
                };
            }
            StartupPacket::CancelRequest { process_id, secret } => {
                app.cancels.cancel(process_id, &secret).await;
                return Ok(Opening::Cancelled);
            }
            StartupPacket::Startup(params) => return Ok(Opening::Startup(stream, params)),
        }
    }
}

/// Tells the client why its opening packets were refused (as Postgres does, e.g.
/// "unsupported frontend protocol"), then gives the error back for the log.
async fn refuse(stream: &mut Stream, e: WireError) -> HandshakeError {
    let mut out = BytesMut::with_capacity(128);
    ClientError::Protocol(e.clone()).encode_fatal(&mut out);
    let _ = crate::framed::send(stream, &mut out).await;
    e.into()
}
