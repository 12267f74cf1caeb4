// SPDX-License-Identifier: LGPL-2.1-or-later
//! QEMU's JSON lexer (qobject/json-lexer.c): the state transition table, with
//! its lookahead marks and the IN_RECOVERY state used to resynchronise after a
//! lexical error. Interpolation (`%d` and friends) is left out, as the QMP
//! monitor never enables it, so `%` is a lexical error.
//!
//! The driver loop (`json_lexer_feed_char`) lives in `stream.rs`, next to the
//! token buffer it fills.

/// A lexical error: the partial token, including the offending byte, is
/// reported as `stray '...'`.
pub(crate) const JSON_ERROR: u8 = 0;
/// Skipping bytes after an error until a resynchronisation point.
pub(crate) const IN_RECOVERY: u8 = 1;
const IN_DQ_STRING_ESCAPE: u8 = 2;
pub(crate) const IN_DQ_STRING: u8 = 3;
const IN_SQ_STRING_ESCAPE: u8 = 4;
pub(crate) const IN_SQ_STRING: u8 = 5;
const IN_ZERO: u8 = 6;
const IN_EXP_DIGITS: u8 = 7;
const IN_EXP_SIGN: u8 = 8;
const IN_EXP_E: u8 = 9;
const IN_MANTISSA: u8 = 10;
const IN_MANTISSA_DIGITS: u8 = 11;
const IN_DIGITS: u8 = 12;
const IN_SIGN: u8 = 13;
const IN_KEYWORD: u8 = 14;
/// Between tokens; whitespace stays here.
pub(crate) const IN_START: u8 = 15;
const STATE_COUNT: usize = 16;

/// Token kinds share the table's value space with the states (JSON_MIN = 100).
pub(crate) const TOKEN_MIN: u8 = 100;

/// A table entry with this bit set means the byte was not consumed: the
/// transition only ended the previous token, and the byte is looked at again.
pub(crate) const LOOKAHEAD: u8 = 0x80;

/// The kinds of token the lexer hands to the streamer (JSONTokenType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum TokenKind {
    LCurly = TOKEN_MIN,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    String,
}

impl TokenKind {
    /// The token kind a table value stands for, if it is one.
    pub(crate) fn from_table(value: u8) -> Option<TokenKind> {
        Some(match value {
            v if v == TokenKind::LCurly as u8 => TokenKind::LCurly,
            v if v == TokenKind::RCurly as u8 => TokenKind::RCurly,
            v if v == TokenKind::LSquare as u8 => TokenKind::LSquare,
            v if v == TokenKind::RSquare as u8 => TokenKind::RSquare,
            v if v == TokenKind::Colon as u8 => TokenKind::Colon,
            v if v == TokenKind::Comma as u8 => TokenKind::Comma,
            v if v == TokenKind::Integer as u8 => TokenKind::Integer,
            v if v == TokenKind::Float as u8 => TokenKind::Float,
            v if v == TokenKind::Keyword as u8 => TokenKind::Keyword,
            v if v == TokenKind::String as u8 => TokenKind::String,
            _ => return None,
        })
    }
}

/// A row where every byte is a lexical error (the C table's default).
const ERROR_ROW: [u8; 256] = [JSON_ERROR; 256];

/// Returns `row` with bytes `from..=to` mapped to `value`.
const fn set(mut row: [u8; 256], from: u8, to: u8, value: u8) -> [u8; 256] {
    let mut byte = from as usize;
    while byte <= to as usize {
        row[byte] = value;
        byte += 1;
    }
    row
}

/// `TERMINAL(state)`: every byte ends the token (with lookahead).
const fn terminal(kind: TokenKind) -> [u8; 256] {
    [kind as u8 | LOOKAHEAD; 256]
}

