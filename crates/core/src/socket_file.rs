//! The pooler's Unix socket file, `.s.PGSQL.<port>` in the configured directory
//! as Postgres and PgBouncer name theirs (so `psql -h DIR -p PORT` finds it):
//! binding it, taking over a stale file a process that died left behind, its
//! permissions, and removing it when the pooler stops.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest path a Unix socket may have (`sun_path` holds 108 bytes with the NUL).
pub const MAX_PATH_LEN: usize = 107;

/// The socket file's path for a pooler listening on `port`.
pub fn path_in(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// A bound socket file; dropping it removes the file.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
}

/// Why the socket file could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    #[error("{path} is in use by another process")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; not removing it")]
    NotASocket { path: PathBuf },
    #[error("cannot bind {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl SocketFile {
    /// Binds `path` with permissions `mode`. A socket file already there is
    /// taken over when nothing answers on it (its process is gone); one that
    /// answers is another live server's, and is left alone.
    pub fn bind(path: &Path, mode: u32) -> Result<Self, SocketFileError> {
        let io_err = |source| SocketFileError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketFileError::NotASocket {
                    path: path.to_owned(),
                })
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(SocketFileError::InUse {
                        path: path.to_owned(),
                    })
                }
                Err(_) => std::fs::remove_file(path).map_err(io_err)?,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
        // From here on the file is ours: dropping `file` removes it.
        let file = Self {
            path: path.to_owned(),
            listener: Some(listener),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket, non-blocking (once; `None` after).
    pub fn take_listener(&mut self) -> io::Result<Option<std::os::unix::net::UnixListener>> {
        let Some(listener) = self.listener.take() else {
            return Ok(None);
        };
        listener.set_nonblocking(true)?;
        Ok(Some(listener))
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Only a file that is still a socket: never whatever replaced it.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket()) {
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

    #[test]
    fn a_stale_file_is_taken_over_a_live_one_is_not() {
        let dir = temp_dir("stale");
        let path = path_in(&dir, 6432);
        // A socket file whose listener is gone: nothing answers on it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "std leaves the file behind");
        let first = SocketFile::bind(&path, 0o700).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Live: a second bind is refused and the first keeps its file.
        assert!(matches!(
            SocketFile::bind(&path, 0o700),
            Err(SocketFileError::InUse { .. })
        ));
        assert!(path.exists());
        drop(first);
        assert!(!path.exists(), "removed when dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = temp_dir("regular");
        let path = path_in(&dir, 6432);
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            SocketFile::bind(&path, 0o777),
            Err(SocketFileError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
