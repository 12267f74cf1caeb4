// SPDX-License-Identifier: LGPL-2.1-or-later
//! QEMU's "modified UTF-8" helpers (util/unicode.c): decoding one sequence
//! exactly as `mod_utf8_codepoint` does, including how many bytes a bad
//! sequence consumes, which decides how many U+FFFD QEMU prints for it.

/// `is_valid_codepoint`: inside the Unicode range, not a surrogate, not one of
/// the 66 noncharacters.
pub(crate) fn is_valid_codepoint(codepoint: u32) -> bool {
    codepoint <= 0x10FFFF
        && !(0xFDD0..=0xFDEF).contains(&codepoint)
        && (codepoint & 0xFFFE) != 0xFFFE
        && !(0xD800..=0xDFFF).contains(&codepoint)
}

/// `cvt4hex`: the four hex digits at `position` of a `\u` escape, or None.
/// Bytes past the end read as the C string's NUL, which is not a hex digit.
pub(crate) fn hex4(bytes: &[u8], position: usize) -> Option<u32> {
    let digits = bytes.get(position..position.checked_add(4)?)?;
    digits.iter().try_fold(0, |codepoint, &byte| {
        Some((codepoint << 4) | char::from(byte).to_digit(16)?)
    })
}

/// `mod_utf8_codepoint(s, 6, &end)`: decodes the sequence at the start of
/// `bytes` and returns the code point (None if invalid) and the number of
/// bytes consumed. Bytes past the end of the slice read as NUL, like the C
/// string terminator. An empty slice or a leading NUL consumes nothing.
pub(crate) fn mod_utf8_codepoint(bytes: &[u8]) -> (Option<u32>, usize) {
    const MIN_CODEPOINT: [u32; 5] = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];
    let first = match bytes.first() {
        None | Some(0) => return (None, 0),
        Some(&byte) => u32::from(byte),
    };
    if first < 0x80 {
        return (Some(first), 1);
    }
    if first >= 0xFE || first & 0x40 == 0 {
        // Impossible byte, or a continuation byte where a sequence should start.
        return (None, 1);
    }
    let length = (first as u8).leading_ones() as usize;
    let mut codepoint = first & (0x7F >> length);
    for position in 1..length {
        let byte = u32::from(bytes.get(position).copied().unwrap_or(0));
        if byte & 0xC0 != 0x80 {
            return (None, position);
        }
        codepoint = (codepoint << 6) | (byte & 0x3F);
    }
    let overlong = codepoint < MIN_CODEPOINT[length - 2] && !(codepoint == 0 && length == 2);
    if !is_valid_codepoint(codepoint) || overlong {
        return (None, length);
    }
    (Some(codepoint), length)
}

/// The text QEMU ends up printing for a C string holding arbitrary bytes
/// (a `stray` token, a slice of a bad escape): it stops at the first NUL,
/// and every invalid sequence becomes U+FFFD (json-writer.c `quoted_str`).
pub(crate) fn decode_lossy(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(bytes.len());
    let mut rest = &bytes[..end];
    let mut text = String::with_capacity(rest.len());
    while !rest.is_empty() {
        let (codepoint, consumed) = mod_utf8_codepoint(rest);
        text.push(codepoint.and_then(char::from_u32).unwrap_or('\u{FFFD}'));
        rest = &rest[consumed..];
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_utf8_nul_is_accepted() {
        assert_eq!(mod_utf8_codepoint(b"\xC0\x80"), (Some(0), 2));
    }

    #[test]
    fn invalid_sequences_consume_like_qemu() {
        // Continuation byte alone: one byte.
        assert_eq!(mod_utf8_codepoint(b"\x80a"), (None, 1));
        // Truncated sequence: the lead byte plus the continuation bytes seen.
        assert_eq!(mod_utf8_codepoint(b"\xE2\x82a"), (None, 2));
        assert_eq!(mod_utf8_codepoint(b"\xE2"), (None, 1));
        // Overlong and surrogate forms are well-formed but invalid.
        assert_eq!(mod_utf8_codepoint(b"\xC1\x81"), (None, 2));
        assert_eq!(mod_utf8_codepoint(b"\xED\xA0\x80"), (None, 3));
        // Noncharacters.
        assert_eq!(mod_utf8_codepoint(b"\xEF\xBF\xBF"), (None, 3));
        assert_eq!(mod_utf8_codepoint(b"\xEF\xB7\x90"), (None, 3));
        assert_eq!(mod_utf8_codepoint(b"\xFF"), (None, 1));
        assert_eq!(
            mod_utf8_codepoint("\u{1F600}".as_bytes()),
            (Some(0x1F600), 4)
        );
    }

    #[test]
    fn lossy_decoding_stops_at_nul() {
        assert_eq!(decode_lossy(b"\"a\x00"), "\"a");
        assert_eq!(decode_lossy(b"\xFF"), "\u{FFFD}");
        assert_eq!(decode_lossy(b"\"\xC3\x01"), "\"\u{FFFD}\u{1}");
        assert_eq!(decode_lossy(b"\xC0\x80x"), "\0x");
    }
}
