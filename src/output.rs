// SPDX-License-Identifier: LGPL-2.1-or-later
//! The sending side of one client connection.
//!
//! Lines are written straight from the thread that has them when nothing
//! is waiting: a reply by the client's reader (blocking, as QEMU's own
//! server blocks on a client that does not read), an event by the fan-out
//! (never blocking). Only what cannot go at once is queued, and the
//! client's writer thread drains the queue in order. A client whose queue
//! reaches `QUEUE_LINES` has stopped reading: it is cut off rather than
//! allowed to stall the others or grow our memory. Whatever ends the
//! connection, a line is never cut in the middle except by `cut`, which is
//! for clients that do not read. Knows nothing of sessions or the server.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::{ffi, sync};

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
    /// Signalled on every change of `state` that a waiter may act on.
    changed: Condvar,
    /// Set by `stop_input`: the reader starts no new read.
    input_stopped: AtomicBool,
}

struct State {
    queue: VecDeque<Queued>,
    /// A thread is writing to the socket outside the lock.
    busy: bool,
    phase: Phase,
}

/// Where the connection stands; it only ever moves down this list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Lines come and go.
    Open,
    /// No more lines will come: the writer drains the queue, then closes.
    Closing,
    /// Ended at shutdown: the line being written is finished, the rest is
    /// dropped, then the writer closes.
    Finishing,
    /// The socket failed or was shut: nothing more is sent.
    Failed,
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
                phase: Phase::Open,
            }),
            changed: Condvar::new(),
            input_stopped: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        sync::wait(&self.changed, state)
    }

    /// Sends a reply with `files` attached, after whatever is queued. Blocks
    /// while the client does not read. Err once the connection is broken
    /// or ending: the reply is then dropped whole.
    pub fn reply(&self, line: String, files: Vec<OwnedFd>) -> io::Result<()> {
        let mut state = self.lock();
        loop {
            if state.phase != Phase::Open {
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
        if state.phase != Phase::Open {
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
                    self.fail(&mut state);
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
        let mut state = self.lock();
        if state.phase == Phase::Open {
            state.phase = Phase::Closing;
        }
        self.changed.notify_all();
    }

    /// Ends the connection at shutdown without cutting a line: the line
    /// being written (or partly sent) is finished, what waits behind it is
    /// dropped, and later lines are refused; then the writer closes.
    pub fn finish(&self) {
        let mut state = self.lock();
        if state.phase == Phase::Failed {
            return;
        }
        state.phase = Phase::Finishing;
        let started = state.queue.front().is_some_and(|next| next.sent > 0);
        state.queue.truncate(usize::from(started));
        self.changed.notify_all();
    }

    /// Cuts the connection now, dropping what is queued, even in the middle
    /// of a line: for a client that does not read.
    pub fn cut(&self) {
        let mut state = self.lock();
        self.fail(&mut state);
    }

    fn fail(&self, state: &mut State) {
        state.phase = Phase::Failed;
        state.queue.clear();
        let _ = self.stream.shutdown(Shutdown::Both);
        self.changed.notify_all();
    }

    /// Stops the client's input: the reader starts no new read, and one
    /// blocked in a read sees end-of-file. The client's later writes fail.
    pub fn stop_input(&self) {
        self.input_stopped.store(true, Ordering::Release);
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    /// Whether `stop_input` was called.
    pub fn input_stopped(&self) -> bool {
        self.input_stopped.load(Ordering::Acquire)
    }

    /// The writer thread: sends queued lines in order until closed and
    /// drained, finished, or broken; then closes the connection, so that
    /// the client sees end-of-file, as with QEMU.
    pub fn drain(&self) {
        loop {
            let mut state = self.lock();
            let next = loop {
                if state.phase == Phase::Failed {
                    break None;
                }
                if !state.busy {
                    if let Some(next) = state.queue.pop_front() {
                        break Some(next);
                    }
                    if state.phase != Phase::Open {
                        break None;
                    }
                }
                state = self.wait(state);
            };
            let Some(next) = next else {
                self.fail(&mut state);
                return;
            };
            state.busy = true;
            // A reply waiting for room may go on.
            self.changed.notify_all();
            drop(state);
            let written = write_line(&self.stream, &next.line, next.sent);
            self.finish_write(&written);
        }
    }

    fn finish_write(&self, written: &io::Result<()>) {
        let mut state = self.lock();
        state.busy = false;
        if written.is_err() {
            self.fail(&mut state);
            return;
        }
        // Only queued lines (for the writer, or a reply waiting for room)
        // or an ending concern anyone: waking the writer after every direct
        // write would cost a context switch per command.
        if !state.queue.is_empty() || state.phase != Phase::Open {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// An event far larger than a socket's buffer, so that it is sent partly.
    fn big_event(tag: char) -> Arc<str> {
        let mut line = format!(r#"{{"event": "{tag}", "data": ""#);
        line.extend(std::iter::repeat_n(tag, 1 << 20));
        line.push_str("\"}\r\n");
        line.into()
    }

    /// Our end in an `Output` with its writer thread running, and the peer.
    fn with_writer() -> (Arc<Output>, thread::JoinHandle<()>, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        let output = Arc::new(Output::new(ours));
        let writer = {
            let output = Arc::clone(&output);
            thread::spawn(move || output.drain())
        };
        (output, writer, peer)
    }

    /// Everything the peer receives until end-of-file, with the descriptors.
    fn receive_all(peer: &UnixStream) -> (Vec<u8>, Vec<OwnedFd>) {
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let (mut bytes, mut files) = (Vec::new(), Vec::new());
        let mut buffer = [0u8; 65536];
        loop {
            let count =
                ffi::receive(peer, &mut buffer, &mut files).expect("EOF before the timeout");
            if count == 0 {
                return (bytes, files);
            }
            bytes.extend_from_slice(&buffer[..count]);
        }
    }

    #[test]
    fn an_event_partly_sent_then_a_reply_arrive_whole_and_in_order() {
        let (output, writer, peer) = with_writer();
        let event = big_event('e');
        assert_eq!(output.event(&event), Delivery::Accepted);
        output
            .reply("{\"return\": {}}\r\n".into(), Vec::new())
            .unwrap();
        output.close();
        let (bytes, _) = receive_all(&peer);
        writer.join().unwrap();
        let expected = format!("{event}{{\"return\": {{}}}}\r\n");
        assert!(bytes == expected.as_bytes(), "lines mixed or cut");
    }

    #[test]
    fn event_overflows_at_the_queue_bound() {
        let (ours, _peer) = UnixStream::pair().unwrap();
        let output = Output::new(ours);
        // The first fills the socket and stays queued for its rest.
        assert_eq!(output.event(&big_event('a')), Delivery::Accepted);
        let small: Arc<str> = "{\"event\": \"X\"}\r\n".into();
        for _ in 1..QUEUE_LINES {
            assert_eq!(output.event(&small), Delivery::Accepted);
        }
        assert_eq!(output.event(&small), Delivery::Overflow);
    }

    #[test]
    fn close_drains_what_is_queued_then_the_peer_sees_eof() {
        let (ours, peer) = UnixStream::pair().unwrap();
        let output = Arc::new(Output::new(ours));
        let first = big_event('a');
        let second: Arc<str> = "{\"event\": \"B\"}\r\n".into();
        output.event(&first);
        output.event(&second);
        output.close();
        // The writer starts only now: closing did not drop the queue.
        let writer = {
            let output = Arc::clone(&output);
            thread::spawn(move || output.drain())
        };
        let (bytes, _) = receive_all(&peer);
        writer.join().unwrap();
        assert!(bytes == format!("{first}{second}").as_bytes());
    }

    #[test]
    fn cut_drops_what_is_queued() {
        let (output, writer, peer) = with_writer();
        let first = big_event('a');
        output.event(&first);
        output.event(&"{\"event\": \"QUEUED\"}\r\n".into());
        output.cut();
        let (bytes, _) = receive_all(&peer);
        writer.join().unwrap();
        assert!(bytes.len() < first.len(), "the cut came too late");
        assert!(!bytes.ends_with(b"QUEUED\"}\r\n"));
        assert!(output.reply("{}\r\n".into(), Vec::new()).is_err());
    }

    #[test]
    fn finish_completes_the_line_in_progress_and_drops_the_rest() {
        let (output, writer, peer) = with_writer();
        let first = big_event('a');
        output.event(&first);
        output.event(&"{\"event\": \"LATER\"}\r\n".into());
        output.finish();
        assert_eq!(output.event(&"{}\r\n".into()), Delivery::Closed);
        assert!(output.reply("{}\r\n".into(), Vec::new()).is_err());
        let (bytes, _) = receive_all(&peer);
        writer.join().unwrap();
        assert!(
            bytes == first.as_bytes(),
            "not the first line whole and alone"
        );
    }

    #[test]
    fn a_reply_with_files_behind_a_queued_event_carries_its_files() {
        let (output, writer, peer) = with_writer();
        let event = big_event('e');
        output.event(&event);
        let (file, _other) = UnixStream::pair().unwrap();
        let reply = "{\"return\": {}}\r\n";
        output
            .reply(reply.into(), vec![OwnedFd::from(file)])
            .unwrap();
        output.close();
        let (bytes, files) = receive_all(&peer);
        writer.join().unwrap();
        assert!(bytes == format!("{event}{reply}").as_bytes());
        assert_eq!(files.len(), 1, "the reply's descriptor was lost");
    }
}
