// SPDX-License-Identifier: LGPL-2.1-or-later
//! virt-qemu-qmp-proxy: parse the command line, run the server, map its
//! outcome to an exit status (0 clean stop, 1 failure, 2 usage).

use std::env;
use std::io::{self, Write};
use std::process::ExitCode;

use virt_qemu_qmp_proxy::cli::{self, Command, USAGE};
use virt_qemu_qmp_proxy::{log, server};

const PROG: &str = "virt-qemu-qmp-proxy";

fn main() -> ExitCode {
    let config = match cli::parse(env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => return print(format_args!("{USAGE}")),
        Ok(Command::Version) => return print(format_args!("{PROG} {}", env!("CARGO_PKG_VERSION"))),
        Err(e) => {
            log::line(format_args!("{PROG}: {e}\nTry '{PROG} --help'."));
            return ExitCode::from(2);
        }
    };
    log::init(config.level);
    match server::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::line(format_args!("{PROG}: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints `text` on stdout for --help and --version; output that cannot be
/// written is a failure (exit 1), as in coreutils, never a panic.
fn print(text: std::fmt::Arguments<'_>) -> ExitCode {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::line(format_args!("{PROG}: cannot write to stdout: {e}"));
            ExitCode::from(1)
        }
    }
}
