// SPDX-License-Identifier: LGPL-2.1-or-later
//! libvirt's event loop: our own implementation of virEventRegisterImpl,
//! run by the `events` thread.
//!
//! Every libvirt callback runs on this thread; callbacks only copy their
//! data into a `Notice` and send it down an mpsc channel.
//!
//! Why not libvirt's default loop: on every handle and timeout update it
//! destroys and re-creates a GSource and queues an idle callback, each a
//! wake-up of the loop thread, and around every call the remote driver
//! disables and re-enables its socket watch and keepalive re-arms its
//! timer. Here an update only changes a table under a lock; the loop thread
//! is woken (a byte down a socket pair) only when its poll must watch more
//! than it does, when a timer must fire before it would wake anyway, or
//! when a handle or timer removed from another thread has data to free.
//!
//! The loop does what libvirt's own implementations do: poll, run the
//! timers that are due, run the handles that are ready, then drop what was
//! removed, which calls libvirt's free functions from a clean stack. No
//! lock is held while a libvirt callback runs: callbacks take libvirt's
//! locks and call back into us.

use std::cell::Cell;
use std::ffi::c_int;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use virt::sys;

use crate::error::{Error, Result};
use crate::ffi::{self, EventImpl, HandleCallback, TimeoutCallback};
use crate::sync;

/// How long dropping an `EventLoop` waits for a callback in progress.
const STOP_TIME: Duration = Duration::from_secs(2);

/// A watched file descriptor.
struct Handle {
    watch: c_int,
    fd: c_int,
    /// VIR_EVENT_HANDLE_* bits wanted; 0: not watched.
    events: c_int,
    /// The poll(2) events of the poll in progress; 0 when not in it.
    polled: i16,
    callback: Arc<HandleCallback>,
    removed: bool,
}

/// A timer.
struct Timer {
    id: c_int,
    /// ms between runs; negative: disabled.
    frequency: c_int,
    /// When it runs next; None when disabled.
    due: Option<Instant>,
    callback: Arc<TimeoutCallback>,
    removed: bool,
}

/// Everything behind the lock.
#[derive(Default)]
struct State {
    handles: Vec<Handle>,
    timers: Vec<Timer>,
    /// Ids already given, so that none is given twice.
    last_watch: c_int,
    last_timer: c_int,
    /// The loop thread polls, or is about to, with the `polled` events and
    /// until `sleep_until` (None: for ever): a change it must see needs a wake-up.
    polling: bool,
    sleep_until: Option<Instant>,
    /// A byte is on its way down the wake-up pair.
    woken: bool,
    /// Some handle or timer is marked removed, waiting to be freed.
    removals: bool,
    running: bool,
    stopping: bool,
    /// The loop thread is running timers, for `flush`.
    in_timers: bool,
}

/// The loop's state and its wake-up pair, for the whole process: libvirt
/// keeps the implementation registered for good.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a pass over the timers ends and when the loop stops.
    changed: Condvar,
    wake_sender: UnixStream,
    wake_receiver: UnixStream,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

