// SPDX-License-Identifier: LGPL-2.1-or-later
//! Every line the proxy sends, as QEMU 7.2 prints it: the greeting, events,
//! error and success replies made here, and the replies libvirt relays from
//! QEMU with the client's id put back. Member orders are written by hand in
//! QDict order, which a test checks against [`Dict::bucket_of`].
//!
//! Also the pieces of QMP that start-up needs: the version in a
//! query-version reply and the names in a query-commands reply.

use super::policy::Listing;
use super::relay::{
    for_each_member, reprint_list_filtered, reprint_text, reprint_value, string_members, Malformed,
};
use super::session::{Command, GENERIC_ERROR};
use super::value::Value;
use super::writer::{quote_qemu, write_qemu};

/// The greeting: `{"QMP": {"version": V, "capabilities": []}}\r\n`, where V
/// is the `return` member of query-version as libvirt gave it (compact JSON
/// text), re-printed in QEMU's format. Text that is not JSON becomes `{}`.
pub fn greeting(version: &str) -> String {
    let mut line = String::from("{\"QMP\": {\"version\": ");
    push_relayed(&mut line, version, "{}");
    line.push_str(", \"capabilities\": []}}\r\n");
    line
}

/// An event line: `{"timestamp": {"seconds": S, "microseconds": U}, "event":
/// "NAME", "data": D}\r\n`. `data` is compact JSON text from libvirt, or None
/// for events without data (then there is no "data" member).
pub fn event(name: &str, seconds: i64, micros: u32, data: Option<&str>) -> String {
    let mut line = format!(
        "{{\"timestamp\": {{\"seconds\": {seconds}, \"microseconds\": {micros}}}, \"event\": "
    );
    quote_qemu(&mut line, name);
    if let Some(data) = data {
        line.push_str(", \"data\": ");
        push_relayed(&mut line, data, "{}");
    }
    line.push_str("}\r\n");
    line
}

/// The `return` member of libvirt's query-version reply, as compact JSON
/// text for [`greeting`]; the error says what the reply was instead.
pub fn version_from_reply(text: &str) -> Result<String, String> {
    let mut version = None;
    let mut scratch = String::new();
    let walked = for_each_member(text, |name, start| {
        scratch.clear();
        let end = reprint_value(&mut scratch, text, start)?;
        if name == "return" && version.is_none() {
            version = Some(text[start..end].trim_start().to_owned());
        }
        Ok(end)
    });
    match (walked, version) {
        (Ok(()), Some(version)) => Ok(version),
        (Err(Malformed), _) => Err(format!("query-version reply is not a JSON object: {text}")),
        (Ok(()), None) => Err(format!("query-version answered {text}")),
    }
}

/// The command names in libvirt's query-commands reply (for
/// [`GuestCommands`](super::GuestCommands)); the error says what the reply
/// was instead.
pub fn command_names(text: &str) -> Result<Vec<String>, String> {
    let mut names = None;
    let mut scratch = String::new();
    let walked = for_each_member(text, |member, start| {
        if member != "return" || names.is_some() {
            scratch.clear();
            return reprint_value(&mut scratch, text, start);
        }
        let mut found = Vec::new();
        scratch.clear();
        let end = reprint_list_filtered(&mut scratch, text, start, |element| {
            if let Ok([Some(name)]) = string_members(element, ["name"]) {
                found.push(name);
            }
            false
        })?;
        names = Some(found);
        Ok(end)
    });
    match (walked, names) {
        (Ok(()), Some(names)) if !names.is_empty() => Ok(names),
        (Err(Malformed), _) => Err(format!("query-commands reply is not a JSON object: {text}")),
        _ => Err(format!("query-commands answered {text}")),
    }
}

/// Re-prints libvirt's JSON text in QEMU's format, or `fallback` if it is not JSON.
fn push_relayed(line: &mut String, text: &str, fallback: &str) {
    let start = line.len();
    if reprint_text(line, text).is_err() {
        line.truncate(start);
        line.push_str(fallback);
    }
}

