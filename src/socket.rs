// SPDX-License-Identifier: LGPL-2.1-or-later
//! The listening socket file: created safely, removed only if still ours.
//!
//! The proxy never deletes a file that is not its own socket: an existing
//! path is replaced only when it is a socket nobody listens on. Creation
//! and removal hold an flock(2) on the socket's directory, so that two
//! proxies on one path never both take the same socket for stale; the
//! socket listens under a temporary name before it is linked into place, so
//! that nobody (locking or not) ever sees it bound but not yet listening,
//! nor with another mode or group than the one asked for.

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ffi;

pub use crate::ffi::Credentials;

/// How long creation and removal wait for the directory's lock: any user
/// can lock a shared directory such as /tmp, so never for ever.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);

/// How often a held lock is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// The room for a socket path in `sockaddr_un`, its NUL excluded.
const SUN_PATH_MAX: usize = 107;

/// Who may connect to a socket, besides root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Mode 0600: the proxy's own user only.
    Private,
    /// Mode 0660 and this group id: the group's members too.
    Group(u32),
}

/// The listening socket; its file is removed on drop if it is still the
/// one this process made (same device and inode). A socket the service
/// manager passed is never removed nor changed: it outlives the process.
pub struct Socket {
    pub listener: UnixListener,
    path: PathBuf,
    device: u64,
    inode: u64,
    /// Whether this process made the file, and so removes it.
    owned: bool,
}

impl Socket {
    /// Listens at `path` with mode 0600, replacing a stale socket there.
    pub fn create(path: &Path) -> Result<Socket> {
        Socket::create_with(path, Access::Private)
    }

    /// Listens at `path` with the mode and group of `access`, replacing a
    /// stale socket there.
    pub fn create_with(path: &Path, access: Access) -> Result<Socket> {
        let failed = |source| Error::Socket {
            path: path.to_owned(),
            source,
        };
        let _lock = DirectoryLock::take(path)?;
        match fs::symlink_metadata(path) {
            Ok(existing) if existing.file_type().is_socket() => remove_stale(path)?,
            Ok(existing) => return Err(taken(path, &existing)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
        let (listener, created) = match temporary_name(path) {
            Some(temporary) => listen_and_link(path, &temporary, access)?,
            None => listen_in_place(path, access)?,
        };
        Ok(Socket {
            listener,
            path: path.to_owned(),
            device: created.dev(),
            inode: created.ino(),
            owned: true,
        })
    }

    /// Wraps `listener`, passed by the service manager already listening at
    /// `path`: its file is the socket unit's, never removed or changed here.
    pub fn passed(listener: UnixListener, path: &Path) -> Socket {
        Socket {
            listener,
            path: path.to_owned(),
            device: 0,
            inode: 0,
            owned: false,
        }
    }

    /// Whether the service manager passed this socket: shutdown(2) on it
    /// would break the manager's copy too (same open file), so wake its
    /// accept loop another way.
    pub fn is_passed(&self) -> bool {
        !self.owned
    }
}

impl Drop for Socket {
    /// Runs while `listener` is still open and under the directory's lock,
    /// so that no proxy starting meanwhile can replace the file between the
    /// check and the unlink.
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _lock = match DirectoryLock::take(&self.path) {
            Ok(lock) => lock,
            Err(e) => {
                // A stale socket left behind is replaced at the next start;
                // an unlink without the lock could remove a live one.
                warn!("{e}; leaving '{}' in place", self.path.display());
                return;
            }
        };
        let still_ours = fs::symlink_metadata(&self.path).is_ok_and(|now| {
            now.file_type().is_socket() && now.dev() == self.device && now.ino() == self.inode
        });
        if still_ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// An exclusive flock(2) on the directory that holds a socket path;
/// released when the descriptor closes. Unlike a lock file, it leaves
/// nothing behind.
struct DirectoryLock {
    _directory: File,
}

impl DirectoryLock {
    /// Locks the directory of `path`, waiting at most `LOCK_WAIT`.
    fn take(path: &Path) -> Result<DirectoryLock> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // std opens O_RDONLY | O_CLOEXEC, which a directory accepts.
        let directory = File::open(dir).map_err(|source| Error::Socket {
            path: path.to_owned(),
            source,
        })?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match ffi::try_lock_exclusive(&directory) {
                Ok(true) => {
                    return Ok(DirectoryLock {
                        _directory: directory,
                    })
                }
                Ok(false) if Instant::now() < deadline => thread::sleep(LOCK_RETRY),
                Ok(false) => {
                    return Err(Error::DirectoryBusy {
                        dir: dir.to_owned(),
                        waited: LOCK_WAIT,
                    })
                }
                Err(source) => {
                    return Err(Error::DirectoryLock {
                        dir: dir.to_owned(),
                        source,
                    })
                }
            }
        }
    }
}

/// A fresh name beside `path` for the socket to listen on before it is
/// linked into place; `None` when no such name fits in a socket address.
fn temporary_name(path: &Path) -> Option<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temporary = path.with_file_name(format!(".vqmp-{}-{n}", std::process::id()));
    (temporary.as_os_str().as_bytes().len() <= SUN_PATH_MAX).then_some(temporary)
}

