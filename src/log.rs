// SPDX-License-Identifier: LGPL-2.1-or-later
//! A few logging macros over stderr, with one level set at start-up.
//!
//! Each line is formatted first and written with one call under stderr's
//! lock, so lines from different threads never interleave. A failed write
//! (stderr on a full disk, a pipe whose reader went away) is dropped:
//! logging never stops the proxy, unlike `eprintln!`, which panics. No
//! timestamps: journald adds its own.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};

/// How much goes to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Errors only (`-q`).
    Error = 0,
    /// Errors, warnings and the start-up, connection and shutdown lines.
    Info = 1,
    /// Also every QMP message in and out (`-v`).
    Traffic = 2,
    /// Also internal details and libvirt's own messages (`-d`).
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the level; called once by `main`.
pub fn init(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Writes `message` and a newline to stderr in one write; a failure is
/// dropped, as there is nowhere left to report it.
pub fn line(message: fmt::Arguments<'_>) {
    let mut text = message.to_string();
    text.push('\n');
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Whether messages of `level` are shown.
pub fn enabled(level: Level) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level as u8
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::line(format_args!("error: {}", format_args!($($arg)*))) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::line(format_args!("warning: {}", format_args!($($arg)*)))
        }
    };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::line(format_args!($($arg)*))
        }
    };
}

/// QMP traffic, `client N -> {...}` (in) and `client N <- {...}` (out).
#[macro_export]
macro_rules! traffic {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Traffic) {
            $crate::log::line(format_args!($($arg)*))
        }
    };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::line(format_args!("debug: {}", format_args!($($arg)*)))
        }
    };
}
