// SPDX-License-Identifier: LGPL-2.1-or-later
//! One client connection: a reader that parses and answers commands in
//! order, and a writer that owns the socket's sending side.
//!
//! Everything sent to the client goes through its bounded queue, so replies
//! and events never interleave within a line. Knows nothing of libvirt.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use crate::ffi;
use crate::monitor::Monitor;
use crate::qmp::{self, Action, Parsed};

/// Lines waiting for a client; past this, a client that does not read
/// loses its events (and is disconnected) instead of growing our memory.
pub const QUEUE_LINES: usize = 64;

/// One line for the client, CRLF included.
pub enum Outgoing {
    /// A reply, with any file descriptors QEMU sent back with it.
    Reply(String, Vec<OwnedFd>),
    /// An event line, shared by every client it goes to.
    Event(Arc<str>),
}

impl Outgoing {
    fn text(&self) -> &str {
        match self {
            Outgoing::Reply(line, _) => line,
            Outgoing::Event(line) => line,
        }
    }
}

/// Reads the client's commands until EOF and queues an answer to each, in
/// order. `negotiated` tells the event fan-out whether to include this client.
pub fn read_commands(
    client: u64,
    stream: UnixStream,
    monitor: &dyn Monitor,
    greeting: &str,
    queue: &SyncSender<Outgoing>,
    negotiated: &AtomicBool,
) {
    if queue
        .send(Outgoing::Reply(greeting.to_owned(), Vec::new()))
        .is_err()
    {
        return;
    }
    let mut parser = qmp::Stream::new();
    let mut session = qmp::Session::new();
    let mut parsed = Vec::new();
    let mut buffer = [0u8; 4096];
    // Descriptors received and not yet claimed by a command: they belong
    // to the next item that completes, at or after the bytes they came with.
    let mut files = Vec::new();
    loop {
        let count = match ffi::receive(&stream, &mut buffer, &mut files) {
            Ok(0) => return,
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        parser.feed(&buffer[..count], &mut parsed);
        for item in parsed.drain(..) {
            let answer = answer(
                client,
                item,
                std::mem::take(&mut files),
                &mut session,
                monitor,
            );
            negotiated.store(session.negotiated(), Ordering::Release);
            if queue.send(answer).is_err() {
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
) -> Outgoing {
    if let Parsed::Message(message) = &item {
        traffic!("client {client} -> {}", qmp::to_text(message).trim_end());
    }
    match session.handle(item) {
        Action::Reply(line) => Outgoing::Reply(line, Vec::new()),
        Action::Execute(command) => match monitor.execute(&command.json, files) {
            Ok(reply) => Outgoing::Reply(command.reply(&reply.text), reply.files),
            Err(failure) => {
                Outgoing::Reply(command.error("GenericError", &failure.desc), Vec::new())
            }
        },
    }
}

/// Sends queued lines until the queue closes or the client goes away, then
/// closes the connection: the client sees EOF, as with QEMU.
pub fn write_lines(client: u64, mut stream: UnixStream, queue: Receiver<Outgoing>) {
    for outgoing in queue {
        let text = outgoing.text();
        traffic!("client {client} <- {}", text.trim_end());
        let sent = match &outgoing {
            Outgoing::Reply(line, files) if !files.is_empty() => {
                ffi::send_with_files(&stream, line.as_bytes(), files)
            }
            _ => stream.write_all(text.as_bytes()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
