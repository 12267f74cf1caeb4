// SPDX-License-Identifier: LGPL-2.1-or-later
//! The service manager's protocols, by hand over std and without
//! libsystemd: sockets passed by socket activation (sd_listen_fds(3)),
//! readiness and status (sd_notify(3)), and whether stderr is the journal.
//!
//! The passed descriptors are taken here, through `ffi`, once; this module
//! creates no socket file and never touches a passed one's (`Socket::passed`
//! wraps a passed listener so that nothing else does either).

use std::env;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ffi;

/// The first descriptor the service manager passes (SD_LISTEN_FDS_START).
const FIRST_FD: RawFd = 3;

/// The main socket's name (FileDescriptorName= of its socket unit).
pub const MAIN_NAME: &str = "qmp";

/// The read-only socket's name.
pub const READ_ONLY_NAME: &str = "qmp-ro";

/// What sd_listen_fds_with_names(3) calls a descriptor passed without a name.
const UNNAMED: &str = "unknown";

/// The variables of socket activation, unset once read.
const LISTEN_VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// How long a notification may wait for room in the service manager's
/// queue: long enough that READY=1 is not lost to a busy PID 1, short
/// enough that a stuck one never stalls the proxy.
const NOTIFY_TIMEOUT: Duration = Duration::from_millis(500);

/// A listening socket the service manager passed.
#[derive(Debug)]
pub struct PassedSocket {
    pub listener: UnixListener,
    /// The descriptor number it came as, for messages.
    pub fd: RawFd,
    /// Its name in LISTEN_FDNAMES, `unknown` if it had none.
    pub name: String,
    /// The path it is bound to (getsockname).
    pub path: PathBuf,
}

/// The sockets the service manager passed, by the part they play.
#[derive(Debug, Default)]
pub struct Passed {
    /// Named `qmp`, or the only one without a name.
    pub main: Option<PassedSocket>,
    /// Named `qmp-ro`.
    pub read_only: Option<PassedSocket>,
}

impl Passed {
    /// Whether nothing was passed: the proxy creates its sockets itself.
    pub fn is_empty(&self) -> bool {
        self.main.is_none() && self.read_only.is_none()
    }
}

/// Which descriptor plays which part, before any is looked at.
#[derive(Debug, Default, PartialEq, Eq)]
struct Roles {
    main: Option<(RawFd, String)>,
    read_only: Option<(RawFd, String)>,
}

/// Takes the sockets the service manager passed to this process, if any,
/// and unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES whatever happens,
/// so that nothing we start inherits them.
///
/// Call it first thing, before any thread starts and before anything opens
/// a descriptor: `env::remove_var` is sound only while no other thread reads
/// the environment (libvirt's threads call getenv), and a descriptor opened
/// earlier could sit where a LISTEN_FDS that lies says a passed one is.
pub fn listen_fds() -> Result<Passed> {
    let [pid, fds, names] = LISTEN_VARIABLES.map(env::var_os);
    for variable in LISTEN_VARIABLES {
        env::remove_var(variable);
    }
    let roles = roles(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?;
    take(roles)
}

/// Reads the LISTEN_* values (sd_listen_fds_with_names(3)) into parts:
/// nothing unless LISTEN_PID is `our_pid`; names missing from
/// LISTEN_FDNAMES, or empty, are `unknown`.
fn roles(
    pid: Option<&OsStr>,
    fds: Option<&OsStr>,
    names: Option<&OsStr>,
    our_pid: u32,
) -> Result<Roles> {
    let mut roles = Roles::default();
    let Some(pid) = pid else {
        return Ok(roles);
    };
    // Meant for another process: one that exec'd us without unsetting them.
    if number("LISTEN_PID", pid)? != our_pid {
        return Ok(roles);
    }
    let count = match fds {
        Some(fds) => number("LISTEN_FDS", fds)?,
        None => 0,
    };
    let names = names.map(|n| n.to_string_lossy()).unwrap_or_default();
    let mut names = names.split(':');
    // Each turn fills a part or fails, so that a huge LISTEN_FDS ends the
    // loop at its third descriptor.
    for fd in (0..count).map(|i| FIRST_FD.saturating_add_unsigned(i)) {
        let name = match names.next() {
            Some(name) if !name.is_empty() => name,
            _ => UNNAMED,
        };
        let (slot, role) = match name {
            MAIN_NAME | UNNAMED => (&mut roles.main, "main"),
            READ_ONLY_NAME => (&mut roles.read_only, "read-only"),
            _ => {
                return Err(Error::PassedName {
                    fd,
                    name: name.to_owned(),
                })
            }
        };
        if let Some(first) = slot.take() {
            return Err(Error::PassedTwice {
                role,
                first,
                second: (fd, name.to_owned()),
            });
        }
        *slot = Some((fd, name.to_owned()));
    }
    Ok(roles)
}

/// A LISTEN_* value as a number.
fn number(variable: &'static str, value: &OsStr) -> Result<u32> {
    value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::ListenEnv {
            variable,
            value: value.to_string_lossy().into_owned(),
        })
}

