// SPDX-License-Identifier: LGPL-2.1-or-later
//! Differential fuzzing against QEMU: seeded client byte streams
//! (tests/fuzz/generator.rs) go both to QEMU's own QMP server
//! (`qemu-system-x86_64 -M none`, the oracle) and to the proxy in front of
//! a test guest, and the bytes that come back must be identical. Greetings
//! are not compared (they differ in `capabilities` by design).
//!
//! QEMU serves one client at a time, so several oracle processes run side
//! by side, one per worker thread, while the proxy takes every worker's
//! connection at once. A stream ends with a half-close (then both servers
//! answer and close) or with an end marker whose reply is always the last
//! line, so no stream waits for silence.
//!
//! `make check` runs a fixed seed: QMP_FUZZ_SEED (default 1),
//! QMP_FUZZ_STREAMS (default 2000) and QMP_FUZZ_FIRST (default 0) choose
//! the streams, QMP_FUZZ_ORACLES the number of QEMU processes (default 4)
//! and QMP_FUZZ_MAX_DIVERGENCES when to stop (default 5); `make fuzz`
//! passes SEED, N and FIRST through. A divergence fails the test with the
//! seed, the stream, its input, both outputs, a shrunk input when one still
//! diverges, and a line to paste into tests/data/qmp-cases.jsonl.

mod common;
#[path = "fuzz/generator.rs"]
mod generator;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{corpus_lines, unique_path, wait_until, Guest, Proxy, TESTBED_HINT};
use generator::{Ending, Stream, END_ID, END_MARKER};

const NEGOTIATE: &[u8] = br#"{"execute": "qmp_capabilities"}"#;
const NEGOTIATED: &[u8] = b"{\"return\": {}}\r\n";

/// Longest a stream may take on one server, greeting included.
const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

/// How long an oracle may take to start listening.
const ORACLE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// With `settle`, how long the replies must pause before the half-close.
const SETTLE_QUIET: Duration = Duration::from_millis(100);

/// Most attempts at shrinking one diverging stream.
const SHRINK_ATTEMPTS: usize = 80;

/// What the environment asks for.
#[derive(Debug, Clone, Copy)]
struct Settings {
    seed: u64,
    first: u64,
    streams: u64,
    oracles: usize,
    max_divergences: usize,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            seed: env_number("QMP_FUZZ_SEED", 1),
            first: env_number("QMP_FUZZ_FIRST", 0),
            streams: env_number("QMP_FUZZ_STREAMS", 2000),
            oracles: env_number("QMP_FUZZ_ORACLES", 4).clamp(1, 64) as usize,
            max_divergences: env_number("QMP_FUZZ_MAX_DIVERGENCES", 5).max(1) as usize,
        }
    }
}

/// A variable's value, decimal or 0x-prefixed hex; `default` when unset.
fn env_number(name: &str, default: u64) -> u64 {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}"))
}

/// QEMU's own QMP server on a private socket. `Drop` kills it and removes
/// its folder; it also dies with the thread that started it
/// (PR_SET_PDEATHSIG), should the test process be killed.
struct Oracle {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Oracle {
    /// Starts `qemu-system-x86_64 -M none` with a QMP socket; does not wait.
    fn spawn() -> Oracle {
        let dir = unique_path("oracle");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let socket = dir.join("qmp.sock");
        let log = |name: &str| {
            let path = dir.join(name);
            File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
        };
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-M", "none", "-display", "none", "-S", "-qmp"])
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .stdin(Stdio::null())
            .stdout(log("stdout"))
            .stderr(log("stderr"));
        // SAFETY: between fork and exec the closure only makes the prctl(2)
        // system call, which is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| {
            let _ = fs::remove_dir_all(&dir);
            panic!("cannot run qemu-system-x86_64 ({e}): {TESTBED_HINT}")
        });
        Oracle { child, dir, socket }
    }

    /// Waits until the oracle greets a probe connection.
    fn wait_ready(&mut self) {
        let socket = self.socket.clone();
        let mut exited = None;
        let ready = wait_until(ORACLE_START_TIMEOUT, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return true;
            }
            let Ok(stream) = UnixStream::connect(&socket) else {
                return false;
            };
            let mut reader = Reader::new(&stream, Instant::now() + Duration::from_secs(5));
            matches!(reader.line(), Ok(line) if line.starts_with(b"{\"QMP\""))
        });
        let stderr = fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
        if let Some(status) = exited {
            panic!("the QEMU oracle exited ({status}) before listening; its stderr:\n{stderr}");
        }
        assert!(
            ready,
            "the QEMU oracle did not greet on {} within {ORACLE_START_TIMEOUT:?}; its stderr:\n{stderr}",
            socket.display()
        );
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Reads from a connection with one deadline for everything.
struct Reader<'a> {
    stream: &'a UnixStream,
    buffer: Vec<u8>,
    deadline: Instant,
}

