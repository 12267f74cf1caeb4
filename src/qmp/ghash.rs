// SPDX-License-Identifier: LGPL-2.1-or-later
//! This file exists only to pick which unknown member `qmp_capabilities`
//! names in `Parameter 'X' is unexpected` when its arguments hold several:
//! QEMU's input visitor reports the first key a GLib 2.74 `GHashTable` of
//! strings yields (glib/ghash.c with `g_str_hash`, walked by
//! `qobject_input_check_struct`). Every other command's arguments are
//! checked by QEMU itself.

use super::value::{for_each_modified_utf8_byte, Dict};

/// `HASH_TABLE_MIN_SHIFT`: tables start with 8 slots.
const MIN_SHIFT: u32 = 3;
const UNUSED: u32 = 0;
const TOMBSTONE: u32 = 1;

/// `prime_mod[]`: the prime below each power of two.
const PRIME_MOD: [u32; 32] = [
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
    262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393, 67108859, 134217689,
    268435399, 536870909, 1073741789, 2147483647,
];

fn is_real(hash: u32) -> bool {
    hash >= 2
}

/// `g_str_hash` (djb2 over *signed* chars), then GLib's mapping of 0 and 1
/// (reserved for empty slots and tombstones) to 2. The bytes are the key's
/// modified UTF-8 form, as QEMU stores it.
fn str_hash(key: &str) -> u32 {
    let mut hash: u32 = 5381;
    for_each_modified_utf8_byte(key, |byte| {
        hash = (hash << 5)
            .wrapping_add(hash)
            .wrapping_add(byte as i8 as u32)
    });
    if is_real(hash) {
        hash
    } else {
        2
    }
}

/// A string set laid out exactly like GLib's open-addressing table.
struct StringTable<'a> {
    hashes: Vec<u32>,
    keys: Vec<Option<&'a str>>,
    modulus: u32,
    mask: u32,
    nnodes: usize,
    noccupied: usize,
}

