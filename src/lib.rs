// SPDX-License-Identifier: LGPL-2.1-or-later
//! virt-qemu-qmp-proxy: a QEMU-exact QMP server in front of a libvirt QEMU guest.
//!
//! The library holds everything but `main`, so that the tests can drive the
//! protocol and the client sessions without libvirt.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[macro_use]
pub mod log;

pub mod cli;
pub mod client;
pub mod error;
pub mod event_loop;
#[allow(unsafe_code)]
mod ffi;
pub mod libvirt;
pub mod monitor;
pub mod notice;
pub mod output;
pub mod qmp;
pub mod server;
pub mod socket;
pub mod sync;
