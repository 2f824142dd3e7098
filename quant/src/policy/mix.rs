//! The per-tensor mix of each file type: `llama_tensor_get_type_impl` (`src/llama-quant.cpp` l.412-659 at
//! llama.cpp 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62).
//!
//! llama.cpp writes the mix as if-chains per tensor category. Here each chain is a table of
//! [`Rule`]s (file types, condition, resulting type) read top to bottom, first match wins, no match keeps
//! the default. That is the same thing as the chain because all rows of one file type sit together in each
//! table (a unit test checks it): once a row group for the file type is reached, no later row can match it.
//! What is not a choice of type (the counters, the 70B and 8-expert bumps, output and MXFP4 handling) stays
//! code, in the same order as upstream.
//!
//! Quirks kept on purpose, because the output must be byte-identical:
//! - the counters advance only when this function runs, i.e. not for tensors set by `--tensor-type` or
//!   under `--pure`;
//! - for dense models the "layer" of an ffn tensor is the running counter, not the number in its name;
//! - the IQ1/IQ2 branch uses the raw `i_ffn_down` counter even for MoE models and never advances the
//!   ffn_gate/ffn_up counters;
//! - fused `attn_qkv` falls into the attn_v rules, so upstream's separate QKV branch (Q4_K_M → Q5_K, ...)
//!   is dead code and is not ported.

use quantforge_formats::GgmlType;

use super::tensor::whole_blocks;
use super::{FileType, ModelInfo, PolicyError, TensorCategory};

use FileType as F;
use GgmlType as G;

