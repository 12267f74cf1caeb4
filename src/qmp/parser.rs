// SPDX-License-Identifier: LGPL-2.1-or-later
//! QEMU's JSON parser (qobject/json-parser.c): turns the tokens of one message
//! into a [`Value`], with QEMU's error texts and error precedence (the first
//! error found wins, so an error inside a member beats the error about the
//! member). The recursive descent of the C code is run on an explicit stack so
//! that 1024 levels of nesting need no call stack.

use super::lexer::TokenKind;
use super::unicode::{decode_lossy, hex4, is_valid_codepoint, mod_utf8_codepoint};
use super::value::{dismantle, Dict, Value};

/// One token of a message. Literal tokens refer to their text in the
/// message's text buffer; structural tokens carry no text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) start: u32,
    pub(crate) len: u32,
}

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
}

struct Cursor<'a> {
    tokens: &'a [Token],
    text: &'a [u8],
    next: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Result<Token, String> {
        self.tokens
            .get(self.next)
            .copied()
            .ok_or_else(|| parse_error("premature EOI"))
    }

    fn pop(&mut self) -> Result<Token, String> {
        let token = self.peek()?;
        self.next += 1;
        Ok(token)
    }

    fn text(&self, token: Token) -> &'a [u8] {
        &self.text[token.start as usize..(token.start + token.len) as usize]
    }
}

/// `json_parser_parse`: parses one complete message. The error is the full
/// `desc` text QEMU reports.
pub(crate) fn parse(tokens: &[Token], text: &[u8]) -> Result<Value, String> {
    let mut cursor = Cursor {
        tokens,
        text,
        next: 0,
    };
    let mut stack: Vec<Frame> = Vec::new();
    let result = parse_with_stack(&mut cursor, &mut stack);
    // Release partial results without deep recursion (dicts drop
    // iteratively by themselves).
    for frame in stack {
        if let Frame::List(items) = frame {
            dismantle(Value::List(items));
        }
    }
    result
}

fn parse_with_stack(cursor: &mut Cursor<'_>, stack: &mut Vec<Frame>) -> Result<Value, String> {
    loop {
        // parse_value: start a value; scalars and empty containers are
        // complete at once, other containers become a frame.
        let token = cursor.peek()?;
        let mut value = match token.kind {
            TokenKind::LCurly => {
                cursor.pop()?;
                if cursor.peek()?.kind == TokenKind::RCurly {
                    cursor.pop()?;
                    Value::Dict(Dict::new())
                } else {
                    stack.push(Frame::Dict {
                        dict: Dict::new(),
                        key: None,
                    });
                    continue;
                }
            }
            TokenKind::LSquare => {
                cursor.pop()?;
                if cursor.peek()?.kind == TokenKind::RSquare {
                    cursor.pop()?;
                    Value::List(Vec::new())
                } else {
                    stack.push(Frame::List(Vec::new()));
                    continue;
                }
            }
            TokenKind::Integer | TokenKind::Float | TokenKind::String => {
                cursor.pop()?;
                parse_literal(token.kind, cursor.text(token))?
            }
            TokenKind::Keyword => {
                cursor.pop()?;
                parse_keyword(cursor.text(token))?
            }
            _ => return Err(parse_error("expecting value")),
        };

        // Hand the finished value to the enclosing containers, closing each
        // one that ends here.
        loop {
            let Some(frame) = stack.last_mut() else {
                return Ok(value);
            };
            match frame {
                Frame::List(items) => {
                    items.push(value);
                    match cursor.pop()?.kind {
                        TokenKind::RSquare => {}
                        TokenKind::Comma => break,
                        _ => return Err(parse_error("expected separator in list")),
                    }
                }
                Frame::Dict { dict, key } => match key.take() {
                    None => {
                        // parse_pair: the value just parsed is the member name.
                        let Value::Str(name) = value else {
                            dismantle(value);
                            return Err(parse_error("key is not a string in object"));
                        };
                        if cursor.pop()?.kind != TokenKind::Colon {
                            return Err(parse_error("missing : in object pair"));
                        }
                        *key = Some(name);
                        break;
                    }
                    Some(name) => {
                        if dict.contains_key(&name) {
                            dismantle(value);
                            return Err(parse_error("duplicate key"));
                        }
                        dict.insert(name, value);
                        match cursor.pop()?.kind {
                            TokenKind::RCurly => {}
                            TokenKind::Comma => {
                                cursor.peek()?;
                                break;
                            }
                            _ => return Err(parse_error("expected separator in dict")),
                        }
                    }
                },
            }
            // The container just closed; it is the value to hand on.
            value = match stack.pop() {
                Some(Frame::List(items)) => Value::List(items),
                Some(Frame::Dict { dict, .. }) => Value::Dict(dict),
                None => unreachable!("a frame was on the stack"),
            };
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

    /// Tokenises `text` naively (tests only feed well-separated tokens).
    fn parse_text(pieces: &[(TokenKind, &str)]) -> Result<Value, String> {
        let mut text = Vec::new();
        let tokens: Vec<Token> = pieces
            .iter()
            .map(|&(kind, piece)| {
                let start = text.len() as u32;
                text.extend_from_slice(piece.as_bytes());
                Token {
                    kind,
                    start,
                    len: piece.len() as u32,
                }
            })
            .collect();
        parse(&tokens, &text)
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
        let tokens = [Token {
            kind: TokenKind::String,
            start: 0,
            len: text.len() as u32,
        }];
        assert_eq!(parse(&tokens, &text), Ok(Value::Str("a\0b\0".into())));
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
