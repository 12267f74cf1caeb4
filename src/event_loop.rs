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
//! timer. Here descriptors are watched with epoll(7), whose set another
//! thread can change while the loop waits: an update is a table change and
//! an epoll_ctl, never a wake-up. So a monitor call, which disables the
//! daemon socket's watch while its own thread reads the reply and enables
//! it again after, costs this thread nothing: it sleeps through the call.
//! It is woken (a byte down a socket pair) only when a timer must fire
//! before it would wake anyway, or when a handle or timer removed from
//! another thread has data to free.
//!
//! The loop does what libvirt's own implementations do: wait, run the
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
use crate::ffi::{self, Epoll, EventImpl, HandleCallback, Ready, TimeoutCallback};
use crate::sync;

/// How long dropping an `EventLoop` waits for a callback in progress.
const STOP_TIME: Duration = Duration::from_secs(2);

/// The epoll data of the wake-up pair; descriptors get tags from 1 up.
const WAKE_TAG: u64 = 0;

/// A watched file descriptor.
struct Handle {
    watch: c_int,
    fd: c_int,
    /// VIR_EVENT_HANDLE_* bits wanted; 0: not watched.
    events: c_int,
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

/// How a descriptor that some handle wants is watched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Epoll,
    /// epoll refuses it (a regular file); poll(2) has it always ready.
    AlwaysReady,
    /// epoll cannot watch it (not open); poll(2) reports POLLNVAL.
    Broken,
}

/// A descriptor some handle wants: one entry however many handles share
/// it, since epoll takes a descriptor once.
struct Watched {
    fd: c_int,
    /// EPOLL* bits: the union of what its handles want.
    events: u32,
    /// The epoll data, new at each registration, so that a report from
    /// before a removal never reaches a later handle on the same number.
    tag: u64,
    how: How,
}

impl Watched {
    /// What poll(2) would report at once for a descriptor epoll cannot
    /// watch; 0 for one it does.
    fn at_once(&self) -> u32 {
        match self.how {
            How::Epoll => 0,
            How::AlwaysReady => self.events & (libc::EPOLLIN | libc::EPOLLOUT) as u32,
            How::Broken => libc::EPOLLERR as u32,
        }
    }
}

/// Everything behind the lock.
#[derive(Default)]
struct State {
    handles: Vec<Handle>,
    timers: Vec<Timer>,
    watched: Vec<Watched>,
    /// Ids and tags already given, so that none is given twice.
    last_watch: c_int,
    last_timer: c_int,
    last_tag: u64,
    /// The loop thread waits, or is about to, until `sleep_until` (None:
    /// for ever): a timer due sooner needs a wake-up.
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
    /// Threads waiting in `flush`, to be told when a pass over the timers ends.
    flushers: usize,
    /// Wake-ups sent so far: what the tests count.
    wake_ups: u64,
}

impl State {
    /// The handle `watch`, unless it was removed.
    fn handle(&mut self, watch: c_int) -> Option<&mut Handle> {
        self.handles
            .iter_mut()
            .find(|handle| handle.watch == watch && !handle.removed)
    }

    /// The timer `id`, unless it was removed.
    fn timer(&mut self, id: c_int) -> Option<&mut Timer> {
        self.timers
            .iter_mut()
            .find(|timer| timer.id == id && !timer.removed)
    }
}

/// The loop's state, its epoll instance and its wake-up pair, for the
/// whole process: libvirt keeps the implementation registered for good.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a pass over the timers ends and when the loop stops.
    changed: Condvar,
    epoll: Epoll,
    wake_sender: UnixStream,
    wake_receiver: UnixStream,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