/// Which file types a rule applies to.
#[derive(Clone, Copy, Debug)]
enum Ft {
    Any,
    Of(&'static [FileType]),
}

impl Ft {
    fn contains(self, ftype: FileType) -> bool {
        match self {
            Ft::Any => true,
            Ft::Of(list) => list.contains(&ftype),
        }
    }
}

/// A condition on the tensor's position and the model.
#[derive(Clone, Copy, Debug)]
enum When {
    Always,
    /// `n_gqa() >= 4`.
    Gqa4,
    NoImatrix,
    HasImatrix,
    /// `i_attention_wv < n`.
    WvBelow(i32),
    /// `use_more_bits(i_attention_wv, n_attention_wv)`.
    WvMoreBits,
    /// `i_layer < n_layer/8`.
    FirstEighth,
    /// `i_layer < n_layer/16`.
    FirstSixteenth,
    /// `use_more_bits(i_layer, n_layer)`.
    MoreBits,
    /// `n_layer/8 <= i_layer < 7*n_layer/8`.
    Middle,
    Falcon,
    NotFalcon,
    /// `n_expert == 8`.
    Experts8,
    /// `n_expert >= 4`.
    ExpertsAtLeast4,
    Both(&'static When, &'static When),
    Either(&'static When, &'static When),
}

/// One table row.
#[derive(Clone, Copy, Debug)]
struct Rule {
    ftypes: Ft,
    when: When,
    ty: GgmlType,
}

const fn of(ftypes: &'static [FileType], when: When, ty: GgmlType) -> Rule {
    Rule { ftypes: Ft::Of(ftypes), when, ty }
}

const fn any(when: When, ty: GgmlType) -> Rule {
    Rule { ftypes: Ft::Any, when, ty }
}

/// What the conditions are evaluated against.
#[derive(Clone, Copy, Debug)]
struct Ctx {
    ftype: FileType,
    layer: i32,
    n_layer: i32,
    i_wv: i32,
    n_wv: i32,
    gqa: u32,
    n_expert: u32,
    imatrix: bool,
    falcon: bool,
}

/// `use_more_bits` (C `int` arithmetic: division and remainder truncate toward zero, as in Rust).
fn use_more_bits(i: i32, n: i32) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

impl When {
    fn holds(self, c: &Ctx) -> bool {
        match self {
            When::Always => true,
            When::Gqa4 => c.gqa >= 4,
            When::NoImatrix => !c.imatrix,
            When::HasImatrix => c.imatrix,
            When::WvBelow(n) => c.i_wv < n,
            When::WvMoreBits => use_more_bits(c.i_wv, c.n_wv),
            When::FirstEighth => c.layer < c.n_layer / 8,
            When::FirstSixteenth => c.layer < c.n_layer / 16,
            When::MoreBits => use_more_bits(c.layer, c.n_layer),
            When::Middle => c.layer >= c.n_layer / 8 && c.layer < 7 * c.n_layer / 8,
            When::Falcon => c.falcon,
            When::NotFalcon => !c.falcon,
            When::Experts8 => c.n_expert == 8,
            When::ExpertsAtLeast4 => c.n_expert >= 4,
            When::Both(a, b) => a.holds(c) && b.holds(c),
            When::Either(a, b) => a.holds(c) || b.holds(c),
        }
    }
}

/// First matching row's type, or `current` when none matches.
fn pick(rules: &[Rule], c: &Ctx, current: GgmlType) -> GgmlType {
    rules.iter().find(|r| r.ftypes.contains(c.ftype) && r.when.holds(c)).map_or(current, |r| r.ty)
}

/// The file types whose mixes take the IQ1/IQ2 branch.
const IQ1_IQ2: &[FileType] = &[F::IQ2_XXS, F::IQ2_XS, F::IQ1_S, F::IQ2_S, F::IQ2_M, F::IQ1_M];

/// Output (and tied token embeddings) get Q5_K instead of Q6_K in these mixes.
const LOW_BIT_OUTPUT_Q5_K: &[FileType] = &[F::IQ2_XXS, F::IQ2_XS, F::IQ3_XXS, F::IQ1_S, F::IQ2_S, F::IQ2_M, F::IQ1_M];

const TOKEN_EMBD: &[Rule] = &[
    of(&[F::IQ2_XXS, F::IQ2_XS, F::IQ1_S, F::IQ1_M], When::Always, G::Q2_K),
    of(&[F::IQ2_S, F::IQ2_M, F::IQ3_XXS], When::Always, G::IQ3_S),
    of(&[F::TQ1_0, F::TQ2_0, F::Q2_0], When::Always, G::Q4_K),
];

const IQ12_ATTN_V: &[Rule] = &[
    any(When::Either(&When::Gqa4, &When::ExpertsAtLeast4), G::Q4_K),
    of(&[F::IQ2_S, F::IQ2_M], When::Always, G::IQ3_S),
    any(When::Always, G::Q2_K),
];
const IQ12_ATTN_K: &[Rule] = &[any(When::Experts8, G::Q4_K)];
const IQ12_FFN_DOWN: &[Rule] =
    &[of(&[F::IQ2_S, F::IQ2_M], When::FirstEighth, G::IQ3_S), any(When::FirstEighth, G::Q2_K)];
const IQ12_ATTN_OUTPUT: &[Rule] = &[
    any(When::Experts8, G::Q5_K),
    of(&[F::IQ1_S, F::IQ1_M], When::Always, G::IQ2_XXS),
    of(&[F::IQ2_S, F::IQ2_M], When::Always, G::IQ3_S),
];

const ATTN_V: &[Rule] = &[
    of(&[F::Q2_K], When::Gqa4, G::Q4_K),
    of(&[F::Q2_K], When::Always, G::Q3_K),
    of(&[F::Q2_K_S], When::Gqa4, G::Q4_K),
    of(&[F::IQ3_XXS], When::Gqa4, G::Q4_K),
    of(&[F::IQ3_XXS], When::NoImatrix, G::IQ3_S),
    of(&[F::IQ3_XXS], When::Always, G::IQ3_XXS),
    of(&[F::IQ3_XS, F::IQ3_S], When::Gqa4, G::Q4_K),
    of(&[F::IQ3_M], When::Always, G::Q4_K),
    of(&[F::Q3_K_M], When::WvBelow(2), G::Q5_K),
    of(&[F::Q3_K_M], When::Always, G::Q4_K),
    of(&[F::Q3_K_L], When::Always, G::Q5_K),
    of(&[F::IQ4_NL, F::IQ4_XS], When::Gqa4, G::Q5_K),
    of(&[F::Q4_K_M, F::Q5_K_M], When::WvMoreBits, G::Q6_K),
    of(&[F::Q4_K_S], When::WvBelow(4), G::Q5_K),
];

const ATTN_K: &[Rule] = &[
    any(When::Experts8, G::Q8_0),
    of(&[F::IQ3_XS], When::Always, G::IQ3_XXS),
    of(&[F::IQ3_XXS], When::Always, G::IQ2_S),
];

const ATTN_Q: &[Rule] = &[of(&[F::IQ3_XS], When::Always, G::IQ3_XXS), of(&[F::IQ3_XXS], When::Always, G::IQ2_S)];

const FFN_DOWN: &[Rule] = &[
    of(&[F::Q2_K], When::Always, G::Q3_K),
    of(&[F::Q2_K_S], When::FirstEighth, G::Q4_K),
    of(&[F::IQ3_XXS], When::Both(&When::NoImatrix, &When::FirstEighth), G::Q4_K),
    of(&[F::IQ3_XXS], When::NoImatrix, G::Q3_K),
    of(&[F::Q3_K_M], When::FirstSixteenth, G::Q5_K),
    of(&[F::Q3_K_M], When::Either(&When::NotFalcon, &When::MoreBits), G::Q4_K),
    of(&[F::Q3_K_M], When::Always, G::Q3_K),
    of(&[F::IQ3_M], When::Either(&When::FirstEighth, &When::Both(&When::Experts8, &When::MoreBits)), G::Q4_K),
    of(&[F::Q3_K_L], When::Falcon, G::Q4_K),
    of(&[F::Q3_K_L], When::Always, G::Q5_K),
    of(&[F::Q4_K_M], When::Both(&When::Falcon, &When::FirstSixteenth), G::Q6_K),
    of(&[F::Q4_K_M], When::Both(&When::Falcon, &When::MoreBits), G::Q5_K),
    of(&[F::Q4_K_M], When::Falcon, G::Q4_K),
    of(&[F::Q4_K_M], When::MoreBits, G::Q6_K),
    of(&[F::IQ4_NL, F::IQ4_XS], When::Both(&When::FirstEighth, &When::NoImatrix), G::Q5_K),
    of(&[F::Q5_K_M], When::MoreBits, G::Q6_K),
    of(&[F::Q4_K_S], When::Both(&When::NotFalcon, &When::FirstEighth), G::Q5_K),
    of(&[F::Q4_0], When::Both(&When::HasImatrix, &When::FirstEighth), G::Q4_1),
    of(&[F::Q5_0], When::Both(&When::HasImatrix, &When::FirstEighth), G::Q5_1),
];

const ATTN_OUTPUT_FALCON: &[Rule] = &[of(&[F::Q3_K_L], When::Always, G::Q4_K)];
const ATTN_OUTPUT_EXPERTS8: &[Rule] = &[of(
    &[
        F::Q2_K,
        F::IQ3_XS,
        F::IQ3_XXS,
        F::Q3_K_S,
        F::Q3_K_M,
        F::IQ4_NL,
        F::Q4_K_S,
        F::Q4_K_M,
        F::IQ3_S,
        F::IQ3_M,
        F::IQ4_XS,
    ],
    When::Always,
    G::Q5_K,
)];
const ATTN_OUTPUT: &[Rule] = &[
    of(&[F::Q2_K], When::Always, G::Q3_K),
    of(&[F::IQ3_XXS], When::Always, G::IQ3_S),
    of(&[F::Q3_K_M], When::Always, G::Q4_K),
    of(&[F::Q3_K_L], When::Always, G::Q5_K),
    of(&[F::IQ3_M], When::Always, G::Q4_K),
];

const FFN_GATE_UP: &[Rule] = &[of(&[F::IQ3_XS], When::Middle, G::IQ3_XXS)];

/// The options the mix reads.
#[derive(Clone, Copy, Debug)]
pub(super) struct MixParams<'a> {
    pub model: &'a ModelInfo,
    pub ftype: FileType,
    pub has_imatrix: bool,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
}

