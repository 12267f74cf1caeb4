// SPDX-License-Identifier: LGPL-2.1-or-later
//! A libvirtd that hangs instead of dying (SIGSTOP): no wait of the proxy's
//! may outlast its own limits, whatever libvirt does.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{wait_until, Proxy};

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_signal_during_start_up_ends_the_proxy_at_once() {
    let daemon = Daemon::start("startup");
    let socket = common::socket_path("startup");
    let paused = daemon.pause_daemon();
    let mut child = Proxy::spawn_raw(&[
        "-c".as_ref(),
        daemon.uri().as_ref(),
        daemon.guest().as_ref(),
        socket.as_os_str(),
    ]);
    // The proxy is now waiting for the stopped daemon to answer its open.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the proxy did not wait for libvirt"
    );
    let pid = i32::try_from(child.id()).unwrap();
    assert!(common::send_signal(pid, libc::SIGTERM));
    let signalled = Instant::now();
    let mut status = None;
    wait_until(Duration::from_secs(5), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("SIGTERM during start-up was ignored while libvirt hangs");
    };
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "took {:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!socket.exists(), "a socket was created after the signal");
    drop(paused);
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn sigterm_ends_the_proxy_on_time_while_a_call_hangs() {
    let daemon = Daemon::start("sigterm");
    let mut proxy = Proxy::start(daemon.uri(), daemon.guest(), &["--reconnect-timeout", "60"]);
    let mut client = proxy.connect_negotiated();
    let socket = proxy.socket().to_owned();
    let paused = daemon.pause_daemon();
    // This call is now stuck in libvirt, holding the monitor.
    client.send(br#"{"execute":"query-status","id":"stuck"}"#);
    std::thread::sleep(Duration::from_millis(300));
    proxy.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("the proxy exits although libvirt hangs");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    // The stuck command has no reply: the client just sees the end.
    client.expect_eof(Duration::from_secs(1));
    assert!(!socket.exists(), "socket left behind");
    drop(paused);
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_stopped_libvirtd_cannot_hold_the_proxy_past_its_reconnect_timeout() {
    let daemon = Daemon::start("timeout");
    let mut proxy = Proxy::start(daemon.uri(), daemon.guest(), &["--reconnect-timeout", "3"]);
    let mut client = proxy.connect_negotiated();
    let socket = proxy.socket().to_owned();
    let paused = daemon.pause_daemon();
    let stopped = Instant::now();
    // Keepalive notices the silence after 2 s × (3 + 1); reconnecting then
    // blocks in libvirt's open, and the 3 s limit must still hold.
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .expect("the proxy gives up 3 s after the loss");
    let took = stopped.elapsed();
    assert!(
        took > Duration::from_secs(5) && took < Duration::from_secs(20),
        "gave up after {took:?}"
    );
    assert_eq!(status.code(), Some(1), "{}", proxy.stderr());
    assert!(
        proxy
            .stderr()
            .contains("and could not reconnect within 3 s"),
        "{}",
        proxy.stderr()
    );
    client.expect_eof(Duration::from_secs(1));
    assert!(!socket.exists(), "socket left behind");
    drop(paused);
}
