// SPDX-License-Identifier: LGPL-2.1-or-later
//! What one huge command costs while it is in hand: a valid 58 MiB command
//! (a list of a million strings) goes through `qmp::Stream` and
//! `qmp::Session` as a client's reads bring it, under an allocator that
//! counts live heap bytes, and the peak may be at most twice the message's
//! size. (QEMU 7.2's own parser needs about 5.5 times; `make bench` shows
//! both.) A test binary of its own, so that no other test's allocations
//! are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use virt_qemu_qmp_proxy::qmp::{Action, Session, Stream};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as if the old block lived until the new one exists.
        grew(new_size);
        // SAFETY: as above.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `{"execute":"x","arguments":{"l":["aaa…", …]}}` with `count` strings of 58 bytes.
fn huge_command(count: usize) -> String {
    let item = format!("\"{}\"", "a".repeat(58));
    let mut text = String::with_capacity(count * (item.len() + 1) + 64);
    text.push_str(r#"{"execute":"x","arguments":{"l":["#);
    for n in 0..count {
        if n > 0 {
            text.push(',');
        }
        text.push_str(&item);
    }
    text.push_str("]}}");
    text
}

#[test]
fn a_huge_command_costs_at_most_twice_its_size() {
    let message = huge_command(1_000_000);
    let mut stream = Stream::new();
    let mut session = Session::new();
    let mut items = Vec::new();
    stream.feed(br#"{"execute":"qmp_capabilities"}"#, &mut items);
    for item in items.drain(..) {
        assert!(matches!(session.handle(item), Action::Reply(_)));
    }

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut command = None;
    // As the client's reads bring it (client.rs reads 4 KiB at a time).
    for chunk in message.as_bytes().chunks(4096) {
        stream.feed(chunk, &mut items);
        for item in items.drain(..) {
            match session.handle(item) {
                Action::Execute(execute) => command = Some(execute),
                Action::Reply(line) => panic!("answered locally: {line}"),
                Action::Refused { line, .. } => panic!("refused: {line}"),
            }
        }
    }
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let command = command.expect("the command is complete");
    // libvirt gets the same bytes: the message is already compact JSON.
    assert!(
        command.json == message,
        "the command text for libvirt changed"
    );
    assert_eq!(command.name, "x");
    eprintln!(
        "peak {:.1} MiB for a {:.1} MiB command",
        peak as f64 / f64::from(1 << 20),
        message.len() as f64 / f64::from(1 << 20)
    );
    let limit = 2 * message.len() + (1 << 20);
    assert!(
        peak <= limit,
        "a {} MiB command took {:.1} MiB of heap at its peak ({:.2} × its size; at most 2 ×)",
        message.len() >> 20,
        peak as f64 / f64::from(1 << 20),
        peak as f64 / message.len() as f64
    );
}
