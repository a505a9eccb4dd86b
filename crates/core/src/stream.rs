//! A connection that is either plain TCP or TLS over TCP, on either side of the pooler.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A client or server connection, with or without TLS.
pub enum Stream {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Self::Plain(_))
    }

    /// The server name a TLS client asked for (SNI), if any.
    pub fn server_name(&self) -> Option<&str> {
        match self {
            Self::ServerTls(s) => s.get_ref().1.server_name(),
            _ => None,
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::ServerTls(s) => s.get_ref().0,
            Self::ClientTls(s) => s.get_ref().0,
        }
    }

    /// Ready when reading would not block, without taking a buffer or keeping any
    /// state. A TLS stream may hold decrypted bytes already, so it is ready at once.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Plain(s) => s.poll_read_ready(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            // A write that fits goes straight out; only one that would block takes
            // the polling path, which registers the task to be woken.
            Self::Plain(s) => match s.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Pin::new(s).poll_write(cx, buf),
                done => Poll::Ready(done),
            },
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
