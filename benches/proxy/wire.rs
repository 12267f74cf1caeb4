// SPDX-License-Identifier: LGPL-2.1-or-later
//! Figure 9's traced run: where the event and the reply of each `stop`
//! and `cont` were in the order libvirt's client received them (the
//! wire), against what the proxy's client saw.
//!
//! A proxy started with libvirt's client log of received messages on
//! (the RPC_CLIENT_MSG_RX probe of rpc.netclient, at info level: one line
//! a message) runs the tries; the log then says in which order the QEMU
//! monitor events and the monitor commands' replies came in. The last
//! replies of the log are the tries', in order.

use std::path::Path;

/// libvirt's QEMU RPC program, and its procedures and message types.
const QEMU_PROGRAM: u64 = 0x2000_8087;
const MONITOR_COMMAND: u64 = 1;
const MONITOR_EVENT: u64 = 6;
const MONITOR_COMMAND_WITH_FILES: u64 = 7;
const REPLY: u64 = 1;
const MESSAGE: u64 = 2;

/// The environment that turns the log on, to `log`, as `env` arguments.
pub fn environment(log: &Path) -> Vec<String> {
    vec![
        "LIBVIRT_LOG_FILTERS=2:rpc.netclient".into(),
        format!("LIBVIRT_LOG_OUTPUTS=2:file:{}", log.display()),
    ]
}

/// What libvirt's client received from the QEMU program, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// A QEMU monitor event.
    Event,
    /// The reply to a monitor command.
    Reply,
}

/// The QEMU monitor events and monitor command replies in `log`, in the
/// order libvirt's client received them.
pub fn received(log: &str) -> Vec<Received> {
    let mut messages = Vec::new();
    for line in log
        .lines()
        .filter(|line| line.contains("RPC_CLIENT_MSG_RX:"))
    {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.parse::<u64>().ok())
        };
        if field("prog") != Some(QEMU_PROGRAM) {
            continue;
        }
        match (field("proc"), field("type")) {
            (Some(MONITOR_EVENT), Some(MESSAGE)) => messages.push(Received::Event),
            (Some(MONITOR_COMMAND | MONITOR_COMMAND_WITH_FILES), Some(REPLY)) => {
                messages.push(Received::Reply)
            }
            _ => {}
        }
    }
    messages
}

/// For each of the last `commands` replies in `messages`, each command
/// raising exactly one event: whether its event came in before it.
///
/// An event that came after its command's reply still comes before the
/// next command's (the client waits for it before sending another), so
/// it is the late one's, not the next command's.
pub fn event_first(messages: &[Received], commands: usize) -> Result<Vec<bool>, String> {
    let replies = messages.iter().filter(|m| **m == Received::Reply).count();
    let Some(before) = replies.checked_sub(commands) else {
        return Err(format!(
            "libvirt's log has {replies} monitor replies, fewer than the {commands} commands sent"
        ));
    };
    let (mut seen, mut late, mut replied) = (false, false, 0);
    let mut first = Vec::with_capacity(commands);
    for message in messages {
        match message {
            Received::Event if late => late = false,
            Received::Event => seen = true,
            Received::Reply => {
                if replied >= before {
                    first.push(seen);
                    late = !seen;
                }
                seen = false;
                replied += 1;
            }
        }
    }
    Ok(first)
}

/// The traced run's counts, for `stop` [0] and `cont` [1].
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traced {
    pub tries: usize,
    /// The event came in before the reply.
    pub wire_first: [usize; 2],
    /// ... and the proxy's client got it before the reply too.
    pub delivered_first: [usize; 2],
    /// The event came in after the reply, yet the client got it first:
    /// libvirt had read it before the proxy wrote the reply.
    pub ahead_of_wire: [usize; 2],
}

/// Pairs `seen` (per try of `stop` then `cont`, whether the client got
/// STOP, RESUME before the reply) with the order on the wire in `log`.
pub fn compare(log: &str, seen: &[[bool; 2]]) -> Result<Traced, String> {
    let wire = event_first(&received(log), seen.len() * 2)?;
    let mut traced = Traced {
        tries: seen.len(),
        ..Traced::default()
    };
    for (pair, tried) in wire.chunks(2).zip(seen) {
        for slot in 0..2 {
            match (pair[slot], tried[slot]) {
                (true, true) => {
                    traced.wire_first[slot] += 1;
                    traced.delivered_first[slot] += 1;
                }
                (true, false) => traced.wire_first[slot] += 1,
                (false, true) => traced.ahead_of_wire[slot] += 1,
                (false, false) => {}
            }
        }
    }
    Ok(traced)
}
