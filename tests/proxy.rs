// SPDX-License-Identifier: LGPL-2.1-or-later
//! The whole server (accept loop, client threads, fan-out, shutdown) over
//! real UNIX sockets, with a fake monitor in place of libvirt. The same
//! behaviours are proven against a real guest in tests/guest.rs; these run
//! anywhere, fast, and can provoke what a guest cannot easily do.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::files::{pipe, receive_with_files, send_with_files, writers_closed};
use common::Client;
use virt_qemu_qmp_proxy::monitor::{Failure, Monitor, Reply};
use virt_qemu_qmp_proxy::notice::Notice;
use virt_qemu_qmp_proxy::qmp;
use virt_qemu_qmp_proxy::server::{self, Stop};

/// How long a closed descriptor may take to be seen as closed.
const WAIT: Duration = Duration::from_secs(5);

const VERSION: &str = r#"{"qemu":{"micro":22,"minor":2,"major":7},"package":"fake"}"#;

/// Answers like QEMU through libvirt; records what it was sent.
#[derive(Default)]
struct FakeMonitor {
    calls: Mutex<Vec<(String, usize)>>,
    delay: Option<Duration>,
}

impl Monitor for FakeMonitor {
    fn execute(&self, command: &str, files: Vec<OwnedFd>) -> Result<Reply, Failure> {
        self.calls
            .lock()
            .unwrap()
            .push((command.to_owned(), files.len()));
        if let Some(delay) = self.delay {
            thread::sleep(delay);
        }
        let value: serde_json::Value = serde_json::from_str(command).expect("the proxy sends JSON");
        let name = value["execute"].as_str().unwrap().to_owned();
        let text = match name.as_str() {
            "fail" => return Err(Failure { desc: "Unable to read from monitor: Connection reset by peer".into() }),
            "count-files" => format!(r#"{{"return":{{"files":{}}},"id":"libvirt-9"}}"#, files.len()),
            "return-files" => {
                return Ok(Reply { text: r#"{"return":{},"id":"libvirt-9"}"#.into(), files });
            }
            "query-status" => r#"{"return":{"status":"running","singlestep":false,"running":true},"id":"libvirt-9"}"#.into(),
            _ => format!(r#"{{"id":"libvirt-9","error":{{"class":"CommandNotFound","desc":"The command {name} has not been found"}}}}"#),
        };
        Ok(Reply {
            text,
            files: Vec::new(),
        })
    }
}

struct Server {
    path: PathBuf,
    notices: Option<Sender<Notice>>,
    monitor: Arc<FakeMonitor>,
    thread: Option<JoinHandle<Stop>>,
}

impl Server {
    fn start(name: &str, monitor: FakeMonitor) -> Server {
        Server::start_with_max(name, monitor, 64)
    }

    fn start_with_max(name: &str, monitor: FakeMonitor, max_clients: usize) -> Server {
        let path = common::socket_path(name);
        let listener = UnixListener::bind(&path).unwrap();
        let monitor = Arc::new(monitor);
        let (notices, receiver) = mpsc::channel();
        let served: Arc<dyn Monitor> = monitor.clone();
        let greeting = qmp::greeting(VERSION);
        let thread = thread::spawn(move || {
            server::serve(&listener, served, greeting, receiver, max_clients).unwrap()
        });
        Server {
            path,
            notices: Some(notices),
            monitor,
            thread: Some(thread),
        }
    }

    fn event(&self, name: &str, data: Option<&str>) {
        let event = Notice::Event {
            name: name.into(),
            seconds: 1,
            micros: 2,
            data: data.map(str::to_owned),
        };
        self.notices.as_ref().unwrap().send(event).unwrap();
    }

    fn stop(&mut self, notice: Notice) -> Stop {
        self.notices.take().unwrap().send(notice).unwrap();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(notices) = self.notices.take() {
            let _ = notices.send(Notice::Signal(15));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Connects to `server` and reads the greeting.
fn connect(server: &Server) -> (Client, String) {
    Client::connect(&server.path)
}

/// Connects to `server` and negotiates, checking the reply byte for byte.
fn negotiated(server: &Server) -> Client {
    let (mut client, _) = connect(server);
    client.send(r#"{"execute":"qmp_capabilities"}"#);
    assert_eq!(client.read_line(), r#"{"return": {}}"#);
    client
}

#[test]
fn greeting_carries_the_guest_version_and_no_capabilities() {
    let server = Server::start("greeting", FakeMonitor::default());
    let (_client, greeting) = connect(&server);
    assert_eq!(
        greeting,
        r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": []}}"#
    );
}

#[test]
fn command_goes_to_the_monitor_without_id_and_reply_gets_it_back() {
    let server = Server::start("id", FakeMonitor::default());
    let mut client = negotiated(&server);
    client.send(r#"{"execute": "query-status", "id": {"b": [1, 2.5], "a": "x"}}"#);
    assert_eq!(
        client.read_line(),
        r#"{"return": {"status": "running", "singlestep": false, "running": true}, "id": {"a": "x", "b": [1, 2.5]}}"#
    );
    let calls = server.monitor.calls.lock().unwrap().clone();
    assert_eq!(calls, vec![(r#"{"execute":"query-status"}"#.to_owned(), 0)]);
}

#[test]
fn pipelined_commands_in_one_write_are_answered_in_order() {
    let server = Server::start("pipeline", FakeMonitor::default());
    let (mut client, _) = connect(&server);
    client.send(concat!(
        r#"{"execute":"query-status","id":0}{"execute":"qmp_capabilities","id":1}"#,
        r#"{"execute":"query-status","id":2}{"execute":"nope","id":3}{"execute":"query-status","id":4}"#
    ));
    assert!(client
        .read_line()
        .contains(r#""id": 0, "error": {"class": "CommandNotFound""#));
    assert_eq!(client.read_line(), r#"{"return": {}, "id": 1}"#);
    assert!(client.read_line().ends_with(r#""id": 2}"#));
    assert!(client
        .read_line()
        .starts_with(r#"{"id": 3, "error": {"class": "CommandNotFound""#));
    assert!(client.read_line().ends_with(r#""id": 4}"#));
}

#[test]
fn libvirt_failure_becomes_a_qmp_error_and_the_connection_stays() {
    let server = Server::start("failure", FakeMonitor::default());
    let mut client = negotiated(&server);
    client.send(r#"{"execute":"fail","id":"f"}"#);
    assert_eq!(
        client.read_line(),
        r#"{"id": "f", "error": {"class": "GenericError", "desc": "Unable to read from monitor: Connection reset by peer"}}"#
    );
    client.send(r#"{"execute":"query-status","id":"next"}"#);
    assert!(client.read_line().ends_with(r#""id": "next"}"#));
}

#[test]
fn concurrent_clients_each_get_all_their_replies() {
    let server = Server::start("concurrent", FakeMonitor::default());
    let workers: Vec<_> = (0..8)
        .map(|n| {
            let mut client = negotiated(&server);
            thread::spawn(move || {
                for i in 0..200 {
                    client.send(format!(r#"{{"execute":"query-status","id":"c{n}-{i}"}}"#));
                    let line = client.read_line();
                    assert!(
                        line.ends_with(&format!(r#""id": "c{n}-{i}"}}"#)),
                        "client {n}: {line}"
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(server.monitor.calls.lock().unwrap().len(), 8 * 200);
}

#[test]
fn events_reach_negotiated_clients_only() {
    let server = Server::start("events", FakeMonitor::default());
    let mut first = negotiated(&server);
    let mut second = negotiated(&server);
    let (mut negotiating, _) = connect(&server);
    server.event("STOP", None);
    server.event(
        "RESET",
        Some(r#"{"guest":false,"reason":"host-qmp-system-reset"}"#),
    );
    for client in [&mut first, &mut second] {
        assert_eq!(
            client.read_line(),
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#
        );
        assert_eq!(
            client.read_line(),
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}"#
        );
    }
    negotiating.expect_silence(Duration::from_millis(300));
    // Events from before negotiation are never delivered later.
    negotiating.send(r#"{"execute":"qmp_capabilities"}"#);
    assert_eq!(negotiating.read_line(), r#"{"return": {}}"#);
    negotiating.expect_silence(Duration::from_millis(200));
}

#[test]
fn a_client_that_never_reads_is_dropped_and_others_carry_on() {
    let server = Server::start("stalled", FakeMonitor::default());
    let stalled = negotiated(&server);
    let mut reader = negotiated(&server);
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(16 * 1024));
    // The socket buffers fill, then the queue: the stalled client is cut.
    for _ in 0..400 {
        server.event("BIG", Some(&big));
        let line = reader.read_line();
        assert!(line.contains(r#""event": "BIG""#));
    }
    reader.send(r#"{"execute":"query-status","id":1}"#);
    assert!(reader.read_line().ends_with(r#""id": 1}"#));
    // The stalled client's connection was closed by the proxy.
    let mut stream = stalled.stream();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
    assert!(
        sink.len() < 400 * big.len(),
        "the stalled client got everything"
    );
}

#[test]
fn guest_stop_delivers_queued_events_then_eof() {
    let mut server = Server::start("stop", FakeMonitor::default());
    let mut client = negotiated(&server);
    server.event(
        "SHUTDOWN",
        Some(r#"{"guest":false,"reason":"host-signal"}"#),
    );
    assert_eq!(server.stop(Notice::GuestStopped), Stop::GuestStopped);
    assert!(client.read_line().contains(r#""event": "SHUTDOWN""#));
    client.expect_eof(WAIT);
}

#[test]
fn a_client_that_disconnects_mid_command_disturbs_nobody() {
    let server = Server::start(
        "midcommand",
        FakeMonitor {
            delay: Some(Duration::from_millis(200)),
            ..Default::default()
        },
    );
    let mut leaver = negotiated(&server);
    let mut stayer = negotiated(&server);
    leaver.send(r#"{"execute":"query-status","id":"gone"}"#);
    thread::sleep(Duration::from_millis(50));
    drop(leaver);
    stayer.send(r#"{"execute":"query-status","id":"here"}"#);
    assert!(stayer.read_line().ends_with(r#""id": "here"}"#));
}

#[test]
fn passed_files_reach_the_monitor_and_are_closed_afterwards() {
    let server = Server::start("files", FakeMonitor::default());
    let mut client = negotiated(&server);
    let (reader, writer) = pipe();
    send_with_files(
        client.stream(),
        br#"{"execute":"count-files","id":1}"#,
        &[&writer],
    );
    assert_eq!(client.read_line(), r#"{"return": {"files": 1}, "id": 1}"#);
    drop(writer);
    assert!(
        writers_closed(&reader, WAIT),
        "the proxy kept the pipe's write end open"
    );
}

#[test]
fn files_of_rejected_input_are_closed() {
    let server = Server::start("files-rejected", FakeMonitor::default());
    let (mut client, _) = connect(&server);
    for (text, expect) in [
        (
            r#"{"execute":"count-files","id":1}"#,
            "Expecting capabilities negotiation",
        ),
        ("{\"execute\":}", "JSON parse error"),
        (
            r#"{"execute":"qmp_capabilities","bogus":1}"#,
            "is unexpected",
        ),
    ] {
        let (reader, writer) = pipe();
        send_with_files(client.stream(), text.as_bytes(), &[&writer]);
        let line = client.read_line();
        assert!(line.contains(expect), "{text}: {line}");
        drop(writer);
        assert!(
            writers_closed(&reader, WAIT),
            "{text}: the proxy kept the pipe's write end open"
        );
    }
    assert!(server.monitor.calls.lock().unwrap().is_empty());
}

#[test]
fn files_of_a_client_that_disconnects_are_closed() {
    let server = Server::start("files-gone", FakeMonitor::default());
    let client = negotiated(&server);
    let (reader, writer) = pipe();
    send_with_files(client.stream(), br#"{"execute":"count-fi"#, &[&writer]);
    drop(client);
    drop(writer);
    assert!(
        writers_closed(&reader, WAIT),
        "the proxy kept the pipe's write end open"
    );
}

#[test]
fn files_returned_by_the_guest_reach_the_client() {
    let server = Server::start("files-back", FakeMonitor::default());
    let client = negotiated(&server);
    let (reader, writer) = pipe();
    send_with_files(
        client.stream(),
        br#"{"execute":"return-files","id":1}"#,
        &[&writer],
    );
    drop(writer);
    let mut buffer = [0u8; 256];
    let (count, received) = receive_with_files(client.stream(), &mut buffer);
    assert_eq!(&buffer[..count], b"{\"return\": {}, \"id\": 1}\r\n");
    assert_eq!(received.len(), 1, "one descriptor comes back");
    // The one that came back is the pipe's write end: closing it is EOF.
    drop(received);
    assert!(writers_closed(&reader, WAIT));
}

#[test]
fn clients_beyond_the_maximum_wait_in_the_backlog() {
    let server = Server::start_with_max("max", FakeMonitor::default(), 2);
    let first = negotiated(&server);
    let _second = negotiated(&server);
    // The third connects, and sends at once; it is served only later.
    let mut third = Client::open(&server.path);
    third.send(r#"{"execute":"qmp_capabilities","id":"early"}"#);
    third.expect_silence(Duration::from_millis(300));
    drop(first);
    assert!(third.read_line().starts_with(r#"{"QMP": "#));
    assert_eq!(third.read_line(), r#"{"return": {}, "id": "early"}"#);
}
