// SPDX-License-Identifier: LGPL-2.1-or-later
//! QEMU-format output (stub).

use super::value::Value;

pub fn greeting(version: &str) -> String {
    let _ = version;
    String::new()
}
pub fn event(name: &str, seconds: i64, micros: u32, data: Option<&str>) -> String {
    let _ = (name, seconds, micros, data);
    String::new()
}
pub fn error(class: &str, desc: &str, id: Option<&Value>) -> String {
    let _ = (class, desc, id);
    String::new()
}
pub fn to_text(value: &Value) -> String {
    let _ = value;
    String::new()
}
