// SPDX-License-Identifier: LGPL-2.1-or-later
//! The proxy in front of a guest reached through libvirt's remote driver
//! over TCP, as for a guest on another host: a private libvirtd listens on
//! 127.0.0.1 in a network namespace of its own, where the proxy runs too.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::files::{pipe, send_with_files, writers_closed};
use common::{Client, Proxy, PROXY_BIN};
use serde_json::json;

const LOST: &str = "the libvirt connection was lost and is being re-established";

/// The proxy, in the daemon's network namespace, on its TCP URI.
fn proxy_over_tcp(daemon: &Daemon, extra_args: &[&str]) -> Proxy {
    let mut program = daemon.in_network();
    program.push(PROXY_BIN.to_owned());
    let program: Vec<&str> = program.iter().map(String::as_str).collect();
    Proxy::start_with(&program, daemon.tcp_uri(), daemon.guest(), extra_args)
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn commands_events_and_a_daemon_restart_work_over_tcp() {
    let daemon = Daemon::start_tcp("tcp");
    let proxy = proxy_over_tcp(&daemon, &["--reconnect-timeout", "60"]);
    assert!(
        proxy.stderr().contains("qemu+tcp://127.0.0.1:"),
        "{}",
        proxy.stderr()
    );
    let mut first = proxy.connect_negotiated();
    let mut second = proxy.connect_negotiated();
    let status = first.command(r#"{"execute":"query-status","id":"s"}"#);
    assert_eq!(status["id"], "s", "{status}");
    assert_eq!(status["return"]["status"], "running", "{status}");
    let version = second.command(r#"{"execute":"query-version"}"#);
    assert!(version["return"]["qemu"]["major"].is_u64(), "{version}");
    stop_and_cont(&mut first, &mut second);

    daemon.stop_daemon();
    let reply = common::wait_for(&mut first, |reply| reply["error"]["desc"] == LOST);
    assert_eq!(reply["error"]["class"], "GenericError", "{reply}");
    daemon.restart_daemon();
    let reply = common::wait_for(&mut first, |reply| reply.get("return").is_some());
    assert_eq!(reply["return"]["status"], "running", "{reply}");
    // The same two connections, and events reach both again.
    stop_and_cont(&mut second, &mut first);
    assert!(proxy.stderr().contains("reconnected"), "{}", proxy.stderr());
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_descriptor_over_tcp_is_refused_and_disturbs_nobody() {
    let daemon = Daemon::start_tcp("tcpfd");
    let proxy = proxy_over_tcp(&daemon, &["--reconnect-timeout", "60"]);
    let mut sender = proxy.connect_negotiated();
    let mut other = proxy.connect_negotiated();
    let (reader, writer) = pipe();
    send_with_files(
        sender.stream(),
        b"{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"w\"},\"id\":1}\n",
        &[&writer],
    );
    let reply = sender.read_reply();
    assert_eq!(
        reply,
        json!({"error": {
            "class": "GenericError",
            "desc": format!(
                "file descriptors cannot be passed over libvirt's tcp transport ({})",
                daemon.tcp_uri()
            ),
        }, "id": 1})
    );
    drop(writer);
    assert!(
        writers_closed(&reader, Duration::from_secs(5)),
        "the refused descriptor was kept"
    );
    // Nothing was lost: another client, then the sender, go on at once.
    let started = Instant::now();
    let status = other.command(r#"{"execute":"query-status"}"#);
    assert_eq!(status["return"]["status"], "running", "{status}");
    let status = sender.command(r#"{"execute":"query-status"}"#);
    assert_eq!(status["return"]["status"], "running", "{status}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A loss would show within keepalive's 8 s; look past the first probes.
    std::thread::sleep(Duration::from_secs(3));
    for client in [&mut other, &mut sender] {
        let status = client.command(r#"{"execute":"query-status"}"#);
        assert_eq!(status["return"]["status"], "running", "{status}");
    }
    let stderr = proxy.stderr();
    assert!(
        !stderr.contains("lost") && !stderr.contains("reconnect"),
        "{stderr}"
    );
    // The same daemon over its UNIX socket takes descriptors.
    let local = Proxy::start(daemon.uri(), daemon.guest(), &[]);
    let mut client = local.connect_negotiated();
    let (_reader, writer) = pipe();
    send_with_files(
        client.stream(),
        b"{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"w\"},\"id\":2}\n",
        &[&writer],
    );
    assert_eq!(client.read_reply(), json!({"return": {}, "id": 2}));
}

/// `stop` on `actor`, then `cont`: both clients see STOP, then RESUME.
fn stop_and_cont(actor: &mut Client, watcher: &mut Client) {
    for (command, event) in [("stop", "STOP"), ("cont", "RESUME")] {
        let reply = actor.command(&format!(r#"{{"execute":"{command}"}}"#));
        assert_eq!(reply, json!({"return": {}}), "{command}");
        for client in [&mut *actor, &mut *watcher] {
            let seen = client.wait_event(event);
            assert!(seen["timestamp"]["seconds"].is_u64(), "{seen}");
        }
    }
}
