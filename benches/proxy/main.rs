// SPDX-License-Identifier: LGPL-2.1-or-later
//! The bench driver behind `make bench` (scripts/bench): the same QMP work
//! done several ways on one running guest, interleaved in rounds so that a
//! noisy machine's drift hits all alike, and reported as one Markdown
//! table with each figure's goal shown as met or not.
//!
//! (a) the floor: libvirt's monitor-command API called in-process, plain:
//! no event loop, no keepalive (floor.rs);
//! (a′) the same with libvirt's event loop and keepalive, as the proxy
//! sets itself up, in a process of its own;
//! (b) this proxy, driven over its socket by the load generator (client.rs);
//! (c) libvirt's original Python tool, driven the same way, where it can
//! do the measurement at all (it serves one client at a time);
//! (l) the limit: a stand-in server with no libvirt (standin.rs), driven
//! like (b), for what the socket and the machine cost alone.
//!
//! scripts/bench sets up libvirt and the guest and passes them here:
//! `cargo bench --bench proxy -- --mode system|embed --uri URI --domain NAME
//! --workdir DIR --proxy BIN [--original SCRIPT --python PYTHON] --out FILE`.

mod client;
mod floor;
mod huge;
mod report;
mod server;
mod standin;
mod stats;
mod wire;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use client::{Client, Delivery, QUERY_SCHEMA, QUERY_STATUS};
use floor::Floor;
use server::{Kind, Program, Server};
use stats::micros;

const USAGE: &str = "\
Usage: cargo bench --bench proxy -- --mode system|embed --uri URI --domain NAME
           --workdir DIR --proxy BIN [--original SCRIPT --python PYTHON]
           [--original-missing REASON] [--note TEXT]... [--out FILE]
           [--quick] [--rounds N] [--figures 1,2,...]
Normally run by scripts/bench ('make bench'), which sets up libvirt and the guest.";

/// The floor's commands: libvirt refuses a command with an id.
const FLOOR_STATUS: &str = r#"{"execute":"query-status"}"#;
/// What the stand-in answers with a reply-sized line: the bare hop.
const HOP: &[u8] = b"{\"execute\":\"x-hop\",\"id\":1}\r\n";
const FLOOR_SCHEMA: &str = r#"{"execute":"query-qmp-schema"}"#;

/// The subjects, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    /// (a): the plain libvirt call.
    Floor,
    /// (a′): the libvirt call with the event loop and keepalive.
    FloorLoop,
    Proxy,
    Original,
    /// (l): the stand-in server.
    Limit,
}

/// How many subjects there are: the length of every per-subject array.
pub const SUBJECTS: usize = 5;

impl Who {
    pub const ALL: [Who; SUBJECTS] = [
        Who::Floor,
        Who::FloorLoop,
        Who::Proxy,
        Who::Original,
        Who::Limit,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How libvirt is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// qemu:///system from a daemon: every process may hold a connection.
    System,
    /// qemu:///embed: one process at a time holds the guest's root.
    Embed,
}

/// How much of everything to do.
pub struct Plan {
    pub rounds: usize,
    pub seq_calls: usize,
    /// Calls per turn in figure 1 (with a daemon).
    pub seq_block: usize,
    pub rate_window: Duration,
    pub concurrency: Vec<usize>,
    pub schema_calls: usize,
    pub fanout_cycles: usize,
    pub fanout_clients: usize,
    pub startup_runs: usize,
    pub memory_clients: usize,
    pub memory_checkpoint: usize,
    pub memory_commands: usize,
    pub original_commands: usize,
    /// Longest the proxy's traffic of figure 5 may take (the original's: a quarter).
    pub memory_time_cap: Duration,
    /// Strings in figure 8's huge command.
    pub huge_strings: usize,
    /// stop/cont pairs of figure 9, per subject.
    pub order_tries: usize,
    pub figures: BTreeSet<u32>,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            rounds: 10,
            seq_calls: 2000,
            seq_block: 50,
            rate_window: Duration::from_millis(500),
            concurrency: vec![1, 4, 16, 64],
            schema_calls: 30,
            fanout_cycles: 50,
            fanout_clients: 64,
            startup_runs: 7,
            memory_clients: 64,
            memory_checkpoint: 10_000,
            memory_commands: 100_000,
            original_commands: 10_000,
            memory_time_cap: Duration::from_secs(200),
            huge_strings: 1_000_000,
            order_tries: 1000,
            figures: (1..=9).collect(),
        }
    }

    fn quick() -> Plan {
        Plan {
            rounds: 2,
            seq_calls: 200,
            seq_block: 20,
            rate_window: Duration::from_millis(300),
            schema_calls: 4,
            fanout_cycles: 6,
            startup_runs: 3,
            memory_checkpoint: 1000,
            memory_commands: 4000,
            original_commands: 1000,
            memory_time_cap: Duration::from_secs(40),
            huge_strings: 100_000,
            order_tries: 40,
            ..Plan::full()
        }
    }

    /// A per-round share of `total`, at least one.
    fn share(&self, total: usize) -> usize {
        total.div_ceil(self.rounds).max(1)
    }
}

