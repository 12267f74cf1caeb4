// SPDX-License-Identifier: LGPL-2.1-or-later
//! One client connection's request handling: what QEMU's monitor does with
//! each parsed item (monitor/qmp.c, qapi/qmp-dispatch.c), capabilities
//! negotiation (monitor/qmp-cmds-control.c and the generated marshaller of
//! `qmp_capabilities`), and the client's policy, applied where QEMU checks
//! `cmd->enabled`. The lines it answers with are made in `reply`.

use std::sync::Arc;

use super::parser::LIBVIRT_ARGUMENT_LEVELS;
use super::policy::{reads_only, GuestCommands, Listing, Policy};
use super::reply::{error, success_line};
use super::stream::{Parsed, Stream};
use super::value::{dismantle, Dict, Value};
use super::writer::{compact_prefix, quote_compact, write_compact_dict};

pub(crate) const GENERIC_ERROR: &str = "GenericError";
const COMMAND_NOT_FOUND: &str = "CommandNotFound";

/// The one command whose arguments the policy reads.
const HMP: &str = "human-monitor-command";

/// How much of a client's id the audit log gets.
const AUDIT_ID_BYTES: usize = 200;

/// What to do with one parsed item.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this complete line (ending in `\r\n`) to the client.
    Reply(String),
    /// Run this command on the guest and answer with [`Command::reply`].
    Execute(Command),
    /// The client's policy refused the command: send `line` (QEMU's error
    /// for a disabled command) and audit the refusal. Nothing reaches the
    /// guest.
    Refused {
        line: String,
        /// The `execute` member.
        name: String,
        /// The client's id as compact JSON, cut to 200 bytes.
        id: Option<String>,
        /// Why, naming the policy: `read-only socket`, `refused by --deny 'x'`.
        reason: String,
    },
}

/// A command for the guest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Command {
    /// The `execute` member.
    pub name: String,
    /// `{"execute":NAME,"arguments":{...}}` for libvirt, without the client's
    /// id; `arguments` only if the client gave it, members in the client's
    /// order, at most 126 levels deep (deeper containers are written empty).
    pub json: String,
    /// The client's `id`, echoed in the reply.
    pub id: Option<Value>,
    /// Whether it is in the read-only set; the others are audited when run.
    pub read_only: bool,
    /// For query-commands and query-qmp-schema on a restricted socket: what
    /// to leave out of the reply.
    pub(crate) listing: Option<Listing>,
}

impl Command {
    /// The client's id as compact JSON cut to 200 bytes, for the audit log.
    pub fn audit_id(&self) -> Option<String> {
        audit_id(self.id.as_ref())
    }
}

fn audit_id(id: Option<&Value>) -> Option<String> {
    id.map(|id| compact_prefix(id, AUDIT_ID_BYTES))
}

/// The state of one client connection.
#[derive(Debug, Default)]
pub struct Session {
    negotiated: bool,
    policy: Policy,
    guest: Arc<GuestCommands>,
}

/// Why a request is refused: the class and desc of its error reply.
struct Refusal {
    class: &'static str,
    desc: String,
}

impl Refusal {
    fn generic(desc: impl Into<String>) -> Refusal {
        Refusal {
            class: GENERIC_ERROR,
            desc: desc.into(),
        }
    }
}

impl Session {
    /// A session that may run every command.
    pub fn new() -> Session {
        Session::default()
    }

    /// A session under `policy`; `guest` tells a refused command the guest
    /// lacks (QEMU's "not found") from one it has (QEMU's "disabled").
    pub fn with_policy(policy: Policy, guest: Arc<GuestCommands>) -> Session {
        Session {
            negotiated: false,
            policy,
            guest,
        }
    }

    /// Whether `qmp_capabilities` has succeeded on this connection.
    pub fn negotiated(&self) -> bool {
        self.negotiated
    }

