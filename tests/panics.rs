// SPDX-License-Identifier: LGPL-2.1-or-later
//! A panic stays in its thread: a command whose monitor call panics ends
//! that client's connection cleanly (end-of-file, its --max-clients slot
//! given back) and the server still stops on a notice. Runs `server::serve`
//! over real UNIX sockets with a fake monitor that panics on one command.

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::Client;
use virt_qemu_qmp_proxy::monitor::{Failure, Monitor, Reply};
use virt_qemu_qmp_proxy::notice::Notice;
use virt_qemu_qmp_proxy::qmp;
use virt_qemu_qmp_proxy::server::{self, Stop};

const VERSION: &str = r#"{"qemu":{"micro":22,"minor":2,"major":7},"package":"fake"}"#;

/// Panics on `panic`, answers anything else with an empty return.
struct PanickingMonitor;

impl Monitor for PanickingMonitor {
    fn execute(&self, command: &str, _files: Vec<OwnedFd>) -> Result<Reply, Failure> {
        if command.contains(r#""execute":"panic""#) {
            panic!("the fake monitor panics on purpose");
        }
        Ok(Reply {
            text: r#"{"return":{},"id":"libvirt-1"}"#.into(),
            files: Vec::new(),
        })
    }
}

#[test]
fn a_panicking_command_ends_its_client_and_frees_its_slot() {
    let path = common::socket_path("panicking-command");
    let listener = UnixListener::bind(&path).unwrap();
    let (notices, receiver) = mpsc::channel();
    let server = thread::spawn(move || {
        server::serve(
            &listener,
            std::sync::Arc::new(PanickingMonitor),
            qmp::greeting(VERSION),
            receiver,
            1,
        )
    });
    let mut victim = Client::connect_negotiated(&path);
    victim.send(br#"{"execute":"panic","id":1}"#);
    victim.expect_eof(Duration::from_secs(10));
    // The only slot is free again: a new client is greeted and served.
    let mut next = Client::connect_negotiated(&path);
    assert_eq!(
        next.command(r#"{"execute":"query-status","id":2}"#),
        serde_json::json!({"return": {}, "id": 2})
    );
    notices.send(Notice::Signal(libc::SIGTERM)).unwrap();
    let stop = server
        .join()
        .expect("serve returns")
        .expect("serve succeeds");
    assert_eq!(stop, Stop::Signal(libc::SIGTERM));
    next.expect_eof(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
