// SPDX-License-Identifier: LGPL-2.1-or-later
//! The command line: lexopt into a `Config`. No I/O here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::log::Level;
use crate::qmp::policy::{self, Rule};

pub const USAGE: &str = "\
Usage: virt-qemu-qmp-proxy [OPTION]... DOMAIN QMP-SOCKET-PATH

Expose a QMP server on a UNIX socket for a QEMU guest managed by libvirt.
DOMAIN is the guest's ID, UUID or name.

Options:
  -c, --connect URI       libvirt connection URI (default: libvirt's own
                          choice: LIBVIRT_DEFAULT_URI, or qemu:///system as root)
  -m, --max-clients N     serve at most N clients at once; more wait
                          in the listen backlog (default 64)
  -r, --reconnect-timeout SECONDS
                          when libvirt goes away, how long to try to
                          reconnect before exiting (default 60; 0: exit)
      --wait              if the guest is not running, wait for it to start;
                          when it stops, keep the socket and wait again
      --idle-timeout SECONDS
                          exit when no client was served for that long
                          (for socket activation; default: never)
      --read-only         serve read-only clients on QMP-SOCKET-PATH: only
                          commands that cannot change the guest
      --read-only-socket PATH
                          also serve read-only clients on PATH
      --read-only-group GROUP
                          give the read-only socket to GROUP, mode 0660
                          (needs --read-only-socket)
      --allow PATTERN     let clients run the commands PATTERN matches
      --deny PATTERN      refuse the commands PATTERN matches; the last
                          --allow or --deny that matches decides, and on a
                          read-only socket they can only refuse more
                          (PATTERN: a command name, with * and ?)
  -v, --verbose           print every QMP message in and out on stderr
  -d, --debug             also print internal details and libvirt's messages
  -q, --quiet             print errors only
  -h, --help              show this help and exit
  -V, --version           show the version and exit

Warning: libvirt marks the guest as tainted; keep to query commands, or
give clients --read-only access.";

/// What the proxy was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    Help,
    Version,
}

/// Everything `server::run` needs from the command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Config {
    pub uri: Option<String>,
    pub domain: String,
    pub socket: PathBuf,
    pub level: Level,
    /// Clients served at once; further connections wait in the backlog.
    pub max_clients: usize,
    /// How long to try to reach libvirt again after losing it.
    pub reconnect_timeout: Duration,
    /// Whether the clients of `socket` are read-only.
    pub read_only: bool,
    /// A second socket whose clients are read-only.
    pub read_only_socket: Option<PathBuf>,
    /// The group (name or number, as given) that gets `read_only_socket`.
    pub read_only_group: Option<String>,
    /// `--allow` and `--deny`, in command-line order.
    pub rules: Vec<Rule>,
    /// Wait for the guest to start, and again after each stop.
    pub wait: bool,
    /// Exit after this long without a client.
    pub idle_timeout: Option<Duration>,
}

