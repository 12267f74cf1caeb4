// SPDX-License-Identifier: LGPL-2.1-or-later
//! Re-printing JSON text that libvirt relays from QEMU (replies, events, the
//! version) in QEMU's own format, in a single pass over the text and without
//! building a tree: separators become `": "` and `", "`, strings are decoded
//! and re-encoded the way json-writer.c's `quoted_str` does it, and member
//! order and number texts are kept, as they already are QEMU's.

use super::unicode::hex4;
use super::writer::push_codepoint_qemu;

/// The text is not the JSON it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

fn skip_whitespace(bytes: &[u8], mut position: usize) -> usize {
    while matches!(bytes.get(position), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        position += 1;
    }
    position
}

/// Re-prints the JSON value starting at `start` (after optional whitespace)
/// into `out`, and returns the position just after it. Nesting is tracked
/// with a counter, so depth costs nothing.
pub(crate) fn reprint_value(
    out: &mut String,
    text: &str,
    start: usize,
) -> Result<usize, Malformed> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut position = start;
    loop {
        position = skip_whitespace(bytes, position);
        let byte = *bytes.get(position).ok_or(Malformed)?;
        match byte {
            b'{' | b'[' => {
                out.push(char::from(byte));
                depth += 1;
                position += 1;
                continue;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1).ok_or(Malformed)?;
                out.push(char::from(byte));
                position += 1;
            }
            b':' | b',' if depth > 0 => {
                out.push(char::from(byte));
                out.push(' ');
                position += 1;
                continue;
            }
            b'"' => position = reprint_string(out, text, position)?,
            _ => {
                // Numbers and keywords: copied as QEMU sent them.
                let end = bytes[position..]
                    .iter()
                    .position(|&byte| {
                        matches!(
                            byte,
                            b',' | b':'
                                | b']'
                                | b'}'
                                | b'{'
                                | b'['
                                | b'"'
                                | b' '
                                | b'\t'
                                | b'\r'
                                | b'\n'
                        )
                    })
                    .map_or(bytes.len(), |offset| position + offset);
                if end == position {
                    return Err(Malformed);
                }
                out.push_str(&text[position..end]);
                position = end;
            }
        }
        if depth == 0 {
            return Ok(position);
        }
    }
}