    /// Decides what to do with one parsed item: answer locally, or send to
    /// the guest.
    pub fn handle(&mut self, item: Parsed) -> Action {
        let request = match item {
            // Parse errors never carry an id.
            Parsed::Error(desc) => return Action::Reply(error(GENERIC_ERROR, &desc, None)),
            Parsed::Message(request) => request,
        };
        let Value::Dict(mut request) = request else {
            dismantle(request);
            return Action::Reply(error(
                GENERIC_ERROR,
                "QMP input must be a JSON object",
                None,
            ));
        };
        // The id is taken before anything is checked, whatever its type.
        let id = request.remove("id");
        let outcome = self.dispatch(&request);
        let line = match outcome {
            Ok(Some(name)) => return self.command(name, request.remove("arguments"), id),
            Ok(None) => success_line("{}", id.as_ref()),
            Err(failure) => error(failure.class, &failure.desc, id.as_ref()),
        };
        if let Some(id) = id {
            // It may be a list nested 1000 deep.
            dismantle(id);
        }
        Action::Reply(line)
    }

    /// A command past negotiation: for the guest, or refused by the policy
    /// at the point where qmp_dispatch checks `cmd->enabled`.
    fn command(&self, name: String, arguments: Option<Value>, id: Option<Value>) -> Action {
        let reparsed;
        let hmp_arguments = match &arguments {
            Some(Value::Compact(text)) if name == HMP => {
                reparsed = reparse(text);
                reparsed.as_ref()
            }
            Some(Value::Dict(dict)) if name == HMP => Some(dict),
            _ => None,
        };
        let read_only = reads_only(&name, hmp_arguments);
        let Some(reason) = self.policy.refusal(&name, hmp_arguments) else {
            let listing = self.listing(&name);
            let json = command_text(&name, arguments);
            return Action::Execute(Command {
                name,
                json,
                id,
                read_only,
                listing,
            });
        };
        // The lookup comes first: what the guest lacks is not found.
        let action = if self.guest.knows(&name) {
            let desc = format!("Command {name} has been disabled: {reason}");
            Action::Refused {
                line: error(COMMAND_NOT_FOUND, &desc, id.as_ref()),
                id: audit_id(id.as_ref()),
                name,
                reason,
            }
        } else {
            Action::Reply(error(COMMAND_NOT_FOUND, &not_found(&name), id.as_ref()))
        };
        for value in [id, arguments].into_iter().flatten() {
            // Either may be nested 1000 deep.
            dismantle(value);
        }
        action
    }

    /// What to filter out of the reply to `name`, if it lists commands.
    fn listing(&self, name: &str) -> Option<Listing> {
        if self.policy.is_unrestricted() {
            return None;
        }
        match name {
            "query-commands" => Some(Listing::Commands(self.policy.clone())),
            "query-qmp-schema" => Some(Listing::Schema(self.policy.clone())),
            _ => None,
        }
    }

    /// `qmp_dispatch` up to running the command. Ok(None) is a local
    /// success (`{"return": {}}`), Ok(Some) the name of a command for the
    /// guest.
    fn dispatch(&mut self, request: &Dict) -> Result<Option<String>, Refusal> {
        let name = check_request(request)?;
        if name == "qmp_capabilities" {
            let reparsed;
            let arguments = match request.get("arguments") {
                Some(Value::Compact(text)) => {
                    reparsed = reparse(text);
                    reparsed.as_ref()
                }
                other => other.and_then(Value::as_dict),
            };
            self.qmp_capabilities(arguments)?;
            return Ok(None);
        }
        if !self.negotiated {
            // Only qmp_capabilities exists yet; monitor_qmp_dispatch replaces
            // the desc of every CommandNotFound in this mode.
            return Err(Refusal {
                class: COMMAND_NOT_FOUND,
                desc: "Expecting capabilities negotiation with 'qmp_capabilities'".into(),
            });
        }
        if name.contains('\0') {
            // No QEMU command name holds U+0000, and libvirt handles command
            // text as C strings, so such a name is answered here, as QEMU
            // answers it.
            return Err(Refusal {
                class: COMMAND_NOT_FOUND,
                desc: not_found(name),
            });
        }
        Ok(Some(name.to_owned()))
    }

