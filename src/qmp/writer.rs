// SPDX-License-Identifier: LGPL-2.1-or-later
//! Printing values: QEMU's own format (qobject/json-writer.c, as used by
//! `qobject_to_json`), and the compact JSON the proxy hands to libvirt.
//! Both walk the value with an explicit stack, so nesting depth costs heap,
//! not call stack.

use super::unicode::is_valid_codepoint;
use super::value::{Dict, Value};

/// Which of the two output formats to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// QEMU's: `": "` and `", "`, QDict member order, ASCII-only strings,
    /// `%.17g` doubles.
    Qemu,
    /// For libvirt: no spaces, insertion order, raw UTF-8, doubles that
    /// parse back to the same double.
    Compact,
}

/// QEMU's text for `value` (`qobject_to_json`).
pub fn to_text(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, Style::Qemu, usize::MAX);
    out
}

/// Appends QEMU's text for `value`.
pub(crate) fn write_qemu(out: &mut String, value: &Value) {
    write_value(out, value, Style::Qemu, usize::MAX);
}

/// Compact JSON of an object for libvirt: members in insertion order (a
/// command's `arguments`, in the client's order), strings as raw UTF-8 with
/// only the escapes JSON requires, numbers that QEMU parses back to the same
/// QNum (integers stay integers, doubles keep a `.` or an exponent). A
/// container at nesting level `levels` (the dict itself is level 1) is
/// written empty, so that the text is at most `levels` deep.
pub(crate) fn write_compact_dict(out: &mut String, dict: &Dict, levels: usize) {
    if levels <= 1 {
        out.push_str("{}");
        return;
    }
    out.push('{');
    let stack = vec![dict_frame(dict, Style::Compact)];
    write_frames(out, None, stack, Style::Compact, levels, usize::MAX);
}

/// The first `limit` bytes (cut at a character boundary) of the compact JSON
/// of `value`, for the log: a client's id can be huge, so writing stops once
/// the limit is passed.
pub(crate) fn compact_prefix(value: &Value, limit: usize) -> String {
    let mut out = String::new();
    write_frames(
        &mut out,
        Some(value),
        Vec::new(),
        Style::Compact,
        usize::MAX,
        limit,
    );
    if out.len() > limit {
        let mut end = limit;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// Compact JSON of a scalar for libvirt, as [`write_compact_dict`] writes it.
pub(crate) fn write_compact_scalar(out: &mut String, value: &Value) {
    write_scalar(out, value, Style::Compact);
}

/// A container being printed.
enum Frame<'a> {
    List {
        items: std::slice::Iter<'a, Value>,
        started: bool,
    },
    Dict {
        dict: &'a Dict,
        /// QDict order for QEMU's style; None means insertion order.
        order: Option<Vec<usize>>,
        next: usize,
    },
}

fn dict_frame(dict: &Dict, style: Style) -> Frame<'_> {
    let order = (style == Style::Qemu).then(|| dict.qdict_order());
    Frame::Dict {
        dict,
        order,
        next: 0,
    }
}

fn write_value(out: &mut String, root: &Value, style: Style, levels: usize) {
    write_frames(out, Some(root), Vec::new(), style, levels, usize::MAX);
}

/// Writes `pending`, then closes every container open on `stack`; gives up
/// as soon as `out` is longer than `limit` bytes.
fn write_frames<'a>(
    out: &mut String,
    mut pending: Option<&'a Value>,
    mut stack: Vec<Frame<'a>>,
    style: Style,
    levels: usize,
    limit: usize,
) {
    let (separator, name_separator) = match style {
        Style::Qemu => (", ", ": "),
        Style::Compact => (",", ":"),
    };
    loop {
        if let Some(value) = pending.take() {
            let full = stack.len() + 1 >= levels;
            match value {
                Value::List(_) if full => out.push_str("[]"),
                Value::Dict(_) | Value::Compact(_) if full => out.push_str("{}"),
                Value::Compact(text) => match style {
                    Style::Compact => out.push_str(text),
                    // Only for logging: QEMU's separators and escapes, the
                    // client's member order.
                    Style::Qemu => {
                        let start = out.len();
                        if super::relay::reprint_text(out, text).is_err() {
                            out.truncate(start);
                            out.push_str("{}");
                        }
                    }
                },
                Value::List(items) => {
                    out.push('[');
                    stack.push(Frame::List {
                        items: items.iter(),
                        started: false,
                    });
                }
                Value::Dict(dict) => {
                    out.push('{');
                    stack.push(dict_frame(dict, style));
                }
                scalar => write_scalar(out, scalar, style),
            }
        }
        if out.len() > limit {
            return;
        }
        let Some(frame) = stack.last_mut() else {
            return;
        };
        match frame {
            Frame::List { items, started } => match items.next() {
                Some(item) => {
                    if *started {
                        out.push_str(separator);
                    }
                    *started = true;
                    pending = Some(item);
                }
                None => {
                    out.push(']');
                    stack.pop();
                }
            },
            Frame::Dict { dict, order, next } => {
                if *next == dict.len() {
                    out.push('}');
                    stack.pop();
                } else {
                    let position = order.as_ref().map_or(*next, |order| order[*next]);
                    if *next > 0 {
                        out.push_str(separator);
                    }
                    *next += 1;
                    let (key, item) = dict.member(position);
                    write_string(out, key, style);
                    out.push_str(name_separator);
                    pending = Some(item);
                }
            }
        }
    }
}