/// Decodes the JSON string at `start` (its opening quote), handing each
/// piece to `sink`: runs of printable ASCII that need no escaping as text,
/// everything else as a code point. Returns the position after the closing quote.
fn scan_string(
    text: &str,
    start: usize,
    mut sink: impl FnMut(Piece<'_>),
) -> Result<usize, Malformed> {
    let bytes = text.as_bytes();
    let mut position = start + 1;
    loop {
        let run = bytes[position..]
            .iter()
            .take_while(|&&byte| (0x20..0x7F).contains(&byte) && byte != b'"' && byte != b'\\')
            .count();
        if run > 0 {
            sink(Piece::Plain(&text[position..position + run]));
            position += run;
        }
        let byte = *bytes.get(position).ok_or(Malformed)?;
        match byte {
            b'"' => return Ok(position + 1),
            b'\\' => {
                let escaped = *bytes.get(position + 1).ok_or(Malformed)?;
                position += 2;
                let codepoint = match escaped {
                    b'"' => 0x22,
                    b'\\' => 0x5C,
                    b'/' => 0x2F,
                    b'\'' => 0x27,
                    b'b' => 0x08,
                    b'f' => 0x0C,
                    b'n' => 0x0A,
                    b'r' => 0x0D,
                    b't' => 0x09,
                    b'u' => {
                        let mut codepoint = hex4(bytes, position).ok_or(Malformed)?;
                        position += 4;
                        if (0xD800..0xDC00).contains(&codepoint)
                            && bytes.get(position..position + 2) == Some(b"\\u")
                        {
                            if let Some(low @ 0xDC00..=0xDFFF) = hex4(bytes, position + 2) {
                                codepoint = 0x10000 + ((codepoint - 0xD800) << 10) + (low - 0xDC00);
                                position += 6;
                            }
                        }
                        codepoint
                    }
                    _ => return Err(Malformed),
                };
                sink(Piece::Codepoint(codepoint));
            }
            _ => {
                // Raw UTF-8 (the text is a &str, so this is a whole character)
                // or a raw control character.
                let ch = text[position..].chars().next().ok_or(Malformed)?;
                sink(Piece::Codepoint(u32::from(ch)));
                position += ch.len_utf8();
            }
        }
    }
}

enum Piece<'a> {
    Plain(&'a str),
    Codepoint(u32),
}

/// Re-encodes the string at `start` QEMU-style.
fn reprint_string(out: &mut String, text: &str, start: usize) -> Result<usize, Malformed> {
    out.push('"');
    let end = scan_string(text, start, |piece| match piece {
        Piece::Plain(run) => out.push_str(run),
        Piece::Codepoint(codepoint) => push_codepoint_qemu(out, codepoint),
    })?;
    out.push('"');
    Ok(end)
}

/// Decodes the string at `start` (a member name); lone surrogates, which
/// Rust strings cannot hold, become U+FFFD.
fn decode_string(text: &str, start: usize) -> Result<(String, usize), Malformed> {
    let mut decoded = String::new();
    let end = scan_string(text, start, |piece| match piece {
        Piece::Plain(run) => decoded.push_str(run),
        Piece::Codepoint(codepoint) => {
            decoded.push(char::from_u32(codepoint).unwrap_or('\u{FFFD}'));
        }
    })?;
    Ok((decoded, end))
}

/// Re-prints the list at `start` like [`reprint_value`], leaving out the
/// elements for which `keep`, given an element's text as libvirt wrote it,
/// says false. A value that is not a list is re-printed whole.
pub(crate) fn reprint_list_filtered(
    out: &mut String,
    text: &str,
    start: usize,
    mut keep: impl FnMut(&str) -> bool,
) -> Result<usize, Malformed> {
    let bytes = text.as_bytes();
    let mut position = skip_whitespace(bytes, start);
    if bytes.get(position) != Some(&b'[') {
        return reprint_value(out, text, start);
    }
    out.push('[');
    position = skip_whitespace(bytes, position + 1);
    if bytes.get(position) == Some(&b']') {
        out.push(']');
        return Ok(position + 1);
    }
    let mut element = String::new();
    let mut kept = false;
    loop {
        element.clear();
        let end = reprint_value(&mut element, text, position)?;
        if keep(&text[position..end]) {
            if kept {
                out.push_str(", ");
            }
            out.push_str(&element);
            kept = true;
        }
        position = skip_whitespace(bytes, end);
        match bytes.get(position) {
            Some(b',') => position = skip_whitespace(bytes, position + 1),
            Some(b']') => {
                out.push(']');
                return Ok(position + 1);
            }
            _ => return Err(Malformed),
        }
    }
}

/// The string values of the members `names` of the object in `text` (None
/// for a member that is missing or not a string; the first of repeats).
pub(crate) fn string_members<const N: usize>(
    text: &str,
    names: [&str; N],
) -> Result<[Option<String>; N], Malformed> {
    let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut scratch = String::new();
    for_each_member(text, |name, start| {
        let position = skip_whitespace(text.as_bytes(), start);
        if let Some(index) = names.iter().position(|wanted| *wanted == name) {
            if found[index].is_none() && text.as_bytes().get(position) == Some(&b'"') {
                let (value, end) = decode_string(text, position)?;
                found[index] = Some(value);
                return Ok(end);
            }
        }
        scratch.clear();
        reprint_value(&mut scratch, text, start)
    })?;
    Ok(found)
}

/// Re-prints a whole text holding one JSON value.
pub(crate) fn reprint_text(out: &mut String, text: &str) -> Result<(), Malformed> {
    let end = reprint_value(out, text, 0)?;
    if skip_whitespace(text.as_bytes(), end) != text.len() {
        return Err(Malformed);
    }
    Ok(())
}

/// Walks the members of the top-level object in `text`, calling `member`
/// with each name and the position of its value; `member` must return the
/// position after the value.
pub(crate) fn for_each_member(
    text: &str,
    mut member: impl FnMut(&str, usize) -> Result<usize, Malformed>,
) -> Result<(), Malformed> {
    let bytes = text.as_bytes();
    let mut position = skip_whitespace(bytes, 0);
    if bytes.get(position) != Some(&b'{') {
        return Err(Malformed);
    }
    position = skip_whitespace(bytes, position + 1);
    if bytes.get(position) == Some(&b'}') {
        return finish_object(bytes, position);
    }
    loop {
        if bytes.get(position) != Some(&b'"') {
            return Err(Malformed);
        }
        let (name, after_name) = decode_string(text, position)?;
        position = skip_whitespace(bytes, after_name);
        if bytes.get(position) != Some(&b':') {
            return Err(Malformed);
        }
        position = member(&name, position + 1)?;
        position = skip_whitespace(bytes, position);
        match bytes.get(position) {
            Some(b',') => position = skip_whitespace(bytes, position + 1),
            Some(b'}') => return finish_object(bytes, position),
            _ => return Err(Malformed),
        }
    }
}

/// Checks that nothing but whitespace follows the closing brace at `position`.
fn finish_object(bytes: &[u8], position: usize) -> Result<(), Malformed> {
    if skip_whitespace(bytes, position + 1) == bytes.len() {
        Ok(())
    } else {
        Err(Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reprint(text: &str) -> String {
        let mut out = String::new();
        reprint_text(&mut out, text).unwrap();
        out
    }

    #[test]
    fn separators_gain_spaces_and_order_is_kept() {
        assert_eq!(
            reprint(r#"{"status":"running","singlestep":false,"running":true}"#),
            r#"{"status": "running", "singlestep": false, "running": true}"#
        );
        assert_eq!(
            reprint(r#"[{},[],{"a":[1,2.50,-0]}]"#),
            r#"[{}, [], {"a": [1, 2.50, -0]}]"#
        );
    }

    #[test]
    fn strings_are_reencoded_like_qemu() {
        assert_eq!(
            reprint("\"\u{e9}\\u00e9\\ud83d\\ude00\u{1F600}\\/\\u001f\\n\u{7f}\""),
            r#""\u00E9\u00E9\uD83D\uDE00\uD83D\uDE00/\u001F\n\u007F""#
        );
    }

    #[test]
    fn whitespace_in_input_is_tolerated() {
        assert_eq!(reprint(" { \"a\" : [ 1 , 2 ] } "), r#"{"a": [1, 2]}"#);
    }

    #[test]
    fn malformed_text_is_reported() {
        let mut out = String::new();
        assert_eq!(reprint_text(&mut out, r#"{"a":1"#), Err(Malformed));
        assert_eq!(reprint_text(&mut out, r#"{"a":1}}"#), Err(Malformed));
        assert_eq!(reprint_text(&mut out, r#""abc"#), Err(Malformed));
        assert_eq!(reprint_text(&mut out, ""), Err(Malformed));
    }

    #[test]
    fn filtered_list_keeps_the_format_of_the_kept_elements() {
        let text = r#"[ {"n":1} ,"x",[2,3],{"n":"\u00e9"}]"#;
        let mut out = String::new();
        let end = reprint_list_filtered(&mut out, text, 0, |element| element != r#""x""#).unwrap();
        assert_eq!(end, text.len());
        assert_eq!(out, r#"[{"n": 1}, [2, 3], {"n": "\u00E9"}]"#);
        out.clear();
        reprint_list_filtered(&mut out, text, 0, |_| false).unwrap();
        assert_eq!(out, "[]");
        out.clear();
        reprint_list_filtered(&mut out, " [ ] ", 0, |_| true).unwrap();
        assert_eq!(out, "[]");
        out.clear();
        reprint_list_filtered(&mut out, r#"{"a":[1]}"#, 0, |_| false).unwrap();
        assert_eq!(out, r#"{"a": [1]}"#);
        assert_eq!(
            reprint_list_filtered(&mut out, "[1,", 0, |_| true),
            Err(Malformed)
        );
    }

    #[test]
    fn string_members_are_decoded() {
        let text = r#"{"arg-type":"0","name":"qu\u0069t","meta-type":1,"name":"x"}"#;
        assert_eq!(
            string_members(text, ["name", "meta-type", "nope"]).unwrap(),
            [Some("quit".to_owned()), None, None]
        );
        assert_eq!(string_members("[]", ["name"]), Err(Malformed));
    }

    #[test]
    fn members_are_found_with_their_values() {
        let text = r#"{"return":{"a":[1]},"id":"libvirt-12"}"#;
        let mut seen = Vec::new();
        for_each_member(text, |name, start| {
            let mut value = String::new();
            let end = reprint_value(&mut value, text, start)?;
            seen.push((name.to_string(), value));
            Ok(end)
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                ("return".to_string(), r#"{"a": [1]}"#.to_string()),
                ("id".to_string(), r#""libvirt-12""#.to_string())
            ]
        );
    }
}
