//! The pooler's Unix socket file, `.s.PGSQL.<port>` in the configured directory
//! as Postgres and PgBouncer name theirs (so `psql -h DIR -p PORT` finds it):
//! binding it, taking over a stale file a process that died left behind, its
//! permissions, and removing it when the pooler stops.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest path a Unix socket may have on Linux (`sun_path` holds 108 bytes
/// with the NUL; other systems allow less, and their bind says so).
pub const MAX_PATH_LEN: usize = 107;

/// The socket file's path for a pooler listening on `port`.
pub fn path_in(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// A bound socket file; dropping it removes the file (if it is still the one
/// bound here). Its listening socket is handed out by [`SocketFile::bind`].
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// The bound file's device and inode, to recognise it at removal.
    id: (u64, u64),
    /// `.s.PGSQL.PORT.lock`, locked for the pooler's life: two poolers cannot
    /// both decide the file is theirs. The lock file stays (empty) when the
    /// lock goes: removing it could let two processes lock two files.
    _lock: std::fs::File,
}

/// Why the socket file could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    #[error("{path} is in use by another process")]
    InUse { path: PathBuf },
    #[error("cannot tell whether {path} is in use ({source}); not replacing it")]
    Unknown { path: PathBuf, source: io::Error },
    #[error("{path} exists and is not a socket; not removing it")]
    NotASocket { path: PathBuf },
    #[error("cannot bind {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// How long a socket already there may take to answer before it counts as live.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl SocketFile {
    /// Binds `path` with permissions `mode`. A socket file already there is
    /// replaced only when connecting to it is refused (its process is gone);
    /// one that answers, or that cannot be probed, is left alone. The socket is
    /// bound under a temporary name, given its permissions and then renamed into
    /// place, so no client sees it with other permissions. The listening socket
    /// comes back non-blocking.
    pub async fn bind(
        path: &Path,
        mode: u32,
    ) -> Result<(Self, std::os::unix::net::UnixListener), SocketFileError> {
        let io_err = |source| SocketFileError::Io {
            path: path.to_owned(),
            source,
        };
        let lock = lock(path).map_err(|e| match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => SocketFileError::InUse {
                path: path.to_owned(),
            },
            _ => io_err(e),
        })?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketFileError::NotASocket {
                    path: path.to_owned(),
                })
            }
            Ok(_) => probe(path).await?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        match std::fs::remove_file(&temporary) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(e)),
            _ => {}
        }
        let listener = std::os::unix::net::UnixListener::bind(&temporary).map_err(io_err)?;
        let placed = listener
            .set_nonblocking(true)
            .and_then(|()| {
                std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
            })
            .and_then(|()| std::fs::rename(&temporary, path))
            .and_then(|()| std::fs::symlink_metadata(path));
        let meta = match placed {
            Ok(meta) => meta,
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(io_err(e));
            }
        };
        let file = Self {
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
            _lock: lock,
        };
        Ok((file, listener))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Locks `path`.lock (made if missing) without waiting: `EWOULDBLOCK` when
/// another process holds it.
fn lock(path: &Path) -> io::Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(PathBuf::from(name))?;
    // SAFETY: `flock` on a descriptor `file` owns for the whole call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Whether a socket file already at `path` may be replaced: only when
/// connecting is refused, which says no process listens on it. A connection
/// made, a full backlog, a denied permission or no answer in time all say
/// someone may.
async fn probe(path: &Path) -> Result<(), SocketFileError> {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        // Gone since we looked: nothing to replace.
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => Err(SocketFileError::Unknown {
            path: path.to_owned(),
            source: e,
        }),
        Ok(_) | Err(_) => Err(SocketFileError::InUse {
            path: path.to_owned(),
        }),
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Only the file bound here: never whatever replaced it.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tidepool-sock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_stale_file_is_taken_over_a_live_one_is_not() {
        let dir = temp_dir("stale");
        let path = path_in(&dir, 6432);
        // A socket file whose listener is gone: nothing answers on it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "std leaves the file behind");
        let first = SocketFile::bind(&path, 0o700).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Live: a second bind is refused and the first keeps its file.
        assert!(matches!(
            SocketFile::bind(&path, 0o700).await,
            Err(SocketFileError::InUse { .. })
        ));
        assert!(path.exists());
        drop(first);
        assert!(!path.exists(), "removed when dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn another_servers_socket_is_left_alone_even_when_it_cannot_answer() {
        let dir = temp_dir("busy");
        let path = path_in(&dir, 6432);
        // Another process's listener that accepts nothing: its backlog fills
        // up, and a connection attempt would wait.
        let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let mut queued = Vec::new();
        for _ in 0..10_000 {
            let connect = tokio::net::UnixStream::connect(&path);
            match tokio::time::timeout(std::time::Duration::from_millis(200), connect).await {
                Ok(Ok(c)) => queued.push(c),
                _ => break,
            }
        }
        let started = std::time::Instant::now();
        assert!(matches!(
            SocketFile::bind(&path, 0o700).await,
            Err(SocketFileError::InUse { .. })
        ));
        assert!(
            started.elapsed() < PROBE_TIMEOUT * 2,
            "the probe waited too long"
        );
        // Its file is still there, and still its.
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        drop(queued);
        drop(other);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = temp_dir("regular");
        let path = path_in(&dir, 6432);
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            SocketFile::bind(&path, 0o777).await,
            Err(SocketFileError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_put_in_its_place_is_not_removed() {
        let dir = temp_dir("replaced");
        let path = path_in(&dir, 6432);
        let file = SocketFile::bind(&path, 0o777).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(file);
        assert!(path.exists(), "another process's socket was removed");
        drop(other);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
