// SPDX-License-Identifier: LGPL-2.1-or-later
//! A few logging macros over `eprintln!`, with one level set at start-up.
//!
//! One `eprintln!` holds stderr's lock for the whole call, so lines from
//! different threads never interleave. No timestamps: journald adds its own.

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

/// Whether messages of `level` are shown.
pub fn enabled(level: Level) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level as u8
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { eprintln!("error: {}", format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            eprintln!("warning: {}", format_args!($($arg)*))
        }
    };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            eprintln!($($arg)*)
        }
    };
}

/// QMP traffic, `client N -> {...}` (in) and `client N <- {...}` (out).
#[macro_export]
macro_rules! traffic {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Traffic) {
            eprintln!($($arg)*)
        }
    };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            eprintln!("debug: {}", format_args!($($arg)*))
        }
    };
}
