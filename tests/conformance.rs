// SPDX-License-Identifier: LGPL-2.1-or-later
//! Replays the QMP conformance corpus (tests/data/qmp-cases.jsonl, recorded
//! from QEMU's own QMP server) against the proxy in front of a real guest:
//! every case must come back byte for byte.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::corpus::{self, chunks};
use common::{corpus_lines, Guest, Proxy};
use serde_json::Value;

const NEGOTIATE: &[u8] = br#"{"execute": "qmp_capabilities"}"#;

/// Reads everything until `quiet` passes without a byte, or EOF.
fn read_until_quiet(stream: &mut UnixStream, mut buffer: Vec<u8>, quiet: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(quiet)).unwrap();
    let mut chunk = [0u8; 65536];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return buffer,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return buffer,
            Err(_) => return buffer,
        }
    }
}

/// Reads one CRLF-terminated line; returns it and what followed.
fn read_line(stream: &mut UnixStream, mut buffer: Vec<u8>) -> Result<(String, Vec<u8>), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(2).position(|w| w == b"\r\n") {
            let rest = buffer.split_off(end + 2);
            buffer.truncate(end);
            return Ok((String::from_utf8_lossy(&buffer).into_owned(), rest));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no line in time; got {:?}",
                String::from_utf8_lossy(&buffer)
            ));
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("EOF; got {:?}", String::from_utf8_lossy(&buffer))),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

fn run_case(socket: &Path, case: &Value) -> Result<Vec<String>, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    let (_greeting, mut pending) = read_line(&mut stream, Vec::new())?;
    if case["negotiate"].as_bool() == Some(true) {
        stream.write_all(NEGOTIATE).map_err(|e| e.to_string())?;
        let (reply, rest) = read_line(&mut stream, pending)?;
        if reply != r#"{"return": {}}"# {
            return Err(format!("negotiation answered {reply}"));
        }
        pending = rest;
    }
    let delay = Duration::from_millis(case["chunk_delay_ms"].as_u64().unwrap_or(100));
    for (i, chunk) in chunks(case).iter().enumerate() {
        if i > 0 {
            thread::sleep(delay);
        }
        stream.write_all(chunk).map_err(|e| format!("write: {e}"))?;
    }
    if case["shutdown"].as_bool() == Some(true) {
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| e.to_string())?;
    }
    let quiet = Duration::from_millis(case["quiet_ms"].as_u64().unwrap_or(300));
    Ok(corpus_lines(&read_until_quiet(&mut stream, pending, quiet)))
}

#[test]
#[ignore = "needs the libvirt/QEMU test bed: run make check"]
fn corpus_replays_byte_for_byte_through_the_proxy() {
    let guest = Guest::start("conformance");
    let proxy = Proxy::start(guest.uri(), guest.name(), &[]);
    let socket: PathBuf = proxy.socket().to_owned();
    let cases = Arc::new(Mutex::new(corpus::read(corpus::DEFAULT_PATH)));
    let total = cases.lock().unwrap().len();
    assert!(total >= 59, "the corpus lost cases: {total}");
    let failures = Arc::new(Mutex::new(Vec::new()));
    // Cases are independent connections: run them a few at a time.
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (cases, failures, socket) =
                (Arc::clone(&cases), Arc::clone(&failures), socket.clone());
            thread::spawn(move || loop {
                let Some(case) = cases.lock().unwrap().pop() else {
                    return;
                };
                let name = corpus::name(&case).to_owned();
                let expect = corpus::expected(&case);
                match run_case(&socket, &case) {
                    Ok(lines) if lines == expect => {}
                    Ok(lines) => failures.lock().unwrap().push(format!(
                        "{name}:\n  expected {expect:#?}\n  received {lines:#?}"
                    )),
                    Err(e) => failures.lock().unwrap().push(format!("{name}: {e}")),
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {total} cases differ from QEMU:\n{}\nproxy stderr:\n{}",
        failures.len(),
        failures.join("\n"),
        proxy.stderr()
    );
}
