// SPDX-License-Identifier: LGPL-2.1-or-later
//! The one error type of the program: everything that can stop it.
//!
//! Failures on a client's side never become an `Error`: they are answered
//! with a QMP error object or end that client's connection.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why the proxy could not start or had to stop.
#[derive(Debug)]
pub enum Error {
    /// libvirt could not open the connection.
    Connect {
        uri: Option<String>,
        source: virt::error::Error,
    },
    /// The connection is to a driver other than QEMU's.
    NotQemu { uri: String, driver: String },
    /// No domain has this ID, UUID or name.
    DomainNotFound {
        domain: String,
        uri: String,
        reason: String,
    },
    /// The domain exists but QEMU is not running it.
    NotRunning { domain: String },
    /// A libvirt call needed to start serving failed.
    Libvirt {
        what: String,
        source: virt::error::Error,
    },
    /// The guest answered something that is not QMP.
    Guest { domain: String, what: String },
    /// A live server already listens on the socket path.
    SocketInUse { path: PathBuf },
    /// The socket path holds something that is not a socket: left alone.
    PathTaken { path: PathBuf, kind: &'static str },
    /// Another process held the lock on the socket's directory too long.
    DirectoryBusy {
        dir: PathBuf,
        waited: std::time::Duration,
    },
    /// The socket's directory could not be locked.
    DirectoryLock { dir: PathBuf, source: io::Error },
    /// The socket could not be checked, created or listened on.
    Socket { path: PathBuf, source: io::Error },
    /// The socket's group or mode could not be set.
    SocketGroup {
        path: PathBuf,
        gid: u32,
        source: io::Error,
    },
    /// No group has this name, or the number cannot be a group id.
    UnknownGroup { group: String },
    /// The group database could not be read.
    GroupLookup { group: String, source: io::Error },
    /// An operating system call failed.
    Io {
        what: &'static str,
        source: io::Error,
    },
    /// Options that cannot go together, found only once the environment is
    /// known (sockets passed by systemd).
    Usage(String),
    /// A thread could not be started.
    Thread { name: String, source: io::Error },
    /// libvirt went away and could not be reached again in time.
    ConnectionLost {
        uri: String,
        timeout: std::time::Duration,
    },
    /// A LISTEN_* variable from the service manager is not a number.
    ListenEnv {
        variable: &'static str,
        value: String,
    },
    /// A passed socket has a name that says no part it could play.
    PassedName { fd: i32, name: String },
    /// Two passed sockets claim the same part.
    PassedTwice {
        role: &'static str,
        first: (i32, String),
        second: (i32, String),
    },
    /// A passed descriptor is not a listening UNIX stream socket on a path.
    PassedSocket {
        fd: i32,
        name: String,
        problem: &'static str,
        source: Option<io::Error>,
    },
    /// The command line names another path than the passed socket's.
    PassedPath {
        given: PathBuf,
        bound: PathBuf,
        name: String,
    },
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { uri: Some(uri), source } => {
                write!(f, "cannot connect to '{uri}': {}", source.message())
            }
            Error::Connect { uri: None, source } => write!(
                f,
                "cannot connect to libvirt's default URI: {} (choose one with -c)",
                source.message()
            ),
            Error::NotQemu { uri, driver } => write!(
                f,
                "connection '{uri}' uses the {driver} driver; QMP needs QEMU (try -c qemu:///system)"
            ),
            Error::DomainNotFound { domain, uri, reason } => {
                write!(f, "domain '{domain}' not found on '{uri}': {reason}")
            }
            Error::NotRunning { domain } => write!(f, "domain '{domain}' is not running"),
            Error::Libvirt { what, source } => write!(f, "{what}: {}", source.message()),
            Error::Guest { domain, what } => write!(f, "domain '{domain}': {what}"),
            Error::SocketInUse { path } => write!(
                f,
                "'{}' is already in use: another server listens on it",
                path.display()
            ),
            Error::PathTaken { path, kind } => write!(
                f,
                "'{}' exists and is a {kind}, not a socket; refusing to replace it",
                path.display()
            ),
            Error::DirectoryBusy { dir, waited } => write!(
                f,
                "cannot lock '{}' to create or remove the socket: another process held it for {} s",
                dir.display(),
                waited.as_secs()
            ),
            Error::DirectoryLock { dir, source } => write!(
                f,
                "cannot lock '{}' to create or remove the socket: {source}",
                dir.display()
            ),
            Error::Socket { path, source } => {
                write!(f, "cannot listen on '{}': {source}", path.display())
            }
            Error::SocketGroup { path, gid, source } => write!(
                f,
                "cannot give '{}' group {gid} and mode 0660: {source} \
                 (the proxy must run as root or as a member of the group)",
                path.display()
            ),
            Error::UnknownGroup { group } => write!(f, "unknown group '{group}'"),
            Error::GroupLookup { group, source } => {
                write!(f, "cannot look up group '{group}': {source}")
            }
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Usage(problem) => write!(f, "{problem}"),
            Error::Thread { name, source } => write!(f, "cannot start thread '{name}': {source}"),
            Error::ConnectionLost { uri, timeout } => write!(
                f,
                "lost the libvirt connection to '{uri}' and could not reconnect within {} s",
                timeout.as_secs()
            ),
            Error::ListenEnv { variable, value } => write!(
                f,
                "invalid {variable}='{value}' from the service manager: not a number"
            ),
            Error::PassedName { fd, name } => write!(
                f,
                "the service manager passed descriptor {fd} named '{name}'; \
                 name the sockets 'qmp' and 'qmp-ro' with FileDescriptorName="
            ),
            Error::PassedTwice {
                role,
                first,
                second,
            } => write!(
                f,
                "the service manager passed two {role} sockets, descriptors {} ('{}') and {} ('{}'); \
                 name them 'qmp' and 'qmp-ro' with FileDescriptorName=",
                first.0, first.1, second.0, second.1
            ),
            Error::PassedSocket {
                fd,
                name,
                problem,
                source,
            } => {
                write!(f, "descriptor {fd} ('{name}') from the service manager {problem}")?;
                match source {
                    Some(source) => write!(f, ": {source}"),
                    None => Ok(()),
                }
            }
            Error::PassedPath { given, bound, name } => write!(
                f,
                "'{}' is not the socket the service manager passed: '{name}' is bound to '{}'",
                given.display(),
                bound.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } | Error::Libvirt { source, .. } => Some(source),
            Error::PassedSocket {
                source: Some(source),
                ..
            } => Some(source),
            Error::Socket { source, .. }
            | Error::Io { source, .. }
            | Error::Thread { source, .. }
            | Error::GroupLookup { source, .. }
            | Error::SocketGroup { source, .. }
            | Error::DirectoryLock { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T> = std::result::Result<T, Error>;
