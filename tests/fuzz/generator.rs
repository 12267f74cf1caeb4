// SPDX-License-Identifier: LGPL-2.1-or-later
//! The stream generator of the differential fuzz test (tests/fuzz.rs): from
//! a seed and a stream index it builds, deterministically, the bytes one QMP
//! client sends, out of a grammar of fragments: commands (valid and invalid,
//! with ids of every JSON type), capability negotiations, JSON values that
//! are not objects, broken tokens, control bytes and 0xFF, both quote styles,
//! escapes, invalid UTF-8, deep nesting, stray closers and whitespace runs.
//! The bytes are then cut into several writes, and the stream either ends
//! with a half-close or with an end marker (see [`Ending`]).
//!
//! Every command used answers the same on QEMU's `-M none` oracle and on the
//! test guest: nothing here changes a guest or reads its state. Two known
//! differences are never generated: `qmp_capabilities` enabling `oob` (the
//! proxy offers no capabilities), and U+0000 inside `arguments` of a command
//! that goes to the guest (libvirt handles command text as C strings).
//! U+0000 does appear in ids, in command names and in `qmp_capabilities`'
//! arguments, which the proxy answers itself.
//!
//! No I/O, no dependencies: a splitmix64 generator drives everything.

#[path = "commands.rs"]
mod commands;
#[path = "json.rs"]
mod json;

use commands::{Param, Spec, COMMANDS, HMP_LINES, UNKNOWN_NAMES};

use json::{
    deep_value, random_flaw, random_integer, random_members, random_number, random_string,
    random_text, random_value, render, Json, Renderer, Text,
};

/// The id of the end marker; no generated string can spell it.
pub const END_ID: &str = "fuzz-end";

/// The end marker: `qmp_capabilities` with the id [`END_ID`]. Both servers
/// answer it whatever the negotiation state, as its last line.
pub const END_MARKER: &[u8] = br#"{"execute":"qmp_capabilities","id":"fuzz-end"}"#;

/// Bytes that may come before the end marker: 0xFF ends any token, string or
/// unbalanced message with a lexical error, and the lexer resynchronises on
/// the marker's `{`, so the marker is always parsed on its own.
pub const RESYNC: u8 = 0xFF;

/// A small, fast, seedable generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The generator for stream `index` of run `seed`: each stream can be
    /// made again on its own.
    pub fn for_stream(seed: u64, index: u64) -> Rng {
        let mut rng = Rng { state: seed };
        let base = rng.next_u64();
        let mut rng = Rng {
            state: base ^ index.wrapping_mul(0xD605_BBB5_8C8A_BBDB),
        };
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// An index into `weights`, chosen in proportion to them.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut roll = self.below(total as usize) as u32;
        for (index, &weight) in weights.iter().enumerate() {
            if roll < weight {
                return index;
            }
            roll -= weight;
        }
        weights.len() - 1
    }
}

/// How a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The end marker right after the body: the body is made only of whole
    /// messages, so the marker starts a message of its own.
    Marker,
    /// [`RESYNC`], then the end marker: the body may stop anywhere.
    ResyncMarker,
    /// Half-close after the body; the server answers what is complete and
    /// closes.
    HalfClose,
}

/// One generated client stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Whether the harness negotiates before sending (as the corpus's
    /// `negotiate`).
    pub negotiate: bool,
    /// Whether the body is made only of whole, lexically valid messages;
    /// only then may it hold U+0000 (in ids, names, and `qmp_capabilities`'
    /// arguments), as no byte of one message can end up in another's
    /// arguments.
    pub clean: bool,
    /// The body, one item per fragment (kept apart for shrinking).
    pub pieces: Vec<Vec<u8>>,
    pub ending: Ending,
    /// Where the bytes are cut into writes (offsets into [`Stream::bytes`],
    /// increasing, none at 0 or at the end).
    pub cuts: Vec<usize>,
    /// Milliseconds between two writes.
    pub gap_ms: u64,
}

