// SPDX-License-Identifier: LGPL-2.1-or-later
//! The soak: many clients at once on one proxy in front of a real guest,
//! each running thousands of pipelined commands with ids, one client
//! stopping and continuing the guest so that events flow all the time,
//! clients leaving (cleanly, abruptly, by half-closing) and coming back at
//! random, and a few that stop reading until the proxy cuts them off. Then:
//! every reply came, with the right id, in order; every client got the
//! STOP/RESUME pairs it must have got, in order; and the proxy's private
//! memory, threads and descriptors are back to their level.
//!
//! Its size comes from the environment, so that `make check` runs a short
//! soak and `make soak` the full one (64 clients, 5000 commands each):
//!
//! * `QMP_SOAK_CLIENTS`  connections at once, the stopper included (12)
//! * `QMP_SOAK_COMMANDS` commands per client (120)
//! * `QMP_SOAK_WARMUP`   commands per client in the warm-up run (a tenth, at least 40)
//! * `QMP_SOAK_DEAF`     clients that stop reading once (clients / 16, at least 2)
//! * `QMP_SOAK_SEED`     the seed of the clients' random choices (printed)
//! * `QMP_SOAK_TIMEOUT`  seconds before the soak fails as stuck (from the size)
//! * `QMP_SOAK_SMAPS`    a folder to save the proxy's /proc/PID/smaps in, at
//!   the start, after the warm-up and at the end: to see where memory grew
//!
//! Definitions. A *session* is one connection of a client, from its
//! negotiation to its close. The *reference* is the sequence of STOP and
//! RESUME events the stopper received (it is connected throughout); every
//! session's STOP/RESUME events must be a contiguous run of it: none
//! missing in between, none repeated, none out of order. A session must
//! moreover hold every pair whose `stop` was sent after its negotiation
//! and whose RESUME reached the stopper more than `MARGIN` before the
//! session's last answered command was sent (the proxy queues an event to
//! all clients at once, so by then it was queued ahead of that reply). The
//! clients that stay connected for the whole run negotiate before the
//! first pair and end after the last one: they must hold the reference
//! exactly.
//!
//! Clients: the stopper; `QMP_SOAK_DEAF` deaf ones, which at a random
//! point stop reading until the proxy cuts them off, then come back; and
//! the others, alternately steady (one session) and reconnecting (leaving
//! at random: closing with every reply read, closing with a batch
//! unanswered, or half-closing and reading the answers to EOF). Each sends
//! batches of 1 to 8 commands with ids `cN-K` in one write, and checks
//! every answer as it comes.
//!
//! Memory, threads and descriptors: the same load runs twice on one
//! proxy, a short warm-up and then the soak; the proxy's private memory
//! (Private_Clean + Private_Dirty) after the soak, every client gone, may
//! exceed its level after the warm-up by `MEMORY_GROWTH_KIB`, and its
//! threads and descriptors must be back to their number at the start.
//!
//! Duration: the guest's monitor answers one command at a time, about 750
//! to 1000 a second here with 64 clients; the full soak (320 000 commands
//! and its 32 000-command warm-up) takes 7 to 9 minutes, the short one
//! about 15 seconds.

mod common;

use std::collections::HashMap;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{self, Usage};
use common::{Client, Guest, Proxy, ReadEnd};
use serde_json::Value;

/// How much later than the stopper a client may see an event (see the
/// file's documentation): far more than the proxy takes to queue one event
/// for every client, even on a loaded machine.
const MARGIN: Duration = Duration::from_millis(500);

/// How long the stopper waits after its last pair before telling the
/// clients to finish: more than `MARGIN`, so that the last pair is owed too.
const LAST_PAIR_WAIT: Duration = Duration::from_millis(700);

/// The pause between two STOP/RESUME pairs.
const PAIR_PAUSE: Duration = Duration::from_millis(15);

/// How long one read may wait: 64 clients share a monitor that answers
/// about 1000 commands a second, and the mutex in front of it is not fair.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Most commands in one write.
const MAX_BATCH: usize = 8;

/// Most the proxy's private memory may grow over the soak (KiB), from its
/// level after the warm-up run to its level after the soak run.
const MEMORY_GROWTH_KIB: u64 = 512;

