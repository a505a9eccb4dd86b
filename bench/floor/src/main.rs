//! The floor of a pooler's CPU cost: a forwarder that gives every client its own
//! upstream connection and moves bytes between the two without looking at them.
//! No protocol, no pool, no allocation after a connection opens, one thread.
//! Whatever CPU it spends per transaction, a pooler that reads and writes the same
//! bytes through the same kernel interface spends at least that much.
//!
//! ```text
//! floor epoll  LISTEN_ADDR UPSTREAM_ADDR   level-triggered epoll, one recv per readiness
//! floor uring  LISTEN_ADDR UPSTREAM_ADDR   io_uring (single issuer, deferred task
//!                                          work), one io_uring_enter per batch
//! ```
//!
//! It runs until it is killed. A benchmark tool, not part of Tidepool: see
//! bench/floor.sh.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

/// Bytes read at once, per direction.
const BUF: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let run = match args.get(1).map(String::as_str) {
        Some("epoll") => epoll::run,
        Some("uring") => uring::run,
        _ => usage(),
    };
    let (Some(listen), Some(upstream)) = (args.get(2), args.get(3)) else {
        usage()
    };
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => fail(&format!("cannot listen on {listen}: {e}")),
    };
    if let Err(e) = run(listener, upstream) {
        fail(&e.to_string());
    }
}

fn usage() -> ! {
    fail("usage: floor epoll|uring LISTEN_ADDR UPSTREAM_ADDR")
}

fn fail(msg: &str) -> ! {
    eprintln!("floor: {msg}");
    std::process::exit(2)
}

/// Opens the upstream connection for a new client; both get TCP_NODELAY, as
/// every pooler sets it.
fn open_upstream(client: RawFd, upstream: &str) -> io::Result<RawFd> {
    let server = TcpStream::connect(upstream)?;
    server.set_nodelay(true)?;
    set_nodelay(client)?;
    Ok(server.into_raw_fd())
}

fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid option pointer and length for an int option.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(r)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this program owns.
    let r = unsafe {
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        )
    };
    check(r)
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn close_pair(a: RawFd, b: RawFd) {
    // SAFETY: both descriptors belong to this program and are forgotten here.
    unsafe {
        libc::close(a);
        libc::close(b);
    }
}

mod epoll {
    use super::*;

    /// The epoll data of the listening socket; connections use their descriptor.
    const LISTENER: u64 = u64::MAX;

    pub fn run(listener: TcpListener, upstream: &str) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        // SAFETY: plain syscalls on descriptors this program owns; buffers outlive
        // the calls that fill them.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        check(ep)?;
        let watch = |fd: RawFd, data: u64| {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: data,
            };
            check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) })
        };
        watch(listener.as_raw_fd(), LISTENER)?;
        // peer[fd] is the other end of fd's pair, or -1.
        let mut peer: Vec<RawFd> = Vec::new();
        let mut buf = vec![0u8; BUF];
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        loop {
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                if ev.u64 == LISTENER {
                    while let Ok((client, _)) = listener.accept() {
                        let client = client.into_raw_fd();
                        let server = open_upstream(client, upstream)?;
                        set_nonblocking(client)?;
                        set_nonblocking(server)?;
                        let top = client.max(server) as usize;
                        if peer.len() <= top {
                            peer.resize(top + 1, -1);
                        }
                        peer[client as usize] = server;
                        peer[server as usize] = client;
                        watch(client, client as u64)?;
                        watch(server, server as u64)?;
                    }
                    continue;
                }
                let fd = ev.u64 as RawFd;
                let other = peer[fd as usize];
                if other < 0 {
                    continue;
                }
                // One recv per readiness: level-triggered epoll reports again
                // if more is waiting.
                let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), BUF, 0) };
                let keep = if r > 0 {
                    send_all(other, &buf[..r as usize])
                } else {
                    r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
                };
                if !keep {
                    peer[fd as usize] = -1;
                    peer[other as usize] = -1;
                    close_pair(fd, other);
                }
            }
        }
    }

    /// Writes all of `bytes`, waiting in poll when the socket is full (never
    /// for the small messages pgbench makes).
    fn send_all(fd: RawFd, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            // SAFETY: `bytes` is valid for its length.
            let r =
                unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
            if r > 0 {
                bytes = &bytes[r as usize..];
            } else if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                unsafe { libc::poll(&mut p, 1, 1000) };
            } else {
                return false;
            }
        }
        true
    }
}