impl Command {
    /// Turns libvirt's reply text into the line QEMU would have sent
    /// (`\r\n`-terminated), with this command's id.
    ///
    /// libvirt's text is QEMU's reply re-serialised compactly with libvirt's
    /// own `id`; that id is dropped and the client's put where QEMU puts it.
    /// Text that is not such a reply gives a GenericError line.
    pub fn reply(&self, libvirt_reply: &str) -> String {
        match relay_reply(libvirt_reply, self.id.as_ref(), self.listing.as_ref()) {
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
/// re-printed straight into the line (without what `listing` leaves out),
/// other members are skipped.
fn relay_reply(
    text: &str,
    id: Option<&Value>,
    listing: Option<&Listing>,
) -> Result<String, Malformed> {
    let mut line = String::with_capacity(text.len() + text.len() / 8 + 64);
    let mut scratch = String::new();
    let mut found = false;
    for_each_member(text, |name, start| match name {
        "return" | "error" if !found => {
            found = true;
            if name == "return" {
                // {"return": R, "id": ID}: "return" hashes before "id".
                line.push_str("{\"return\": ");
                let end = match listing {
                    Some(listing) => reprint_list_filtered(&mut line, text, start, |element| {
                        listing.keeps(element)
                    })?,
                    None => reprint_value(&mut line, text, start)?,
                };
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
pub(crate) fn success_line(return_text: &str, id: Option<&Value>) -> String {
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
    use crate::qmp::{to_text, Dict, Policy};

    #[test]
    fn greeting_reprints_the_version() {
        let version = r#"{"qemu":{"micro":22,"minor":2,"major":7},"package":"Debian 1:7.2+dfsg-7+deb12u18+b3"}"#;
        assert_eq!(
            greeting(version),
            "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \
             \"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": []}}\r\n"
        );
    }

    #[test]
    fn event_has_data_only_when_given() {
        assert_eq!(
            event("RESUME", 1795279499, 620219, None),
            "{\"timestamp\": {\"seconds\": 1795279499, \"microseconds\": 620219}, \"event\": \"RESUME\"}\r\n"
        );
        assert_eq!(
            event(
                "RESET",
                1,
                2,
                Some(r#"{"guest":false,"reason":"host-qmp-system-reset"}"#)
            ),
            "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESET\", \
             \"data\": {\"guest\": false, \"reason\": \"host-qmp-system-reset\"}}\r\n"
        );
    }

    #[test]
    fn error_line_has_id_first_when_given() {
        assert_eq!(
            error("GenericError", "oops \u{e9}", None),
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"oops \\u00E9\"}}\r\n"
        );
        assert_eq!(
            error("GenericError", "x", Some(&Value::Str("a".into()))),
            "{\"id\": \"a\", \"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\r\n"
        );
    }

    #[test]
    fn error_line_matches_qdict_order_of_a_built_reply() {
        let mut inner = Dict::new();
        inner.insert("class", Value::Str("C".into()));
        inner.insert("desc", Value::Str("D".into()));
        let mut reply = Dict::new();
        reply.insert("error", Value::Dict(inner));
        reply.insert("id", Value::Int(1));
        assert_eq!(
            format!("{}\r\n", to_text(&Value::Dict(reply))),
            error("C", "D", Some(&Value::Int(1)))
        );
    }

    #[test]
    fn success_reply_puts_id_after_return() {
        let command = Command {
            name: "query-status".into(),
            json: String::new(),
            id: Some(Value::Str("s".into())),
            ..Command::default()
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
            ..Command::default()
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
            ..Command::default()
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
            ..Command::default()
        };
        let started = std::time::Instant::now();
        let line = command.reply(&text);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(line.starts_with("{\"return\": [{\"name\": \"command-0\", \"ret-type\": \"0\""));
        assert!(line.ends_with("}], \"id\": 1}\r\n"));
    }

    /// query-commands as libvirt relays it from QEMU 7.2 (cut short).
    const COMMANDS_REPLY: &str = r#"{"return":[{"name":"device_add"},{"name":"x-query-virtio"},{"name":"query-status"},{"name":"stop"},{"name":"human-monitor-command"},{"name":"qmp_capabilities"},{"name":"device_del"},{"name":"qom-list"}],"id":"libvirt-12"}"#;

    /// query-qmp-schema as libvirt relays it from QEMU 7.2 (cut short).
    const SCHEMA_REPLY: &str = r#"{"return":[{"name":"query-status","ret-type":"1","meta-type":"command","arg-type":"0"},{"name":"STOP","meta-type":"event","arg-type":"0"},{"name":"device_del","ret-type":"0","meta-type":"command","arg-type":"187"},{"name":"stop","ret-type":"0","meta-type":"command","arg-type":"0"},{"name":"human-monitor-command","ret-type":"str","meta-type":"command","arg-type":"226","features":["savevm-monitor-nodes"]},{"name":"0","members":[],"meta-type":"object"},{"name":"1","members":[{"name":"running","type":"bool"},{"name":"singlestep","type":"bool"},{"name":"status","type":"262"}],"meta-type":"object"}],"id":"libvirt-13"}"#;

    fn listing_command(name: &str, listing: Option<Listing>) -> Command {
        Command {
            name: name.into(),
            id: Some(Value::Int(5)),
            listing,
            ..Command::default()
        }
    }

    fn policy(read_only: bool, rules: &[(bool, &str)]) -> Policy {
        let rules = rules
            .iter()
            .map(|&(allow, pattern)| crate::qmp::policy::rule(allow, pattern).unwrap())
            .collect();
        Policy::new(read_only, rules)
    }

    #[test]
    fn query_commands_lists_only_what_may_run() {
        let command = listing_command(
            "query-commands",
            Some(Listing::Commands(policy(true, &[(false, "x-*")]))),
        );
        assert_eq!(
            command.reply(COMMANDS_REPLY),
            "{\"return\": [{\"name\": \"query-status\"}, {\"name\": \"human-monitor-command\"}, \
             {\"name\": \"qmp_capabilities\"}, {\"name\": \"qom-list\"}], \"id\": 5}\r\n"
        );
        let command = listing_command(
            "query-commands",
            Some(Listing::Commands(policy(false, &[(false, "device_*")]))),
        );
        assert_eq!(
            command.reply(COMMANDS_REPLY),
            "{\"return\": [{\"name\": \"x-query-virtio\"}, {\"name\": \"query-status\"}, \
             {\"name\": \"stop\"}, {\"name\": \"human-monitor-command\"}, \
             {\"name\": \"qmp_capabilities\"}, {\"name\": \"qom-list\"}], \"id\": 5}\r\n"
        );
    }

    #[test]
    fn query_qmp_schema_keeps_types_and_events() {
        let command = listing_command("query-qmp-schema", Some(Listing::Schema(policy(true, &[]))));
        assert_eq!(
            command.reply(SCHEMA_REPLY),
            "{\"return\": [{\"name\": \"query-status\", \"ret-type\": \"1\", \"meta-type\": \"command\", \"arg-type\": \"0\"}, \
             {\"name\": \"STOP\", \"meta-type\": \"event\", \"arg-type\": \"0\"}, \
             {\"name\": \"human-monitor-command\", \"ret-type\": \"str\", \"meta-type\": \"command\", \"arg-type\": \"226\", \"features\": [\"savevm-monitor-nodes\"]}, \
             {\"name\": \"0\", \"members\": [], \"meta-type\": \"object\"}, \
             {\"name\": \"1\", \"members\": [{\"name\": \"running\", \"type\": \"bool\"}, {\"name\": \"singlestep\", \"type\": \"bool\"}, {\"name\": \"status\", \"type\": \"262\"}], \"meta-type\": \"object\"}], \
             \"id\": 5}\r\n"
        );
    }

    #[test]
    fn a_listing_that_keeps_everything_is_unchanged() {
        let everything = policy(false, &[(true, "*")]);
        for (name, text, listing) in [
            (
                "query-commands",
                COMMANDS_REPLY,
                Listing::Commands(everything.clone()),
            ),
            (
                "query-qmp-schema",
                SCHEMA_REPLY,
                Listing::Schema(everything.clone()),
            ),
        ] {
            assert_eq!(
                listing_command(name, Some(listing)).reply(text),
                listing_command(name, None).reply(text),
                "{name}"
            );
        }
        // Errors pass as they are.
        let error = r#"{"id":"libvirt-1","error":{"class":"GenericError","desc":"x"}}"#;
        let listing = Listing::Commands(policy(true, &[]));
        assert_eq!(
            listing_command("query-commands", Some(listing)).reply(error),
            "{\"id\": 5, \"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\r\n"
        );
    }

    #[test]
    fn command_names_are_read_from_query_commands() {
        let names = command_names(COMMANDS_REPLY).unwrap();
        assert_eq!(names.len(), 8);
        assert_eq!(names[0], "device_add");
        assert_eq!(names[7], "qom-list");
        assert!(command_names(r#"{"id":"libvirt-1","error":{}}"#)
            .unwrap_err()
            .starts_with("query-commands answered"));
        assert!(command_names(r#"{"return":[],"id":"libvirt-1"}"#).is_err());
        assert!(command_names("[")
            .unwrap_err()
            .starts_with("query-commands reply is not a JSON object"));
    }

    #[test]
    fn version_is_the_return_member() {
        let version = r#"{"qemu":{"micro":22,"minor":2,"major":7},"package":"x"}"#;
        assert_eq!(
            version_from_reply(&format!(r#"{{"return": {version},"id":"libvirt-1"}}"#)),
            Ok(version.to_owned())
        );
        assert!(version_from_reply(r#"{"id":"libvirt-1","error":{}}"#)
            .unwrap_err()
            .starts_with("query-version answered"));
        assert!(version_from_reply("[]")
            .unwrap_err()
            .starts_with("query-version reply is not a JSON object"));
    }
}
