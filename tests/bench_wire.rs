// SPDX-License-Identifier: LGPL-2.1-or-later
//! The bench's reading of libvirt's client log (benches/proxy/wire.rs),
//! tested here: the bench's own target has no test harness.

#[allow(dead_code)]
#[path = "../benches/proxy/wire.rs"]
mod wire;

use wire::{compare, event_first, received, Received, Traced};

/// A probe line as libvirt 9.0 logs it.
fn rx(prog: u64, procedure: u64, kind: u64) -> String {
    format!(
        "2026-12-01 18:59:19.192+0000: 16763: info : virNetClientCallDispatch:1299 : \
         RPC_CLIENT_MSG_RX: client=0x5630 len=64 prog={prog} vers=1 proc={procedure} type={kind} status=0 serial=7"
    )
}

// libvirt's qemu_protocol.x and remote_protocol.x.
const QEMU: u64 = 0x2000_8087;
const REMOTE: u64 = 0x2000_8086;

fn event() -> String {
    rx(QEMU, 6, 2)
}

fn reply() -> String {
    rx(QEMU, 1, 1)
}

#[test]
fn only_qemu_monitor_events_and_replies_count() {
    let log = [
        reply(),
        event(),
        // A lifecycle event and a reply of the remote program.
        rx(REMOTE, 107, 2),
        rx(REMOTE, 2, 1),
        // A reply to a monitor command with files.
        rx(QEMU, 7, 1),
        "2026-12-01 18:59:19.192+0000: 16763: debug : something else".to_owned(),
    ]
    .join("\n");
    use Received::*;
    assert_eq!(received(&log), vec![Reply, Event, Reply]);
}

#[test]
fn a_late_event_belongs_to_its_own_command() {
    use Received::*;
    // A start-up command without an event, then three commands: the
    // first one's event comes after its reply, which makes it no event
    // of the second's; the third's comes late too.
    let messages = [Reply, Reply, Event, Event, Reply, Reply, Event];
    assert_eq!(event_first(&messages, 3).unwrap(), vec![false, true, false]);
    assert!(event_first(&messages, 5).is_err());
}

#[test]
fn tries_pair_with_the_wire() {
    // Try 1: STOP first on the wire and delivered first; RESUME first on
    // the wire but delivered after. Try 2: STOP late on the wire but
    // delivered first; RESUME first and delivered first.
    let log = [
        event(),
        reply(),
        event(),
        reply(),
        reply(),
        event(),
        event(),
        reply(),
    ]
    .join("\n");
    let seen = [[true, false], [true, true]];
    assert_eq!(
        compare(&log, &seen).unwrap(),
        Traced {
            tries: 2,
            wire_first: [1, 2],
            delivered_first: [1, 1],
            ahead_of_wire: [1, 0],
        }
    );
}