/// Checks that every descriptor of `roles` is a listening UNIX stream
/// socket on a path, then takes them all.
fn take(roles: Roles) -> Result<Passed> {
    let mut checked = Vec::new();
    for (part, is_main) in [(roles.main, true), (roles.read_only, false)] {
        if let Some((fd, name)) = part {
            let path = check_socket(fd, &name)?;
            checked.push((fd, name, path, is_main));
        }
    }
    let mut passed = Passed::default();
    if checked.is_empty() {
        return Ok(passed);
    }
    let fds: Vec<RawFd> = checked.iter().map(|(fd, ..)| *fd).collect();
    let owned = ffi::take_passed(&fds).map_err(|source| Error::Io {
        what: "cannot take the sockets the service manager passed",
        source,
    })?;
    for ((fd, name, path, is_main), owned) in checked.into_iter().zip(owned) {
        let listener = UnixListener::from(owned);
        // The accept loops block, whatever mode the manager left it in.
        if let Err(source) = listener.set_nonblocking(false) {
            return Err(Error::PassedSocket {
                fd,
                name,
                problem: "cannot be made blocking",
                source: Some(source),
            });
        }
        let socket = Some(PassedSocket {
            listener,
            fd,
            name,
            path,
        });
        if is_main {
            passed.main = socket;
        } else {
            passed.read_only = socket;
        }
    }
    Ok(passed)
}

/// The path descriptor `fd` listens on, or why it cannot serve QMP.
fn check_socket(fd: RawFd, name: &str) -> Result<PathBuf> {
    let fail = |problem, source| Error::PassedSocket {
        fd,
        name: name.to_owned(),
        problem,
        source,
    };
    let info = ffi::socket_info(fd).map_err(|e| match e.raw_os_error() {
        Some(libc::EBADF) => fail("is not open", None),
        Some(libc::ENOTSOCK) => fail("is not a socket", None),
        _ => fail("cannot be inspected", Some(e)),
    })?;
    if !info.unix {
        return Err(fail(
            "is not a UNIX socket (ListenStream= must be a path)",
            None,
        ));
    }
    if !info.stream {
        return Err(fail(
            "is not a stream socket (use ListenStream=, not ListenDatagram= or ListenSequentialPacket=)",
            None,
        ));
    }
    if !info.listening {
        return Err(fail(
            "is a connection, not a listening socket (the socket unit needs Accept=no)",
            None,
        ));
    }
    info.path
        .ok_or_else(|| fail("is not bound to a path (abstract or unnamed)", None))
}

