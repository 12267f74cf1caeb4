// SPDX-License-Identifier: LGPL-2.1-or-later
//! What the server reacts to: guest events, the guest stopping, libvirt
//! lost for good, signals. Everything that can end serving or must reach
//! the clients arrives as one `Notice` on one channel.

/// Something the server must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}