    /// The generated `qmp_marshal_qmp_capabilities` followed by
    /// `qmp_qmp_capabilities`.
    fn qmp_capabilities(&mut self, arguments: Option<&Dict>) -> Result<(), Refusal> {
        let enabled = visit_capabilities_arguments(arguments)?;
        if self.negotiated {
            return Err(Refusal {
                class: COMMAND_NOT_FOUND,
                desc: "Capabilities negotiation is already complete, command ignored".into(),
            });
        }
        // qmp_caps_accept: this server offers no capability, so every
        // requested one is unavailable (repeats included).
        if !enabled.is_empty() {
            return Err(Refusal::generic(format!(
                "Capability {} not available",
                enabled.join(", ")
            )));
        }
        self.negotiated = true;
        Ok(())
    }
}

/// QEMU's desc for a command it does not have.
fn not_found(name: &str) -> String {
    format!("The command {name} has not been found")
}

/// `qmp_dispatch_check_obj` with OOB disabled: members are checked in QDict
/// order, so the first failure in that order wins. Returns the command name.
/// The `id` member, always allowed, has already been taken out.
fn check_request(request: &Dict) -> Result<&str, Refusal> {
    let mut command = None;
    for (name, value) in request.iter() {
        match name {
            "execute" => match value {
                Value::Str(command_name) => command = Some(command_name.as_str()),
                _ => {
                    return Err(Refusal::generic(
                        "QMP input member 'execute' must be a string",
                    ))
                }
            },
            "arguments" => {
                if !matches!(value, Value::Dict(_) | Value::Compact(_)) {
                    return Err(Refusal::generic(
                        "QMP input member 'arguments' must be an object",
                    ));
                }
            }
            // `exec-oob` is only a command member once OOB is enabled, which
            // never happens here.
            other => {
                return Err(Refusal::generic(format!(
                    "QMP input member '{other}' is unexpected"
                )))
            }
        }
    }
    command.ok_or_else(|| Refusal::generic("QMP input lacks member 'execute'"))
}

/// The QObject input visitor over `qmp_capabilities`' arguments
/// (`enable: ['QMPCapability']`, optional). Returns the requested names.
fn visit_capabilities_arguments(arguments: Option<&Dict>) -> Result<Vec<&str>, Refusal> {
    let mut enabled = Vec::new();
    let Some(arguments) = arguments else {
        return Ok(enabled);
    };
    if let Some(enable) = arguments.get("enable") {
        let Value::List(items) = enable else {
            return Err(Refusal::generic(
                "Invalid parameter type for 'enable', expected: array",
            ));
        };
        for (index, item) in items.iter().enumerate() {
            let Value::Str(capability) = item else {
                return Err(Refusal::generic(format!(
                    "Invalid parameter type for 'enable[{index}]', expected: string"
                )));
            };
            // The enum visitor names list elements "null".
            if capability != "oob" {
                return Err(Refusal::generic(format!(
                    "Parameter 'null' does not accept value '{capability}'"
                )));
            }
            enabled.push(capability.as_str());
        }
    }
    // visit_check_struct: a member not consumed is unexpected; with several,
    // GLib's hash table order picks the one named.
    if let Some(name) = super::ghash::first_unvisited(arguments, &["enable"]) {
        return Err(Refusal::generic(format!(
            "Parameter '{name}' is unexpected"
        )));
    }
    Ok(enabled)
}

/// Whether `json`, a command text made by [`Command`], runs the command
/// `name` (a name with no character that needs escaping in JSON).
pub fn runs(json: &str, name: &str) -> bool {
    json.strip_prefix("{\"execute\":\"")
        .and_then(|rest| rest.strip_prefix(name))
        .is_some_and(|rest| rest.starts_with("\",") || rest.starts_with("\"}"))
}

/// `{"execute":NAME,"arguments":{...}}` for libvirt. The compact text the
/// parser wrote for the arguments becomes the command's text in place, so
/// that a huge command is not copied once more.
fn command_text(name: &str, arguments: Option<Value>) -> String {
    let mut head = String::from("{\"execute\":");
    quote_compact(&mut head, name);
    match arguments {
        Some(Value::Compact(mut text)) => {
            head.push_str(",\"arguments\":");
            text.reserve_exact(head.len() + 1);
            text.insert_str(0, &head);
            text.push('}');
            text
        }
        Some(Value::Dict(arguments)) => {
            head.push_str(",\"arguments\":");
            // The arguments object is level 2 of the text.
            write_compact_dict(&mut head, &arguments, LIBVIRT_ARGUMENT_LEVELS);
            head.push('}');
            head
        }
        _ => {
            head.push('}');
            head
        }
    }
}

