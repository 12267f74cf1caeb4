// SPDX-License-Identifier: LGPL-2.1-or-later
//! A private libvirtd (scripts/libvirtd-private) with a tiny guest, for the
//! tests where libvirt itself goes away and comes back.

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{run_with_timeout, script, send_signal, unique_path, TESTBED_HINT};

/// A libvirtd in its own mount namespace, serving `uri()`, with one guest.
pub struct Daemon {
    dir: PathBuf,
    uri: String,
    /// The daemon's TCP URI, when started by `start_tcp`.
    tcp_uri: Option<String>,
    guest: String,
}

impl Daemon {
    /// Starts the daemon and a transient guest called `guest` on it; panics
    /// saying why.
    pub fn start(guest: &str) -> Daemon {
        Daemon::start_guest(guest, &["create"])
    }

    /// Like `start`, with a persistent guest (defined, then started).
    pub fn start_persistent(guest: &str) -> Daemon {
        Daemon::start_guest(guest, &["define", "start"])
    }

    /// Like `start`, with the daemon also listening on TCP (`tcp_uri()`)
    /// in a network namespace of its own: its clients run through `in_network`.
    pub fn start_tcp(guest: &str) -> Daemon {
        Daemon::start_with("start-tcp", guest, &["create"])
    }

    fn start_guest(guest: &str, commands: &[&str]) -> Daemon {
        Daemon::start_with("start", guest, commands)
    }

    fn start_with(action: &str, guest: &str, commands: &[&str]) -> Daemon {
        let dir = unique_path("libvirtd");
        let printed = String::from_utf8(Daemon::script(action, &dir).stdout).unwrap();
        let mut uris = printed.lines().map(str::to_owned);
        let daemon = Daemon {
            dir,
            uri: uris.next().expect("the script prints the daemon's URI"),
            tcp_uri: uris.next(),
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
        for command in commands {
            let target = match *command {
                "start" => guest.into(),
                _ => xml.clone().into_os_string(),
            };
            let out = daemon.virsh_at(&daemon.uri, &[command.as_ref(), target.as_os_str()]);
            assert!(
                out.status.success(),
                "cannot {command} guest '{guest}' on {}: {}; {TESTBED_HINT}",
                daemon.uri,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        daemon
    }

    /// Runs virsh on the daemon at `uri` (at most 120 s).
    fn virsh_at(&self, uri: &str, args: &[&OsStr]) -> std::process::Output {
        run_with_timeout(
            Command::new("virsh").arg("-c").arg(uri).args(args),
            Duration::from_secs(120),
        )
    }

    /// Runs virsh on the daemon with `args` (through `uri()`).
    pub fn virsh(&self, args: &[&str]) -> std::process::Output {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.virsh_at(&self.uri, &args)
    }

    /// A second URI for the daemon, through a symbolic link to its socket
    /// that `cut_indirect_uri` removes: clients of this URI can be kept
    /// out while the test itself still reaches the daemon through `uri()`.
    pub fn indirect_uri(&self) -> String {
        let link = self.dir.join("indirect-sock");
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(self.dir.join("sock/libvirt-sock"), &link)
                .expect("a symbolic link to the daemon's socket can be made");
        }
        format!("qemu:///system?socket={}", link.display())
    }

    /// Removes the link behind `indirect_uri`; `indirect_uri` makes it again.
    pub fn cut_indirect_uri(&self) {
        fs::remove_file(self.dir.join("indirect-sock")).expect("the link exists");
    }

    /// The daemon's process id.
    pub fn daemon_pid(&self) -> i32 {
        fs::read_to_string(self.dir.join("libvirtd.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
            .expect("the daemon has a pid file")
    }

    /// Stops the daemon with SIGSTOP: its socket still accepts connections
    /// (into the backlog), but nothing answers. Undone by dropping the guard.
    pub fn pause_daemon(&self) -> Paused {
        let pid = self.daemon_pid();
        assert!(
            send_signal(pid, libc::SIGSTOP),
            "cannot stop libvirtd {pid}"
        );
        Paused(pid)
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

    /// The daemon's TCP URI (`qemu+tcp://127.0.0.1:PORT/system`); panics
    /// unless the daemon was started by `start_tcp`.
    pub fn tcp_uri(&self) -> &str {
        self.tcp_uri
            .as_deref()
            .expect("the daemon was started by Daemon::start_tcp")
    }

    /// The command line that runs a program in the daemon's network
    /// namespace, where its TCP port is: put it before the program's own.
    pub fn in_network(&self) -> Vec<String> {
        let holder =
            fs::read_to_string(self.dir.join("holder.pid")).expect("the namespace has a pid file");
        ["nsenter", "-t", holder.trim(), "-n", "--"]
            .map(str::to_owned)
            .to_vec()
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

/// A daemon stopped by `Daemon::pause_daemon`; continued (SIGCONT) on drop.
pub struct Paused(i32);

impl Drop for Paused {
    fn drop(&mut self) {
        send_signal(self.0, libc::SIGCONT);
    }
}
