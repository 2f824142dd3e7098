//! How large a model's hyper-parameters may be, wherever they are read (config.json or GGUF metadata).
//!
//! Invariant: every count or dimension a reader takes from a config is at most its limit here before anything
//! is sized from it, so no config can make the tools allocate per layer, per head or per token beyond these
//! bounds. The limits are generous (tens to thousands of times today's largest models) but finite; two of
//! them multiplied stay far inside 64 bits, and every longer product is computed with checked arithmetic.

use std::path::Path;

use super::HparamKey;
use crate::error::{FormatError, Result};

/// One bounded hyper-parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// What it counts, for messages.
    pub what: &'static str,
    /// Largest accepted value.
    pub max: u64,
}

/// Repeating blocks (`num_hidden_layers`, `{arch}.block_count`); today's largest models have a few hundred.
pub const LAYERS: Limit = Limit { what: "layers", max: 65_536 };
/// Attention heads and KV heads (`num_attention_heads`, `num_key_value_heads`).
pub const HEADS: Limit = Limit { what: "attention heads", max: 16_384 };
/// Embedding width (`hidden_size`, `{arch}.embedding_length`).
pub const HIDDEN: Limit = Limit { what: "hidden size", max: 1 << 20 };
/// Feed-forward width (`intermediate_size`, `{arch}.feed_forward_length`).
pub const FFN: Limit = Limit { what: "feed-forward size", max: 1 << 22 };
/// Size of one attention head (`head_dim`, `{arch}.attention.key_length`).
pub const HEAD_DIM: Limit = Limit { what: "head size", max: 1 << 16 };
/// Width of all heads together (`num_attention_heads × head_dim`).
pub const ATTENTION_WIDTH: Limit = Limit { what: "attention width", max: 1 << 22 };
/// Vocabulary (`vocab_size`); the converter makes a padding token per missing entry, so this bounds that too.
pub const VOCAB: Limit = Limit { what: "vocabulary size", max: 1 << 21 };
/// Experts of a mixture-of-experts layer (`num_local_experts`, `{arch}.expert_count`).
pub const EXPERTS: Limit = Limit { what: "experts", max: 1 << 16 };
/// Training context (`max_position_embeddings`, `{arch}.context_length`).
pub const CONTEXT: Limit = Limit { what: "context length", max: 1 << 30 };

/// The limit of a GGUF hyper-parameter that counts or sizes something, if it has one.
pub fn for_hparam(key: HparamKey) -> Option<Limit> {
    use HparamKey as K;
    Some(match key {
        K::BlockCount => LAYERS,
        K::ContextLength | K::RopeScalingOriginalContextLength | K::SlidingWindow => CONTEXT,
        K::EmbeddingLength => HIDDEN,
        K::FeedForwardLength | K::ExpertFeedForwardLength | K::ExpertSharedFeedForwardLength => FFN,
        K::VocabSize => VOCAB,
        K::ExpertCount | K::ExpertUsedCount => EXPERTS,
        K::HeadCount | K::HeadCountKv => HEADS,
        K::KeyLength | K::ValueLength | K::RopeDimensionCount => HEAD_DIM,
        _ => return None,
    })
}

impl Limit {
    /// `value` of `key` in `path`, refused when above the limit.
    pub fn check(self, path: &Path, key: &str, value: u64) -> Result<u64> {
        if value > self.max {
            return Err(FormatError::Config {
                path: path.into(),
                key: key.into(),
                message: format!("{value} is above the limit of {} {}", self.max, self.what),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_two_limits_fit_in_64_bits() {
        let all = [LAYERS, HEADS, HIDDEN, FFN, HEAD_DIM, ATTENTION_WIDTH, VOCAB, EXPERTS, CONTEXT];
        for a in all {
            for b in all {
                assert!(a.max.checked_mul(b.max).is_some(), "{} x {}", a.what, b.what);
            }
        }
        // Heads times head size is within the attention width only if checked: it is not implied.
        const { assert!(HEADS.max * HEAD_DIM.max > ATTENTION_WIDTH.max) };
    }

    #[test]
    fn the_message_names_file_key_and_limit() {
        let e = LAYERS.check(Path::new("m/config.json"), "num_hidden_layers", 4294967295).unwrap_err().to_string();
        assert!(e.contains("m/config.json") && e.contains("num_hidden_layers") && e.contains("65536"), "{e}");
        assert_eq!(LAYERS.check(Path::new("c"), "k", 65536).unwrap(), 65536);
    }
}
