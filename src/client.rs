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

/// Reads the client's commands until EOF and sends an answer to each, in
/// order. `negotiated` tells the event fan-out whether to include this client.
pub fn read_commands(
    client: u64,
    stream: UnixStream,
    monitor: &dyn Monitor,
    greeting: &str,
    output: &Output,
    negotiated: &AtomicBool,
) {
    if send(client, output, greeting.to_owned(), Vec::new()).is_err() {
        return;
    }
    let mut parser = qmp::Stream::new();
    let mut session = qmp::Session::new();
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
            let (line, returned) = answer(client, item, claimed, &mut session, monitor);
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
    client: u64,
    item: Parsed,
    files: Vec<OwnedFd>,
    session: &mut qmp::Session,
    monitor: &dyn Monitor,
) -> (String, Vec<OwnedFd>) {
    if let Parsed::Message(message) = &item {
        traffic!("client {client} -> {}", qmp::to_text(message).trim_end());
    }
    match session.handle(item) {
        Action::Reply(line) | Action::Refused { line, .. } => (line, Vec::new()),
        Action::Execute(command) => match monitor.execute(&command.json, files) {
            Ok(reply) => (command.reply(&reply.text), reply.files),
            Err(failure) => (command.error("GenericError", &failure.desc), Vec::new()),
        },
    }
}

fn send(client: u64, output: &Output, line: String, files: Vec<OwnedFd>) -> io::Result<()> {
    traffic!("client {client} <- {}", line.trim_end());
    output.reply(line, files)
}
