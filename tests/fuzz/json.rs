// SPDX-License-Identifier: LGPL-2.1-or-later
//! JSON values for the stream generator (tests/fuzz/generator.rs), as trees
//! rendered with random spelling: whitespace between tokens, either quote
//! style, any character raw or escaped (surrogate pairs included, U+0000
//! also as the modified-UTF-8 pair C0 80 that QEMU accepts), numbers in
//! every form QEMU's parser treats differently, nesting around QEMU's and
//! libvirt's limits, and strings with flaws: escapes and UTF-8 that the
//! parser rejects, or bytes that the lexer rejects.
//!
//! Generated text never spells a command, an id of the test guest's
//! devices or objects, `oob`, or the end marker's id.

use super::{whitespace, Context, Rng};

/// A JSON value to render. Strings hold their decoded text, plus an optional
/// flaw that makes them invalid.
#[derive(Debug, Clone)]
pub(super) enum Json {
    Literal(&'static str),
    Number(String),
    Str(Text),
    List(Vec<Json>),
    Dict(Vec<(Text, Json)>),
    /// `depth` containers around `inner`, for the nesting limits.
    Deep {
        depth: usize,
        braces: bool,
        inner: Box<Json>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Text {
    pub(super) text: String,
    pub(super) flaw: Option<Flaw>,
}

impl Text {
    pub(super) fn plain(text: impl Into<String>) -> Text {
        Text {
            text: text.into(),
            flaw: None,
        }
    }
}

/// Something in a string that QEMU rejects.
#[derive(Debug, Clone, Copy)]
pub(super) enum Flaw {
    /// Raw bytes or escapes the parser rejects (the message is a parse
    /// error, the stream stays in step).
    Parse(&'static [u8]),
    /// `\u` with fewer than four hex digits, just before the closing quote.
    ShortEscape(&'static [u8]),
    /// Bytes the lexer rejects: a `stray` error and resynchronisation.
    Lexical(&'static [u8]),
}

const PARSE_FLAWS: &[&[u8]] = &[
    b"\\x",
    b"\\a",
    b"\\U0041",
    b"\\0",
    b"\\ud800",
    b"\\uDC00",
    b"\\uD800\\u0041",
    b"\\ud83d\\ud83d",
    b"\\uffff",
    b"\\uFFFE",
    b"\\ufdd0",
    b"\\uFDEF",
    b"\\uDBFF\\uDFFF",
    b"\\ud83f\\udffe",
    b"\\u12G4",
    b"\\u-123",
    b"\x80",
    b"\xbf",
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xef\xbf\xbe",
    b"\xef\xbf\xbf",
    b"\xef\xb7\x90",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xfc\x84\x80\x80\x80\x80",
    b"\xe2\x82",
    b"\xc3",
    b"\xf0\x9f\x98",
    b"\xf0\x9f\xbf\xbe",
    b"\xf0\x80\x80\xaf",
];

/// Overlong forms starting with C0, apart from C0 80 (U+0000): only in clean
/// streams, where no join of pieces can make a C0 80.
const CLEAN_PARSE_FLAWS: &[&[u8]] = &[b"\xc0\xaf", b"\xc0\xbf"];

const SHORT_ESCAPES: &[&[u8]] = &[b"\\u", b"\\u1", b"\\u12", b"\\u123", b"\\uD83D\\uDE0"];

const LEXICAL_FLAWS: &[&[u8]] = &[
    b"\x01", b"\x00", b"\n", b"\t", b"\r", b"\x1b", b"\x1f", b"\xfe", b"\xff", b"\\\x01", b"\\\n",
    b"\\\xff",
];

/// Fragments of generated text. None spells a command, a device or object
/// id of the test guest, `oob` or the end marker's id.
const TEXT_FRAGMENTS: &[&str] = &[
    "a",
    "b",
    "x",
    "Z",
    "Q",
    "0",
    "9",
    " ",
    "-",
    "_",
    ".",
    "/",
    "\"",
    "'",
    "\\",
    "é",
    "ÿ",
    "€",
    "\u{7f}",
    "\u{80}",
    "\u{9f}",
    "\u{a0}",
    "\u{2028}",
    "\u{feff}",
    "\u{fffd}",
    "\u{fffc}",
    "\u{d7ff}",
    "\u{e000}",
    "😀",
    "\u{10fffd}",
    "\u{1}",
    "\u{1f}",
    "\n",
    "\t",
    "\r",
    "\u{8}",
    "\u{c}",
    "%s",
    "%d",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "<",
    "&",
    "日本",
];

/// Member names for generated objects (ids and argument values). Not
/// `execute` nor `arguments`: no object nested in an id may become a command.
const KEYS: &[&str] = &[
    "a",
    "b",
    "c",
    "",
    "id",
    "A",
    "é",
    "a b",
    "0",
    "x",
    "Z9",
    "😀",
    "qmp",
    "class",
    "desc",
    "return",
    "error",
    "exec-oob",
    "command",
    "foo",
    "key with a long name",
];

pub(super) fn random_text(rng: &mut Rng, context: Context) -> String {
    let mut text = String::new();
    for _ in 0..rng.pick(&[0, 1, 1, 2, 3, 4, 6, 10]) {
        if context.nul && rng.chance(8) {
            text.push('\0');
        } else {
            text.push_str(rng.pick(TEXT_FRAGMENTS));
        }
    }
    if rng.chance(2) {
        text.push_str(&"Q".repeat(rng.range(200, 3000)));
    }
    text
}

pub(super) fn random_string(rng: &mut Rng, context: Context) -> Text {
    let text = random_text(rng, context);
    let flaw = random_flaw(rng, context, 6);
    Text { text, flaw }
}

/// Usually none; otherwise a flaw, lexical ones only outside clean streams.
pub(super) fn random_flaw(rng: &mut Rng, context: Context, percent: u32) -> Option<Flaw> {
    if !rng.chance(percent) {
        return None;
    }
    Some(match rng.below(if context.clean { 3 } else { 4 }) {
        0 if context.clean && rng.chance(10) => Flaw::Parse(rng.pick(CLEAN_PARSE_FLAWS)),
        0 | 1 => Flaw::Parse(rng.pick(PARSE_FLAWS)),
        2 => Flaw::ShortEscape(rng.pick(SHORT_ESCAPES)),
        _ => Flaw::Lexical(rng.pick(LEXICAL_FLAWS)),
    })
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "7",
    "42",
    "1000",
    "2147483647",
    "-2147483648",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1.5",
    "0.1",
    "1.0",
    "-0.0",
    "0.0",
    "1e2",
    "1E2",
    "1e+2",
    "1E-2",
    "2.5e-3",
    "1e400",
    "-1e400",
    "1e-400",
    "1.7976931348623157e308",
    "5e-324",
    "0.30000000000000004",
    "100000000000000000000000.5",
    "3.141592653589793238462643383279",
    "-12.5e+10",
];

pub(super) fn random_number(rng: &mut Rng) -> String {
    if rng.chance(70) {
        return rng.pick(NUMBERS).to_string();
    }
    let mut number = String::new();
    if rng.chance(30) {
        number.push('-');
    }
    number.push(char::from(b'1' + rng.below(9) as u8));
    for _ in 0..rng.below(22) {
        number.push(char::from(b'0' + rng.below(10) as u8));
    }
    if rng.chance(25) {
        number.push('.');
        for _ in 0..rng.range(1, 8) {
            number.push(char::from(b'0' + rng.below(10) as u8));
        }
    }
    if rng.chance(15) {
        number.push(rng.pick(&['e', 'E']));
        number.push_str(rng.pick(&["", "+", "-"]));
        number.push_str(&rng.range(0, 330).to_string());
    }
    number
}

/// An integer for an integer parameter, usually in range.
pub(super) fn random_integer(rng: &mut Rng) -> String {
    if rng.chance(80) {
        let value = rng.range(0, 2000) as i64 - 100;
        value.to_string()
    } else {
        random_number(rng)
    }
}

/// Any JSON value, at most `depth` containers deep (deeper only through
/// [`Json::Deep`]).
pub(super) fn random_value(rng: &mut Rng, context: Context, depth: usize) -> Json {
    let weights: &[u32] = if depth == 0 {
        &[10, 25, 35, 0, 0, 0]
    } else {
        &[10, 20, 30, 15, 15, 1]
    };
    match rng.weighted(weights) {
        0 => Json::Literal(rng.pick(&["null", "true", "false"])),
        1 => Json::Number(random_number(rng)),
        2 => Json::Str(random_string(rng, context)),
        3 => Json::List(
            (0..rng.below(5))
                .map(|_| random_value(rng, context, depth - 1))
                .collect(),
        ),
        4 => Json::Dict(random_members(rng, context, depth - 1)),
        _ => deep_value(rng, context),
    }
}

pub(super) fn random_members(rng: &mut Rng, context: Context, depth: usize) -> Vec<(Text, Json)> {
    let mut members: Vec<(Text, Json)> = Vec::new();
    for _ in 0..rng.below(5) {
        let key = if rng.chance(70) {
            Text::plain(rng.pick(KEYS))
        } else {
            random_string(rng, context)
        };
        // Duplicates are a parse error; keep them rare.
        if members.iter().any(|(k, _)| k.text == key.text) && !rng.chance(10) {
            continue;
        }
        members.push((key, random_value(rng, context, depth)));
    }
    members
}

/// Nesting around QEMU's limit (1024), libvirt's (127) or small.
pub(super) fn deep_value(rng: &mut Rng, context: Context) -> Json {
    let depth = rng.pick(&[
        8, 31, 32, 33, 100, 124, 125, 126, 127, 128, 200, 1000, 1021, 1022, 1023, 1024, 1030,
    ]);
    let inner = match rng.below(3) {
        0 => Json::List(Vec::new()),
        1 => Json::Dict(Vec::new()),
        _ => random_value(rng, context, 0),
    };
    Json::Deep {
        depth,
        braces: rng.chance(40),
        inner: Box::new(inner),
    }
}

/// Renders values with random spelling: whitespace between tokens, quote
/// style, escapes.
pub(super) struct Renderer<'a> {
    pub(super) rng: &'a mut Rng,
    pub(super) out: Vec<u8>,
    /// Percent of token gaps that get whitespace.
    pub(super) spacing: u32,
}

impl Renderer<'_> {
    fn gap(&mut self) {
        if self.rng.chance(self.spacing) {
            whitespace(self.rng, &mut self.out);
        }
    }

    fn value(&mut self, value: &Json) {
        match value {
            Json::Literal(text) => self.out.extend_from_slice(text.as_bytes()),
            Json::Number(text) => self.out.extend_from_slice(text.as_bytes()),
            Json::Str(text) => self.string(text),
            Json::List(items) => {
                self.out.push(b'[');
                for (index, item) in items.iter().enumerate() {
                    self.gap();
                    if index > 0 {
                        self.out.push(b',');
                        self.gap();
                    }
                    self.value(item);
                }
                self.gap();
                self.out.push(b']');
            }
            Json::Dict(members) => self.dict(members),
            Json::Deep {
                depth,
                braces,
                inner,
            } => {
                for level in 0..*depth {
                    if *braces && level % 2 == 1 {
                        self.out.extend_from_slice(b"{\"a\":");
                    } else {
                        self.out.push(b'[');
                    }
                }
                self.value(inner);
                for level in (0..*depth).rev() {
                    self.out.push(if *braces && level % 2 == 1 {
                        b'}'
                    } else {
                        b']'
                    });
                }
            }
        }
    }

    fn dict(&mut self, members: &[(Text, Json)]) {
        self.out.push(b'{');
        for (index, (key, value)) in members.iter().enumerate() {
            self.gap();
            if index > 0 {
                self.out.push(b',');
                self.gap();
            }
            self.string(key);
            self.gap();
            self.out.push(b':');
            self.gap();
            self.value(value);
        }
        self.gap();
        self.out.push(b'}');
    }

    /// A string in either quote style, each character raw or escaped.
    pub(super) fn string(&mut self, text: &Text) {
        let quote = if self.rng.chance(15) { b'\'' } else { b'"' };
        let escape_rate = self.rng.pick(&[0, 0, 0, 5, 20, 100]);
        let flaw_at = match text.flaw {
            Some(Flaw::ShortEscape(_)) | None => None,
            Some(_) => Some(self.rng.range(0, text.text.chars().count())),
        };
        self.out.push(quote);
        for (index, ch) in text.text.chars().enumerate() {
            if flaw_at == Some(index) {
                self.flaw(text.flaw);
            }
            self.char(ch, quote, escape_rate);
        }
        if flaw_at == Some(text.text.chars().count())
            || matches!(text.flaw, Some(Flaw::ShortEscape(_)))
        {
            self.flaw(text.flaw);
        }
        self.out.push(quote);
    }

    fn flaw(&mut self, flaw: Option<Flaw>) {
        match flaw {
            Some(Flaw::Parse(bytes) | Flaw::ShortEscape(bytes) | Flaw::Lexical(bytes)) => {
                self.out.extend_from_slice(bytes)
            }
            None => {}
        }
    }

    fn char(&mut self, ch: char, quote: u8, escape_rate: u32) {
        let code = u32::from(ch);
        let must_escape = code < 0x20 || ch == '\\' || code == u32::from(quote);
        if !must_escape && !self.rng.chance(escape_rate) {
            let mut buffer = [0u8; 4];
            self.out
                .extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
            return;
        }
        if code == 0 && self.rng.chance(30) {
            // Modified UTF-8, which QEMU reads as U+0000.
            self.out.extend_from_slice(&[0xC0, 0x80]);
            return;
        }
        let short = match ch {
            '"' => Some("\\\""),
            '\'' => Some("\\'"),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        if let Some(short) = short.filter(|_| self.rng.chance(60)) {
            self.out.extend_from_slice(short.as_bytes());
            return;
        }
        let upper = self.rng.chance(50);
        let mut units = [0u16; 2];
        for unit in ch.encode_utf16(&mut units) {
            let escaped = if upper {
                format!("\\u{:04X}", unit)
            } else {
                format!("\\u{:04x}", unit)
            };
            self.out.extend_from_slice(escaped.as_bytes());
        }
    }
}

pub(super) fn render(rng: &mut Rng, value: &Json, out: &mut Vec<u8>) {
    let spacing = rng.pick(&[0, 0, 0, 10, 30, 100]);
    let mut renderer = Renderer {
        rng,
        out: std::mem::take(out),
        spacing,
    };
    renderer.value(value);
    *out = renderer.out;
}