/// What the driver was told by scripts/bench.
pub struct Bed {
    pub mode: Mode,
    pub uri: String,
    pub domain: String,
    pub workdir: PathBuf,
    pub proxy: Program,
    pub original: Option<Program>,
    pub original_missing: Option<String>,
    pub notes: Vec<String>,
    pub out: Option<PathBuf>,
    next_file: std::cell::Cell<usize>,
}

impl Bed {
    /// A fresh path in the work folder: TAG-N.EXT.
    fn path(&self, tag: &str, ext: &str) -> PathBuf {
        let n = self.next_file.get() + 1;
        self.next_file.set(n);
        self.workdir.join(format!("{tag}-{n}.{ext}"))
    }

    fn program(&self, kind: Kind) -> Option<&Program> {
        match kind {
            Kind::Proxy => Some(&self.proxy),
            Kind::Original => self.original.as_ref(),
            Kind::StandIn => None,
        }
    }

    fn start_server(&self, kind: Kind) -> Result<(Server, Duration), String> {
        let program = self
            .program(kind)
            .ok_or("the original tool cannot run here")?;
        self.start_program(program, kind)
    }

    /// Starts the stand-in, answering lines of `reply_bytes`.
    fn start_standin(&self, reply_bytes: usize) -> Result<Server, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the bench's own executable: {e}"))?;
        let mut argv = vec![
            exe.to_string_lossy().into_owned(),
            "standin".into(),
            "--reply-bytes".into(),
            reply_bytes.to_string(),
        ];
        // With the embedded driver only one process may hold the guest.
        if self.mode == Mode::System {
            argv.push("--relay".into());
        }
        let program = Program {
            kind: Kind::StandIn,
            argv,
        };
        Ok(self.start_program(&program, Kind::StandIn)?.0)
    }

    fn start_program(&self, program: &Program, kind: Kind) -> Result<(Server, Duration), String> {
        let tag = match kind {
            Kind::Proxy => "proxy",
            Kind::Original => "original",
            Kind::StandIn => "standin",
        };
        Server::start(
            program,
            &self.uri,
            &self.domain,
            &self.path(tag, "sock"),
            &self.path(tag, "log"),
        )
    }
}

/// The subjects as the rounds use them. With a daemon they stay up for
/// the whole run; with the embedded driver only one may hold the guest, so
/// each is started for its turn and stopped after it. The stand-in holds
/// no guest and stays up.
struct Lineup<'a> {
    bed: &'a Bed,
    /// (a) and (a′), by `floor_slot`.
    floors: [Option<Floor>; 2],
    proxy: Option<Server>,
    original: Option<Server>,
    standin: Option<Server>,
    /// The size of (b)'s query-status reply, which the stand-in answers
    /// with; measured when (b) first starts.
    reply_bytes: Option<usize>,
}

/// A floor's slot in `Lineup::floors`, and whether it is the plain one.
fn floor_slot(who: Who) -> (usize, bool) {
    match who {
        Who::Floor => (0, true),
        _ => (1, false),
    }
}

