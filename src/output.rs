// SPDX-License-Identifier: LGPL-2.1-or-later
//! The sending side of one client connection.
//!
//! Lines are written straight from the thread that has them when nothing
//! is waiting: a reply by the client's reader (blocking, as QEMU's own
//! server blocks on a client that does not read), an event by the fan-out
//! (never blocking). Only what cannot go at once is queued, and the
//! client's writer thread drains the queue in order. A client whose queue
//! reaches `QUEUE_LINES` has stopped reading: it is cut off rather than
//! allowed to stall the others or grow our memory.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::ffi;

/// Lines that may wait for a client before it counts as not reading.
pub const QUEUE_LINES: usize = 64;

/// What became of an event offered to a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Sent, or queued to be sent.
    Accepted,
    /// The client has gone or is going.
    Closed,
    /// The queue is full: the client does not read.
    Overflow,
}

/// One client's output: the socket and the lines waiting for it.
pub struct Output {
    stream: UnixStream,
    state: Mutex<State>,
    /// Signalled on every change of `state`.
    changed: Condvar,
}

struct State {
    queue: VecDeque<Queued>,
    /// A thread is writing to the socket outside the lock.
    busy: bool,
    /// No more lines will come: the writer drains the queue and ends.
    closed: bool,
    /// The socket failed or the client was cut off.
    failed: bool,
}

struct Queued {
    line: Line,
    /// Bytes of `line` already sent.
    sent: usize,
}

enum Line {
    Reply(String, Vec<OwnedFd>),
    Event(Arc<str>),
}

impl Output {
    pub fn new(stream: UnixStream) -> Output {
        Output {
            stream,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                busy: false,
                closed: false,
                failed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a reply with `files` attached, after whatever is queued. Blocks
    /// while the client does not read. Err once the connection is broken.
    pub fn reply(&self, line: String, files: Vec<OwnedFd>) -> io::Result<()> {
        let mut state = self.lock();
        loop {
            if state.failed {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if !state.busy && state.queue.is_empty() {
                break;
            }
            if state.queue.len() < QUEUE_LINES {
                state.queue.push_back(Queued {
                    line: Line::Reply(line, files),
                    sent: 0,
                });
                self.changed.notify_all();
                return Ok(());
            }
            state = self.wait(state);
        }
        state.busy = true;
        drop(state);
        let written = write_line(&self.stream, &Line::Reply(line, files), 0);
        self.finish_write(&written);
        written
    }

    /// Offers an event; never blocks.
    pub fn event(&self, line: &Arc<str>) -> Delivery {
        let mut state = self.lock();
        if state.failed || state.closed {
            return Delivery::Closed;
        }
        if state.queue.len() >= QUEUE_LINES {
            return Delivery::Overflow;
        }
        let mut sent = 0;
        if !state.busy && state.queue.is_empty() {
            // Nobody else writes while we hold the lock and nothing is busy.
            match ffi::send_nonblocking(&self.stream, line.as_bytes()) {
                Ok(count) if count == line.len() => return Delivery::Accepted,
                Ok(count) => sent = count,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    state.failed = true;
                    let _ = self.stream.shutdown(Shutdown::Both);
                    self.changed.notify_all();
                    return Delivery::Closed;
                }
            }
        }
        state.queue.push_back(Queued {
            line: Line::Event(Arc::clone(line)),
            sent,
        });
        self.changed.notify_all();
        Delivery::Accepted
    }

    /// No more lines: the writer sends what is queued, then closes.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Cuts the connection now, dropping what is queued.
    pub fn cut(&self) {
        let mut state = self.lock();
        state.failed = true;
        state.queue.clear();
        let _ = self.stream.shutdown(Shutdown::Both);
        self.changed.notify_all();
    }

    /// Stops the client's input: its reader sees end-of-file.
    pub fn stop_input(&self) {
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    /// The writer thread: sends queued lines in order until closed and
    /// drained, or broken; then closes the connection, so that the client
    /// sees end-of-file, as with QEMU.
    pub fn drain(&self) {
        loop {
            let mut state = self.lock();
            let next = loop {
                if state.failed {
                    break None;
                }
                if !state.busy {
                    if let Some(next) = state.queue.pop_front() {
                        break Some(next);
                    }
                    if state.closed {
                        break None;
                    }
                }
                state = self.wait(state);
            };
            let Some(next) = next else { break };
            state.busy = true;
            // A reply waiting for room may go on.
            self.changed.notify_all();
            drop(state);
            let written = write_line(&self.stream, &next.line, next.sent);
            self.finish_write(&written);
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn finish_write(&self, written: &io::Result<()>) {
        let mut state = self.lock();
        state.busy = false;
        if written.is_err() {
            state.failed = true;
            state.queue.clear();
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        // Only queued lines (for the writer, or a reply waiting for room)
        // or a failure concern anyone: waking the writer after every
        // direct write would cost a context switch per command.
        if !state.queue.is_empty() || state.failed {
            self.changed.notify_all();
        }
    }
}

/// Writes `line` from byte `sent` on, blocking; files go with the first byte.
fn write_line(mut stream: &UnixStream, line: &Line, sent: usize) -> io::Result<()> {
    match line {
        Line::Reply(text, files) if sent == 0 && !files.is_empty() => {
            ffi::send_with_files(stream, text.as_bytes(), files)
        }
        Line::Reply(text, _) => stream.write_all(&text.as_bytes()[sent..]),
        Line::Event(text) => stream.write_all(&text.as_bytes()[sent..]),
    }
}