impl<'a> StringTable<'a> {
    fn new() -> StringTable<'a> {
        let mut table = StringTable {
            hashes: Vec::new(),
            keys: Vec::new(),
            modulus: 0,
            mask: 0,
            nnodes: 0,
            noccupied: 0,
        };
        table.set_shift(MIN_SHIFT);
        table.hashes.resize(table.size(), UNUSED);
        table.keys.resize(table.size(), None);
        table
    }

    fn size(&self) -> usize {
        self.mask as usize + 1
    }

    fn set_shift(&mut self, shift: u32) {
        self.modulus = PRIME_MOD[shift as usize];
        self.mask = (1u32 << shift) - 1;
    }

    /// `g_hash_table_set_shift_from_size`.
    fn set_shift_from_size(&mut self, size: usize) {
        let shift = usize::BITS - size.leading_zeros();
        self.set_shift(shift.max(MIN_SHIFT));
    }

    /// `g_hash_table_hash_to_index`.
    fn hash_to_index(&self, hash: u32) -> usize {
        (hash.wrapping_mul(11) % self.modulus) as usize
    }

    /// `g_hash_table_lookup_node`: the slot holding `key`, else the first
    /// tombstone met, else the empty slot that ended the probe.
    fn lookup(&self, key: &str, hash: u32) -> usize {
        let mut index = self.hash_to_index(hash);
        let mut first_tombstone = None;
        let mut step = 0;
        while self.hashes[index] != UNUSED {
            if self.hashes[index] == hash && self.keys[index] == Some(key) {
                return index;
            }
            if self.hashes[index] == TOMBSTONE && first_tombstone.is_none() {
                first_tombstone = Some(index);
            }
            step += 1;
            index = (index + step) & self.mask as usize;
        }
        first_tombstone.unwrap_or(index)
    }

    /// `g_hash_table_insert` of a new or existing key.
    fn insert(&mut self, key: &'a str) {
        let hash = str_hash(key);
        let index = self.lookup(key, hash);
        let old_hash = self.hashes[index];
        if is_real(old_hash) {
            return;
        }
        self.hashes[index] = hash;
        self.keys[index] = Some(key);
        self.nnodes += 1;
        if old_hash == UNUSED {
            self.noccupied += 1;
            self.maybe_resize();
        }
    }

    /// `g_hash_table_remove`.
    fn remove(&mut self, key: &str) {
        let index = self.lookup(key, str_hash(key));
        if !is_real(self.hashes[index]) {
            return;
        }
        self.hashes[index] = TOMBSTONE;
        self.keys[index] = None;
        self.nnodes -= 1;
        self.maybe_resize();
    }

    /// `g_hash_table_maybe_resize`.
    fn maybe_resize(&mut self) {
        let size = self.size();
        let too_empty = size > self.nnodes * 4 && size > 1 << MIN_SHIFT;
        let too_full = size <= self.noccupied + self.noccupied / 16;
        if too_empty || too_full {
            self.resize();
        }
    }

    /// `g_hash_table_resize` with `resize_map`: rehashes in place, evicting
    /// entries from the slots they are moved into.
    fn resize(&mut self) {
        let old_size = self.size();
        // `hash_table->nnodes * 1.333`, truncated to an int.
        self.set_shift_from_size((self.nnodes as f64 * 1.333) as usize);
        let new_size = self.size();
        if new_size > old_size {
            self.hashes.resize(new_size, UNUSED);
            self.keys.resize(new_size, None);
        }
        let mut placed = vec![false; new_size.max(old_size)];
        for slot in 0..old_size {
            let mut hash = self.hashes[slot];
            if !is_real(hash) {
                self.hashes[slot] = UNUSED;
                continue;
            }
            if placed[slot] {
                continue;
            }
            self.hashes[slot] = UNUSED;
            let mut key = self.keys[slot].take();
            loop {
                let mut index = self.hash_to_index(hash);
                let mut step = 0;
                while placed[index] {
                    step += 1;
                    index = (index + step) & self.mask as usize;
                }
                placed[index] = true;
                let replaced = std::mem::replace(&mut self.hashes[index], hash);
                let evicted = std::mem::replace(&mut self.keys[index], key);
                if !is_real(replaced) {
                    break;
                }
                hash = replaced;
                key = evicted;
            }
        }
        if new_size < old_size {
            self.hashes.truncate(new_size);
            self.keys.truncate(new_size);
        }
        self.noccupied = self.nnodes;
    }

    /// The first key `g_hash_table_iter_next` yields.
    fn first(&self) -> Option<&'a str> {
        self.hashes
            .iter()
            .zip(&self.keys)
            .find(|(&hash, _)| is_real(hash))
            .and_then(|(_, key)| *key)
    }
}

/// The member `qobject_input_check_struct` reports as unexpected: the
/// visitor put every member of `arguments` into a GHashTable (in QDict
/// order) and removed each one it consumed (`consumed`, in that order).
pub(crate) fn first_unvisited<'a>(arguments: &'a Dict, consumed: &[&str]) -> Option<&'a str> {
    let mut table = StringTable::new();
    for (name, _) in arguments.iter() {
        table.insert(name);
    }
    for name in consumed {
        if arguments.contains_key(name) {
            table.remove(name);
        }
    }
    table.first()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::value::Value;

    fn dict(names: &[&str]) -> Dict {
        let mut dict = Dict::new();
        for name in names {
            dict.insert(*name, Value::Null);
        }
        dict
    }

    #[test]
    fn str_hash_is_djb2_over_signed_chars() {
        assert_eq!(str_hash(""), 5381);
        assert_eq!(str_hash("a"), 5381 * 33 + 97);
        // 0xC3 is -61 as a signed char.
        assert_eq!(
            str_hash("\u{e9}"),
            (5381u32 * 33 - 61).wrapping_mul(33).wrapping_sub(87)
        );
    }

    #[test]
    fn single_leftover_member_is_reported() {
        let arguments = dict(&["enable", "foo"]);
        assert_eq!(first_unvisited(&arguments, &["enable"]), Some("foo"));
        assert_eq!(first_unvisited(&dict(&["enable"]), &["enable"]), None);
    }

    #[test]
    fn growing_and_shrinking_keeps_every_key() {
        let names: Vec<String> = (0..100).map(|n| format!("member{n}")).collect();
        let mut table = StringTable::new();
        for name in &names {
            table.insert(name);
        }
        assert_eq!(table.nnodes, 100);
        for name in &names[1..] {
            table.remove(name);
        }
        assert_eq!(table.first(), Some("member0"));
        assert!(table.size() < 64);
    }
}
