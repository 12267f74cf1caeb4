// SPDX-License-Identifier: LGPL-2.1-or-later
//! The guest's QMP monitor as the client sessions see it: one call per command.
//!
//! The trait keeps the sessions free of libvirt, so that the tests can put
//! a fake monitor behind a real socket.

use std::os::fd::OwnedFd;

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
/// the implementation serialises them (libvirt runs one guest's monitor
/// commands one at a time anyway).
pub trait Monitor: Send + Sync {
    /// Sends `command` (compact JSON without an id) with `files` attached.
    /// The files are consumed whatever the outcome.
    fn execute(&self, command: &str, files: Vec<OwnedFd>) -> Result<Reply, Failure>;
}
