// SPDX-License-Identifier: LGPL-2.1-or-later
//! The thread that runs libvirt's default event loop.
//!
//! Every libvirt callback runs on this thread; callbacks only copy their
//! data into a `Notice` and send it down an mpsc channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::sync;

/// The thread that runs libvirt's default event loop.
pub struct EventLoop {
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventLoop {
    /// Registers libvirt's default event loop and starts running it. Must
    /// come before the first connection is opened: the embedded driver and
    /// event registrations need it, and its monitor I/O runs on it.
    pub fn start() -> Result<EventLoop> {
        virt::event::event_register_default_impl().map_err(|source| Error::Libvirt {
            what: "cannot register libvirt's event loop".into(),
            source,
        })?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let thread = sync::spawn("events", None, move || {
            while !flag.load(Ordering::Acquire) {
                if let Err(e) = virt::event::event_run_default_impl() {
                    crate::error!("libvirt event loop: {}", e.message());
                    break;
                }
            }
        })?;
        Ok(EventLoop {
            stopping,
            thread: Some(thread),
        })
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // An idle loop blocks forever: a one-shot timer wakes it.
        let woken = virt::event::event_add_timeout(
            0,
            |timer, _| {
                let _ = virt::event::EventTimeoutWatch(timer).event_remove_timeout();
            },
            std::ptr::null_mut(),
        );
        if woken.is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}
