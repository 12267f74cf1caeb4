// SPDX-License-Identifier: LGPL-2.1-or-later
//! QEMU's JSON parser (qobject/json-parser.c): turns the tokens of one message
//! into a [`Value`], with QEMU's error texts and error precedence (the first
//! error found wins, so an error inside a member beats the error about the
//! member). The recursive descent of the C code is run as a state machine
//! over an explicit stack, fed one token at a time as the streamer accepts
//! it, so that neither 1024 levels of nesting nor the message's tokens need
//! to be held: only the value being built.
//!
//! A command's `arguments` (the `arguments` object of a top-level object)
//! are only ever passed on to libvirt, so they are not built as a tree,
//! which costs two to three times the text's size: they are written straight
//! as the compact JSON libvirt gets ([`Value::Compact`]).

use std::collections::HashSet;

use super::lexer::TokenKind;
use super::unicode::{decode_lossy, hex4, is_valid_codepoint, mod_utf8_codepoint};
use super::value::{dismantle, Dict, Value};
use super::writer::{quote_compact, write_compact_scalar};

/// libvirt's JSON generator (yajl) refuses text nested 128 deep or more, and
/// libvirt puts the arguments into `{"execute":..,"arguments":..,"id":..}`:
/// the arguments object may be at most 126 deep. No command's arguments are
/// that deep, so QEMU's answer does not depend on what is cut off.
pub(crate) const LIBVIRT_ARGUMENT_LEVELS: usize = 126;

/// `parse_error`: QEMU formats the detail into a 1024-byte buffer, so a
/// detail longer than 1023 bytes (a huge keyword) comes out truncated.
fn parse_error(detail: impl AsRef<[u8]>) -> String {
    let detail = detail.as_ref();
    let kept = &detail[..detail.len().min(1023)];
    format!("JSON parse error, {}", decode_lossy(kept))
}

/// A container being parsed (a suspended `parse_array`/`parse_object`).
enum Frame {
    List(Vec<Value>),
    /// `key` is None while a member name is expected, Some while its value is.
    Dict {
        dict: Dict,
        key: Option<String>,
    },
    /// A container of the `arguments`, written into [`Parser::compact`].
    CompactList {
        started: bool,
    },
    /// Its member names are kept only to find a duplicate.
    CompactDict {
        names: HashSet<String>,
        key: Option<String>,
        started: bool,
    },
}

/// What the next token must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    /// Just after `{` or `[`: a value, or the closer of an empty container.
    ValueOrClose,
    ListSeparator,
    Colon,
    DictSeparator,
    /// The message's value is complete, or an error was found.
    Nothing,
}

/// A finished value, handed to the container around it.
enum Piece {
    Value(Value),
    /// Written into the compact text.
    Written,
    /// A member name of a compact object, already written.
    Name(String),
}

/// `json_parser_parse` for one message, fed token by token.
pub(crate) struct Parser {
    stack: Vec<Frame>,
    expect: Expect,
    /// The compact text of the `arguments` being parsed.
    compact: String,
    /// Compact containers open; the `arguments` object is level 1.
    compact_level: usize,
    result: Option<Result<Value, String>>,
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser")
            .field("depth", &self.stack.len())
            .field("expect", &self.expect)
            .finish()
    }
}

impl Default for Parser {
    fn default() -> Parser {
        Parser {
            stack: Vec::new(),
            expect: Expect::Value,
            compact: String::new(),
            compact_level: 0,
            result: None,
        }
    }
}