fn write_scalar(out: &mut String, value: &Value, style: Style) {
    use std::fmt::Write;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(number) => {
            let _ = write!(out, "{number}");
        }
        Value::UInt(number) => {
            let _ = write!(out, "{number}");
        }
        Value::Double(number) => match style {
            Style::Qemu => out.push_str(&format_double(*number)),
            Style::Compact => write_double_round_trip(out, *number),
        },
        Value::Str(text) => write_string(out, text, style),
        Value::List(_) | Value::Dict(_) | Value::Compact(_) => {
            unreachable!("containers are not scalars")
        }
    }
}

fn write_string(out: &mut String, text: &str, style: Style) {
    match style {
        Style::Qemu => quote_qemu(out, text),
        Style::Compact => quote_compact(out, text),
    }
}

/// A double that QEMU's strtod reads back exactly, and as a double: Rust's
/// shortest round-trip form always has a `.` or an exponent. Infinities are
/// written as out-of-range numbers, which strtod turns back into infinities.
fn write_double_round_trip(out: &mut String, number: f64) {
    use std::fmt::Write;
    if number.is_infinite() {
        out.push_str(if number > 0.0 { "1e999" } else { "-1e999" });
    } else if number.is_nan() {
        // Not produced by parsing JSON; QEMU cannot read any text back as NaN.
        out.push_str("null");
    } else {
        let _ = write!(out, "{number:?}");
    }
}

/// `quoted_str`: a string in QEMU's output, ASCII only.
pub(crate) fn quote_qemu(out: &mut String, text: &str) {
    out.push('"');
    let mut plain_start = 0;
    for (offset, ch) in text.char_indices() {
        if is_plain_ascii(ch) {
            continue;
        }
        out.push_str(&text[plain_start..offset]);
        push_codepoint_qemu(out, u32::from(ch));
        plain_start = offset + ch.len_utf8();
    }
    out.push_str(&text[plain_start..]);
    out.push('"');
}

/// Printable ASCII that QEMU copies unchanged into a string.
fn is_plain_ascii(ch: char) -> bool {
    (' '..='~').contains(&ch) && ch != '"' && ch != '\\'
}

/// One code point the way `quoted_str` prints it.
pub(crate) fn push_codepoint_qemu(out: &mut String, codepoint: u32) {
    use std::fmt::Write;
    match codepoint {
        0x22 => out.push_str("\\\""),
        0x5C => out.push_str("\\\\"),
        0x08 => out.push_str("\\b"),
        0x0C => out.push_str("\\f"),
        0x0A => out.push_str("\\n"),
        0x0D => out.push_str("\\r"),
        0x09 => out.push_str("\\t"),
        _ => {
            // mod_utf8_codepoint refuses noncharacters and surrogates; the
            // writer prints those as the replacement character.
            let codepoint = if is_valid_codepoint(codepoint) {
                codepoint
            } else {
                0xFFFD
            };
            if codepoint > 0xFFFF {
                let offset = codepoint - 0x10000;
                let _ = write!(
                    out,
                    "\\u{:04X}\\u{:04X}",
                    0xD800 + (offset >> 10),
                    0xDC00 + (offset & 0x3FF)
                );
            } else if !(0x20..0x7F).contains(&codepoint) {
                let _ = write!(out, "\\u{codepoint:04X}");
            } else {
                out.push(char::from(codepoint as u8));
            }
        }
    }
}

/// A string for libvirt: raw UTF-8, escaping only what JSON requires.
pub(crate) fn quote_compact(out: &mut String, text: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut plain_start = 0;
    for (offset, ch) in text.char_indices() {
        let escape = match ch {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            ch if ch < ' ' => "",
            _ => continue,
        };
        out.push_str(&text[plain_start..offset]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", u32::from(ch));
        } else {
            out.push_str(escape);
        }
        plain_start = offset + ch.len_utf8();
    }
    out.push_str(&text[plain_start..]);
    out.push('"');
}