impl<'a> Reader<'a> {
    fn new(stream: &'a UnixStream, deadline: Instant) -> Reader<'a> {
        Reader {
            stream,
            buffer: Vec::new(),
            deadline,
        }
    }

    /// Reads more bytes; Ok(false) at EOF.
    fn fill(&mut self) -> Result<bool, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        let mut chunk = [0u8; 65536];
        loop {
            match (&mut &*self.stream).read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(count) => {
                    self.buffer.extend_from_slice(&chunk[..count]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The peer closed with our bytes unread: an end like EOF.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(false),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("timed out".into())
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// One line, CRLF included.
    fn line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buffer.drain(..end + 2).collect());
            }
            if !self.fill()? {
                return Err(format!(
                    "EOF in the middle of a line: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                ));
            }
        }
    }

    /// Everything that comes until `quiet` passes without a byte, or EOF.
    fn until_quiet(&mut self, quiet: Duration) -> Result<(), String> {
        let deadline = self.deadline;
        loop {
            self.deadline = (Instant::now() + quiet).min(deadline);
            match self.fill() {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) if Instant::now() < deadline => break,
                Err(e) => {
                    self.deadline = deadline;
                    return Err(e);
                }
            }
        }
        self.deadline = deadline;
        Ok(())
    }

    /// Everything until EOF (`eof`) or until the last line is the reply to
    /// the end marker.
    fn rest(&mut self, eof: bool) -> Result<Vec<u8>, String> {
        loop {
            if !eof && ends_with_marker_reply(&self.buffer) {
                return Ok(std::mem::take(&mut self.buffer));
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Ok(std::mem::take(&mut self.buffer)),
                Err(e) => {
                    return Err(format!(
                        "{e} waiting for {}; got {}",
                        if eof { "EOF" } else { "the end marker's reply" },
                        quote_output(&self.buffer)
                    ))
                }
            }
        }
    }
}

/// True when `output` ends with a whole line that carries the marker's id.
fn ends_with_marker_reply(output: &[u8]) -> bool {
    let Some(body) = output.strip_suffix(b"\r\n") else {
        return false;
    };
    let last = match body.windows(2).rposition(|w| w == b"\r\n") {
        Some(end) => &body[end + 2..],
        None => body,
    };
    let id = format!("\"id\": \"{END_ID}\"");
    last.windows(id.len()).any(|w| w == id.as_bytes())
}

/// Sends `stream` to the QMP server on `socket` and returns what came back
/// after the greeting (and after the harness's negotiation).
///
/// With `settle`, a half-close waits until the replies have paused: QEMU
/// drops the replies still in its output buffer when it reads EOF, so when
/// a stream makes more replies than the socket holds, what it sends before
/// closing depends on how fast the client reads.
fn run_stream(socket: &Path, stream: &Stream, settle: bool) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + STREAM_TIMEOUT;
    let connection = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    connection
        .set_write_timeout(Some(STREAM_TIMEOUT))
        .map_err(|e| format!("cannot set a write timeout: {e}"))?;
    let mut reader = Reader::new(&connection, deadline);
    let greeting = reader.line().map_err(|e| format!("no greeting: {e}"))?;
    if !greeting.starts_with(b"{\"QMP\": ") {
        return Err(format!("not a greeting: {}", quote_output(&greeting)));
    }
    if stream.negotiate {
        (&connection)
            .write_all(NEGOTIATE)
            .map_err(|e| format!("cannot negotiate: {e}"))?;
        let reply = reader
            .line()
            .map_err(|e| format!("no negotiation reply: {e}"))?;
        if reply != NEGOTIATED {
            return Err(format!("negotiation answered {}", quote_output(&reply)));
        }
    }
    let chunks = stream.chunks();
    let gap = Duration::from_millis(stream.gap_ms);
    let half_close = stream.shutdown();
    if settle && half_close {
        // The inputs are far smaller than the socket buffer: the writes do
        // not block while nothing is read.
        write_chunks(&connection, &chunks, gap)?;
        reader.until_quiet(SETTLE_QUIET)?;
        connection
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("cannot half-close: {e}"))?;
        return reader.rest(true);
    }
    thread::scope(|scope| {
        let writer = scope.spawn(|| -> Result<(), String> {
            write_chunks(&connection, &chunks, gap)?;
            if half_close {
                connection
                    .shutdown(Shutdown::Write)
                    .map_err(|e| format!("cannot half-close: {e}"))?;
            }
            Ok(())
        });
        let output = reader.rest(half_close);
        if output.is_err() {
            // Unblocks a writer stuck on a server that stopped reading.
            let _ = connection.shutdown(Shutdown::Both);
        }
        let written = writer.join().expect("the writer thread does not panic");
        match (output, written) {
            (Ok(output), _) => Ok(output),
            (Err(e), Err(w)) => Err(format!("{e} ({w})")),
            (Err(e), Ok(())) => Err(e),
        }
    })
}

