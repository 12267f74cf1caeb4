// SPDX-License-Identifier: LGPL-2.1-or-later
//! A private libvirtd (scripts/libvirtd-private) with a tiny guest, for the
//! tests where libvirt itself goes away and comes back.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{run_with_timeout, script, unique_path, TESTBED_HINT};

/// A libvirtd in its own mount namespace, serving `uri()`, with one guest.
pub struct Daemon {
    dir: PathBuf,
    uri: String,
    guest: String,
}

impl Daemon {
    /// Starts the daemon and a guest called `guest` on it; panics saying why.
    pub fn start(guest: &str) -> Daemon {
        let dir = unique_path("libvirtd");
        let uri = String::from_utf8(Daemon::script("start", &dir).stdout)
            .unwrap()
            .trim()
            .to_owned();
        let daemon = Daemon {
            dir,
            uri,
            guest: guest.to_owned(),
        };
        let xml = daemon.dir.join("guest.xml");
        fs::write(
            &xml,
            format!(
                "<domain type='qemu'><name>{guest}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
                 <os><type arch='x86_64' machine='pc'>hvm</type></os>\
                 <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"
            ),
        )
        .unwrap();
        let out = run_with_timeout(
            Command::new("virsh")
                .arg("-c")
                .arg(&daemon.uri)
                .arg("create")
                .arg(&xml),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "cannot start guest '{guest}' on {}: {}; {TESTBED_HINT}",
            daemon.uri,
            String::from_utf8_lossy(&out.stderr)
        );
        daemon
    }

    fn script(action: &str, dir: &PathBuf) -> std::process::Output {
        let out = run_with_timeout(
            Command::new("bash")
                .arg(script("libvirtd-private"))
                .arg(action)
                .arg(dir),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "scripts/libvirtd-private {action} failed: {}; {TESTBED_HINT}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The URI of the private daemon.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The guest's name.
    pub fn guest(&self) -> &str {
        &self.guest
    }

    /// Stops the daemon (SIGTERM by its pid file); the guest keeps running.
    pub fn stop_daemon(&self) {
        Daemon::script("kill", &self.dir);
    }

    /// Starts the daemon again; it re-attaches to the running guest.
    pub fn restart_daemon(&self) {
        Daemon::script("daemon", &self.dir);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            Command::new("bash")
                .arg(script("libvirtd-private"))
                .arg("stop")
                .arg(&self.dir),
            Duration::from_secs(60),
        );
    }
}
