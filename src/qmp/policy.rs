// SPDX-License-Identifier: LGPL-2.1-or-later
//! Which commands a client may run: full access or read-only, narrowed by
//! `--allow`/`--deny` rules, and the set of commands the guest has. Pure
//! decisions only; `session` applies them and `reply` filters listings.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use super::relay::string_members;
use super::value::Dict;

/// The commands that cannot change the guest, as glob patterns: all a
/// read-only client may run, besides `qmp_capabilities` and HMP `info` lines
/// through `human-monitor-command`. Reviewed against QEMU 7.2's schema; left
/// out on purpose: `ringbuf-read` (consumes the buffer), `calc-dirty-rate`
/// (starts a measurement that changes dirty logging), `dumpdtb`, `memsave`,
/// `pmemsave`, `screendump`, `dump-guest-memory` (write host files),
/// `getfd`/`add-fd` and friends (change the monitor's fds).
pub const READ_ONLY_COMMANDS: &[&str] = &[
    // By QAPI convention these only report state.
    "query-*",
    "x-query-*",
    // QOM introspection: getters and type lists, nothing is set.
    "qom-get",
    "qom-list",
    "qom-list-types",
    "qom-list-properties",
    // Builds a throwaway instance of the type to list its properties; the
    // guest's devices are not touched.
    "device-list-properties",
    "trace-event-get-state",
    // A pure report of the block graph.
    "x-debug-query-block-graph",
    // Hashes a dirty bitmap's contents; reads only, and the bitmap is small
    // (a bit per cluster).
    "x-debug-block-dirty-bitmap-sha256",
];

/// The command whose read-only use depends on its arguments.
const HMP: &str = "human-monitor-command";

/// Always allowed: without it no client gets past negotiation.
const CAPABILITIES: &str = "qmp_capabilities";

/// One `--allow` or `--deny` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    allow: bool,
    pattern: String,
}

/// A rule from the command line; the error says why `pattern` cannot match
/// a command name.
pub fn rule(allow: bool, pattern: &str) -> Result<Rule, String> {
    let option = if allow { "--allow" } else { "--deny" };
    if pattern.is_empty() {
        return Err(format!("invalid {option} pattern '': it is empty"));
    }
    // qapi-code-gen: names are ASCII letters, digits, '-' and '_'; '.' is in
    // downstream extensions (`__com.redhat_...`).
    if let Some(bad) = pattern
        .chars()
        .find(|&ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '*' | '?')))
    {
        return Err(format!(
            "invalid {option} pattern '{}': '{}' cannot occur in a command name",
            pattern.escape_debug(),
            bad.escape_debug()
        ));
    }
    Ok(Rule {
        allow,
        pattern: pattern.to_owned(),
    })
}

impl Rule {
    /// Whether this is an `--allow` rule.
    pub fn allows(&self) -> bool {
        self.allow
    }

    /// The glob as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    fn matches(&self, name: &str) -> bool {
        glob(&self.pattern, name)
    }
}

impl fmt::Display for Rule {
    /// The rule as written on the command line: `--deny 'device_*'`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let option = if self.allow { "--allow" } else { "--deny" };
        write!(f, "{option} '{}'", self.pattern)
    }
}

/// What the clients of one socket may run. Cloning shares the rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy(Arc<Rules>);

#[derive(Debug, PartialEq, Eq, Default)]
struct Rules {
    read_only: bool,
    rules: Vec<Rule>,
}

impl Policy {
    /// Full access and no rules: the proxy as it always was.
    pub fn unrestricted() -> Policy {
        Policy::default()
    }

    /// A socket's policy; `rules` in command-line order.
    pub fn new(read_only: bool, rules: Vec<Rule>) -> Policy {
        Policy(Arc::new(Rules { read_only, rules }))
    }

    /// Whether this socket serves read-only clients.
    pub fn is_read_only(&self) -> bool {
        self.0.read_only
    }

