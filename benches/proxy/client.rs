// SPDX-License-Identifier: LGPL-2.1-or-later
//! The load generator's QMP client: one UnixStream per client, greeting
//! read and capabilities negotiated, then commands answered one at a time;
//! and the event fan-out measurement, which watches many clients from one
//! thread with epoll(7) so that the bench's own threads do not add to the
//! spread it measures.
//!
//! Replies and events are told apart by their first member, as QEMU and
//! the original tool write them: replies start with `{"return"`,
//! `{"error"` or `{"id"`, events with `{"timestamp"` or `{"event"`.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stats::micros;

/// How long any single read may block before the bench gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

pub const QUERY_STATUS: &[u8] = b"{\"execute\":\"query-status\",\"id\":1}\r\n";
pub const QUERY_SCHEMA: &[u8] = b"{\"execute\":\"query-qmp-schema\",\"id\":2}\r\n";
const CAPABILITIES: &[u8] = b"{\"execute\":\"qmp_capabilities\"}\r\n";
const STOP: &[u8] = b"{\"execute\":\"stop\",\"id\":3}\r\n";
const CONT: &[u8] = b"{\"execute\":\"cont\",\"id\":4}\r\n";

/// What a line from the server is.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Greeting,
    Event,
    Return,
    Error,
}

