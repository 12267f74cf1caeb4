// SPDX-License-Identifier: LGPL-2.1-or-later
//! virt-qemu-qmp-proxy: a QEMU-exact QMP server in front of a libvirt QEMU guest.
//!
//! The library holds everything but `main`, so that the tests can drive the
//! protocol and the client sessions without libvirt. The map:
//!
//! - `cli`: the command line into a `Config`; `error`: the one `Error`;
//!   `log`: the logging macros; `sync`: named threads, panic-proof locks.
//! - `qmp/`: the protocol byte for byte as QEMU 7.2 speaks it, no I/O:
//!   lexer, stream, parser, value, writer, relay (libvirt's JSON in QEMU's
//!   format), session (validation, negotiation), reply (every line sent),
//!   policy (which commands a client may run).
//! - `monitor`: what a session needs of the guest (`trait Monitor`).
//! - `libvirt`: the guest behind libvirt, its events, keepalive, and its
//!   `reconnect` thread; `event_loop`: our own event loop for libvirt, on
//!   its `events` thread, and `flush` to deliver what is due before a reply.
//! - `ffi`: every `unsafe` call; imports nothing from the crate.
//! - `socket`: the socket files, their mode and group, the peer's
//!   credentials; `output`: one connection's sending side.
//! - `systemd`: sockets passed by the service manager, readiness
//!   notifications, whether stderr is the journal; no libsystemd.
//! - `client`: one session, greeting to end; `notice`: what the server reacts to.
//! - `server`: start-up (`startup` thread), an accept loop per socket
//!   (`accept-N` beyond the first), `signals`, `fanout`, a reader
//!   `client-N` and a writer `client-N-out` per client.
//!
//! A client's bytes: `client` reads them, `qmp::Stream` parses them,
//! `qmp::Session` answers or hands a command to the `Monitor` (the guest,
//! one call at a time), and the reply goes out through the client's `Output`.
//! A guest event: libvirt's callback on the `events` thread sends a `Notice`,
//! the `fanout` thread turns it into a line for every negotiated client's
//! `Output::event`.
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
pub mod systemd;