thread_local! {
    /// Set on the `events` thread, where removals are freed without a wake-up.
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// VIR_EVENT_HANDLE_* bits as poll(2) events.
fn poll_events(events: c_int) -> i16 {
    let mut polled = 0;
    for (handle, poll) in [
        (sys::VIR_EVENT_HANDLE_READABLE, libc::POLLIN),
        (sys::VIR_EVENT_HANDLE_WRITABLE, libc::POLLOUT),
        (sys::VIR_EVENT_HANDLE_ERROR, libc::POLLERR),
        (sys::VIR_EVENT_HANDLE_HANGUP, libc::POLLHUP),
    ] {
        if events & handle as c_int != 0 {
            polled |= poll;
        }
    }
    polled
}

/// poll(2) results as VIR_EVENT_HANDLE_* bits; POLLNVAL counts as an error,
/// as libvirt's GLib loop has it.
fn handle_events(revents: i16) -> c_int {
    let mut events = 0;
    for (poll, handle) in [
        (libc::POLLIN, sys::VIR_EVENT_HANDLE_READABLE),
        (libc::POLLOUT, sys::VIR_EVENT_HANDLE_WRITABLE),
        (libc::POLLERR | libc::POLLNVAL, sys::VIR_EVENT_HANDLE_ERROR),
        (libc::POLLHUP, sys::VIR_EVENT_HANDLE_HANGUP),
    ] {
        if revents & poll != 0 {
            events |= handle as c_int;
        }
    }
    events
}

/// The next id after `last`, never 0 nor reused; None once all are used.
fn next_id(last: &mut c_int) -> Option<c_int> {
    *last = last.checked_add(1)?;
    Some(*last)
}

/// When a timer of `frequency` ms set at `now` runs; None when disabled.
fn due_time(frequency: c_int, now: Instant) -> Option<Instant> {
    u64::try_from(frequency)
        .ok()
        .map(|ms| now + Duration::from_millis(ms))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Makes the loop's poll return, once per poll however many ask.
    fn wake(&self, state: &mut State) {
        if !state.woken {
            state.woken = true;
            // A full pair already holds a wake-up.
            let _ = (&self.wake_sender).write(&[1]);
        }
    }

    /// Wakes the loop if a timer now due at `due` must run before its
    /// poll ends.
    fn wake_for_timer(&self, state: &mut State, due: Option<Instant>) {
        let sooner = match (due, state.sleep_until) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(due), Some(until)) => due < until,
        };
        if state.polling && sooner {
            self.wake(state);
        }
    }

    /// Wakes the loop after a removal from another thread, so that the
    /// data libvirt gave is freed soon; on the loop thread it is freed at
    /// the end of this iteration anyway.
    fn wake_for_removal(&self, state: &mut State) {
        state.removals = true;
        if state.polling && !ON_LOOP.get() {
            self.wake(state);
        }
    }

    /// One iteration: poll, run due timers, run ready handles, free what
    /// was removed. False once asked to stop.
    fn run_once(&self) -> bool {
        let mut state = self.lock();
        if state.stopping {
            return false;
        }
        let mut entries = vec![libc::pollfd {
            fd: self.wake_receiver.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut watches = vec![0];
        for handle in state.handles.iter_mut() {
            if handle.removed || handle.events == 0 {
                continue;
            }
            handle.polled = poll_events(handle.events);
            entries.push(libc::pollfd {
                fd: handle.fd,
                events: handle.polled,
                revents: 0,
            });
            watches.push(handle.watch);
        }
        let sleep_until = state
            .timers
            .iter()
            .filter(|timer| !timer.removed)
            .filter_map(|timer| timer.due)
            .min();
        state.polling = true;
        state.sleep_until = sleep_until;
        drop(state);

        let limit = sleep_until.map(|until| until.saturating_duration_since(Instant::now()));
        let polled = ffi::poll(&mut entries, limit);

        let mut state = self.lock();
        state.polling = false;
        for handle in state.handles.iter_mut() {
            handle.polled = 0;
        }
        if state.woken {
            self.drain_wake_ups();
            state.woken = false;
        }
        match polled {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Only a bad array or no memory: wait a little rather than spin.
                crate::error!("event loop: poll failed: {e}");
                drop(state);
                std::thread::sleep(Duration::from_millis(10));
                return true;
            }
        }
        state = self.run_timers(state);
        for (entry, &watch) in entries.iter().zip(&watches).skip(1) {
            if entry.revents != 0 {
                state = self.run_handle(state, watch, entry.revents);
            }
        }
        // A free function may remove more.
        while state.removals {
            state = self.free_removed(state);
        }
        true
    }

    /// Runs every timer due now, one at a time without the lock.
    fn run_timers<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.in_timers = true;
        let now = Instant::now();
        let due: Vec<c_int> = state
            .timers
            .iter()
            .filter(|timer| !timer.removed && timer.due.is_some_and(|due| due <= now))
            .map(|timer| timer.id)
            .collect();
        for id in due {
            // An earlier callback may have removed, disabled or moved it.
            let Some(timer) = state.timers.iter_mut().find(|timer| {
                timer.id == id && !timer.removed && timer.due.is_some_and(|due| due <= now)
            }) else {
                continue;
            };
            timer.due = due_time(timer.frequency, Instant::now());
            let callback = Arc::clone(&timer.callback);
            drop(state);
            callback.call(id);
            drop(callback);
            state = self.lock();
        }
        state.in_timers = false;
        self.changed.notify_all();
        state
    }

    /// Runs the callback of handle `watch` for what poll returned, masked
    /// to what the handle wants now (errors and hang-ups always count).
    fn run_handle<'a>(
        &'a self,
        state: MutexGuard<'a, State>,
        watch: c_int,
        revents: i16,
    ) -> MutexGuard<'a, State> {
        let Some(handle) = state
            .handles
            .iter()
            .find(|handle| handle.watch == watch && !handle.removed && handle.events != 0)
        else {
            return state;
        };
        let wanted =
            handle.events | (sys::VIR_EVENT_HANDLE_ERROR | sys::VIR_EVENT_HANDLE_HANGUP) as c_int;
        let events = handle_events(revents) & wanted;
        if events == 0 {
            return state;
        }
        let (fd, callback) = (handle.fd, Arc::clone(&handle.callback));
        drop(state);
        callback.call(watch, fd, events);
        drop(callback);
        self.lock()
    }

    /// Takes out what was removed and drops it without the lock, which
    /// calls libvirt's free functions: no callback runs now, and only this
    /// thread ever holds another reference, during a dispatch.
    fn free_removed<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.removals = false;
        let (handles, kept): (Vec<Handle>, Vec<Handle>) = std::mem::take(&mut state.handles)
            .into_iter()
            .partition(|handle| handle.removed);
        state.handles = kept;
        let (timers, kept): (Vec<Timer>, Vec<Timer>) = std::mem::take(&mut state.timers)
            .into_iter()
            .partition(|timer| timer.removed);
        state.timers = kept;
        drop(state);
        drop(handles);
        drop(timers);
        self.lock()
    }

    /// Empties the wake-up pair.
    fn drain_wake_ups(&self) {
        let mut buffer = [0u8; 64];
        while matches!((&self.wake_receiver).read(&mut buffer), Ok(n) if n > 0) {}
    }
}

