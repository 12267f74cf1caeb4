// SPDX-License-Identifier: LGPL-2.1-or-later
//! Logging never kills the proxy: with stderr on a full disk (/dev/full) or
//! a pipe whose reader went away (a logger died, an ssh session closed), a
//! failed log write is dropped and the exit statuses stay 0, 1 and 2.

mod common;

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::files::pipe;
use common::{socket_path, Guest, Proxy, PROXY_BIN};

/// The two kinds of stderr (or stdout) that cannot be written to.
fn broken_sinks() -> [(&'static str, OwnedFd); 2] {
    let full = OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full opens");
    let (reader, writer) = pipe();
    drop(reader);
    [("/dev/full", full.into()), ("a closed pipe", writer)]
}

/// Runs the proxy with `args` and stderr (or stdout, with `on_stdout`) on
/// `sink`; its exit status, within 30 s.
fn run(args: &[&str], sink: OwnedFd, on_stdout: bool) -> ExitStatus {
    let mut command = Command::new(PROXY_BIN);
    command
        .args(args)
        .env_remove("LIBVIRT_DEFAULT_URI")
        .stdin(Stdio::null());
    if on_stdout {
        command.stdout(sink).stderr(Stdio::null());
    } else {
        command.stdout(Stdio::null()).stderr(sink);
    }
    let mut child = command.spawn().expect("the proxy binary runs");
    let mut status = None;
    let ended = common::wait_until(Duration::from_secs(30), || {
        status = child.try_wait().expect("wait for the proxy");
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the proxy {args:?} did not end within 30 s");
    }
    status.expect("the proxy ended")
}

#[test]
fn a_failed_write_to_stderr_or_stdout_is_not_a_crash() {
    let socket = socket_path("logging-start");
    let socket_text = socket.to_str().expect("temp paths are UTF-8");
    for (name, sink) in broken_sinks() {
        let status = run(&["-c", "test:///default", "test", socket_text], sink, false);
        assert_eq!(status.code(), Some(1), "a refused driver, stderr on {name}");
    }
    for (name, sink) in broken_sinks() {
        let status = run(&["--bogus"], sink, false);
        assert_eq!(status.code(), Some(2), "a usage error, stderr on {name}");
    }
    for (name, sink) in broken_sinks() {
        let status = run(&["--help"], sink, true);
        assert_eq!(status.code(), Some(1), "--help, stdout on {name}");
    }
    assert!(!socket.exists(), "no socket for a refused connection");
    let _ = std::fs::remove_dir_all(socket.parent().expect("the socket has a folder"));
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_proxy_whose_stderr_fails_serves_and_stops_cleanly() {
    let guest = Guest::start("logging");
    for (name, sink) in broken_sinks() {
        // -v logs every command and reply besides each connect and disconnect.
        let mut proxy = Proxy::start_with_stderr(guest.uri(), guest.name(), &["-v"], sink.into());
        for _ in 0..2 {
            let mut client = proxy.connect_negotiated();
            let reply = client.command(r#"{"execute": "query-status", "id": 1}"#);
            assert_eq!(reply["id"], 1, "stderr on {name}: {reply}");
            assert!(reply["return"].is_object(), "stderr on {name}: {reply}");
        }
        proxy.signal(libc::SIGTERM);
        let status = proxy
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("stderr on {name}: the proxy ignored SIGTERM"));
        assert_eq!(status.code(), Some(0), "stderr on {name}: {status}");
    }
}
