// SPDX-License-Identifier: LGPL-2.1-or-later
//! The floors: libvirt's monitor-command API called directly, with no
//! socket and no proxy, in two set-ups:
//!
//! - (a) plain (`--plain`): no event implementation registered, no
//!   keepalive; what a program calling libvirt directly pays;
//! - (a′) as the proxy sets itself up: libvirt's default event loop
//!   registered before the open, one thread running it, keepalive on.
//!
//! Registering an event implementation is process-wide and permanent, so
//! each set-up is a process of its own.
//!
//! It runs as a child process of the bench driver (the same executable,
//! `proxy floor ...`), so that with the embedded driver, where one process
//! at a time may hold the guest's root, it can give the guest up between
//! turns as the proxies do. The driver sends it one request per line on
//! stdin and reads one answer per line on stdout:
//!
//! - `seq COUNT JSON`: COUNT calls in a row; answers `ok BYTES T1 T2 ...`
//!   (the last reply's length, then each call's time in ns);
//! - `rate THREADS MILLIS JSON`: THREADS threads calling for MILLIS ms on
//!   the one connection; answers `ok CALLS ELAPSED_NS`;
//! - `order COUNT`: COUNT pairs of `stop` and `cont` with a QMP event
//!   callback registered (not with `--plain`: no loop, no events); answers
//!   `ok STOP_FIRST RESUME_FIRST`, how often the callback for STOP (RESUME)
//!   had run when the call returned;
//! - `info`: answers `ok LIBRARY DAEMON HYPERVISOR URI` then the
//!   `return` of query-version on one more line;
//! - `quit`.
//!
//! With `--startup` it instead times one open + lookup + query-version,
//! prints `ok NS` and exits.

use std::ffi::{c_char, c_int, c_longlong, c_uint, c_void, CStr};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;

use crate::server::{die_with_parent, stop_child};
use virt_qemu_qmp_proxy::libvirt::{KEEPALIVE_COUNT, KEEPALIVE_INTERVAL};

const QUERY_VERSION: &str = r#"{"execute":"query-version"}"#;

/// Runs the floor in this process (the `floor` subcommand); never returns.
pub fn child_main(uri: &str, domain: &str, startup: bool, plain: bool) -> ! {
    let code = match serve(uri, domain, startup, plain) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("floor: {e}");
            println!("err {e}");
            1
        }
    };
    std::process::exit(code)
}

fn serve(uri: &str, name: &str, startup: bool, plain: bool) -> Result<(), String> {
    if std::env::var_os("LIBVIRT_LOG_OUTPUTS").is_none()
        && std::env::var_os("LIBVIRT_DEBUG").is_none()
    {
        // What the proxy does too: the embedded driver logs to stderr otherwise.
        std::env::set_var("LIBVIRT_LOG_OUTPUTS", "4:file:/dev/null");
    }
    virt::error::clear_error_callback();
    if !plain {
        virt::event::event_register_default_impl()
            .map_err(|e| format!("cannot register the event loop: {e}"))?;
        thread::Builder::new()
            .name("events".into())
            .spawn(|| loop {
                if virt::event::event_run_default_impl().is_err() {
                    break;
                }
            })
            .map_err(|e| format!("cannot start the event loop thread: {e}"))?;
    }

    if startup {
        let begun = Instant::now();
        let (connection, domain) = open(uri, name, plain)?;
        let reply = domain
            .qemu_monitor_command(QUERY_VERSION, 0)
            .map_err(|e| format!("query-version: {e}"))?;
        let took = begun.elapsed();
        if !reply.contains("\"qemu\"") {
            return Err(format!("query-version answered {reply}"));
        }
        drop(domain);
        drop(connection);
        println!("ok {}", took.as_nanos());
        return Ok(());
    }

    let (connection, domain) = open(uri, name, plain)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("cannot read a request: {e}"))?;
        let answer = match answer(&connection, &domain, plain, &line) {
            Ok(Some(answer)) => answer,
            Ok(None) => break,
            Err(e) => format!("err {e}"),
        };
        writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
    }
    drop(domain);
    drop(connection);
    Ok(())
}

