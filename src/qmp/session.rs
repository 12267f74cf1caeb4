// SPDX-License-Identifier: LGPL-2.1-or-later
//! One client connection's request handling: what QEMU's monitor does with
//! each parsed item (monitor/qmp.c, qapi/qmp-dispatch.c), capabilities
//! negotiation (monitor/qmp-cmds-control.c and the generated marshaller of
//! `qmp_capabilities`), and turning libvirt's answers into QEMU's reply lines.

use super::reprint::{for_each_member, reprint_value, Malformed};
use super::stream::Parsed;
use super::value::{dismantle, Dict, Value};
use super::writer::{quote_compact, quote_qemu, write_compact, write_qemu};

/// libvirt's JSON generator (yajl) refuses text nested 128 deep or more, and
/// libvirt puts the arguments into `{"execute":..,"arguments":..,"id":..}`:
/// the arguments object may be at most 126 deep. No command's arguments are
/// that deep, so QEMU's answer does not depend on what is cut off.
const LIBVIRT_ARGUMENT_LEVELS: usize = 126;

const GENERIC_ERROR: &str = "GenericError";
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
    /// id; `arguments` only if the client gave it, members in the client's order.
    pub json: String,
    /// The client's `id`, echoed in the reply.
    pub id: Option<Value>,
}

/// The state of one client connection.
#[derive(Debug, Default)]
pub struct Session {
    negotiated: bool,
}

/// An error reply: class and desc.
struct Failure {
    class: &'static str,
    desc: String,
}