impl Stream {
    /// Everything sent after the greeting (and the harness's negotiation).
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.pieces.concat();
        match self.ending {
            Ending::Marker => bytes.extend_from_slice(END_MARKER),
            Ending::ResyncMarker => {
                bytes.push(RESYNC);
                bytes.extend_from_slice(END_MARKER);
            }
            Ending::HalfClose => {}
        }
        bytes
    }

    /// The bytes, as the separate writes they are sent in.
    pub fn chunks(&self) -> Vec<Vec<u8>> {
        let bytes = self.bytes();
        let mut chunks = Vec::new();
        let mut start = 0;
        for &cut in &self.cuts {
            if cut > start && cut < bytes.len() {
                chunks.push(bytes[start..cut].to_vec());
                start = cut;
            }
        }
        chunks.push(bytes[start..].to_vec());
        chunks
    }

    pub fn shutdown(&self) -> bool {
        self.ending == Ending::HalfClose
    }

    /// The same stream with other pieces, sent in one write.
    pub fn with_pieces(&self, pieces: Vec<Vec<u8>>) -> Stream {
        Stream {
            pieces,
            cuts: Vec::new(),
            ..self.clone()
        }
    }
}

/// Builds stream `index` of run `seed`.
pub fn stream(seed: u64, index: u64) -> Stream {
    let mut rng = Rng::for_stream(seed, index);
    let negotiate = rng.chance(70);
    let clean = rng.chance(40);
    let ending = if rng.chance(25) {
        Ending::HalfClose
    } else if clean {
        Ending::Marker
    } else {
        Ending::ResyncMarker
    };
    let pieces = loop {
        let pieces = body(&mut rng, clean);
        let joined = pieces.concat();
        if clean || !spells_nul(&joined) {
            break pieces;
        }
    };
    let mut stream = Stream {
        negotiate,
        clean,
        pieces,
        ending,
        cuts: Vec::new(),
        gap_ms: 0,
    };
    let length = stream.bytes().len();
    if length > 1 && length <= 400 && rng.chance(3) {
        // Every byte its own write.
        stream.cuts = (1..length).collect();
    } else if length > 1 && !rng.chance(30) {
        let mut cuts: Vec<usize> = (0..rng.range(1, 5))
            .map(|_| rng.range(1, length - 1))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        stream.cuts = cuts;
        stream.gap_ms = rng.pick(&[0, 1, 1, 2, 3]);
    }
    stream
}

/// True if `bytes` may decode to U+0000 somewhere: a `\u0000` escape or the
/// modified-UTF-8 pair C0 80 (pieces of a stream that is not clean can join
/// into either).
pub fn spells_nul(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|i| match bytes[i] {
        0xC0 => bytes.get(i + 1) == Some(&0x80),
        b'\\' => bytes[i + 1..].starts_with(b"u0000"),
        _ => false,
    })
}

/// Where U+0000 may appear in what is being generated.
#[derive(Debug, Clone, Copy)]
struct Context {
    /// The stream is clean (whole messages only).
    clean: bool,
    /// U+0000 is allowed here: clean stream, and an id, a command name, or
    /// arguments the proxy answers itself.
    nul: bool,
}

impl Context {
    fn without_nul(self) -> Context {
        Context { nul: false, ..self }
    }
}

fn body(rng: &mut Rng, clean: bool) -> Vec<Vec<u8>> {
    let count = rng.pick(&[1, 1, 2, 2, 3, 3, 4, 5, 6, 8, 12]);
    let context = Context { clean, nul: false };
    let mut pieces = Vec::new();
    for _ in 0..count {
        let mut piece = Vec::new();
        if rng.chance(50) {
            whitespace(rng, &mut piece);
        }
        let kind = if clean {
            rng.weighted(&[50, 14, 8, 4, 0, 0, 4, 1])
        } else {
            rng.weighted(&[32, 10, 6, 4, 22, 18, 8, 1])
        };
        match kind {
            0 => command(rng, context, &mut piece),
            1 => capabilities(rng, context, &mut piece),
            2 => top_level_value(rng, context, &mut piece),
            3 => deep(rng, context, &mut piece),
            4 => broken_command(rng, context, &mut piece),
            5 => soup(rng, &mut piece),
            6 => whitespace_run(rng, &mut piece),
            _ => burst(rng, context, &mut piece),
        }
        if rng.chance(40) {
            whitespace(rng, &mut piece);
        }
        pieces.push(piece);
    }
    pieces
}

