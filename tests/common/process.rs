// SPDX-License-Identifier: LGPL-2.1-or-later
//! What a process costs, as /proc tells it: its private memory (the pages
//! only it holds, from smaps_rollup), its threads and its descriptors; and
//! waiting for those to settle back to a level after a load has gone.
//!
//! The proxy's private memory includes libvirt's embedded QEMU driver when
//! the URI is `qemu:///embed`, so callers compare levels measured in the
//! same run, after a warm-up, with a stated allowance.

use std::fmt;
use std::fs;
use std::time::Duration;

use super::wait_until;

/// Private_Clean + Private_Dirty of process `pid`, in KiB: the resident
/// pages no other process maps (heap, stacks, and file pages only it uses).
pub fn private_memory_kib(pid: i32) -> u64 {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .unwrap_or_else(|| panic!("{path} has no {name} line:\n{text}"))
    };
    field("Private_Clean:") + field("Private_Dirty:")
}

/// The number of threads of process `pid` (`Threads:` in /proc/PID/status).
pub fn threads(pid: i32) -> usize {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{path} has no Threads: line"))
}

/// What a process holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Private memory in KiB (see `private_memory_kib`).
    pub memory_kib: u64,
    pub threads: usize,
    pub descriptors: usize,
}

impl Usage {
    /// Reads the usage of process `pid` now.
    pub fn of(pid: i32) -> Usage {
        Usage {
            memory_kib: private_memory_kib(pid),
            threads: threads(pid),
            descriptors: super::files::open_descriptors(pid),
        }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} KiB private memory, {} threads, {} descriptors",
            self.memory_kib, self.threads, self.descriptors
        )
    }
}

/// Waits up to `timeout` for process `pid` to be back to at most
/// `baseline`'s threads and descriptors (its clients' threads have ended
/// and their sockets are closed), then for its private memory to be at most
/// `baseline.memory_kib + allowance_kib` (freeing may lag a little behind).
/// Returns the last usage read and whether all of that held.
pub fn settle(pid: i32, baseline: Usage, allowance_kib: u64, timeout: Duration) -> (Usage, bool) {
    let mut last = Usage::of(pid);
    let settled = wait_until(timeout, || {
        last = Usage::of(pid);
        last.threads <= baseline.threads
            && last.descriptors <= baseline.descriptors
            && last.memory_kib <= baseline.memory_kib + allowance_kib
    });
    (last, settled)
}

/// Waits up to `timeout` for the thread and descriptor counts of `pid` to
/// be at most `threads` and `descriptors`; returns the usage then.
pub fn wait_counts(pid: i32, threads: usize, descriptors: usize, timeout: Duration) -> Usage {
    let mut last = Usage::of(pid);
    wait_until(timeout, || {
        last = Usage::of(pid);
        last.threads <= threads && last.descriptors <= descriptors
    });
    last
}

/// Private memory of process `pid` in KiB, split into anonymous mappings
/// (heap, stacks: what the process allocated) and file mappings (code and
/// data of the binary and libraries; their clean pages turn private when
/// the last other process mapping the same file exits).
pub fn private_memory_split_kib(pid: i32) -> (u64, u64) {
    let path = format!("/proc/{pid}/smaps");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let (mut anonymous, mut file) = (0, 0);
    let mut in_file = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // address perms offset device inode [path]
            let path = line.split_whitespace().nth(5).unwrap_or("");
            in_file = path.starts_with('/');
        } else if first == "Private_Clean:" || first == "Private_Dirty:" {
            let kib: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            if in_file {
                file += kib;
            } else {
                anonymous += kib;
            }
        }
    }
    (anonymous, file)
}

/// The usage of process `pid` at its quietest over `period`: the sample
/// with the fewest threads and descriptors (e.g. once the probe connection
/// of `Proxy::start` has ended).
pub fn quiet_usage(pid: i32, period: Duration) -> Usage {
    let deadline = std::time::Instant::now() + period;
    let mut quietest = Usage::of(pid);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = Usage::of(pid);
        if now.threads + now.descriptors < quietest.threads + quietest.descriptors {
            quietest = now;
        }
    }
    quietest
}