const fn build_table() -> [[u8; 256]; STATE_COUNT] {
    // Every entry not set below is JSON_ERROR, as in the C table.
    let mut table = [ERROR_ROW; STATE_COUNT];

    // Skip until a structural character, an ASCII control character other
    // than '\t', or one of the impossible UTF-8 bytes 0xFE/0xFF; restart
    // there without consuming it.
    let mut recovery = set(
        table[IN_RECOVERY as usize],
        0x00,
        0x1F,
        IN_START | LOOKAHEAD,
    );
    recovery = set(recovery, 0x20, 0xFD, IN_RECOVERY);
    recovery = set(recovery, 0xFE, 0xFF, IN_START | LOOKAHEAD);
    recovery[b'\t' as usize] = IN_RECOVERY;
    recovery[b'[' as usize] = IN_START | LOOKAHEAD;
    recovery[b']' as usize] = IN_START | LOOKAHEAD;
    recovery[b'{' as usize] = IN_START | LOOKAHEAD;
    recovery[b'}' as usize] = IN_START | LOOKAHEAD;
    recovery[b':' as usize] = IN_START | LOOKAHEAD;
    recovery[b',' as usize] = IN_START | LOOKAHEAD;
    table[IN_RECOVERY as usize] = recovery;

    // Strings: any byte 0x20..0xFD, validated later by the parser.
    table[IN_DQ_STRING_ESCAPE as usize] = set(ERROR_ROW, 0x20, 0xFD, IN_DQ_STRING);
    let mut dq_string = set(ERROR_ROW, 0x20, 0xFD, IN_DQ_STRING);
    dq_string[b'\\' as usize] = IN_DQ_STRING_ESCAPE;
    dq_string[b'"' as usize] = TokenKind::String as u8;
    table[IN_DQ_STRING as usize] = dq_string;

    table[IN_SQ_STRING_ESCAPE as usize] = set(ERROR_ROW, 0x20, 0xFD, IN_SQ_STRING);
    let mut sq_string = set(ERROR_ROW, 0x20, 0xFD, IN_SQ_STRING);
    sq_string[b'\\' as usize] = IN_SQ_STRING_ESCAPE;
    sq_string[b'\'' as usize] = TokenKind::String as u8;
    table[IN_SQ_STRING as usize] = sq_string;

    // Numbers.
    let mut zero = set(terminal(TokenKind::Integer), b'0', b'9', JSON_ERROR);
    zero[b'.' as usize] = IN_MANTISSA;
    table[IN_ZERO as usize] = zero;

    table[IN_EXP_DIGITS as usize] = set(terminal(TokenKind::Float), b'0', b'9', IN_EXP_DIGITS);

    table[IN_EXP_SIGN as usize] = set(ERROR_ROW, b'0', b'9', IN_EXP_DIGITS);

    let mut exp_e = set(ERROR_ROW, b'0', b'9', IN_EXP_DIGITS);
    exp_e[b'-' as usize] = IN_EXP_SIGN;
    exp_e[b'+' as usize] = IN_EXP_SIGN;
    table[IN_EXP_E as usize] = exp_e;

    let mut mantissa_digits = set(terminal(TokenKind::Float), b'0', b'9', IN_MANTISSA_DIGITS);
    mantissa_digits[b'e' as usize] = IN_EXP_E;
    mantissa_digits[b'E' as usize] = IN_EXP_E;
    table[IN_MANTISSA_DIGITS as usize] = mantissa_digits;

    table[IN_MANTISSA as usize] = set(ERROR_ROW, b'0', b'9', IN_MANTISSA_DIGITS);

    let mut digits = set(terminal(TokenKind::Integer), b'0', b'9', IN_DIGITS);
    digits[b'e' as usize] = IN_EXP_E;
    digits[b'E' as usize] = IN_EXP_E;
    digits[b'.' as usize] = IN_MANTISSA;
    table[IN_DIGITS as usize] = digits;

    let mut sign = set(ERROR_ROW, b'1', b'9', IN_DIGITS);
    sign[b'0' as usize] = IN_ZERO;
    table[IN_SIGN as usize] = sign;

    // Keywords: [a-z]+; the parser rejects unknown ones.
    table[IN_KEYWORD as usize] = set(terminal(TokenKind::Keyword), b'a', b'z', IN_KEYWORD);

    // Start state. Whitespace goes back to IN_START (the byte is consumed and
    // the token buffer emptied).
    let mut start = set(ERROR_ROW, b'1', b'9', IN_DIGITS);
    start = set(start, b'a', b'z', IN_KEYWORD);
    start[b'"' as usize] = IN_DQ_STRING;
    start[b'\'' as usize] = IN_SQ_STRING;
    start[b'0' as usize] = IN_ZERO;
    start[b'-' as usize] = IN_SIGN;
    start[b'{' as usize] = TokenKind::LCurly as u8;
    start[b'}' as usize] = TokenKind::RCurly as u8;
    start[b'[' as usize] = TokenKind::LSquare as u8;
    start[b']' as usize] = TokenKind::RSquare as u8;
    start[b',' as usize] = TokenKind::Comma as u8;
    start[b':' as usize] = TokenKind::Colon as u8;
    start[b' ' as usize] = IN_START;
    start[b'\t' as usize] = IN_START;
    start[b'\r' as usize] = IN_START;
    start[b'\n' as usize] = IN_START;
    table[IN_START as usize] = start;

    table
}

/// `json_lexer[][256]`, indexed by state and input byte.
pub(crate) static TRANSITIONS: [[u8; 256]; STATE_COUNT] = build_table();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_kinds_round_trip_through_the_table() {
        for value in 0..=255u8 {
            if let Some(kind) = TokenKind::from_table(value) {
                assert_eq!(kind as u8, value);
            }
        }
        assert_eq!(TokenKind::from_table(IN_START), None);
    }

    #[test]
    fn lookahead_only_on_terminals_and_recovery() {
        for (state, row) in TRANSITIONS.iter().enumerate() {
            for &entry in row {
                if entry & LOOKAHEAD != 0 {
                    let target = entry & !LOOKAHEAD;
                    assert!(
                        TokenKind::from_table(target).is_some()
                            || (state == IN_RECOVERY as usize && target == IN_START),
                        "state {state}"
                    );
                }
            }
        }
    }
}
