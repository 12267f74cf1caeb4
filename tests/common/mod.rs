// SPDX-License-Identifier: LGPL-2.1-or-later
//! Shared helpers for the integration tests: a throwaway QEMU guest in a
//! private embedded libvirt root (`Guest`), the real proxy binary in front of
//! it (`Proxy`), and a QMP client with timeouts (`Client`).
//!
//! Tests run in parallel threads, so every path made here is unique (process
//! id and a counter, under `std::env::temp_dir()`), and no read waits for
//! ever. Everything is cleaned up on `Drop`, also when a test panics.
//!
//! A test that needs a guest must be `#[ignore = "needs the libvirt/QEMU test
//! bed: run make check"]`; `make check` installs the test bed and runs them
//! with `--include-ignored`. There a missing test bed makes `Guest::start`
//! panic with the reason, never skip.

// Each test file uses a different part of this module.
#![allow(dead_code)]

pub mod corpus;
pub mod daemon;
pub mod files;
pub mod process;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The proxy binary that cargo built for these tests.
pub const PROXY_BIN: &str = env!("CARGO_BIN_EXE_virt-qemu-qmp-proxy");

/// libvirt's original Python proxy (package libvirt-clients-qemu), run by
/// Debian's Python, which has the libvirt module; for `Proxy::start_with`.
pub const PYTHON_PROXY: &[&str] = &["/usr/bin/python3", "/usr/bin/virt-qemu-qmp-proxy"];

/// What to do when the test bed is missing.
pub const TESTBED_HINT: &str = "run `make check`: it installs the libvirt/QEMU test bed \
     (scripts/testbed-setup) and runs the guest tests with --include-ignored";

/// How long one `Client` read waits by default.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `Proxy::start` waits for the proxy's greeting.
pub const PROXY_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where `scripts/guest` keeps the template of QEMU's capability cache; cargo
/// removes it with `cargo clean`.
const CAPS_TEMPLATE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/qemu-caps");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Returns a path under the temp dir that no other test, thread or process
/// uses: `vqmp-<tag>-<pid>-<n>`. Nothing is created. Kept short, as the
/// embedded root's monitor socket path must fit in 108 bytes.
pub fn unique_path(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("vqmp-{tag}-{}-{n}", std::process::id()))
}

/// Returns a unique socket path for the test `name`, in a fresh private
/// folder (which the caller may remove with `remove_dir_all(path.parent())`).
pub fn socket_path(name: &str) -> PathBuf {
    let dir = unique_path("sock");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    dir.join(format!("{name}.sock"))
}

/// Returns the path of a script in this source tree's `scripts/` folder.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// True while process `pid` runs. A zombie counts as gone: the daemonized QEMU
/// is reaped by init, which may take seconds in a container.
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `done` every 20 ms until it is true (returns true) or `timeout`
/// passes (returns false).
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to process `pid`; false if it is gone.
pub fn send_signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    rc == 0
}

/// Runs `cmd` with stdin from /dev/null and its output in files (no pipe can
/// fill up), killing it and panicking if it takes longer than `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let dir = unique_path("run");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let create =
        |p: &Path| File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(create(&out_path))
        .stderr(create(&err_path))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let status = wait_child(&mut child, timeout);
    let stdout = fs::read(&out_path).unwrap_or_default();
    let stderr = fs::read(&err_path).unwrap_or_default();
    let _ = fs::remove_dir_all(&dir);
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}; its stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
    }
}

/// Waits up to `timeout` for `child` to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot wait for a child: {e}"));
        status.is_some()
    });
    status
}

/// A tiny QEMU guest (64 MiB, no disks) running in a private
/// `qemu:///embed?root=…` root, made by `scripts/guest start`. `Drop` kills
/// its QEMU and removes the root.
///
/// Only one process at a time can hold the root: `virsh` (see `Guest::virsh`)
/// works only while no proxy runs on it.
pub struct Guest {
    root: PathBuf,
    name: String,
    uri: String,
    qemu_pid: i32,
}

