//! An ordered list of GGUF metadata being assembled, with the semantics of gguf-py's `GGUFWriter`
//! (<https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/gguf-py/gguf/gguf_writer.py>):
//! keys keep the order of their first insertion, setting a key again overwrites its value in place, and empty
//! strings and empty arrays are skipped (`add_string`/`add_array` return early on them).

use crate::gguf::{GgufArray, GgufValue};

/// Metadata in insertion order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvList {
    entries: Vec<(String, GgufValue)>,
}

impl KvList {
    /// An empty list.
    pub fn new() -> KvList {
        KvList::default()
    }

    /// Set `key`; an existing key keeps its position and gets the new value.
    pub fn set(&mut self, key: impl Into<String>, value: GgufValue) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Set a u32.
    pub fn u32(&mut self, key: impl Into<String>, v: u32) {
        self.set(key, GgufValue::U32(v));
    }

    /// Set an i32.
    pub fn i32(&mut self, key: impl Into<String>, v: i32) {
        self.set(key, GgufValue::I32(v));
    }

    /// Set an f32 (Python floats are doubles; gguf-py narrows them to f32 on write).
    pub fn f32(&mut self, key: impl Into<String>, v: f64) {
        self.set(key, GgufValue::F32(v as f32));
    }

    /// Set a bool.
    pub fn bool(&mut self, key: impl Into<String>, v: bool) {
        self.set(key, GgufValue::Bool(v));
    }

    /// Set a string, unless it is empty.
    pub fn string(&mut self, key: impl Into<String>, v: impl Into<String>) {
        let v = v.into();
        if !v.is_empty() {
            self.set(key, GgufValue::String(v));
        }
    }

    /// Set an array of strings, unless it is empty.
    pub fn strings(&mut self, key: impl Into<String>, v: Vec<String>) {
        self.array(key, v.into());
    }

    /// Set an array, unless it is empty.
    pub fn array(&mut self, key: impl Into<String>, values: GgufArray) {
        if !values.is_empty() {
            self.set(key, GgufValue::Array(values));
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The entries in order.
    pub fn entries(&self) -> &[(String, GgufValue)] {
        &self.entries
    }

    /// The entries in order, by value.
    pub fn into_vec(self) -> Vec<(String, GgufValue)> {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_keeps_position_and_empty_values_are_skipped() {
        let mut kv = KvList::new();
        kv.u32("a", 1);
        kv.bool("b", true);
        kv.string("empty", "");
        kv.strings("none", vec![]);
        kv.u32("a", 2);
        let keys: Vec<&str> = kv.entries().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(kv.get("a"), Some(&GgufValue::U32(2)));
    }
}
