//! A connection on either side of the pooler: plain TCP or TLS over TCP, or (to a
//! server on the same machine) a Unix-domain socket.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A client or server connection, with or without TLS.
pub enum Stream {
    Plain(TcpStream),
    /// A Unix-domain socket: a client of the pooler's socket file, or a server on
    /// the same machine. Never TLS, as with libpq.
    Unix(UnixStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::ServerTls(_) | Self::ClientTls(_))
    }

    /// Whether no one between the two ends can read what passes: TLS, or a
    /// Unix socket (which never leaves the machine). Where a password may go in
    /// clear and where a demand for TLS is met.
    pub fn is_confidential(&self) -> bool {
        self.is_tls() || matches!(self, Self::Unix(_))
    }

    /// The server name a TLS client asked for (SNI), if any.
    pub fn server_name(&self) -> Option<&str> {
        match self {
            Self::ServerTls(s) => s.get_ref().1.server_name(),
            _ => None,
        }
    }

    /// Without blocking: whether an idle connection has nothing to say, no bytes
    /// and no end of stream. `None` for TLS, which may hold decrypted bytes its
    /// socket no longer shows (poll it instead). Costs no system call while the
    /// reactor has not seen the socket become readable.
    pub fn try_quiet(&self) -> Option<bool> {
        let mut byte = [0u8; 1];
        let read = self.try_read_plain(&mut byte)?;
        Some(matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock))
    }

    /// Without blocking: reads what a plain TCP or Unix socket has now
    /// (`WouldBlock` when nothing). `None` for TLS, whose bytes must go through
    /// its session.
    pub fn try_read_plain(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        match self {
            Self::Plain(s) => Some(s.try_read(buf)),
            Self::Unix(s) => Some(s.try_read(buf)),
            Self::ServerTls(_) | Self::ClientTls(_) => None,
        }
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

    /// Takes a plain TCP or Unix socket out of the reactor that watches it (one
    /// `epoll_ctl` call); `Err` gives a TLS stream back untouched.
    pub fn into_bare(self) -> Result<io::Result<Bare>, Self> {
        match self {
            Self::Plain(s) => Ok(s.into_std().map(Bare::Tcp)),
            Self::Unix(s) => Ok(s.into_std().map(Bare::Unix)),
            tls => Err(tls),
        }
    }

    /// Without blocking: the bytes waiting on a plain TCP or Unix socket, left
    /// there for the next read. `WouldBlock` when there are none, and over TLS.
    /// Costs no system call while the reactor has not seen the socket become
    /// readable.
    pub fn try_peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.try_io(Interest::READABLE, || peek_fd(s.as_raw_fd(), buf)),
            Self::Unix(s) => s.try_io(Interest::READABLE, || peek_fd(s.as_raw_fd(), buf)),
            Self::ServerTls(_) | Self::ClientTls(_) => Err(io::ErrorKind::WouldBlock.into()),
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

/// A plain TCP or Unix socket outside any reactor: a parked client, or one on
/// its way to another thread's reactor.
#[derive(Debug)]
pub enum Bare {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Bare {
    /// Registers the socket with this thread's reactor (one `epoll_ctl` call).
    pub fn into_stream(self) -> io::Result<Stream> {
        match self {
            Self::Tcp(s) => TcpStream::from_std(s).map(Stream::Plain),
            Self::Unix(s) => UnixStream::from_std(s).map(Stream::Unix),
        }
    }

    /// Without blocking (the socket is non-blocking): the bytes waiting, left
    /// there for the next read.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        peek_fd(self.as_raw_fd(), buf)
    }
}

impl AsRawFd for Bare {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// `recv` with `MSG_PEEK` on a socket of either family (the standard library
/// peeks only on TCP).
fn peek_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call,
    // and `recv` writes at most that many; `fd` is borrowed from a live socket.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.unsigned_abs())
}

/// [`Stream::poll_read_ready`] over TLS: ready once `tls` holds plaintext, has
/// seen the peer's close_notify, or its socket reached its end or failed. Takes
/// whatever records the socket has into `tls` (its own buffer, not a relay's).
fn poll_tls_read_ready<D>(
    tcp: &TcpStream,
    tls: &mut rustls::ConnectionCommon<D>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    // An error tokio-rustls met after the bytes it returned is kept for its next
    // read: rustls still has it, and a wait must not hide it. (Later errors are
    // seen where records are processed, below.)
    if let Err(e) = tls.process_new_packets() {
        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
    }
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Long enough for loopback bytes to arrive; a wait that must end is given
    /// [`SURELY`], one that must not is watched for [`A_WHILE`].
    const A_WHILE: Duration = Duration::from_millis(200);
    const SURELY: Duration = Duration::from_secs(10);

    /// A server-side TLS stream as the pooler has it, and the client's end taken
    /// apart (its socket, its rustls session) so a test writes records by hand.
    async fn tls_pair() -> (Stream, TcpStream, rustls::ClientConnection) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = made.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(made.key_pair.serialize_der()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let accepted = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.unwrap()
        });
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connected = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap();
        let server_end = Stream::ServerTls(Box::new(accepted.await.unwrap()));
        let (tcp, session) = connected.into_inner();
        (server_end, tcp, session)
    }

    /// `data` as the client's TLS records.
    fn records(session: &mut rustls::ClientConnection, data: &[u8]) -> Vec<u8> {
        session.writer().write_all(data).unwrap();
        pending_records(session)
    }

    fn pending_records(session: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while session.wants_write() {
            session.write_tls(&mut out).unwrap();
        }
        out
    }

    async fn write_raw(tcp: &TcpStream, bytes: &[u8]) {
        let mut written = 0;
        while written < bytes.len() {
            tcp.writable().await.unwrap();
            match tcp.try_write(&bytes[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// What `poll_read_ready` says within `limit`; `None` if it is still waiting.
    async fn ready_within(stream: &mut Stream, limit: Duration) -> Option<io::Result<()>> {
        let wait = std::future::poll_fn(|cx| stream.poll_read_ready(cx));
        tokio::time::timeout(limit, wait).await.ok()
    }

    async fn assert_ready(stream: &mut Stream) {
        let ready = ready_within(stream, SURELY).await;
        assert!(matches!(ready, Some(Ok(()))), "{ready:?}");
    }

    async fn assert_failed(stream: &mut Stream) {
        let ready = ready_within(stream, SURELY).await;
        assert!(matches!(ready, Some(Err(_))), "{ready:?}");
    }

    async fn assert_waiting(stream: &mut Stream, why: &str) {
        let ready = ready_within(stream, A_WHILE).await;
        assert!(ready.is_none(), "{why}: {ready:?}");
    }

    #[tokio::test]
    async fn a_record_is_ready_only_once_whole() {
        let (mut stream, tcp, mut session) = tls_pair().await;
        assert_waiting(&mut stream, "ready on the server's own session tickets").await;
        let query = records(&mut session, b"hello");
        write_raw(&tcp, &query[..3]).await;
        assert_waiting(&mut stream, "ready on 3 bytes").await;
        write_raw(&tcp, &query[3..10]).await;
        assert_waiting(&mut stream, "ready on 10 bytes").await;
        write_raw(&tcp, &query[10..]).await;
        assert_ready(&mut stream).await;
        let mut read = [0u8; 5];
        stream.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"hello");
        assert_waiting(&mut stream, "ready with everything read").await;
    }

    #[tokio::test]
    async fn bytes_left_in_the_session_are_ready_at_once() {
        let (mut stream, tcp, mut session) = tls_pair().await;
        let mut two = records(&mut session, b"abc");
        two.extend(records(&mut session, b"def"));
        write_raw(&tcp, &two).await;
        assert_ready(&mut stream).await;
        let mut read = [0u8; 2];
        stream.read_exact(&mut read).await.unwrap();
        // The socket has nothing more; the session does.
        assert_ready(&mut stream).await;
        let mut rest = [0u8; 4];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"cdef");
        assert_waiting(&mut stream, "ready with everything read").await;
    }

    #[tokio::test]
    async fn a_key_update_is_not_ready_and_is_answered() {
        let (mut stream, tcp, mut session) = tls_pair().await;
        session.refresh_traffic_keys().unwrap();
        write_raw(&tcp, &pending_records(&mut session)).await;
        assert_waiting(&mut stream, "ready on a key update").await;
        let big = vec![7u8; 40_000];
        for piece in records(&mut session, &big).chunks(1000) {
            write_raw(&tcp, piece).await;
        }
        assert_ready(&mut stream).await;
        let mut got = vec![0u8; big.len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
        // The answer goes out under the server's new keys, which the client takes.
        stream.write_all(b"pong").await.unwrap();
        stream.flush().await.unwrap();
        let mut plain = Vec::new();
        let mut raw = vec![0u8; 4096];
        while plain.len() < 4 {
            tcp.readable().await.unwrap();
            let n = match tcp.try_read(&mut raw) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            };
            assert!(n > 0, "the server closed");
            session.read_tls(&mut &raw[..n]).unwrap();
            session.process_new_packets().unwrap();
            let mut some = [0u8; 64];
            if let Ok(k) = std::io::Read::read(&mut session.reader(), &mut some) {
                plain.extend_from_slice(&some[..k]);
            }
        }
        assert_eq!(plain, b"pong");
    }

    /// A record that is not one (an application-data header, then bytes that
    /// decrypt to nothing).
    const BAD_RECORD: [u8; 25] = [
        23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    ];

    #[tokio::test]
    async fn an_error_met_after_bytes_read_is_not_waited_on() {
        let (mut stream, tcp, mut session) = tls_pair().await;
        write_raw(&tcp, &records(&mut session, b"abc")).await;
        assert_ready(&mut stream).await;
        write_raw(&tcp, &BAD_RECORD).await;
        tokio::time::sleep(A_WHILE).await;
        // tokio-rustls returns the bytes and keeps the error for its next read.
        let mut read = [0u8; 100];
        assert_eq!(stream.read(&mut read).await.unwrap(), 3);
        assert_failed(&mut stream).await;
    }

    #[tokio::test]
    async fn close_notify_end_of_stream_and_garbage_end_the_wait() {
        let (mut stream, tcp, mut session) = tls_pair().await;
        session.send_close_notify();
        write_raw(&tcp, &pending_records(&mut session)).await;
        assert_ready(&mut stream).await;
        let mut read = [0u8; 5];
        assert_eq!(stream.read(&mut read).await.unwrap(), 0);

        let (mut stream, tcp, _session) = tls_pair().await;
        // What the server sent (its session tickets) is read first: a socket
        // closed with unread bytes is reset, not ended.
        tokio::time::sleep(A_WHILE).await;
        let _ = tcp.try_read(&mut [0u8; 16 * 1024]);
        drop(tcp);
        assert_ready(&mut stream).await;
        let eof = stream.read(&mut read).await.unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);

        let (mut stream, tcp, _session) = tls_pair().await;
        write_raw(&tcp, &BAD_RECORD).await;
        assert_failed(&mut stream).await;
    }
}
