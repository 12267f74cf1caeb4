// SPDX-License-Identifier: LGPL-2.1-or-later
//! Shutdown finishes the commands in hand: on SIGTERM nothing new is read,
//! but every command already read is answered, whole, before the client
//! sees end-of-file, and the proxy exits 0. Real binary and real guest,
//! except for one case that needs a command held in the monitor: there
//! `server::serve` runs with a fake monitor.

mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Client, Guest, Proxy, ReadEnd};
use serde_json::{json, Value};
use virt_qemu_qmp_proxy::monitor::{Failure, Monitor, Reply};
use virt_qemu_qmp_proxy::notice::Notice;
use virt_qemu_qmp_proxy::qmp;
use virt_qemu_qmp_proxy::server::{self, Stop};

/// Generous bounds, about hangs only.
const READ: Duration = Duration::from_secs(20);
const EXIT: Duration = Duration::from_secs(20);

/// Sends `command` (with `"id": N`) on each of `count` negotiated clients,
/// signals SIGTERM 50 ms later, then reads every client to its end in
/// parallel; returns what went wrong, per client.
fn command_then_sigterm(proxy: &mut Proxy, count: usize, command: &str) -> Vec<String> {
    let mut clients: Vec<Client> = (0..count).map(|_| proxy.connect_negotiated()).collect();
    for (id, client) in clients.iter_mut().enumerate() {
        client.send(format!(r#"{{"execute":"{command}","id":{id}}}"#).as_bytes());
    }
    thread::sleep(Duration::from_millis(50));
    proxy.signal(libc::SIGTERM);
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(id, mut client)| thread::spawn(move || read_reply_then_eof(&mut client, id)))
        .collect();
    let problems = readers
        .into_iter()
        .enumerate()
        .filter_map(|(id, reader)| match reader.join() {
            Ok(Ok(())) => None,
            Ok(Err(problem)) => Some(format!("client {id}: {problem}")),
            Err(_) => Some(format!("client {id}: its reader panicked")),
        })
        .collect();
    let status = proxy
        .wait_exit(EXIT)
        .expect("the proxy exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    problems
}

/// One whole reply line for `id` (events skipped), then end-of-file.
fn read_reply_then_eof(client: &mut Client, id: usize) -> Result<(), String> {
    loop {
        let line = client
            .next_line(READ)
            .map_err(|end| format!("no reply: {}", describe(end)))?;
        let text = line.strip_suffix(b"\r\n").ok_or("a line without CRLF")?;
        let value: Value = serde_json::from_slice(text)
            .map_err(|e| format!("a line that is not JSON ({e}), {} bytes", line.len()))?;
        if value.get("event").is_some() {
            continue;
        }
        if value["id"] != id || value.get("return").is_none() {
            return Err(format!("unexpected reply {}", truncated(&value)));
        }
        break;
    }
    match client.next_line(READ) {
        Err(ReadEnd::Eof(rest)) if rest.is_empty() => Ok(()),
        Ok(line) => Err(format!(
            "a line after the reply: {:?}",
            String::from_utf8_lossy(&line)
        )),
        Err(end) => Err(format!("no EOF after the reply: {}", describe(end))),
    }
}

fn describe(end: ReadEnd) -> String {
    match end {
        ReadEnd::Timeout(got) => format!("timeout after {} bytes", got.len()),
        ReadEnd::Eof(got) => format!("EOF after {} bytes of an unfinished line", got.len()),
        ReadEnd::Error(e) => format!("read error {e}"),
    }
}

fn truncated(value: &Value) -> String {
    value.to_string().chars().take(200).collect()
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn sigterm_answers_all_64_commands_in_hand() {
    let guest = Guest::start("drain64");
    let mut proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let problems = command_then_sigterm(&mut proxy, 64, "query-status");
    assert!(
        problems.is_empty(),
        "{} of 64 clients lacked their reply:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn sigterm_delivers_16_large_replies_whole() {
    let guest = Guest::start("drainschema");
    let mut proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let problems = command_then_sigterm(&mut proxy, 16, "query-qmp-schema");
    assert!(
        problems.is_empty(),
        "{} of 16 clients lacked their whole reply:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Says when `slow` starts, then takes a while to answer it.
struct SlowMonitor {
    started: Mutex<Sender<()>>,
}

impl Monitor for SlowMonitor {
    fn execute(&self, command: &str, _files: Vec<OwnedFd>) -> Result<Reply, Failure> {
        if command.contains(r#""execute":"slow""#) {
            let _ = self.started.lock().unwrap().send(());
            thread::sleep(Duration::from_millis(300));
        }
        Ok(Reply {
            text: r#"{"return":{},"id":"libvirt-1"}"#.into(),
            files: Vec::new(),
        })
    }
}

#[test]
fn a_stop_answers_what_was_read_and_reads_nothing_more() {
    let path = common::socket_path("stop-reads-nothing");
    let listener = UnixListener::bind(&path).unwrap();
    let (started, slow_started) = mpsc::channel();
    let monitor = Arc::new(SlowMonitor {
        started: Mutex::new(started),
    });
    let (notices, receiver) = mpsc::channel();
    let server = thread::spawn(move || {
        let greeting = qmp::greeting(r#"{"qemu":{"micro":0,"minor":2,"major":7},"package":""}"#);
        server::serve(&listener, monitor, greeting, receiver, 4)
    });
    let mut client = Client::connect_negotiated(&path);
    // Two commands in one write: both are read before the stop.
    client.send(br#"{"execute":"slow","id":1}{"execute":"query-status","id":2}"#);
    slow_started
        .recv_timeout(READ)
        .expect("the slow command reaches the monitor");
    // Not read yet when the stop comes, as the reader is busy: never read.
    client.send(br#"{"execute":"query-status","id":3}"#);
    notices.send(Notice::Signal(libc::SIGTERM)).unwrap();
    // Sent after the stop: never read either (the proxy may refuse it).
    thread::sleep(Duration::from_millis(100));
    let _ = client
        .stream()
        .write_all(br#"{"execute":"query-status","id":4}"#);
    assert_eq!(client.read_reply(), json!({"return": {}, "id": 1}));
    assert_eq!(client.read_reply(), json!({"return": {}, "id": 2}));
    client.expect_eof(READ);
    let stop = server
        .join()
        .expect("serve returns")
        .expect("serve succeeds");
    assert_eq!(stop, Stop::Signal(libc::SIGTERM));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
