// SPDX-License-Identifier: LGPL-2.1-or-later
//! The QMP servers under test as child processes: (b) this proxy, (c)
//! libvirt's original Python tool and (l) the bench's stand-in
//! (standin.rs), all started as `PROGRAM -c URI DOMAIN SOCKET`. Started means accepting: the bench connects and reads the
//! greeting, which also gives the start-up time (exec to greeting).
//!
//! Children get SIGTERM when the driver dies, and their output goes to a
//! log file in the work folder, shown when something fails.

use std::fs::{self, File};
use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::Client;

/// How long a server may take to accept its first client.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Which implementation a server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Proxy,
    Original,
    StandIn,
}

/// How to run a server.
#[derive(Clone, Debug)]
pub struct Program {
    pub kind: Kind,
    /// The command before the proxy's own arguments (e.g. python3 SCRIPT).
    pub argv: Vec<String>,
}

/// A running server.
pub struct Server {
    pub kind: Kind,
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
    stopped: bool,
}

impl Server {
    /// Starts `program` on `socket` and waits until it has greeted a client;
    /// returns the server and the time from exec to that greeting.
    pub fn start(
        program: &Program,
        uri: &str,
        domain: &str,
        socket: &Path,
        log: &Path,
    ) -> Result<(Server, Duration), String> {
        let _ = fs::remove_file(socket);
        let output =
            File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let errors = output
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        let mut command = Command::new(&program.argv[0]);
        command
            .args(&program.argv[1..])
            .arg("-c")
            .arg(uri)
            .arg(domain)
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors);
        die_with_parent(&mut command);
        let begun = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.argv.join(" ")))?;
        let mut server = Server {
            kind: program.kind,
            child,
            socket: socket.to_owned(),
            log: log.to_owned(),
            stopped: false,
        };
        match server.await_greeting(begun) {
            Ok(took) => Ok((server, took)),
            Err(e) => {
                let e = format!("{e}\n{}", server.log_tail());
                server.stop();
                Err(e)
            }
        }
    }

    /// Connects until the server accepts and greets; returns the time from `begun`.
    fn await_greeting(&mut self, begun: Instant) -> Result<Duration, String> {
        loop {
            match UnixStream::connect(&self.socket) {
                Ok(stream) => {
                    Client::greeted(stream)?;
                    return Ok(begun.elapsed());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => return Err(format!("cannot connect to {}: {e}", self.socket.display())),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{:?} exited ({status}) before accepting",
                    self.kind
                ));
            }
            if begun.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "{:?} did not accept within {START_TIMEOUT:?}",
                    self.kind
                ));
            }
            thread::sleep(Duration::from_micros(250));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects a negotiated client.
    pub fn client(&self) -> Result<Client, String> {
        Client::connect(&self.socket)
    }

    /// The last lines of the server's output, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        if tail.is_empty() {
            format!("({} is empty)", self.log.display())
        } else {
            format!("{}:\n    {}", self.log.display(), tail.join("\n    "))
        }
    }

    /// SIGTERM, then SIGKILL after 5 s; waits for the process.
    pub fn stop(&mut self) {
        if !self.stopped {
            stop_child(&mut self.child, Duration::from_secs(5));
            self.stopped = true;
            let _ = fs::remove_file(&self.socket);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends SIGTERM to `child` (unless it already exited), waits up to `grace`,
/// then kills it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(None) = child.try_wait() {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Makes the child get SIGTERM when the bench driver goes away, so that an
/// interrupted bench leaves no proxy behind.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