impl EventImpl for Shared {
    fn add_handle(
        &self,
        fd: c_int,
        events: c_int,
        callback: HandleCallback,
    ) -> std::result::Result<c_int, HandleCallback> {
        let mut state = self.lock();
        let Some(watch) = next_id(&mut state.last_watch) else {
            return Err(callback);
        };
        state.handles.push(Handle {
            watch,
            fd,
            events,
            polled: 0,
            callback: Arc::new(callback),
            removed: false,
        });
        if state.polling && events != 0 {
            self.wake(&mut state);
        }
        Ok(watch)
    }

    fn update_handle(&self, watch: c_int, events: c_int) {
        let mut state = self.lock();
        let polling = state.polling;
        let Some(handle) = state
            .handles
            .iter_mut()
            .find(|handle| handle.watch == watch && !handle.removed)
        else {
            return;
        };
        handle.events = events;
        // Fewer events need no wake-up: what poll reports beyond them is
        // not dispatched, and the next poll leaves them out.
        let more = poll_events(events) & !handle.polled != 0;
        if polling && more {
            self.wake(&mut state);
        }
    }

    fn remove_handle(&self, watch: c_int) -> bool {
        let mut state = self.lock();
        let Some(handle) = state
            .handles
            .iter_mut()
            .find(|handle| handle.watch == watch && !handle.removed)
        else {
            return false;
        };
        handle.removed = true;
        self.wake_for_removal(&mut state);
        true
    }

    fn add_timeout(
        &self,
        frequency: c_int,
        callback: TimeoutCallback,
    ) -> std::result::Result<c_int, TimeoutCallback> {
        let mut state = self.lock();
        let Some(id) = next_id(&mut state.last_timer) else {
            return Err(callback);
        };
        let due = due_time(frequency, Instant::now());
        state.timers.push(Timer {
            id,
            frequency,
            due,
            callback: Arc::new(callback),
            removed: false,
        });
        self.wake_for_timer(&mut state, due);
        Ok(id)
    }

    fn update_timeout(&self, id: c_int, frequency: c_int) {
        let mut state = self.lock();
        let Some(timer) = state
            .timers
            .iter_mut()
            .find(|timer| timer.id == id && !timer.removed)
        else {
            return;
        };
        // As libvirt's loops do: an update restarts the countdown.
        let due = due_time(frequency, Instant::now());
        timer.frequency = frequency;
        timer.due = due;
        // A timer moved later, or disabled, only makes the poll end early.
        self.wake_for_timer(&mut state, due);
    }

    fn remove_timeout(&self, id: c_int) -> bool {
        let mut state = self.lock();
        let Some(timer) = state
            .timers
            .iter_mut()
            .find(|timer| timer.id == id && !timer.removed)
        else {
            return false;
        };
        timer.removed = true;
        self.wake_for_removal(&mut state);
        true
    }
}