// ---------------------------------------------------------------------------
// Commands

fn unknown_name(rng: &mut Rng, context: Context) -> String {
    match rng.below(4) {
        0 => rng.pick(UNKNOWN_NAMES).to_string(),
        1 => {
            // A known name made unknown: an upper-case letter, or a suffix.
            let mut name = COMMANDS[rng.below(COMMANDS.len())].name.to_string();
            if rng.chance(50) {
                let position = rng.below(name.len());
                let upper = name[position..=position].to_ascii_uppercase();
                name.replace_range(position..=position, &upper);
                if name.bytes().all(|b| !b.is_ascii_uppercase()) {
                    name.push('Z');
                }
            } else {
                name.push_str(rng.pick(&["Z", " ", "\t", "é", "\u{0}", "-Q"]));
            }
            if !context.nul {
                name = name.replace('\0', "Z");
            }
            name
        }
        _ => {
            // Upper case keeps it off every QEMU command.
            let text = random_text(rng, context);
            if rng.chance(50) {
                format!("Z{text}")
            } else {
                format!("{text}Z")
            }
        }
    }
}

/// A value for parameter type `param`, valid or not.
fn param_value(rng: &mut Rng, context: Context, param: Param) -> Json {
    if rng.chance(15) {
        return match random_value(rng, context, 2) {
            // Only the fixed lines go to the human monitor.
            Json::Str(_) if param == Param::Hmp => Json::Literal("null"),
            value => value,
        };
    }
    match param {
        Param::Name(known) if !known.is_empty() && rng.chance(40) => {
            Json::Str(Text::plain(rng.pick(known)))
        }
        Param::Name(_) => Json::Str(random_string(rng, context)),
        Param::Boolean => Json::Literal(rng.pick(&["true", "false"])),
        Param::Path => {
            let mut path = String::from("/Z");
            path.push_str(&random_text(rng, context));
            Json::Str(Text {
                text: path,
                flaw: random_flaw(rng, context, 4),
            })
        }
        Param::Integer => Json::Number(random_integer(rng)),
        Param::Hmp => Json::Str(Text::plain(rng.pick(HMP_LINES))),
    }
}

/// Arguments for command `spec`: usually right, sometimes with a member
/// missing, of the wrong type, or unexpected.
fn arguments(rng: &mut Rng, context: Context, spec: &Spec) -> Vec<(Text, Json)> {
    let mut members = Vec::new();
    let all_right = rng.chance(55);
    for &(name, param, required) in spec.params {
        if (!required && rng.chance(50)) || (!all_right && !spec.fragile && rng.chance(20)) {
            continue;
        }
        members.push((Text::plain(name), param_value(rng, context, param)));
    }
    if !all_right || spec.params.is_empty() {
        for _ in 0..rng.pick(&[0, 1, 1, 2, 3]) {
            let name = if rng.chance(60) {
                Text::plain(rng.pick(&["foo", "x", "y", "z", "b", "a", "id", "arguments"]))
            } else {
                random_string(rng, context)
            };
            if members.iter().any(|(k, _)| k.text == name.text) && !rng.chance(10) {
                continue;
            }
            members.push((name, random_value(rng, context, 2)));
        }
    }
    if rng.chance(10) {
        members.shuffle_with(rng);
    }
    members
}

trait Shuffle {
    fn shuffle_with(&mut self, rng: &mut Rng);
}

impl<T> Shuffle for Vec<T> {
    fn shuffle_with(&mut self, rng: &mut Rng) {
        for index in (1..self.len()).rev() {
            let other = rng.below(index + 1);
            self.swap(index, other);
        }
    }
}