fn open(uri: &str, name: &str, plain: bool) -> Result<(Connect, Domain), String> {
    let connection =
        Connect::open(Some(uri)).map_err(|e| format!("cannot open {uri}: {}", e.message()))?;
    // The proxy's connection settings: keepalive where the driver has it
    // (not the embedded one), as virsh also turns it on by default. libvirt
    // 9.0 re-arms the keepalive timer on every message it receives, which
    // wakes the event loop thread. Keepalive needs an event loop, so the
    // plain floor has none.
    if !plain {
        let _ = connection.set_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT);
    }
    let domain = connection
        .lookup_domain_by_name(name)
        .map_err(|e| format!("cannot find domain '{name}': {}", e.message()))?;
    Ok((connection, domain))
}

/// Carries out one request; None for `quit`.
fn answer(
    connection: &Connect,
    domain: &Domain,
    plain: bool,
    line: &str,
) -> Result<Option<String>, String> {
    let mut words = line.splitn(4, ' ');
    match words.next().unwrap_or_default() {
        "seq" => {
            let count: usize = number(words.next())?;
            let command = words.collect::<Vec<_>>().join(" ");
            let mut answer = String::from("ok");
            let mut times = Vec::with_capacity(count);
            let mut bytes = 0;
            for _ in 0..count {
                let begun = Instant::now();
                let reply = domain
                    .qemu_monitor_command(&command, 0)
                    .map_err(|e| format!("{command}: {}", e.message()))?;
                times.push(begun.elapsed().as_nanos());
                bytes = check(&reply)?;
            }
            answer.push_str(&format!(" {bytes}"));
            for time in times {
                answer.push_str(&format!(" {time}"));
            }
            Ok(Some(answer))
        }
        "rate" => {
            let threads: usize = number(words.next())?;
            let millis: u64 = number(words.next())?;
            let command = words.next().unwrap_or_default();
            let (calls, elapsed) = rate(domain, threads, Duration::from_millis(millis), command)?;
            Ok(Some(format!("ok {calls} {}", elapsed.as_nanos())))
        }
        "order" if plain => Err("no event loop, hence no events".into()),
        "order" => {
            let count: usize = number(words.next())?;
            let (stop_first, resume_first) = order(connection, domain, count)?;
            Ok(Some(format!("ok {stop_first} {resume_first}")))
        }
        "info" => {
            let library = Connect::version().unwrap_or(0);
            let daemon = connection.lib_version().unwrap_or(0);
            let hypervisor = connection.hyp_version().unwrap_or(0);
            let uri = connection.uri().unwrap_or_default();
            let version = domain
                .qemu_monitor_command(QUERY_VERSION, 0)
                .map_err(|e| format!("query-version: {}", e.message()))?;
            Ok(Some(format!(
                "ok {library} {daemon} {hypervisor} {uri}\n{version}"
            )))
        }
        "quit" => Ok(None),
        other => Err(format!("unknown request '{other}'")),
    }
}

fn number<T: std::str::FromStr>(word: Option<&str>) -> Result<T, String> {
    word.and_then(|word| word.parse().ok())
        .ok_or_else(|| "a number is missing".to_owned())
}

/// Checks a monitor reply is a success; returns its length.
fn check(reply: &str) -> Result<usize, String> {
    if reply.starts_with("{\"return\"") {
        Ok(reply.len())
    } else {
        Err(format!(
            "the guest answered {}",
            &reply[..reply.len().min(300)]
        ))
    }
}

/// `threads` callers on one connection for `window`; returns the calls
/// done and the time from the start to the last one's end.
fn rate(
    domain: &Domain,
    threads: usize,
    window: Duration,
    command: &str,
) -> Result<(u64, Duration), String> {
    let calls = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let mut begun = Instant::now();
    let mut last_end = begun;
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let deadline = Instant::now() + window;
                    let mut done = 0;
                    while Instant::now() < deadline {
                        match domain.qemu_monitor_command(command, 0) {
                            Ok(reply) if check(&reply).is_ok() => done += 1,
                            _ => {
                                failed.store(true, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    calls.fetch_add(done, Ordering::Relaxed);
                    Instant::now()
                })
            })
            .collect();
        begun = Instant::now();
        barrier.wait();
        for worker in workers {
            if let Ok(end) = worker.join() {
                last_end = last_end.max(end);
            }
        }
    });
    if failed.load(Ordering::Relaxed) {
        return Err(format!("a caller's {command} failed"));
    }
    Ok((
        calls.load(Ordering::Relaxed),
        last_end.saturating_duration_since(begun),
    ))
}

/// STOP and RESUME events seen by `on_monitor_event`, in this process.
static STOPS: AtomicU64 = AtomicU64::new(0);
static RESUMES: AtomicU64 = AtomicU64::new(0);