/// Listens on `temporary` with the mode and group of `access`, then links
/// it to `path`, which must not exist; `temporary` is gone on return,
/// whatever happened.
fn listen_and_link(
    path: &Path,
    temporary: &Path,
    access: Access,
) -> Result<(UnixListener, fs::Metadata)> {
    let failed = |source| Error::Socket {
        path: path.to_owned(),
        source,
    };
    let name = TemporaryName(temporary);
    // Left by a killed proxy whose pid we now have: nobody else uses names
    // of our pid, and we hold the lock.
    name.remove();
    let listener = listen(temporary, access, path)?;
    let created = fs::symlink_metadata(temporary).map_err(failed)?;
    pause(path, Step::Listening);
    match fs::hard_link(temporary, path) {
        Ok(()) => Ok((listener, created)),
        // Somebody who does not take the lock got there first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(match fs::symlink_metadata(path) {
                Ok(there) if !there.file_type().is_socket() => taken(path, &there),
                _ => Error::SocketInUse {
                    path: path.to_owned(),
                },
            })
        }
        // A file system without hard links: binding in place is still safe
        // among proxies, which all hold the lock.
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            drop((name, listener));
            listen_in_place(path, access)
        }
        Err(e) => Err(failed(e)),
    }
}

/// Listens at `path` itself, with the mode and group of `access`.
///
/// For a group socket this leaves a moment open: from bind(2) until its
/// group and mode are set, the file is in place with mode 0600 and our own
/// group, so that a member of the group connecting then is refused. Access
/// is only ever narrower than asked for, never wider.
fn listen_in_place(path: &Path, access: Access) -> Result<(UnixListener, fs::Metadata)> {
    let failed = |source| Error::Socket {
        path: path.to_owned(),
        source,
    };
    let listener = listen(path, access, path).inspect_err(|e| {
        // Only once bind succeeded is the socket there ours (we hold the
        // lock); a failed bind may have met somebody else's.
        if matches!(e, Error::SocketGroup { .. })
            && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
        {
            let _ = fs::remove_file(path);
        }
    })?;
    let created = fs::symlink_metadata(path).map_err(failed)?;
    Ok((listener, created))
}

/// Listens at `at`, which must not exist, and gives the file the mode and
/// group of `access`; errors name `path`, the socket's real name.
fn listen(at: &Path, access: Access, path: &Path) -> Result<UnixListener> {
    let listener = ffi::listen_private(at).map_err(|source| Error::Socket {
        path: path.to_owned(),
        source,
    })?;
    if let Access::Group(gid) = access {
        ffi::share_with_group(at, gid).map_err(|source| Error::SocketGroup {
            path: path.to_owned(),
            gid,
            source,
        })?;
    }
    Ok(listener)
}