/// The soak's size and seed.
#[derive(Debug, Clone)]
struct Settings {
    clients: usize,
    commands: usize,
    warmup: usize,
    deaf: usize,
    /// Times a reconnecting client leaves and comes back, on average.
    leaves: usize,
    seed: u64,
    timeout: Duration,
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")),
    )
}

impl Settings {
    fn from_env() -> Settings {
        let clients = env_number("QMP_SOAK_CLIENTS").map_or(12, |n| n as usize);
        let commands = env_number("QMP_SOAK_COMMANDS").map_or(120, |n| n as usize);
        let warmup = env_number("QMP_SOAK_WARMUP").map_or((commands / 10).max(40), |n| n as usize);
        let deaf = env_number("QMP_SOAK_DEAF").map_or((clients / 16).max(2), |n| n as usize);
        assert!(
            clients >= deaf + 3,
            "QMP_SOAK_CLIENTS={clients}: the stopper, {deaf} deaf clients and at least \
             one steady and one reconnecting client are needed"
        );
        assert!(commands >= 1 && warmup >= 1, "no commands to run");
        // Generous: the guest's monitor runs about 1000 commands a second;
        // a soak 5 times slower than that is stuck.
        let total = (clients * (commands + warmup)) as u64;
        let timeout = env_number("QMP_SOAK_TIMEOUT").map_or(
            Duration::from_millis(120_000 + 5 * total),
            Duration::from_secs,
        );
        let seed = env_number("QMP_SOAK_SEED").unwrap_or(0x5eed_2026);
        Settings {
            clients,
            commands,
            warmup,
            deaf,
            leaves: (commands / 500).max(3),
            seed,
            timeout,
        }
    }
}

/// xorshift64*, seeded through splitmix64: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in 0..n.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn per_mille(&mut self, chance: usize) -> bool {
        self.below(1000) < chance
    }
}

/// A STOP or RESUME event, told apart from the others by its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Event {
    resume: bool,
    seconds: u64,
    micros: u64,
}

/// A STOP or RESUME event line as an `Event`; None for other events.
fn stop_or_resume(line: &Value) -> Option<Event> {
    let resume = match line["event"].as_str()? {
        "STOP" => false,
        "RESUME" => true,
        _ => return None,
    };
    let stamp = &line["timestamp"];
    Some(Event {
        resume,
        seconds: stamp["seconds"].as_u64().expect("seconds"),
        micros: stamp["microseconds"].as_u64().expect("microseconds"),
    })
}

/// A connection read with tests/common's line reader: whole lines with a
/// timeout, never losing a partial one; each line must be CRLF-terminated
/// JSON, and EOF must not cut a line.
struct Conn {
    client: Client,
}

enum Next {
    Line(Value),
    Timeout,
    Eof,
}

impl Conn {
    /// Connects to `path` and reads the greeting.
    fn open(path: &Path) -> Conn {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut conn = Conn {
            client: Client::from_stream(stream),
        };
        match conn.next(READ_TIMEOUT) {
            Next::Line(greeting) => assert!(greeting["QMP"].is_object(), "{greeting}"),
            Next::Timeout => panic!("no greeting within {READ_TIMEOUT:?}"),
            Next::Eof => panic!("closed before the greeting"),
        }
        conn
    }

    fn send(&mut self, text: &str) {
        self.client.send(text.as_bytes());
    }

    fn stream(&self) -> &UnixStream {
        self.client.stream()
    }

    /// The next line, parsed; waits at most `timeout`.
    fn next(&mut self, timeout: Duration) -> Next {
        match self.client.next_line(timeout) {
            Ok(line) => {
                assert!(line.ends_with(b"\r\n"), "not CRLF: {line:?}");
                let value = serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!("not JSON ({e}): {}", String::from_utf8_lossy(&line))
                });
                Next::Line(value)
            }
            Err(ReadEnd::Timeout(_)) => Next::Timeout,
            Err(ReadEnd::Eof(partial)) => {
                assert!(
                    partial.is_empty(),
                    "EOF after a partial line: {}",
                    String::from_utf8_lossy(&partial)
                );
                Next::Eof
            }
            Err(ReadEnd::Error(e)) => panic!("cannot read: {e}"),
        }
    }

    /// Whether the proxy has shut the connection down, looked at without
    /// reading (POLLHUP or POLLRDHUP); waits up to `timeout`.
    fn cut_off(&self, timeout: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.stream().as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: `poll` is one valid pollfd for the call.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) };
        ready == 1 && poll.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0
    }
}

