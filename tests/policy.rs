// SPDX-License-Identifier: LGPL-2.1-or-later
//! Safe to hand out: a read-only socket, allow/deny rules and the audit of
//! who did what, against a real guest.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Client, Guest, Proxy};
use serde_json::{json, Value};

/// Commands that change the guest, each with the name the refusal gives.
const CHANGING: &[(&str, &str)] = &[
    (r#"{"execute":"stop","id":1}"#, "stop"),
    (r#"{"execute":"cont","id":2}"#, "cont"),
    (r#"{"execute":"quit","id":3}"#, "quit"),
    (
        r#"{"execute":"device_del","arguments":{"id":"nosuch"},"id":4}"#,
        "device_del",
    ),
    (r#"{"execute":"system_reset","id":5}"#, "system_reset"),
    (
        r#"{"execute":"human-monitor-command","arguments":{"command-line":"stop"},"id":6}"#,
        "human-monitor-command",
    ),
];

fn disabled(name: &str, reason: &str) -> Value {
    json!({"class": "CommandNotFound", "desc": format!("Command {name} has been disabled: {reason}")})
}

/// A second socket path, in a folder of its own.
fn second_socket(name: &str) -> PathBuf {
    common::socket_path(name)
}

/// Asserts that every command of `CHANGING` is refused on `client` for
/// `reason`, with its id, and that the guest still runs.
fn assert_changes_refused(client: &mut Client, reason: &str) {
    for (command, name) in CHANGING {
        let reply = client.command(command);
        let id: Value = serde_json::from_str::<Value>(command).unwrap()["id"].clone();
        assert_eq!(reply["id"], id, "{reply}");
        // HMP is refused for all but its 'info' commands, and says so.
        let reason = match *name {
            "human-monitor-command" => format!("{reason} runs only HMP 'info' commands"),
            _ => reason.to_owned(),
        };
        assert_eq!(
            reply["error"],
            disabled(name, &reason),
            "{command}: {reply}"
        );
    }
    let status = client.command(r#"{"execute":"query-status"}"#);
    assert_eq!(status["return"]["status"], "running", "{status}");
}

/// The command names a `query-commands` reply lists.
fn listed(client: &mut Client) -> Vec<String> {
    let reply = client.command(r#"{"execute":"query-commands"}"#);
    reply["return"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_read_only_socket_refuses_what_changes_the_guest() {
    let guest = Guest::start("ro");
    let ro = second_socket("ro");
    let proxy = Proxy::start(
        guest.uri(),
        guest.name(),
        &["--read-only-socket", ro.to_str().unwrap()],
    );
    let mut full = proxy.connect_negotiated();
    let mut reader = Client::connect_negotiated(&ro);
    assert_changes_refused(&mut reader, "read-only socket");
    // Nothing reached the guest: no client saw a STOP.
    full.expect_silence(Duration::from_millis(300));
    reader.expect_silence(Duration::from_millis(100));

    // Reads work.
    let reply = reader.command(r#"{"execute":"qom-list","arguments":{"path":"/"},"id":"q"}"#);
    assert!(reply["return"].is_array(), "{reply}");
    let reply = reader.command(
        r#"{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}"#,
    );
    assert!(
        reply["return"]
            .as_str()
            .unwrap_or_default()
            .contains("running"),
        "{reply}"
    );
    // A command the guest does not have is not found, as QEMU says it.
    let reply = reader.command(r#"{"execute":"no-such-command","id":7}"#);
    assert_eq!(
        reply,
        json!({"id": 7, "error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}})
    );

    // The listings hold only what this client may run.
    let names = listed(&mut reader);
    assert!(names.iter().any(|n| n == "query-status"), "{names:?}");
    assert!(names.iter().any(|n| n == "qom-list"), "{names:?}");
    for (_, refused) in CHANGING
        .iter()
        .filter(|(_, n)| *n != "human-monitor-command")
    {
        assert!(!names.iter().any(|n| n == refused), "{refused} listed");
    }
    let all = listed(&mut full);
    assert!(
        all.len() > names.len() + 50,
        "{} vs {}",
        all.len(),
        names.len()
    );
    let schema = reader.command(r#"{"execute":"query-qmp-schema"}"#);
    let entries = schema["return"].as_array().expect("a schema");
    let commands: Vec<&str> = entries
        .iter()
        .filter(|e| e["meta-type"] == "command")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(commands.contains(&"query-status"), "{commands:?}");
    assert!(!commands.contains(&"stop") && !commands.contains(&"device_del"));
    assert!(
        entries.iter().any(|e| e["meta-type"] == "event"),
        "events stay"
    );
    assert!(
        entries.iter().any(|e| e["meta-type"] == "object"),
        "types stay"
    );

    // Events reach both sockets' clients.
    assert_eq!(full.command(r#"{"execute":"stop"}"#), json!({"return": {}}));
    reader.wait_event("STOP");
    full.wait_event("STOP");
    assert_eq!(full.command(r#"{"execute":"cont"}"#), json!({"return": {}}));
    reader.wait_event("RESUME");
    // Both sockets are private by default and removed at exit.
    for path in [proxy.socket(), ro.as_path()] {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let main = proxy.socket().to_owned();
    drop(proxy);
    assert!(!ro.exists() && !main.exists(), "a socket was left behind");
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn read_only_makes_the_main_socket_read_only() {
    let guest = Guest::start("romain");
    let proxy = Proxy::start(guest.uri(), guest.name(), &["--read-only"]);
    let mut client = proxy.connect_negotiated();
    assert_changes_refused(&mut client, "read-only socket");
    client.expect_silence(Duration::from_millis(300));
    assert!(
        proxy.stderr().contains("(read-only; pid "),
        "{}",
        proxy.stderr()
    );
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn the_last_matching_rule_decides() {
    let guest = Guest::start("rules");
    let proxy = Proxy::start(
        guest.uri(),
        guest.name(),
        &[
            "--deny",
            "query-*",
            "--allow",
            "query-status",
            "--allow",
            "stop",
            "--deny",
            "s*",
        ],
    );
    let mut client = proxy.connect_negotiated();
    let reply = client.command(r#"{"execute":"query-name","id":"n"}"#);
    assert_eq!(
        reply,
        json!({"id": "n", "error": disabled("query-name", "refused by --deny 'query-*'")})
    );
    let reply = client.command(r#"{"execute":"query-status"}"#);
    assert_eq!(reply["return"]["status"], "running", "{reply}");
    let reply = client.command(r#"{"execute":"stop"}"#);
    assert_eq!(
        reply["error"],
        disabled("stop", "refused by --deny 's*'"),
        "{reply}"
    );
    // What no rule matches is allowed on a full-access socket.
    let reply = client.command(r#"{"execute":"qom-list","arguments":{"path":"/"}}"#);
    assert!(reply["return"].is_array(), "{reply}");
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn who_did_what_is_logged_without_arguments() {
    let guest = Guest::start("audit");
    let ro = second_socket("audit-ro");
    let proxy = Proxy::start(
        guest.uri(),
        guest.name(),
        &["--read-only-socket", ro.to_str().unwrap()],
    );
    let mut full = proxy.connect_negotiated();
    let mut reader = Client::connect_negotiated(&ro);
    let me = format!("pid {}, uid 0, gid 0", std::process::id());
    // A change with a secret in its arguments, by the full-access client.
    let reply = full.command(
        r#"{"execute":"qom-set","arguments":{"path":"/machine","property":"secret-SESAME","value":1},"id":{"n":1}}"#,
    );
    assert!(reply.get("error").is_some(), "{reply}");
    full.command(r#"{"execute":"query-status","id":"quiet"}"#);
    reader.command(r#"{"execute":"system_reset","id":"r"}"#);
    let log = proxy.stderr();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "connected on '{}' (full access; {me})",
            proxy.socket().display()
        ))),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "connected on '{}' (read-only; {me})",
            ro.display()
        ))),
        "{log}"
    );
    let ran: Vec<&&str> = lines.iter().filter(|l| l.contains("qom-set")).collect();
    assert_eq!(ran.len(), 1, "{log}");
    assert!(ran[0].contains("uid 0") && ran[0].contains(&format!("pid {}", std::process::id())));
    assert!(ran[0].contains(r#"id {"n":1}"#), "{}", ran[0]);
    assert!(!log.contains("SESAME"), "arguments were logged: {log}");
    assert!(
        !log.contains("quiet"),
        "a read-only command was logged: {log}"
    );
    let refused: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("system_reset"))
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(refused[0].contains("refused") && refused[0].contains("read-only socket"));

    // -q silences both.
    let quiet_guest = Guest::start("auditq");
    let quiet = Proxy::start(
        quiet_guest.uri(),
        quiet_guest.name(),
        &["-q", "--read-only"],
    );
    let mut client = quiet.connect_negotiated();
    client.command(r#"{"execute":"stop"}"#);
    assert_eq!(quiet.stderr(), "", "-q must silence the audit");
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn each_socket_has_its_own_client_slots() {
    let guest = Guest::start("slots");
    let ro = second_socket("slots-ro");
    let proxy = Proxy::start(
        guest.uri(),
        guest.name(),
        &["-m", "1", "--read-only-socket", ro.to_str().unwrap()],
    );
    // The start probe has left; one client on each socket is served.
    assert!(common::wait_until(Duration::from_secs(5), || proxy
        .stderr()
        .contains("client 1 disconnected")));
    let mut full = proxy.connect_negotiated();
    let mut reader = Client::connect_negotiated(&ro);
    // A second read-only client waits in the backlog for the first one's slot.
    let mut waiting = Client::open(&ro);
    waiting.expect_silence(Duration::from_millis(500));
    for client in [&mut full, &mut reader] {
        let reply = client.command(r#"{"execute":"query-status"}"#);
        assert_eq!(reply["return"]["status"], "running", "{reply}");
    }
    drop(reader);
    let greeting = waiting.read_line();
    assert!(greeting.starts_with("{\"QMP\""), "{greeting}");
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn a_group_can_be_given_the_read_only_socket() {
    let guest = Guest::start("group");
    let ro = second_socket("group-ro");
    // The test users must reach the folders.
    fs::set_permissions(ro.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    let proxy = Proxy::start(
        guest.uri(),
        guest.name(),
        &[
            "--read-only-socket",
            ro.to_str().unwrap(),
            "--read-only-group",
            "vqmp-ro",
        ],
    );
    let meta = fs::metadata(&ro).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let group = Command::new("getent")
        .args(["group", "vqmp-ro"])
        .output()
        .unwrap();
    let gid: u32 = String::from_utf8_lossy(&group.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .expect("the test bed makes group vqmp-ro: run make check");
    assert_eq!(meta.gid(), gid);
    let main = fs::metadata(proxy.socket()).unwrap();
    assert_eq!(main.permissions().mode() & 0o777, 0o600);
    let greets = |user: &str| {
        let script = format!(
            "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
             print(s.makefile('rb').readline().decode().strip())",
            ro.to_str().unwrap()
        );
        let out = Command::new("runuser")
            .args(["-u", user, "--", "python3", "-c", &script])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = greets("vqmp-member");
    assert!(
        ok && stdout.starts_with("{\"QMP\""),
        "member: {stdout} {stderr}"
    );
    let (ok, _, stderr) = greets("vqmp-other");
    assert!(
        !ok && stderr.contains("Permission denied"),
        "non-member: {stderr}"
    );
}
