// SPDX-License-Identifier: LGPL-2.1-or-later
//! One client session: the greeting, then commands parsed from the stream
//! and answered in order, locally or through the monitor.
//!
//! Everything sent goes through the client's `Output`, so replies and
//! events never interleave within a line. Knows nothing of libvirt.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ffi;
use crate::monitor::Monitor;
use crate::output::Output;
use crate::qmp::{self, Action, Parsed};

/// Who is at the other end of a connection, as the kernel says (SO_PEERCRED),
/// for the audit lines.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub client: u64,
    pub pid: i32,
    pub uid: u32,
}

/// Reads the client's commands until EOF and sends an answer to each, in
/// order, under `session`'s policy. `negotiated` tells the event fan-out
/// whether to include this client.
pub fn read_commands(
    peer: Peer,
    stream: UnixStream,
    monitor: &dyn Monitor,
    greeting: &str,
    output: &Output,
    negotiated: &AtomicBool,
    mut session: qmp::Session,
) {
    let client = peer.client;
    if send(client, output, greeting.to_owned(), Vec::new()).is_err() {
        return;
    }
    let mut parser = qmp::Stream::new();
    let mut parsed = Vec::new();
    let mut buffer = [0u8; 4096];
    // Descriptors received and not yet claimed by a command: they belong
    // to the next item that completes, at or after the bytes they came with.
    // As in QEMU's socket chardev, only the latest message that carried any
    // counts: its descriptors replace (and close) unclaimed older ones, so
    // a client can make us hold at most one message's worth.
    let mut files = Vec::new();
    let mut arrived = Vec::new();
    // Once input is stopped (at shutdown) nothing new is read; what was
    // read is still answered.
    while !output.input_stopped() {
        let count = match ffi::receive(&stream, &mut buffer, &mut arrived) {
            Ok(0) => return,
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if !arrived.is_empty() {
            std::mem::swap(&mut files, &mut arrived);
            arrived.clear();
        }
        parser.feed(&buffer[..count], &mut parsed);
        for item in parsed.drain(..) {
            let claimed = std::mem::take(&mut files);
            let (line, returned) = answer(peer, item, claimed, &mut session, monitor);
            negotiated.store(session.negotiated(), Ordering::Release);
            if send(client, output, line, returned).is_err() {
                return;
            }
        }
    }
}

/// Answers one parsed item: locally, or through the guest's monitor with
/// `files` attached. Files of an item answered locally are closed.
fn answer(
    peer: Peer,
    item: Parsed,
    files: Vec<OwnedFd>,
    session: &mut qmp::Session,
    monitor: &dyn Monitor,
) -> (String, Vec<OwnedFd>) {
    if let Parsed::Message(message) = &item {
        traffic!(
            "client {} -> {}",
            peer.client,
            qmp::to_text(message).trim_end()
        );
    }
    match session.handle(item) {
        Action::Reply(line) => (line, Vec::new()),
        Action::Refused {
            line,
            name,
            id,
            reason,
        } => {
            info!(
                "{} refused {}: {reason}",
                audited(peer, id.as_deref()),
                shown(&name)
            );
            (line, Vec::new())
        }
        Action::Execute(command) => {
            if !command.read_only {
                let who = audited(peer, command.audit_id().as_deref());
                info!("{who} ran {}", shown(&command.name));
            }
            match monitor.execute(&command.json, files) {
                Ok(reply) => (command.reply(&reply.text), reply.files),
                Err(failure) => (command.error("GenericError", &failure.desc), Vec::new()),
            }
        }
    }
}

/// Most bytes of a client-chosen command name shown in the log.
const SHOWN_NAME_BYTES: usize = 200;

/// `client N (uid U, pid P)` and, after the command, its id: the audit
/// never shows arguments, which can hold secrets (`set_password`, the data
/// of a secret object).
fn audited(peer: Peer, id: Option<&str>) -> String {
    let Peer { client, pid, uid } = peer;
    match id {
        Some(id) => format!("client {client} (uid {uid}, pid {pid}, id {id})"),
        None => format!("client {client} (uid {uid}, pid {pid})"),
    }
}

/// A client-chosen command name as the log shows it: quoted, escaped, cut.
fn shown(name: &str) -> String {
    let mut end = name.len().min(SHOWN_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", &name[..end])
}

fn send(client: u64, output: &Output, line: String, files: Vec<OwnedFd>) -> io::Result<()> {
    traffic!("client {client} <- {}", line.trim_end());
    output.reply(line, files)
}
