// SPDX-License-Identifier: LGPL-2.1-or-later
//! libvirt going away under the proxy: a private libvirtd is stopped and
//! started again while clients are connected.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::Proxy;

const LOST: &str = "the libvirt connection was lost and is being re-established";

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_libvirtd_restart_is_survived_by_the_same_connections() {
    let daemon = Daemon::start("restart");
    let proxy = Proxy::start(daemon.uri(), daemon.guest(), &["--reconnect-timeout", "60"]);
    let mut idle = proxy.connect_negotiated();
    let mut busy = proxy.connect_negotiated();
    // A burst in flight while the daemon goes: every command gets an answer.
    let burst: String = (0..200)
        .map(|i| format!(r#"{{"execute":"query-status","id":{i}}}"#))
        .collect();
    busy.send(burst.as_bytes());
    daemon.stop_daemon();
    for i in 0..200 {
        let reply = busy.read_reply();
        assert_eq!(reply["id"], i, "{reply}");
        assert!(
            reply.get("return").is_some() || reply["error"]["class"] == "GenericError",
            "{reply}"
        );
    }
    // During the outage every command is refused at once, saying why.
    let started = Instant::now();
    let reply = common::wait_for(&mut idle, |reply| reply["error"]["desc"] == LOST);
    assert_eq!(reply["error"]["class"], "GenericError");
    let asked = Instant::now();
    let again = idle.command(r#"{"execute":"query-status","id":"outage"}"#);
    assert_eq!(again["error"]["desc"], LOST, "{again}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "an outage error took {:?}",
        asked.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    daemon.restart_daemon();
    let reply = common::wait_for(&mut idle, |reply| reply.get("return").is_some());
    assert_eq!(reply["return"]["status"], "running", "{reply}");
    // Events flow again, to both connections.
    assert_eq!(
        busy.command(r#"{"execute":"stop"}"#),
        serde_json::json!({"return": {}})
    );
    for client in [&mut idle, &mut busy] {
        client.wait_event("STOP");
    }
    assert_eq!(
        busy.command(r#"{"execute":"cont"}"#),
        serde_json::json!({"return": {}})
    );
    for client in [&mut idle, &mut busy] {
        client.wait_event("RESUME");
    }
    assert!(proxy.stderr().contains("reconnected"), "{}", proxy.stderr());
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn libvirt_gone_past_the_reconnect_timeout_ends_the_proxy() {
    let daemon = Daemon::start("gone");
    let mut proxy = Proxy::start(daemon.uri(), daemon.guest(), &["--reconnect-timeout", "2"]);
    let mut client = proxy.connect_negotiated();
    let socket = proxy.socket().to_owned();
    daemon.stop_daemon();
    client.expect_eof(Duration::from_secs(20));
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("the proxy gives up and exits");
    assert_eq!(status.code(), Some(1), "{}", proxy.stderr());
    let last = proxy.stderr().lines().last().unwrap_or_default().to_owned();
    assert_eq!(
        last,
        format!(
            "virt-qemu-qmp-proxy: lost the libvirt connection to '{}' and could not reconnect within 2 s",
            daemon.uri()
        )
    );
    assert!(!socket.exists(), "socket left behind");
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn the_largest_reconnect_timeout_means_for_ever() {
    let daemon = Daemon::start("forever");
    let proxy = Proxy::start(
        daemon.uri(),
        daemon.guest(),
        &["--reconnect-timeout", "18446744073709551615"],
    );
    let mut client = proxy.connect_negotiated();
    daemon.stop_daemon();
    common::wait_for(&mut client, |reply| reply["error"]["desc"] == LOST);
    daemon.restart_daemon();
    let reply = common::wait_for(&mut client, |reply| reply.get("return").is_some());
    assert_eq!(reply["return"]["status"], "running", "{reply}");
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_guest_started_again_while_libvirt_was_away_is_another_guest() {
    let daemon = Daemon::start_persistent("again");
    // The proxy reaches the daemon through a link that the test can cut,
    // so that it cannot reconnect before the guest has been restarted.
    let mut proxy = Proxy::start(&daemon.indirect_uri(), daemon.guest(), &["-r", "60"]);
    let mut client = proxy.connect_negotiated();
    daemon.cut_indirect_uri();
    daemon.stop_daemon();
    common::wait_for(&mut client, |reply| reply["error"]["desc"] == LOST);
    daemon.restart_daemon();
    // The daemon re-attaches to its running guests in the background.
    let attached = common::wait_until(Duration::from_secs(30), || {
        String::from_utf8_lossy(&daemon.virsh(&["domstate", daemon.guest()]).stdout).trim()
            == "running"
    });
    assert!(
        attached,
        "the restarted daemon does not see the guest running"
    );
    for action in ["destroy", "start"] {
        let out = daemon.virsh(&[action, daemon.guest()]);
        assert!(out.status.success(), "virsh {action}: {out:?}");
    }
    daemon.indirect_uri();
    // The new QEMU has none of what the client set up: it sees the end, as
    // when a guest stops, and no SHUTDOWN that nobody saw happen.
    client.expect_eof(Duration::from_secs(20));
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("the proxy ends with the guest it served");
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(
        proxy.stderr().contains("started again"),
        "{}",
        proxy.stderr()
    );
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_command_too_long_for_libvirt_rpc_gets_a_clear_error() {
    let daemon = Daemon::start("long");
    let proxy = Proxy::start(daemon.uri(), daemon.guest(), &[]);
    let mut client = proxy.connect_negotiated();
    let long = "a".repeat(5 * 1024 * 1024);
    let reply = client.command(&format!(
        r#"{{"execute":"qom-get","arguments":{{"path":"{long}","property":"x"}},"id":1}}"#
    ));
    assert_eq!(reply["id"], 1, "{reply}");
    assert_eq!(reply["error"]["class"], "GenericError", "{reply}");
    let desc = reply["error"]["desc"].as_str().unwrap();
    assert!(desc.contains("libvirt carries at most 4194304"), "{desc}");
    // Nothing was lost: the same connection goes on.
    let reply = client.command(r#"{"execute":"query-status"}"#);
    assert_eq!(reply["return"]["status"], "running", "{reply}");
}