/// What each server answered to one stream.
struct Run {
    qemu: Result<Vec<u8>, String>,
    proxy: Result<Vec<u8>, String>,
    /// Whether the half-close waited for the replies to settle.
    settled: bool,
}

impl Run {
    fn diverges(&self) -> bool {
        !matches!((&self.qemu, &self.proxy), (Ok(q), Ok(p)) if q == p)
    }

    /// QEMU sent fewer whole lines than the proxy and nothing else: what it
    /// does when EOF comes while replies wait in its output buffer.
    fn qemu_cut_short(&self) -> bool {
        match (&self.qemu, &self.proxy) {
            (Ok(q), Ok(p)) => {
                q.len() < p.len() && p.starts_with(q) && (q.is_empty() || q.ends_with(b"\r\n"))
            }
            _ => false,
        }
    }
}

/// Runs `stream` on the oracle and on the proxy at the same time; a
/// half-closed stream that QEMU cut short runs again with `settle`.
fn run_both(oracle: &Path, proxy: &Path, stream: &Stream) -> Run {
    let run = run_pair(oracle, proxy, stream, false);
    if stream.shutdown() && run.qemu_cut_short() {
        return run_pair(oracle, proxy, stream, true);
    }
    run
}

fn run_pair(oracle: &Path, proxy: &Path, stream: &Stream, settle: bool) -> Run {
    thread::scope(|scope| {
        let proxy_side = scope.spawn(|| run_stream(proxy, stream, settle));
        let qemu = run_stream(oracle, stream, settle);
        let proxy = proxy_side.join().expect("a stream run does not panic");
        Run {
            qemu,
            proxy,
            settled: settle,
        }
    })
}

/// A stream the servers answered differently.
struct Divergence {
    index: u64,
    stream: Stream,
    run: Run,
    /// A smaller stream, sent in one write, that still diverges.
    shrunk: Option<(Stream, Run)>,
}