impl Failure {
    fn generic(desc: impl Into<String>) -> Failure {
        Failure {
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
            Ok(Some(guest)) => {
                return Action::Execute(Command {
                    name: guest.name,
                    json: guest.text,
                    id,
                })
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
    /// success (`{"return": {}}`), Ok(Some) a command for the guest.
    fn dispatch(&mut self, request: &Dict) -> Result<Option<GuestCommand>, Failure> {
        let name = check_request(request)?;
        let arguments = request.get("arguments").and_then(Value::as_dict);
        if name == "qmp_capabilities" {
            self.qmp_capabilities(arguments)?;
            return Ok(None);
        }
        if !self.negotiated {
            // Only qmp_capabilities exists yet; monitor_qmp_dispatch replaces
            // the desc of every CommandNotFound in this mode.
            return Err(Failure {
                class: COMMAND_NOT_FOUND,
                desc: "Expecting capabilities negotiation with 'qmp_capabilities'".into(),
            });
        }
        if name.contains('\0') {
            // No QEMU command name holds U+0000, and libvirt handles command
            // text as C strings, so such a name is answered here, as QEMU
            // answers it.
            return Err(Failure {
                class: COMMAND_NOT_FOUND,
                desc: format!("The command {name} has not been found"),
            });
        }
        Ok(Some(GuestCommand::new(name, arguments)))
    }

    /// The generated `qmp_marshal_qmp_capabilities` followed by
    /// `qmp_qmp_capabilities`.
    fn qmp_capabilities(&mut self, arguments: Option<&Dict>) -> Result<(), Failure> {
        let enabled = visit_capabilities_arguments(arguments)?;
        if self.negotiated {
            return Err(Failure {
                class: COMMAND_NOT_FOUND,
                desc: "Capabilities negotiation is already complete, command ignored".into(),
            });
        }
        // qmp_caps_accept: this server offers no capability, so every
        // requested one is unavailable (repeats included).
        if !enabled.is_empty() {
            return Err(Failure::generic(format!(
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
fn check_request(request: &Dict) -> Result<&str, Failure> {
    let mut command = None;
    for (name, value) in request.iter() {
        match name {
            "execute" => match value {
                Value::Str(command_name) => command = Some(command_name.as_str()),
                _ => {
                    return Err(Failure::generic(
                        "QMP input member 'execute' must be a string",
                    ))
                }
            },
            "arguments" => {
                if !matches!(value, Value::Dict(_)) {
                    return Err(Failure::generic(
                        "QMP input member 'arguments' must be an object",
                    ));
                }
            }
            // `exec-oob` is only a command member once OOB is enabled, which
            // never happens here.
            other => {
                return Err(Failure::generic(format!(
                    "QMP input member '{other}' is unexpected"
                )))
            }
        }
    }
    command.ok_or_else(|| Failure::generic("QMP input lacks member 'execute'"))
}

/// The QObject input visitor over `qmp_capabilities`' arguments
/// (`enable: ['QMPCapability']`, optional). Returns the requested names.
fn visit_capabilities_arguments(arguments: Option<&Dict>) -> Result<Vec<&str>, Failure> {
    let mut enabled = Vec::new();
    let Some(arguments) = arguments else {
        return Ok(enabled);
    };
    if let Some(enable) = arguments.get("enable") {
        let Value::List(items) = enable else {
            return Err(Failure::generic(
                "Invalid parameter type for 'enable', expected: array",
            ));
        };
        for (index, item) in items.iter().enumerate() {
            let Value::Str(capability) = item else {
                return Err(Failure::generic(format!(
                    "Invalid parameter type for 'enable[{index}]', expected: string"
                )));
            };
            // The enum visitor names list elements "null".
            if capability != "oob" {
                return Err(Failure::generic(format!(
                    "Parameter 'null' does not accept value '{capability}'"
                )));
            }
            enabled.push(capability.as_str());
        }
    }
    // visit_check_struct: a member not consumed is unexpected; with several,
    // GLib's hash table order picks the one named.
    if let Some(name) = super::ghash::first_unvisited(arguments, &["enable"]) {
        return Err(Failure::generic(format!(
            "Parameter '{name}' is unexpected"
        )));
    }
    Ok(enabled)
}

/// The guest-bound part of a request.
struct GuestCommand {
    name: String,
    text: String,
}

impl GuestCommand {
    fn new(name: &str, arguments: Option<&Dict>) -> GuestCommand {
        let mut text = String::from("{\"execute\":");
        quote_compact(&mut text, name);
        if let Some(arguments) = arguments {
            text.push_str(",\"arguments\":");
            write_compact_dict(&mut text, arguments);
        }
        text.push('}');
        GuestCommand {
            name: name.to_string(),
            text,
        }
    }
}

/// Compact JSON of the client's `arguments`, in the client's member order.
fn write_compact_dict(out: &mut String, dict: &Dict) {
    out.push('{');
    for (index, (name, value)) in dict.iter_insertion_order().enumerate() {
        if index > 0 {
            out.push(',');
        }
        quote_compact(out, name);
        out.push(':');
        // The member's value starts at level 2.
        write_compact(out, value, LIBVIRT_ARGUMENT_LEVELS - 1);
    }
    out.push('}');
}

impl Command {
    /// Turns libvirt's reply text into the line QEMU would have sent
    /// (`\r\n`-terminated), with this command's id.
    ///
    /// libvirt's text is QEMU's reply re-serialised compactly with libvirt's
    /// own `id`; that id is dropped and the client's put where QEMU puts it.
    /// Text that is not such a reply gives a GenericError line.
    pub fn reply(&self, libvirt_reply: &str) -> String {
        match relay_reply(libvirt_reply, self.id.as_ref()) {
            Ok(line) => line,
            Err(Malformed) => self.error(GENERIC_ERROR, "Malformed reply from libvirt"),
        }
    }

    /// A QMP error for this command (class, desc) with its id, as QEMU
    /// prints it.
    pub fn error(&self, class: &str, desc: &str) -> String {
        error(class, desc, self.id.as_ref())
    }
}

/// Single pass over libvirt's reply: the `return` or `error` member is
/// re-printed straight into the line, other members are skipped.
fn relay_reply(text: &str, id: Option<&Value>) -> Result<String, Malformed> {
    let mut line = String::with_capacity(text.len() + text.len() / 8 + 64);
    let mut scratch = String::new();
    let mut found = false;
    for_each_member(text, |name, start| match name {
        "return" | "error" if !found => {
            found = true;
            if name == "return" {
                // {"return": R, "id": ID}: "return" hashes before "id".
                line.push_str("{\"return\": ");
                let end = reprint_value(&mut line, text, start)?;
                push_id_member(&mut line, ", ", id, "");
                line.push('}');
                Ok(end)
            } else {
                // {"id": ID, "error": E}: "id" hashes before "error".
                line.push('{');
                push_id_member(&mut line, "", id, ", ");
                line.push_str("\"error\": ");
                let end = reprint_value(&mut line, text, start)?;
                line.push('}');
                Ok(end)
            }
        }
        _ => {
            scratch.clear();
            reprint_value(&mut scratch, text, start)
        }
    })?;
    if !found {
        return Err(Malformed);
    }
    line.push_str("\r\n");
    Ok(line)
}

fn push_id_member(line: &mut String, before: &str, id: Option<&Value>, after: &str) {
    if let Some(id) = id {
        line.push_str(before);
        line.push_str("\"id\": ");
        write_qemu(line, id);
        line.push_str(after);
    }
}

/// `{"return": RETURN_TEXT, "id": ID}\r\n` for a reply made here.
fn success_line(return_text: &str, id: Option<&Value>) -> String {
    let mut line = String::from("{\"return\": ");
    line.push_str(return_text);
    push_id_member(&mut line, ", ", id, "");
    line.push_str("}\r\n");
    line
}

/// A QMP error line with an optional id, as QEMU prints it
/// (`qmp_error_response` plus the id, in QDict order).
pub fn error(class: &str, desc: &str, id: Option<&Value>) -> String {
    let mut line = String::from("{");
    push_id_member(&mut line, "", id, ", ");
    line.push_str("\"error\": {\"class\": ");
    quote_qemu(&mut line, class);
    line.push_str(", \"desc\": ");
    quote_qemu(&mut line, desc);
    line.push_str("}}\r\n");
    line
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
    fn success_reply_puts_id_after_return() {
        let command = Command {
            name: "query-status".into(),
            json: String::new(),
            id: Some(Value::Str("s".into())),
        };
        assert_eq!(
            command.reply(r#"{"return":{"status":"running","singlestep":false,"running":true},"id":"libvirt-12"}"#),
            "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, \"id\": \"s\"}\r\n"
        );
        let anonymous = Command {
            id: None,
            ..command
        };
        assert_eq!(
            anonymous.reply(r#"{"id":"libvirt-1","return":{}}"#),
            "{\"return\": {}}\r\n"
        );
    }

    #[test]
    fn error_reply_puts_id_first() {
        let command = Command {
            name: "device_del".into(),
            json: String::new(),
            id: Some(Value::Int(3)),
        };
        assert_eq!(
            command.reply(r#"{"id":"libvirt-7","error":{"class":"DeviceNotFound","desc":"Device 'x\u00e9' not found"}}"#),
            "{\"id\": 3, \"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'x\\u00E9' not found\"}}\r\n"
        );
        assert_eq!(
            command.error("GenericError", "guest went away"),
            "{\"id\": 3, \"error\": {\"class\": \"GenericError\", \"desc\": \"guest went away\"}}\r\n"
        );
    }

    #[test]
    fn malformed_libvirt_reply_becomes_an_error() {
        let command = Command {
            name: "x".into(),
            json: String::new(),
            id: None,
        };
        assert!(command
            .reply("{\"id\":\"libvirt-1\"}")
            .contains("GenericError"));
        assert!(command.reply("not json").contains("GenericError"));
    }

    #[test]
    fn hardcoded_member_orders_match_qdict_order() {
        // The reply and error lines are written by hand; QDict order must agree.
        let bucket = Dict::bucket_of;
        assert!(bucket("return") < bucket("id"));
        assert!(bucket("id") < bucket("error"));
        assert!(bucket("class") < bucket("desc"));
        assert!(bucket("version") < bucket("capabilities"));
        assert!(bucket("timestamp") < bucket("event") && bucket("event") < bucket("data"));
        assert!(bucket("seconds") < bucket("microseconds"));
    }

    #[test]
    fn large_reply_is_relayed_quickly() {
        let items: Vec<String> = (0..5000)
            .map(|n| format!(r#"{{"name":"command-{n}","ret-type":"{n}","meta-type":"command","arg-type":"0"}}"#))
            .collect();
        let text = format!(r#"{{"return":[{}],"id":"libvirt-2"}}"#, items.join(","));
        assert!(text.len() > 200_000);
        let command = Command {
            name: "query-qmp-schema".into(),
            json: String::new(),
            id: Some(Value::Int(1)),
        };
        let started = std::time::Instant::now();
        let line = command.reply(&text);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(line.starts_with("{\"return\": [{\"name\": \"command-0\", \"ret-type\": \"0\""));
        assert!(line.ends_with("}], \"id\": 1}\r\n"));
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
