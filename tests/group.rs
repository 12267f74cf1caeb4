// SPDX-License-Identifier: LGPL-2.1-or-later
//! The group socket for real: as root, a socket shared with group vqmp-ro
//! lets vqmp-member (in the group) connect and refuses vqmp-other (not in
//! it), while a private socket refuses both. The users come from
//! scripts/testbed-setup; the client is socat, run under setpriv(1).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use virt_qemu_qmp_proxy::socket::{peer_credentials, resolve_group, Access, Socket};

const GROUP: &str = "vqmp-ro";
const MEMBER: &str = "vqmp-member";
const OTHER: &str = "vqmp-other";

const SETUP_HINT: &str = "run `make check` as root: scripts/testbed-setup creates the group \
     vqmp-ro, its member vqmp-member and the non-member vqmp-other";

/// How long one client may take to connect and finish.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A folder under /tmp (not $TMPDIR, which the test users may not reach),
/// mode 0755 whatever the umask; removed on drop.
struct Folder(PathBuf);

impl Folder {
    fn new(tag: &str) -> Folder {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = Path::new("/tmp").join(format!("vqmp-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        Folder(path)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A number `id` prints for `user` (`-u` or `-g`); panics with the way
/// out if there is no such user.
fn id(option: &str, user: &str) -> u32 {
    let out = Command::new("id")
        .args([option, user])
        .output()
        .unwrap_or_else(|e| panic!("cannot run id: {e}"));
    assert!(
        out.status.success(),
        "no user '{user}' ({}): {SETUP_HINT}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("id {option} {user}: not a number: {e}"))
}

/// Checks what the test needs and returns the group's id.
fn test_bed() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("/proc/self/status has a Uid line");
    assert_eq!(
        euid, "0",
        "this test gives a socket to another group and switches users; {SETUP_HINT}"
    );
    let gid = resolve_group(GROUP).unwrap_or_else(|e| panic!("{e}: {SETUP_HINT}"));
    for user in [MEMBER, OTHER] {
        id("-u", user);
    }
    gid
}

/// Runs socat as `user` (with the user's own groups) to connect to `path`
/// and close at once.
fn connect_as(user: &str, path: &Path) -> Output {
    let mut child = Command::new("setpriv")
        .arg(format!("--reuid={user}"))
        .arg(format!("--regid={}", id("-g", user)))
        .arg("--init-groups")
        .args(["socat", "-u", "OPEN:/dev/null"])
        .arg(format!("UNIX-CONNECT:{}", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux) and socat: {e}"));
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("socat as {user} did not finish within {CLIENT_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts that `user` was refused with EACCES.
fn assert_refused(user: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Permission denied"),
        "{user} was not refused ({}): {stderr}",
        out.status
    );
}

/// The connection waiting on `listener`, if any, without waiting.
fn pending(listener: &UnixListener) -> Option<std::os::unix::net::UnixStream> {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Ok((stream, _)) => Some(stream),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("accept failed: {e}"),
    }
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_member_connects_and_a_non_member_is_refused() {
    let gid = test_bed();
    let folder = Folder::new("group");
    let path = folder.0.join("ro.sock");
    let socket = Socket::create_with(&path, Access::Group(gid)).unwrap();
    let there = fs::symlink_metadata(&path).unwrap();
    assert_eq!((there.mode() & 0o7777, there.gid()), (0o660, gid));

    let out = connect_as(MEMBER, &path);
    assert!(
        out.status.success(),
        "{MEMBER} cannot connect ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stream = pending(&socket.listener).expect("the member's connection is queued");
    let peer = peer_credentials(&stream).unwrap();
    assert_eq!(
        (peer.uid, peer.gid),
        (id("-u", MEMBER), id("-g", MEMBER)),
        "{peer:?}"
    );
    assert!(peer.pid > 0, "{peer:?}");

    assert_refused(OTHER, &connect_as(OTHER, &path));
    assert!(
        pending(&socket.listener).is_none(),
        "a connection came through"
    );

    drop(socket);
    assert!(!path.exists(), "socket file left behind");
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_private_socket_refuses_the_group_too() {
    test_bed();
    let folder = Folder::new("private");
    let path = folder.0.join("rw.sock");
    let socket = Socket::create(&path).unwrap();
    for user in [MEMBER, OTHER] {
        assert_refused(user, &connect_as(user, &path));
    }
    assert!(
        pending(&socket.listener).is_none(),
        "a connection came through"
    );
    drop(socket);
    assert!(!path.exists(), "socket file left behind");
}