/// What the soak's clients share.
struct Shared {
    path: PathBuf,
    deadline: Instant,
    /// Workers whose first session has negotiated.
    negotiated: AtomicUsize,
    /// Workers done with their commands (or failed).
    finished: AtomicUsize,
    /// Set by the stopper after its last pair: the workers finish.
    stopped: AtomicBool,
    /// Set when a thread fails, so that the others give up at once.
    failed: AtomicBool,
}

impl Shared {
    fn check_time(&self, who: &str) {
        assert!(
            !self.failed.load(Ordering::Relaxed),
            "{who}: giving up, another client failed"
        );
        assert!(
            Instant::now() < self.deadline,
            "{who}: the soak passed its time limit (QMP_SOAK_TIMEOUT)"
        );
    }
}

/// Marks a worker finished even when it panics, and a failure as such.
struct Finish<'a> {
    shared: &'a Shared,
    done: bool,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.shared.failed.store(true, Ordering::Relaxed);
        }
        if !self.done {
            self.shared.finished.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Connected from start to end: one session.
    Steady,
    /// Leaves and comes back at random.
    Reconnecting,
    /// Stops reading once, until the proxy cuts it off, then comes back.
    Deaf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The end of the run: after the stopper's last pair.
    Final,
    /// Closed with every reply read.
    Clean,
    /// Closed with a batch unanswered.
    Abrupt,
    /// Sent a batch, shut its sending side, read the answers and EOF.
    HalfClose,
    /// Stopped reading and was cut off by the proxy.
    CutOff,
}

/// One connection of one client, as the event check needs it.
#[derive(Debug)]
struct Session {
    client: usize,
    number: usize,
    role: Role,
    negotiated: Instant,
    /// When the last command whose reply was read was sent.
    synced: Option<Instant>,
    events: Vec<Event>,
    end: End,
}

/// What one worker did.
#[derive(Debug, Default)]
struct Report {
    sessions: Vec<Session>,
    /// Commands sent in batches, and how many of their replies were read.
    sent: usize,
    answered: usize,
    /// Ids used: commands sent, those that open sessions included.
    ids: usize,
    other_events: usize,
}

/// The commands the workers run, and what their replies must look like.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Status,
    Name,
    Kvm,
    Version,
    Unknown,
    /// Sent before negotiating: refused by the proxy itself.
    Early,
    Capabilities,
}

impl Kind {
    fn pick(rng: &mut Rng) -> Kind {
        match rng.below(20) {
            0..=11 => Kind::Status,
            12..=14 => Kind::Name,
            15 | 16 => Kind::Kvm,
            17 => Kind::Version,
            _ => Kind::Unknown,
        }
    }

    fn text(self, id: &str) -> String {
        let name = match self {
            Kind::Status | Kind::Early => "query-status",
            Kind::Name => "query-name",
            Kind::Kvm => "query-kvm",
            Kind::Version => "query-version",
            Kind::Unknown => "x-soak-no-such-command",
            Kind::Capabilities => "qmp_capabilities",
        };
        format!(r#"{{"execute":"{name}","id":"{id}"}}"#)
    }

    fn check(self, reply: &Value, id: &str) {
        assert_eq!(reply["id"], id, "a reply out of order: {reply}");
        let ok = match self {
            Kind::Status => reply["return"]["status"].is_string(),
            Kind::Name => reply["return"].is_object(),
            Kind::Kvm => reply["return"]["enabled"].is_boolean(),
            Kind::Version => reply["return"]["qemu"]["major"].is_u64(),
            Kind::Capabilities => reply["return"] == serde_json::json!({}),
            Kind::Unknown | Kind::Early => reply["error"]["class"] == "CommandNotFound",
        };
        assert!(ok, "{self:?} answered {reply}");
    }
}

/// One worker's state: its connection, session and counts.
struct Worker<'a> {
    index: usize,
    role: Role,
    shared: &'a Shared,
    rng: Rng,
    next_id: usize,
    conn: Conn,
    session: Session,
    report: Report,
}