/// The members of a request: `execute`, `arguments`, `id` and extras, in
/// random order, each of them sometimes missing or of the wrong type.
fn request(rng: &mut Rng, context: Context, name: Option<String>, arguments: Option<Json>) -> Json {
    let mut members: Vec<(Text, Json)> = Vec::new();
    match name {
        Some(name) if !rng.chance(4) => members.push((
            Text::plain("execute"),
            Json::Str(Text {
                text: name,
                flaw: random_flaw(rng, context, 3),
            }),
        )),
        _ if rng.chance(50) => members.push((
            Text::plain("execute"),
            random_value(rng, context.without_nul(), 1),
        )),
        _ => {}
    }
    match arguments {
        Some(arguments) => members.push((Text::plain("arguments"), arguments)),
        None if rng.chance(5) => members.push((
            Text::plain("arguments"),
            random_value(rng, context.without_nul(), 1),
        )),
        None => {}
    }
    if rng.chance(55) {
        let id_context = Context {
            nul: context.clean,
            ..context
        };
        members.push((Text::plain("id"), random_value(rng, id_context, 3)));
    }
    if rng.chance(8) {
        let extra = rng.pick(&[
            "exec-oob", "command", "foo", "Execute", "id ", "", "control",
        ]);
        members.push((
            Text::plain(extra),
            random_value(rng, context.without_nul(), 1),
        ));
    }
    if rng.chance(3) && !members.is_empty() {
        let copy = members[rng.below(members.len())].clone();
        members.push(copy);
    }
    members.shuffle_with(rng);
    Json::Dict(members)
}

fn command(rng: &mut Rng, context: Context, out: &mut Vec<u8>) {
    let value = command_value(rng, context);
    render(rng, &value, out);
}

fn command_value(rng: &mut Rng, context: Context) -> Json {
    let name_context = Context {
        nul: context.clean,
        ..context
    };
    let plain = context.without_nul();
    if rng.chance(20) {
        let name = unknown_name(rng, name_context);
        let arguments = rng
            .chance(40)
            .then(|| Json::Dict(random_members(rng, plain, 2)));
        return request(rng, context, Some(name), arguments);
    }
    let weights: Vec<u32> = COMMANDS.iter().map(|spec| spec.weight).collect();
    let mut spec = &COMMANDS[rng.weighted(&weights)];
    if spec.fragile && !context.clean {
        spec = &COMMANDS[0];
    }
    let arguments = if spec.params.iter().any(|p| p.2) || rng.chance(40) {
        if rng.chance(5) && !spec.fragile {
            Some(random_value(rng, plain, 1))
        } else {
            Some(Json::Dict(arguments(rng, plain, spec)))
        }
    } else {
        None
    };
    request(rng, context, Some(spec.name.to_string()), arguments)
}

/// `qmp_capabilities` in its variants. `enable` never asks for `oob` alone:
/// where `oob` appears, an invalid capability comes first.
fn capabilities(rng: &mut Rng, context: Context, out: &mut Vec<u8>) {
    // The proxy answers qmp_capabilities itself, U+0000 included.
    let args_context = Context {
        nul: context.clean,
        ..context
    };
    let invalid = |rng: &mut Rng| -> Json {
        match rng.below(6) {
            0 => Json::Number("1".into()),
            1 => Json::Literal("null"),
            2 => Json::Dict(Vec::new()),
            // Each at least two byte edits away from "oob".
            3 => Json::Str(Text::plain(rng.pick(&["foo", "bar", "OOB", "x"]))),
            _ => Json::Str(Text::plain("foo")),
        }
    };
    let arguments = match rng.below(12) {
        0..=3 => None,
        4 => Some(Json::Dict(Vec::new())),
        5 => Some(Json::Dict(vec![(
            Text::plain("enable"),
            Json::List(Vec::new()),
        )])),
        6 | 7 => {
            let mut items = vec![invalid(rng)];
            for _ in 0..rng.below(3) {
                items.push(if rng.chance(50) {
                    Json::Str(Text::plain("oob"))
                } else {
                    invalid(rng)
                });
            }
            if rng.chance(30) {
                items.insert(0, Json::Str(Text::plain("bar")));
            }
            Some(Json::Dict(vec![(Text::plain("enable"), Json::List(items))]))
        }
        8 => Some(Json::Dict(vec![(
            Text::plain("enable"),
            random_value(rng, args_context, 1),
        )])),
        9 => Some(Json::Dict(random_members(rng, args_context, 1))),
        10 => {
            let mut members = random_members(rng, args_context, 1);
            if rng.chance(50) {
                members.push((Text::plain("enable"), Json::List(Vec::new())));
            }
            members.push((Text::plain("b"), Json::Number("1".into())));
            members.shuffle_with(rng);
            Some(Json::Dict(members))
        }
        _ => Some(random_value(rng, args_context, 1)),
    };
    let arguments = arguments.map(strip_oob);
    let value = request(rng, context, Some("qmp_capabilities".into()), arguments);
    render(rng, &value, out);
}