fn kind(line: &[u8]) -> Kind {
    if line.starts_with(b"{\"QMP\"") {
        Kind::Greeting
    } else if line.starts_with(b"{\"timestamp\"") || line.starts_with(b"{\"event\"") {
        Kind::Event
    } else if line.starts_with(b"{\"error\"")
        || (line.starts_with(b"{\"id\"") && contains(line, b"\"error\""))
    {
        Kind::Error
    } else {
        Kind::Return
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A negotiated QMP connection.
pub struct Client {
    stream: UnixStream,
    buffer: Vec<u8>,
    /// Start of the unread bytes in `buffer`.
    start: usize,
}

impl Client {
    /// Connects to `path`, reads the greeting and negotiates capabilities.
    pub fn connect(path: &Path) -> Result<Client, String> {
        let stream = UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
        let mut client = Client::greeted(stream)?;
        client.negotiate()?;
        Ok(client)
    }

    /// Wraps a connected stream and reads up to the greeting. Events sent
    /// before it are skipped: the original tool queues the events that came
    /// while it had no client and sends them to the next one first.
    pub fn greeted(stream: UnixStream) -> Result<Client, String> {
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        let mut client = Client {
            stream,
            buffer: Vec::with_capacity(64 * 1024),
            start: 0,
        };
        loop {
            let line = client
                .read_line()
                .map_err(|e| format!("no greeting: {e}"))?;
            match kind(line) {
                Kind::Greeting => return Ok(client),
                Kind::Event => continue,
                _ => {
                    return Err(format!(
                        "expected a greeting, got {}",
                        String::from_utf8_lossy(line)
                    ))
                }
            }
        }
    }

    fn negotiate(&mut self) -> Result<(), String> {
        self.stream
            .write_all(CAPABILITIES)
            .map_err(|e| format!("cannot send qmp_capabilities: {e}"))?;
        loop {
            let line = self
                .read_line()
                .map_err(|e| format!("no reply to qmp_capabilities: {e}"))?;
            match kind(line) {
                Kind::Event => continue,
                _ if line.trim_ascii_end() == b"{\"return\": {}}" => return Ok(()),
                _ => {
                    return Err(format!(
                        "qmp_capabilities answered {}",
                        String::from_utf8_lossy(line).trim_end()
                    ))
                }
            }
        }
    }

    /// Sends `command` and waits for its reply, skipping events; returns
    /// the reply's length in bytes (CRLF included). A QMP error is an error.
    pub fn call(&mut self, command: &[u8]) -> Result<usize, String> {
        self.stream
            .write_all(command)
            .map_err(|e| format!("cannot send: {e}"))?;
        loop {
            let line = self.read_line().map_err(|e| format!("no reply: {e}"))?;
            match kind(line) {
                Kind::Return => return Ok(line.len()),
                Kind::Event => continue,
                Kind::Error | Kind::Greeting => {
                    let text = String::from_utf8_lossy(&line[..line.len().min(300)]).into_owned();
                    return Err(format!("unexpected reply {}", text.trim_end()));
                }
            }
        }
    }

    /// Sends `message` and returns the first line after it that is not an
    /// event, whatever it says, waiting up to `timeout` for it.
    pub fn answer(&mut self, message: &[u8], timeout: Duration) -> Result<String, String> {
        self.stream
            .write_all(message)
            .map_err(|e| format!("cannot send: {e}"))?;
        let _ = self.stream.set_read_timeout(Some(timeout));
        let answer = loop {
            let line = self.read_line().map_err(|e| format!("no reply: {e}"))?;
            if !matches!(kind(line), Kind::Event) {
                break String::from_utf8_lossy(line).trim_end().to_owned();
            }
        };
        let _ = self.stream.set_read_timeout(Some(READ_TIMEOUT));
        Ok(answer)
    }

    /// The next complete line, LF included; blocks.
    fn read_line(&mut self) -> io::Result<&[u8]> {
        // Unread bytes already searched for a newline.
        let mut searched = 0;
        loop {
            let from = self.start + searched;
            if let Some(at) = self.buffer[from..].iter().position(|&b| b == b'\n') {
                let line = self.start..from + at + 1;
                self.start = line.end;
                return Ok(&self.buffer[line]);
            }
            searched = self.buffer.len() - self.start;
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
        }
    }

    /// Reads once into the buffer, dropping what was consumed; returns the
    /// byte count (0 at EOF).
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let old = self.buffer.len();
        self.buffer.resize(old + 64 * 1024, 0);
        loop {
            match self.stream.read(&mut self.buffer[old..]) {
                Ok(count) => {
                    self.buffer.truncate(old + count);
                    return Ok(count);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buffer.truncate(old);
                    return Err(e);
                }
            }
        }
    }

    /// Reads what is there without blocking and hands each complete line
    /// to `each`; returns false at EOF.
    fn drain_available(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<bool> {
        let mut open = true;
        loop {
            match self.fill() {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        while let Some(at) = self.buffer[self.start..].iter().position(|&b| b == b'\n') {
            let end = self.start + at + 1;
            each(&self.buffer[self.start..end]);
            self.start = end;
        }
        Ok(open)
    }
}

/// Figure 9: `tries` pairs of `stop` and `cont`; returns how often STOP
/// came before stop's reply and RESUME before cont's.
pub fn order(client: &mut Client, tries: usize) -> Result<(usize, usize), String> {
    let seen = order_each(client, tries)?;
    let count = |slot: usize| seen.iter().filter(|tried| tried[slot]).count();
    Ok((count(0), count(1)))
}

/// `tries` pairs of `stop` and `cont`; returns for each whether STOP came
/// before stop's reply and RESUME before cont's. A late event is waited
/// for, so that it is not taken for the next command's.
pub fn order_each(client: &mut Client, tries: usize) -> Result<Vec<[bool; 2]>, String> {
    let mut outcomes = Vec::with_capacity(tries);
    for _ in 0..tries {
        let mut first = [false, false];
        for (slot, (command, event)) in [(STOP, &b"\"STOP\""[..]), (CONT, &b"\"RESUME\""[..])]
            .into_iter()
            .enumerate()
        {
            client
                .stream
                .write_all(command)
                .map_err(|e| format!("cannot send: {e}"))?;
            let (mut seen, mut replied) = (false, false);
            while !(seen && replied) {
                let line = client.read_line().map_err(|e| format!("no reply: {e}"))?;
                match kind(line) {
                    Kind::Event if contains(line, event) => {
                        seen = true;
                        first[slot] = !replied;
                    }
                    Kind::Event => {}
                    Kind::Return => replied = true,
                    Kind::Error | Kind::Greeting => {
                        let text = String::from_utf8_lossy(line).trim_end().to_owned();
                        return Err(format!("unexpected reply {text}"));
                    }
                }
            }
        }
        outcomes.push(first);
    }
    Ok(outcomes)
}

/// One STOP as the clients saw it.
pub struct Delivery {
    /// First to last client receiving it, µs.
    pub spread: f64,
    /// From sending `stop` to the last client receiving STOP, µs.
    pub latency: f64,
}

/// Runs `cycles` stop/cont pairs from `clients[0]` while every client
/// listens; returns one `Delivery` per STOP. The guest is running again
/// when it returns.
pub fn fan_out(clients: &mut [Client], cycles: usize) -> Result<Vec<Delivery>, String> {
    for client in clients.iter() {
        client
            .stream
            .set_nonblocking(true)
            .map_err(|e| format!("cannot make a client non-blocking: {e}"))?;
    }
    let mut deliveries = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        for (command, event) in [(STOP, &b"\"STOP\""[..]), (CONT, &b"\"RESUME\""[..])] {
            let (sent, seen) = broadcast_once(clients, command, event)?;
            if event == b"\"STOP\"" {
                let first = seen.iter().min().copied().unwrap_or(sent);
                let last = seen.iter().max().copied().unwrap_or(sent);
                deliveries.push(Delivery {
                    spread: micros(last - first),
                    latency: micros(last - sent),
                });
            }
        }
    }
    for client in clients.iter() {
        let _ = client.stream.set_nonblocking(false);
    }
    Ok(deliveries)
}

/// Sends `command` on the first client and waits until its reply and
/// `event` on every client have come; returns when it was sent and when
/// each client received the event. epoll keeps the bench's cost per
/// delivery independent of the number of clients.
fn broadcast_once(
    clients: &mut [Client],
    command: &[u8],
    event: &[u8],
) -> Result<(Instant, Vec<Instant>), String> {
    let epoll = Epoll::new(clients)?;
    let mut ready = vec![libc::epoll_event { events: 0, u64: 0 }; clients.len()];
    let mut seen: Vec<Option<Instant>> = vec![None; clients.len()];
    let mut missing = clients.len();
    let mut replied = false;
    let sent = Instant::now();
    write_nonblocking(&mut clients[0].stream, command)?;
    let deadline = sent + READ_TIMEOUT;
    while missing > 0 || !replied {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{} of {} clients saw no {} within {READ_TIMEOUT:?}",
                missing,
                clients.len(),
                String::from_utf8_lossy(event)
            ));
        }
        let count = epoll.wait(&mut ready, left.as_millis().min(1000) as i32)?;
        for entry in &ready[..count] {
            let index = entry.u64 as usize;
            let mut failure = None;
            let mut got_event = false;
            let open = clients[index]
                .drain_available(|line| match kind(line) {
                    Kind::Event if contains(line, event) => got_event = true,
                    Kind::Return if index == 0 => replied = true,
                    Kind::Error => {
                        failure = Some(String::from_utf8_lossy(line).trim_end().to_owned())
                    }
                    _ => {}
                })
                .map_err(|e| format!("client {index}: {e}"))?;
            let now = Instant::now();
            if let Some(failure) = failure {
                return Err(format!("client {index} got {failure}"));
            }
            if got_event && seen[index].is_none() {
                seen[index] = Some(now);
                missing -= 1;
            }
            if !open {
                return Err(format!("client {index} was disconnected"));
            }
        }
    }
    Ok((sent, seen.into_iter().flatten().collect()))
}

