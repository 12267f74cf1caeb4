// SPDX-License-Identifier: LGPL-2.1-or-later
//! File descriptors through the proxy to a real guest and back: SCM_RIGHTS
//! in, libvirt's with-files call, and nothing leaked on any path.

mod common;

use std::os::fd::OwnedFd;
use std::time::Duration;

use common::files::{holds, open_descriptors, pipe, send_with_files, writers_closed};
use common::{Client, Guest, Proxy, ReadEnd, PROXY_BIN};
use serde_json::{json, Value};

/// How long the proxy and QEMU may take to let go of a descriptor.
const WAIT: Duration = Duration::from_secs(5);

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn add_fd_then_query_fdsets_lists_it() {
    let guest = Guest::start("addfd");
    let proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let mut client = proxy.connect_negotiated();
    let (reader, _writer) = pipe();
    send_with_files(
        client.stream(),
        br#"{"execute":"add-fd","arguments":{"fdset-id":7,"opaque":"bench"},"id":"a"}"#,
        &[&reader],
    );
    let added = client.read_reply();
    assert_eq!(added["id"], "a", "{added}");
    assert_eq!(added["return"]["fdset-id"], 7, "{added}");
    let fd = added["return"]["fd"]
        .as_i64()
        .expect("QEMU says which fd it holds");
    let sets = client.command(r#"{"execute":"query-fdsets"}"#);
    let set = sets["return"]
        .as_array()
        .and_then(|sets| sets.iter().find(|s| s["fdset-id"] == 7))
        .unwrap_or_else(|| panic!("fdset 7 missing from {sets}"));
    assert_eq!(set["fds"], json!([{"fd": fd, "opaque": "bench"}]));
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn getfd_then_closefd_releases_the_descriptor() {
    let guest = Guest::start("getfd");
    let proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let mut client = proxy.connect_negotiated();
    let (reader, writer) = pipe();
    send_with_files(
        client.stream(),
        br#"{"execute":"getfd","arguments":{"fdname":"w1"},"id":1}"#,
        &[&writer],
    );
    assert_eq!(client.read_reply(), json!({"return": {}, "id": 1}));
    drop(writer);
    assert!(
        !writers_closed(&reader, Duration::from_millis(200)),
        "QEMU should hold the descriptor now"
    );
    assert_eq!(
        client.command(r#"{"execute":"closefd","arguments":{"fdname":"w1"}}"#),
        json!({"return": {}})
    );
    assert!(
        writers_closed(&reader, WAIT),
        "closefd did not release the descriptor"
    );
    // Without a descriptor QEMU says so, through the proxy.
    let missing = client.command(r#"{"execute":"getfd","arguments":{"fdname":"w2"}}"#);
    assert_eq!(
        missing["error"]["desc"], "No file descriptor supplied via SCM_RIGHTS",
        "{missing}"
    );
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn two_descriptors_on_one_command_are_refused_and_closed() {
    let guest = Guest::start("twofds");
    let proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let mut client = proxy.connect_negotiated();
    let (reader1, writer1) = pipe();
    let (reader2, writer2) = pipe();
    send_with_files(
        client.stream(),
        br#"{"execute":"getfd","arguments":{"fdname":"two"},"id":2}"#,
        &[&writer1, &writer2],
    );
    let reply = client.read_reply();
    assert_eq!(reply["id"], 2, "{reply}");
    assert_eq!(reply["error"]["class"], "GenericError", "{reply}");
    assert!(
        reply["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("at most 1 fd"),
        "{reply}"
    );
    drop((writer1, writer2));
    assert!(writers_closed(&reader1, WAIT), "first descriptor leaked");
    assert!(writers_closed(&reader2, WAIT), "second descriptor leaked");
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn descriptors_of_bad_or_unknown_commands_are_closed() {
    let guest = Guest::start("badfds");
    let proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let (mut negotiating, _) = proxy.connect();
    let mut client = proxy.connect_negotiated();
    let cases: [(bool, &[u8], &str); 4] = [
        (
            false,
            br#"{"execute":"getfd","arguments":{"fdname":"x"}}"#,
            "Expecting capabilities negotiation with 'qmp_capabilities'",
        ),
        (
            true,
            br#"{"execute":}"#,
            "JSON parse error, expecting value",
        ),
        (
            true,
            br#"{"execute":"getfd","bogus":1}"#,
            "QMP input member 'bogus' is unexpected",
        ),
        (
            true,
            br#"{"execute":"no-such-command"}"#,
            "The command no-such-command has not been found",
        ),
    ];
    for (negotiated, input, desc) in cases {
        let target = if negotiated {
            &mut client
        } else {
            &mut negotiating
        };
        let (reader, writer) = pipe();
        send_with_files(target.stream(), input, &[&writer]);
        let reply = target.read_reply();
        let shown = String::from_utf8_lossy(input);
        assert_eq!(reply["error"]["desc"], desc, "{shown}");
        drop(writer);
        if negotiated && desc.starts_with("The command") {
            // QEMU keeps an unused descriptor until the next one arrives on
            // its monitor; what matters here is that the proxy let go.
            assert!(
                common::wait_until(WAIT, || !holds(proxy.pid(), &reader)),
                "the proxy kept the descriptor of {shown}"
            );
        } else {
            assert!(
                writers_closed(&reader, WAIT),
                "descriptor leaked for {shown}"
            );
        }
    }
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn descriptors_of_a_client_that_disconnects_are_closed() {
    let guest = Guest::start("gonefds");
    let proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let client = proxy.connect_negotiated();
    let (reader, writer) = pipe();
    send_with_files(client.stream(), br#"{"execute":"getfd","argu"#, &[&writer]);
    drop(client);
    drop(writer);
    assert!(
        writers_closed(&reader, WAIT),
        "the proxy kept the descriptor of a client that left"
    );
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn descriptor_count_is_stable_over_a_thousand_commands() {
    let guest = Guest::start("fdcount");
    let proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let mut client = proxy.connect_negotiated();
    // One warm-up command of each kind: libvirt opens what it keeps open.
    let run = |client: &mut common::Client, round: usize| -> Value {
        let (reader, writer) = pipe();
        let kind = round % 5;
        let input = match kind {
            0 => format!(r#"{{"execute":"getfd","arguments":{{"fdname":"f{round}"}}}}"#),
            1 => format!(
                r#"{{"execute":"closefd","arguments":{{"fdname":"f{}"}}}}"#,
                round - 1
            ),
            2 => r#"{"execute":"nope"}"#.to_owned(),
            3 => r#"{"execute":}"#.to_owned(),
            _ => r#"{"execute":"getfd","arguments":{"fdname":"pair"}}"#.to_owned(),
        };
        if kind == 4 {
            let (_r2, w2) = pipe();
            send_with_files(client.stream(), input.as_bytes(), &[&writer, &w2]);
        } else {
            send_with_files(client.stream(), input.as_bytes(), &[&writer]);
        }
        drop(reader);
        client.read_reply()
    };
    for round in 0..5 {
        run(&mut client, round);
    }
    let before = open_descriptors(proxy.pid());
    for round in 5..1005 {
        let reply = run(&mut client, round);
        let ok = reply.get("return").is_some();
        assert_eq!(ok, round % 5 < 2, "round {round}: {reply}");
    }
    let after = open_descriptors(proxy.pid());
    assert_eq!(
        before, after,
        "the proxy's descriptor count changed over 1000 commands"
    );
}

/// Sends `messages` × sendmsg(" ", 32 descriptors) on `client`, each message
/// 32 copies of a new pipe's write end; returns the last pipe's read end.
fn flood(client: &Client, messages: usize) -> OwnedFd {
    let mut last = None;
    for _ in 0..messages {
        let (reader, writer) = pipe();
        send_with_files(client.stream(), b" ", &[&writer; 32]);
        last = Some(reader);
    }
    last.expect("at least one message")
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_flood_of_descriptors_leaves_the_proxy_one_message_worth() {
    let guest = Guest::start("fdflood");
    let proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let mut client = proxy.connect_negotiated();
    assert_eq!(
        client.command(r#"{"execute":"query-status"}"#)["return"]["running"],
        true
    );
    let before = open_descriptors(proxy.pid());
    let last = flood(&client, 300);
    // The latest message's descriptors are the ones kept, as in QEMU.
    assert!(
        common::wait_until(WAIT, || holds(proxy.pid(), &last)),
        "the proxy did not keep the latest message's descriptors"
    );
    let held = open_descriptors(proxy.pid());
    assert!(
        held <= before + 16 + 8,
        "the proxy holds {held} descriptors, {before} before the flood"
    );
    // A message with one descriptor replaces them: getfd gets exactly it.
    let (_reader, writer) = pipe();
    send_with_files(
        client.stream(),
        br#"{"execute":"getfd","arguments":{"fdname":"after"},"id":1}"#,
        &[&writer],
    );
    assert_eq!(client.read_reply(), json!({"return": {}, "id": 1}));
    assert!(
        writers_closed(&last, WAIT),
        "the replaced descriptors were not closed"
    );
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_flooding_client_cannot_lock_others_out_under_a_low_limit() {
    let guest = Guest::start("fdlimit");
    let proxy = Proxy::start_with(
        &["prlimit", "--nofile=256:256", PROXY_BIN],
        guest.uri(),
        guest.name(),
        &[],
    );
    let flooder = proxy.connect_negotiated();
    let last = flood(&flooder, 10);
    // Let the proxy take in what it will of the flood.
    common::wait_until(WAIT, || holds(proxy.pid(), &last));
    let stream = std::os::unix::net::UnixStream::connect(proxy.socket()).unwrap();
    let mut newcomer = Client::from_stream(stream);
    match newcomer.next_line(WAIT) {
        Ok(line) => assert!(line.starts_with(b"{\"QMP\""), "{line:?}"),
        Err(ReadEnd::Timeout(_)) => panic!("a new client got no greeting"),
        Err(end) => panic!("a new client was turned away: {end:?}"),
    }
    newcomer.negotiate();
    assert_eq!(
        newcomer.command(r#"{"execute":"query-status"}"#)["return"]["running"],
        true
    );
    drop(flooder);
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let guest = Guest::start("fdraise");
    let proxy = Proxy::start_with(
        &["prlimit", "--nofile=1024:4096", PROXY_BIN],
        guest.uri(),
        guest.name(),
        &[],
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("/proc/PID/limits lists open files");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{open_files}");
}