/// Checks that `given`, a path from the command line, is the one `passed`
/// is bound to.
pub fn check_path(given: &Path, passed: &PassedSocket) -> Result<()> {
    if same_socket_path(given, &passed.path) {
        Ok(())
    } else {
        Err(Error::PassedPath {
            given: given.to_owned(),
            bound: passed.path.clone(),
            name: passed.name.clone(),
        })
    }
}

/// Whether `given` and `bound` name the same socket file, once symbolic
/// links in their directories are resolved (/var/run is /run on Debian).
/// The file names are compared as they are: the socket itself is no link.
pub fn same_socket_path(given: &Path, bound: &Path) -> bool {
    if given == bound {
        return true;
    }
    match (resolve_directory(given), resolve_directory(bound)) {
        (Some(given), Some(bound)) => given == bound,
        _ => false,
    }
}

/// `path` with its directory part canonicalized.
fn resolve_directory(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(name))
}

/// The process's one notifier, taken from the environment at its first use.
static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// The notifier of this process: `run` takes it first thing, while no
/// other thread runs (it unsets NOTIFY_SOCKET); everybody else reports
/// through it.
pub fn notifier() -> &'static Notifier {
    NOTIFIER.get_or_init(Notifier::from_env)
}

/// Tells the service manager how the proxy is doing (sd_notify(3)):
/// without NOTIFY_SOCKET it does nothing. A failed notification is dropped
/// (logged at debug level): it must never stop the proxy.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier NOTIFY_SOCKET names, which is then unset: a libvirt
    /// daemon we start (qemu:///session) must not speak for our unit.
    /// Call it before any thread starts, as `listen_fds`.
    pub fn from_env() -> Notifier {
        let socket = env::var_os("NOTIFY_SOCKET");
        env::remove_var("NOTIFY_SOCKET");
        Notifier::new(socket.as_deref())
    }

    /// The notifier for NOTIFY_SOCKET's value `socket`: a path, or `@name`
    /// for an abstract socket.
    pub fn new(socket: Option<&OsStr>) -> Notifier {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Notifier { target: None };
        };
        let target = notify_address(socket).and_then(|address| {
            let datagram = UnixDatagram::unbound()?;
            datagram.set_write_timeout(Some(NOTIFY_TIMEOUT))?;
            Ok((datagram, address))
        });
        match target {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(e) => {
                debug!(
                    "not notifying the service manager at '{}': {e}",
                    socket.to_string_lossy()
                );
                Notifier { target: None }
            }
        }
    }

    /// Whether notifications go anywhere.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Start-up is done: `READY=1`.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// What the proxy is doing, for `systemctl status`: `STATUS=text`, on
    /// one line.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }

    /// Shutdown has begun: `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, state: &str) {
        let Some((datagram, address)) = &self.target else {
            return;
        };
        match datagram.send_to_addr(state.as_bytes(), address) {
            Ok(_) => debug!("told the service manager {state}"),
            Err(e) => debug!("cannot tell the service manager {state}: {e}"),
        }
    }
}

/// The address NOTIFY_SOCKET names.
fn notify_address(socket: &OsStr) -> io::Result<SocketAddr> {
    match socket.as_bytes() {
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        [b'/', ..] => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only a path or an @abstract name is supported",
        )),
    }
}

/// Whether stderr is the journal: JOURNAL_STREAM names its device and
/// inode, as systemd sets it for StandardError=journal. A stderr redirected
/// since (by a wrapper, or `2>file`) no longer matches.
pub fn stderr_is_journal() -> bool {
    match (env::var_os("JOURNAL_STREAM"), stderr_identity()) {
        (Some(value), Some((dev, ino))) => journal_stream_matches(&value, dev, ino),
        _ => false,
    }
}

