//! The order in which `llama-quantize` visits and writes tensors.
//!
//! llama.cpp keeps the weights in a `std::map` ordered by `weight_name_comparer` (`src/llama-model-loader.h`
//! at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62): the block number read with `sscanf(name, "blk.%d.")`
//! (-1 for anything else, so non-block tensors come first), then plain byte order of the names. The mix
//! counters (`i_attention_wv`, `i_ffn_down`, ...) advance in this order, so it decides which layers get
//! more bits, not only where tensors sit in the file.

use std::cmp::Ordering;

/// The layer `sscanf(name, "blk.%d.", &layer)` assigns, or `None` when the conversion fails.
///
/// Like `sscanf`: the literal `blk.` must match at the start, `%d` skips white space and takes an optional
/// sign and at least one digit, and whatever follows (including a missing trailing `.`) does not matter.
/// Out-of-range values wrap the way glibc stores a saturated `long` into an `int`.
pub fn parse_blk_layer(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, rest) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let digits: Vec<i64> = rest.bytes().take_while(u8::is_ascii_digit).map(|b| i64::from(b - b'0')).collect();
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for d in digits {
        v = v.saturating_mul(10).saturating_add(d);
    }
    let v = if neg { v.saturating_neg() } else { v };
    // strtol saturates at LONG_MIN/LONG_MAX; scanf then truncates to int.
    Some(v as i32)
}

/// `weight_name_comparer`.
pub fn compare_weight_names(a: &str, b: &str) -> Ordering {
    let la = parse_blk_layer(a).unwrap_or(-1);
    let lb = parse_blk_layer(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// The indices of `names` in llama-quantize's output order.
pub fn output_order<S: AsRef<str>>(names: &[S]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..names.len()).collect();
    idx.sort_by(|&i, &j| compare_weight_names(names[i].as_ref(), names[j].as_ref()));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sscanf_semantics() {
        assert_eq!(parse_blk_layer("blk.12.attn_q.weight"), Some(12));
        assert_eq!(parse_blk_layer("blk.7"), Some(7));
        assert_eq!(parse_blk_layer("blk. 3.x"), Some(3));
        assert_eq!(parse_blk_layer("blk.-2.x"), Some(-2));
        assert_eq!(parse_blk_layer("blk.x"), None);
        assert_eq!(parse_blk_layer("v.blk.3.attn_q.weight"), None);
        assert_eq!(parse_blk_layer("token_embd.weight"), None);
        assert_eq!(parse_blk_layer("blk.99999999999999999999999.x"), Some(-1));
    }

    #[test]
    fn non_block_tensors_first_then_numeric_layers_then_names() {
        let names = [
            "blk.10.attn_q.weight",
            "blk.2.ffn_up.weight",
            "token_embd.weight",
            "blk.2.attn_k.weight",
            "output.weight",
            "output_norm.weight",
            "blk.0.ffn_down.weight",
        ];
        let order: Vec<&str> = output_order(&names).into_iter().map(|i| names[i]).collect();
        assert_eq!(
            order,
            [
                "output.weight",
                "output_norm.weight",
                "token_embd.weight",
                "blk.0.ffn_down.weight",
                "blk.2.attn_k.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_q.weight",
            ]
        );
    }
}
