//! Per-tensor facts that do not depend on the mix: the category of a tensor name, whether it may be
//! quantized at all, whether its target type needs an importance matrix, and the shape fallback.
//!
//! Ported from `tensor_get_category` (l.115-151), `tensor_allows_quantization` (l.288-356),
//! `tensor_type_fallback` (l.362-410) and `tensor_requires_imatrix` (l.768-790) of `src/llama-quant.cpp`
//! at llama.cpp 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62. All name tests are plain substring or equality
//! tests, kept as tables in llama.cpp's order.

use quantforge_formats::GgmlType;

use super::FileType;

/// The broad role of a tensor, as far as the mix rules care (`enum tensor_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorCategory {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

/// How a table entry is compared with a tensor name.
#[derive(Clone, Copy, Debug)]
enum NameTest {
    /// The whole name.
    Is(&'static str),
    /// A substring anywhere.
    Has(&'static str),
}

impl NameTest {
    fn matches(self, name: &str) -> bool {
        match self {
            NameTest::Is(s) => name == s,
            NameTest::Has(s) => name.contains(s),
        }
    }
}

use NameTest::{Has, Is};

/// First match wins, in llama.cpp's order.
const CATEGORIES: &[(NameTest, TensorCategory)] = &[
    (Is("output.weight"), TensorCategory::Output),
    (Is("token_embd.weight"), TensorCategory::TokenEmbd),
    (Is("per_layer_token_embd.weight"), TensorCategory::TokenEmbd),
    (Has("attn_qkv.weight"), TensorCategory::AttnQkv),
    (Has("attn_kv_b.weight"), TensorCategory::AttnKvB),
    (Has("attn_v.weight"), TensorCategory::AttnV),
    (Has("attn_k.weight"), TensorCategory::AttnK),
    (Has("attn_q.weight"), TensorCategory::AttnQ),
    (Has("attn_output.weight"), TensorCategory::AttnOutput),
    (Has("ffn_up"), TensorCategory::FfnUp),
    (Has("ffn_gate"), TensorCategory::FfnGate),
    (Has("ffn_down"), TensorCategory::FfnDown),
];

impl TensorCategory {
    /// `tensor_get_category`.
    pub fn of(name: &str) -> TensorCategory {
        CATEGORIES.iter().find(|(t, _)| t.matches(name)).map_or(TensorCategory::Other, |&(_, c)| c)
    }

    /// `category_is_attn_v`: V, fused QKV and MLA's KV_B, the tensors the attn_v rules and counter cover.
    pub fn is_attn_v_like(self) -> bool {
        matches!(self, TensorCategory::AttnV | TensorCategory::AttnQkv | TensorCategory::AttnKvB)
    }
}

/// Names (or name parts) that are never quantized, in llama.cpp's order.
///
/// This is the b9928 list. Later upstream revisions add `ffn_gate_tid2eid.weight`, `indexer.k_proj.weight`,
/// `indexer.q_proj.weight`, `a.rvq.codebook` and `mm.a.code_embd`; they are left out on purpose.
/// `position_embd.weight` and `token_types.weight` stand for `LLM_TN(arch)(POS_EMBD / TOKEN_TYPES)`; for an
/// architecture without those tensors llama.cpp compares with a placeholder name instead, which only
/// matters for files that llama.cpp could not load anyway.
const NEVER_QUANTIZED: &[NameTest] = &[
    Has("_norm.weight"),
    Has("ffn_gate_inp.weight"),
    Has("altup"),
    Has("laurel"),
    Has("per_layer_model_proj"),
    Is("position_embd.weight"),
    Is("token_types.weight"),
    Has("ssm_conv1d"),
    Has("shortconv.conv.weight"),
    Has("time_mix_first.weight"),
    Has("time_mix_w0.weight"),
    Has("time_mix_w1.weight"),
    Has("time_mix_w2.weight"),
    Has("time_mix_v0.weight"),
    Has("time_mix_v1.weight"),
    Has("time_mix_v2.weight"),
    Has("time_mix_a0.weight"),
    Has("time_mix_a1.weight"),
    Has("time_mix_a2.weight"),
    Has("time_mix_g1.weight"),
    Has("time_mix_g2.weight"),
    Has("time_mix_decay_w1.weight"),
    Has("time_mix_decay_w2.weight"),
    Has("time_mix_lerp_fused.weight"),
    Has("attn_rel_b.weight"),
    Has(".position_embd"),
    Has("sam.pos_embd"),
    Has("sam.neck."),
    Has("sam.net_"),
    Has(".rel_pos"),
    Has(".patch_embd"),
    Has(".patch_merger"),
];

/// `ggml_n_dims`: the number of dimensions with trailing 1s dropped (at least 1).
pub fn n_dims(ne: &[u64]) -> usize {
    ne.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization`: false for `COPY`, 1-D tensors, names not ending in `weight`, norms,
/// `output.weight` under `--leave-output-tensor`, and the names in `NEVER_QUANTIZED`.
pub fn allows_quantization(ftype: FileType, leave_output_tensor: bool, name: &str, ne: &[u64]) -> bool {
    if ftype.is_copy() || n_dims(ne) < 2 {
        return false;
    }
    // llama.cpp tests `name.rfind("weight") == name.size() - 6`; for a 5-byte name both sides are npos,
    // so such names pass this test whatever they say.
    let ends_in_weight = name.ends_with("weight") || name.len() == 5;
    ends_in_weight
        && !(leave_output_tensor && name == "output.weight")
        && !NEVER_QUANTIZED.iter().any(|t| t.matches(name))
}

/// `tensor_requires_imatrix`: IQ1/IQ2/IQ3_XXS targets, and Q2_K inside a Q2_K_S file; never `token_embd` or
/// `output`.
pub fn requires_imatrix(name: &str, ty: GgmlType, ftype: FileType) -> bool {
    if matches!(TensorCategory::of(name), TensorCategory::Output | TensorCategory::TokenEmbd) {
        return false;
    }
    match ty {
        GgmlType::IQ3_XXS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ1_M
        | GgmlType::IQ1_S => true,
        GgmlType::Q2_K => ftype == FileType::Q2_K_S,
        _ => false,
    }
}

/// Where `tensor_type_fallback` goes when a row is not a whole number of blocks of the target.
const FALLBACKS: &[(&[GgmlType], GgmlType)] = &[
    (
        &[
            GgmlType::IQ1_S,
            GgmlType::IQ1_M,
            GgmlType::IQ2_XXS,
            GgmlType::IQ2_XS,
            GgmlType::IQ2_S,
            GgmlType::IQ3_XXS,
            GgmlType::IQ3_S,
            GgmlType::IQ4_XS,
        ],
        GgmlType::IQ4_NL,
    ),
    (&[GgmlType::Q2_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::TQ1_0, GgmlType::TQ2_0], GgmlType::Q4_0),
    (&[GgmlType::Q4_K], GgmlType::Q5_0),
    (&[GgmlType::Q5_K], GgmlType::Q5_1),
    (&[GgmlType::Q6_K], GgmlType::Q8_0),
];

/// Result of [`fallback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// `ne[0]` divides into blocks of the target: keep it.
    Fits,
    /// Use this type instead (F16 when even the fallback does not fit).
    Use(GgmlType),
    /// No fallback is defined for the target (llama.cpp throws).
    Impossible,
}

/// Whether a row of `n` elements is a whole number of `ty` blocks.
pub fn whole_blocks(ty: GgmlType, n: u64) -> bool {
    // `checked_rem` rather than `%`/`is_multiple_of`: the latter needs Rust 1.87, the workspace targets 1.85.
    n.checked_rem(ty.block_size()) == Some(0)
}

/// `tensor_type_fallback` for a row length `ncols`.
pub fn fallback(target: GgmlType, ncols: u64) -> Fallback {
    if whole_blocks(target, ncols) {
        return Fallback::Fits;
    }
    match FALLBACKS.iter().find(|(from, _)| from.contains(&target)) {
        None => Fallback::Impossible,
        Some(&(_, to)) if whole_blocks(to, ncols) => Fallback::Use(to),
        Some(_) => Fallback::Use(GgmlType::F16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_llama_cpp_order() {
        assert_eq!(TensorCategory::of("output.weight"), TensorCategory::Output);
        assert_eq!(TensorCategory::of("blk.0.output.weight"), TensorCategory::Other);
        assert_eq!(TensorCategory::of("token_embd.weight"), TensorCategory::TokenEmbd);
        assert_eq!(TensorCategory::of("blk.3.attn_qkv.weight"), TensorCategory::AttnQkv);
        assert_eq!(TensorCategory::of("blk.3.attn_kv_b.weight"), TensorCategory::AttnKvB);
        assert_eq!(TensorCategory::of("blk.3.attn_v.weight"), TensorCategory::AttnV);
        assert_eq!(TensorCategory::of("blk.3.ffn_gate_exps.weight"), TensorCategory::FfnGate);
        assert_eq!(TensorCategory::of("blk.3.ffn_up_shexp.weight"), TensorCategory::FfnUp);
        assert_eq!(TensorCategory::of("blk.3.attn_norm.weight"), TensorCategory::Other);
        assert!(TensorCategory::AttnKvB.is_attn_v_like());
        assert!(!TensorCategory::AttnK.is_attn_v_like());
    }

    #[test]
    fn which_tensors_are_quantized() {
        let q = |name: &str, ne: &[u64]| allows_quantization(FileType::Q4_K_M, false, name, ne);
        assert!(q("blk.0.attn_q.weight", &[256, 256]));
        assert!(q("blk.0.ffn_down_exps.weight", &[256, 256, 8]));
        assert!(!q("blk.0.attn_norm.weight", &[256]));
        assert!(!q("blk.0.attn_q.weight", &[256, 1, 1]));
        assert!(!q("blk.0.attn_q.bias", &[256, 256]));
        assert!(!q("blk.0.ffn_gate_inp.weight", &[256, 8]));
        assert!(!q("rope_freqs.weight", &[32]));
        assert!(!q("v.patch_embd.weight", &[256, 256]));
        assert!(q("abcde", &[256, 256]), "llama.cpp's npos quirk");
        assert!(!q("abcd", &[256, 256]));
        assert!(q("output.weight", &[256, 256]));
        assert!(!allows_quantization(FileType::Q4_K_M, true, "output.weight", &[256, 256]));
        assert!(!allows_quantization(FileType::Copy, false, "blk.0.attn_q.weight", &[256, 256]));
    }

    #[test]
    fn imatrix_requirements() {
        assert!(requires_imatrix("blk.0.attn_q.weight", GgmlType::IQ2_XXS, FileType::IQ2_XXS));
        assert!(!requires_imatrix("token_embd.weight", GgmlType::IQ2_XXS, FileType::IQ2_XXS));
        assert!(!requires_imatrix("output.weight", GgmlType::IQ1_S, FileType::IQ1_S));
        assert!(requires_imatrix("blk.0.ffn_up.weight", GgmlType::Q2_K, FileType::Q2_K_S));
        assert!(!requires_imatrix("blk.0.ffn_up.weight", GgmlType::Q2_K, FileType::Q2_K));
        assert!(!requires_imatrix("blk.0.ffn_up.weight", GgmlType::IQ3_S, FileType::IQ3_M));
    }

    #[test]
    fn fallbacks() {
        assert_eq!(fallback(GgmlType::Q4_K, 512), Fallback::Fits);
        assert_eq!(fallback(GgmlType::Q4_K, 576), Fallback::Use(GgmlType::Q5_0));
        assert_eq!(fallback(GgmlType::Q6_K, 576), Fallback::Use(GgmlType::Q8_0));
        assert_eq!(fallback(GgmlType::Q5_K, 1536 + 32), Fallback::Use(GgmlType::Q5_1));
        assert_eq!(fallback(GgmlType::IQ4_XS, 96), Fallback::Use(GgmlType::IQ4_NL));
        assert_eq!(fallback(GgmlType::Q3_K, 100), Fallback::Use(GgmlType::F16));
        assert_eq!(fallback(GgmlType::Q8_0, 100), Fallback::Impossible);
        assert_eq!(fallback(GgmlType::F16, 7), Fallback::Fits);
    }
}