    /// Whether nothing is ever refused or filtered.
    pub fn is_unrestricted(&self) -> bool {
        !self.0.read_only && self.0.rules.is_empty()
    }

    /// Why the command `name` with these arguments is refused, or None if it
    /// may run. The reason completes "Command NAME has been disabled: ".
    pub fn refusal(&self, name: &str, arguments: Option<&Dict>) -> Option<String> {
        if name == CAPABILITIES {
            return None;
        }
        if self.0.read_only && !reads_only(name, arguments) {
            return Some(if name == HMP {
                "read-only socket runs only HMP 'info' commands".to_owned()
            } else {
                "read-only socket".to_owned()
            });
        }
        self.denying_rule(name)
            .map(|rule| format!("refused by {rule}"))
    }

    /// Whether `name` appears in this client's `query-commands` and
    /// `query-qmp-schema`: whether some call of it may run.
    pub fn lists(&self, name: &str) -> bool {
        if name == CAPABILITIES {
            return true;
        }
        // Some of its command lines run on a read-only socket.
        let readable = name == HMP || in_read_only_set(name);
        (!self.0.read_only || readable) && self.denying_rule(name).is_none()
    }

    /// The last rule matching `name`, if it is a `--deny`.
    fn denying_rule(&self, name: &str) -> Option<&Rule> {
        self.0
            .rules
            .iter()
            .rev()
            .find(|rule| rule.matches(name))
            .filter(|rule| !rule.allow)
    }
}

/// Whether the command `name` with these arguments is in the read-only set
/// (executed commands outside it are audited).
pub fn reads_only(name: &str, arguments: Option<&Dict>) -> bool {
    if name == HMP {
        return arguments
            .and_then(|arguments| arguments.get("command-line"))
            .and_then(|line| line.as_str())
            .is_some_and(is_info_line);
    }
    name == CAPABILITIES || in_read_only_set(name)
}

fn in_read_only_set(name: &str) -> bool {
    READ_ONLY_COMMANDS.iter().any(|pattern| glob(pattern, name))
}

/// Whether an HMP command line runs `info`: HMP skips C-locale white space,
/// then the command name runs to the next white space or `/`. Anything but
/// `info` followed by white space or the end is not taken as one, `info/`
/// included.
fn is_info_line(line: &str) -> bool {
    let is_space = |byte: u8| matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let rest = line.trim_start_matches(|ch: char| ch.is_ascii() && is_space(ch as u8));
    rest.strip_prefix("info")
        .is_some_and(|after| after.bytes().next().is_none_or(is_space))
}

/// Shell-style matching of `*` and `?` on whole names, with the usual
/// single backtrack point, so that it stays linear in practice.
fn glob(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some('?') => {
                p += 1;
                n += 1;
            }
            Some(&ch) if ch == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&ch| ch == '*')
}

/// What a restricted client's `query-commands` or `query-qmp-schema` reply
/// leaves out: the commands the client may not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listing {
    Commands(Policy),
    Schema(Policy),
}

impl Listing {
    /// Whether an element of the reply's `return` list, as libvirt wrote it,
    /// stays. A command info without a string name is left out; schema
    /// entries other than commands (types, events) all stay, as in QEMU.
    pub(crate) fn keeps(&self, element: &str) -> bool {
        match self {
            Listing::Commands(policy) => matches!(
                string_members(element, ["name"]),
                Ok([Some(name)]) if policy.lists(&name)
            ),
            Listing::Schema(policy) => match string_members(element, ["meta-type", "name"]) {
                Ok([Some(meta_type), name]) if meta_type == "command" => {
                    name.is_some_and(|name| policy.lists(&name))
                }
                _ => true,
            },
        }
    }
}

/// The guest's command names, as `query-commands` last gave them; shared by
/// every session and replaced after each reconnect. Until set, every name
/// counts as known.
#[derive(Debug, Default)]
pub struct GuestCommands {
    names: RwLock<Option<HashSet<String>>>,
}