impl Parser {
    /// Takes the next token of the message; `text` is its text.
    pub(crate) fn token(&mut self, kind: TokenKind, text: &[u8]) {
        let closes = |frame: Option<&Frame>| match frame {
            Some(Frame::List(_) | Frame::CompactList { .. }) => kind == TokenKind::RSquare,
            Some(Frame::Dict { .. } | Frame::CompactDict { .. }) => kind == TokenKind::RCurly,
            None => false,
        };
        match self.expect {
            Expect::Nothing => {}
            Expect::Value => self.start_value(kind, text),
            Expect::ValueOrClose if closes(self.stack.last()) => self.close(),
            Expect::ValueOrClose => self.start_value(kind, text),
            Expect::Colon if kind == TokenKind::Colon => self.expect = Expect::Value,
            Expect::Colon => self.fail(parse_error("missing : in object pair")),
            Expect::ListSeparator | Expect::DictSeparator if kind == TokenKind::Comma => {
                self.expect = Expect::Value
            }
            Expect::ListSeparator | Expect::DictSeparator if closes(self.stack.last()) => {
                self.close()
            }
            Expect::ListSeparator => self.fail(parse_error("expected separator in list")),
            Expect::DictSeparator => self.fail(parse_error("expected separator in dict")),
        }
    }

    /// The message is complete: its value or its first error. The parser is
    /// then ready for the next message.
    pub(crate) fn finish(&mut self) -> Result<Value, String> {
        let result = self.result.take();
        self.reset();
        // The streamer ends a message only where its tokens end a value.
        result.unwrap_or_else(|| Err(parse_error("premature EOI")))
    }

    /// Drops the message so far.
    pub(crate) fn reset(&mut self) {
        self.release();
        self.expect = Expect::Value;
        self.result = None;
    }

    /// Frees what the message holds, without deep recursion (dicts drop
    /// iteratively by themselves).
    fn release(&mut self) {
        for frame in self.stack.drain(..) {
            if let Frame::List(items) = frame {
                dismantle(Value::List(items));
            }
        }
        self.compact = String::new();
        self.compact_level = 0;
    }

    fn fail(&mut self, desc: String) {
        self.release();
        self.result = Some(Err(desc));
        self.expect = Expect::Nothing;
    }