/// C's `printf("%.17g", number)`, as QEMU prints doubles.
pub(crate) fn format_double(number: f64) -> String {
    if number.is_nan() {
        return if number.is_sign_negative() {
            "-nan"
        } else {
            "nan"
        }
        .into();
    }
    if number.is_infinite() {
        return if number < 0.0 { "-inf" } else { "inf" }.into();
    }
    // 17 significant digits, correctly rounded like glibc: d.dddddddddddddddde±x
    let scientific = format!("{:.16e}", number.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("LowerExp output has an exponent");
    let exponent: i32 = exponent.parse().expect("LowerExp exponent is a number");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if number.is_sign_negative() { "-" } else { "" };

    // %g: exponential if the exponent is < -4 or >= the precision, then
    // trailing zeros (and a trailing point) are removed.
    if !(-4..17).contains(&exponent) {
        let significant = digits.trim_end_matches('0');
        let (first, rest) = significant.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{sign}{first}{point}{rest}e{exponent_sign}{:02}",
            exponent.abs()
        )
    } else if exponent >= 0 {
        let (integer, fraction) = digits.split_at(exponent as usize + 1);
        let fraction = fraction.trim_end_matches('0');
        let point = if fraction.is_empty() { "" } else { "." };
        format!("{sign}{integer}{point}{fraction}")
    } else {
        let zeros = "0".repeat((-exponent - 1) as usize);
        let fraction = digits.trim_end_matches('0');
        format!("{sign}0.{zeros}{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(value: &Value) -> String {
        let mut out = String::new();
        write_value(&mut out, value, Style::Compact, usize::MAX);
        out
    }

    #[test]
    fn doubles_print_like_printf_17g() {
        let cases = [
            (1.5, "1.5"),
            (0.1, "0.10000000000000001"),
            (100.0, "100"),
            (1.0, "1"),
            (-0.0, "-0"),
            (0.0, "0"),
            (18446744073709551616.0, "1.8446744073709552e+19"),
            (1e16, "10000000000000000"),
            (1e17, "1e+17"),
            (1.25e-5, "1.2500000000000001e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012344999999999999"),
            (1e300, "1.0000000000000001e+300"),
            (5e-324, "4.9406564584124654e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (123456789.125, "123456789.125"),
            (-2.5, "-2.5"),
        ];
        for (number, expected) in cases {
            assert_eq!(format_double(number), expected, "{number:e}");
        }
    }

    #[test]
    fn strings_are_ascii_only_with_upper_case_escapes() {
        let mut out = String::new();
        quote_qemu(
            &mut out,
            "a\"\\/\u{8}\u{c}\n\r\t\u{1}\u{7f}\u{e9}\u{1F600}\0'",
        );
        assert_eq!(
            out,
            r#""a\"\\/\b\f\n\r\t\u0001\u007F\u00E9\uD83D\uDE00\u0000'""#
        );
    }

    #[test]
    fn noncharacters_print_as_replacement() {
        let mut out = String::new();
        quote_qemu(&mut out, "\u{FFFE}\u{FDD0}");
        assert_eq!(out, r#""\uFFFD\uFFFD""#);
    }

    #[test]
    fn containers_use_qemu_separators_and_order() {
        let mut inner = Dict::new();
        inner.insert("b", Value::Int(1));
        inner.insert("a", Value::List(vec![Value::Null, Value::Bool(true)]));
        inner.insert("c", Value::Dict(Dict::new()));
        let value = Value::List(vec![Value::Dict(inner), Value::List(vec![])]);
        assert_eq!(
            to_text(&value),
            r#"[{"a": [null, true], "b": 1, "c": {}}, []]"#
        );
        assert_eq!(compact(&value), r#"[{"b":1,"a":[null,true],"c":{}},[]]"#);
    }

    #[test]
    fn compact_keeps_utf8_and_number_kinds() {
        let value = Value::List(vec![
            Value::Str("\u{e9}\"\n\u{1}\0".into()),
            Value::Int(-3),
            Value::UInt(u64::MAX),
            Value::Double(100.0),
            Value::Double(1e-7),
            Value::Double(-0.0),
            Value::Double(f64::INFINITY),
        ]);
        assert_eq!(
            compact(&value),
            "[\"\u{e9}\\\"\\n\\u0001\\u0000\",-3,18446744073709551615,100.0,1e-7,-0.0,1e999]"
        );
    }

    #[test]
    fn compact_prefix_stops_at_the_limit() {
        let value = Value::List(vec![Value::Str("\u{e9}".repeat(300)); 10_000]);
        // `["` and then two bytes a character: 201 would cut one in half.
        let text = compact_prefix(&value, 201);
        assert_eq!(text.len(), 200);
        assert!(text.starts_with("[\"\u{e9}"));
        assert_eq!(compact_prefix(&Value::Int(-1), 200), "-1");
        assert_eq!(compact_prefix(&value, 1), "[");
    }

    #[test]
    fn deep_value_prints_on_a_small_stack() {
        let mut value = Value::Null;
        for _ in 0..100_000 {
            value = Value::List(vec![value]);
        }
        let text = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let text = to_text(&value);
                super::super::value::dismantle(value);
                text
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(text.len(), 200_004);
    }
}
