// SPDX-License-Identifier: LGPL-2.1-or-later
//! The limit (l): a minimal QMP stand-in with no libvirt behind it, so that
//! the table shows what the machine alone costs. It runs as a child process
//! of the bench driver (`proxy standin --reply-bytes N -c URI DOMAIN
//! SOCKET`, the proxy's own arguments, which it ignores but the socket), so
//! that a round trip crosses processes as one to the proxy does.
//!
//! One thread per client reads its lines, as the proxy's clients have. It
//! greets, answers `qmp_capabilities` with `{"return": {}}` and:
//!
//! - `stop` or `cont`: writes STOP or RESUME to every connected client,
//!   from the caller's thread, then `{"return": {}}` (figure 4's broadcaster);
//! - `query-status`, when started with `--relay`: query-status through
//!   the plain libvirt call of (a) (no event loop, no keepalive), and
//!   libvirt's reply (figure 1's relay: the hop in front of a plain
//!   call, the least any proxy can add);
//! - anything else: a `{"return"` line of N bytes, the size of the proxy's
//!   query-status reply (figure 1's bare socket hop).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::thread;

use virt::connect::Connect;
use virt::domain::Domain;

const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 0}, \"package\": \"\"}, \"capabilities\": []}}\r\n";
const EMPTY: &[u8] = b"{\"return\": {}}\r\n";
const STOP: &[u8] =
    b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 1}, \"event\": \"STOP\"}\r\n";
const RESUME: &[u8] =
    b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 1}, \"event\": \"RESUME\"}\r\n";

/// What `--relay` passes on, as (a) calls it.
const QUERY_STATUS: &str = r#"{"execute":"query-status"}"#;

/// Every connected client, by a number of its own, for the broadcasts.
type Clients = Arc<Mutex<Vec<(u64, UnixStream)>>>;

/// The guest of `--relay`, reached as (a) reaches it; calls are
/// serialised, as the proxy's are.
type Relay = Option<Arc<Mutex<(Connect, Domain)>>>;

/// Runs the stand-in (the `standin` subcommand); never returns.
pub fn child_main(args: impl Iterator<Item = String>) -> ! {
    let mut reply_bytes = 0;
    let mut relay = false;
    let mut uri = None;
    let mut positional = Vec::new();
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reply-bytes" => reply_bytes = args.next().and_then(|n| n.parse().ok()).unwrap_or(0),
            "--relay" => relay = true,
            "-c" => uri = args.next(),
            _ => positional.push(arg),
        }
    }
    let (Some(socket), Some(domain)) = (positional.last(), positional.iter().rev().nth(1)) else {
        eprintln!("standin: no domain and socket given");
        std::process::exit(2);
    };
    // No event implementation is registered in this process: the plain call.
    let relay: Relay = if relay {
        let opened = Connect::open(uri.as_deref()).and_then(|connection| {
            let domain = connection.lookup_domain_by_name(domain)?;
            Ok((connection, domain))
        });
        match opened {
            Ok(guest) => Some(Arc::new(Mutex::new(guest))),
            Err(e) => {
                eprintln!("standin: cannot reach domain {domain}: {}", e.message());
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    let listener = match UnixListener::bind(socket) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("standin: cannot listen on {socket}: {e}");
            std::process::exit(1);
        }
    };
    let reply = Arc::new(padded_reply(reply_bytes));
    let clients: Clients = Arc::default();
    for (number, stream) in (0u64..).zip(listener.incoming()) {
        let Ok(stream) = stream else { continue };
        let (clients, reply, relay) = (Arc::clone(&clients), Arc::clone(&reply), relay.clone());
        let spawned = thread::Builder::new()
            .name(format!("client-{number}"))
            .spawn(move || serve(number, stream, &clients, &reply, &relay));
        if let Err(e) = spawned {
            eprintln!("standin: cannot start a client thread: {e}");
        }
    }
    std::process::exit(0)
}

/// `{"return": {}, "pad": "xxx…"}` CRLF, `bytes` long (CRLF included) where
/// that is at least the shortest such line.
fn padded_reply(bytes: usize) -> Vec<u8> {
    let head = b"{\"return\": {}, \"pad\": \"";
    let tail = b"\"}\r\n";
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let mut line = head.to_vec();
    line.resize(head.len() + pad, b'x');
    line.extend_from_slice(tail);
    line
}

fn serve(number: u64, stream: UnixStream, clients: &Clients, reply: &[u8], relay: &Relay) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    if writer.write_all(GREETING).is_err() {
        return;
    }
    if let Ok(shared) = stream.try_clone() {
        lock(clients).push((number, shared));
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let event = if contains(&line, b"\"stop\"") {
            Some(STOP)
        } else if contains(&line, b"\"cont\"") {
            Some(RESUME)
        } else {
            None
        };
        let relayed;
        let answer = match event {
            None if relay.is_some() && contains(&line, b"\"query-status\"") => {
                let guest = relay.as_ref().expect("just checked");
                // libvirt refuses an id of the caller's; the bench's client
                // does not check it.
                let text = match lock(guest).1.qemu_monitor_command(QUERY_STATUS, 0) {
                    Ok(text) => text,
                    Err(e) => format!("{{\"error\": {{\"desc\": {:?}}}}}", e.message()),
                };
                relayed = format!("{text}\r\n");
                relayed.as_bytes()
            }
            Some(event) => {
                for (_, client) in lock(clients).iter_mut() {
                    // A client going away is not this caller's failure.
                    let _ = client.write_all(event);
                }
                EMPTY
            }
            None if contains(&line, b"qmp_capabilities") => EMPTY,
            None => reply,
        };
        if writer.write_all(answer).is_err() {
            break;
        }
    }
    lock(clients).retain(|(n, _)| *n != number);
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