/// Drops whole pieces while the stream still diverges, all in one write.
fn shrink(oracle: &Path, proxy: &Path, stream: &Stream) -> Option<(Stream, Run)> {
    let mut best = stream.with_pieces(stream.pieces.clone());
    let mut run = run_both(oracle, proxy, &best);
    if !run.diverges() || run.qemu.is_err() {
        return None;
    }
    let mut attempts = 1;
    let mut index = best.pieces.len();
    while index > 0 && attempts < SHRINK_ATTEMPTS {
        index -= 1;
        if best.pieces.len() == 1 {
            break;
        }
        let mut pieces = best.pieces.clone();
        pieces.remove(index);
        let candidate = best.with_pieces(pieces);
        let candidate_run = run_both(oracle, proxy, &candidate);
        attempts += 1;
        if candidate_run.diverges() && candidate_run.qemu.is_ok() {
            best = candidate;
            run = candidate_run;
        }
    }
    Some((best, run))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Writes the chunks of a stream as separate writes, `gap` apart.
fn write_chunks(
    mut connection: &UnixStream,
    chunks: &[Vec<u8>],
    gap: Duration,
) -> Result<(), String> {
    for (index, chunk) in chunks.iter().enumerate() {
        if index > 0 && !gap.is_zero() {
            thread::sleep(gap);
        }
        connection
            .write_all(chunk)
            .map_err(|e| format!("write {index} failed: {e}"))?;
    }
    Ok(())
}

/// Bytes as a readable Rust-style byte string.
fn quote_output(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// One input as the corpus spells it: text when it is UTF-8, hex otherwise.
fn corpus_input(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => json_string(text),
        Err(_) => format!("{{\"hex\": \"{}\"}}", hex(bytes)),
    }
}

/// A line for tests/data/qmp-cases.jsonl, with QEMU's answer as `expect`.
fn corpus_case(name: &str, stream: &Stream, qemu: &[u8], note: &str) -> String {
    let mut line = format!(
        "{{\"name\": {}, \"negotiate\": {}, ",
        json_string(name),
        stream.negotiate
    );
    let chunks = stream.chunks();
    if chunks.len() > 1 {
        let items: Vec<String> = chunks.iter().map(|c| corpus_input(c)).collect();
        let _ = write!(line, "\"chunks\": [{}], ", items.join(", "));
    } else {
        let bytes = stream.bytes();
        match std::str::from_utf8(&bytes) {
            Ok(text) => {
                let _ = write!(line, "\"input\": {}, ", json_string(text));
            }
            Err(_) => {
                let _ = write!(line, "\"input_hex\": \"{}\", ", hex(&bytes));
            }
        }
    }
    if stream.shutdown() {
        line.push_str("\"shutdown\": true, ");
    }
    let expect: Vec<String> = corpus_lines(qemu).iter().map(|l| json_string(l)).collect();
    let _ = write!(
        line,
        "\"expect\": [{}], \"note\": {}}}",
        expect.join(", "),
        json_string(note)
    );
    line
}

/// Lines shown around the first difference.
const CONTEXT_LINES: usize = 3;

/// Both outputs, from a little before their first difference, with the
/// differing column pointed out.
fn describe_outputs(out: &mut String, run: &Run) {
    if run.settled {
        let _ = writeln!(
            out,
            "  (run again with the half-close after the replies settled: QEMU had cut its output short)"
        );
    }
    let (qemu, proxy) = match (&run.qemu, &run.proxy) {
        (Ok(qemu), Ok(proxy)) => (corpus_lines(qemu), corpus_lines(proxy)),
        _ => {
            for (who, output) in [("QEMU", &run.qemu), ("proxy", &run.proxy)] {
                match output {
                    Ok(bytes) => {
                        let lines = corpus_lines(bytes);
                        let _ = writeln!(out, "  {who}: {} lines", lines.len());
                        for line in lines.iter().take(20) {
                            let _ = writeln!(out, "    {}", clip(line, 300));
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(out, "  {who}: FAILED: {}", clip(e, 2000));
                    }
                }
            }
            return;
        }
    };
    let first = (0..qemu.len().max(proxy.len()))
        .find(|&i| qemu.get(i) != proxy.get(i))
        .unwrap_or(0);
    let from = first.saturating_sub(CONTEXT_LINES);
    let _ = writeln!(
        out,
        "  QEMU sent {} lines, the proxy {}; first difference in line {}",
        qemu.len(),
        proxy.len(),
        first + 1
    );
    for (who, lines) in [("QEMU", &qemu), ("proxy", &proxy)] {
        let _ = writeln!(out, "  {who}, from line {}:", from + 1);
        for line in lines
            .iter()
            .skip(from)
            .take(first - from + 1 + CONTEXT_LINES)
        {
            let _ = writeln!(out, "    {}", clip(line, 300));
        }
    }
    if let (Some(q), Some(p)) = (qemu.get(first), proxy.get(first)) {
        let column = q
            .bytes()
            .zip(p.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(q.len().min(p.len()));
        let excerpt = |line: &str| {
            let mut start = column.saturating_sub(60);
            while !line.is_char_boundary(start) {
                start -= 1;
            }
            clip(&line[start..], 160)
        };
        let _ = writeln!(
            out,
            "  line {} differs at byte {column}:\n    QEMU:  ...{}\n    proxy: ...{}",
            first + 1,
            excerpt(q),
            excerpt(p)
        );
    }
}

fn clip(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[{} bytes]", &text[..end], text.len())
}

fn describe_stream(out: &mut String, stream: &Stream) {
    let bytes = stream.bytes();
    let _ = writeln!(
        out,
        "  negotiate: {}, ending: {:?}, {} bytes in {} write(s), {} ms apart",
        stream.negotiate,
        stream.ending,
        bytes.len(),
        stream.chunks().len(),
        stream.gap_ms
    );
    let _ = writeln!(out, "  input hex: {}", clip(&hex(&bytes), 4000));
    let _ = writeln!(out, "  input text: {}", clip(&quote_output(&bytes), 4000));
}

fn report(settings: &Settings, divergence: &Divergence) -> String {
    let Settings { seed, .. } = *settings;
    let index = divergence.index;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "DIVERGENCE: seed {seed}, stream {index} \
         (again: make fuzz SEED={seed} FIRST={index} N=1)"
    );
    describe_stream(&mut out, &divergence.stream);
    describe_outputs(&mut out, &divergence.run);
    let name = format!("fuzz-seed{seed}-stream{index}");
    let note = format!("found by tests/fuzz.rs, seed {seed}, stream {index}");
    let (stream, qemu) = match &divergence.shrunk {
        Some((stream, run)) => {
            let _ = writeln!(
                out,
                "  shrunk to {} piece(s) in one write:",
                stream.pieces.len()
            );
            describe_stream(&mut out, stream);
            describe_outputs(&mut out, run);
            (stream, &run.qemu)
        }
        None => (&divergence.stream, &divergence.run.qemu),
    };
    if let Ok(qemu) = qemu {
        let _ = writeln!(
            out,
            "  corpus line (expect is QEMU's answer; give it a name that says what it tests):\n{}",
            corpus_case(&name, stream, qemu, &note)
        );
    }
    out
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn generated_streams_get_the_same_bytes_as_from_qemu() {
    let settings = Settings::from_env();
    let started = Instant::now();
    // The oracles start while the guest does.
    let mut oracles: Vec<Oracle> = (0..settings.oracles).map(|_| Oracle::spawn()).collect();
    let guest = Guest::start("fuzz");
    let proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    for oracle in &mut oracles {
        oracle.wait_ready();
    }
    let proxy_socket = proxy.socket().to_owned();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let settled = AtomicU64::new(0);
    let divergences: Mutex<Vec<Divergence>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for oracle in &oracles {
            let (oracle, proxy_socket) = (oracle.socket.as_path(), proxy_socket.as_path());
            let (next, stop, done, settled, divergences) =
                (&next, &stop, &done, &settled, &divergences);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let offset = next.fetch_add(1, Ordering::Relaxed);
                    if offset >= settings.streams {
                        return;
                    }
                    let index = settings.first + offset;
                    let stream = generator::stream(settings.seed, index);
                    let run = run_both(oracle, proxy_socket, &stream);
                    if run.settled {
                        settled.fetch_add(1, Ordering::Relaxed);
                    }
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if finished % 1000 == 0 {
                        eprintln!("fuzz: {finished} of {} streams", settings.streams);
                    }
                    if !run.diverges() {
                        continue;
                    }
                    let shrunk = shrink(oracle, proxy_socket, &stream);
                    let divergence = Divergence {
                        index,
                        stream,
                        run,
                        shrunk,
                    };
                    eprintln!("{}", report(&settings, &divergence));
                    let mut list = divergences.lock().unwrap();
                    list.push(divergence);
                    if list.len() >= settings.max_divergences {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let divergences = divergences.into_inner().unwrap();
    let run = done.load(Ordering::Relaxed);
    let summary = format!(
        "fuzz: seed {}, streams {}..{}: {run} run in {:.1} s with {} QEMU oracle(s), \
         {} diverged ({} half-closes run again after the replies settled)",
        settings.seed,
        settings.first,
        settings.first + settings.streams,
        started.elapsed().as_secs_f64(),
        settings.oracles,
        divergences.len(),
        settled.load(Ordering::Relaxed)
    );
    // Shown by `make fuzz` (--nocapture), and by the harness on failure.
    eprintln!("{summary}");
    if !divergences.is_empty() {
        let mut indexes: Vec<u64> = divergences.iter().map(|d| d.index).collect();
        indexes.sort_unstable();
        panic!("{summary}: streams {indexes:?} (reports above)");
    }
    assert_eq!(run, settings.streams, "{summary}: not every stream ran");
}

#[test]
fn streams_are_reproducible() {
    for index in 0..200 {
        let (a, b) = (generator::stream(9, index), generator::stream(9, index));
        assert_eq!(a.bytes(), b.bytes());
        assert_eq!(a.chunks(), b.chunks());
        assert_eq!((a.negotiate, a.ending), (b.negotiate, b.ending));
    }
    assert_ne!(
        generator::stream(1, 0).bytes(),
        generator::stream(2, 0).bytes()
    );
}

#[test]
fn chunks_and_ending_make_up_the_stream() {
    for index in 0..3000 {
        let stream = generator::stream(1, index);
        let bytes = stream.bytes();
        assert_eq!(stream.chunks().concat(), bytes, "stream {index}");
        let markers = String::from_utf8_lossy(&bytes).matches(END_ID).count();
        match stream.ending {
            Ending::HalfClose => assert_eq!(markers, 0, "stream {index}"),
            _ => {
                assert_eq!(markers, 1, "stream {index}: the marker id is unique");
                assert!(bytes.ends_with(END_MARKER), "stream {index}");
            }
        }
    }
}

#[test]
fn streams_stay_within_what_both_servers_can_answer_alike() {
    // Commands that change or read the guest's state, and ways to enable OOB.
    let forbidden = [
        "\"stop\"",
        "\"cont\"",
        "\"quit\"",
        "'stop'",
        "'cont'",
        "'quit'",
        "system_",
        "device_add",
        "query-name",
        "query-status",
        "\"x 0",
        r#"["oob""#,
        r#"['oob'"#,
    ];
    for index in 0..3000 {
        let stream = generator::stream(1, index);
        let bytes = stream.bytes();
        // The words are ASCII: no replacement character can make one up.
        let text = String::from_utf8_lossy(&bytes);
        for word in forbidden {
            assert!(!text.contains(word), "stream {index} contains {word:?}");
        }
        if !stream.clean {
            // Not made of whole messages only: no U+0000 anywhere.
            assert!(!generator::spells_nul(&bytes), "stream {index}");
        }
        // QEMU reads about 0.5 MB/s: a stream takes it a second at most.
        assert!(
            bytes.len() < 300_000,
            "stream {index}: {} bytes",
            bytes.len()
        );
    }
}

#[test]
fn marker_reply_is_recognised_in_both_negotiation_states() {
    assert!(ends_with_marker_reply(
        b"x\r\n{\"return\": {}, \"id\": \"fuzz-end\"}\r\n"
    ));
    assert!(ends_with_marker_reply(
        b"{\"id\": \"fuzz-end\", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Capabilities negotiation is already complete, command ignored\"}}\r\n"
    ));
    assert!(!ends_with_marker_reply(
        b"{\"id\": \"fuzz-end\", \"error\": {}}\r\n{\"error\": {}}\r\n"
    ));
    assert!(!ends_with_marker_reply(
        b"{\"return\": {}, \"id\": \"fuzz-end\"}"
    ));
}

#[test]
fn corpus_lines_match_the_corpus_format() {
    let stream = Stream {
        negotiate: true,
        clean: true,
        pieces: vec![b"{\"execute\":\"nope\"}".to_vec()],
        ending: Ending::HalfClose,
        cuts: vec![5],
        gap_ms: 1,
    };
    let line = corpus_case("x", &stream, b"a\r\nb", "n");
    assert_eq!(
        line,
        r#"{"name": "x", "negotiate": true, "chunks": ["{\"exe", "cute\":\"nope\"}"], "shutdown": true, "expect": ["a", "b<no CRLF>"], "note": "n"}"#
    );
    let parsed: serde_json::Value = serde_json::from_str(&line).expect("a corpus line is JSON");
    assert_eq!(parsed["chunks"][1], "cute\":\"nope\"}");
}