    fn in_compact(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::CompactList { .. } | Frame::CompactDict { .. })
        )
    }

    /// Whether what goes into the innermost compact container is written:
    /// containers at the last level libvirt accepts are written empty.
    fn visible(&self) -> bool {
        self.compact_level < LIBVIRT_ARGUMENT_LEVELS
    }

    /// `parse_value`: scalars and empty containers are complete at once,
    /// other containers become a frame.
    fn start_value(&mut self, kind: TokenKind, text: &[u8]) {
        let compact = self.in_compact();
        let name_expected = match self.stack.last_mut() {
            Some(Frame::CompactList { started }) => {
                if std::mem::replace(started, true) && self.compact_level < LIBVIRT_ARGUMENT_LEVELS
                {
                    self.compact.push(',');
                }
                false
            }
            Some(Frame::CompactDict {
                key: None, started, ..
            }) => {
                if std::mem::replace(started, true) && self.compact_level < LIBVIRT_ARGUMENT_LEVELS
                {
                    self.compact.push(',');
                }
                true
            }
            _ => false,
        };
        let piece = match kind {
            TokenKind::LCurly | TokenKind::LSquare => {
                let frame = if compact || self.opens_arguments(kind) {
                    self.compact_level += 1;
                    let (open, empty) = match kind {
                        TokenKind::LCurly => ("{", "{}"),
                        _ => ("[", "[]"),
                    };
                    match self.compact_level {
                        level if level < LIBVIRT_ARGUMENT_LEVELS => self.compact.push_str(open),
                        LIBVIRT_ARGUMENT_LEVELS => self.compact.push_str(empty),
                        _ => {}
                    }
                    match kind {
                        TokenKind::LCurly => Frame::CompactDict {
                            names: HashSet::new(),
                            key: None,
                            started: false,
                        },
                        _ => Frame::CompactList { started: false },
                    }
                } else if kind == TokenKind::LCurly {
                    Frame::Dict {
                        dict: Dict::new(),
                        key: None,
                    }
                } else {
                    Frame::List(Vec::new())
                };
                self.stack.push(frame);
                self.expect = Expect::ValueOrClose;
                return;
            }
            TokenKind::Integer | TokenKind::Float | TokenKind::String => {
                match parse_literal(kind, text) {
                    Ok(value) => value,
                    Err(desc) => return self.fail(desc),
                }
            }
            TokenKind::Keyword => match parse_keyword(text) {
                Ok(value) => value,
                Err(desc) => return self.fail(desc),
            },
            _ => return self.fail(parse_error("expecting value")),
        };
        let piece = if !compact {
            Piece::Value(piece)
        } else if let (true, Value::Str(name)) = (name_expected, &piece) {
            if self.visible() {
                quote_compact(&mut self.compact, name);
                self.compact.push(':');
            }
            let Value::Str(name) = piece else {
                unreachable!("matched as a string above")
            };
            Piece::Name(name)
        } else {
            if self.visible() {
                write_compact_scalar(&mut self.compact, &piece);
            }
            Piece::Written
        };
        self.complete(piece);
    }

    /// Whether `{` starts the `arguments` member of a top-level object.
    fn opens_arguments(&self, kind: TokenKind) -> bool {
        kind == TokenKind::LCurly
            && matches!(self.stack.as_slice(), [Frame::Dict { key: Some(key), .. }] if key == "arguments")
    }

    /// Closes the innermost container and hands it on.
    fn close(&mut self) {
        let piece = match self.stack.pop() {
            Some(Frame::List(items)) => Piece::Value(Value::List(items)),
            Some(Frame::Dict { dict, .. }) => Piece::Value(Value::Dict(dict)),
            Some(frame) => {
                if self.compact_level < LIBVIRT_ARGUMENT_LEVELS {
                    self.compact.push(match frame {
                        Frame::CompactDict { .. } => '}',
                        _ => ']',
                    });
                }
                self.compact_level -= 1;
                if self.compact_level == 0 {
                    Piece::Value(Value::Compact(std::mem::take(&mut self.compact)))
                } else {
                    Piece::Written
                }
            }
            None => unreachable!("a closer is expected only inside a container"),
        };
        self.complete(piece);
    }

    /// Hands a finished value to the container around it.
    fn complete(&mut self, piece: Piece) {
        let value = |piece: Piece| match piece {
            Piece::Value(value) => value,
            Piece::Written | Piece::Name(_) => unreachable!("compact text stays in compact frames"),
        };
        match self.stack.last_mut() {
            None => {
                self.result = Some(Ok(value(piece)));
                self.expect = Expect::Nothing;
            }
            Some(Frame::List(items)) => {
                items.push(value(piece));
                self.expect = Expect::ListSeparator;
            }
            Some(Frame::CompactList { .. }) => self.expect = Expect::ListSeparator,
            Some(Frame::Dict { dict, key }) => match key.take() {
                // parse_pair: the value just parsed is the member name.
                None => match value(piece) {
                    Value::Str(name) => {
                        *key = Some(name);
                        self.expect = Expect::Colon;
                    }
                    other => {
                        dismantle(other);
                        self.fail(parse_error("key is not a string in object"));
                    }
                },
                Some(name) => {
                    let member = value(piece);
                    if dict.contains_key(&name) {
                        dismantle(member);
                        return self.fail(parse_error("duplicate key"));
                    }
                    dict.insert(name, member);
                    self.expect = Expect::DictSeparator;
                }
            },
            Some(Frame::CompactDict { names, key, .. }) => match (key.take(), piece) {
                (None, Piece::Name(name)) => {
                    *key = Some(name);
                    self.expect = Expect::Colon;
                }
                (None, _) => self.fail(parse_error("key is not a string in object")),
                (Some(name), _) => {
                    if !names.insert(name) {
                        return self.fail(parse_error("duplicate key"));
                    }
                    self.expect = Expect::DictSeparator;
                }
            },
        }
    }
}