mod uring {
    use super::*;
    use io_uring::{opcode, squeue, types, IoUring};

    /// The user data of the accept; a leg's is its index. Legs 2k and 2k+1 are
    /// the two directions of one client.
    const ACCEPT: u64 = u64::MAX;

    /// One direction of a pair: bytes received from `from`, being sent to `to`.
    struct Leg {
        from: RawFd,
        to: RawFd,
        buf: Box<[u8]>,
        /// Bytes received, and how many of them are sent; `len == 0` while a
        /// recv is in flight.
        len: usize,
        sent: usize,
        closed: bool,
    }

    impl Leg {
        fn recv(&mut self, index: usize) -> squeue::Entry {
            self.len = 0;
            self.sent = 0;
            opcode::Recv::new(types::Fd(self.from), self.buf.as_mut_ptr(), BUF as u32)
                .build()
                .user_data(index as u64)
        }

        fn send(&self, index: usize) -> squeue::Entry {
            // SAFETY (of the pointer): `sent < len <= BUF`, inside the buffer.
            let rest = unsafe { self.buf.as_ptr().add(self.sent) };
            opcode::Send::new(types::Fd(self.to), rest, (self.len - self.sent) as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(index as u64)
        }
    }

    pub fn run(listener: TcpListener, upstream: &str) -> io::Result<()> {
        let lfd = listener.as_raw_fd();
        let mut ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(4096)
            .map_err(|e| io::Error::new(e.kind(), format!("io_uring (needs Linux 6.1): {e}")))?;
        let accept = || {
            opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
                .build()
                .user_data(ACCEPT)
        };
        // Boxed legs: their buffers stay put while the vector grows.
        let mut legs: Vec<Leg> = Vec::new();
        let mut next: Vec<squeue::Entry> = vec![accept()];
        let mut done: Vec<(u64, i32)> = Vec::new();
        loop {
            {
                let mut sq = ring.submission();
                for entry in next.drain(..) {
                    // SAFETY: every buffer an entry points into lives in `legs`
                    // for the rest of the program.
                    if unsafe { sq.push(&entry) }.is_err() {
                        return Err(io::Error::other("submission queue full"));
                    }
                }
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            done.extend(
                ring.completion()
                    .map(|c: io_uring::cqueue::Entry| (c.user_data(), c.result())),
            );
            for (data, res) in done.drain(..) {
                if data == ACCEPT {
                    if res >= 0 {
                        let client = res;
                        let server = open_upstream(client, upstream)?;
                        for (from, to) in [(client, server), (server, client)] {
                            let index = legs.len();
                            let mut leg = Leg {
                                from,
                                to,
                                buf: vec![0; BUF].into(),
                                len: 0,
                                sent: 0,
                                closed: false,
                            };
                            next.push(leg.recv(index));
                            legs.push(leg);
                        }
                    }
                    next.push(accept());
                    continue;
                }
                let index = data as usize;
                if legs[index].closed {
                    continue;
                }
                if res <= 0 {
                    // End of stream or an error: close both directions. The
                    // other leg's recv completes with an error and is ignored.
                    let (from, to) = (legs[index].from, legs[index].to);
                    legs[index].closed = true;
                    legs[index ^ 1].closed = true;
                    // SAFETY: descriptors of this pair; closed once, below,
                    // after both legs are marked.
                    unsafe {
                        libc::shutdown(from, libc::SHUT_RDWR);
                        libc::shutdown(to, libc::SHUT_RDWR);
                    }
                    close_pair(from, to);
                    continue;
                }
                let leg = &mut legs[index];
                if leg.len == 0 {
                    leg.len = res as usize;
                } else {
                    leg.sent += res as usize;
                }
                if leg.sent < leg.len {
                    next.push(leg.send(index));
                } else {
                    next.push(leg.recv(index));
                }
            }
        }
    }
}