impl<'a> Lineup<'a> {
    fn new(bed: &'a Bed) -> Lineup<'a> {
        Lineup {
            bed,
            floors: [None, None],
            proxy: None,
            original: None,
            standin: None,
            reply_bytes: None,
        }
    }

    /// The floor process of (a) or (a′), started when missing.
    fn floor(&mut self, who: Who) -> Result<&mut Floor, String> {
        let (slot, plain) = floor_slot(who);
        if self.floors[slot].is_none() {
            let tag = if plain { "floor-plain" } else { "floor" };
            let mut floor = Floor::start(
                &self.bed.uri,
                &self.bed.domain,
                &self.bed.path(tag, "log"),
                plain,
            )?;
            floor.seq(FLOOR_STATUS, 10)?;
            self.floors[slot] = Some(floor);
        }
        Ok(self.floors[slot].as_mut().expect("started"))
    }

    fn server(&mut self, kind: Kind) -> Result<&Server, String> {
        let bed = self.bed;
        if kind == Kind::StandIn && self.standin.is_none() {
            let reply_bytes = match self.reply_bytes {
                Some(bytes) => bytes,
                None => {
                    let bytes = self.server(Kind::Proxy)?.client()?.call(QUERY_STATUS)?;
                    self.release();
                    bytes
                }
            };
            self.standin = Some(bed.start_standin(reply_bytes)?);
        }
        let slot = match kind {
            Kind::Proxy => &mut self.proxy,
            Kind::Original => &mut self.original,
            Kind::StandIn => &mut self.standin,
        };
        if slot.is_none() {
            let (server, _) = bed.start_server(kind)?;
            let mut client = server.client()?;
            let mut bytes = 0;
            for _ in 0..10 {
                bytes = client.call(QUERY_STATUS)?;
            }
            if kind == Kind::Proxy {
                self.reply_bytes = Some(bytes);
            }
            *slot = Some(server);
        }
        Ok(slot.as_ref().expect("started"))
    }

    /// Ends a turn: with the embedded driver, gives the guest up.
    fn release(&mut self) {
        if self.bed.mode == Mode::Embed {
            self.stop_all();
        }
    }

    /// Stops every subject holding the guest; the stand-in stays.
    fn stop_all(&mut self) {
        for floor in &mut self.floors {
            if let Some(floor) = floor.take() {
                floor.stop();
            }
        }
        self.proxy = None;
        self.original = None;
    }
}

fn kind_of(who: Who) -> Kind {
    match who {
        Who::Proxy => Kind::Proxy,
        Who::Limit => Kind::StandIn,
        _ => Kind::Original,
    }
}

fn is_floor(who: Who) -> bool {
    matches!(who, Who::Floor | Who::FloorLoop)
}

/// Everything measured; report.rs turns it into the table.
#[derive(Default)]
pub struct Results {
    /// Figure 1: µs per query-status, every call, per subject ((l): the
    /// stand-in's reply-sized line).
    pub seq: [Vec<f64>; SUBJECTS],
    /// Figure 1: µs per query-status relayed by the stand-in through the
    /// plain call (with a daemon only).
    pub relay: Vec<f64>,
    /// The size of (b)'s query-status reply, CRLF included.
    pub status_bytes: usize,
    /// Figure 2: calls/s per round, per subject, for each client count.
    pub rates: Vec<(usize, [Vec<f64>; SUBJECTS])>,
    /// Figure 3: µs per query-qmp-schema, and the reply's size.
    pub schema: [Vec<f64>; SUBJECTS],
    pub schema_bytes: usize,
    /// Figure 4: per subject, per client count, each STOP's delivery.
    pub fanout: Vec<(Who, usize, Vec<Delivery>)>,
    /// Figure 5 and the thread counts of 7.
    pub memory: Memory,
    /// Figure 8: the huge command's size, and QEMU's and (b)'s peaks.
    pub huge: Option<huge::Huge>,
    /// Figure 6, ms: exec to exit for the floors, exec to greeting for
    /// the servers; and the floors' open + lookup + query-version inside.
    pub startup: [Vec<f64>; SUBJECTS],
    pub startup_inside: [Vec<f64>; 2],
    /// Figure 9: per subject, stop/cont pairs tried and how often STOP
    /// (RESUME) came before the reply.
    pub order: [Order; SUBJECTS],
    /// Figure 9's traced run of (b), with a daemon only.
    pub traced: Option<Result<wire::Traced, String>>,
    /// /proc/loadavg's 1-minute figure at the start and at the end.
    pub load: (String, String),
    /// Why a subject's measurement is missing, by (figure, subject).
    pub skipped: Vec<(u32, Who, String)>,
}

/// Figure 9's counts for one subject.
#[derive(Default, Clone, Copy)]
pub struct Order {
    pub tries: usize,
    pub stop_first: usize,
    pub resume_first: usize,
}

/// Private memory in bytes and thread counts.
#[derive(Default)]
pub struct Memory {
    /// (a) and (a′), idle.
    pub floor_idle: [Option<u64>; 2],
    pub proxy_idle: Option<u64>,
    pub proxy_clients: Option<u64>,
    /// Private bytes and the commands done when read.
    pub proxy_checkpoint: Option<(u64, usize)>,
    pub proxy_after: Option<(u64, usize)>,
    pub proxy_threads_idle: Option<usize>,
    pub proxy_threads_clients: Option<usize>,
    pub original_idle: Option<u64>,
    pub original_after: Option<(u64, usize)>,
    pub original_threads: Option<usize>,
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("floor") => floor_subcommand(args.skip(1)),
        Some("standin") => standin::child_main(args.skip(1)),
        _ => {}
    }
    if !std::env::args().any(|arg| arg == "--mode" || arg.starts_with("--mode=")) {
        // Plain `cargo bench` or `cargo test --benches`: no guest to use.
        eprintln!(
            "bench: nothing to do without a guest: run 'make bench' (scripts/bench)\n{USAGE}"
        );
        return;
    }
    let (bed, plan) = match parse(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&bed, &plan) {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

fn floor_subcommand(args: impl Iterator<Item = String>) -> ! {
    let (mut uri, mut domain) = (String::new(), String::new());
    let (mut startup, mut plain) = (false, false);
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--uri" => uri = args.next().unwrap_or_default(),
            "--domain" => domain = args.next().unwrap_or_default(),
            "--startup" => startup = true,
            "--plain" => plain = true,
            _ => {}
        }
    }
    floor::child_main(&uri, &domain, startup, plain)
}

fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<(Bed, Plan), String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let (mut mode, mut uri, mut domain, mut workdir, mut proxy) = (None, None, None, None, None);
    let (mut original, mut python, mut original_missing, mut out) = (None, None, None, None);
    let mut notes = Vec::new();
    let mut quick = false;
    let mut rounds = None;
    let mut figures = None;
    let text = |value: std::ffi::OsString| {
        value
            .into_string()
            .map_err(|_| "arguments must be UTF-8".to_owned())
    };
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("mode") => {
                mode = Some(
                    match text(parser.value().map_err(|e| e.to_string())?)?.as_str() {
                        "system" => Mode::System,
                        "embed" => Mode::Embed,
                        other => return Err(format!("unknown mode '{other}'")),
                    },
                )
            }
            Long("uri") => uri = Some(text(parser.value().map_err(|e| e.to_string())?)?),
            Long("domain") => domain = Some(text(parser.value().map_err(|e| e.to_string())?)?),
            Long("workdir") => {
                workdir = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?))
            }
            Long("proxy") => proxy = Some(text(parser.value().map_err(|e| e.to_string())?)?),
            Long("original") => original = Some(text(parser.value().map_err(|e| e.to_string())?)?),
            Long("python") => python = Some(text(parser.value().map_err(|e| e.to_string())?)?),
            Long("original-missing") => {
                original_missing = Some(text(parser.value().map_err(|e| e.to_string())?)?)
            }
            Long("note") => notes.push(text(parser.value().map_err(|e| e.to_string())?)?),
            Long("out") => out = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?)),
            Long("quick") => quick = true,
            Long("rounds") => {
                rounds = Some(
                    text(parser.value().map_err(|e| e.to_string())?)?
                        .parse::<usize>()
                        .map_err(|e| format!("--rounds: {e}"))?
                        .max(1),
                )
            }
            Long("figures") => {
                let list = text(parser.value().map_err(|e| e.to_string())?)?;
                figures = Some(
                    list.split(',')
                        .map(|f| {
                            f.trim()
                                .parse::<u32>()
                                .map_err(|e| format!("--figures: {e}"))
                        })
                        .collect::<Result<BTreeSet<_>, _>>()?,
                );
            }
            // cargo bench passes --bench to every bench target.
            Long("bench") => {}
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    let mut plan = if quick { Plan::quick() } else { Plan::full() };
    if let Some(rounds) = rounds {
        plan.rounds = rounds;
    }
    if let Some(figures) = figures {
        plan.figures = figures;
    }
    let original = match (original, python) {
        (Some(script), Some(python)) => Some(Program {
            kind: Kind::Original,
            argv: vec![python, script],
        }),
        (None, None) => None,
        _ => return Err("--original and --python go together".into()),
    };
    let original_missing = match (&original, original_missing) {
        (None, None) => Some("not given (--original)".to_owned()),
        (_, missing) => missing,
    };
    let bed = Bed {
        mode: mode.ok_or("--mode is required")?,
        uri: uri.ok_or("--uri is required")?,
        domain: domain.ok_or("--domain is required")?,
        workdir: workdir.ok_or("--workdir is required")?,
        proxy: Program {
            kind: Kind::Proxy,
            argv: vec![proxy.ok_or("--proxy is required")?],
        },
        original,
        original_missing,
        notes,
        out,
        next_file: std::cell::Cell::new(0),
    };
    Ok((bed, plan))
}