/// `parse_keyword`.
fn parse_keyword(text: &[u8]) -> Result<Value, String> {
    match text {
        b"true" => Ok(Value::Bool(true)),
        b"false" => Ok(Value::Bool(false)),
        b"null" => Ok(Value::Null),
        _ => {
            let mut detail = b"invalid keyword '".to_vec();
            detail.extend_from_slice(text);
            detail.push(b'\'');
            Err(parse_error(detail))
        }
    }
}

/// `parse_literal`: strings, and numbers as QNum: int64 if it fits, else
/// uint64 if it fits and is not negative, else a double from strtod.
fn parse_literal(kind: TokenKind, text: &[u8]) -> Result<Value, String> {
    if kind == TokenKind::String {
        return parse_string(text).map(Value::Str);
    }
    // Number tokens are ASCII by construction of the lexer table.
    let number = std::str::from_utf8(text).unwrap_or_default();
    if kind == TokenKind::Integer {
        if let Ok(value) = number.parse::<i64>() {
            return Ok(Value::Int(value));
        }
        if !number.starts_with('-') {
            if let Ok(value) = number.parse::<u64>() {
                return Ok(Value::UInt(value));
            }
        }
    }
    // Both strtod and Rust round correctly; out of range gives +-inf or 0.
    Ok(Value::Double(number.parse::<f64>().unwrap_or(0.0)))
}

