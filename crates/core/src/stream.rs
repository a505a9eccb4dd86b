//! A connection on either side of the pooler: plain TCP or TLS over TCP, or (to a
//! server on the same machine) a Unix-domain socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A client or server connection, with or without TLS.
pub enum Stream {
    Plain(TcpStream),
    /// A server's Unix-domain socket (never TLS, as with libpq).
    Unix(UnixStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::ServerTls(_) | Self::ClientTls(_))
    }

    /// The server name a TLS client asked for (SNI), if any.
    pub fn server_name(&self) -> Option<&str> {
        match self {
            Self::ServerTls(s) => s.get_ref().1.server_name(),
            _ => None,
        }
    }

    /// The TCP socket underneath, if there is one.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Self::Plain(s) => Some(s),
            Self::Unix(_) => None,
            Self::ServerTls(s) => Some(s.get_ref().0),
            Self::ClientTls(s) => Some(s.get_ref().0),
        }
    }

    /// Without blocking: whether an idle connection has nothing to say, no bytes
    /// and no end of stream. `None` for TLS, which may hold decrypted bytes its
    /// socket no longer shows (poll it instead). Costs no system call while the
    /// reactor has not seen the socket become readable.
    pub fn try_quiet(&self) -> Option<bool> {
        let mut byte = [0u8; 1];
        let read = match self {
            Self::Plain(s) => s.try_read(&mut byte),
            Self::Unix(s) => s.try_read(&mut byte),
            Self::ServerTls(_) | Self::ClientTls(_) => return None,
        };
        Some(matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock))
    }

    /// Moves a plain TCP or Unix socket from the reactor that watched it to this
    /// thread's (two `epoll_ctl` calls); TLS comes back as it was. On an error the
    /// socket is closed.
    pub fn reregister(self) -> io::Result<Self> {
        match self {
            Self::Plain(s) => Ok(Self::Plain(TcpStream::from_std(s.into_std()?)?)),
            Self::Unix(s) => Ok(Self::Unix(UnixStream::from_std(s.into_std()?)?)),
            tls => Ok(tls),
        }
    }

    /// Best effort and without blocking: writes what the socket takes of `bytes`
    /// now (a Terminate before closing; five bytes fit an idle socket). Nothing
    /// over TLS.
    pub fn try_write_now(&self, bytes: &[u8]) {
        let _ = match self {
            Self::Plain(s) => s.try_write(bytes),
            Self::Unix(s) => s.try_write(bytes),
            Self::ServerTls(_) | Self::ClientTls(_) => return,
        };
    }

    /// Ready when reading would not block, without taking a buffer of ours. Over
    /// TLS that means decrypted bytes (or the end of the stream): records that
    /// arrive are taken into the TLS session's own buffer here, so an idle TLS
    /// client waits like a plain one and not inside a read.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Plain(s) => s.poll_read_ready(cx),
            Self::Unix(s) => s.poll_read_ready(cx),
            Self::ServerTls(s) => {
                let (tcp, tls) = s.get_mut();
                poll_tls_read_ready(tcp, tls, cx)
            }
            Self::ClientTls(s) => {
                let (tcp, tls) = s.get_mut();
                poll_tls_read_ready(tcp, tls, cx)
            }
        }
    }
}

/// [`Stream::poll_read_ready`] over TLS: ready once `tls` holds plaintext, has
/// seen the peer's close_notify, or its socket reached its end or failed. Takes
/// whatever records the socket has into `tls` (its own buffer, not a relay's).
fn poll_tls_read_ready<D>(
    tcp: &TcpStream,
    tls: &mut rustls::ConnectionCommon<D>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        if !tls.wants_read() {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(tcp.poll_read_ready(cx))?;
        match tls.read_tls(&mut NowOrNever(tcp)) {
            // The end of the stream: the read that follows reports it.
            Ok(0) => return Poll::Ready(Ok(())),
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    // Best effort: the alert rustls queued for the peer.
                    let _ = tls.write_tls(&mut NowOrNever(tcp));
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
            // Only a partial record came (or none): the socket's readiness is
            // cleared, so the next poll waits for more.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// A TCP socket as blocking-style `Read`/`Write` that never blocks: what the
/// socket takes or has now, else `WouldBlock` (which clears tokio's readiness).
struct NowOrNever<'a>(&'a TcpStream);

impl io::Read for NowOrNever<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for NowOrNever<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
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
            Self::Unix(s) => match s.try_write(buf) {
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
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
