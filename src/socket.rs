// SPDX-License-Identifier: LGPL-2.1-or-later
//! The listening socket file: created safely, removed only if still ours.
//!
//! The proxy never deletes a file that is not its own socket: an existing
//! path is replaced only when it is a socket nobody listens on.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ffi;

/// The listening socket; its file is removed on drop if it is still the
/// one this process made (same device and inode).
pub struct Socket {
    pub listener: UnixListener,
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl Socket {
    /// Listens at `path` with mode 0600, replacing a stale socket there.
    pub fn create(path: &Path) -> Result<Socket> {
        let failed = |source| Error::Socket {
            path: path.to_owned(),
            source,
        };
        match fs::symlink_metadata(path) {
            Ok(existing) if existing.file_type().is_socket() => remove_stale(path)?,
            Ok(existing) => {
                return Err(Error::PathTaken {
                    path: path.to_owned(),
                    kind: describe(&existing.file_type()),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
        let listener = ffi::listen_private(path).map_err(failed)?;
        let created = fs::symlink_metadata(path).map_err(failed)?;
        Ok(Socket {
            listener,
            path: path.to_owned(),
            device: created.dev(),
            inode: created.ino(),
        })
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let still_ours = fs::symlink_metadata(&self.path).is_ok_and(|now| {
            now.file_type().is_socket() && now.dev() == self.device && now.ino() == self.inode
        });
        if still_ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes a socket file nobody listens on; refuses a live one.
fn remove_stale(path: &Path) -> Result<()> {
    match UnixStream::connect(path) {
        Ok(_) => Err(Error::SocketInUse {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(|source| Error::Socket {
                path: path.to_owned(),
                source,
            })
        }
        Err(source) => Err(Error::Socket {
            path: path.to_owned(),
            source,
        }),
    }
}

fn describe(kind: &fs::FileType) -> &'static str {
    if kind.is_file() {
        "regular file"
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_fifo() {
        "named pipe"
    } else if kind.is_char_device() || kind.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vqqp-socket-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn socket_is_private_whatever_the_umask() {
        let dir = scratch("mode");
        let path = dir.join("s");
        let socket = Socket::create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(socket);
        assert!(!path.exists(), "socket file left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn regular_file_is_refused_and_kept() {
        let dir = scratch("file");
        let path = dir.join("s");
        fs::write(&path, b"precious").unwrap();
        let err = Socket::create(&path)
            .err()
            .expect("a regular file must be refused");
        assert!(err.to_string().contains("regular file"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn directory_and_symlink_are_refused() {
        let dir = scratch("dir");
        let sub = dir.join("d");
        fs::create_dir(&sub).unwrap();
        assert!(Socket::create(&sub)
            .err()
            .unwrap()
            .to_string()
            .contains("directory"));
        let link = dir.join("l");
        std::os::unix::fs::symlink(dir.join("nowhere"), &link).unwrap();
        assert!(Socket::create(&link)
            .err()
            .unwrap()
            .to_string()
            .contains("symbolic link"));
        assert!(fs::symlink_metadata(&link).is_ok(), "symlink removed");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = scratch("stale");
        let path = dir.join("s");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let ours = Socket::create(&path).expect("a stale socket is replaced");
        let err = Socket::create(&path)
            .err()
            .expect("a live socket is refused");
        assert!(err.to_string().contains("already in use"), "{err}");
        drop(ours);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_replaced_socket_file_is_not_removed() {
        let dir = scratch("replaced");
        let path = dir.join("s");
        let ours = Socket::create(&path).unwrap();
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"someone else's").unwrap();
        drop(ours);
        assert_eq!(fs::read(&path).unwrap(), b"someone else's");
        fs::remove_dir_all(dir).unwrap();
    }
}