/// Makes sure a random `enable` value does not ask for `oob` alone.
fn strip_oob(arguments: Json) -> Json {
    let Json::Dict(members) = arguments else {
        return arguments;
    };
    Json::Dict(
        members
            .into_iter()
            .map(|(key, value)| match (&key.text[..], value) {
                ("enable", Json::List(items)) if enables_only_oob(&items) => {
                    (key, Json::List(Vec::new()))
                }
                (_, value) => (key, value),
            })
            .collect(),
    )
}

/// A list whose elements up to the first that is not `oob` are all `oob`
/// (then QEMU would accept the list up to there and, if nothing follows,
/// enable OOB).
fn enables_only_oob(items: &[Json]) -> bool {
    let first_invalid = items
        .iter()
        .position(|item| !matches!(item, Json::Str(t) if t.text == "oob" && t.flaw.is_none()));
    match first_invalid {
        Some(index) => index > 0,
        None => !items.is_empty(),
    }
}

fn top_level_value(rng: &mut Rng, context: Context, out: &mut Vec<u8>) {
    let value = match rng.below(5) {
        0 => Json::List(vec![command_value(rng, context.without_nul())]),
        1 => Json::Number(random_number(rng)),
        2 => Json::Literal(rng.pick(&["null", "true", "false"])),
        _ => random_value(rng, context.without_nul(), 2),
    };
    render(rng, &value, out);
    // A top-level number or keyword ends only at the next character.
    if rng.chance(70) {
        out.push(rng.pick(b" \n\t\r"));
    }
}

/// Nesting around the limits: a bare value, an id, or arguments.
fn deep(rng: &mut Rng, context: Context, out: &mut Vec<u8>) {
    let plain = context.without_nul();
    let value = deep_value(rng, plain);
    let value = match rng.below(3) {
        0 => value,
        1 => Json::Dict(vec![
            (Text::plain("execute"), Json::Str(Text::plain("nope"))),
            (Text::plain("id"), value),
        ]),
        _ => {
            let name = rng.pick(&["query-version", "nope", "device_del"]);
            Json::Dict(vec![
                (Text::plain("execute"), Json::Str(Text::plain(name))),
                (
                    Text::plain("arguments"),
                    Json::Dict(vec![(Text::plain("x"), value)]),
                ),
            ])
        }
    };
    render(rng, &value, out);
}

/// A command with one byte-level accident: cut short, a byte dropped,
/// replaced or inserted, or a broken token put in.
fn broken_command(rng: &mut Rng, context: Context, out: &mut Vec<u8>) {
    let mut bytes = Vec::new();
    if rng.chance(20) {
        capabilities(rng, context, &mut bytes);
    } else {
        command(rng, context, &mut bytes);
    }
    let position = rng.below(bytes.len());
    match rng.below(5) {
        0 => bytes.truncate(position.max(1)),
        1 => {
            bytes.remove(position);
        }
        2 => bytes[position] = accident_byte(rng),
        3 => bytes.insert(position, accident_byte(rng)),
        _ => {
            let mut token = Vec::new();
            soup_token(rng, &mut token);
            bytes.splice(position..position, token);
        }
    }
    out.extend_from_slice(&bytes);
}

