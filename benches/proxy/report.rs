// SPDX-License-Identifier: LGPL-2.1-or-later
//! The Markdown report: the machine and set-up, one table row per figure
//! with the subjects side by side, each goal and whether it was met, and a
//! closing line listing the goals missed. Every number comes from the run;
//! where a subject cannot do a measurement the cell says why.

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use crate::client::Delivery;
use crate::floor::Info;
use crate::stats::{median, percentile};
use crate::{binary, Bed, Mode, Plan, Results, Who, SUBJECTS};

const MIB: f64 = 1024.0 * 1024.0;
const ONE_CLIENT: &str = "n/a: serves one client at a time";
const NO_FANOUT: &str = "n/a: no socket, no clients";
const NO_GUEST: &str = "n/a: no guest behind it";
const DASH: &str = "—";

/// What the proxy may add to a plain libvirt call beyond the socket hop, µs.
const HOP_ALLOWANCE: f64 = 30.0;

/// A goal and whether it was met (None: could not be judged).
struct Goal {
    text: String,
    met: Option<bool>,
}

struct Row {
    figure: u32,
    what: String,
    cells: [String; SUBJECTS],
    goal: Option<Goal>,
}

pub fn render(bed: &Bed, plan: &Plan, info: &Info, results: &Results, took: Duration) -> String {
    let mut rows = Vec::new();
    let unavailable = |figure: u32, who: Who| -> String {
        results
            .skipped
            .iter()
            .find(|(f, w, _)| *f == figure && *w == who)
            .map(|(_, _, why)| format!("n/a: {why}"))
            .unwrap_or_else(|| "not run".to_owned())
    };
    let cell = |figure: u32, who: Who, value: Option<String>| {
        value.unwrap_or_else(|| unavailable(figure, who))
    };
    let floor = Who::Floor.index();

    // 1. Sequential round trip; (l) is the bare socket hop.
    if plan.figures.contains(&1) {
        let medians = results.seq.each_ref().map(|s| nonempty(s).map(median));
        let p99s = results
            .seq
            .each_ref()
            .map(|s| nonempty(s).map(|s| percentile(s, 99.0)));
        let guests = |value: &dyn Fn(Who) -> Option<String>| {
            Who::ALL.map(|who| match who {
                Who::Limit => format!("{NO_GUEST}; the hop below"),
                _ => cell(1, who, value(who)),
            })
        };
        rows.push(Row {
            figure: 1,
            what: format!(
                "query-status, 1 client, {} calls in a row: median µs",
                results.seq[Who::Proxy.index()].len()
            ),
            cells: guests(&|who| {
                medians[who.index()].map(|m| with_ratio(format!("{m:.0}"), m, medians[floor], who))
            }),
            goal: None,
        });
        rows.push(Row {
            figure: 1,
            what: "the same: p99 µs".into(),
            cells: guests(&|who| p99s[who.index()].map(|p| format!("{p:.0}"))),
            goal: None,
        });
        let hop = medians[Who::Limit.index()];
        rows.push(Row {
            figure: 1,
            what: format!(
                "bare socket hop: a line answered with a reply-sized line ({} bytes, as (b)'s query-status reply) by the stand-in, same client as (b): median / p99 µs",
                results.status_bytes
            ),
            cells: Who::ALL.map(|who| match who {
                Who::Limit => cell(
                    1,
                    who,
                    hop.map(|m| format!("{m:.0} / {:.0}", p99s[who.index()].unwrap_or(f64::NAN))),
                ),
                _ => DASH.to_owned(),
            }),
            goal: None,
        });
        if let Some(relay) = nonempty(&results.relay) {
            let (m, p) = (median(relay), percentile(relay, 99.0));
            let over =
                medians[floor].map_or(String::new(), |a| format!("; {:+.0} over (a)", m - a));
            rows.push(Row {
                figure: 1,
                what: "relay: the same client's query-status passed on by the stand-in, one thread per client making (a)'s plain call for each line (the hop in front of a plain call: the least a proxy can add): median / p99 µs".into(),
                cells: Who::ALL.map(|who| match who {
                    Who::Limit => format!("{m:.0} / {p:.0}{over}"),
                    _ => DASH.to_owned(),
                }),
                goal: None,
            });
        }
        let added = |who: Who| match (medians[who.index()], medians[floor]) {
            (Some(m), Some(a)) => Some(m - a),
            _ => None,
        };
        let allowed = hop.map(|h| h + HOP_ALLOWANCE);
        rows.push(Row {
            figure: 1,
            what: "what each adds to (a): median − (a)'s median, µs; (l): the hop + 30 µs allowed to (b)"
                .into(),
            cells: Who::ALL.map(|who| match who {
                Who::Floor => DASH.to_owned(),
                Who::Limit => cell(1, who, allowed.map(|a| format!("{a:.0} allowed"))),
                _ => cell(1, who, added(who).map(|d| format!("{d:+.0}"))),
            }),
            goal: Some(Goal {
                text: "(b) − (a) ≤ hop + 30 µs".into(),
                met: match (added(Who::Proxy), allowed) {
                    (Some(d), Some(a)) => Some(d <= a),
                    _ => None,
                },
            }),
        });
    }

    // 2. Aggregate rate. Ratios are taken round by round against (a)'s
    // single caller of the same round, then their median.
    if plan.figures.contains(&2) {
        let single: &[f64] = results
            .rates
            .iter()
            .find(|(n, _)| *n == 1)
            .map_or(&[], |(_, rates)| rates[floor].as_slice());
        let paired = |rates: &[f64]| -> Option<f64> {
            let ratios: Vec<f64> = rates.iter().zip(single).map(|(r, a)| r / a).collect();
            nonempty(&ratios).map(median)
        };
        for (clients, rates) in &results.rates {
            let cells = Who::ALL.map(|who| {
                let mine = &rates[who.index()];
                let relay = if who == Who::Limit { "relay: " } else { "" };
                match nonempty(mine).map(median) {
                    Some(rate) => match paired(mine) {
                        Some(ratio) => format!("{relay}{rate:.0} (×{ratio:.2})"),
                        None => format!("{relay}{rate:.0}"),
                    },
                    None if who == Who::Original && *clients > 1 && bed.original.is_some() => {
                        ONE_CLIENT.to_owned()
                    }
                    None if who == Who::Limit => NO_GUEST.to_owned(),
                    None => unavailable(2, who),
                }
            });
            let goal = (*clients >= 16).then(|| Goal {
                text: "(b) ≥ 0.98 × (a) with 1 caller".into(),
                met: paired(&rates[Who::Proxy.index()]).map(|r| r >= 0.98),
            });
            let what = if *clients == 1 {
                "query-status, 1 client: calls/s (× (a) with 1 caller, same round)".to_owned()
            } else {
                format!(
                    "query-status, {clients} clients at once: calls/s (× (a) with 1 caller, same round); (a), (a′): {clients} threads on one connection"
                )
            };
            rows.push(Row {
                figure: 2,
                what,
                cells,
                goal,
            });
        }
    }

    // 3. A large reply.
    if plan.figures.contains(&3) {
        let medians = results
            .schema
            .each_ref()
            .map(|s| nonempty(s).map(|s| median(s) / 1e3));
        rows.push(Row {
            figure: 3,
            what: format!(
                "query-qmp-schema ({} KB reply from (b)), {} calls: median ms",
                results.schema_bytes / 1000,
                results.schema[Who::Proxy.index()].len()
            ),
            cells: Who::ALL.map(|who| match who {
                Who::Limit => NO_GUEST.to_owned(),
                _ => cell(
                    3,
                    who,
                    medians[who.index()]
                        .map(|m| with_ratio(format!("{m:.1}"), m, medians[floor], who)),
                ),
            }),
            goal: Some(Goal {
                text: "(b)/(a) ≤ 1.10".into(),
                met: ratio_of(medians[Who::Proxy.index()], medians[floor]).map(|r| r <= 1.10),
            }),
        });
    }

    // 4. Event fan-out; (l) is the stand-in broadcasting the same line.
    if plan.figures.contains(&4) {
        for clients in [1, plan.fanout_clients] {
            let find = |who: Who| {
                results
                    .fanout
                    .iter()
                    .find(|(w, n, d)| *w == who && *n == clients && !d.is_empty())
                    .map(|(_, _, d)| d.as_slice())
            };
            let fanout_cell = |who: Who, value: &dyn Fn(&[Delivery]) -> String| match who {
                Who::Floor | Who::FloorLoop => NO_FANOUT.to_owned(),
                Who::Original if clients > 1 && bed.original.is_some() => ONE_CLIENT.to_owned(),
                _ => find(who).map(value).unwrap_or_else(|| unavailable(4, who)),
            };
            let spreads = |d: &[Delivery]| d.iter().map(|d| d.spread).collect::<Vec<f64>>();
            let spread = |d: &[Delivery]| {
                let s = spreads(d);
                format!("{:.0} / {:.0}", percentile(&s, 50.0), percentile(&s, 99.0))
            };
            let latency = |d: &[Delivery]| {
                let s: Vec<f64> = d.iter().map(|d| d.latency / 1e3).collect();
                format!("{:.2} / {:.2}", percentile(&s, 50.0), percentile(&s, 99.0))
            };
            let p99 = |who: Who| find(who).map(|d| percentile(&spreads(d), 99.0));
            let count = find(Who::Proxy).map_or(0, <[Delivery]>::len);
            let plural = if clients == 1 { "" } else { "s" };
            rows.push(Row {
                figure: 4,
                what: format!(
                    "STOP to {clients} negotiated client{plural} ({count} stop/cont): first-to-last client spread, p50 / p99 µs"
                ),
                cells: Who::ALL.map(|who| fanout_cell(who, &spread)),
                goal: (clients > 1).then(|| Goal {
                    text: "(b) p99 ≤ 1.25 × (l) p99".into(),
                    met: match (p99(Who::Proxy), p99(Who::Limit)) {
                        (Some(b), Some(l)) => Some(b <= 1.25 * l),
                        _ => None,
                    },
                }),
            });
            rows.push(Row {
                figure: 4,
                what: "the same: `stop` sent to STOP at the last client, p50 / p99 ms".into(),
                cells: Who::ALL.map(|who| fanout_cell(who, &latency)),
                goal: None,
            });
        }
    }

    // 9. Event order, next to the fan-out.
    if plan.figures.contains(&9) {
        let proxy = results.order[Who::Proxy.index()];
        for (event, command) in [("STOP", "stop"), ("RESUME", "cont")] {
            let first = |o: &crate::Order| {
                if event == "STOP" {
                    o.stop_first
                } else {
                    o.resume_first
                }
            };
            rows.push(Row {
                figure: 9,
                what: format!(
                    "{event} before `{command}`'s reply, of the tries ({} `stop` then `cont` each); (a′): {event}'s callback had run when virDomainQemuMonitorCommand returned",
                    proxy.tries
                ),
                cells: Who::ALL.map(|who| {
                    let o = &results.order[who.index()];
                    match who {
                        Who::Floor if bed.mode == Mode::System => {
                            "n/a: no event loop, hence no events".to_owned()
                        }
                        Who::Limit => NO_GUEST.to_owned(),
                        _ if o.tries == 0 => unavailable(9, who),
                        _ => format!("{} of {}", first(o), o.tries),
                    }
                }),
                // With the embedded driver there is no wire: every try.
                goal: (bed.mode == Mode::Embed).then(|| Goal {
                    text: "(b) every try, where the wire order allows it".into(),
                    met: (proxy.tries > 0).then(|| first(&proxy) == proxy.tries),
                }),
            });
        }
        if let Some(traced) = &results.traced {
            for (slot, (event, command)) in [("STOP", "stop"), ("RESUME", "cont")]
                .into_iter()
                .enumerate()
            {
                let (text, met) = match traced {
                    Ok(t) => (
                        format!(
                            "{} of {} (the wire had {event} after the reply in the other {}{})",
                            t.delivered_first[slot],
                            t.wire_first[slot],
                            t.tries - t.wire_first[slot],
                            match t.ahead_of_wire[slot] {
                                0 => String::new(),
                                n => format!("; {n} delivered first nonetheless"),
                            }
                        ),
                        Some(t.delivered_first[slot] == t.wire_first[slot]),
                    ),
                    Err(why) => (format!("not run: {why}"), None),
                };
                rows.push(Row {
                    figure: 9,
                    what: format!(
                        "traced run: {event} before `{command}`'s reply, of the tries where libvirt's client received {event} first ({} tries through a proxy of their own with libvirt's log of received messages on: rpc.netclient's RPC_CLIENT_MSG_RX)",
                        traced.as_ref().map_or(0, |t| t.tries)
                    ),
                    cells: Who::ALL.map(|who| match who {
                        Who::Proxy => text.clone(),
                        _ => DASH.to_owned(),
                    }),
                    goal: Some(Goal {
                        text: "(b) every try, where the wire order allows it".into(),
                        met,
                    }),
                });
            }
        }
    }

    // 5. Private memory.
    if plan.figures.contains(&5) {
        let m = &results.memory;
        let mib = |bytes: Option<u64>| bytes.map(|b| format!("{:.2}", b as f64 / MIB));
        let alone = |slot: usize, who: Who| {
            mib(m.floor_idle[slot])
                .map(|v| format!("{v} (libvirt client alone)"))
                .unwrap_or_else(|| unavailable(5, who))
        };
        let one_client = || {
            if bed.original.is_some() {
                ONE_CLIENT.to_owned()
            } else {
                unavailable(5, Who::Original)
            }
        };
        rows.push(Row {
            figure: 5,
            what: "private memory (Private_Clean + Private_Dirty), idle: MiB".into(),
            cells: [
                alone(0, Who::Floor),
                alone(1, Who::FloorLoop),
                cell(5, Who::Proxy, mib(m.proxy_idle)),
                cell(5, Who::Original, mib(m.original_idle)),
                DASH.to_owned(),
            ],
            goal: Some(Goal {
                text: "(b) ≤ 3 MiB".into(),
                met: m.proxy_idle.map(|b| b as f64 <= 3.0 * MIB),
            }),
        });
        rows.push(Row {
            figure: 5,
            what: format!(
                "the same, {} negotiated clients connected",
                plan.memory_clients
            ),
            cells: [
                NO_FANOUT.to_owned(),
                NO_FANOUT.to_owned(),
                cell(5, Who::Proxy, mib(m.proxy_clients)),
                one_client(),
                DASH.to_owned(),
            ],
            goal: Some(Goal {
                text: "(b) ≤ 6 MiB".into(),
                met: m.proxy_clients.map(|b| b as f64 <= 6.0 * MIB),
            }),
        });
        let count = |reading: Option<(u64, usize)>| reading.map_or(0, |(_, done)| done);
        rows.push(Row {
            figure: 5,
            what: format!(
                "the same, no client, after {} commands (b: 16 clients at a time; c: 1{})",
                thousands(count(m.proxy_checkpoint)),
                match count(m.original_after) {
                    done if done == count(m.proxy_checkpoint) => String::new(),
                    done => format!(", {} commands", thousands(done)),
                }
            ),
            cells: [
                "n/a".to_owned(),
                "n/a".to_owned(),
                cell(
                    5,
                    Who::Proxy,
                    mib(m.proxy_checkpoint.map(|(bytes, _)| bytes)),
                ),
                cell(
                    5,
                    Who::Original,
                    mib(m.original_after.map(|(bytes, _)| bytes)),
                ),
                DASH.to_owned(),
            ],
            goal: None,
        });
        let after = m.proxy_after.map(|(bytes, _)| bytes);
        let growth = match (after, m.proxy_idle) {
            (Some(after), Some(idle)) => Some((after as f64 - idle as f64) / MIB),
            _ => None,
        };
        let since_checkpoint = match (after, m.proxy_checkpoint) {
            (Some(after), Some((checkpoint, _))) => (after as f64 - checkpoint as f64) / MIB,
            _ => f64::NAN,
        };
        let done = count(m.proxy_after);
        let capped = if done < plan.memory_commands {
            format!(
                " (time cap of {} s reached before {})",
                plan.memory_time_cap.as_secs(),
                thousands(plan.memory_commands)
            )
        } else {
            String::new()
        };
        rows.push(Row {
            figure: 5,
            what: format!(
                "the same, after {} commands{capped} in batches of 16 clients: MiB (growth over idle; over the reading above)",
                thousands(done)
            ),
            cells: [
                "n/a".to_owned(),
                "n/a".to_owned(),
                cell(
                    5,
                    Who::Proxy,
                    mib(after).map(|v| {
                        format!(
                            "{v} ({:+.2}; {since_checkpoint:+.2})",
                            growth.unwrap_or(f64::NAN)
                        )
                    }),
                ),
                if bed.original.is_some() {
                    "not run: one client at a time takes too long".to_owned()
                } else {
                    unavailable(5, Who::Original)
                },
                DASH.to_owned(),
            ],
            goal: Some(Goal {
                text: "(b) growth over idle ≤ 0.5 MiB".into(),
                met: growth.map(|g| g <= 0.5),
            }),
        });
    }

    // 6. Start-up: the floors' exec to exit against the servers' exec to
    // greeting, so that both sides pay the dynamic loader.
    if plan.figures.contains(&6) {
        let medians = results.startup.each_ref().map(|s| nonempty(s).map(median));
        let inside = results
            .startup_inside
            .each_ref()
            .map(|s| nonempty(s).map(median));
        let floor_cell = |who: Who, slot: usize| {
            cell(
                6,
                who,
                medians[who.index()].map(|m| {
                    format!(
                        "{m:.1} (open + lookup + query-version inside: {:.1})",
                        inside[slot].unwrap_or(f64::NAN)
                    )
                }),
            )
        };
        rows.push(Row {
            figure: 6,
            what: format!(
                "start-up, median of {} fresh processes, ms: (a), (a′) exec to exit of open + lookup + query-version; (b), (c) exec to greeting on the socket",
                results.startup[Who::Proxy.index()].len()
            ),
            cells: [
                floor_cell(Who::Floor, 0),
                floor_cell(Who::FloorLoop, 1),
                cell(
                    6,
                    Who::Proxy,
                    medians[Who::Proxy.index()].map(|m| match medians[floor] {
                        Some(a) => format!("{m:.1} ((a) {:+.1})", m - a),
                        None => format!("{m:.1}"),
                    }),
                ),
                cell(
                    6,
                    Who::Original,
                    medians[Who::Original.index()].map(|m| format!("{m:.1}")),
                ),
                DASH.to_owned(),
            ],
            goal: Some(Goal {
                text: "(b) ≤ (a) + 5 ms".into(),
                met: match (medians[Who::Proxy.index()], medians[floor]) {
                    (Some(b), Some(a)) => Some(b <= a + 5.0),
                    _ => None,
                },
            }),
        });
    }

    // 7. Footprint.
    if plan.figures.contains(&7) {
        let proxy = match binary(std::path::Path::new(&bed.proxy.argv[0])) {
            Ok(b) => {
                let total: u64 = b.libraries.iter().map(|(_, size)| size).sum();
                format!(
                    "{:.2} MiB; {} shared libraries (ldd), {:.1} MiB",
                    b.bytes as f64 / MIB,
                    b.libraries.len(),
                    total as f64 / MIB
                )
            }
            Err(e) => format!("unknown: {e}"),
        };
        let original = match &bed.original {
            Some(program) => {
                let script = fs::metadata(&program.argv[1]).map(|m| m.len()).unwrap_or(0);
                let python = fs::metadata(&program.argv[0]).map(|m| m.len()).unwrap_or(0);
                format!(
                    "{:.0} KB script, run by {} ({:.1} MiB) with python3-libvirt",
                    script as f64 / 1e3,
                    program_name(&program.argv[0]),
                    python as f64 / MIB
                )
            }
            None => unavailable(7, Who::Original),
        };
        rows.push(Row {
            figure: 7,
            what: "release binary; its shared libraries".into(),
            cells: [
                "n/a (part of the bench)".into(),
                "n/a (part of the bench)".into(),
                proxy,
                original,
                DASH.to_owned(),
            ],
            goal: None,
        });
        let m = &results.memory;
        let per_client = match (m.proxy_threads_clients, m.proxy_threads_idle) {
            (Some(with), Some(idle)) => Some(format!(
                "{:.2} per client ({idle} idle, {with} with {} clients)",
                (with as f64 - idle as f64) / plan.memory_clients as f64,
                plan.memory_clients
            )),
            _ => None,
        };
        rows.push(Row {
            figure: 7,
            what: "threads".into(),
            cells: [
                "n/a".into(),
                "n/a".into(),
                cell(7, Who::Proxy, per_client),
                cell(
                    7,
                    Who::Original,
                    m.original_threads
                        .map(|t| format!("{t} in all; one client at a time")),
                ),
                "1 per client, and 1 accepting".into(),
            ],
            goal: None,
        });
    }

    // 8. One huge command in hand.
    if let Some(huge) = &results.huge {
        let (qemu, proxy) = (&huge.qemu, &huge.proxy);
        let size = huge.bytes as f64;
        let cost = |reading: &Result<crate::huge::Peak, String>| match reading {
            Ok(peak) => format!(
                "{:.0} MiB ({:.0} idle, +{:.0}: ×{:.2} the message); answer: {}",
                peak.peak as f64 / MIB,
                peak.idle as f64 / MIB,
                peak.peak.saturating_sub(peak.idle) as f64 / MIB,
                peak.peak.saturating_sub(peak.idle) as f64 / size,
                short(&peak.answer)
            ),
            Err(e) => format!("not measured: {e}"),
        };
        let growth = |reading: &Result<crate::huge::Peak, String>| {
            reading
                .as_ref()
                .ok()
                .map(|peak| peak.peak.saturating_sub(peak.idle) as f64)
        };
        rows.push(Row {
            figure: 8,
            what: format!(
                "one valid {:.0} MiB command (a list of {} strings) in hand: peak private memory; (a): QEMU 7.2's own QMP server, no libvirt",
                size / MIB,
                thousands(plan.huge_strings)
            ),
            cells: [
                cost(qemu),
                DASH.to_owned(),
                cost(proxy),
                "not run".to_owned(),
                DASH.to_owned(),
            ],
            goal: Some(Goal {
                text: "(b)'s rise ≤ QEMU's or 2 × the message, whichever is larger".into(),
                met: match (growth(proxy), growth(qemu)) {
                    (Some(b), Some(a)) => Some(b <= a.max(2.0 * size)),
                    (Some(b), None) => Some(b <= 2.0 * size),
                    _ => None,
                },
            }),
        });
    }

    let mut out = String::new();
    header(&mut out, bed, plan, info, took, &results.load);
    let _ = writeln!(
        out,
        "| # | measurement | (a) floor: plain call | (a′) floor: event loop + keepalive | (b) this proxy | (c) original | (l) limit: stand-in | goal | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let (goal, met) = match &row.goal {
            Some(goal) => (
                goal.text.clone(),
                match goal.met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "**NO**".to_owned(),
                    None => "not measured".to_owned(),
                },
            ),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.figure,
            row.what,
            row.cells[0],
            row.cells[1],
            row.cells[2],
            row.cells[3],
            row.cells[4],
            goal,
            met
        );
    }
    let goals: Vec<&Row> = rows.iter().filter(|row| row.goal.is_some()).collect();
    let met = goals
        .iter()
        .filter(|row| row.goal.as_ref().and_then(|g| g.met) == Some(true))
        .count();
    let _ = writeln!(out);
    let _ = write!(out, "Goals met: {met} of {}.", goals.len());
    let missed: Vec<String> = goals
        .iter()
        .filter(|row| row.goal.as_ref().and_then(|g| g.met) != Some(true))
        .map(|row| {
            format!(
                "{} ({})",
                row.figure,
                row.goal.as_ref().map_or("", |g| g.text.as_str())
            )
        })
        .collect();
    if !missed.is_empty() {
        let _ = write!(out, " Missed or not measured: {}.", missed.join("; "));
    }
    let _ = writeln!(out);
    out
}

