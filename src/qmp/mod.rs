// SPDX-License-Identifier: LGPL-2.1-or-later
//! The QMP protocol, byte for byte as QEMU 7.2 speaks it, with no I/O: the
//! QObject model (`value`), the input side (lexer, streamer and parser behind
//! [`Stream`]), per-connection request handling and negotiation
//! ([`Session`]), and QEMU's output format (`writer`, and `reprint` for JSON
//! text relayed by libvirt).

#[cfg(test)]
mod corpus_tests;
mod ghash;
mod lexer;
mod parser;
mod reprint;
mod session;
mod stream;
mod unicode;
mod value;
mod writer;

pub use session::{error, Action, Command, Session};
pub use stream::{Parsed, Stream};
pub use value::{Dict, Value};
pub use writer::to_text;

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
    writer::quote_qemu(&mut line, name);
    if let Some(data) = data {
        line.push_str(", \"data\": ");
        push_relayed(&mut line, data, "{}");
    }
    line.push_str("}\r\n");
    line
}

/// Re-prints libvirt's JSON text in QEMU's format, or `fallback` if it is not JSON.
fn push_relayed(line: &mut String, text: &str, fallback: &str) {
    let start = line.len();
    if reprint::reprint_text(line, text).is_err() {
        line.truncate(start);
        line.push_str(fallback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