impl<'a> Worker<'a> {
    fn new(index: usize, role: Role, seed: u64, shared: &'a Shared) -> Worker<'a> {
        let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (conn, session) = Worker::connect(index, role, 0, &mut rng, &mut 0, shared);
        Worker {
            index,
            role,
            shared,
            rng,
            next_id: 0,
            conn,
            session,
            report: Report::default(),
        }
    }

    fn who(&self) -> String {
        format!(
            "client {} ({:?}) session {}",
            self.index, self.role, self.session.number
        )
    }

    /// Opens a session: greeting, sometimes a command refused before
    /// negotiation, then `qmp_capabilities`.
    fn connect(
        index: usize,
        role: Role,
        number: usize,
        rng: &mut Rng,
        next_id: &mut usize,
        shared: &Shared,
    ) -> (Conn, Session) {
        shared.check_time(&format!("client {index}"));
        let mut conn = Conn::open(&shared.path);
        let mut batch = Vec::new();
        if rng.below(4) == 0 {
            batch.push(Kind::Early);
        }
        batch.push(Kind::Capabilities);
        let mut text = String::new();
        let ids: Vec<String> = batch
            .iter()
            .map(|kind| {
                let id = format!("c{index}-{}", *next_id);
                *next_id += 1;
                text.push_str(&kind.text(&id));
                id
            })
            .collect();
        conn.send(&text);
        for (kind, id) in batch.iter().zip(&ids) {
            // Not negotiated yet: no event can come first.
            match conn.next(READ_TIMEOUT) {
                Next::Line(reply) => kind.check(&reply, id),
                Next::Timeout => panic!("client {index}: no reply to {id}"),
                Next::Eof => panic!("client {index}: EOF before the reply to {id}"),
            }
        }
        let session = Session {
            client: index,
            number,
            role,
            negotiated: Instant::now(),
            synced: None,
            events: Vec::new(),
            end: End::Final,
        };
        (conn, session)
    }

    /// Ends the session as `end` and opens the next one.
    fn reconnect(&mut self, end: End) {
        self.session.end = end;
        let number = self.session.number + 1;
        let (conn, session) = Worker::connect(
            self.index,
            self.role,
            number,
            &mut self.rng,
            &mut self.next_id,
            self.shared,
        );
        // Closes the old connection, if it is not closed yet.
        self.conn = conn;
        let old = std::mem::replace(&mut self.session, session);
        self.report.sessions.push(old);
    }

    /// Records an event line; false if `line` is not an event.
    fn take_event(&mut self, line: &Value) -> bool {
        if line.get("event").is_none() {
            return false;
        }
        match stop_or_resume(line) {
            Some(event) => self.session.events.push(event),
            None => self.report.other_events += 1,
        }
        true
    }

    /// Sends a batch of commands in one write; returns their ids and kinds.
    fn send_batch(&mut self, size: usize) -> Vec<(String, Kind)> {
        let mut text = String::new();
        let batch: Vec<(String, Kind)> = (0..size)
            .map(|_| {
                let id = format!("c{}-{}", self.index, self.next_id);
                self.next_id += 1;
                let kind = Kind::pick(&mut self.rng);
                text.push_str(&kind.text(&id));
                (id, kind)
            })
            .collect();
        if self.rng.below(2) == 0 {
            text.push('\n');
        }
        self.conn.send(&text);
        self.report.sent += size;
        batch
    }

    /// Reads the replies to `batch`, in order, and the events among them.
    fn read_replies(&mut self, batch: &[(String, Kind)]) {
        for (id, kind) in batch {
            loop {
                match self.conn.next(READ_TIMEOUT) {
                    Next::Line(line) => {
                        if !self.take_event(&line) {
                            kind.check(&line, id);
                            self.report.answered += 1;
                            break;
                        }
                    }
                    Next::Timeout => panic!("{}: no reply to {id} in {READ_TIMEOUT:?}", self.who()),
                    Next::Eof => panic!("{}: EOF before the reply to {id}", self.who()),
                }
            }
        }
    }

    /// Reads whatever comes until EOF; only events may come.
    fn read_events_to_eof(&mut self) {
        loop {
            match self.conn.next(Duration::from_secs(10)) {
                Next::Line(line) => assert!(
                    self.take_event(&line),
                    "{}: an unexpected reply {line}",
                    self.who()
                ),
                Next::Timeout => panic!("{}: no EOF", self.who()),
                Next::Eof => return,
            }
        }
    }

    /// Stops reading until the proxy cuts the connection off (events keep
    /// coming from the stopper), then reads what was sent before the cut.
    fn go_deaf(&mut self) {
        let started = Instant::now();
        while !self.conn.cut_off(Duration::from_millis(100)) {
            self.shared.check_time(&self.who());
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{}: stopped reading for 2 minutes and was not cut off",
                self.who()
            );
        }
        self.read_events_to_eof();
        self.reconnect(End::CutOff);
    }

