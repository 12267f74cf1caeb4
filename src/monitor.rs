// SPDX-License-Identifier: LGPL-2.1-or-later
//! The guest's QMP monitor as the client sessions see it: one call per command.
//!
//! The trait keeps the sessions free of libvirt, so that the tests can put
//! a fake monitor behind a real socket.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// libvirt's answer to one command.
#[derive(Debug)]
pub struct Reply {
    /// libvirt's re-serialisation of QEMU's reply, with libvirt's own id.
    pub text: String,
    /// File descriptors that came back with the reply.
    pub files: Vec<OwnedFd>,
}

/// A command libvirt could not carry out; `desc` becomes a QMP error's desc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub desc: String,
}

/// Runs QMP commands on the guest. Calls from several threads are allowed;
/// the implementation serialises what must be serialised.
pub trait Monitor: Send + Sync {
    /// Sends `command` (compact JSON without an id) with `files` attached.
    /// The files are consumed whatever the outcome.
    fn execute(&self, command: &str, files: Vec<OwnedFd>) -> Result<Reply, Failure>;
}

/// Calls a monitor from one thread at a time without leaving it idle
/// between calls ("flat combining"). Whoever finds the monitor free runs
/// its own command, then the commands that queued up meanwhile, handing
/// their results back; after `HANDOFF` of them it passes the role on to
/// the next waiter, so that its own client is not kept waiting for long.
/// An uncontended call runs on the caller's thread with no hand-over; a
/// contended one costs no wake-up between libvirt calls, which libvirt
/// serialises per guest anyway.
pub struct Combining {
    inner: Arc<dyn Monitor>,
    state: Mutex<Combiner>,
}

/// Commands one thread runs for others before passing the role on.
const HANDOFF: usize = 16;

#[derive(Default)]
struct Combiner {
    /// A thread is running commands.
    running: bool,
    waiting: VecDeque<Arc<Slot>>,
}

/// One queued command and, later, its outcome.
struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

enum SlotState {
    Queued(String, Vec<OwnedFd>),
    /// Taken by the combining thread.
    Running,
    Done(Result<Reply, Failure>),
    /// The caller is to run its own command and continue combining.
    Promoted(String, Vec<OwnedFd>),
    Finished,
}

impl Combining {
    pub fn new(inner: Arc<dyn Monitor>) -> Combining {
        Combining {
            inner,
            state: Mutex::new(Combiner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Combiner> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `command`, then others' until the queue is empty or it is time
    /// to hand over; returns the result of `command`.
    fn combine(&self, command: &str, files: Vec<OwnedFd>) -> Result<Reply, Failure> {
        let own = self.inner.execute(command, files);
        for _ in 0..HANDOFF {
            let Some(next) = self.next_or_release() else {
                return own;
            };
            let taken = std::mem::replace(&mut *next.lock(), SlotState::Running);
            let SlotState::Queued(command, files) = taken else {
                unreachable!("only queued slots wait in the queue");
            };
            let result = self.inner.execute(&command, files);
            next.finish(SlotState::Done(result));
        }
        if let Some(next) = self.next_or_release() {
            let taken = std::mem::replace(&mut *next.lock(), SlotState::Running);
            let SlotState::Queued(command, files) = taken else {
                unreachable!("only queued slots wait in the queue");
            };
            next.finish(SlotState::Promoted(command, files));
        }
        own
    }

    /// The next waiting slot, or None after marking the monitor free.
    fn next_or_release(&self) -> Option<Arc<Slot>> {
        let mut state = self.lock();
        let next = state.waiting.pop_front();
        if next.is_none() {
            state.running = false;
        }
        next
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish(&self, outcome: SlotState) {
        *self.lock() = outcome;
        self.changed.notify_one();
    }

    /// Waits until the combining thread has run the command or promoted us.
    fn wait(&self) -> SlotState {
        let mut state = self.lock();
        loop {
            match std::mem::replace(&mut *state, SlotState::Finished) {
                done @ (SlotState::Done(_) | SlotState::Promoted(..)) => return done,
                pending => *state = pending,
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Monitor for Combining {
    fn execute(&self, command: &str, files: Vec<OwnedFd>) -> Result<Reply, Failure> {
        let mut state = self.lock();
        if !state.running {
            state.running = true;
            drop(state);
            return self.combine(command, files);
        }
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Queued(command.to_owned(), files)),
            changed: Condvar::new(),
        });
        state.waiting.push_back(Arc::clone(&slot));
        drop(state);
        match slot.wait() {
            SlotState::Done(result) => result,
            SlotState::Promoted(command, files) => self.combine(&command, files),
            _ => unreachable!("wait returns only a result or a promotion"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    /// Echoes the command; fails the test if two calls ever overlap.
    #[derive(Default)]
    struct Exclusive {
        inside: AtomicBool,
        calls: AtomicUsize,
    }

    impl Monitor for Exclusive {
        fn execute(&self, command: &str, _files: Vec<OwnedFd>) -> Result<Reply, Failure> {
            assert!(
                !self.inside.swap(true, Ordering::SeqCst),
                "two calls at once"
            );
            thread::sleep(Duration::from_micros(50));
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inside.store(false, Ordering::SeqCst);
            Ok(Reply {
                text: command.to_owned(),
                files: Vec::new(),
            })
        }
    }

    #[test]
    fn combined_calls_never_overlap_and_each_gets_its_own_reply() {
        let inner = Arc::new(Exclusive::default());
        let combining = Arc::new(Combining::new(inner.clone()));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let combining = Arc::clone(&combining);
                thread::spawn(move || {
                    for i in 0..200 {
                        let command = format!("{t}-{i}");
                        let reply = combining.execute(&command, Vec::new()).unwrap();
                        assert_eq!(reply.text, command);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 16 * 200);
        assert!(!combining.lock().running, "the monitor must be free again");
    }
}