/// The arguments of `qmp_capabilities` as a dict again: the parser wrote
/// them as compact text, which parses back to the same members.
fn reparse(text: &str) -> Option<Dict> {
    let mut stream = Stream::new();
    let mut items = Vec::new();
    stream.feed(text.as_bytes(), &mut items);
    match items.pop() {
        Some(Parsed::Message(Value::Dict(dict))) => Some(dict),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::Stream;

    /// Feeds `input` and handles every item; returns the actions.
    fn run(session: &mut Session, input: &str) -> Vec<Action> {
        let mut stream = Stream::new();
        let mut items = Vec::new();
        stream.feed(input.as_bytes(), &mut items);
        items.into_iter().map(|item| session.handle(item)).collect()
    }

    fn negotiated() -> Session {
        let mut session = Session::new();
        let actions = run(&mut session, r#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(actions, [Action::Reply("{\"return\": {}}\r\n".into())]);
        assert!(session.negotiated());
        session
    }

    fn reply_of(action: &Action) -> &str {
        match action {
            Action::Reply(line) => line,
            other => panic!("expected a local reply, got {other:?}"),
        }
    }

    fn command_of(action: Action) -> Command {
        match action {
            Action::Execute(command) => command,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    fn restricted(read_only: bool, rules: &[(bool, &str)], guest: &[&str]) -> Session {
        let rules = rules
            .iter()
            .map(|&(allow, pattern)| crate::qmp::policy::rule(allow, pattern).unwrap())
            .collect();
        let commands = Arc::new(GuestCommands::new());
        if !guest.is_empty() {
            commands.set(guest.iter().map(|name| name.to_string()));
        }
        let mut session = Session::with_policy(Policy::new(read_only, rules), commands);
        let actions = run(&mut session, r#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(actions, [Action::Reply("{\"return\": {}}\r\n".into())]);
        session
    }

    /// The refusal of the only command in `input`: (line, name, id, reason).
    fn refusal_of(session: &mut Session, input: &str) -> (String, String, Option<String>, String) {
        match run(session, input).remove(0) {
            Action::Refused {
                line,
                name,
                id,
                reason,
            } => (line, name, id, reason),
            other => panic!("expected a refusal of {input}, got {other:?}"),
        }
    }

    #[test]
    fn refused_command_gets_qemus_disabled_error_with_its_id() {
        let mut session = restricted(true, &[], &[]);
        for (id, printed) in [
            ("1", "1"),
            (r#""a\u00e9""#, r#""a\u00E9""#),
            (
                r#"{"b":[true,null],"a":-1.5}"#,
                r#"{"a": -1.5, "b": [true, null]}"#,
            ),
            ("null", "null"),
            ("18446744073709551615", "18446744073709551615"),
        ] {
            let (line, name, audited, reason) = refusal_of(
                &mut session,
                &format!(r#"{{"execute":"stop","id":{id},"arguments":{{"x":1}}}}"#),
            );
            assert_eq!(
                line,
                format!(
                    "{{\"id\": {printed}, \"error\": {{\"class\": \"CommandNotFound\", \
                     \"desc\": \"Command stop has been disabled: read-only socket\"}}}}\r\n"
                )
            );
            assert_eq!(name, "stop");
            assert_eq!(reason, "read-only socket");
            let compact = audited.expect("an id");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&compact).unwrap(),
                serde_json::from_str::<serde_json::Value>(id).unwrap()
            );
        }
        let (line, _, audited, _) = refusal_of(&mut session, r#"{"execute":"quit"}"#);
        assert_eq!(
            line,
            "{\"error\": {\"class\": \"CommandNotFound\", \
             \"desc\": \"Command quit has been disabled: read-only socket\"}}\r\n"
        );
        assert_eq!(audited, None);
    }

    #[test]
    fn refusal_names_the_deciding_rule() {
        let mut session = restricted(false, &[(false, "query-*"), (true, "query-status")], &[]);
        let (line, _, audited, reason) =
            refusal_of(&mut session, r#"{"execute":"query-name","id":"x"}"#);
        assert_eq!(reason, "refused by --deny 'query-*'");
        assert_eq!(audited.as_deref(), Some(r#""x""#));
        assert_eq!(
            line,
            "{\"id\": \"x\", \"error\": {\"class\": \"CommandNotFound\", \
             \"desc\": \"Command query-name has been disabled: refused by --deny 'query-*'\"}}\r\n"
        );
        let command = command_of(run(&mut session, r#"{"execute":"query-status"}"#).remove(0));
        assert_eq!(command.name, "query-status");

        let mut session = restricted(false, &[(true, "stop"), (false, "s*")], &[]);
        let (_, _, _, reason) = refusal_of(&mut session, r#"{"execute":"stop"}"#);
        assert_eq!(reason, "refused by --deny 's*'");
        command_of(run(&mut session, r#"{"execute":"cont"}"#).remove(0));
    }

    #[test]
    fn refused_command_the_guest_lacks_is_not_found() {
        let mut session = restricted(true, &[], &["stop", "query-status"]);
        let actions = run(&mut session, r#"{"execute":"stopp","id":2}"#);
        assert_eq!(
            reply_of(&actions[0]),
            "{\"id\": 2, \"error\": {\"class\": \"CommandNotFound\", \
             \"desc\": \"The command stopp has not been found\"}}\r\n"
        );
        refusal_of(&mut session, r#"{"execute":"stop","id":2}"#);
        // Allowed commands go to the guest, which answers for itself.
        command_of(run(&mut session, r#"{"execute":"query-nope"}"#).remove(0));
    }

    #[test]
    fn request_shape_is_checked_before_the_policy() {
        let mut session = restricted(true, &[], &[]);
        let actions = run(
            &mut session,
            r#"{"execute":"stop","arguments":[]}{"execute":"stop","x":1}"#,
        );
        assert_eq!(
            reply_of(&actions[0]),
            "{\"error\": {\"class\": \"GenericError\", \
             \"desc\": \"QMP input member 'arguments' must be an object\"}}\r\n"
        );
        assert!(reply_of(&actions[1]).contains("QMP input member 'x' is unexpected"));
    }

    #[test]
    fn negotiation_is_unchanged_by_the_policy() {
        let mut session = Session::with_policy(
            Policy::new(true, vec![crate::qmp::policy::rule(false, "*").unwrap()]),
            Arc::new(GuestCommands::new()),
        );
        let actions = run(&mut session, r#"{"execute":"query-status","id":1}"#);
        assert!(reply_of(&actions[0]).contains("Expecting capabilities negotiation"));
        let actions = run(
            &mut session,
            r#"{"execute":"qmp_capabilities"}{"execute":"qmp_capabilities"}"#,
        );
        assert_eq!(reply_of(&actions[0]), "{\"return\": {}}\r\n");
        assert!(reply_of(&actions[1]).contains("already complete"));
        assert!(session.negotiated());
    }

    #[test]
    fn read_only_runs_hmp_info_lines() {
        let mut session = restricted(true, &[], &[]);
        for line in ["info status", "   info  status"] {
            let input = format!(
                r#"{{"execute":"human-monitor-command","arguments":{{"command-line":"{line}"}}}}"#
            );
            let command = command_of(run(&mut session, &input).remove(0));
            assert!(command.read_only);
        }
        for arguments in [
            r#"{"command-line":"stop"}"#,
            r#"{"command-line":"infox"}"#,
            r#"{"command-line":1}"#,
            r#"{}"#,
        ] {
            let input = format!(r#"{{"execute":"human-monitor-command","arguments":{arguments}}}"#);
            let (line, _, _, reason) = refusal_of(&mut session, &input);
            assert_eq!(reason, "read-only socket runs only HMP 'info' commands");
            assert!(line.contains("Command human-monitor-command has been disabled"));
        }
        refusal_of(&mut session, r#"{"execute":"human-monitor-command"}"#);
    }

    #[test]
    fn commands_say_whether_they_only_read() {
        let mut session = negotiated();
        for (input, read_only) in [
            (r#"{"execute":"query-status"}"#, true),
            (r#"{"execute":"qom-list","arguments":{"path":"/"}}"#, true),
            (r#"{"execute":"stop"}"#, false),
            (
                r#"{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}"#,
                true,
            ),
            (
                r#"{"execute":"human-monitor-command","arguments":{"command-line":"stop"}}"#,
                false,
            ),
        ] {
            let command = command_of(run(&mut session, input).remove(0));
            assert_eq!(command.read_only, read_only, "{input}");
            assert_eq!(command.listing, None);
        }
    }

    #[test]
    fn audit_id_is_compact_and_cut() {
        let mut session = negotiated();
        let command = command_of(
            run(
                &mut session,
                r#"{"execute":"stop","id":{"b": [1, 2.5], "a": "\u00e9"}}"#,
            )
            .remove(0),
        );
        assert_eq!(
            command.audit_id().as_deref(),
            Some("{\"b\":[1,2.5],\"a\":\"\u{e9}\"}")
        );
        let long = format!(r#"{{"execute":"stop","id":"{}"}}"#, "x".repeat(1000));
        let command = command_of(run(&mut session, &long).remove(0));
        let audited = command.audit_id().unwrap();
        assert_eq!(audited.len(), 200);
        assert!(audited.starts_with("\"xxx"));
        let command = command_of(run(&mut session, r#"{"execute":"stop"}"#).remove(0));
        assert_eq!(command.audit_id(), None);
    }

    #[test]
    fn only_restricted_listings_are_filtered() {
        let mut session = restricted(true, &[], &[]);
        for name in ["query-commands", "query-qmp-schema"] {
            let command =
                command_of(run(&mut session, &format!(r#"{{"execute":"{name}"}}"#)).remove(0));
            assert!(command.listing.is_some(), "{name}");
        }
        let mut session = negotiated();
        let command = command_of(run(&mut session, r#"{"execute":"query-commands"}"#).remove(0));
        assert_eq!(command.listing, None);
    }

    #[test]
    fn runs_tells_the_command_of_a_command_text() {
        let mut session = Session::new();
        run(&mut session, r#"{"execute":"qmp_capabilities"}"#);
        for (input, quit) in [
            (r#"{"arguments":{},"execute":"qu\u0069t"}"#, true),
            (r#"{"execute":"quit"}"#, true),
            (r#"{"execute":"quitx"}"#, false),
            (r#"{"execute":"query-status"}"#, false),
        ] {
            let mut actions = run(&mut session, input);
            let command = command_of(actions.remove(0));
            assert_eq!(
                runs(&command.json, "quit"),
                quit,
                "{input}: {}",
                command.json
            );
        }
    }

    #[test]
    fn commands_before_negotiation_are_refused_with_id() {
        let mut session = Session::new();
        let actions = run(
            &mut session,
            r#"{"execute":"query-status","id":{"b":1,"a":2}}"#,
        );
        assert_eq!(
            reply_of(&actions[0]),
            "{\"id\": {\"a\": 2, \"b\": 1}, \"error\": {\"class\": \"CommandNotFound\", \
             \"desc\": \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n"
        );
        assert!(!session.negotiated());
    }

    #[test]
    fn capability_oob_is_not_available() {
        let mut session = Session::new();
        let actions = run(
            &mut session,
            r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob","oob"]},"id":1}"#,
        );
        assert_eq!(
            reply_of(&actions[0]),
            "{\"id\": 1, \"error\": {\"class\": \"GenericError\", \
             \"desc\": \"Capability oob, oob not available\"}}\r\n"
        );
        assert!(!session.negotiated());
    }

    #[test]
    fn negotiation_completes_once() {
        let mut session = negotiated();
        let actions = run(
            &mut session,
            r#"{"execute":"qmp_capabilities","arguments":{"foo":1}}{"execute":"qmp_capabilities"}"#,
        );
        assert_eq!(
            reply_of(&actions[0]),
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'foo' is unexpected\"}}\r\n"
        );
        assert_eq!(
            reply_of(&actions[1]),
            "{\"error\": {\"class\": \"CommandNotFound\", \
             \"desc\": \"Capabilities negotiation is already complete, command ignored\"}}\r\n"
        );
    }

    #[test]
    fn id_is_echoed_unchanged() {
        let mut session = negotiated();
        let id_text = r#"[1.5,"\u00e9",{"z":null,"a":-0},18446744073709551615,1e400]"#;
        let command = command_of(
            run(
                &mut session,
                &format!(r#"{{"execute":"nope","id":{id_text}}}"#),
            )
            .remove(0),
        );
        let reply = command.reply(r#"{"id":"libvirt-3","error":{"class":"CommandNotFound","desc":"The command nope has not been found"}}"#);
        assert_eq!(
            reply,
            "{\"id\": [1.5, \"\\u00E9\", {\"a\": 0, \"z\": null}, 18446744073709551615, inf], \
             \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not been found\"}}\r\n"
        );
    }

    #[test]
    fn command_name_with_nul_is_not_found_locally() {
        let mut session = negotiated();
        let actions = run(&mut session, r#"{"execute":"query-status\u0000x","id":1}"#);
        assert_eq!(
            reply_of(&actions[0]),
            "{\"id\": 1, \"error\": {\"class\": \"CommandNotFound\", \
             \"desc\": \"The command query-status\\u0000x has not been found\"}}\r\n"
        );
    }

    #[test]
    fn command_json_keeps_client_order_and_drops_id() {
        let mut session = negotiated();
        let input = "{\"id\":7,\"arguments\":{\"b\":[1,2.0,-0.0,\"\u{e9}\\n\"],\"a\":{\"y\":true,\"x\":null},\"big\":9223372036854775808},\"execute\":\"x-test\"}";
        let command = command_of(run(&mut session, input).remove(0));
        assert_eq!(command.name, "x-test");
        assert_eq!(command.id, Some(Value::Int(7)));
        assert_eq!(
            command.json,
            "{\"execute\":\"x-test\",\"arguments\":{\"b\":[1,2.0,-0.0,\"\u{e9}\\n\"],\"a\":{\"y\":true,\"x\":null},\"big\":9223372036854775808}}"
        );
        let command = command_of(run(&mut session, r#"{"execute":"query-status"}"#).remove(0));
        assert_eq!(command.json, r#"{"execute":"query-status"}"#);
        assert_eq!(command.id, None);
    }

    #[test]
    fn arguments_are_cut_to_the_depth_libvirt_accepts() {
        let depth = |text: &str| {
            text.bytes()
                .scan(0usize, |level, byte| {
                    match byte {
                        b'[' | b'{' => *level += 1,
                        b']' | b'}' => *level -= 1,
                        _ => {}
                    }
                    Some(*level)
                })
                .max()
                .unwrap_or(0)
        };
        let mut session = negotiated();
        for lists in [124, 125, 126, 1021] {
            let input = format!(
                r#"{{"execute":"nope","arguments":{{"x":{}{}}}}}"#,
                "[".repeat(lists),
                "]".repeat(lists)
            );
            let command = command_of(run(&mut session, &input).remove(0));
            // libvirt's yajl generator accepts at most 127 levels.
            assert_eq!(depth(&command.json), (lists + 2).min(127), "{lists} lists");
        }
    }

    #[test]
    fn deep_id_is_handled_on_a_small_stack() {
        let input = format!(
            "{{\"execute\":\"nope\",\"id\":{}{}{}}}",
            "[{\"a\":".repeat(511),
            "[]",
            "}]".repeat(511)
        );
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let mut session = negotiated();
                let mut actions = run(&mut session, &input);
                let command = command_of(actions.remove(0));
                let line = command.reply(r#"{"id":"libvirt-1","error":{"class":"CommandNotFound","desc":"The command nope has not been found"}}"#);
                assert!(line.starts_with("{\"id\": [{\"a\": [{\"a\": "));
                drop(command);
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
    }
}