/// `quantize_state_impl`: the counters and what was learnt from the full tensor list.
#[derive(Clone, Debug, Default)]
pub(super) struct MixState {
    pub n_attention_wv: i32,
    pub n_ffn: i32,
    pub i_attention_wv: i32,
    pub i_ffn_down: i32,
    pub i_ffn_gate: i32,
    pub i_ffn_up: i32,
    pub has_tied_embeddings: bool,
}

impl MixState {
    /// `init_quantize_state_counters`.
    pub fn new<'n>(model: &ModelInfo, names: impl IntoIterator<Item = &'n str>) -> MixState {
        let mut s = MixState { has_tied_embeddings: true, n_ffn: model.n_layer as i32, ..MixState::default() };
        for name in names {
            let cat = TensorCategory::of(name);
            if cat.is_attn_v_like() {
                s.n_attention_wv += 1;
            }
            if cat == TensorCategory::Output {
                s.has_tied_embeddings = false;
            }
        }
        s
    }

    /// `llama_tensor_get_type_impl` for one quantizable tensor whose type would otherwise be `current`
    /// (the file type's default).
    pub fn choose(
        &mut self,
        p: &MixParams<'_>,
        name: &str,
        ne: &[u64],
        cat: TensorCategory,
        current: GgmlType,
    ) -> Result<GgmlType, PolicyError> {
        let m = p.model;
        let mut c = Ctx {
            ftype: p.ftype,
            layer: 0,
            n_layer: self.n_ffn,
            i_wv: self.i_attention_wv,
            n_wv: self.n_attention_wv,
            gqa: m.n_gqa(),
            n_expert: m.n_expert,
            imatrix: p.has_imatrix,
            falcon: m.is_falcon(),
        };

        if cat == TensorCategory::Output || (self.has_tied_embeddings && cat == TensorCategory::TokenEmbd) {
            return Ok(self.output_type(p, ne, current));
        }
        if p.ftype == F::MXFP4_MOE {
            return Ok(if ne.get(2).copied().unwrap_or(1) > 1 { G::MXFP4 } else { G::Q8_0 });
        }
        if cat == TensorCategory::TokenEmbd {
            return Ok(p.token_embedding_type.unwrap_or_else(|| pick(TOKEN_EMBD, &c, current)));
        }

        if IQ1_IQ2.contains(&p.ftype) {
            let ty = if cat.is_attn_v_like() {
                self.i_attention_wv += 1;
                pick(IQ12_ATTN_V, &c, current)
            } else if cat == TensorCategory::AttnK {
                pick(IQ12_ATTN_K, &c, current)
            } else if cat == TensorCategory::FfnDown {
                c.layer = self.i_ffn_down;
                self.i_ffn_down += 1;
                pick(IQ12_FFN_DOWN, &c, current)
            } else if cat == TensorCategory::AttnOutput {
                pick(IQ12_ATTN_OUTPUT, &c, current)
            } else {
                current
            };
            return Ok(ty);
        }

        let ty = match cat {
            _ if cat.is_attn_v_like() => {
                let mut ty = pick(ATTN_V, &c, current);
                if m.is_70b() && matches!(ty, G::Q3_K | G::Q4_K) {
                    ty = G::Q5_K;
                }
                if m.n_expert == 8 {
                    ty = G::Q8_0;
                }
                self.i_attention_wv += 1;
                ty
            }
            TensorCategory::AttnK => pick(ATTN_K, &c, current),
            TensorCategory::AttnQ => pick(ATTN_Q, &c, current),
            TensorCategory::FfnDown => {
                c.layer = layer_of(m, name, self.i_ffn_down, self.n_ffn)?;
                self.i_ffn_down += 1;
                pick(FFN_DOWN, &c, current)
            }
            TensorCategory::AttnOutput => {
                let table = if c.falcon {
                    ATTN_OUTPUT_FALCON
                } else if m.n_expert == 8 {
                    ATTN_OUTPUT_EXPERTS8
                } else {
                    ATTN_OUTPUT
                };
                pick(table, &c, current)
            }
            TensorCategory::FfnGate => {
                c.layer = layer_of(m, name, self.i_ffn_gate, self.n_ffn)?;
                self.i_ffn_gate += 1;
                pick(FFN_GATE_UP, &c, current)
            }
            TensorCategory::FfnUp => {
                c.layer = layer_of(m, name, self.i_ffn_up, self.n_ffn)?;
                self.i_ffn_up += 1;
                pick(FFN_GATE_UP, &c, current)
            }
            _ => current,
        };
        Ok(ty)
    }

    /// The output tensor, and the token embeddings when they are tied to it.
    fn output_type(&self, p: &MixParams<'_>, ne: &[u64], current: GgmlType) -> GgmlType {
        if let Some(t) = p.output_tensor_type {
            return t;
        }
        let nx = ne.first().copied().unwrap_or(1);
        if p.ftype == F::MXFP4_MOE || p.model.is_falcon() || !whole_blocks(current, nx) {
            G::Q8_0
        } else if LOW_BIT_OUTPUT_Q5_K.contains(&p.ftype) {
            G::Q5_K
        } else if current != G::Q8_0 {
            G::Q6_K
        } else {
            current
        }
    }
}