/// The device and inode of stderr, through a duplicate: std has no fstat on
/// a borrowed descriptor.
fn stderr_identity() -> Option<(u64, u64)> {
    let fd = io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = File::from(fd).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// Whether JOURNAL_STREAM's `value`, `DEV:INO` in decimal, names the file
/// with device `dev` and inode `ino`.
pub fn journal_stream_matches(value: &OsStr, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::symlink;

    fn roles_of(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> Result<Roles> {
        roles(
            pid.map(OsStr::new),
            fds.map(OsStr::new),
            names.map(OsStr::new),
            42,
        )
    }

    fn part(fd: RawFd, name: &str) -> Option<(RawFd, String)> {
        Some((fd, name.to_owned()))
    }

    #[test]
    fn nothing_is_passed_without_our_pid() {
        assert_eq!(roles_of(None, Some("1"), None).unwrap(), Roles::default());
        assert_eq!(
            roles_of(Some("41"), Some("1"), Some("qmp")).unwrap(),
            Roles::default()
        );
        assert_eq!(roles_of(Some("42"), None, None).unwrap(), Roles::default());
        assert_eq!(
            roles_of(Some("42"), Some("0"), None).unwrap(),
            Roles::default()
        );
    }

    #[test]
    fn the_only_unnamed_socket_is_the_main_one() {
        let main = Roles {
            main: part(3, "unknown"),
            read_only: None,
        };
        assert_eq!(roles_of(Some("42"), Some("1"), None).unwrap(), main);
        assert_eq!(roles_of(Some("42"), Some("1"), Some("")).unwrap(), main);
    }

    #[test]
    fn names_give_the_parts_in_any_order() {
        assert_eq!(
            roles_of(Some("42"), Some("2"), Some("qmp-ro:qmp")).unwrap(),
            Roles {
                main: part(4, "qmp"),
                read_only: part(3, "qmp-ro"),
            }
        );
        // A missing name is `unknown`, which is the main socket.
        assert_eq!(
            roles_of(Some("42"), Some("2"), Some("qmp-ro")).unwrap(),
            Roles {
                main: part(4, "unknown"),
                read_only: part(3, "qmp-ro"),
            }
        );
        assert_eq!(
            roles_of(Some("42"), Some("1"), Some("qmp-ro")).unwrap(),
            Roles {
                main: None,
                read_only: part(3, "qmp-ro"),
            }
        );
    }

    #[test]
    fn an_unknown_name_is_refused_by_name() {
        let err = roles_of(Some("42"), Some("2"), Some("qmp:vm1.socket"))
            .expect_err("a stray name must be refused");
        assert!(matches!(err, Error::PassedName { fd: 4, .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the service manager passed descriptor 4 named 'vm1.socket'; \
             name the sockets 'qmp' and 'qmp-ro' with FileDescriptorName="
        );
    }

    #[test]
    fn two_sockets_for_one_part_are_refused() {
        for names in [None, Some("qmp:qmp"), Some("qmp"), Some("qmp-ro:qmp-ro")] {
            let err = roles_of(Some("42"), Some("2"), names)
                .err()
                .unwrap_or_else(|| panic!("{names:?} must be refused"));
            assert!(matches!(err, Error::PassedTwice { .. }), "{err:?}");
        }
        let err = roles_of(Some("42"), Some("3"), Some("qmp:qmp-ro:qmp"))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("two main sockets, descriptors 3 ('qmp') and 5 ('qmp')"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_count_fails_at_the_third_descriptor() {
        let err = roles_of(Some("42"), Some("4294967295"), None)
            .err()
            .unwrap();
        assert!(matches!(err, Error::PassedTwice { .. }), "{err:?}");
    }

    #[test]
    fn numbers_that_are_not_numbers_are_refused() {
        for (pid, fds) in [
            ("x", "1"),
            ("-1", "1"),
            ("42", "one"),
            ("42", "-1"),
            ("42", ""),
        ] {
            let err = roles_of(Some(pid), Some(fds), None).err().unwrap();
            assert!(matches!(err, Error::ListenEnv { .. }), "{err:?}");
        }
        assert_eq!(
            roles_of(Some("42"), Some("x"), None)
                .err()
                .unwrap()
                .to_string(),
            "invalid LISTEN_FDS='x' from the service manager: not a number"
        );
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vqmp-systemd-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_listening_unix_socket_passes_the_check() {
        let dir = scratch("check");
        let path = dir.join("s.qmp");
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(check_socket(listener.as_raw_fd(), "qmp").unwrap(), path);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn what_cannot_serve_is_refused_with_the_reason() {
        let (stream, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = check_socket(stream.as_raw_fd(), "qmp").err().unwrap();
        assert!(err.to_string().contains("not a listening socket"), "{err}");
        let datagram = UnixDatagram::unbound().unwrap();
        let err = check_socket(datagram.as_raw_fd(), "qmp").err().unwrap();
        assert!(err.to_string().contains("not a stream socket"), "{err}");
        let file = File::open("/dev/null").unwrap();
        let err = check_socket(file.as_raw_fd(), "qmp").err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "descriptor {} ('qmp') from the service manager is not a socket",
                file.as_raw_fd()
            )
        );
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = check_socket(tcp.as_raw_fd(), "qmp").err().unwrap();
        assert!(err.to_string().contains("not a UNIX socket"), "{err}");
        let abstract_name = SocketAddr::from_abstract_name(
            format!("vqmp-systemd-{}", std::process::id()).as_bytes(),
        )
        .unwrap();
        let unnamed = UnixListener::bind_addr(&abstract_name).unwrap();
        let err = check_socket(unnamed.as_raw_fd(), "qmp").err().unwrap();
        assert!(err.to_string().contains("not bound to a path"), "{err}");
    }

    #[test]
    fn paths_match_through_a_symlinked_directory() {
        let dir = scratch("paths");
        fs::create_dir(dir.join("run")).unwrap();
        symlink("run", dir.join("var-run")).unwrap();
        let bound = dir.join("run/vm1.qmp");
        assert!(same_socket_path(&dir.join("var-run/vm1.qmp"), &bound));
        assert!(same_socket_path(&dir.join("run/./vm1.qmp"), &bound));
        assert!(same_socket_path(&bound, &bound));
        assert!(!same_socket_path(&dir.join("run/vm2.qmp"), &bound));
        assert!(!same_socket_path(&dir.join("nowhere/vm1.qmp"), &bound));
        // The file name itself is not followed.
        symlink("vm1.qmp", dir.join("run/alias.qmp")).unwrap();
        assert!(!same_socket_path(&dir.join("run/alias.qmp"), &bound));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_mismatched_path_is_named_in_the_error() {
        let dir = scratch("mismatch");
        let path = dir.join("s.qmp");
        let passed = PassedSocket {
            listener: UnixListener::bind(&path).unwrap(),
            fd: 3,
            name: "qmp".to_owned(),
            path: path.clone(),
        };
        check_path(&path, &passed).unwrap();
        let err = check_path(Path::new("/run/other.qmp"), &passed)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "'/run/other.qmp' is not the socket the service manager passed: \
                 'qmp' is bound to '{}'",
                path.display()
            )
        );
        fs::remove_dir_all(dir).unwrap();
    }

    fn received(receiver: &UnixDatagram) -> String {
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 256];
        let n = receiver.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = scratch("notify");
        let path = dir.join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(Some(path.as_os_str()));
        assert!(notifier.is_active());
        notifier.ready();
        notifier.status("serving 'vm1'\non two lines");
        notifier.stopping();
        assert_eq!(received(&receiver), "READY=1");
        assert_eq!(received(&receiver), "STATUS=serving 'vm1' on two lines");
        assert_eq!(received(&receiver), "STOPPING=1");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn notifications_reach_an_abstract_socket() {
        let name = format!("vqmp-notify-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = Notifier::new(Some(OsStr::new(&format!("@{name}"))));
        notifier.ready();
        assert_eq!(received(&receiver), "READY=1");
    }

    #[test]
    fn notifying_nobody_does_nothing() {
        for socket in [None, Some(""), Some("vsock:2:1234")] {
            let notifier = Notifier::new(socket.map(OsStr::new));
            assert!(!notifier.is_active(), "{socket:?}");
            notifier.ready();
        }
        // A socket nobody listens on: the failure is dropped.
        let notifier = Notifier::new(Some(OsStr::new("/nonexistent/vqmp-notify")));
        assert!(notifier.is_active());
        notifier.ready();
    }

    #[test]
    fn journal_stream_must_name_our_stderr() {
        let value = OsStr::new("64769:123456");
        assert!(journal_stream_matches(value, 64769, 123456));
        assert!(!journal_stream_matches(value, 64769, 123457));
        assert!(!journal_stream_matches(value, 1, 123456));
        for bad in ["", "64769", "64769:", ":123456", "a:b", "64769:123456:1"] {
            assert!(
                !journal_stream_matches(OsStr::new(bad), 64769, 123456),
                "{bad}"
            );
        }
    }

    #[test]
    fn stderr_identity_is_that_of_fd_2() {
        let metadata = fs::metadata("/proc/self/fd/2").unwrap();
        assert_eq!(stderr_identity(), Some((metadata.dev(), metadata.ino())));
    }

    /// Set in the copy of this test that systemd-socket-activate starts.
    const CHILD: &str = "VQMP_ACTIVATION_CHILD";

    #[test]
    #[ignore = "needs systemd-socket-activate (Debian package systemd)"]
    fn sockets_passed_by_systemd_socket_activate_are_taken() {
        let dir = match env::var_os(CHILD) {
            Some(dir) => return take_as_child(Path::new(&dir)),
            None => scratch("activate"),
        };
        let exe = env::current_exe().unwrap();
        let child = std::process::Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(dir.join("main.qmp"))
            .arg("-l")
            .arg(dir.join("ro.qmp"))
            .arg("--fdname=qmp:qmp-ro")
            .arg(format!("-E{CHILD}={}", dir.display()))
            .arg(exe)
            .args([
                "--exact",
                "systemd::tests::sockets_passed_by_systemd_socket_activate_are_taken",
            ])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("systemd-socket-activate runs");
        // It starts the child on the first connection.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let _client = loop {
            match std::os::unix::net::UnixStream::connect(dir.join("main.qmp")) {
                Ok(client) => break client,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("systemd-socket-activate does not listen: {e}"),
            }
        };
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains("taken: qmp qmp-ro"), "{stdout}");
        // Passed sockets are the manager's: still there after we exit.
        assert!(dir.join("main.qmp").exists());
        fs::remove_dir_all(dir).unwrap();
    }

    /// The child's side: takes the sockets, accepts the parent's connection.
    fn take_as_child(dir: &Path) {
        let passed = listen_fds().unwrap();
        for variable in LISTEN_VARIABLES {
            assert!(env::var_os(variable).is_none(), "{variable} still set");
        }
        let main = passed.main.expect("a main socket");
        let read_only = passed.read_only.expect("a read-only socket");
        assert_eq!((main.fd, read_only.fd), (3, 4));
        check_path(&dir.join("main.qmp"), &main).unwrap();
        check_path(&dir.join("ro.qmp"), &read_only).unwrap();
        for socket in [&main, &read_only] {
            let flags = fs::read_to_string(format!("/proc/self/fdinfo/{}", socket.fd)).unwrap();
            let flags = flags
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap();
            assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "not close-on-exec");
            assert_eq!(flags & libc::O_NONBLOCK as u32, 0, "not blocking");
        }
        main.listener
            .accept()
            .expect("the parent's connection waits");
        // Taken once only.
        assert!(listen_fds().unwrap().is_empty());
        println!("taken: {} {}", main.name, read_only.name);
    }
}