/// Defaults of the options that take numbers.
pub const DEFAULT_MAX_CLIENTS: usize = 64;
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Parses the arguments that follow the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;

    let mut uri = None;
    let mut level = Level::Info;
    let mut max_clients = DEFAULT_MAX_CLIENTS;
    let mut reconnect_timeout = DEFAULT_RECONNECT_TIMEOUT;
    let mut domain = None;
    let mut socket = None;
    let mut read_only = false;
    let mut read_only_socket = None;
    let mut read_only_group = None;
    let mut rules = Vec::new();
    let mut wait = false;
    let mut idle_timeout = None;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('c') | Long("connect") => uri = Some(parser.value()?.string()?),
            Short('m') | Long("max-clients") => {
                max_clients = parser.value()?.parse()?;
                if max_clients == 0 {
                    return Err("--max-clients must be at least 1".into());
                }
            }
            Short('r') | Long("reconnect-timeout") => {
                reconnect_timeout = Duration::from_secs(parser.value()?.parse()?);
            }
            Long("read-only") => read_only = true,
            Long("wait") => wait = true,
            Long("idle-timeout") => {
                let seconds: u64 = parser.value()?.parse()?;
                if seconds == 0 {
                    return Err("--idle-timeout must be at least 1".into());
                }
                idle_timeout = Some(Duration::from_secs(seconds));
            }
            Long("read-only-socket") => {
                if read_only_socket.is_some() {
                    return Err("--read-only-socket may be given only once".into());
                }
                read_only_socket = Some(PathBuf::from(parser.value()?));
            }
            Long("read-only-group") => {
                if read_only_group.is_some() {
                    return Err("--read-only-group may be given only once".into());
                }
                read_only_group = Some(parser.value()?.string()?);
            }
            Long(option @ ("allow" | "deny")) => {
                let allow = option == "allow";
                rules.push(policy::rule(allow, &parser.value()?.string()?)?);
            }
            Short('v') | Long("verbose") => level = level.max(Level::Traffic),
            Short('d') | Long("debug") => level = Level::Debug,
            Short('q') | Long("quiet") => level = Level::Error,
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(value) if domain.is_none() => domain = Some(value.string()?),
            Value(value) if socket.is_none() => socket = Some(PathBuf::from(value)),
            _ => return Err(arg.unexpected()),
        }
    }
    if read_only_group.is_some() && read_only_socket.is_none() {
        return Err("--read-only-group needs --read-only-socket".into());
    }
    Ok(Command::Run(Config {
        uri,
        domain: domain.ok_or("missing argument DOMAIN")?,
        socket: socket.ok_or("missing argument QMP-SOCKET-PATH")?,
        level,
        max_clients,
        reconnect_timeout,
        read_only,
        read_only_socket,
        read_only_group,
        rules,
        wait,
        idle_timeout,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, lexopt::Error> {
        parse(args.iter().map(OsString::from))
    }

    fn config(args: &[&str]) -> Config {
        match parse_strs(args) {
            Ok(Command::Run(config)) => config,
            other => panic!("expected a config from {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn domain_and_socket_are_positional() {
        let c = config(&["vm1", "/run/vm1.qmp"]);
        assert_eq!(c.domain, "vm1");
        assert_eq!(c.socket, PathBuf::from("/run/vm1.qmp"));
        assert_eq!(c.uri, None);
        assert_eq!(c.level, Level::Info);
    }

    #[test]
    fn connect_takes_a_uri_in_both_spellings() {
        assert_eq!(
            config(&["-c", "qemu:///session", "a", "b"]).uri.as_deref(),
            Some("qemu:///session")
        );
        assert_eq!(
            config(&["--connect=test:///default", "a", "b"])
                .uri
                .as_deref(),
            Some("test:///default")
        );
        assert_eq!(
            config(&["a", "--connect", "x:///", "b"]).uri.as_deref(),
            Some("x:///")
        );
    }

    #[test]
    fn verbosity_options_set_the_level() {
        assert_eq!(config(&["-v", "a", "b"]).level, Level::Traffic);
        assert_eq!(config(&["--verbose", "a", "b"]).level, Level::Traffic);
        assert_eq!(config(&["-d", "-v", "a", "b"]).level, Level::Debug);
        assert_eq!(config(&["-q", "a", "b"]).level, Level::Error);
    }

    #[test]
    fn numeric_options_have_defaults_and_are_checked() {
        let c = config(&["a", "b"]);
        assert_eq!(c.max_clients, 64);
        assert_eq!(c.reconnect_timeout, Duration::from_secs(60));
        let c = config(&["--max-clients", "2", "-r", "0", "a", "b"]);
        assert_eq!(c.max_clients, 2);
        assert_eq!(c.reconnect_timeout, Duration::ZERO);
        assert_eq!(config(&["-m5", "a", "b"]).max_clients, 5);
        for bad in [
            &["-m", "0", "a", "b"][..],
            &["-m", "x", "a", "b"],
            &["-r", "-1", "a", "b"],
        ] {
            assert!(parse_strs(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn access_options_default_to_full_access() {
        let c = config(&["a", "b"]);
        assert!(!c.read_only);
        assert_eq!(c.read_only_socket, None);
        assert_eq!(c.read_only_group, None);
        assert!(c.rules.is_empty());
    }

    #[test]
    fn wait_and_idle_timeout() {
        let c = config(&["a", "b"]);
        assert!(!c.wait);
        assert_eq!(c.idle_timeout, None);
        let c = config(&["--wait", "--idle-timeout", "30", "a", "b"]);
        assert!(c.wait);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(30)));
        for bad in [
            &["--idle-timeout", "0", "a", "b"][..],
            &["--idle-timeout", "x", "a", "b"],
        ] {
            assert!(parse_strs(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn read_only_serves_the_main_socket_read_only() {
        assert!(config(&["--read-only", "a", "b"]).read_only);
        assert!(config(&["a", "b", "--read-only"]).read_only);
    }

    #[test]
    fn read_only_socket_is_a_path_given_once() {
        let c = config(&["--read-only-socket", "/run/vm1-ro.qmp", "a", "b"]);
        assert_eq!(c.read_only_socket, Some(PathBuf::from("/run/vm1-ro.qmp")));
        assert!(!c.read_only);
        assert_eq!(
            config(&["--read-only-socket=/x", "a", "b"]).read_only_socket,
            Some(PathBuf::from("/x"))
        );
        assert_eq!(
            parse_strs(&[
                "--read-only-socket",
                "/x",
                "--read-only-socket",
                "/y",
                "a",
                "b"
            ])
            .unwrap_err()
            .to_string(),
            "--read-only-socket may be given only once"
        );
        assert!(parse_strs(&["a", "b", "--read-only-socket"])
            .unwrap_err()
            .to_string()
            .contains("missing argument"));
    }

    #[test]
    fn read_only_group_needs_the_read_only_socket() {
        let c = config(&[
            "--read-only-group",
            "monitoring",
            "--read-only-socket",
            "/x",
            "a",
            "b",
        ]);
        assert_eq!(c.read_only_group.as_deref(), Some("monitoring"));
        let c = config(&[
            "--read-only-socket",
            "/x",
            "--read-only-group=1001",
            "a",
            "b",
        ]);
        assert_eq!(c.read_only_group.as_deref(), Some("1001"));
        assert_eq!(
            parse_strs(&["--read-only-group", "monitoring", "a", "b"])
                .unwrap_err()
                .to_string(),
            "--read-only-group needs --read-only-socket"
        );
        assert_eq!(
            parse_strs(&[
                "--read-only-socket",
                "/x",
                "--read-only-group",
                "g",
                "--read-only-group",
                "h",
                "a",
                "b"
            ])
            .unwrap_err()
            .to_string(),
            "--read-only-group may be given only once"
        );
    }

    #[test]
    fn allow_and_deny_keep_their_order() {
        let c = config(&[
            "--deny",
            "query-*",
            "--allow=query-status",
            "a",
            "b",
            "--deny",
            "s*",
        ]);
        let rules: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            rules,
            ["--deny 'query-*'", "--allow 'query-status'", "--deny 's*'"]
        );
        assert!(!c.rules[0].allows());
        assert_eq!(c.rules[1].pattern(), "query-status");
    }

    #[test]
    fn bad_patterns_are_usage_errors() {
        assert_eq!(
            parse_strs(&["--deny", "", "a", "b"])
                .unwrap_err()
                .to_string(),
            "invalid --deny pattern '': it is empty"
        );
        assert_eq!(
            parse_strs(&["--allow", "device del", "a", "b"])
                .unwrap_err()
                .to_string(),
            "invalid --allow pattern 'device del': ' ' cannot occur in a command name"
        );
        assert!(parse_strs(&["a", "b", "--deny"])
            .unwrap_err()
            .to_string()
            .contains("missing argument"));
    }

    #[test]
    fn help_and_version_win_over_missing_arguments() {
        assert_eq!(parse_strs(&["-h"]).unwrap(), Command::Help);
        assert_eq!(parse_strs(&["--help", "--bogus"]).unwrap(), Command::Help);
        assert_eq!(parse_strs(&["-V"]).unwrap(), Command::Version);
        assert_eq!(parse_strs(&["--version"]).unwrap(), Command::Version);
    }

    #[test]
    fn missing_arguments_are_named() {
        assert_eq!(
            parse_strs(&[]).unwrap_err().to_string(),
            "missing argument DOMAIN"
        );
        assert_eq!(
            parse_strs(&["vm"]).unwrap_err().to_string(),
            "missing argument QMP-SOCKET-PATH"
        );
        assert!(parse_strs(&["-c"])
            .unwrap_err()
            .to_string()
            .contains("missing argument"));
    }

    #[test]
    fn unknown_options_and_extra_arguments_are_refused() {
        assert_eq!(
            parse_strs(&["--foo", "a", "b"]).unwrap_err().to_string(),
            "invalid option '--foo'"
        );
        assert_eq!(
            parse_strs(&["-x", "a", "b"]).unwrap_err().to_string(),
            "invalid option '-x'"
        );
        assert_eq!(
            parse_strs(&["a", "b", "extra"]).unwrap_err().to_string(),
            r#"unexpected argument "extra""#
        );
    }

    #[cfg(unix)]
    #[test]
    fn socket_path_need_not_be_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let path = OsString::from_vec(b"/tmp/\xff.sock".to_vec());
        let args = vec![OsString::from("vm"), path.clone()];
        match parse(args).unwrap() {
            Command::Run(c) => assert_eq!(c.socket.into_os_string(), path),
            other => panic!("{other:?}"),
        }
    }
}
