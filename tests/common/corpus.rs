// SPDX-License-Identifier: LGPL-2.1-or-later
//! The one reader of the QMP conformance corpus (tests/data/qmp-cases.jsonl,
//! recorded from QEMU's own QMP server), for the replay through the real
//! proxy (tests/conformance.rs) and the local one (src/qmp/corpus_tests.rs,
//! which includes this file with `#[path]`, so it uses std and serde_json only).
//!
//! The format: one JSON object per line; blank lines and lines starting with
//! `#` are comments. A case has a `name`, exactly one of `input` (text),
//! `input_hex` (bytes) or `chunks` (writes, each text or `{"hex": …}`), the
//! `expect`ed lines, and optionally `negotiate`, `shutdown`, `chunk_delay_ms`,
//! `quiet_ms` and a `note`.

use serde_json::Value;

/// The corpus of this source tree.
pub const DEFAULT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/qmp-cases.jsonl");

/// Reads the cases of the corpus at `path`; panics on a malformed line.
pub fn read(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the corpus {path}: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad corpus line ({e}): {line}"))
        })
        .collect()
}

/// The case's name.
pub fn name(case: &Value) -> &str {
    case["name"].as_str().expect("a case has a name")
}

/// The lines the case expects, without their CRLF.
pub fn expected(case: &Value) -> Vec<String> {
    case["expect"]
        .as_array()
        .unwrap_or_else(|| panic!("case {} has no expect list", name(case)))
        .iter()
        .map(|line| line.as_str().expect("an expected line is text").to_owned())
        .collect()
}

/// The writes of a case, one byte vector per write.
pub fn chunks(case: &Value) -> Vec<Vec<u8>> {
    let given = ["input", "input_hex", "chunks"]
        .iter()
        .filter(|key| case.get(**key).is_some())
        .count();
    assert_eq!(
        given,
        1,
        "case {} needs exactly one of input, input_hex and chunks",
        name(case)
    );
    if let Some(input) = case["input"].as_str() {
        vec![input.as_bytes().to_vec()]
    } else if let Some(hex) = case["input_hex"].as_str() {
        vec![decode_hex(hex)]
    } else {
        case["chunks"]
            .as_array()
            .expect("chunks is a list")
            .iter()
            .map(|chunk| match chunk.as_str() {
                Some(text) => text.as_bytes().to_vec(),
                None => decode_hex(chunk["hex"].as_str().expect("a chunk is text or {hex}")),
            })
            .collect()
    }
}

fn decode_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex in the corpus: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex in the corpus"))
        .collect()
}