    /// Runs `commands` commands; a reconnecting client leaves `leaves`
    /// times on average (batches hold 4.5 commands on average).
    fn run(&mut self, commands: usize, leaves: usize) {
        let leave_per_mille = (leaves * 4500 / commands).clamp(1, 500);
        let deaf_at = (self.role == Role::Deaf).then(|| self.rng.below(commands));
        let mut went_deaf = false;
        while self.next_id < commands {
            self.shared.check_time(&self.who());
            if deaf_at.is_some_and(|at| self.next_id >= at) && !went_deaf {
                went_deaf = true;
                self.go_deaf();
                continue;
            }
            let size = (1 + self.rng.below(MAX_BATCH)).min(commands - self.next_id);
            let leave = self.role != Role::Steady && self.rng.per_mille(leave_per_mille);
            if !leave {
                let sent = Instant::now();
                let batch = self.send_batch(size);
                self.read_replies(&batch);
                self.session.synced = Some(sent);
                continue;
            }
            match self.rng.below(3) {
                0 => self.reconnect(End::Clean),
                1 => {
                    self.send_batch(size);
                    self.reconnect(End::Abrupt);
                }
                _ => {
                    let sent = Instant::now();
                    let batch = self.send_batch(size);
                    self.conn.stream().shutdown(Shutdown::Write).unwrap();
                    self.read_replies(&batch);
                    self.session.synced = Some(sent);
                    self.read_events_to_eof();
                    self.reconnect(End::HalfClose);
                }
            }
        }
    }

    /// Reads events until the stopper is done, then a last command.
    fn finish(&mut self) {
        while !self.shared.stopped.load(Ordering::Acquire) {
            self.shared.check_time(&self.who());
            match self.conn.next(Duration::from_millis(100)) {
                Next::Line(line) => assert!(
                    self.take_event(&line),
                    "{}: an unexpected reply {line}",
                    self.who()
                ),
                Next::Timeout => {}
                Next::Eof => panic!("{}: cut off while reading", self.who()),
            }
        }
        let sent = Instant::now();
        let id = format!("c{}-final", self.index);
        self.conn.send(&Kind::Status.text(&id));
        self.read_replies(&[(id, Kind::Status)]);
        self.session.synced = Some(sent);
        self.session.end = End::Final;
    }
}

fn run_worker(
    index: usize,
    role: Role,
    settings: &Settings,
    commands: usize,
    seed: u64,
    shared: &Shared,
) -> Report {
    let mut finish = Finish {
        shared,
        done: false,
    };
    let mut worker = Worker::new(index, role, seed, shared);
    shared.negotiated.fetch_add(1, Ordering::AcqRel);
    worker.run(commands, settings.leaves);
    shared.finished.fetch_add(1, Ordering::AcqRel);
    finish.done = true;
    worker.finish();
    let mut report = worker.report;
    report.ids = worker.next_id;
    report.sessions.push(worker.session);
    report
}

/// One STOP/RESUME pair, as the stopper saw it.
#[derive(Debug)]
struct Pair {
    stop_sent: Instant,
    resume_seen: Instant,
}

/// What the stopper saw: the pairs and the reference event sequence.
#[derive(Debug, Default)]
struct Reference {
    pairs: Vec<Pair>,
    events: Vec<Event>,
    other_events: usize,
}

impl Reference {
    /// Records an event line; false if `line` is not an event.
    fn take(&mut self, line: &Value) -> bool {
        if line.get("event").is_none() {
            return false;
        }
        match stop_or_resume(line) {
            Some(event) => {
                let n = self.events.len();
                assert_eq!(
                    event.resume,
                    n % 2 == 1,
                    "the stopper got {line} as event {n}: STOP and RESUME must alternate"
                );
                self.events.push(event);
            }
            None => self.other_events += 1,
        }
        true
    }