/// libvirt's QMP event callback, on the event loop thread: counts STOP and
/// RESUME.
unsafe extern "C" fn on_monitor_event(
    _connection: virt::sys::virConnectPtr,
    _domain: virt::sys::virDomainPtr,
    event: *const c_char,
    _seconds: c_longlong,
    _micros: c_uint,
    _details: *const c_char,
    _opaque: *mut c_void,
) {
    if event.is_null() {
        return;
    }
    // SAFETY: libvirt passes a NUL-terminated name, valid during the call.
    match unsafe { CStr::from_ptr(event) }.to_bytes() {
        b"STOP" => STOPS.fetch_add(1, Ordering::SeqCst),
        b"RESUME" => RESUMES.fetch_add(1, Ordering::SeqCst),
        _ => 0,
    };
}

/// Figure 9's floor: `count` pairs of `stop` and `cont`; for each call,
/// whether its event's callback had already run when
/// virDomainQemuMonitorCommand returned. The callback is registered only
/// for this, so that the other figures' calls are as before.
fn order(connection: &Connect, domain: &Domain, count: usize) -> Result<(usize, usize), String> {
    // SAFETY: both pointers come from live wrappers that outlive the
    // registration; the callback uses no opaque data, so nothing is freed.
    let id: c_int = unsafe {
        virt::sys::virConnectDomainQemuMonitorEventRegister(
            connection.as_ptr(),
            domain.as_ptr(),
            std::ptr::null(),
            Some(on_monitor_event),
            std::ptr::null_mut(),
            None,
            0,
        )
    };
    if id < 0 {
        return Err(format!(
            "cannot register a QMP event callback: {}",
            virt::error::Error::last_error()
        ));
    }
    let result = (|| {
        let mut first = [0, 0];
        for _ in 0..count {
            for (slot, (command, seen)) in [
                (r#"{"execute":"stop"}"#, &STOPS),
                (r#"{"execute":"cont"}"#, &RESUMES),
            ]
            .into_iter()
            .enumerate()
            {
                let before = seen.load(Ordering::SeqCst);
                let reply = domain
                    .qemu_monitor_command(command, 0)
                    .map_err(|e| format!("{command}: {}", e.message()))?;
                check(&reply)?;
                if seen.load(Ordering::SeqCst) > before {
                    first[slot] += 1;
                    continue;
                }
                // Late: wait for it, so that it is not taken for the next one's.
                let deadline = Instant::now() + Duration::from_secs(10);
                while seen.load(Ordering::SeqCst) == before {
                    if Instant::now() > deadline {
                        return Err(format!("no event for {command} within 10 s"));
                    }
                    thread::sleep(Duration::from_micros(50));
                }
            }
        }
        Ok((first[0], first[1]))
    })();
    // SAFETY: the connection is live and `id` is its registration.
    unsafe { virt::sys::virConnectDomainQemuMonitorEventDeregister(connection.as_ptr(), id) };
    result
}

/// The driver's handle on a running floor process.
pub struct Floor {
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Floor {
    /// Starts the floor process and waits until its connection is open.
    pub fn start(uri: &str, domain: &str, log: &Path, plain: bool) -> Result<Floor, String> {
        let mut child = floor_command(uri, domain, log, plain)?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the floor process: {e}"))?;
        let input = BufWriter::new(child.stdin.take().expect("piped stdin"));
        let output = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut floor = Floor {
            child,
            input,
            output,
        };
        let line = floor.read_line()?;
        if line != "ready" {
            let _ = floor.child.kill();
            let _ = floor.child.wait();
            return Err(format!(
                "the floor did not start: {line} (see {})",
                log.display()
            ));
        }
        Ok(floor)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.output.read_line(&mut line) {
            Ok(0) => Err("the floor process exited".into()),
            Ok(_) => Ok(line.trim_end().to_owned()),
            Err(e) => Err(format!("cannot read from the floor process: {e}")),
        }
    }

    fn request(&mut self, request: &str) -> Result<String, String> {
        writeln!(self.input, "{request}")
            .and_then(|()| self.input.flush())
            .map_err(|e| format!("cannot talk to the floor process: {e}"))?;
        let line = self.read_line()?;
        match line.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim_start().to_owned()),
            None => Err(format!(
                "floor: {}",
                line.strip_prefix("err ").unwrap_or(&line)
            )),
        }
    }

    /// `count` calls of `command` in a row: each call's time in µs, and
    /// the reply's size in bytes.
    pub fn seq(&mut self, command: &str, count: usize) -> Result<(Vec<f64>, usize), String> {
        let answer = self.request(&format!("seq {count} {command}"))?;
        let mut numbers = answer.split(' ').map(|word| word.parse::<f64>());
        let bytes = numbers
            .next()
            .and_then(Result::ok)
            .ok_or("floor: bad answer")? as usize;
        let times = numbers
            .map(|n| {
                n.map(|ns| ns / 1e3)
                    .map_err(|e| format!("floor: bad answer: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((times, bytes))
    }

    /// Calls per second with `threads` callers for `window`.
    pub fn rate(&mut self, threads: usize, window: Duration, command: &str) -> Result<f64, String> {
        let answer = self.request(&format!("rate {threads} {} {command}", window.as_millis()))?;
        let mut numbers = answer
            .split(' ')
            .map(|word| word.parse::<f64>().unwrap_or(f64::NAN));
        let calls = numbers.next().unwrap_or(f64::NAN);
        let elapsed = numbers.next().unwrap_or(f64::NAN) / 1e9;
        Ok(calls / elapsed)
    }

    /// Figure 9: of `count` stop/cont pairs, how often STOP's (RESUME's)
    /// callback ran before the call returned.
    pub fn order(&mut self, count: usize) -> Result<(usize, usize), String> {
        let answer = self.request(&format!("order {count}"))?;
        let mut numbers = answer.split(' ').map(str::parse::<usize>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(stop)), Some(Ok(resume))) => Ok((stop, resume)),
            _ => Err(format!("floor: bad answer '{answer}'")),
        }
    }

    /// libvirt's and QEMU's versions.
    pub fn info(&mut self) -> Result<Info, String> {
        let answer = self.request("info")?;
        let version = self.read_line()?;
        let mut words = answer.split(' ');
        let mut number = || {
            words
                .next()
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let library = number();
        let daemon = number();
        let hypervisor = number();
        let uri = answer.split(' ').nth(3).unwrap_or_default().to_owned();
        let qemu: serde_json::Value =
            serde_json::from_str(&version).map_err(|e| format!("query-version: {e}"))?;
        let qemu = &qemu["return"];
        Ok(Info {
            library: dotted(library),
            daemon: dotted(daemon),
            hypervisor: dotted(hypervisor),
            uri,
            qemu: format!(
                "{}.{}.{}",
                qemu["qemu"]["major"], qemu["qemu"]["minor"], qemu["qemu"]["micro"]
            ),
            qemu_package: qemu["package"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })
    }

    /// Asks the floor process to quit and waits for it.
    pub fn stop(mut self) {
        let _ = writeln!(self.input, "quit").and_then(|()| self.input.flush());
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// Versions seen by the floor.
pub struct Info {
    pub library: String,
    pub daemon: String,
    pub hypervisor: String,
    pub uri: String,
    pub qemu: String,
    pub qemu_package: String,
}

fn dotted(version: u64) -> String {
    format!(
        "{}.{}.{}",
        version / 1_000_000,
        version / 1000 % 1000,
        version % 1000
    )
}

fn floor_command(uri: &str, domain: &str, log: &Path, plain: bool) -> Result<Command, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the bench's own executable: {e}"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let mut command = Command::new(exe);
    command
        .args(["floor", "--uri", uri, "--domain", domain])
        .stderr(log);
    if plain {
        command.arg("--plain");
    }
    die_with_parent(&mut command);
    Ok(command)
}

/// One start-up of the floor in a fresh process: the open + lookup +
/// query-version time measured inside it, and exec to exit, in µs.
pub fn startup(uri: &str, domain: &str, log: &Path, plain: bool) -> Result<(f64, f64), String> {
    let mut command = floor_command(uri, domain, log, plain)?;
    command
        .arg("--startup")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let begun = Instant::now();
    let output = command
        .output()
        .map_err(|e| format!("cannot start the floor process: {e}"))?;
    let whole = begun.elapsed();
    let text = String::from_utf8_lossy(&output.stdout);
    let inside = text
        .trim()
        .strip_prefix("ok ")
        .and_then(|ns| ns.parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "the floor's start-up failed: {} (see {})",
                text.trim(),
                log.display()
            )
        })?;
    Ok((inside / 1e3, crate::stats::micros(whole)))
}