fn header(
    out: &mut String,
    bed: &Bed,
    plan: &Plan,
    info: &Info,
    took: Duration,
    load: &(String, String),
) {
    let _ = writeln!(out, "## virt-qemu-qmp-proxy benchmark\n");
    let _ = writeln!(out, "- date: {}", crate::stats::utc_now());
    let _ = writeln!(
        out,
        "- machine: {}; 1-minute load average {} at the start, {} at the end",
        machine(),
        load.0,
        load.1
    );
    let _ = writeln!(
        out,
        "- libvirt {} (daemon side {}), QEMU {} ({}; libvirt reports {})",
        info.library, info.daemon, info.qemu, info.qemu_package, info.hypervisor
    );
    // The URI's query names a socket or a folder of this machine.
    let uri = info.uri.split('?').next().unwrap_or_default();
    let connection = match bed.mode {
        Mode::System => format!(
            "qemu:///system, from a private libvirtd that the bench started ({uri})"
        ),
        Mode::Embed => format!(
            "qemu:///embed, the embedded driver (no daemon; each subject holds the guest's root in turn): {uri}"
        ),
    };
    let _ = writeln!(out, "- libvirt connection: {connection}");
    for note in &bed.notes {
        let _ = writeln!(out, "- note: {note}");
    }
    let _ = writeln!(
        out,
        "- guest: '{}', 1 vCPU, 64 MiB, plain emulation (TCG), idle",
        bed.domain
    );
    let _ = writeln!(
        out,
        "- (a) floor: virDomainQemuMonitorCommand called in-process by benches/proxy, plain: no event implementation registered, no keepalive (what a program calling libvirt directly pays); a process of its own, since registering one is process-wide and permanent"
    );
    let _ = writeln!(
        out,
        "- (a′) the same with libvirt's default event loop registered and running and keepalive on, as the proxy sets itself up; another process"
    );
    let _ = writeln!(
        out,
        "- (b) this proxy: {} {}, driven over its socket by benches/proxy (one thread and one connection per client)",
        program_name(&bed.proxy.argv[0]),
        proxy_version(&bed.proxy.argv[0])
    );
    match (&bed.original, &bed.original_missing) {
        (Some(program), _) => {
            let _ = writeln!(
                out,
                "- (c) original: libvirt's {} run by {}, driven like (b)",
                program_name(&program.argv[1]),
                python_version(&program.argv[0])
            );
        }
        (None, why) => {
            let _ = writeln!(
                out,
                "- (c) original: cannot run: {}",
                why.as_deref().unwrap_or("unknown")
            );
        }
    }
    let _ = writeln!(
        out,
        "- (l) limit: a stand-in server of the bench's, one thread per client reading as (b) has, \
         driven like (b): it answers each line with a line the size of (b)'s query-status reply (figure 1's bare socket hop), \
         with a daemon passes query-status on through (a)'s plain call (figure 1's relay) \
         and, for `stop` and `cont`, writes STOP or RESUME to every client from the caller's thread (figure 4's broadcaster)"
    );
    let _ = writeln!(
        out,
        "- method: {} rounds; in each, figures 1 to 4 and 9 run the subjects in turn, a different one first each round \
         ({}); figures 1, 3, 4 and 9 pool every sample; figure 2 runs {} ms windows and takes medians over the rounds, \
         its ratios paired with (a)'s single caller of the same round; figures 5 to 8 use fresh processes after \
         the rounds; the whole run took {:.0} s",
        plan.rounds,
        match bed.mode {
            Mode::System => format!(
                "figure 1 in turns of {} calls, figure 3 of 1 call",
                plan.seq_block
            ),
            Mode::Embed => "one turn per subject and figure: a turn restarts a process".to_owned(),
        },
        plan.rate_window.as_millis(),
        took.as_secs_f64()
    );
    let _ = writeln!(out, "- ratios (×) are to (a); µs = microseconds\n");
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .and_then(|rest| rest.split_once(':'))
        })
        .map_or("unknown CPU", |(_, model)| model.trim())
        .to_owned();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB", kib / 1024.0 / 1024.0)
        });
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({model}){memory}, Linux {}", kernel.trim())
}

/// The file name of a program: the table carries no path of the machine.
fn program_name(path: &str) -> String {
    std::path::Path::new(path).file_name().map_or_else(
        || path.to_owned(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// "python3 (Python 3.11.2)", from `--version`.
fn python_version(program: &str) -> String {
    let version = std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_default();
    if version.is_empty() {
        program_name(program)
    } else {
        format!("{} ({version})", program_name(program))
    }
}

fn proxy_version(program: &str) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_default()
}

/// The start of an answer, for a table cell.
fn short(answer: &str) -> String {
    let cut: String = answer.chars().take(90).collect();
    let cut = cut.replace('|', "\\|");
    if cut.len() < answer.len() {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

fn nonempty(samples: &[f64]) -> Option<&[f64]> {
    (!samples.is_empty()).then_some(samples)
}

fn ratio_of(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(value), Some(base)) if base > 0.0 => Some(value / base),
        _ => None,
    }
}

/// `text` followed by its ratio to the floor, except for the floor itself.
fn with_ratio(text: String, value: f64, floor: Option<f64>, who: Who) -> String {
    match ratio_of(Some(value), floor) {
        Some(ratio) if who != Who::Floor => format!("{text} (×{ratio:.2})"),
        _ => text,
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}