/// The process's loop state, made and registered with libvirt on first use.
fn shared() -> Result<&'static Shared> {
    if let Some(shared) = SHARED.get() {
        return Ok(shared);
    }
    let io_error = |source| Error::Io {
        what: "cannot create the event loop's wake-up pair",
        source,
    };
    let (wake_sender, wake_receiver) = UnixStream::pair().map_err(io_error)?;
    wake_sender.set_nonblocking(true).map_err(io_error)?;
    wake_receiver.set_nonblocking(true).map_err(io_error)?;
    // A racing first use loses its pair; both see the one that won.
    let _ = SHARED.set(Shared {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        wake_sender,
        wake_receiver,
    });
    let shared = SHARED.get().expect("SHARED was set just above");
    ffi::register_event_impl(shared);
    Ok(shared)
}

/// Waits until the loop has run every timer due now (libvirt delivers the
/// events it received on a 0 ms timer), at most `limit`; true when it has.
/// Cheap when nothing is due: a look at the timers, no wake-up. False at
/// once on the loop thread itself, or when no loop runs.
pub fn flush(limit: Duration) -> bool {
    let Some(shared) = SHARED.get() else {
        return true;
    };
    if ON_LOOP.get() {
        return false;
    }
    let mut state = shared.lock();
    let now = Instant::now();
    // A timer run since `now` is due later than `now` (or disabled, or
    // removed); its callback has returned once the pass is over.
    let pending = |state: &mut State| {
        state.in_timers
            || state
                .timers
                .iter()
                .any(|timer| !timer.removed && timer.due.is_some_and(|due| due <= now))
    };
    if !pending(&mut state) {
        return true;
    }
    if !state.running {
        return false;
    }
    if state.polling {
        // Its poll ends by itself when a timer is due; this only saves
        // waiting out a poll that began just before the timer was set.
        shared.wake(&mut state);
    }
    let mut state = sync::wait_while(&shared.changed, state, limit, |state| {
        state.running && pending(state)
    });
    !pending(&mut state)
}

/// The thread that runs the event loop.
pub struct EventLoop {
    thread: Option<JoinHandle<()>>,
}

/// Marks the loop stopped when its thread ends, also by a panic.
struct Running(&'static Shared);

impl Drop for Running {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.running = false;
        state.stopping = false;
        state.polling = false;
        self.0.changed.notify_all();
    }
}

impl EventLoop {
    /// Registers our event loop with libvirt and starts running it. Must
    /// come before the first connection is opened: the embedded driver and
    /// event registrations need it, and its monitor I/O runs on it.
    pub fn start() -> Result<EventLoop> {
        let shared = shared()?;
        {
            let mut state = shared.lock();
            if state.running {
                return Err(Error::Io {
                    what: "cannot start libvirt's event loop",
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "it runs already"),
                });
            }
            state.running = true;
        }
        let running = Running(shared);
        // Should the thread not start, the guard goes with the closure.
        let thread = sync::spawn("events", None, move || {
            let _running = running;
            ON_LOOP.set(true);
            while shared.run_once() {}
        })?;
        Ok(EventLoop {
            thread: Some(thread),
        })
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        let Some(shared) = SHARED.get() else {
            return;
        };
        let mut state = shared.lock();
        state.stopping = true;
        shared.wake(&mut state);
        // A callback stuck in libvirt must not hold up the exit for ever.
        let state = sync::wait_while(&shared.changed, state, STOP_TIME, |state| state.running);
        let stopped = !state.running;
        drop(state);
        match self.thread.take() {
            Some(thread) if stopped => {
                let _ = thread.join();
            }
            _ => crate::warn!(
                "libvirt's event loop did not stop within {} ms",
                STOP_TIME.as_millis()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_poll_and_back() {
        let all = (sys::VIR_EVENT_HANDLE_READABLE
            | sys::VIR_EVENT_HANDLE_WRITABLE
            | sys::VIR_EVENT_HANDLE_ERROR
            | sys::VIR_EVENT_HANDLE_HANGUP) as c_int;
        for events in 0..=all {
            assert_eq!(handle_events(poll_events(events)), events);
        }
        assert_eq!(
            handle_events(libc::POLLNVAL),
            sys::VIR_EVENT_HANDLE_ERROR as c_int
        );
    }

    #[test]
    fn ids_are_positive_and_never_reused() {
        let mut last = 0;
        assert_eq!(next_id(&mut last), Some(1));
        assert_eq!(next_id(&mut last), Some(2));
        let mut last = c_int::MAX;
        assert_eq!(next_id(&mut last), None);
        assert_eq!(next_id(&mut last), None);
    }

    #[test]
    fn disabled_timers_have_no_due_time() {
        let now = Instant::now();
        assert_eq!(due_time(-1, now), None);
        assert_eq!(due_time(0, now), Some(now));
        assert_eq!(due_time(5, now), Some(now + Duration::from_millis(5)));
    }
}
