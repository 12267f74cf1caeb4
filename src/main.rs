// SPDX-License-Identifier: LGPL-2.1-or-later
//! virt-qemu-qmp-proxy: parse the command line, run the server, map its
//! outcome to an exit status (0 clean stop, 1 failure, 2 usage).

use std::env;
use std::process::ExitCode;

use virt_qemu_qmp_proxy::cli::{self, Command, USAGE};
use virt_qemu_qmp_proxy::{log, server};

const PROG: &str = "virt-qemu-qmp-proxy";

fn main() -> ExitCode {
    let config = match cli::parse(env::args_os().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("{PROG} {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{PROG}: {e}\nTry '{PROG} --help'.");
            return ExitCode::from(2);
        }
    };
    log::init(config.level);
    match server::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROG}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