/// An epoll instance watching every client for input; each event carries
/// the client's index.
struct Epoll(std::os::fd::OwnedFd);

impl Epoll {
    fn new(clients: &[Client]) -> Result<Epoll, String> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the result is checked and owned at once.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let epoll = Epoll(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) });
        for (index, client) in clients.iter().enumerate() {
            let mut interest = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: index as u64,
            };
            // SAFETY: both descriptors are open; `interest` is a valid epoll_event.
            let added = unsafe {
                libc::epoll_ctl(
                    epoll.0.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    client.stream.as_raw_fd(),
                    &mut interest,
                )
            };
            if added < 0 {
                return Err(format!("epoll_ctl: {}", io::Error::last_os_error()));
            }
        }
        Ok(epoll)
    }

    /// Waits up to `timeout` ms; returns how many entries of `ready` are set.
    fn wait(&self, ready: &mut [libc::epoll_event], timeout: i32) -> Result<usize, String> {
        loop {
            // SAFETY: `ready` is a live, writable array of `ready.len()` entries.
            let count = unsafe {
                libc::epoll_wait(
                    self.0.as_raw_fd(),
                    ready.as_mut_ptr(),
                    ready.len() as i32,
                    timeout,
                )
            };
            if count >= 0 {
                return Ok(count as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("epoll_wait: {e}"));
            }
        }
    }
}

fn write_nonblocking(stream: &mut UnixStream, mut bytes: &[u8]) -> Result<(), String> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(count) => bytes = &bytes[count..],
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => return Err(format!("cannot send: {e}")),
        }
    }
    Ok(())
}
