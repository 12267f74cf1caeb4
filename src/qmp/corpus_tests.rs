// SPDX-License-Identifier: LGPL-2.1-or-later
//! Replays the recorded conformance corpus (tests/data/qmp-cases.jsonl)
//! through [`Stream`] and [`Session`], with a tiny fake guest standing in
//! for libvirt and QEMU behind it.

use super::{Action, Command, Session, Stream};

#[path = "../../tests/common/corpus.rs"]
#[allow(dead_code)]
mod corpus;

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
            Action::Refused { line, .. } => panic!("refused without a policy: {line}"),
        };
        let line = line
            .strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("reply without CRLF: {line:?}"));
        assert!(!line.contains(['\r', '\n']), "one line per reply");
        lines.push(line.to_string());
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
    for chunk in corpus::chunks(case) {
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

/// Replays every case of the corpus at `path` that the fake guest can
/// answer; returns how many were replayed and how each failure differed.
fn replay_file(path: &str) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for case in corpus::read(path) {
        let name = corpus::name(&case);
        if NEEDS_REAL_GUEST.contains(&name) {
            continue;
        }
        let expected = corpus::expected(&case);
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
    (replayed, failures)
}

/// Every case of the corpus whose answer the proxy gives itself (or that the
/// fake guest can give) must come out byte for byte. `QMP_CASES=path` replays
/// another file in the same format instead (e.g. a fresh recording).
#[test]
fn corpus_cases_replay_locally() {
    let path = std::env::var("QMP_CASES").unwrap_or(corpus::DEFAULT_PATH.to_string());
    let (replayed, failures) = replay_file(&path);
    assert!(
        replayed > 50 || std::env::var("QMP_CASES").is_ok(),
        "corpus replayed only {replayed} cases"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A `#` line is a comment, here as in the replay through the real proxy.
#[test]
fn comment_lines_of_the_corpus_are_skipped() {
    let recorded = std::fs::read_to_string(corpus::DEFAULT_PATH).expect("corpus file");
    let first = recorded
        .lines()
        .find(|line| line.contains(r#""name":"#) && line.contains(r#""input":"#))
        .expect("the corpus has a text case");
    let path = std::env::temp_dir().join(format!("vqmp-corpus-{}.jsonl", std::process::id()));
    std::fs::write(&path, format!("# recorded from QEMU 7.2\n\n{first}\n")).unwrap();
    let (replayed, failures) = replay_file(path.to_str().expect("temp paths are UTF-8"));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(replayed, 1, "{failures:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