/// Who connected `stream` to one of our sockets: pid, uid and gid as the
/// kernel recorded them at connect(2), which the peer cannot forge.
pub fn peer_credentials(stream: &UnixStream) -> io::Result<Credentials> {
    ffi::peer_credentials(stream)
}

/// The group id that `group` names: a number is taken as the id itself,
/// anything else is looked up as a group name.
pub fn resolve_group(group: &str) -> Result<u32> {
    let unknown = || Error::UnknownGroup {
        group: group.to_owned(),
    };
    if let Ok(gid) = group.parse::<u32>() {
        // (gid_t)-1 tells chown(2) to leave the group alone: it is no group.
        return if gid == u32::MAX {
            Err(unknown())
        } else {
            Ok(gid)
        };
    }
    match ffi::group_id(group) {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => Err(unknown()),
        Err(source) => Err(Error::GroupLookup {
            group: group.to_owned(),
            source,
        }),
    }
}

/// Removes a temporary socket name on drop.
struct TemporaryName<'a>(&'a Path);

impl TemporaryName<'_> {
    /// Removes the name if it is a socket: never a file somebody else put there.
    fn remove(&self) {
        if fs::symlink_metadata(self.0).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = fs::remove_file(self.0);
        }
    }
}

impl Drop for TemporaryName<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes a socket file nobody listens on; refuses a live one. The probe
/// never blocks: a full listen backlog means somebody listens.
fn remove_stale(path: &Path) -> Result<()> {
    match ffi::connect_nonblocking(path) {
        Ok(_) => Err(Error::SocketInUse {
            path: path.to_owned(),
        }),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINPROGRESS)) => {
            Err(Error::SocketInUse {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            pause(path, Step::FoundStale);
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Socket {
                    path: path.to_owned(),
                    source: e,
                }),
                _ => Ok(()),
            }
        }
        // Gone since we looked: nothing to remove.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Socket {
            path: path.to_owned(),
            source,
        }),
    }
}

fn taken(path: &Path, existing: &fs::Metadata) -> Error {
    Error::PathTaken {
        path: path.to_owned(),
        kind: describe(&existing.file_type()),
    }
}

/// Where `Socket::create` can be held by a test, to widen a race window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The probe found a stale socket, not yet removed.
    FoundStale,
    /// Listening under the temporary name, not yet in place.
    Listening,
}

#[cfg(not(test))]
fn pause(_path: &Path, _step: Step) {}