fn progress(text: &str) {
    eprintln!("bench: {text}");
}

fn run(bed: &Bed, plan: &Plan) -> Result<(), String> {
    let begun = Instant::now();
    let mut results = Results {
        load: (load_average(), String::new()),
        ..Results::default()
    };
    let mut lineup = Lineup::new(bed);
    let info = lineup.floor(Who::FloorLoop)?.info()?;
    for who in [Who::Floor, Who::FloorLoop] {
        if usable(bed, who) {
            let pid = lineup.floor(who)?.pid();
            results.memory.floor_idle[floor_slot(who).0] = stats::private_bytes(pid).ok();
        }
        lineup.release();
    }
    if let Some(reason) = &bed.original_missing {
        for figure in 1..=9 {
            results
                .skipped
                .push((figure, Who::Original, reason.clone()));
        }
    }
    if bed.mode == Mode::Embed {
        for figure in 1..=9 {
            results
                .skipped
                .push((figure, Who::Floor, PLAIN_EMBED.to_owned()));
        }
    }

    let outcome = measure(bed, plan, &mut lineup, &mut results);
    lineup.stop_all();
    lineup.standin = None;
    outcome?;
    results.status_bytes = lineup.reply_bytes.unwrap_or(0);
    results.load.1 = load_average();

    let table = report::render(bed, plan, &info, &results, begun.elapsed());
    print!("{table}");
    if let Some(out) = &bed.out {
        if let Some(parent) = out.parent() {
            let _ = fs::create_dir_all(parent);
        }
        fs::write(out, &table).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    Ok(())
}

/// The 1-minute load average: how busy the machine was besides the bench.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// Why the plain floor does not run with the embedded driver.
const PLAIN_EMBED: &str = "the embedded driver needs an event loop";

/// Whether `who` can run here at all.
fn usable(bed: &Bed, who: Who) -> bool {
    match who {
        Who::Original => bed.original.is_some(),
        Who::Floor => bed.mode == Mode::System,
        _ => true,
    }
}

fn measure(
    bed: &Bed,
    plan: &Plan,
    lineup: &mut Lineup,
    results: &mut Results,
) -> Result<(), String> {
    results.rates = plan
        .concurrency
        .iter()
        .map(|&n| (n, Default::default()))
        .collect();
    for round in 0..plan.rounds {
        let started = Instant::now();
        // A different subject goes first in each round.
        let mut order = Who::ALL;
        order.rotate_left(round % SUBJECTS);
        let order: Vec<Who> = order.into_iter().filter(|&who| usable(bed, who)).collect();
        // Who does which figure: no socket, no events for the floors; no
        // guest behind the stand-in; no events without a loop.
        let only = |wanted: &[Who]| -> Vec<Who> {
            order
                .iter()
                .copied()
                .filter(|who| wanted.contains(who))
                .collect()
        };

        if plan.figures.contains(&1) {
            let share = plan.share(plan.seq_calls);
            sequential(
                lineup,
                &order,
                share,
                plan.seq_block,
                Work::Status,
                &mut results.seq,
                &mut results.relay,
            )?;
        }
        if plan.figures.contains(&2) {
            // With a daemon the stand-in relays query-status: the Mutex
            // design at its least.
            let subjects = if bed.mode == Mode::System {
                only(&[
                    Who::Floor,
                    Who::FloorLoop,
                    Who::Proxy,
                    Who::Original,
                    Who::Limit,
                ])
            } else {
                only(&[Who::Floor, Who::FloorLoop, Who::Proxy, Who::Original])
            };
            for (slot, &clients) in plan.concurrency.iter().enumerate() {
                for &who in &subjects {
                    if who == Who::Original && clients > 1 {
                        continue;
                    }
                    let rate = rate(lineup, who, clients, plan.rate_window)?;
                    results.rates[slot].1[who.index()].push(rate);
                    lineup.release();
                }
            }
        }
        if plan.figures.contains(&3) {
            let share = plan.share(plan.schema_calls);
            let subjects = only(&[Who::Floor, Who::FloorLoop, Who::Proxy, Who::Original]);
            results.schema_bytes = sequential(
                lineup,
                &subjects,
                share,
                1,
                Work::Schema,
                &mut results.schema,
                &mut Vec::new(),
            )?;
        }
        if plan.figures.contains(&4) {
            for who in only(&[Who::Proxy, Who::Original, Who::Limit]) {
                for clients in [1, plan.fanout_clients] {
                    if who == Who::Original && clients > 1 {
                        continue;
                    }
                    let server = lineup.server(kind_of(who))?;
                    let mut connected = connect_many(server, clients)?;
                    let deliveries =
                        client::fan_out(&mut connected, plan.share(plan.fanout_cycles))?;
                    match results
                        .fanout
                        .iter_mut()
                        .find(|(w, n, _)| *w == who && *n == clients)
                    {
                        Some((_, _, all)) => all.extend(deliveries),
                        None => results.fanout.push((who, clients, deliveries)),
                    }
                }
                lineup.release();
            }
        }
        if plan.figures.contains(&9) {
            let tries = plan.share(plan.order_tries);
            for who in only(&[Who::FloorLoop, Who::Proxy, Who::Original]) {
                let (stop_first, resume_first) = if is_floor(who) {
                    lineup.floor(who)?.order(tries)?
                } else {
                    client::order(&mut lineup.server(kind_of(who))?.client()?, tries)?
                };
                let counts = &mut results.order[who.index()];
                counts.tries += tries;
                counts.stop_first += stop_first;
                counts.resume_first += resume_first;
                lineup.release();
            }
        }
        progress(&format!(
            "round {} of {} done in {:.1} s",
            round + 1,
            plan.rounds,
            started.elapsed().as_secs_f64()
        ));
    }
    if plan.figures.contains(&9) && bed.mode == Mode::System {
        results.traced = Some(traced_order(bed, plan.order_tries));
        progress("figure 9's traced run done");
    }
    if plan.figures.contains(&6) {
        lineup.stop_all_if_embedded();
        startup(bed, plan, results)?;
        progress("start-up done");
    }
    if plan.figures.contains(&5) || plan.figures.contains(&7) {
        lineup.stop_all_if_embedded();
        memory(bed, plan, results)?;
        progress("memory done");
    }
    if plan.figures.contains(&8) {
        lineup.stop_all_if_embedded();
        let message = huge::message(plan.huge_strings);
        let proxy = bed.start_server(Kind::Proxy).and_then(|(server, _)| {
            let mut client = server.client()?;
            huge::measure(server.pid(), &mut client, &message)
        });
        progress("huge command: proxy done; QEMU reads it a byte at a time");
        let qemu = huge::qemu(&bed.workdir, &message);
        results.huge = Some(huge::Huge {
            bytes: message.len(),
            qemu,
            proxy,
        });
        progress("huge command done");
    }
    Ok(())
}

impl Lineup<'_> {
    fn stop_all_if_embedded(&mut self) {
        if self.bed.mode == Mode::Embed {
            self.stop_all();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Status,
    Schema,
}

/// Figures 1 and 3: `count` calls in a row by one client of each subject
/// in `order`, taken in turns of `block` calls, so that (a), (b) and (c)
/// alternate every few milliseconds. With the embedded driver, where a
/// turn means restarting a process, each subject does its `count` in one
/// turn. Adds each call's time in µs to `samples`; returns the size of
/// (b)'s reply.
fn sequential(
    lineup: &mut Lineup,
    order: &[Who],
    count: usize,
    block: usize,
    work: Work,
    samples: &mut [Vec<f64>; SUBJECTS],
    relayed: &mut Vec<f64>,
) -> Result<usize, String> {
    let (floor_command, command) = match work {
        Work::Status => (FLOOR_STATUS, QUERY_STATUS),
        Work::Schema => (FLOOR_SCHEMA, QUERY_SCHEMA),
    };
    let block = if lineup.bed.mode == Mode::Embed {
        count
    } else {
        block.max(1)
    };
    let mut bytes = 0;
    let mut clients: Vec<Option<Client>> = Vec::new();
    if lineup.bed.mode == Mode::System {
        for &who in order {
            clients.push(match who {
                _ if is_floor(who) => None,
                _ => Some(lineup.server(kind_of(who))?.client()?),
            });
        }
    }
    let mut left = count;
    while left > 0 {
        let turn = block.min(left);
        for (position, &who) in order.iter().enumerate() {
            if is_floor(who) {
                let (times, _) = lineup.floor(who)?.seq(floor_command, turn)?;
                samples[who.index()].extend(times);
            } else {
                let mut own = None;
                let client = match clients.get_mut(position).and_then(Option::as_mut) {
                    Some(client) => client,
                    None => own.insert(lineup.server(kind_of(who))?.client()?),
                };
                // The stand-in's hop is any other command; with a daemon it
                // relays query-status, in a turn of its own.
                let relays =
                    who == Who::Limit && work == Work::Status && lineup.bed.mode == Mode::System;
                let command = if who == Who::Limit { HOP } else { command };
                for _ in 0..turn {
                    let begun = Instant::now();
                    let size = client.call(command)?;
                    samples[who.index()].push(micros(begun.elapsed()));
                    if who == Who::Proxy {
                        bytes = size;
                    }
                }
                for _ in 0..if relays { turn } else { 0 } {
                    let begun = Instant::now();
                    client.call(QUERY_STATUS)?;
                    relayed.push(micros(begun.elapsed()));
                }
            }
            lineup.release();
        }
        left -= turn;
    }
    Ok(bytes)
}

/// Figure 9's traced run (wire.rs): `tries` through a proxy of its own
/// with libvirt's client log of received messages on.
fn traced_order(bed: &Bed, tries: usize) -> Result<wire::Traced, String> {
    let log = bed.path("wire", "log");
    let mut argv = vec!["env".to_owned()];
    argv.extend(wire::environment(&log));
    argv.extend(bed.proxy.argv.iter().cloned());
    let program = Program {
        kind: Kind::Proxy,
        argv,
    };
    let (server, _) = bed.start_program(&program, Kind::Proxy)?;
    let seen = client::order_each(&mut server.client()?, tries)?;
    drop(server);
    let text = fs::read_to_string(&log)
        .map_err(|e| format!("cannot read libvirt's log {}: {e}", log.display()))?;
    wire::compare(&text, &seen)
}

/// Connects `count` negotiated clients.
fn connect_many(server: &Server, count: usize) -> Result<Vec<Client>, String> {
    (0..count).map(|_| server.client()).collect()
}

/// Calls/s with `clients` concurrent clients for `window`.
fn rate(lineup: &mut Lineup, who: Who, clients: usize, window: Duration) -> Result<f64, String> {
    if is_floor(who) {
        return lineup.floor(who)?.rate(clients, window, FLOOR_STATUS);
    }
    let connected = connect_many(lineup.server(kind_of(who))?, clients)?;
    let (calls, elapsed) = drive(connected, window, None)?;
    Ok(calls as f64 / elapsed.as_secs_f64())
}

/// Runs every client in its own thread, calling query-status until its
/// window ends or, when `budget` is set, until the clients together have
/// made that many calls; returns the calls made and the time from the
/// common start to the last client's end.
fn drive(
    clients: Vec<Client>,
    window: Duration,
    budget: Option<usize>,
) -> Result<(usize, Duration), String> {
    let barrier = Barrier::new(clients.len() + 1);
    let remaining = budget.map(std::sync::atomic::AtomicUsize::new);
    let failure = Mutex::new(None);
    let mut calls = 0;
    let mut last_end = Instant::now();
    let mut begun = last_end;
    thread::scope(|scope| {
        let workers: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let (barrier, remaining, failure) = (&barrier, &remaining, &failure);
                scope.spawn(move || {
                    barrier.wait();
                    let deadline = Instant::now() + window;
                    let mut done = 0;
                    loop {
                        if let Some(remaining) = remaining {
                            let claimed = remaining.fetch_update(
                                std::sync::atomic::Ordering::Relaxed,
                                std::sync::atomic::Ordering::Relaxed,
                                |left| left.checked_sub(1),
                            );
                            if claimed.is_err() {
                                break;
                            }
                        } else if Instant::now() >= deadline {
                            break;
                        }
                        if let Err(e) = client.call(QUERY_STATUS) {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            break;
                        }
                        done += 1;
                    }
                    (done, Instant::now())
                })
            })
            .collect();
        begun = Instant::now();
        barrier.wait();
        for worker in workers {
            if let Ok((done, end)) = worker.join() {
                calls += done;
                last_end = last_end.max(end);
            }
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok((calls, last_end.saturating_duration_since(begun)))
}

/// Figure 6: exec to accepting for (b) and (c); for (a) and (a′), exec
/// to exit of a process doing open + lookup + query-version, so that both
/// sides pay the dynamic loader. Each in a fresh process, interleaved.
fn startup(bed: &Bed, plan: &Plan, results: &mut Results) -> Result<(), String> {
    for run in 0..plan.startup_runs {
        let mut order = Who::ALL;
        order.rotate_left(run % SUBJECTS);
        for who in order {
            match who {
                Who::Limit => {}
                _ if !usable(bed, who) => {}
                _ if is_floor(who) => {
                    let (slot, plain) = floor_slot(who);
                    let (inside, whole) = floor::startup(
                        &bed.uri,
                        &bed.domain,
                        &bed.path("floor-startup", "log"),
                        plain,
                    )?;
                    results.startup[who.index()].push(whole / 1e3);
                    results.startup_inside[slot].push(inside / 1e3);
                }
                _ => {
                    let (mut server, took) = bed.start_server(kind_of(who))?;
                    server.stop();
                    results.startup[who.index()].push(took.as_secs_f64() * 1e3);
                }
            }
        }
    }
    Ok(())
}

/// Waits for a server to settle after clients leave, then reads its memory.
fn settled_private(server: &Server) -> Result<u64, String> {
    thread::sleep(Duration::from_millis(500));
    stats::private_bytes(server.pid())
}

/// Figure 5 and the thread counts of figure 7, each on a fresh server.
fn memory(bed: &Bed, plan: &Plan, results: &mut Results) -> Result<(), String> {
    let (server, _) = bed.start_server(Kind::Proxy)?;
    let memory = &mut results.memory;
    memory.proxy_idle = Some(settled_private(&server)?);
    memory.proxy_threads_idle = Some(stats::threads(server.pid())?);
    {
        let mut clients = connect_many(&server, plan.memory_clients)?;
        for client in &mut clients {
            client.call(QUERY_STATUS)?;
        }
        memory.proxy_clients = Some(settled_private(&server)?);
        memory.proxy_threads_clients = Some(stats::threads(server.pid())?);
    }
    // Traffic in batches of 16 clients that come and go, with a reading
    // at the checkpoint and at the end, each with no client connected. A
    // time cap keeps a very loaded machine within the run's budget; the
    // table then gives the count reached.
    let batch_clients = 16;
    let batch_calls = 2000;
    let traffic = Instant::now();
    let mut done = 0;
    for target in [plan.memory_checkpoint, plan.memory_commands] {
        while done < target && traffic.elapsed() < plan.memory_time_cap {
            let clients = connect_many(&server, batch_clients)?;
            let (calls, _) = drive(
                clients,
                Duration::ZERO,
                Some(batch_calls.min(target - done)),
            )?;
            done += calls;
        }
        let reading = Some((settled_private(&server)?, done));
        if target == plan.memory_checkpoint {
            memory.proxy_checkpoint = reading;
        } else {
            memory.proxy_after = reading;
        }
        progress(&format!(
            "proxy: {done} commands in {:.0} s",
            traffic.elapsed().as_secs_f64()
        ));
    }
    drop(server);

    if bed.original.is_some() {
        let (server, _) = bed.start_server(Kind::Original)?;
        memory.original_idle = Some(settled_private(&server)?);
        memory.original_threads = Some(stats::threads(server.pid())?);
        let traffic = Instant::now();
        let mut done = 0;
        while done < plan.original_commands && traffic.elapsed() < plan.memory_time_cap / 4 {
            // One client at a time is all it serves.
            let clients = connect_many(&server, 1)?;
            let count = batch_calls.min(plan.original_commands - done);
            let (calls, _) = drive(clients, Duration::ZERO, Some(count))?;
            done += calls;
        }
        memory.original_after = Some((settled_private(&server)?, done));
    }
    Ok(())
}

/// The size of the release binary and of what ldd lists for it.
pub struct Binary {
    pub bytes: u64,
    pub libraries: Vec<(String, u64)>,
}

pub fn binary(path: &Path) -> Result<Binary, String> {
    let bytes = fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let output = std::process::Command::new("ldd")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let mut libraries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let line = line.trim();
        let (name, target) = match line.split_once(" => ") {
            Some((name, rest)) => (name, rest.split(" (").next().unwrap_or_default()),
            None => (
                line.split(" (").next().unwrap_or_default(),
                line.split(" (").next().unwrap_or_default(),
            ),
        };
        if name.starts_with("linux-vdso") || target.is_empty() {
            continue;
        }
        let size = fs::metadata(target).map(|m| m.len()).unwrap_or(0);
        libraries.push((name.to_owned(), size));
    }
    Ok(Binary { bytes, libraries })
}