/// `parse_string`: decodes a string token (quotes included), accepting
/// QEMU's extensions (single quotes, `\'`) and modified UTF-8.
fn parse_string(token: &[u8]) -> Result<String, String> {
    let quote = token[0];
    let mut decoded = String::with_capacity(token.len());
    let mut position = 1;
    // The lexer guarantees the closing quote; `get` keeps a bad token from panicking.
    while let Some(&byte) = token.get(position) {
        if byte == quote {
            break;
        }
        if byte != b'\\' {
            // Printable ASCII needs no decoding: copy the whole run.
            let run = token[position..]
                .iter()
                .take_while(|&&byte| (0x20..0x7F).contains(&byte) && byte != quote && byte != b'\\')
                .count();
            if run > 0 {
                let ascii = std::str::from_utf8(&token[position..position + run])
                    .expect("printable ASCII is UTF-8");
                decoded.push_str(ascii);
                position += run;
                continue;
            }
            let (codepoint, consumed) = mod_utf8_codepoint(&token[position..]);
            match codepoint.and_then(char::from_u32) {
                Some(ch) => decoded.push(ch),
                None => return Err(parse_error("invalid UTF-8 sequence in string")),
            }
            position += consumed;
            continue;
        }
        let escape_start = position;
        let escaped = token.get(position + 1).copied().unwrap_or(0);
        position += 2;
        let ch = match escaped {
            b'"' => '"',
            b'\'' => '\'',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let mut codepoint = hex4(token, position);
                position += 4;
                if let Some(high @ 0xD800..=0xDBFF) = codepoint {
                    if token.get(position) == Some(&b'\\') && token.get(position + 1) == Some(&b'u')
                    {
                        // A leading surrogate followed by \u: only a trailing
                        // surrogate completes it.
                        codepoint = match hex4(token, position + 2) {
                            Some(low @ 0xDC00..=0xDFFF) => {
                                position += 6;
                                Some(0x10000 + ((high & 0x3FF) << 10) + (low & 0x3FF))
                            }
                            _ => None,
                        };
                    }
                }
                match codepoint
                    .filter(|&cp| is_valid_codepoint(cp))
                    .and_then(char::from_u32)
                {
                    Some(ch) => ch,
                    None => {
                        // "%.*s" of the escape: stops at the token's end.
                        let shown = &token[escape_start..position.min(token.len())];
                        let mut detail = shown.to_vec();
                        detail.extend_from_slice(b" is not a valid Unicode character");
                        return Err(parse_error(detail));
                    }
                }
            }
            _ => return Err(parse_error("invalid escape sequence in string")),
        };
        decoded.push(ch);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the tokens of one message and finishes it.
    fn parse_text(pieces: &[(TokenKind, &str)]) -> Result<Value, String> {
        let mut parser = Parser::default();
        for &(kind, text) in pieces {
            parser.token(kind, text.as_bytes());
        }
        parser.finish()
    }

    #[test]
    fn surrogate_pair_escape_decodes() {
        let value = parse_text(&[(TokenKind::String, r#""\ud83d\ude00""#)]).unwrap();
        assert_eq!(value, Value::Str("\u{1F600}".into()));
    }

    #[test]
    fn noncharacter_pair_shows_both_escapes() {
        let error = parse_text(&[(TokenKind::String, r#""\uDBFF\uDFFF""#)]).unwrap_err();
        assert_eq!(
            error,
            r"JSON parse error, \uDBFF\uDFFF is not a valid Unicode character"
        );
    }

    #[test]
    fn high_surrogate_then_other_escape_shows_first_only() {
        let error = parse_text(&[(TokenKind::String, r#""\ud800\u0041""#)]).unwrap_err();
        assert_eq!(
            error,
            r"JSON parse error, \ud800 is not a valid Unicode character"
        );
    }

    #[test]
    fn short_unicode_escape_shows_closing_quote() {
        let error = parse_text(&[(TokenKind::String, r#""\u""#)]).unwrap_err();
        assert_eq!(
            error,
            "JSON parse error, \\u\" is not a valid Unicode character"
        );
    }

    #[test]
    fn modified_utf8_nul_and_escaped_nul_decode() {
        // A raw NUL never reaches the parser (the lexer rejects it), but C0 80 does.
        let mut text = b"\"a".to_vec();
        text.extend_from_slice(b"\xC0\x80b\\u0000\"");
        let mut parser = Parser::default();
        parser.token(TokenKind::String, &text);
        assert_eq!(parser.finish(), Ok(Value::Str("a\0b\0".into())));
    }

    #[test]
    fn numbers_become_qnum_kinds() {
        let int = |text| parse_text(&[(TokenKind::Integer, text)]).unwrap();
        assert_eq!(int("-0"), Value::Int(0));
        assert_eq!(int("9223372036854775807"), Value::Int(i64::MAX));
        assert_eq!(int("9223372036854775808"), Value::UInt(1 << 63));
        assert_eq!(
            int("18446744073709551616"),
            Value::Double(18446744073709551616.0)
        );
        assert_eq!(
            int("-9223372036854775809"),
            Value::Double(-9223372036854775809.0)
        );
        let float = |text| parse_text(&[(TokenKind::Float, text)]).unwrap();
        assert_eq!(float("1E2"), Value::Double(100.0));
        assert_eq!(float("1e400"), Value::Double(f64::INFINITY));
    }

    #[test]
    fn long_keyword_error_is_cut_at_1023_bytes() {
        let keyword = "a".repeat(2000);
        let error = parse_text(&[(TokenKind::Keyword, &keyword)]).unwrap_err();
        let detail = error.strip_prefix("JSON parse error, ").unwrap();
        assert_eq!(detail.len(), 1023);
        assert!(detail.starts_with("invalid keyword 'aaa"));
    }

    #[test]
    fn key_must_be_a_string_even_if_a_container() {
        use TokenKind::*;
        let error = parse_text(&[
            (LCurly, "{"),
            (LCurly, "{"),
            (RCurly, "}"),
            (Colon, ":"),
            (Integer, "1"),
            (RCurly, "}"),
        ])
        .unwrap_err();
        assert_eq!(error, "JSON parse error, key is not a string in object");
    }

    #[test]
    fn inner_error_beats_duplicate_key() {
        use TokenKind::*;
        let error = parse_text(&[
            (LCurly, "{"),
            (String, "\"a\""),
            (Colon, ":"),
            (Integer, "1"),
            (Comma, ","),
            (String, "\"a\""),
            (Colon, ":"),
            (Keyword, "nul"),
            (RCurly, "}"),
        ])
        .unwrap_err();
        assert_eq!(error, "JSON parse error, invalid keyword 'nul'");
    }
}
