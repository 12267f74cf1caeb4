// SPDX-License-Identifier: LGPL-2.1-or-later
//! The command line of the real binary, where no guest is needed: usage
//! errors, help and version, and connections that cannot serve QMP.

mod common;

use std::process::{Command, Output};

use common::{socket_path, PROXY_BIN as PROXY};

fn run(args: &[&str]) -> Output {
    Command::new(PROXY)
        .args(args)
        .env_remove("LIBVIRT_DEFAULT_URI")
        .output()
        .expect("the proxy binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    for (args, message) in [
        (&[][..], "missing argument DOMAIN"),
        (&["vm"][..], "missing argument QMP-SOCKET-PATH"),
        (&["--bogus", "vm", "/tmp/x"][..], "invalid option '--bogus'"),
        (&["-c"][..], "missing argument"),
        (&["vm", "/tmp/x", "extra"][..], "unexpected argument"),
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with("virt-qemu-qmp-proxy: "),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Try 'virt-qemu-qmp-proxy --help'."),
            "{args:?}: {stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "{args:?}: usage errors go to stderr"
        );
    }
}

#[test]
fn help_and_version_go_to_stdout_and_exit_0() {
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout)
        .starts_with("Usage: virt-qemu-qmp-proxy [OPTION]... DOMAIN QMP-SOCKET-PATH"));
    for option in [
        "--connect",
        "--verbose",
        "--debug",
        "--quiet",
        "--help",
        "--version",
        "tainted",
    ] {
        assert!(
            text(&help.stdout).contains(option),
            "--help does not mention {option}"
        );
    }
    let version = run(&["-V"]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout),
        format!("virt-qemu-qmp-proxy {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(help.stderr.is_empty() && version.stderr.is_empty());
}

#[test]
fn a_connection_to_another_driver_is_refused() {
    let socket = socket_path("another-driver");
    let output = run(&["-c", "test:///default", "test", socket.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr,
        "virt-qemu-qmp-proxy: connection 'test:///default' uses the TEST driver; \
         QMP needs QEMU (try -c qemu:///system)\n"
    );
    assert!(!socket.exists(), "no socket for a refused connection");
    let _ = std::fs::remove_dir_all(socket.parent().expect("the socket has a folder"));
}

#[test]
fn a_uri_that_cannot_be_opened_is_named() {
    let socket = socket_path("unopened-uri");
    let output = run(&[
        "-c",
        "qemu+unix:///system?socket=/nonexistent/sock",
        "vm",
        socket.to_str().expect("temp paths are UTF-8"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("virt-qemu-qmp-proxy: cannot connect to 'qemu+unix:///system?socket=/nonexistent/sock': "),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "libvirt must not print its own copy: {stderr}"
    );
    assert!(!socket.exists(), "no socket for a connection that failed");
    let _ = std::fs::remove_dir_all(socket.parent().expect("the socket has a folder"));
}

#[test]
fn policy_options_are_checked_before_anything_starts() {
    for (args, message) in [
        (&["--deny", "", "vm", "/tmp/x"][..], "''"),
        (&["--allow", "stop;", "vm", "/tmp/x"][..], "'stop;'"),
        (
            &["--read-only-group", "kvm", "vm", "/tmp/x"][..],
            "--read-only-socket",
        ),
        (
            &[
                "--read-only-socket",
                "/tmp/a",
                "--read-only-socket",
                "/tmp/b",
                "vm",
                "/tmp/x",
            ][..],
            "--read-only-socket",
        ),
    ] {
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).contains(message),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    // An unknown group is a runtime error that names it, before libvirt.
    let socket = socket_path("unknown-group");
    let ro = socket.with_file_name("ro.sock");
    let output = run(&[
        "-c",
        "test:///default",
        "--read-only-socket",
        ro.to_str().unwrap(),
        "--read-only-group",
        "vqmp-no-such-group",
        "test",
        socket.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("'vqmp-no-such-group'"), "{stderr}");
    assert!(!socket.exists() && !ro.exists());
}