/// `layer_info`: the running counter for dense models; for MoE models the number in `blk.N.`, which must
/// lie in `[0, n_layer)`.
fn layer_of(m: &ModelInfo, name: &str, counter: i32, n_layer: i32) -> Result<i32, PolicyError> {
    if m.n_expert <= 1 {
        return Ok(counter);
    }
    let layer = super::order::parse_blk_layer(name).ok_or_else(|| PolicyError::NoLayer { tensor: name.to_string() })?;
    if layer < 0 || layer >= n_layer {
        return Err(PolicyError::BadLayer { tensor: name.to_string(), layer, n_layer });
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First-match over a table equals llama.cpp's if-chain only when each file type's rows are adjacent.
    #[test]
    fn rows_of_one_file_type_are_adjacent() {
        let tables: &[(&str, &[Rule])] = &[
            ("TOKEN_EMBD", TOKEN_EMBD),
            ("ATTN_V", ATTN_V),
            ("ATTN_K", ATTN_K),
            ("ATTN_Q", ATTN_Q),
            ("FFN_DOWN", FFN_DOWN),
            ("ATTN_OUTPUT", ATTN_OUTPUT),
            ("ATTN_OUTPUT_FALCON", ATTN_OUTPUT_FALCON),
            ("ATTN_OUTPUT_EXPERTS8", ATTN_OUTPUT_EXPERTS8),
            ("FFN_GATE_UP", FFN_GATE_UP),
        ];
        for (table_name, rules) in tables {
            for ft in FileType::all() {
                let rows: Vec<usize> = rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches!(r.ftypes, Ft::Of(list) if list.contains(&ft)))
                    .map(|(i, _)| i)
                    .collect();
                if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
                    assert_eq!(last - first + 1, rows.len(), "{table_name}: rows of {ft} are not adjacent");
                }
            }
        }
    }

    #[test]
    fn use_more_bits_matches_llama_cpp() {
        let layers: Vec<i32> = (0..16).filter(|&i| use_more_bits(i, 16)).collect();
        assert_eq!(layers, [0, 1, 4, 7, 10, 13, 14, 15]);
        let layers: Vec<i32> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(layers, [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    }
}