#[cfg(test)]
fn pause(path: &Path, step: Step) {
    tests::run_hooks(path, step);
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
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex, PoisonError};

    type Hook = Arc<dyn Fn(&Path, Step) + Send + Sync>;

    /// Hooks of every test; each acts on its own test's path only.
    static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

    pub(super) fn run_hooks(path: &Path, step: Step) {
        let hooks = HOOKS.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for hook in hooks {
            hook(path, step);
        }
    }

    /// Holds the first `Socket::create` on `path` that reaches `step` until
    /// a second one on the same path has returned (at most 1 s, less than
    /// `LOCK_WAIT`, for the second may be waiting on the first), then
    /// returns both results, the first one's first.
    fn race(path: &Path, step: Step) -> [Result<Socket>; 2] {
        let (reached, first_reached) = mpsc::channel();
        let (second_done, done) = mpsc::channel::<()>();
        let (reached, done) = (Mutex::new(Some(reached)), Mutex::new(done));
        let watched = path.to_owned();
        HOOKS.lock().unwrap().push(Arc::new(move |at, now| {
            if at != watched || now != step {
                return;
            }
            let Some(reached) = reached.lock().unwrap().take() else {
                return;
            };
            reached.send(()).unwrap();
            let _ = done.lock().unwrap().recv_timeout(Duration::from_secs(1));
        }));
        let first = {
            let path = path.to_owned();
            thread::spawn(move || Socket::create(&path))
        };
        first_reached
            .recv_timeout(Duration::from_secs(5))
            .expect("the first creation reaches the step");
        let second = Socket::create(path);
        let _ = second_done.send(());
        [first.join().unwrap(), second]
    }

    /// Exactly one of `results` serves `path`, the other is refused as "in
    /// use", and the directory holds nothing else.
    fn one_serves(dir: &Path, path: &Path, results: [Result<Socket>; 2]) {
        let [first, second] = results;
        let (winner, loser) = match (first, second) {
            (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser),
            (Ok(_), Ok(_)) => panic!("both proxies listen on one path"),
            (Err(a), Err(b)) => panic!("neither proxy listens: {a}; {b}"),
        };
        assert!(loser.to_string().contains("already in use"), "{loser}");
        let there = fs::symlink_metadata(path).expect("the winner's socket is in place");
        assert_eq!(
            (there.dev(), there.ino()),
            (winner.device, winner.inode),
            "the file at the path is not the winner's socket"
        );
        UnixStream::connect(path).expect("the winner is reachable");
        let names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s"], "something left beside the socket");
        drop(winner);
        assert!(!path.exists(), "socket file left behind");
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vqmp-socket-{}-{name}", std::process::id()));
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
    fn a_passed_socket_is_left_as_it_is() {
        let dir = scratch("passed");
        let path = dir.join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let before = fs::symlink_metadata(&path).unwrap();
        let passed = Socket::passed(listener, &path);
        assert!(passed.is_passed());
        drop(passed);
        let after = fs::symlink_metadata(&path).expect("a passed socket is not removed");
        assert_eq!((after.ino(), after.mode()), (before.ino(), before.mode()));
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

    #[test]
    fn a_full_backlog_counts_as_in_use_without_waiting() {
        let dir = scratch("backlog");
        let path = dir.join("s");
        let live = UnixListener::bind(&path).unwrap();
        ffi::set_backlog(&live, 0).unwrap();
        let mut queued = Vec::new();
        while queued.len() < 64 {
            match ffi::connect_nonblocking(&path) {
                Ok(stream) => queued.push(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("cannot fill the backlog: {e}"),
            }
        }
        assert!(queued.len() < 64, "the backlog never filled");
        let (sender, outcome) = mpsc::channel();
        let probed = path.clone();
        thread::spawn(move || {
            let _ = sender.send(Socket::create(&probed).err().map(|e| e.to_string()));
        });
        let err = outcome
            .recv_timeout(Duration::from_secs(5))
            .expect("creation hangs on a socket whose backlog is full")
            .expect("a live socket is refused");
        assert!(err.contains("already in use"), "{err}");
        assert!(path.exists(), "the live socket was removed");
        drop((live, queued));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn two_proxies_on_a_stale_socket_one_serves() {
        let dir = scratch("race-stale");
        let path = dir.join("s");
        drop(UnixListener::bind(&path).unwrap());
        let results = race(&path, Step::FoundStale);
        one_serves(&dir, &path, results);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn two_proxies_on_an_empty_path_one_serves() {
        let dir = scratch("race-empty");
        let path = dir.join("s");
        let results = race(&path, Step::Listening);
        one_serves(&dir, &path, results);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_socket_put_in_place_meanwhile_is_kept() {
        let dir = scratch("meanwhile");
        let path = dir.join("s");
        let theirs = Arc::new(Mutex::new(None));
        let (watched, slot) = (path.clone(), Arc::clone(&theirs));
        // As a server that takes no lock, e.g. libvirt's Python proxy.
        HOOKS.lock().unwrap().push(Arc::new(move |at, step| {
            if at == watched && step == Step::Listening {
                *slot.lock().unwrap() = Some(UnixListener::bind(at).unwrap());
            }
        }));
        let before = Socket::create(&path).err().expect("the other server wins");
        assert!(matches!(before, Error::SocketInUse { .. }), "{before}");
        assert!(theirs.lock().unwrap().is_some());
        UnixStream::connect(&path).expect("their socket is still in place");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s"], "the temporary name was left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_held_directory_lock_is_waited_for_then_named() {
        let dir = scratch("locked");
        let path = dir.join("s");
        let holder = File::open(&dir).unwrap();
        assert!(ffi::try_lock_exclusive(&holder).unwrap());
        let err = Socket::create(&path).err().expect("a held lock refuses");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        assert!(!path.exists());
        drop(holder);
        let socket = Socket::create(&path).expect("a released lock is taken");
        drop(socket);
        assert!(!path.exists(), "socket file left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    /// A field of /proc/self/status, such as "Umask" or "Uid".
    fn status_field(name: &str) -> String {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let prefix = format!("{name}:");
        status
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
            .trim()
            .to_owned()
    }

    /// A group our process may give a file: any for root (4242 need not
    /// exist), else our own effective group.
    fn a_group_to_give() -> u32 {
        let effective = |name| {
            status_field(name)
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u32>()
                .unwrap()
        };
        if effective("Uid") == 0 {
            4242
        } else {
            effective("Gid")
        }
    }

    /// Asserts the mode bits and group of the file at `path`.
    fn assert_shared(path: &Path, gid: u32) {
        let there = fs::symlink_metadata(path).unwrap();
        assert!(
            there.file_type().is_socket(),
            "{} is no socket",
            path.display()
        );
        assert_eq!(there.mode() & 0o7777, 0o660, "mode of {}", path.display());
        assert_eq!(there.gid(), gid, "group of {}", path.display());
    }

    /// The variable that makes `sockets_in_a_child_with_umask` do its work:
    /// the umask the parent set, in octal.
    const CHILD_UMASK: &str = "VQMP_TEST_CHILD_UMASK";

    /// The umask is process-wide and tests run in parallel threads, so each
    /// umask is tried in a child: this test binary again, running only
    /// `sockets_in_a_child_with_umask`, started by a shell that sets it.
    #[test]
    fn modes_hold_whatever_the_umask() {
        let test = "socket::tests::sockets_in_a_child_with_umask";
        for umask in ["0022", "0077", "0000"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(r#"umask "$0" && exec "$@""#)
                .arg(umask)
                .arg(std::env::current_exe().unwrap())
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_UMASK, umask)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "with umask {umask} ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Does nothing unless run by `modes_hold_whatever_the_umask`.
    #[test]
    fn sockets_in_a_child_with_umask() {
        let Ok(umask) = std::env::var(CHILD_UMASK) else {
            return;
        };
        assert_eq!(
            status_field("Umask"),
            umask,
            "the shell did not set the umask"
        );
        let dir = scratch(&format!("umask-{umask}"));
        let (private, shared) = (dir.join("private"), dir.join("shared"));
        let gid = a_group_to_give();
        let private_socket = Socket::create(&private).unwrap();
        let shared_socket = Socket::create_with(&shared, Access::Group(gid)).unwrap();
        let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "private socket with umask {umask}");
        assert_shared(&shared, gid);
        UnixStream::connect(&shared).expect("the group socket listens");
        drop((private_socket, shared_socket));
        assert!(!private.exists(), "private socket file left behind");
        assert!(!shared.exists(), "group socket file left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn group_socket_has_its_mode_and_group_before_it_is_in_place() {
        let dir = scratch("group-early");
        let path = dir.join("s");
        let gid = a_group_to_give();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (watched, record) = (path.clone(), Arc::clone(&seen));
        HOOKS.lock().unwrap().push(Arc::new(move |at, step| {
            if at != watched || step != Step::Listening {
                return;
            }
            for entry in fs::read_dir(at.parent().unwrap()).unwrap() {
                let entry = entry.unwrap();
                let there = fs::symlink_metadata(entry.path()).unwrap();
                record.lock().unwrap().push((
                    entry.file_name(),
                    there.mode() & 0o7777,
                    there.gid(),
                ));
            }
        }));
        let socket = Socket::create_with(&path, Access::Group(gid)).unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "not exactly the temporary name: {seen:?}");
        let (name, mode, group) = &seen[0];
        assert!(name.to_string_lossy().starts_with(".vqmp-"), "{seen:?}");
        assert_eq!((*mode, *group), (0o660, gid), "before linking: {seen:?}");
        assert_shared(&path, gid);
        drop(socket);
        assert!(!path.exists(), "socket file left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn group_socket_bound_in_place_gets_its_mode_and_group() {
        let top = scratch("group-in-place");
        // A folder so long that "s" just fits in sun_path beside it and no
        // temporary name does.
        let dir = top.join("d".repeat(SUN_PATH_MAX - top.as_os_str().len() - 3));
        fs::create_dir(&dir).unwrap();
        let path = dir.join("s");
        assert_eq!(path.as_os_str().len(), SUN_PATH_MAX);
        assert!(temporary_name(&path).is_none());
        let gid = a_group_to_give();
        let socket = Socket::create_with(&path, Access::Group(gid)).unwrap();
        assert_shared(&path, gid);
        UnixStream::connect(&path).expect("the group socket listens");
        drop(socket);
        assert!(!path.exists(), "socket file left behind");
        fs::remove_dir_all(top).unwrap();
    }

    #[test]
    fn group_socket_keeps_the_rules_of_the_path() {
        let dir = scratch("group-rules");
        let path = dir.join("s");
        let gid = a_group_to_give();
        fs::write(&path, b"precious").unwrap();
        let err = Socket::create_with(&path, Access::Group(gid))
            .err()
            .expect("a regular file must be refused");
        assert!(err.to_string().contains("regular file"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
        fs::remove_file(&path).unwrap();
        drop(UnixListener::bind(&path).unwrap());
        let ours = Socket::create_with(&path, Access::Group(gid)).expect("stale is replaced");
        let err = Socket::create_with(&path, Access::Group(gid))
            .err()
            .expect("a live socket is refused");
        assert!(matches!(err, Error::SocketInUse { .. }), "{err}");
        assert_shared(&path, gid);
        drop(ours);
        assert!(!path.exists(), "socket file left behind");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_group_that_cannot_be_given_fails_and_leaves_nothing() {
        let uid = status_field("Uid");
        if uid.split_whitespace().nth(1) == Some("0") {
            // Root may give any group: nothing to refuse.
            return;
        }
        let dir = scratch("group-refused");
        let path = dir.join("s");
        let err = Socket::create_with(&path, Access::Group(0))
            .err()
            .expect("a group we are not in is refused");
        assert!(matches!(err, Error::SocketGroup { gid: 0, .. }), "{err}");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert!(names.is_empty(), "left behind: {names:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn resolve_group_takes_a_name_or_a_number() {
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert_eq!(resolve_group("0").unwrap(), 0);
        // A number is an id as given, whether a group has it or not.
        assert_eq!(resolve_group("4242").unwrap(), 4242);
    }

    #[test]
    fn resolve_group_names_an_unknown_group() {
        let err = resolve_group("nosuch").expect_err("no group 'nosuch'");
        assert!(matches!(err, Error::UnknownGroup { .. }), "{err:?}");
        assert_eq!(err.to_string(), "unknown group 'nosuch'");
        assert_eq!(err.exit_code(), 1);
        let err = resolve_group("4294967295").expect_err("(gid_t)-1 is no group");
        assert_eq!(err.to_string(), "unknown group '4294967295'");
        assert!(resolve_group("").is_err());
    }
}