thread_local! {
    /// Set on the `events` thread, where removals are freed without a wake-up.
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// The VIR_EVENT_HANDLE_* bits and the EPOLL* bits they stand for.
const EVENT_BITS: [(sys::virEventHandleType, c_int); 4] = [
    (sys::VIR_EVENT_HANDLE_READABLE, libc::EPOLLIN),
    (sys::VIR_EVENT_HANDLE_WRITABLE, libc::EPOLLOUT),
    (sys::VIR_EVENT_HANDLE_ERROR, libc::EPOLLERR),
    (sys::VIR_EVENT_HANDLE_HANGUP, libc::EPOLLHUP),
];

/// VIR_EVENT_HANDLE_* bits as EPOLL* events.
fn epoll_events(events: c_int) -> u32 {
    EVENT_BITS
        .iter()
        .filter(|(handle, _)| events & *handle as c_int != 0)
        .fold(0, |bits, (_, epoll)| bits | *epoll as u32)
}

/// EPOLL* results as VIR_EVENT_HANDLE_* bits.
fn handle_events(ready: u32) -> c_int {
    EVENT_BITS
        .iter()
        .filter(|(_, epoll)| ready & *epoll as u32 != 0)
        .fold(0, |bits, (handle, _)| bits | *handle as c_int)
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
    /// A loop with nothing to watch yet: its epoll instance, watching the
    /// wake-up pair.
    fn new() -> Result<Shared> {
        let io_error = |source| Error::Io {
            what: "cannot create the event loop's epoll instance and wake-up pair",
            source,
        };
        let epoll = Epoll::new().map_err(io_error)?;
        let (wake_sender, wake_receiver) = UnixStream::pair().map_err(io_error)?;
        wake_sender.set_nonblocking(true).map_err(io_error)?;
        wake_receiver.set_nonblocking(true).map_err(io_error)?;
        let readable = libc::EPOLLIN as u32;
        epoll
            .watch(wake_receiver.as_raw_fd(), readable, WAKE_TAG, false)
            .map_err(io_error)?;
        Ok(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            epoll,
            wake_sender,
            wake_receiver,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Makes the loop's wait return, once per wait however many ask.
    fn wake(&self, state: &mut State) {
        if !state.woken {
            state.woken = true;
            state.wake_ups += 1;
            // A full pair already holds a wake-up.
            let _ = (&self.wake_sender).write(&[1]);
        }
    }

    /// Wakes the loop if a timer now due at `due` must run before its
    /// wait ends.
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

    /// Makes epoll watch `fd` for what its handles want now. Called with
    /// the lock held, at once, so that the set never lags the table: a
    /// removed descriptor may be closed as soon as its remove returns.
    fn rewatch(&self, state: &mut State, fd: c_int) {
        let wanted = state
            .handles
            .iter()
            .filter(|handle| handle.fd == fd && !handle.removed)
            .fold(0, |bits, handle| bits | epoll_events(handle.events));
        let position = state.watched.iter().position(|watched| watched.fd == fd);
        match position {
            None if wanted == 0 => {}
            None => {
                state.last_tag += 1;
                let tag = state.last_tag;
                let how = self.add_watch(fd, wanted, tag);
                state.watched.push(Watched {
                    fd,
                    events: wanted,
                    tag,
                    how,
                });
            }
            Some(i) if wanted == 0 => {
                let watched = state.watched.swap_remove(i);
                if watched.how != How::AlwaysReady {
                    // Fails if it was closed already, which ended the watch,
                    // or was never added.
                    let _ = self.epoll.forget(fd);
                }
            }
            Some(i) => {
                let watched = &mut state.watched[i];
                if watched.events != wanted {
                    watched.events = wanted;
                    if watched.how == How::Epoll {
                        if let Err(e) = self.epoll.watch(fd, wanted, watched.tag, true) {
                            crate::warn!("event loop: cannot watch descriptor {fd}: {e}");
                            watched.how = How::Broken;
                        }
                    }
                }
            }
        }
    }

    /// Adds `fd` to the epoll set for `events`, reported with `tag`;
    /// returns how it is watched.
    fn add_watch(&self, fd: c_int, events: u32, tag: u64) -> How {
        let mut added = self.epoll.watch(fd, events, tag, false);
        // A registration outlived its descriptor number (closed before its
        // handle was removed, its file still open elsewhere): take it over.
        if added
            .as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::EEXIST))
        {
            added = self.epoll.watch(fd, events, tag, true);
        }
        match added {
            Ok(()) => How::Epoll,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => How::AlwaysReady,
            Err(e) => {
                crate::warn!("event loop: cannot watch descriptor {fd}: {e}");
                How::Broken
            }
        }
    }

    /// One iteration: wait, run due timers, run ready handles, free what
    /// was removed. False once asked to stop.
    fn run_once(&self, ready: &mut Vec<Ready>) -> bool {
        let mut state = self.lock();
        if state.stopping {
            return false;
        }
        let at_once: Vec<Ready> = state
            .watched
            .iter()
            .filter(|watched| watched.at_once() != 0)
            .map(|watched| Ready {
                data: watched.tag,
                events: watched.at_once(),
            })
            .collect();
        let sleep_until = state
            .timers
            .iter()
            .filter(|timer| !timer.removed)
            .filter_map(|timer| timer.due)
            .min();
        state.polling = true;
        state.sleep_until = sleep_until;
        drop(state);

        let limit = if at_once.is_empty() {
            sleep_until.map(|until| until.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        let waited = self.epoll.wait(ready, limit);

        let mut state = self.lock();
        state.polling = false;
        if state.woken {
            self.drain_wake_ups();
            state.woken = false;
        }
        match waited {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ready.clear(),
            Err(e) => {
                // Only no memory or a bad instance: wait a little rather than spin.
                crate::error!("event loop: epoll_wait failed: {e}");
                drop(state);
                std::thread::sleep(Duration::from_millis(10));
                return true;
            }
        }
        ready.extend(at_once);
        state = self.run_timers(state);
        for report in ready.iter().filter(|report| report.data != WAKE_TAG) {
            state = self.run_ready(state, report);
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
            let due_now = |timer: &&mut Timer| timer.due.is_some_and(|due| due <= now);
            let Some(timer) = state.timer(id).filter(due_now) else {
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
        if state.flushers > 0 {
            self.changed.notify_all();
        }
        state
    }

    /// Runs the handles of the descriptor `report` is about, each for what
    /// was reported masked to what it wants now (errors and hang-ups
    /// always count).
    fn run_ready<'a>(
        &'a self,
        state: MutexGuard<'a, State>,
        report: &Ready,
    ) -> MutexGuard<'a, State> {
        let Some(fd) = state
            .watched
            .iter()
            .find(|watched| watched.tag == report.data)
            .map(|watched| watched.fd)
        else {
            return state;
        };
        let watches: Vec<c_int> = state
            .handles
            .iter()
            .filter(|handle| handle.fd == fd && !handle.removed)
            .map(|handle| handle.watch)
            .collect();
        let mut state = state;
        for watch in watches {
            state = self.run_handle(state, watch, fd, report.events);
        }
        state
    }

    /// Runs the callback of handle `watch`, if it still watches `fd`.
    fn run_handle<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        watch: c_int,
        fd: c_int,
        ready: u32,
    ) -> MutexGuard<'a, State> {
        let watching = |handle: &&mut Handle| handle.fd == fd && handle.events != 0;
        let Some(handle) = state.handle(watch).filter(watching) else {
            return state;
        };
        let wanted =
            handle.events | (sys::VIR_EVENT_HANDLE_ERROR | sys::VIR_EVENT_HANDLE_HANGUP) as c_int;
        let events = handle_events(ready) & wanted;
        if events == 0 {
            return state;
        }
        let callback = Arc::clone(&handle.callback);
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
            callback: Arc::new(callback),
            removed: false,
        });
        self.rewatch(&mut state, fd);
        Ok(watch)
    }

    fn update_handle(&self, watch: c_int, events: c_int) {
        let mut state = self.lock();
        let Some(handle) = state.handle(watch) else {
            return;
        };
        if handle.events != events {
            handle.events = events;
            let fd = handle.fd;
            self.rewatch(&mut state, fd);
        }
    }

    fn remove_handle(&self, watch: c_int) -> bool {
        let mut state = self.lock();
        let Some(handle) = state.handle(watch) else {
            return false;
        };
        handle.removed = true;
        let fd = handle.fd;
        self.rewatch(&mut state, fd);
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
        let Some(timer) = state.timer(id) else {
            return;
        };
        // As libvirt's loops do: an update restarts the countdown.
        let due = due_time(frequency, Instant::now());
        timer.frequency = frequency;
        timer.due = due;
        // A timer moved later, or disabled, only makes the wait end early.
        self.wake_for_timer(&mut state, due);
    }

    fn remove_timeout(&self, id: c_int) -> bool {
        let mut state = self.lock();
        let Some(timer) = state.timer(id) else {
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
    // A racing first use loses its instance and pair; both see the one that won.
    let _ = SHARED.set(Shared::new()?);
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
        // Its wait ends by itself when a timer is due; this only saves
        // waiting out a wait that began just before the timer was set.
        shared.wake(&mut state);
    }
    state.flushers += 1;
    let mut state = sync::wait_while(&shared.changed, state, limit, |state| {
        state.running && pending(state)
    });
    state.flushers -= 1;
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
            let mut ready = Vec::new();
            while shared.run_once(&mut ready) {}
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
    use std::ffi::c_void;

    #[test]
    fn events_map_to_epoll_and_back() {
        let all = (sys::VIR_EVENT_HANDLE_READABLE
            | sys::VIR_EVENT_HANDLE_WRITABLE
            | sys::VIR_EVENT_HANDLE_ERROR
            | sys::VIR_EVENT_HANDLE_HANGUP) as c_int;
        for events in 0..=all {
            assert_eq!(handle_events(epoll_events(events)), events);
        }
        assert_eq!(
            epoll_events(sys::VIR_EVENT_HANDLE_READABLE as c_int),
            libc::EPOLLIN as u32
        );
        // Bits epoll may add that libvirt has no name for are dropped.
        assert_eq!(handle_events(libc::EPOLLRDHUP as u32), 0);
    }

    /// What the tests' callbacks were called with: (watch or timer, fd
    /// or -1, events or 0). Tests run at once, each on descriptors and
    /// ids of its own loop, so each looks only at its own.
    static CALLS: Mutex<Vec<(usize, c_int, c_int, c_int)>> = Mutex::new(Vec::new());

    // Which `Shared` a call came from: its address.
    thread_local! {
        static LOOP: Cell<usize> = const { Cell::new(0) };
    }

    extern "C" fn handled(watch: c_int, fd: c_int, events: c_int, _: *mut c_void) {
        sync::lock(&CALLS).push((LOOP.get(), watch, fd, events));
    }

    extern "C" fn ticked(timer: c_int, _: *mut c_void) {
        sync::lock(&CALLS).push((LOOP.get(), timer, -1, 0));
    }

    fn calls(shared: &Shared) -> Vec<(c_int, c_int, c_int)> {
        let me = shared as *const Shared as usize;
        sync::lock(&CALLS)
            .iter()
            .filter(|call| call.0 == me)
            .map(|call| (call.1, call.2, call.3))
            .collect()
    }

    /// Runs `shared` on a thread of its own until `done` says so, at
    /// most 5 s, while `meanwhile` runs here; returns what it was called with.
    fn run_until(
        shared: &Shared,
        done: impl Fn(&[(c_int, c_int, c_int)]) -> bool + Sync,
        meanwhile: impl FnOnce(),
    ) -> Vec<(c_int, c_int, c_int)> {
        // A timer that keeps the loop from waiting for ever.
        let guard = shared
            .add_timeout(100, TimeoutCallback::for_tests(ticked))
            .unwrap_or_else(|_| panic!("no timer"));
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                LOOP.set(shared as *const Shared as usize);
                let mut ready = Vec::new();
                while !done(&calls(shared)) && started.elapsed() < Duration::from_secs(5) {
                    shared.run_once(&mut ready);
                }
            });
            meanwhile();
        });
        shared.remove_timeout(guard);
        calls(shared)
            .into_iter()
            .filter(|call| call.0 != guard || call.1 != -1)
            .collect()
    }

    /// The loop is waiting in epoll_wait (or about to be).
    fn waiting(shared: &Shared) {
        while !shared.lock().polling {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    const READABLE: c_int = sys::VIR_EVENT_HANDLE_READABLE as c_int;
    const WRITABLE: c_int = sys::VIR_EVENT_HANDLE_WRITABLE as c_int;

    #[test]
    fn a_watch_enabled_while_the_loop_waits_needs_no_wake_up() {
        let shared = Shared::new().unwrap();
        let (mut theirs, ours) = UnixStream::pair().unwrap();
        let fd = ours.as_raw_fd();
        let watch = shared
            .add_handle(fd, 0, HandleCallback::for_tests(handled))
            .unwrap_or_else(|_| panic!("no handle"));
        let calls = run_until(
            &shared,
            |calls| calls.iter().any(|call| call.1 == fd),
            || {
                waiting(&shared);
                // As libvirt does around a call: disabled, data, enabled.
                shared.update_handle(watch, 0);
                theirs.write_all(b"x").unwrap();
                shared.update_handle(watch, READABLE);
            },
        );
        assert_eq!(calls, vec![(watch, fd, READABLE)]);
        assert_eq!(shared.lock().wake_ups, 0);
    }

    #[test]
    fn a_disabled_watch_is_not_reported() {
        let shared = Shared::new().unwrap();
        let (mut theirs, ours) = UnixStream::pair().unwrap();
        theirs.write_all(b"x").unwrap();
        let fd = ours.as_raw_fd();
        let watch = shared
            .add_handle(fd, READABLE, HandleCallback::for_tests(handled))
            .unwrap_or_else(|_| panic!("no handle"));
        shared.update_handle(watch, 0);
        let ticks = shared
            .add_timeout(30, TimeoutCallback::for_tests(ticked))
            .unwrap_or_else(|_| panic!("no timer"));
        let calls = run_until(&shared, |calls| calls.iter().any(|c| c.0 == ticks), || {});
        assert_eq!(calls, vec![(ticks, -1, 0)]);
    }

    #[test]
    fn handles_sharing_a_descriptor_each_get_their_own_events() {
        let shared = Shared::new().unwrap();
        let (mut theirs, ours) = UnixStream::pair().unwrap();
        theirs.write_all(b"x").unwrap();
        let fd = ours.as_raw_fd();
        let reader = shared
            .add_handle(fd, READABLE, HandleCallback::for_tests(handled))
            .unwrap_or_else(|_| panic!("no handle"));
        let writer = shared
            .add_handle(fd, WRITABLE, HandleCallback::for_tests(handled))
            .unwrap_or_else(|_| panic!("no handle"));
        let calls = run_until(&shared, |calls| calls.len() >= 2, || {});
        assert!(calls.contains(&(reader, fd, READABLE)), "{calls:?}");
        assert!(calls.contains(&(writer, fd, WRITABLE)), "{calls:?}");
        // The reader gone, only the writer is told.
        shared.remove_handle(reader);
        sync::lock(&CALLS).clear();
        let calls = run_until(&shared, |calls| !calls.is_empty(), || {});
        assert_eq!(calls[0], (writer, fd, WRITABLE));
        assert!(calls.iter().all(|call| call.0 == writer));
    }

    #[test]
    fn a_regular_file_is_always_ready_as_poll_has_it() {
        let shared = Shared::new().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fd = file.as_raw_fd();
        let watch = shared
            .add_handle(fd, READABLE, HandleCallback::for_tests(handled))
            .unwrap_or_else(|_| panic!("no handle"));
        let calls = run_until(&shared, |calls| calls.iter().any(|c| c.1 == fd), || {});
        assert_eq!(calls, vec![(watch, fd, READABLE)]);
    }

    #[test]
    fn only_a_timer_due_sooner_wakes_the_loop() {
        let shared = Shared::new().unwrap();
        let timer = shared
            .add_timeout(5000, TimeoutCallback::for_tests(ticked))
            .unwrap_or_else(|_| panic!("no timer"));
        let mut later_woke = None;
        let calls = run_until(
            &shared,
            |calls| calls.iter().any(|call| call.0 == timer),
            || {
                waiting(&shared);
                // Later, as keepalive moves its timer on every message.
                shared.update_timeout(timer, 6000);
                later_woke = Some(shared.lock().wake_ups);
                shared.update_timeout(timer, 10);
            },
        );
        assert_eq!(later_woke, Some(0));
        assert_eq!(shared.lock().wake_ups, 1);
        assert_eq!(calls.first(), Some(&(timer, -1, 0)));
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
