// SPDX-License-Identifier: LGPL-2.1-or-later
//! A few logging macros over stderr, with one level set at start-up.
//!
//! Each line is formatted first and written with one call under stderr's
//! lock, so lines from different threads never interleave. A failed write
//! (stderr on a full disk, a pipe whose reader went away) is dropped:
//! logging never stops the proxy, unlike `eprintln!`, which panics. No
//! timestamps: journald adds its own. When stderr is the journal, each line
//! starts with its sd-daemon(3) priority, `<3>` to `<7>`, so that
//! `journalctl -p` can filter; otherwise lines go out as they are.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

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

/// A line's priority for the journal (sd-daemon(3), syslog's numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Error = 3,
    Warning = 4,
    Info = 6,
    /// QMP traffic and internal details.
    Debug = 7,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Whether lines carry their priority: stderr is the journal.
static JOURNAL: AtomicBool = AtomicBool::new(false);

/// Sets the level and looks whether stderr is the journal; called once by
/// `main`.
pub fn init(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    JOURNAL.store(crate::systemd::stderr_is_journal(), Ordering::Relaxed);
}

/// Writes `message` and a newline to stderr in one write, as an error; a
/// failure is dropped, as there is nowhere left to report it.
pub fn line(message: fmt::Arguments<'_>) {
    line_at(Priority::Error, message);
}

/// Writes `message` and a newline to stderr in one write, with `priority`
/// when stderr is the journal; a failure is dropped.
pub fn line_at(priority: Priority, message: fmt::Arguments<'_>) {
    let journal = JOURNAL.load(Ordering::Relaxed).then_some(priority);
    let text = format_line(journal, message);
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// `message` and a newline; with a priority, every line of it starts with
/// `<N>`, as journald reads each line on its own.
fn format_line(priority: Option<Priority>, message: fmt::Arguments<'_>) -> String {
    let text = message.to_string();
    let Some(priority) = priority else {
        return text + "\n";
    };
    let mut out = String::with_capacity(text.len() + 4);
    for line in text.split('\n') {
        out.push('<');
        out.push(char::from(b'0' + priority as u8));
        out.push('>');
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether messages of `level` are shown.
pub fn enabled(level: Level) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level as u8
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::line_at(
            $crate::log::Priority::Error,
            format_args!("error: {}", format_args!($($arg)*)),
        ) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::line_at(
                $crate::log::Priority::Warning,
                format_args!("warning: {}", format_args!($($arg)*)),
            )
        }
    };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Info) {
            $crate::log::line_at($crate::log::Priority::Info, format_args!($($arg)*))
        }
    };
}

/// QMP traffic, `client N -> {...}` (in) and `client N <- {...}` (out).
#[macro_export]
macro_rules! traffic {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Traffic) {
            $crate::log::line_at($crate::log::Priority::Debug, format_args!($($arg)*))
        }
    };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::Debug) {
            $crate::log::line_at(
                $crate::log::Priority::Debug,
                format_args!("debug: {}", format_args!($($arg)*)),
            )
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_unchanged_outside_the_journal() {
        assert_eq!(format_line(None, format_args!("error: x")), "error: x\n");
        assert_eq!(format_line(None, format_args!("a\nb")), "a\nb\n");
    }

    #[test]
    fn journal_lines_carry_their_priority() {
        let cases = [
            (Priority::Error, "<3>"),
            (Priority::Warning, "<4>"),
            (Priority::Info, "<6>"),
            (Priority::Debug, "<7>"),
        ];
        for (priority, prefix) in cases {
            assert_eq!(
                format_line(Some(priority), format_args!("client {}: gone", 3)),
                format!("{prefix}client 3: gone\n")
            );
        }
    }

    #[test]
    fn every_line_of_a_message_gets_the_priority() {
        assert_eq!(
            format_line(
                Some(Priority::Error),
                format_args!("prog: bad\nTry 'prog --help'.")
            ),
            "<3>prog: bad\n<3>Try 'prog --help'.\n"
        );
    }
}
