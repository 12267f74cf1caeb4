// SPDX-License-Identifier: LGPL-2.1-or-later
//! Threads and locks the way the whole program uses them: named threads
//! whose start-up failure is an `Error`, and locks that survive a panic.
//!
//! A panic in one client's thread must not take the others down, so a
//! poisoned lock is taken as it is: every structure behind one stays
//! consistent between statements.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::error::{Error, Result};

/// Locks `mutex`, also when a thread panicked while holding it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a thread named `name` (shown in panics, `top -H` and gdb), with
/// `stack_size` bytes of stack or the default.
pub fn spawn<T: Send + 'static>(
    name: &str,
    stack_size: Option<usize>,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    let mut builder = thread::Builder::new().name(name.to_owned());
    if let Some(size) = stack_size {
        builder = builder.stack_size(size);
    }
    builder.spawn(body).map_err(|source| Error::Thread {
        name: name.to_owned(),
        source,
    })
}

/// Waits on `changed`, also when a thread panicked while holding the lock.
pub fn wait<'a, T>(changed: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    changed.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `changed` while `blocked` holds, at most `limit`.
pub fn wait_while<'a, T>(
    changed: &Condvar,
    guard: MutexGuard<'a, T>,
    limit: Duration,
    blocked: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    changed
        .wait_timeout_while(guard, limit, blocked)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .0
}

/// Waits on `changed` for a notification or `limit`, whichever comes first.
pub fn wait_timeout<'a, T>(
    changed: &Condvar,
    guard: MutexGuard<'a, T>,
    limit: Duration,
) -> MutexGuard<'a, T> {
    changed
        .wait_timeout(guard, limit)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .0
}
