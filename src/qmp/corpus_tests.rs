// SPDX-License-Identifier: LGPL-2.1-or-later
//! Replays the recorded conformance corpus (tests/data/qmp-cases.jsonl)
//! through [`Stream`] and [`Session`], with a tiny fake guest standing in
//! for libvirt and QEMU behind it.

use super::{Action, Command, Session, Stream};

/// Cases whose answers need the real guest's argument checks or device
/// model, which the fake guest does not have.
const NEEDS_REAL_GUEST: &[&str] = &[
    "val-command-bad-argument",
    "val-command-missing-argument",
    "val-device-not-found",
];

/// query-version's `return` as libvirt relays it from the recorded QEMU.
const RECORDED_VERSION: &str =
    r#"{"qemu":{"micro":22,"minor":2,"major":7},"package":"Debian 1:7.2+dfsg-7+deb12u18+b3"}"#;

/// Answers like libvirt relaying QEMU: query-version succeeds, every other
/// command is unknown. The reply carries libvirt's own id.
fn fake_guest(command: &Command) -> String {
    // The command text must be JSON that libvirt can parse, naming the command.
    let request: serde_json::Value =
        serde_json::from_str(&command.json).expect("command JSON for libvirt parses");
    assert_eq!(request["execute"].as_str(), Some(command.name.as_str()));
    assert!(request.get("id").is_none(), "the client's id stays local");
    let no_arguments = request
        .get("arguments")
        .is_none_or(|arguments| arguments.as_object().is_some_and(|a| a.is_empty()));
    if command.name == "query-version" && no_arguments {
        return format!(r#"{{"return":{RECORDED_VERSION},"id":"libvirt-12"}}"#);
    }
    let desc = format!("The command {} has not been found", command.name);
    let desc = serde_json::to_string(&desc).unwrap();
    format!(r#"{{"id":"libvirt-1","error":{{"class":"CommandNotFound","desc":{desc}}}}}"#)
}

/// Feeds one chunk and collects the reply lines (CRLF removed).
fn run_chunk(stream: &mut Stream, session: &mut Session, bytes: &[u8], lines: &mut Vec<String>) {
    let mut items = Vec::new();
    stream.feed(bytes, &mut items);
    for item in items {
        let line = match session.handle(item) {
            Action::Reply(line) => line,
            Action::Execute(command) => command.reply(&fake_guest(&command)),
        };
        let line = line
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("reply without CRLF: {line:?}"));
        assert!(!line.contains(['\r', '\n']), "one line per reply");
        lines.push(line.to_string());
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect()
}

/// The writes of a case, one byte vector per write.
fn case_chunks(case: &serde_json::Value) -> Vec<Vec<u8>> {
    if let Some(input) = case["input"].as_str() {
        vec![input.as_bytes().to_vec()]
    } else if let Some(hex) = case["input_hex"].as_str() {
        vec![hex_bytes(hex)]
    } else {
        case["chunks"]
            .as_array()
            .expect("a case has input, input_hex or chunks")
            .iter()
            .map(|chunk| match chunk.as_str() {
                Some(text) => text.as_bytes().to_vec(),
                None => hex_bytes(chunk["hex"].as_str().expect("hex chunk")),
            })
            .collect()
    }
}

/// Runs one case, returning the reply lines. With `byte_by_byte`, every
/// write is split into single bytes, which must not change anything.
fn replay(case: &serde_json::Value, byte_by_byte: bool) -> Vec<String> {
    let mut stream = Stream::new();
    let mut session = Session::new();
    let mut lines = Vec::new();
    if case["negotiate"].as_bool() == Some(true) {
        run_chunk(
            &mut stream,
            &mut session,
            br#"{"execute": "qmp_capabilities"}"#,
            &mut lines,
        );
        assert_eq!(lines, [r#"{"return": {}}"#]);
        lines.clear();
    }
    for chunk in case_chunks(case) {
        if byte_by_byte {
            for byte in chunk {
                run_chunk(&mut stream, &mut session, &[byte], &mut lines);
            }
        } else {
            run_chunk(&mut stream, &mut session, &chunk, &mut lines);
        }
    }
    // EOF (`shutdown`): the stream is dropped with whatever it still holds.
    lines
}

/// Every case of the corpus whose answer the proxy gives itself (or that the
/// fake guest can give) must come out byte for byte. `QMP_CASES=path` replays
/// another file in the same format instead (e.g. a fresh recording).
#[test]
fn corpus_cases_replay_locally() {
    let default = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/qmp-cases.jsonl");
    let path = std::env::var("QMP_CASES").unwrap_or(default.to_string());
    let corpus = std::fs::read_to_string(path).expect("corpus file");
    let mut failures = Vec::new();
    let mut replayed = 0;
    for line in corpus.lines().filter(|line| !line.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).expect("corpus line is JSON");
        let name = case["name"].as_str().expect("case name");
        if NEEDS_REAL_GUEST.contains(&name) {
            continue;
        }
        let expected: Vec<String> = case["expect"]
            .as_array()
            .expect("expect list")
            .iter()
            .map(|line| line.as_str().expect("expected line").to_string())
            .collect();
        for byte_by_byte in [false, true] {
            let received = replay(&case, byte_by_byte);
            if received != expected {
                let how = if byte_by_byte {
                    " (fed byte by byte)"
                } else {
                    ""
                };
                failures.push(format!(
                    "case '{name}' failed{how}\n  expected: {expected:#?}\n  received: {received:#?}"
                ));
            }
        }
        replayed += 1;
    }
    assert!(
        replayed > 50 || std::env::var("QMP_CASES").is_ok(),
        "corpus replayed only {replayed} cases"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