    /// Sends `execute` with `id` and reads up to its reply, `{"return": {}}`.
    fn command(&mut self, conn: &mut Conn, execute: &str, id: &str) {
        conn.send(&format!(r#"{{"execute":"{execute}","id":"{id}"}}"#));
        loop {
            match conn.next(READ_TIMEOUT) {
                Next::Line(line) => {
                    if !self.take(&line) {
                        assert_eq!(
                            line,
                            serde_json::json!({"return": {}, "id": id}),
                            "the stopper"
                        );
                        return;
                    }
                }
                Next::Timeout => panic!("the stopper waited {READ_TIMEOUT:?} for {id}"),
                Next::Eof => panic!("the stopper was cut off"),
            }
        }
    }

    /// Reads events until it holds `count` STOP/RESUME events.
    fn wait_events(&mut self, conn: &mut Conn, count: usize) {
        while self.events.len() < count {
            match conn.next(READ_TIMEOUT) {
                Next::Line(line) => assert!(self.take(&line), "the stopper got a reply {line}"),
                Next::Timeout => panic!("the stopper waited {READ_TIMEOUT:?} for event {count}"),
                Next::Eof => panic!("the stopper was cut off"),
            }
        }
    }
}

/// Stops and continues the guest, one pair at a time, from when every
/// worker has negotiated until every worker has finished its commands.
fn run_stopper(workers: usize, shared: &Shared) -> Reference {
    let _fail = Finish { shared, done: true };
    let mut conn = Conn::open(&shared.path);
    let mut reference = Reference::default();
    reference.command(&mut conn, "qmp_capabilities", "stopper");
    assert!(
        common::wait_until(Duration::from_secs(120), || {
            shared.negotiated.load(Ordering::Acquire) == workers
                || shared.failed.load(Ordering::Relaxed)
        }),
        "the workers did not all connect"
    );
    while shared.finished.load(Ordering::Acquire) < workers {
        shared.check_time("the stopper");
        let pair = reference.pairs.len();
        let stop_sent = Instant::now();
        reference.command(&mut conn, "stop", &format!("stop-{pair}"));
        reference.wait_events(&mut conn, 2 * pair + 1);
        reference.command(&mut conn, "cont", &format!("cont-{pair}"));
        reference.wait_events(&mut conn, 2 * pair + 2);
        reference.pairs.push(Pair {
            stop_sent,
            resume_seen: Instant::now(),
        });
        thread::sleep(PAIR_PAUSE);
    }
    thread::sleep(LAST_PAIR_WAIT);
    shared.stopped.store(true, Ordering::Release);
    reference
}

/// What one run (the warm-up or the soak) did.
struct Run {
    took: Duration,
    reference: Reference,
    reports: Vec<Report>,
    /// The proxy's highest memory, threads and descriptors seen meanwhile.
    peak: Usage,
}

/// The panic message of a thread that failed.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Runs the stopper and `settings.clients - 1` workers of `commands`
/// commands each against `proxy`.
fn run(settings: &Settings, commands: usize, seed: u64, proxy: &Proxy) -> Run {
    let workers = settings.clients - 1;
    let shared = Shared {
        path: proxy.socket().to_owned(),
        deadline: Instant::now() + settings.timeout,
        negotiated: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        stopped: AtomicBool::new(false),
        failed: AtomicBool::new(false),
    };
    let started = Instant::now();
    let mut peak = Usage::of(proxy.pid());
    let (reference, reports) = thread::scope(|scope| {
        let shared = &shared;
        let stopper = scope.spawn(move || run_stopper(workers, shared));
        let handles: Vec<_> = (0..workers)
            .map(|index| {
                let role = if index < settings.deaf {
                    Role::Deaf
                } else if index % 2 == 0 {
                    Role::Steady
                } else {
                    Role::Reconnecting
                };
                scope.spawn(move || run_worker(index, role, settings, commands, seed, shared))
            })
            .collect();
        while !(stopper.is_finished() && handles.iter().all(|h| h.is_finished())) {
            let now = Usage::of(proxy.pid());
            peak = Usage {
                memory_kib: peak.memory_kib.max(now.memory_kib),
                threads: peak.threads.max(now.threads),
                descriptors: peak.descriptors.max(now.descriptors),
            };
            thread::sleep(Duration::from_millis(250));
        }
        let mut failures = Vec::new();
        let mut reports = Vec::new();
        for (index, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(report) => reports.push(report),
                Err(e) => failures.push(format!("client {index}: {}", panic_text(&*e))),
            }
        }
        let reference = stopper
            .join()
            .map_err(|e| format!("the stopper: {}", panic_text(&*e)));
        if let Err(e) = &reference {
            failures.push(e.clone());
        }
        // The first failure is the cause; the others gave up after it.
        failures.sort_by_key(|f| f.contains("giving up"));
        assert!(
            failures.is_empty(),
            "{} of the soak's threads failed; the first: {}",
            failures.len(),
            failures.join("\n")
        );
        (reference.unwrap(), reports)
    });
    Run {
        took: started.elapsed(),
        reference,
        reports,
        peak,
    }
}

/// Checks every session's STOP/RESUME events against the reference, as the
/// file's documentation defines; returns how many events were checked.
fn check_events(reference: &Reference, sessions: &[&Session]) -> usize {
    let events = &reference.events;
    let pairs = &reference.pairs;
    assert_eq!(events.len(), 2 * pairs.len(), "the stopper's events");
    let mut index = HashMap::new();
    for (n, event) in events.iter().enumerate() {
        assert!(
            index.insert(*event, n).is_none(),
            "two events alike: {event:?}"
        );
    }
    let mut checked = 0;
    for session in sessions {
        let who = format!(
            "client {} ({:?}) session {} ({:?})",
            session.client, session.role, session.number, session.end
        );
        let positions: Vec<usize> = session
            .events
            .iter()
            .map(|e| {
                *index
                    .get(e)
                    .unwrap_or_else(|| panic!("{who}: {e:?} is not one of the stopper's events"))
            })
            .collect();
        for w in positions.windows(2) {
            assert!(
                w[1] == w[0] + 1,
                "{who}: event {} came after event {} (of {})",
                w[1],
                w[0],
                events.len()
            );
        }
        // The pairs it is owed: stopped after it negotiated, and resumed
        // (as the stopper saw it) well before its last answered command.
        let first = pairs.iter().position(|p| p.stop_sent > session.negotiated);
        let last = session
            .synced
            .and_then(|synced| pairs.iter().rposition(|p| p.resume_seen + MARGIN < synced));
        if let (Some(first), Some(last)) = (first, last) {
            if first <= last {
                let (got_first, got_last) = match (positions.first(), positions.last()) {
                    (Some(a), Some(b)) => (*a, *b),
                    _ => panic!("{who}: no event, owed pairs {first}..={last}"),
                };
                assert!(
                    got_first <= 2 * first && got_last > 2 * last,
                    "{who}: got events {got_first}..={got_last}, owed pairs {first}..={last} \
                     (events {}..={})",
                    2 * first,
                    2 * last + 1
                );
            }
        }
        // A final session negotiated before the last STOP was sent must end
        // with the last event (a deaf client back late may have none).
        if session.end == End::Final
            && pairs
                .last()
                .is_some_and(|last| last.stop_sent > session.negotiated)
        {
            assert_eq!(
                positions.last(),
                Some(&(events.len() - 1)),
                "{who}: the last events are missing"
            );
        }
        if session.role == Role::Steady {
            assert_eq!(
                positions,
                (0..events.len()).collect::<Vec<_>>(),
                "{who}: a client connected throughout must get every event"
            );
        }
        checked += positions.len();
    }
    checked
}

/// Checks one run and prints what it did.
fn check_run(name: &str, run: &Run, commands: usize) {
    let sessions: Vec<&Session> = run.reports.iter().flat_map(|r| &r.sessions).collect();
    let sent: usize = run.reports.iter().map(|r| r.sent).sum();
    let answered: usize = run.reports.iter().map(|r| r.answered).sum();
    let count = |end: End| sessions.iter().filter(|s| s.end == end).count();
    let checked = check_events(&run.reference, &sessions);
    let other: usize =
        run.reports.iter().map(|r| r.other_events).sum::<usize>() + run.reference.other_events;
    eprintln!(
        "{name}: {} clients, {commands} commands each, in {:.1} s: {sent} commands sent \
         in batches, {answered} answers checked in order, {} STOP/RESUME pairs, \
         {checked} events checked, {other} other events; {} sessions: {} final, {} clean, \
         {} abrupt, {} half-closed, {} cut off for not reading; proxy peak: {}",
        run.reports.len() + 1,
        run.took.as_secs_f64(),
        run.reference.pairs.len(),
        sessions.len(),
        count(End::Final),
        count(End::Clean),
        count(End::Abrupt),
        count(End::HalfClose),
        count(End::CutOff),
        run.peak,
    );
    let workers = run.reports.len();
    assert_eq!(count(End::Final), workers, "every client ends the run");
    let deaf = run
        .reports
        .iter()
        .filter(|r| r.sessions[0].role == Role::Deaf)
        .count();
    assert_eq!(count(End::CutOff), deaf, "each deaf client is cut off once");
    assert!(run.reference.pairs.len() >= 10, "too few events to tell");
    for (index, report) in run.reports.iter().enumerate() {
        assert!(
            report.ids >= commands,
            "client {index} ran {} commands",
            report.ids
        );
    }
}

/// Saves /proc/PID/smaps as `name` in the folder QMP_SOAK_SMAPS names, if set.
fn save_smaps(pid: i32, name: &str) {
    if let Some(dir) = std::env::var_os("QMP_SOAK_SMAPS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let smaps = std::fs::read(format!("/proc/{pid}/smaps")).unwrap();
        std::fs::write(dir.join(name), smaps).unwrap();
    }
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn soak() {
    let settings = Settings::from_env();
    eprintln!(
        "soak settings (QMP_SOAK_*): {settings:?}; the full soak is \
         QMP_SOAK_CLIENTS=64 QMP_SOAK_COMMANDS=5000 (make soak)"
    );
    let guest = Guest::start("soak");
    let max_clients = settings.clients.to_string();
    let mut args = vec![];
    if settings.clients > 64 {
        args = vec!["--max-clients", &max_clients];
    }
    let proxy = Proxy::start(guest.uri(), guest.name(), &args);
    let pid = proxy.pid();
    // Once the probe connection of Proxy::start has gone.
    let start = process::quiet_usage(pid, Duration::from_millis(500));
    eprintln!("proxy at start: {start}");
    save_smaps(pid, "start");

    // The warm-up is the same load, shorter: allocator arenas, thread
    // stacks and libvirt's caches grow to their working size during it.
    let warmup = run(&settings, settings.warmup, settings.seed, &proxy);
    check_run("warm-up", &warmup, settings.warmup);
    process::wait_counts(
        pid,
        start.threads,
        start.descriptors,
        Duration::from_secs(30),
    );
    thread::sleep(Duration::from_millis(500));
    let warm = Usage::of(pid);
    let warm_split = process::private_memory_split_kib(pid);
    eprintln!("proxy after the warm-up: {warm} (anonymous, file: {warm_split:?} KiB)");
    save_smaps(pid, "warm");

    let soak = run(
        &settings,
        settings.commands,
        settings.seed.wrapping_add(1),
        &proxy,
    );
    check_run("soak", &soak, settings.commands);
    let end = process::wait_counts(
        pid,
        start.threads,
        start.descriptors,
        Duration::from_secs(30),
    );
    eprintln!("proxy after the soak, every client gone: {end}");
    assert_eq!(
        (end.threads, end.descriptors),
        (start.threads, start.descriptors),
        "the proxy's threads and descriptors are not back to where they started ({start})"
    );
    let (end, settled) = process::settle(pid, warm, MEMORY_GROWTH_KIB, Duration::from_secs(10));
    let end_split = process::private_memory_split_kib(pid);
    save_smaps(pid, "end");
    let growth = end.memory_kib as i64 - warm.memory_kib as i64;
    eprintln!(
        "proxy memory: {} KiB at start, {} KiB after the warm-up, {} KiB at the end \
         ({growth:+} KiB over the soak; anonymous, file: {warm_split:?} -> {end_split:?} KiB), \
         {} KiB at the peak",
        start.memory_kib, warm.memory_kib, end.memory_kib, soak.peak.memory_kib
    );
    assert!(
        settled,
        "the proxy's private memory grew by {growth} KiB over the soak (at most \
         {MEMORY_GROWTH_KIB}); anonymous, file: {warm_split:?} -> {end_split:?} KiB. \
         Set QMP_SOAK_SMAPS=DIR to keep its smaps and compare the mappings"
    );
}