impl Guest {
    /// Starts a guest called `name`; panics, saying why, if it cannot.
    pub fn start(name: &str) -> Guest {
        let root = unique_path("guest");
        let out = run_with_timeout(
            Command::new("bash")
                .arg(script("guest"))
                .arg("start")
                .arg(&root)
                .arg(name)
                .env("GUEST_CAPS_CACHE", CAPS_TEMPLATE),
            Duration::from_secs(300),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            stop_root(&root);
            panic!(
                "cannot start a test guest under {} ({}): is the libvirt/QEMU test bed \
                 installed? {TESTBED_HINT}\nscripts/guest said:\n{stderr}",
                root.display(),
                out.status,
            );
        }
        // Shown by the test harness only when the test fails.
        eprint!("{stderr}");
        let uri = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let pid_file = root.join("run/qemu").join(format!("{name}.pid"));
        let qemu_pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                stop_root(&root);
                panic!(
                    "guest '{name}' started but {} holds no pid",
                    pid_file.display()
                )
            });
        Guest {
            root,
            name: name.to_owned(),
            uri,
            qemu_pid,
        }
    }

    /// The libvirt URI of the guest's private root.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The guest's (domain's) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The embedded driver's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pid of the guest's QEMU, as it was at start.
    pub fn qemu_pid(&self) -> i32 {
        self.qemu_pid
    }

    /// True while the guest's QEMU runs.
    pub fn qemu_running(&self) -> bool {
        process_alive(self.qemu_pid)
    }

    /// Sends `signal` to the guest's QEMU, as if the guest went away under a
    /// proxy that holds the root (`libc::SIGKILL`: a crash; `libc::SIGTERM`:
    /// QEMU shuts down cleanly).
    pub fn kill_qemu(&self, signal: i32) {
        assert!(
            send_signal(self.qemu_pid, signal),
            "cannot send signal {signal} to QEMU {}: {}",
            self.qemu_pid,
            io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for the guest's QEMU to exit; true if it did.
    pub fn wait_qemu_exit(&self, timeout: Duration) -> bool {
        wait_until(timeout, || !self.qemu_running())
    }

    /// Runs `virsh -c URI ARGS…` (at most 60 s). It fails while a proxy holds
    /// the root ("Failed to acquire pid file").
    ///
    /// A virsh that dies of a signal is run again, up to three times in all:
    /// libvirt 9.0's embedded driver can crash (a segfault in libnuma, on its
    /// `init-NAME` thread) when virsh exits while that thread is still
    /// re-attaching to the running guest; seen once under load.
    pub fn virsh(&self, args: &[&str]) -> Output {
        let mut tries = 0;
        loop {
            tries += 1;
            let out = run_with_timeout(
                Command::new("virsh")
                    .arg("-q")
                    .arg("-c")
                    .arg(&self.uri)
                    .args(args)
                    .env("LIBVIRT_DEBUG", "error"),
                Duration::from_secs(60),
            );
            match out.status.signal() {
                Some(signal) if tries < 3 => {
                    eprintln!("virsh {args:?} died of signal {signal}; running it again");
                }
                _ => return out,
            }
        }
    }

    /// The end of the guest's QEMU log, for failure messages.
    pub fn qemu_log(&self) -> String {
        let log = self
            .root
            .join("log/qemu")
            .join(format!("{}.log", self.name));
        fs::read_to_string(log).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        stop_root(&self.root);
    }
}

/// Runs `scripts/guest stop ROOT`; reports, without panicking, if it fails.
fn stop_root(root: &Path) {
    let result = Command::new("bash")
        .arg(script("guest"))
        .arg("stop")
        .arg(root)
        .env("GUEST_CAPS_CACHE", CAPS_TEMPLATE)
        .stdin(Stdio::null())
        .output();
    match result {
        Ok(out) if out.status.success() => eprint!("{}", String::from_utf8_lossy(&out.stderr)),
        Ok(out) => eprintln!(
            "warning: scripts/guest stop {} failed ({}):\n{}",
            root.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!(
            "warning: cannot run scripts/guest stop {}: {e}",
            root.display()
        ),
    }
}

/// The real proxy binary, serving `DOMAIN` on a unique socket. `Drop` stops it
/// (SIGTERM, then SIGKILL) and removes its folder with the socket.
pub struct Proxy {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    status: Option<ExitStatus>,
}

impl Proxy {
    /// Runs `virt-qemu-qmp-proxy -c URI [EXTRA_ARGS…] DOMAIN SOCKET` and waits
    /// until a connection to SOCKET gets a greeting line. That probe is the
    /// proxy's first client. Panics, with the proxy's stderr, if it exits or
    /// does not greet within `PROXY_START_TIMEOUT`.
    pub fn start(uri: &str, domain: &str, extra_args: &[&str]) -> Proxy {
        Proxy::start_with(&[PROXY_BIN], uri, domain, extra_args)
    }

    /// Like `start`, with another program that takes the same arguments:
    /// `program` is its command line before them, e.g. `PYTHON_PROXY` (the
    /// original tool, as a baseline).
    pub fn start_with(program: &[&str], uri: &str, domain: &str, extra_args: &[&str]) -> Proxy {
        Proxy::launch(program, uri, domain, extra_args, None)
    }

    /// Like `start`, with the proxy's stderr going to `stderr` (e.g. /dev/full)
    /// instead of a file: `Proxy::stderr` then has nothing to show.
    pub fn start_with_stderr(uri: &str, domain: &str, extra_args: &[&str], stderr: Stdio) -> Proxy {
        Proxy::launch(&[PROXY_BIN], uri, domain, extra_args, Some(stderr))
    }

    fn launch(
        program: &[&str],
        uri: &str,
        domain: &str,
        extra_args: &[&str],
        stderr: Option<Stdio>,
    ) -> Proxy {
        let (bin, program_args) = program.split_first().expect("program names a binary");
        let dir = unique_path("proxy");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let socket = dir.join("qmp.sock");
        let create = |name: &str| {
            let path = dir.join(name);
            File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
        };
        let stderr = stderr.unwrap_or_else(|| create("stderr").into());
        let child = Command::new(bin)
            .args(program_args)
            .arg("-c")
            .arg(uri)
            .args(extra_args)
            .arg(domain)
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(create("stdout"))
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
        let mut proxy = Proxy {
            child,
            dir,
            socket,
            status: None,
        };
        proxy.wait_greeting();
        proxy
    }

    fn wait_greeting(&mut self) {
        let deadline = Instant::now() + PROXY_START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "the proxy exited ({status}) before greeting on {}; its stderr:\n{}",
                    self.socket.display(),
                    self.stderr()
                );
            }
            if let Ok(stream) = UnixStream::connect(&self.socket) {
                let mut probe = Client::from_stream(stream);
                match probe.next_line(Duration::from_secs(5)) {
                    Ok(line) if line.starts_with(b"{\"QMP\"") => return,
                    other => panic!(
                        "the proxy on {} did not greet: {other:?}; its stderr:\n{}",
                        self.socket.display(),
                        self.stderr()
                    ),
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "the proxy did not greet on {} within {PROXY_START_TIMEOUT:?}; its stderr:\n{}",
                    self.socket.display(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the proxy binary with exactly `args` (stdin from /dev/null,
    /// stdout and stderr piped), without waiting for anything: for
    /// command-line tests. The caller waits for it (or use `run_raw`).
    pub fn spawn_raw<S: AsRef<OsStr>>(args: &[S]) -> Child {
        Command::new(PROXY_BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PROXY_BIN}: {e}"))
    }

    /// Runs the proxy binary with exactly `args` to its end (at most 30 s)
    /// and returns its exit status and output.
    pub fn run_raw<S: AsRef<OsStr>>(args: &[S]) -> Output {
        run_with_timeout(Command::new(PROXY_BIN).args(args), Duration::from_secs(30))
    }

    /// The socket the proxy listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The proxy's process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pids fit in pid_t")
    }

    /// Connects a new client; returns it with the greeting line.
    pub fn connect(&self) -> (Client, String) {
        Client::connect(&self.socket)
    }

    /// Connects a new client and completes `qmp_capabilities`.
    pub fn connect_negotiated(&self) -> Client {
        Client::connect_negotiated(&self.socket)
    }

    /// Everything the proxy has written to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// Everything the proxy has written to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the proxy.
    pub fn signal(&self, signal: i32) {
        if self.status.is_none() {
            assert!(
                send_signal(self.pid(), signal),
                "cannot send signal {signal} to the proxy: {}",
                io::Error::last_os_error()
            );
        }
    }

    /// Returns the exit status if the proxy has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("cannot wait for the proxy: {e}"));
        }
        self.status
    }

    /// Waits up to `timeout` for the proxy to exit; None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_wait().is_some());
        self.status
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                eprintln!("warning: the proxy ignored SIGTERM for 5 s; killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if thread::panicking() {
            eprintln!(
                "--- proxy stderr:\n{}--- end of proxy stderr",
                self.stderr()
            );
        }
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Why `Client::next_line` returned no line.
#[derive(Debug)]
pub enum ReadEnd {
    /// Nothing (or no whole line) came within the timeout; holds a copy of
    /// what came, which stays buffered for the next read.
    Timeout(Vec<u8>),
    /// The peer closed the connection; holds an unterminated last line.
    Eof(Vec<u8>),
    /// The read failed.
    Error(io::Error),
}

/// A QMP client over a UNIX socket. Every read times out (10 s by default),
/// so no test hangs; a timeout or an unexpected end panics with what came.
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already known to hold no newline, so that
    /// a long line arriving in many reads is scanned once.
    scanned: usize,
    timeout: Duration,
    held: VecDeque<Value>,
    /// Events that `read_reply`, `command` and `wait_event` skipped, in order.
    pub events: Vec<Value>,
}

impl Client {
    /// Connects to `path` and reads the greeting line (returned without CRLF).
    pub fn connect(path: impl AsRef<Path>) -> (Client, String) {
        let mut client = Client::open(path);
        let greeting = client.read_line();
        (client, greeting)
    }

    /// Connects to `path` without reading anything.
    pub fn open(path: impl AsRef<Path>) -> Client {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
        Client::from_stream(stream)
    }

    /// Connects to `path`, checks the greeting's shape and negotiates.
    pub fn connect_negotiated(path: impl AsRef<Path>) -> Client {
        let (mut client, greeting) = Client::connect(path);
        let value: Value = serde_json::from_str(&greeting)
            .unwrap_or_else(|e| panic!("greeting is not JSON ({e}): {greeting}"));
        assert!(
            value["QMP"]["version"]["qemu"].is_object(),
            "not a QMP greeting: {greeting}"
        );
        client.negotiate();
        client
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: UnixStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
            scanned: 0,
            timeout: READ_TIMEOUT,
            held: VecDeque::new(),
            events: Vec::new(),
        }
    }

    /// Sets how long each read waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The socket, e.g. to `shutdown(Shutdown::Write)` it.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends `{"execute": "qmp_capabilities"}` and asserts `{"return": {}}`.
    pub fn negotiate(&mut self) {
        let reply = self.command(r#"{"execute": "qmp_capabilities"}"#);
        assert_eq!(
            reply,
            serde_json::json!({"return": {}}),
            "qmp_capabilities failed"
        );
    }

    /// Writes `bytes` (or text) as they are.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot send {:?}: {e}", String::from_utf8_lossy(bytes)));
    }

    /// Reads one line, terminator included, or says why there is none. A
    /// partial line is never lost: after a timeout it stays buffered.
    pub fn next_line(&mut self, timeout: Duration) -> Result<Vec<u8>, ReadEnd> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(end) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + end;
                self.scanned = 0;
                return Ok(self.buf.drain(..=end).collect());
            }
            self.scanned = self.buf.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadEnd::Timeout(self.buf.clone()));
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("a non-zero read timeout is valid");
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadEnd::Eof(self.take_partial())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ReadEnd::Timeout(self.buf.clone()))
                }
                // The peer closed with our data unread: an end like EOF.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ReadEnd::Eof(self.take_partial()))
                }
                Err(e) => return Err(ReadEnd::Error(e)),
            }
        }
    }

    /// Takes what is buffered, at an end after which nothing more comes.
    fn take_partial(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// Reads one line with its terminator; panics on timeout or EOF.
    pub fn read_raw_line(&mut self) -> Vec<u8> {
        match self.next_line(self.timeout) {
            Ok(line) => line,
            Err(ReadEnd::Timeout(got)) => panic!(
                "no line within {:?}; got {:?}",
                self.timeout,
                String::from_utf8_lossy(&got)
            ),
            Err(ReadEnd::Eof(got)) => {
                panic!(
                    "connection closed while reading a line; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            }
            Err(ReadEnd::Error(e)) => panic!("cannot read: {e}"),
        }
    }

    /// Reads one CRLF-terminated line (as QEMU ends them) and returns it
    /// without the CRLF; panics on timeout, EOF, a bare LF or invalid UTF-8.
    pub fn read_line(&mut self) -> String {
        let line = self.read_raw_line();
        let text = String::from_utf8(line).unwrap_or_else(|e| panic!("line is not UTF-8: {e}"));
        match text.strip_suffix("\r\n") {
            Some(text) => text.to_owned(),
            None => panic!("line not terminated by CRLF: {text:?}"),
        }
    }

    /// Reads one line and parses it, whatever it is (reply or event).
    pub fn read_json(&mut self) -> Value {
        let line = self.read_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("line is not JSON ({e}): {line}"))
    }

    /// Reads the next line that is not an event; events on the way go to
    /// `self.events`.
    pub fn read_reply(&mut self) -> Value {
        if let Some(reply) = self.held.pop_front() {
            return reply;
        }
        loop {
            let value = self.read_json();
            if value.get("event").is_some() {
                self.events.push(value);
            } else {
                return value;
            }
        }
    }

    /// Sends `json` and a newline, then returns `read_reply()`.
    pub fn command(&mut self, json: &str) -> Value {
        self.send(format!("{json}\n").as_bytes());
        self.read_reply()
    }

    /// Returns the first event called `name`, from `self.events` (removing
    /// it) or read from the socket; replies read meanwhile are kept for
    /// `read_reply`. Panics after the read timeout.
    pub fn wait_event(&mut self, name: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i);
        }
        loop {
            let value = self.read_json();
            if value["event"] == name {
                return value;
            } else if value.get("event").is_some() {
                self.events.push(value);
            } else {
                self.held.push_back(value);
            }
        }
    }

    /// Reads lines (without CRLF) until nothing comes for `ms` milliseconds
    /// or the connection closes.
    pub fn read_until_quiet(&mut self, ms: u64) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.next_line(Duration::from_millis(ms)) {
                Ok(line) => {
                    let text = String::from_utf8_lossy(&line);
                    lines.push(text.trim_end_matches(['\r', '\n']).to_owned());
                }
                // A partial line after a timeout stays buffered.
                Err(ReadEnd::Timeout(_)) => return lines,
                Err(ReadEnd::Eof(got)) => {
                    // Keep an unterminated last line for the next read.
                    self.buf = got;
                    return lines;
                }
                Err(ReadEnd::Error(e)) => panic!("cannot read: {e}"),
            }
        }
    }

    /// Asserts that nothing comes for `wait` and the connection stays open.
    pub fn expect_silence(&mut self, wait: Duration) {
        match self.next_line(wait) {
            Err(ReadEnd::Timeout(got)) if got.is_empty() => {}
            other => panic!("expected silence for {wait:?}, got {other:?}"),
        }
    }

    /// Asserts that the peer closes the connection within `timeout` without
    /// sending anything more.
    pub fn expect_eof(&mut self, timeout: Duration) {
        match self.next_line(timeout) {
            Err(ReadEnd::Eof(got)) if got.is_empty() => {}
            Ok(line) => panic!(
                "expected EOF, got a line: {:?}",
                String::from_utf8_lossy(&line)
            ),
            Err(ReadEnd::Eof(got)) => {
                panic!(
                    "expected EOF, got an unterminated line: {:?}",
                    String::from_utf8_lossy(&got)
                )
            }
            Err(ReadEnd::Timeout(got)) => panic!(
                "expected EOF within {timeout:?}, the connection stays open; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Err(ReadEnd::Error(e)) => panic!("expected EOF, the read failed: {e}"),
        }
    }
}

/// Sends query-status every 100 ms until a reply satisfies `done` (30 s at
/// most): for a proxy that is reconnecting to libvirt.
pub fn wait_for(client: &mut Client, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = client.command(r#"{"execute":"query-status"}"#);
        if done(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "still no such reply after 30 s: {reply}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A helper for exit-status assertions: the signal that killed a process.
pub fn killed_by(status: ExitStatus) -> Option<i32> {
    status.signal()
}

/// Output lines as the QMP corpus records them: split on CRLF, a trailing
/// fragment without CRLF kept as its own line marked `<no CRLF>`.
pub fn corpus_lines(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let mut parts: Vec<&str> = text.split("\r\n").collect();
    let last = parts.pop().unwrap_or_default();
    let mut lines: Vec<String> = parts.into_iter().map(str::to_owned).collect();
    if !last.is_empty() {
        lines.push(format!("{last}<no CRLF>"));
    }
    lines
}