/// A byte for an accident; never 0xC0, which could pair with a 0x80 into
/// U+0000.
fn accident_byte(rng: &mut Rng) -> u8 {
    match rng.below(6) {
        0 => rng.below(0x20) as u8,
        1 => rng.pick(&[0xFE, 0xFF]),
        2 => rng.pick(&[0x80, 0xBF, 0xE2, 0xF0, 0x7F]),
        _ => rng.pick(b"{}[]:,\"'\\ \n0a-.eZ%"),
    }
}

/// Tokens, broken or not, in any order.
fn soup(rng: &mut Rng, out: &mut Vec<u8>) {
    for _ in 0..rng.range(1, 12) {
        soup_token(rng, out);
        if rng.chance(30) {
            whitespace(rng, out);
        }
    }
}

const SOUP_WORDS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "}",
    "]",
    "null",
    "true",
    "false",
    "tru",
    "nul",
    "fals",
    "garbage",
    "True",
    "NULL",
    "nan",
    "inf",
    "x",
    "nu ll",
    "01",
    "-",
    "1.",
    "1e",
    "1e+",
    "-x",
    ".5",
    "+1",
    "0x1F",
    "1.5.2",
    "--1",
    "00",
    "-01",
    "1.}",
    "1e}",
    "%",
    "%d",
    "%s",
    "'",
    "\"",
    "\\",
    "\"\\",
    "'\\",
    "{\"execute\":",
    "{\"execute\":\"nope\"",
    "{\"id\":",
    "\"id\":",
    "[{",
    "}]",
    "{{",
    "]]",
    "\r\n",
    "12",
    "-0.5e-5",
    "\"ab",
    "'a\"b'",
    "\"a\\'b\"",
];

fn soup_token(rng: &mut Rng, out: &mut Vec<u8>) {
    match rng.below(10) {
        0..=5 => out.extend_from_slice(rng.pick(SOUP_WORDS).as_bytes()),
        6 => {
            let context = Context {
                clean: false,
                nul: false,
            };
            let text = random_string(rng, context);
            let mut renderer = Renderer {
                rng,
                out: std::mem::take(out),
                spacing: 0,
            };
            renderer.string(&text);
            *out = renderer.out;
        }
        7 => out.push(match rng.below(4) {
            0 => rng.below(0x20) as u8,
            1 => rng.pick(&[0xFE, 0xFF, 0x7F]),
            // Any byte but 0xC0, which could pair with a 0x80 into U+0000.
            _ => match rng.range(0x80, 0xFD) as u8 {
                0xC0 => 0xC1,
                byte => byte,
            },
        }),
        8 => out.extend_from_slice(random_number(rng).as_bytes()),
        _ => {
            let closer = rng.pick(b"}]");
            out.extend(std::iter::repeat_n(closer, rng.range(1, 6)));
        }
    }
}

/// One short message many times over: many replies in a row, more than a
/// socket buffer holds.
fn burst(rng: &mut Rng, context: Context, out: &mut Vec<u8>) {
    let mut message = Vec::new();
    match rng.below(4) {
        0 => message.extend_from_slice(rng.pick(&[&b"}"[..], b"]", b"1 ", b"[]"])),
        1 => {
            let name = unknown_name(rng, context);
            let value = request(rng, context, Some(name), None);
            render(rng, &value, &mut message);
        }
        _ => {
            let value = request(rng, context, Some("query-version".into()), None);
            render(rng, &value, &mut message);
        }
    }
    if message.len() > 400 {
        // A deep id, say: repeated, QEMU would take too long to answer.
        message = b"}".to_vec();
    }
    for _ in 0..rng.range(20, 300) {
        out.extend_from_slice(&message);
    }
}

/// A few whitespace bytes.
fn whitespace(rng: &mut Rng, out: &mut Vec<u8>) {
    for _ in 0..rng.range(1, 3) {
        out.push(rng.pick(b" \t\r\n"));
    }
}

/// A run of whitespace, sometimes long.
fn whitespace_run(rng: &mut Rng, out: &mut Vec<u8>) {
    let length = rng.pick(&[1, 2, 5, 20, 300]);
    for _ in 0..length {
        out.push(rng.pick(b" \t\r\n\n"));
    }
}
