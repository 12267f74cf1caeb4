// SPDX-License-Identifier: LGPL-2.1-or-later
//! The QMP input stream: QEMU's lexer driver (`json_lexer_feed_char` in
//! qobject/json-lexer.c) and streamer (`json_message_process_token` in
//! qobject/json-streamer.c). Bytes go in; complete messages, lexical errors
//! and limit errors come out in the order QEMU would report them.
//!
//! QEMU queues a message's tokens and parses them once it is complete; here
//! each token goes to the parser as soon as the streamer accepts it, which
//! gives the same answers (the first error wins, and a limit error throws
//! the message away either way) without holding the tokens.

use super::lexer::{
    TokenKind, IN_DQ_STRING, IN_RECOVERY, IN_SQ_STRING, IN_START, JSON_ERROR, LOOKAHEAD,
    TRANSITIONS,
};
use super::parser::Parser;
use super::unicode::decode_lossy;
use super::value::Value;

/// Most token text one message may hold, and the longest single token.
const MAX_TOKEN_SIZE: usize = 64 << 20;
/// Most tokens one message may hold.
const MAX_TOKEN_COUNT: usize = 2 << 20;
/// Deepest nesting of `{` and `[` together.
const MAX_NESTING: i64 = 1 << 10;

/// A token buffer that grew past this for one big token is released once
/// it is done, so memory returns to its usual level.
const KEEP_TEXT_CAPACITY: usize = 256 << 10;

/// One item read from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A complete JSON value (not necessarily an object).
    Message(Value),
    /// A lexical, parse or limit error; holds QEMU's `desc` text, e.g.
    /// `JSON parse error, expecting value`.
    Error(String),
}

/// The per-connection JSON stream (QEMU's JSONMessageParser with its lexer).
#[derive(Debug)]
pub struct Stream {
    /// Lexer state.
    state: u8,
    /// The token being lexed.
    text: Vec<u8>,
    /// Tokens of the message so far.
    token_count: usize,
    parser: Parser,
    /// Total length of the message's token texts (structural ones included).
    token_size: usize,
    brace_count: i64,
    bracket_count: i64,
}

impl Default for Stream {
    fn default() -> Stream {
        Stream::new()
    }
}

impl Stream {
    pub fn new() -> Stream {
        Stream {
            state: IN_START,
            text: Vec::new(),
            token_count: 0,
            parser: Parser::default(),
            token_size: 0,
            brace_count: 0,
            bracket_count: 0,
        }
    }

