// SPDX-License-Identifier: LGPL-2.1-or-later
//! QEMU's QObject model: [`Value`] mirrors QNull/QBool/QNum/QString/QList/QDict,
//! and [`Dict`] reproduces QDict's member order (qobject/qdict.c), which is what
//! QEMU uses when it prints an object and when it validates a request.

use std::collections::HashMap;

/// A JSON value as QEMU holds it after parsing.
///
/// Numbers keep QNum's three kinds: integers that fit in `i64` are `Int`,
/// larger non-negative ones that fit in `u64` are `UInt`, anything else is
/// `Double`. `Str` holds the decoded text; QEMU's "modified UTF-8" U+0000 is `'\0'`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
    List(Vec<Value>),
    Dict(Dict),
    /// An object the parser wrote straight as compact JSON for libvirt,
    /// members in the client's order: a command's `arguments`, which are
    /// passed on, so they need no tree (see `parser`).
    Compact(String),
}

impl Value {
    /// The string, if this is a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The dictionary, if this is a `Dict`.
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(dict) => Some(dict),
            _ => None,
        }
    }

    /// The elements, if this is a `List`.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }
}

/// Number of QDict hash buckets (QDICT_BUCKET_MAX in include/qapi/qmp/qdict.h).
const QDICT_BUCKETS: u32 = 512;

/// Above this many members, lookups go through a hash index instead of a scan,
/// so that parsing a huge object stays linear.
const INDEX_THRESHOLD: usize = 16;

#[derive(Debug, Clone)]
struct Member {
    key: String,
    bucket: u16,
    value: Value,
}

/// A JSON object with QDict semantics.
///
/// Members are stored in insertion order; [`Dict::iter`] walks them in QDict
/// order (ascending hash bucket, and within a bucket the member inserted last
/// first), which is how QEMU prints and validates objects.
#[derive(Debug, Clone, Default)]
pub struct Dict {
    members: Vec<Member>,
    index: Option<Box<KeyIndex>>,
}

/// Positions of the members by name, for large dicts. Boxed in [`Dict`] so
/// that a `Value` stays small.
#[derive(Debug, Clone, Default)]
struct KeyIndex {
    positions: HashMap<String, usize>,
}

impl PartialEq for Dict {
    /// Same members with equal values, inserted in the same order.
    fn eq(&self, other: &Dict) -> bool {
        self.members.len() == other.members.len()
            && self
                .members
                .iter()
                .zip(&other.members)
                .all(|(a, b)| a.key == b.key && a.value == b.value)
    }
}

impl Dict {
    pub fn new() -> Dict {
        Dict::default()
    }

    /// The QDict bucket of `key`: QEMU's `tdb_hash(key) % QDICT_BUCKET_MAX`,
    /// computed over the key's modified UTF-8 bytes (U+0000 is `C0 80`).
    pub fn bucket_of(key: &str) -> u32 {
        let mut length: u32 = 0;
        for_each_modified_utf8_byte(key, |_| length = length.wrapping_add(1));
        let mut value = 0x238F_13AFu32.wrapping_mul(length);
        let mut position: u32 = 0;
        for_each_modified_utf8_byte(key, |byte| {
            value = value.wrapping_add(u32::from(byte) << (position * 5 % 24));
            position += 1;
        });
        1_103_515_243u32.wrapping_mul(value).wrapping_add(12345) % QDICT_BUCKETS
    }

    /// Inserts a member like `qdict_put_obj`: a new key is added, an existing
    /// key keeps its place and gets the new value (the old one is returned).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        let key = key.into();
        if let Some(position) = self.position(&key) {
            return Some(std::mem::replace(&mut self.members[position].value, value));
        }
        let position = self.members.len();
        if let Some(index) = self.index.as_mut() {
            index.positions.insert(key.clone(), position);
        }
        let bucket = Dict::bucket_of(&key) as u16;
        self.members.push(Member { key, bucket, value });
        if self.index.is_none() && self.members.len() > INDEX_THRESHOLD {
            self.rebuild_index();
        }
        None
    }

    /// Removes a member like `qdict_del`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let position = self.position(key)?;
        let member = self.members.remove(position);
        if self.index.is_some() {
            self.rebuild_index();
        }
        Some(member.value)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key)
            .map(|position| &self.members[position].value)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members in QDict order (`qdict_first`/`qdict_next`).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.qdict_order()
            .into_iter()
            .map(move |position| self.member(position))
    }

    /// Members in the order they were inserted (for a client's request, the
    /// order in which the client wrote them).
    pub fn iter_insertion_order(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        self.members
            .iter()
            .map(|member| (member.key.as_str(), &member.value))
    }

    /// Positions (in insertion order) of the members, sorted into QDict order.
    pub(crate) fn qdict_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        // QLIST_INSERT_HEAD puts the newest member of a bucket first.
        order.sort_unstable_by_key(|&position| {
            (self.members[position].bucket, std::cmp::Reverse(position))
        });
        order
    }

    /// The member at `position` in insertion order.
    pub(crate) fn member(&self, position: usize) -> (&str, &Value) {
        let member = &self.members[position];
        (member.key.as_str(), &member.value)
    }

    /// Moves all values out (used to tear deep values down without recursion).
    pub(crate) fn take_values(&mut self) -> impl Iterator<Item = Value> + '_ {
        self.index = None;
        self.members.drain(..).map(|member| member.value)
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.positions.get(key).copied(),
            None => self.members.iter().position(|member| member.key == key),
        }
    }

    fn rebuild_index(&mut self) {
        let positions = self
            .members
            .iter()
            .enumerate()
            .map(|(position, member)| (member.key.clone(), position))
            .collect();
        self.index = Some(Box::new(KeyIndex { positions }));
    }
}

