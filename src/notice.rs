// SPDX-License-Identifier: LGPL-2.1-or-later
//! What the server reacts to: guest events, the guest stopping, libvirt
//! lost for good, signals. Everything that can end serving or must reach
//! the clients arrives as one `Notice` on one channel.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::sync;

/// Something the server must react to.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A QMP event from the guest; `data` is compact JSON, absent for
    /// events without data.
    Event {
        name: String,
        seconds: i64,
        micros: u32,
        data: Option<String>,
    },
    /// The guest is no longer running.
    GuestStopped,
    /// libvirt went away and could not be reached again in time.
    LibvirtLost,
    /// A termination signal arrived.
    Signal(i32),
    /// No client was served for the idle timeout.
    Idle,
    /// To be set once the notices before it have been dealt with.
    Mark(Arc<Mark>),
}

/// A point in the notice stream: set by the fan-out once every notice sent
/// before it has been dealt with, so that a reply can wait for the events
/// that came before it.
#[derive(Debug, Default)]
pub struct Mark {
    reached: Mutex<bool>,
    changed: Condvar,
}

impl Mark {
    /// Says that the fan-out has got this far.
    pub fn set(&self) {
        *sync::lock(&self.reached) = true;
        self.changed.notify_all();
    }

    /// Waits up to `limit` for `set`; true if it came.
    pub fn wait(&self, limit: Duration) -> bool {
        let reached = sync::lock(&self.reached);
        let reached = sync::wait_while(&self.changed, reached, limit, |reached| !*reached);
        *reached
    }
}
