// SPDX-License-Identifier: LGPL-2.1-or-later
//! The test bed itself: a throwaway guest starts, libvirt sees it running, and
//! it goes away without a trace; the helpers drive a real proxy (libvirt's
//! original Python tool) in front of it. The `Client` checks at the end need
//! no QEMU and run in every `cargo test`.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use common::{process_alive, unique_path, Client, Guest, Proxy, PYTHON_PROXY};
use serde_json::{json, Value};

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn guest_runs_and_leaves_nothing_behind() {
    let guest = Guest::start("tiny");
    let (pid, root) = (guest.qemu_pid(), guest.root().to_owned());
    assert!(guest.qemu_running(), "QEMU {pid} is not running");
    assert_eq!(
        guest.uri(),
        format!("qemu:///embed?root={}", root.display())
    );

    // virsh holds the root only while it runs, so each call re-attaches.
    let out = guest.virsh(&["domstate", guest.name()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "virsh domstate failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "running");

    let out = guest.virsh(&[
        "qemu-monitor-command",
        guest.name(),
        r#"{"execute":"query-status"}"#,
    ]);
    assert!(
        out.status.success(),
        "virsh qemu-monitor-command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).expect("query-status reply is JSON");
    assert_eq!(reply["return"]["status"], "running", "reply: {reply}");
    assert_eq!(reply["return"]["running"], true, "reply: {reply}");

    drop(guest);
    assert!(
        !process_alive(pid),
        "QEMU {pid} still runs after Guest::drop"
    );
    assert!(
        !root.exists(),
        "{} still exists after Guest::drop",
        root.display()
    );
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn killed_qemu_is_seen_gone_and_cleaned_up() {
    let guest = Guest::start("doomed");
    let root = guest.root().to_owned();
    guest.kill_qemu(libc::SIGKILL);
    assert!(
        guest.wait_qemu_exit(Duration::from_secs(5)),
        "QEMU survived SIGKILL"
    );
    drop(guest);
    assert!(
        !root.exists(),
        "{} still exists after Guest::drop",
        root.display()
    );
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn helpers_drive_the_original_python_proxy() {
    let guest = Guest::start("tiny");
    let mut proxy = Proxy::start_with(PYTHON_PROXY, guest.uri(), guest.name(), &[]);

    let (mut client, greeting) = proxy.connect();
    let greeting: Value = serde_json::from_str(&greeting).expect("greeting is JSON");
    assert!(
        greeting["QMP"]["version"]["qemu"]["major"].is_u64(),
        "greeting: {greeting}"
    );
    client.negotiate();

    let reply = client.command(r#"{"execute": "query-status", "id": 7}"#);
    assert_eq!(reply["return"]["status"], "running", "reply: {reply}");
    assert_eq!(reply["id"], 7, "reply: {reply}");

    client.command(r#"{"execute": "stop"}"#);
    assert_eq!(client.wait_event("STOP")["event"], "STOP");
    client.command(r#"{"execute": "cont"}"#);
    assert_eq!(client.wait_event("RESUME")["event"], "RESUME");
    drop(client);

    let socket = proxy.socket().to_owned();
    proxy.signal(libc::SIGTERM);
    assert!(
        proxy.wait_exit(Duration::from_secs(10)).is_some(),
        "the proxy ignored SIGTERM"
    );
    drop(proxy);
    assert!(
        !socket.exists(),
        "{} still exists after Proxy::drop",
        socket.display()
    );
    assert!(guest.qemu_running(), "stopping the proxy stopped the guest");
}

/// A client and the server end of its connection, for the checks below.
fn pair() -> (Client, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut client = Client::from_stream(ours);
    client.set_timeout(Duration::from_millis(300));
    (client, theirs)
}

#[test]
fn client_sets_events_aside_while_reading_replies() {
    let (mut client, mut server) = pair();
    server
        .write_all(b"{\"event\": \"STOP\"}\r\n{\"return\": {}, \"id\": 1}\r\n{\"event\": \"RESUME\"}\r\n{\"return\": {}}\r\n")
        .unwrap();
    assert_eq!(client.read_reply(), json!({"return": {}, "id": 1}));
    assert_eq!(client.wait_event("RESUME"), json!({"event": "RESUME"}));
    assert_eq!(client.read_reply(), json!({"return": {}}));
    assert_eq!(client.events, vec![json!({"event": "STOP"})]);
}

#[test]
fn client_reassembles_lines_split_across_writes() {
    let (mut client, server) = pair();
    let writer = thread::spawn(move || {
        let mut server = server;
        for part in [&b"{\"ret"[..], b"urn\": {}}\r", b"\n"] {
            server.write_all(part).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
        server
    });
    assert_eq!(client.read_line(), r#"{"return": {}}"#);
    drop(writer.join().unwrap());
    client.expect_eof(Duration::from_secs(1));
}

#[test]
#[should_panic(expected = "no line within")]
fn client_read_times_out_instead_of_hanging() {
    let (mut client, _server) = pair();
    client.read_line();
}

#[test]
#[should_panic(expected = "not terminated by CRLF")]
fn client_insists_on_crlf() {
    let (mut client, mut server) = pair();
    server.write_all(b"{}\n").unwrap();
    client.read_line();
}

#[test]
fn client_reads_until_quiet_and_sees_eof() {
    let (mut client, mut server) = pair();
    server.write_all(b"a\r\nb\r\n").unwrap();
    assert_eq!(client.read_until_quiet(100), ["a", "b"]);
    server.shutdown(Shutdown::Both).unwrap();
    client.expect_eof(Duration::from_secs(1));
}

#[test]
fn unique_paths_differ() {
    assert_ne!(unique_path("x"), unique_path("x"));
    let socket = common::socket_path("some test");
    assert!(socket.parent().unwrap().is_dir());
    std::fs::remove_dir_all(socket.parent().unwrap()).unwrap();
}