impl Drop for Dict {
    /// Tears nested containers down iteratively: a client may nest objects
    /// 1024 deep, and the default recursive drop of that needs more stack
    /// than the proxy's threads have. (Nested lists still drop recursively,
    /// which costs about 90 KiB for 1024 levels in an optimised build.)
    fn drop(&mut self) {
        let nested = |value: &Value| matches!(value, Value::List(_) | Value::Dict(_));
        if self.members.iter().any(|member| nested(&member.value)) {
            dismantle_all(self.take_values().collect());
        }
    }
}

/// Calls `f` with each byte of `key` as QEMU stores it: modified UTF-8,
/// where U+0000 is `C0 80`.
pub(crate) fn for_each_modified_utf8_byte(key: &str, mut f: impl FnMut(u8)) {
    for ch in key.chars() {
        if ch == '\0' {
            f(0xC0);
            f(0x80);
        } else {
            let mut buf = [0u8; 4];
            ch.encode_utf8(&mut buf).bytes().for_each(&mut f);
        }
    }
}

/// Drops a value without recursing into it, so that a value nested 1024 deep
/// can be released on a small thread stack.
pub(crate) fn dismantle(value: Value) {
    dismantle_all(vec![value]);
}

fn dismantle_all(mut pending: Vec<Value>) {
    while let Some(mut value) = pending.pop() {
        match &mut value {
            Value::List(items) => pending.append(items),
            Value::Dict(dict) => pending.extend(dict.take_values()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_in_qdict_order(dict: &Dict) -> Vec<&str> {
        dict.iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn qdict_buckets_match_qemu() {
        // Buckets quoted in the conformance notes (README §3).
        assert_eq!(Dict::bucket_of("command"), 49);
        assert_eq!(Dict::bucket_of("exec-oob"), 162);
        assert_eq!(Dict::bucket_of("execute"), 299);
        assert_eq!(Dict::bucket_of("arguments"), 447);
        assert_eq!(Dict::bucket_of("id"), 486);
        assert_eq!(Dict::bucket_of("foo"), 490);
    }

    #[test]
    fn qdict_hash_order_matches_qemu() {
        let mut dict = Dict::new();
        dict.insert("b", Value::Int(1));
        dict.insert("a", Value::Int(2));
        assert_eq!(keys_in_qdict_order(&dict), ["a", "b"]);

        let mut version = Dict::new();
        version.insert("major", Value::Int(7));
        version.insert("minor", Value::Int(2));
        version.insert("micro", Value::Int(22));
        assert_eq!(keys_in_qdict_order(&version), ["micro", "minor", "major"]);

        let mut odd = Dict::new();
        odd.insert("\u{e9}", Value::Int(1));
        odd.insert("a", Value::Null);
        odd.insert("", Value::Dict(Dict::new()));
        assert_eq!(keys_in_qdict_order(&odd), ["", "\u{e9}", "a"]);
    }

    #[test]
    fn same_bucket_prints_newest_first() {
        // Find two keys sharing a bucket, then check insertion order decides.
        let mut seen = std::collections::HashMap::new();
        let (first, second) = (0..10_000)
            .map(|n| format!("k{n}"))
            .find_map(|key| {
                let bucket = Dict::bucket_of(&key);
                seen.insert(bucket, key.clone()).map(|older| (older, key))
            })
            .unwrap();
        let mut dict = Dict::new();
        dict.insert(first.as_str(), Value::Int(1));
        dict.insert(second.as_str(), Value::Int(2));
        assert_eq!(
            keys_in_qdict_order(&dict),
            [second.as_str(), first.as_str()]
        );
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut dict = Dict::new();
        dict.insert("a", Value::Int(1));
        dict.insert("b", Value::Int(2));
        assert_eq!(dict.insert("a", Value::Int(3)), Some(Value::Int(1)));
        let keys: Vec<&str> = dict.iter_insertion_order().map(|(key, _)| key).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(dict.get("a"), Some(&Value::Int(3)));
    }

    #[test]
    fn large_dict_lookups_use_the_index() {
        let mut dict = Dict::new();
        for n in 0..1000 {
            dict.insert(format!("key{n}"), Value::Int(n));
        }
        assert_eq!(dict.len(), 1000);
        assert_eq!(dict.get("key999"), Some(&Value::Int(999)));
        assert_eq!(dict.remove("key0"), Some(Value::Int(0)));
        assert_eq!(dict.get("key999"), Some(&Value::Int(999)));
        assert!(!dict.contains_key("key0"));
    }

    #[test]
    fn nul_key_hashes_as_modified_utf8() {
        // "\0" is C0 80 for QEMU: length 2, bytes 0xC0 and 0x80.
        let expected = {
            let mut value = 0x238F_13AFu32.wrapping_mul(2);
            value = value.wrapping_add(0xC0);
            value = value.wrapping_add(0x80 << 5);
            1_103_515_243u32.wrapping_mul(value).wrapping_add(12345) % 512
        };
        assert_eq!(Dict::bucket_of("\0"), expected);
    }

    #[test]
    fn deep_objects_drop_on_a_small_stack() {
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| {
                let mut value = Value::Null;
                for n in 0..100_000 {
                    let mut dict = Dict::new();
                    dict.insert("k", value);
                    value = if n % 3 == 0 {
                        Value::List(vec![Value::Dict(dict)])
                    } else {
                        Value::Dict(dict)
                    };
                }
                drop(value);
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
    }
}