impl GuestCommands {
    /// A set that knows every name until [`GuestCommands::set`] is called.
    pub fn new() -> GuestCommands {
        GuestCommands::default()
    }

    /// Replaces the set with the guest's current commands.
    pub fn set(&self, names: impl IntoIterator<Item = String>) {
        let names = names.into_iter().collect();
        // The set is replaced whole, so a poisoned lock holds a whole set.
        *self.names.write().unwrap_or_else(PoisonError::into_inner) = Some(names);
    }

    /// Forgets the set: every name counts as known again.
    pub fn forget(&self) {
        *self.names.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether the guest has the command `name` (true while unknown).
    pub fn knows(&self, name: &str) -> bool {
        self.names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(|names| names.contains(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::Value;

    fn policy(read_only: bool, rules: &[(bool, &str)]) -> Policy {
        let rules = rules
            .iter()
            .map(|&(allow, pattern)| rule(allow, pattern).unwrap())
            .collect();
        Policy::new(read_only, rules)
    }

    fn hmp(line: Value) -> Dict {
        let mut arguments = Dict::new();
        arguments.insert("command-line", line);
        arguments
    }

    #[test]
    fn globs_match_whole_names() {
        for (pattern, name, expected) in [
            ("query-*", "query-status", true),
            ("query-*", "query-", true),
            ("query-*", "x-query-status", false),
            ("*", "", true),
            ("s*", "stop", true),
            ("s*", "system_reset", true),
            ("s*", "cont", false),
            ("?top", "stop", true),
            ("?top", "top", false),
            ("device_*", "device_del", true),
            ("device_*", "device-list-properties", false),
            ("*-*-*", "query-block-jobs", true),
            ("*a*b*c", "xaxbxbxc", true),
            ("*a*b*c", "xaxbxbxcx", false),
            ("quit", "quitx", false),
            ("a**b", "ab", true),
        ] {
            assert_eq!(glob(pattern, name), expected, "{pattern} on {name}");
        }
    }

    #[test]
    fn bad_patterns_are_named() {
        assert_eq!(
            rule(false, "").unwrap_err(),
            "invalid --deny pattern '': it is empty"
        );
        assert_eq!(
            rule(true, "device del").unwrap_err(),
            "invalid --allow pattern 'device del': ' ' cannot occur in a command name"
        );
        assert_eq!(
            rule(false, "a[bc]").unwrap_err(),
            "invalid --deny pattern 'a[bc]': '[' cannot occur in a command name"
        );
        assert!(rule(false, "x\n").unwrap_err().contains("'x\\n'"));
        assert!(rule(false, "caf\u{e9}").is_err());
        for good in ["__com.redhat_drive-mirror", "*", "?", "query-*", "x_Y-9"] {
            assert!(rule(true, good).is_ok(), "{good}");
        }
    }

    #[test]
    fn rules_print_as_given() {
        assert_eq!(
            rule(false, "device_*").unwrap().to_string(),
            "--deny 'device_*'"
        );
        assert_eq!(rule(true, "stop").unwrap().to_string(), "--allow 'stop'");
    }

    #[test]
    fn last_matching_rule_decides() {
        let p = policy(false, &[(false, "query-*"), (true, "query-status")]);
        assert_eq!(
            p.refusal("query-name", None).as_deref(),
            Some("refused by --deny 'query-*'")
        );
        assert_eq!(p.refusal("query-status", None), None);
        assert_eq!(p.refusal("stop", None), None);

        let p = policy(false, &[(true, "stop"), (false, "s*")]);
        assert_eq!(
            p.refusal("stop", None).as_deref(),
            Some("refused by --deny 's*'")
        );
        assert_eq!(p.refusal("cont", None), None);
    }

    #[test]
    fn read_only_refuses_what_can_change_the_guest() {
        let p = policy(true, &[]);
        for name in [
            "stop",
            "cont",
            "quit",
            "device_del",
            "system_reset",
            "qom-set",
            "ringbuf-read",
            "calc-dirty-rate",
            "memsave",
            "transaction",
        ] {
            assert_eq!(
                p.refusal(name, None).as_deref(),
                Some("read-only socket"),
                "{name}"
            );
            assert!(!p.lists(name), "{name}");
        }
        for name in [
            "query-status",
            "x-query-roms",
            "qom-list",
            "qom-get",
            "device-list-properties",
            "x-debug-query-block-graph",
            "qmp_capabilities",
        ] {
            assert_eq!(p.refusal(name, None), None, "{name}");
            assert!(p.lists(name), "{name}");
        }
    }

    #[test]
    fn read_only_rules_only_refuse_more() {
        let p = policy(true, &[(true, "stop"), (false, "query-name")]);
        assert_eq!(p.refusal("stop", None).as_deref(), Some("read-only socket"));
        assert!(!p.lists("stop"));
        assert_eq!(
            p.refusal("query-name", None).as_deref(),
            Some("refused by --deny 'query-name'")
        );
        assert!(!p.lists("query-name"));
        assert_eq!(p.refusal("query-status", None), None);
    }

    #[test]
    fn read_only_runs_hmp_info_lines_only() {
        let p = policy(true, &[]);
        for line in ["info status", "  info status", "\tinfo\tstatus", "info"] {
            assert_eq!(
                p.refusal(HMP, Some(&hmp(Value::Str(line.into())))),
                None,
                "{line:?}"
            );
        }
        let refused = Some("read-only socket runs only HMP 'info' commands");
        for line in ["stop", "infox", "info/x", "x info", "", " ", "info\0status"] {
            assert_eq!(
                p.refusal(HMP, Some(&hmp(Value::Str(line.into()))))
                    .as_deref(),
                refused,
                "{line:?}"
            );
        }
        assert_eq!(
            p.refusal(HMP, Some(&hmp(Value::Int(1)))).as_deref(),
            refused
        );
        assert_eq!(p.refusal(HMP, Some(&Dict::new())).as_deref(), refused);
        assert_eq!(p.refusal(HMP, None).as_deref(), refused);
        assert!(p.lists(HMP));
        assert!(!policy(true, &[(false, "human-*")]).lists(HMP));
    }

    #[test]
    fn capabilities_are_always_allowed() {
        for p in [
            policy(true, &[(false, "*")]),
            policy(false, &[(false, "qmp_capabilities")]),
        ] {
            assert_eq!(p.refusal("qmp_capabilities", None), None);
            assert!(p.lists("qmp_capabilities"));
        }
    }

    #[test]
    fn unrestricted_refuses_nothing() {
        let p = Policy::unrestricted();
        assert!(p.is_unrestricted());
        assert!(!p.is_read_only());
        for name in ["quit", "device_del", HMP, "anything at all"] {
            assert_eq!(p.refusal(name, None), None);
            assert!(p.lists(name));
        }
        assert!(!policy(false, &[(true, "x")]).is_unrestricted());
        assert!(!policy(true, &[]).is_unrestricted());
    }

    #[test]
    fn reads_only_tells_what_needs_auditing() {
        assert!(reads_only("query-status", None));
        assert!(reads_only("qmp_capabilities", None));
        assert!(!reads_only("stop", None));
        assert!(reads_only(
            HMP,
            Some(&hmp(Value::Str(" info mtree".into())))
        ));
        assert!(!reads_only(HMP, Some(&hmp(Value::Str("stop".into())))));
    }

    #[test]
    fn guest_commands_know_everything_until_set() {
        let known = GuestCommands::new();
        assert!(known.knows("anything"));
        known.set(["stop".to_owned(), "cont".to_owned()]);
        assert!(known.knows("stop"));
        assert!(!known.knows("device_del"));
        known.forget();
        assert!(known.knows("device_del"));
    }
}