    /// Feeds bytes read from the client; appends every message completed or
    /// error detected, in order.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Parsed>) {
        let mut position = 0;
        while position < bytes.len() {
            let run = self.plain_string_run(&bytes[position..]);
            if run > 0 {
                // Shortcut for the common bytes inside a string: each would
                // just stay in the string state.
                self.text
                    .extend_from_slice(&bytes[position..position + run]);
                position += run;
                self.limit_token_length(out);
            } else {
                self.feed_byte(bytes[position], out);
                position += 1;
            }
        }
    }

    /// How many of the next bytes keep a string token going unchanged,
    /// stopping where the token would pass the size limit.
    fn plain_string_run(&self, bytes: &[u8]) -> usize {
        let quote = match self.state {
            IN_DQ_STRING => b'"',
            IN_SQ_STRING => b'\'',
            _ => return 0,
        };
        let room = MAX_TOKEN_SIZE + 1 - self.current_len();
        bytes
            .iter()
            .take(room)
            .take_while(|&&byte| (0x20..=0xFD).contains(&byte) && byte != b'\\' && byte != quote)
            .count()
    }

    fn current_len(&self) -> usize {
        self.text.len()
    }

    /// Drops the token being lexed (`g_string_truncate(lexer->token, 0)`).
    fn clear_current(&mut self) {
        self.text.clear();
        if self.text.capacity() > KEEP_TEXT_CAPACITY {
            self.text = Vec::new();
        }
    }

    /// `json_lexer_feed_char`: runs the state machine on one byte; a byte
    /// that only ended the previous token (lookahead) is looked at again.
    fn feed_byte(&mut self, byte: u8, out: &mut Vec<Parsed>) {
        loop {
            let entry = TRANSITIONS[usize::from(self.state)][usize::from(byte)];
            let consumed = entry & LOOKAHEAD == 0;
            let next = entry & !LOOKAHEAD;
            if consumed {
                self.text.push(byte);
            }
            if let Some(kind) = TokenKind::from_table(next) {
                self.process_token(kind, out);
                self.clear_current();
                self.state = IN_START;
            } else {
                match next {
                    JSON_ERROR => {
                        self.report_stray(out);
                        self.state = IN_RECOVERY;
                    }
                    IN_START | IN_RECOVERY => {
                        self.clear_current();
                        self.state = next;
                    }
                    _ => self.state = next,
                }
            }
            if consumed {
                break;
            }
        }
        self.limit_token_length(out);
    }

    /// A single token may not grow past MAX_TOKEN_SIZE: QEMU hands the piece
    /// to the streamer, whose size check then always fails; the rest of the
    /// token is lexed as new input.
    fn limit_token_length(&mut self, out: &mut Vec<Parsed>) {
        if self.current_len() > MAX_TOKEN_SIZE {
            self.finish(out, Parsed::Error("JSON token size limit exceeded".into()));
            self.state = IN_START;
        }
    }

    /// A lexical error: the partial token, offending byte included, is
    /// reported, and the message so far is thrown away.
    fn report_stray(&mut self, out: &mut Vec<Parsed>) {
        let stray = decode_lossy(&self.text);
        self.finish(
            out,
            Parsed::Error(format!("JSON parse error, stray '{stray}'")),
        );
    }

    /// `json_message_process_token`: counts brackets, enforces the limits,
    /// and parses the message once it is balanced (or can never be).
    fn process_token(&mut self, kind: TokenKind, out: &mut Vec<Parsed>) {
        match kind {
            TokenKind::LCurly => self.brace_count += 1,
            TokenKind::RCurly => self.brace_count -= 1,
            TokenKind::LSquare => self.bracket_count += 1,
            TokenKind::RSquare => self.bracket_count -= 1,
            _ => {}
        }
        let len = self.current_len();
        if self.token_size + len + 1 > MAX_TOKEN_SIZE {
            return self.finish(out, Parsed::Error("JSON token size limit exceeded".into()));
        }
        if self.token_count + 1 > MAX_TOKEN_COUNT {
            return self.finish(out, Parsed::Error("JSON token count limit exceeded".into()));
        }
        if self.bracket_count + self.brace_count > MAX_NESTING {
            return self.finish(
                out,
                Parsed::Error("JSON nesting depth limit exceeded".into()),
            );
        }

        self.parser.token(kind, &self.text);
        self.token_count += 1;
        self.token_size += len;

        let open = self.brace_count > 0 || self.bracket_count > 0;
        if open && self.brace_count >= 0 && self.bracket_count >= 0 {
            return;
        }
        let parsed = match self.parser.finish() {
            Ok(value) => Parsed::Message(value),
            Err(desc) => Parsed::Error(desc),
        };
        self.finish(out, parsed);
    }

    /// Reports `item` and starts a new message (the `out_emit` path).
    fn finish(&mut self, out: &mut Vec<Parsed>, item: Parsed) {
        self.brace_count = 0;
        self.bracket_count = 0;
        self.token_count = 0;
        self.token_size = 0;
        self.clear_current();
        self.parser.reset();
        out.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::value::Dict;

    fn feed_all(chunks: &[&[u8]]) -> Vec<Parsed> {
        let mut stream = Stream::new();
        let mut out = Vec::new();
        for chunk in chunks {
            stream.feed(chunk, &mut out);
        }
        out
    }

    fn error(desc: &str) -> Parsed {
        Parsed::Error(desc.to_string())
    }

    fn errors_only(items: &[Parsed]) -> Vec<&str> {
        items
            .iter()
            .map(|item| match item {
                Parsed::Error(desc) => desc.as_str(),
                Parsed::Message(_) => "<message>",
            })
            .collect()
    }

    #[test]
    fn two_commands_in_one_write() {
        let out = feed_all(&[br#"{"execute":"a"}{"execute":"b"}"#]);
        assert_eq!(out.len(), 2);
        let mut expected = Dict::new();
        expected.insert("execute", Value::Str("b".into()));
        assert_eq!(out[1], Parsed::Message(Value::Dict(expected)));
    }

    #[test]
    fn command_split_over_writes() {
        let whole: &[u8] = "{\"execute\":\"nope\",\"id\":\"\u{e9}\"}".as_bytes();
        for split in 1..whole.len() {
            let out = feed_all(&[&whole[..split], &whole[split..]]);
            assert_eq!(out, feed_all(&[whole]), "split at {split}");
            assert_eq!(out.len(), 1);
        }
    }

    #[test]
    fn top_level_number_needs_a_delimiter() {
        let mut stream = Stream::new();
        let mut out = Vec::new();
        stream.feed(b"42", &mut out);
        assert!(out.is_empty());
        stream.feed(b" ", &mut out);
        assert_eq!(out, [Parsed::Message(Value::Int(42))]);
    }

    #[test]
    fn whitespace_only_gives_nothing() {
        assert!(feed_all(&[b"   \n\n\t\r\n  "]).is_empty());
    }

    #[test]
    fn stray_text_includes_offending_byte() {
        let out = feed_all(&[b"01\n-x\n1.}\n1e}\nT\n%d\n"]);
        assert_eq!(
            errors_only(&out),
            [
                "JSON parse error, stray '01'",
                "JSON parse error, stray '-x'",
                "JSON parse error, stray '1.}'",
                "JSON parse error, stray '1e}'",
                "JSON parse error, stray 'T'",
                "JSON parse error, stray '%'",
            ]
        );
    }

    #[test]
    fn recovery_skips_to_a_structural_character() {
        let out = feed_all(&[b"{\"execute\":\"nope\",\x01\"id\":1}"]);
        assert_eq!(
            errors_only(&out),
            [
                "JSON parse error, stray '\u{1}'",
                "JSON parse error, expecting value",
                "<message>",
                "JSON parse error, expecting value",
            ]
        );
    }

    #[test]
    fn nul_byte_truncates_stray_text() {
        let out = feed_all(&[b"\"a\x00\x00"]);
        assert_eq!(
            out,
            [
                error("JSON parse error, stray '\"a'"),
                error("JSON parse error, stray ''")
            ]
        );
    }

    #[test]
    fn invalid_utf8_in_stray_becomes_replacement_characters() {
        let out = feed_all(&[b"\xFF\xFE\n\"\xC3\x01"]);
        assert_eq!(
            errors_only(&out),
            [
                "JSON parse error, stray '\u{FFFD}'",
                "JSON parse error, stray '\u{FFFD}'",
                "JSON parse error, stray '\"\u{FFFD}\u{1}'",
            ]
        );
    }

    #[test]
    fn mismatched_brackets_swallow_until_balanced() {
        let out = feed_all(&[b"{\"a\":[}\n{\"execute\":\"nope\",\"id\":1}\n]\n{\"id\":2}"]);
        assert_eq!(
            errors_only(&out),
            ["JSON parse error, expecting value", "<message>"]
        );
    }

    #[test]
    fn stray_closer_is_a_message() {
        let out = feed_all(&[b"}]:,"]);
        assert_eq!(out.len(), 4);
        assert!(out
            .iter()
            .all(|item| *item == error("JSON parse error, expecting value")));
    }

    #[test]
    fn nesting_1024_is_accepted() {
        let input = format!("{}{}", "[".repeat(1024), "]".repeat(1024));
        let out = feed_all(&[input.as_bytes()]);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Parsed::Message(Value::List(_))));
        if let [Parsed::Message(value)] = out.as_slice() {
            assert_eq!(crate::qmp::to_text(value), input);
        }
        for item in out {
            if let Parsed::Message(value) = item {
                crate::qmp::value::dismantle(value);
            }
        }
    }

    #[test]
    fn nesting_1025_is_rejected() {
        let input = format!("{}{}", "[".repeat(1025), "]".repeat(3));
        let out = feed_all(&[input.as_bytes()]);
        assert_eq!(
            errors_only(&out),
            [
                "JSON nesting depth limit exceeded",
                "JSON parse error, expecting value",
                "JSON parse error, expecting value",
                "JSON parse error, expecting value",
            ]
        );
        let input = format!("{{\"id\":{}]]}}", "[".repeat(1024));
        assert_eq!(feed_all(&[input.as_bytes()]).len(), 4);
    }

    /// `[[]` + `,1` * extra + `]`: 2 * extra + 4 tokens.
    fn list_with_tokens(extra: usize) -> String {
        let mut input = String::from("[[]");
        input.push_str(&",1".repeat(extra));
        input.push(']');
        input
    }

    #[test]
    fn token_count_2_pow_21_is_accepted() {
        let input = list_with_tokens((MAX_TOKEN_COUNT - 4) / 2);
        let out = feed_all(&[input.as_bytes()]);
        assert!(matches!(out.as_slice(), [Parsed::Message(Value::List(_))]));
    }

    #[test]
    fn token_count_2_pow_21_plus_1_is_rejected() {
        // The last `1` is token 2^21 + 1 and is dropped with the message;
        // the closing bracket then stands alone.
        let input = list_with_tokens((MAX_TOKEN_COUNT - 4) / 2 + 1);
        let out = feed_all(&[input.as_bytes()]);
        assert_eq!(
            out,
            [
                error("JSON token count limit exceeded"),
                error("JSON parse error, expecting value"),
            ]
        );
    }

    #[test]
    fn token_size_limit_counts_all_token_text() {
        let string = format!("\"{}\"", "x".repeat((1 << 20) - 2)); // 1 MiB token
        let mut input = String::from("[");
        input.push_str(&vec![string.as_str(); 63].join(","));
        input.push(']');
        let out = feed_all(&[input.as_bytes()]);
        assert!(matches!(out.as_slice(), [Parsed::Message(_)]));

        let mut input = String::from("[");
        input.push_str(&vec![string.as_str(); 64].join(","));
        input.push(']');
        let out = feed_all(&[input.as_bytes()]);
        assert_eq!(
            errors_only(&out),
            [
                "JSON token size limit exceeded",
                "JSON parse error, expecting value"
            ]
        );
    }

    #[test]
    fn single_token_over_64_mib_is_cut() {
        let mut stream = Stream::new();
        let mut out = Vec::new();
        stream.feed(b"\"", &mut out);
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..63 {
            stream.feed(&chunk, &mut out);
        }
        stream.feed(&chunk[1..], &mut out);
        assert!(out.is_empty());
        // The token is now exactly 64 MiB long: one more byte exceeds it.
        stream.feed(b"x", &mut out);
        assert_eq!(errors_only(&out), ["JSON token size limit exceeded"]);
        assert!(stream.text.capacity() <= KEEP_TEXT_CAPACITY);
        // The rest is lexed as new input: a keyword, then a stray quote.
        out.clear();
        stream.feed(b"xyz\" ", &mut out);
        assert_eq!(
            errors_only(&out),
            ["JSON parse error, invalid keyword 'xyz'"]
        );
    }

    #[test]
    fn buffers_shrink_after_a_huge_message() {
        let mut stream = Stream::new();
        let mut out = Vec::new();
        let big = format!("[\"{}\"]", "x".repeat(4 << 20));
        stream.feed(big.as_bytes(), &mut out);
        assert_eq!(out.len(), 1);
        assert!(stream.text.capacity() <= KEEP_TEXT_CAPACITY);
    }

    #[test]
    fn single_quoted_strings_and_escapes() {
        let out = feed_all(&[br#"['a"b', "c\'d", '\u00e9\/']"#]);
        assert_eq!(
            out,
            [Parsed::Message(Value::List(vec![
                Value::Str("a\"b".into()),
                Value::Str("c'd".into()),
                Value::Str("\u{e9}/".into()),
            ]))]
        );
    }

    #[test]
    fn raw_control_characters_end_strings() {
        // Tab does not end recovery, so each error needs a line break after it.
        let out = feed_all(&[b"\"x\n\n\"\t\n\"\x7f\" "]);
        assert_eq!(
            out,
            [
                error("JSON parse error, stray '\"x\n'"),
                error("JSON parse error, stray '\"\t'"),
                Parsed::Message(Value::Str("\u{7f}".into())),
            ]
        );
    }

    #[test]
    fn arguments_are_checked_like_any_object() {
        let out = feed_all(&[br#"{"execute":"x","arguments":{"a":1,"b":{"c":[]},"a":2}}
{"arguments":{"a":[1 2]},"execute":"x"}
{"execute":"x","arguments":{"a":{1:2}}}
{"execute":"x","arguments":{"a":"\x"},"arguments":{}}
{"execute":"x","arguments":{"a":1},"arguments":{}}"#]);
        assert_eq!(
            errors_only(&out),
            [
                "JSON parse error, duplicate key",
                "JSON parse error, expected separator in list",
                "JSON parse error, key is not a string in object",
                "JSON parse error, invalid escape sequence in string",
                "JSON parse error, duplicate key",
            ]
        );
        let out = feed_all(&[br#"{"arguments":{"b":'\u00e9"',"a":[1E2,-0]},"id":1}"#]);
        let [Parsed::Message(Value::Dict(request))] = out.as_slice() else {
            panic!("one message: {out:?}");
        };
        assert_eq!(
            request.get("arguments"),
            Some(&Value::Compact(
                "{\"b\":\"\u{e9}\\\"\",\"a\":[100.0,0]}".into()
            ))
        );
    }
}
