//! The few model hyper-parameters the mix rules read.

use quantforge_formats::gguf::{GgufFile, GgufValue};

use super::PolicyError;

/// Hyper-parameters of the model being quantized, as llama.cpp's loader sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// `general.architecture`, e.g. `llama`.
    pub arch: String,
    /// `<arch>.block_count` (`hparams.n_layer_all`).
    pub n_layer: u32,
    /// `<arch>.attention.head_count` of layer 0.
    pub n_head: u32,
    /// `<arch>.attention.head_count_kv` of layer 0 (defaults to `n_head`).
    pub n_head_kv: u32,
    /// `<arch>.expert_count` (0 for dense models).
    pub n_expert: u32,
}

/// Architectures whose loader calls a model `LLM_TYPE_70B`, which raises attn_v to Q5_K in K-quant mixes.
/// `(arch, n_layer, requires n_head != n_head_kv, requires n_expert != 8)`.
///
/// From the `load_hparams` of llama (80 layers, GQA, not an 8-expert model: an MHA model of that depth is
/// `65B`), deci (80), qwen2 (80) and jais2 (68). Only the rule's effect on those architectures is ported;
/// an architecture missing here is treated as "not 70B".
const SEVENTY_B: &[(&str, u32, bool, bool)] =
    &[("llama", 80, true, true), ("deci", 80, false, false), ("qwen2", 80, false, false), ("jais2", 68, false, false)];

impl ModelInfo {
    /// `hparams.n_gqa()`: `n_head / n_head_kv`, 0 when there are no KV heads.
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// Whether llama.cpp classifies the model as `LLM_TYPE_70B`.
    pub fn is_70b(&self) -> bool {
        SEVENTY_B.iter().any(|&(arch, n_layer, gqa, not_moe8)| {
            self.arch == arch
                && self.n_layer == n_layer
                && (!gqa || self.n_head != self.n_head_kv)
                && (!not_moe8 || self.n_expert != 8)
        })
    }

    /// Whether the architecture is Falcon (which has its own output and ffn_down rules).
    pub fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }

    /// Read the hyper-parameters from a GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelInfo, PolicyError> {
        ModelInfo::from_metadata(|key| file.get(key))
    }

    /// Read the hyper-parameters through a metadata lookup. Head counts may be per-layer arrays; layer 0
    /// counts, as in llama.cpp's `n_head()`.
    pub fn from_metadata<'a>(get: impl Fn(&str) -> Option<&'a GgufValue>) -> Result<ModelInfo, PolicyError> {
        let missing = |key: &str| PolicyError::MissingMetadata { key: key.to_string() };
        let arch =
            get("general.architecture").and_then(GgufValue::as_str).ok_or_else(|| missing("general.architecture"))?;
        let number = |suffix: &str| -> Result<Option<u32>, PolicyError> {
            let key = format!("{arch}.{suffix}");
            let Some(value) = get(&key) else { return Ok(None) };
            let first = match value.as_array() {
                Some(values) => values.first(),
                None => Some(value.clone()),
            };
            first
                .as_ref()
                .and_then(GgufValue::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or(PolicyError::BadMetadata { key })
        };
        let required = |suffix: &str| number(suffix)?.ok_or_else(|| missing(&format!("{arch}.{suffix}")));
        let n_layer = required("block_count")?;
        let n_head = required("attention.head_count")?;
        let n_head_kv = number("attention.head_count_kv")?.unwrap_or(n_head);
        let n_expert = number("expert_count")?.unwrap_or(0);
        Ok(ModelInfo { arch: arch.to_string(), n_layer, n_head, n_head_kv, n_expert })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(n_layer: u32, n_head: u32, n_head_kv: u32, n_expert: u32) -> ModelInfo {
        ModelInfo { arch: "llama".into(), n_layer, n_head, n_head_kv, n_expert }
    }

    #[test]
    fn seventy_b_and_gqa() {
        assert!(llama(80, 64, 8, 0).is_70b());
        assert!(!llama(80, 64, 64, 0).is_70b(), "65B");
        assert!(!llama(80, 64, 8, 8).is_70b());
        assert!(!llama(32, 32, 8, 0).is_70b());
        assert!(ModelInfo { arch: "qwen2".into(), ..llama(80, 64, 64, 0) }.is_70b());
        assert_eq!(llama(16, 8, 2, 0).n_gqa(), 4);
        assert_eq!(llama(16, 9, 3, 0).n_gqa(), 3);
        assert_eq!(llama(16, 8, 0, 0).n_gqa(), 0);
    }

    #[test]
    fn from_metadata() {
        let kv = [
            ("general.architecture", GgufValue::String("llama".into())),
            ("llama.block_count", GgufValue::U32(30)),
            ("llama.attention.head_count", GgufValue::U32(9)),
            ("llama.attention.head_count_kv", GgufValue::Array(vec![3u32, 1].into())),
        ];
        let get = |k: &str| kv.iter().find(|(key, _)| *key == k).map(|(_, v)| v);
        assert_eq!(ModelInfo::from_metadata(get).unwrap(), llama(30, 9, 3, 0));
        let no_heads = |k: &str| if k.ends_with("head_count") { None } else { get(k) };
        assert!(
            matches!(ModelInfo::from_metadata(no_heads), Err(PolicyError::MissingMetadata { key }) if key == "llama.attention.head_count")
        );
    }
}
