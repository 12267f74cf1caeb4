// SPDX-License-Identifier: LGPL-2.1-or-later
//! Figure 8: what one huge valid command costs while it is in hand, in
//! QEMU 7.2's own QMP server (a bare `qemu-system-x86_64 -M none`, no
//! libvirt) and in this proxy, for the same message: a list of strings of
//! 58 bytes, a million of them (58 MiB) in a full run.
//!
//! Both are read the same way: the kernel's high-water mark of the
//! process's resident memory is reset (/proc/PID/clear_refs), the message
//! is sent and answered, and the peak private memory is the private memory
//! before plus how far the resident memory rose above where it was.

use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::server::{die_with_parent, stop_child};
use crate::stats::private_bytes;

/// QEMU reads its input a byte at a time (0.3 to 0.8 MB/s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(900);

/// Figure 8's readings.
pub struct Huge {
    /// The message's size.
    pub bytes: usize,
    pub qemu: Result<Peak, String>,
    pub proxy: Result<Peak, String>,
}

/// One subject's reading: private bytes idle and at the peak, and the answer.
pub struct Peak {
    pub idle: u64,
    pub peak: u64,
    pub answer: String,
}

/// `{"execute":"x","arguments":{"l":["aaa…", …]}}` with `count` strings.
pub fn message(count: usize) -> Vec<u8> {
    let item = format!("\"{}\"", "a".repeat(58));
    let mut text = Vec::with_capacity(count * (item.len() + 1) + 64);
    text.extend_from_slice(br#"{"execute":"x","arguments":{"l":["#);
    for n in 0..count {
        if n > 0 {
            text.push(b',');
        }
        text.extend_from_slice(item.as_bytes());
    }
    text.extend_from_slice(b"]}}\r\n");
    text
}

/// Sends `message` over `client` to the process `pid` and reads its peak.
pub fn measure(pid: u32, client: &mut Client, message: &[u8]) -> Result<Peak, String> {
    // Let the start-up's and the negotiation's memory settle first.
    thread::sleep(Duration::from_millis(300));
    let idle = private_bytes(pid)?;
    let resident = status_bytes(pid, "VmRSS:")?;
    fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|e| format!("cannot reset the peak of process {pid}: {e}"))?;
    let answer = client.answer(message, ANSWER_TIMEOUT)?;
    let high = status_bytes(pid, "VmHWM:")?;
    Ok(Peak {
        idle,
        peak: idle + high.saturating_sub(resident),
        answer,
    })
}

/// QEMU's own QMP server, started for this reading and stopped after it.
pub fn qemu(workdir: &std::path::Path, message: &[u8]) -> Result<Peak, String> {
    let socket = workdir.join("oracle.sock");
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-M", "none", "-display", "none", "-S", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let begun = Instant::now();
    let client = loop {
        match Client::connect(&socket) {
            Ok(client) => break Ok(client),
            Err(_) if begun.elapsed() < Duration::from_secs(30) => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => break Err(e),
        }
    };
    let reading = client.and_then(|mut client| measure(child.id(), &mut client, message));
    stop_child(&mut child, Duration::from_secs(5));
    let _ = fs::remove_file(&socket);
    reading
}

fn status_bytes(pid: u32, field: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| format!("{path} has no {field}"))
}
