//! The first packets of a client connection: TLS or GSSAPI encryption requests, a
//! CancelRequest, or the StartupMessage. Ends with a stream (TLS if negotiated) and
//! the startup parameters.

use bytes::BytesMut;
use pgwire::startup::{StartupPacket, StartupParams};
use pgwire::WireError;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::app::App;
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
    tcp: TcpStream,
    buf: &mut BytesMut,
) -> Result<Opening, HandshakeError> {
    let mut stream = Stream::Plain(tcp);
    let mut encryption_asked = false;
    loop {
        match read_startup(&mut stream, buf).await? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest if encryption_asked => {
                return Err(WireError::Malformed {
                    what: "second encryption request",
                }
                .into())
            }
            StartupPacket::GssEncRequest => {
                encryption_asked = true;
                stream.write_all(b"N").await?;
            }
            StartupPacket::SslRequest => {
                encryption_asked = true;
                stream = match (stream, app.tls_acceptor()) {
                    (Stream::Plain(mut tcp), None) => {
                        tcp.write_all(b"N").await?;
                        Stream::Plain(tcp)
                    }
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
                    (tls, _) => tls,
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
