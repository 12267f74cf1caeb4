// SPDX-License-Identifier: LGPL-2.1-or-later
//! The QMP protocol, byte for byte as QEMU 7.2 speaks it, with no I/O: the
//! QObject model (`value`), the input side (lexer, streamer and parser behind
//! [`Stream`]), per-connection request validation and negotiation
//! ([`Session`]), which commands a client may run (`policy`), every line
//! sent to a client (`reply`), and QEMU's output format (`writer`, and
//! `relay` for JSON text relayed by libvirt).

#[cfg(test)]
mod corpus_tests;
mod ghash;
mod lexer;
mod parser;
pub mod policy;
mod relay;
mod reply;
mod session;
mod stream;
mod unicode;
mod value;
mod writer;

pub use policy::{GuestCommands, Policy};
pub use reply::{command_names, error, event, greeting, version_from_reply};
pub use session::{runs, Action, Command, Session};
pub use stream::{Parsed, Stream};
pub use value::{Dict, Value};
pub use writer::to_text;
