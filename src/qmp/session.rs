// SPDX-License-Identifier: LGPL-2.1-or-later
//! One client connection's request handling: what QEMU's monitor does with
//! each parsed item (monitor/qmp.c, qapi/qmp-dispatch.c), capabilities
//! negotiation (monitor/qmp-cmds-control.c and the generated marshaller of
//! `qmp_capabilities`). The lines it answers with are made in `reply`.

use super::parser::LIBVIRT_ARGUMENT_LEVELS;
use super::reply::{error, success_line};
use super::stream::{Parsed, Stream};
use super::value::{dismantle, Dict, Value};
use super::writer::{quote_compact, write_compact_dict};

pub(crate) const GENERIC_ERROR: &str = "GenericError";
const COMMAND_NOT_FOUND: &str = "CommandNotFound";

/// What to do with one parsed item.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this complete line (ending in `\r\n`) to the client.
    Reply(String),
    /// Run this command on the guest and answer with [`Command::reply`].
    Execute(Command),
}

/// A command for the guest.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The `execute` member.
    pub name: String,
    /// `{"execute":NAME,"arguments":{...}}` for libvirt, without the client's
    /// id; `arguments` only if the client gave it, members in the client's
    /// order, at most 126 levels deep (deeper containers are written empty).
    pub json: String,
    /// The client's `id`, echoed in the reply.
    pub id: Option<Value>,
}

/// The state of one client connection.
#[derive(Debug, Default)]
pub struct Session {
    negotiated: bool,
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
    pub fn new() -> Session {
        Session::default()
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
            Ok(Some(name)) => {
                let json = command_text(&name, request.remove("arguments"));
                return Action::Execute(Command { name, json, id });
            }
            Ok(None) => success_line("{}", id.as_ref()),
            Err(failure) => error(failure.class, &failure.desc, id.as_ref()),
        };
        if let Some(id) = id {
            // It may be a list nested 1000 deep.
            dismantle(id);
        }
        Action::Reply(line)
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
                desc: format!("The command {name} has not been found"),
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
            Action::Execute(command) => panic!("expected a local reply, got {command:?}"),
        }
    }

    fn command_of(action: Action) -> Command {
        match action {
            Action::Execute(command) => command,
            Action::Reply(line) => panic!("expected a command, got {line}"),
        }
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
