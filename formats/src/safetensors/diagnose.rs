//! Which tensor makes a safetensors header invalid.
//!
//! The `safetensors` crate reports some header faults without the tensor's name ("invalid shape, data type, or
//! offset for tensor", "overflow computing buffer size", "incomplete metadata"). When it does, the header is
//! read again here and the same checks, in the same order (tensors by data offset), name the first tensor that
//! fails and the numbers that disagree. Invariant: this only explains a rejection; it never accepts a file.

use serde_json::{Map, Value};

/// Bytes per element of a dtype as headers spell it; `None` for sub-byte and unknown dtypes.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" | "C64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        _ => return None,
    })
}

/// One header entry: name, dtype, shape, data offsets (as found; missing or ill-typed fields are reported).
struct Entry<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: Vec<u64>,
    start: u64,
    end: u64,
}

fn entry<'a>(name: &'a str, v: &'a Value) -> Result<Entry<'a>, String> {
    let bad = |what: &str| format!("tensor '{name}': {what}");
    let o = v.as_object().ok_or_else(|| bad("the header entry is not an object"))?;
    let dtype = o.get("dtype").and_then(Value::as_str).ok_or_else(|| bad("\"dtype\" is missing or not a string"))?;
    let shape = o
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
        .ok_or_else(|| bad("\"shape\" is not a list of non-negative integers"))?;
    let offsets = o
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
        .filter(|a| a.len() == 2)
        .ok_or_else(|| bad("\"data_offsets\" is not a pair of non-negative integers"))?;
    Ok(Entry { name, dtype, shape, start: offsets[0], end: offsets[1] })
}

/// Explain why the header (the JSON after the 8-byte length) of a file whose data part is `data_len` bytes is
/// invalid, naming the tensor; `None` when no fault is found here (the crate's own message then stands).
pub(crate) fn explain(header: &[u8], data_len: u64) -> Option<String> {
    let map: Map<String, Value> = serde_json::from_slice(header).ok()?;
    let mut entries = Vec::new();
    for (name, v) in map.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        match entry(name, v) {
            Ok(e) => entries.push(e),
            Err(message) => return Some(message),
        }
    }
    entries.sort_by_key(|e| (e.start, e.end));
    let mut expected_start = 0u64;
    for e in &entries {
        if e.start != expected_start || e.end < e.start {
            return Some(format!(
                "tensor '{}': data_offsets [{}, {}) do not start where the previous tensor ends (byte {expected_start})",
                e.name, e.start, e.end
            ));
        }
        let Some(size) = dtype_size(e.dtype) else {
            expected_start = e.end;
            continue;
        };
        let needed = e.shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
        match needed {
            None => {
                return Some(format!(
                    "tensor '{}': shape {:?} of dtype {} overflows a 64-bit byte count",
                    e.name, e.shape, e.dtype
                ))
            }
            Some(n) if n != e.end - e.start => {
                return Some(format!(
                    "tensor '{}': shape {:?} of dtype {} needs {n} bytes, but data_offsets [{}, {}) hold {}",
                    e.name,
                    e.shape,
                    e.dtype,
                    e.start,
                    e.end,
                    e.end - e.start
                ))
            }
            Some(_) => {}
        }
        expected_start = e.end;
    }
    if expected_start != data_len {
        let last = entries.last().map_or(String::new(), |e| format!(" (last tensor '{}')", e.name));
        return Some(format!(
            "the tensors' data ends at byte {expected_start}{last} but the file holds {data_len} bytes of data"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_tensor_whose_size_or_offsets_are_wrong() {
        let h = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[3],"data_offsets":[8,12]}}"#;
        let m = explain(h, 12).unwrap();
        assert!(m.contains("tensor 'b'") && m.contains("needs 6 bytes") && m.contains("hold 4"), "{m}");
        let h = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#;
        let m = explain(h, 16).unwrap();
        assert!(m.contains("tensor 'b'") && m.contains("byte 8"), "{m}");
        let h = br#"{"big":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
        assert!(explain(h, 8).unwrap().contains("tensor 'big'"));
        let h = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let m = explain(h, 20).unwrap();
        assert!(m.contains("last tensor 'a'") && m.contains("20 bytes"), "{m}");
        assert_eq!(explain(h, 8), None);
        let h = br#"{"w":{"dtype":"F32","shape":"x","data_offsets":[0,8]}}"#;
        assert!(explain(h, 8).unwrap().contains("tensor 'w': \"shape\""));
    }
}
