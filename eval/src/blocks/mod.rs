//! One decoder block, composed from the architecture registry's forward-pass facts, and the one function
//! that runs it ([`run_block`]). The whole-model forward pass ([`crate::LlamaModel`]) and block-by-block
//! calibration ([`ModelFile`]) both go through it, so the two paths cannot drift.
//!
//! A block (llama.cpp `src/models/llama.cpp`, `qwen2.cpp`, `qwen3.cpp` at
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62): RMSNorm -> Q/K/V (+ biases where the facts allow them) ->
//! per-head Q/K RMSNorm (where the facts say so) -> RoPE (the facts' pairing, scaled as [`crate::rope`]
//! describes) -> causal GQA attention -> output projection (+ optional bias) -> residual, RMSNorm -> SwiGLU
//! FFN, or routed experts where the facts have them ([`crate::moe`]) -> residual. Gemma 2/3 (`src/models/gemma2.cpp`,
//! `gemma3.cpp` at 0c1e57098) add, through the facts and [`crate::extras`]: the query scale, a sliding window and
//! their own RoPE on some layers, soft-capped scores, an RMSNorm on the attention and FFN outputs before each
//! residual add, and GeGLU instead of SwiGLU. OLMo 2 (`src/models/olmo2.cpp`) drops the pre-norms (the projections
//! read the residual stream) and norms Q and K over the whole projection. Invariant: the operations and their
//! order are those of the whole-model pass of before (same gemm calls on the same buffers), so results are
//! bit-identical however the blocks are driven.

use std::path::{Path, PathBuf};

use quantforge_formats::arch::{Presence, QkNormWidth};
use rayon::prelude::*;

use crate::config::LlamaConfig;
use crate::device::{Device, Matmul};
use crate::error::{EvalError, Result};
use crate::moe::MoeFfn;
use crate::ops::{self, View};
use crate::rope::RopeCache;
use crate::weights::{Matrix, Opened, Source};

/// Sees the input of each block matrix product: `(weight name, expert, input rows, columns per row)`; the
/// expert is the index into a stacked expert tensor (`ffn_*_exps`) whose slice the rows go through, `None` for
/// any other weight.
pub type Observer<'a> = dyn Fn(&str, Option<usize>, &[f32], usize) + Sync + 'a;

/// One decoder block's weights, named by their GGUF names (`blk.N.attn_q.weight`, ...).
pub struct Block {
    index: usize,
    /// RMSNorm of the block input before attention and before the FFN, where the facts have pre-norms (OLMo 2
    /// has none: the projections read the residual stream as it is).
    attn_norm: Option<Vec<f32>>,
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    /// Q/K/V/output biases, where the architecture's facts allow them and the model has them.
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    bo: Option<Vec<f32>>,
    /// RMSNorm weights of Q and K, where the facts ask for them: `head_dim` values each, applied per head, or one
    /// per projection row, applied to a token's whole projection (OLMo 2).
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Matrix,
    ffn_norm: Option<Vec<f32>>,
    ffn: Ffn,
    /// RMSNorm of the attention and FFN outputs before their residual adds (Gemma's sandwich norms), where
    /// the facts ask for them.
    post_attn_norm: Option<Vec<f32>>,
    post_ffn_norm: Option<Vec<f32>>,
}

/// A block's feed-forward network: dense SwiGLU/GeGLU, or routed experts ([`crate::moe`]).
enum Ffn {
    Dense { w_gate: Matrix, w_up: Matrix, w_down: Matrix },
    Moe(MoeFfn),
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block").field("index", &self.index).field("linears", &self.linears()).finish_non_exhaustive()
    }
}

impl Block {
    /// Read block `i` of `src` as `cfg` describes it: each tensor by its GGUF name and shape, biases and
    /// Q/K norms as the architecture's facts say.
    pub(crate) fn load(src: Source<'_>, cfg: &LlamaConfig, i: usize) -> Result<Block> {
        let (d, q, kv, ff, hd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff, cfg.head_dim);
        let facts = &cfg.arch.forward;
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        let bias = |s: &str, len: usize, presence: Presence| -> Result<Option<Vec<f32>>> {
            let name = format!("blk.{i}.{s}.bias");
            match presence {
                Presence::Required => src.vector(cfg, &name, len).map(Some),
                Presence::Optional if src.has(cfg, &name) => src.vector(cfg, &name, len).map(Some),
                Presence::Optional | Presence::Absent => Ok(None),
            }
        };
        let norm = |s: &str, width: usize| {
            let len = match facts.qk_norm_width {
                QkNormWidth::Head => hd,
                QkNormWidth::Projection => width,
            };
            if facts.qk_norm {
                src.vector(cfg, &n(s), len).map(Some)
            } else {
                Ok(None)
            }
        };
        let pre = |s: &str| if facts.pre_norms { src.vector(cfg, &n(s), d).map(Some) } else { Ok(None) };
        // Fused projections (Phi-3) are split by rows: Q, K, V of `attn_qkv`, gate and up of `ffn_up`. The
        // first part keeps the tensor's name, the others are marked as parts of it (see [`FUSED_PART`]).
        let (wq, wk, wv) = if facts.fused_qkv_gate_up {
            let qkv = src.matrix(cfg, &n("attn_qkv"), q + 2 * kv, d)?;
            let [wq, wk, wv] = split_rows(qkv, [q, kv, kv]);
            (wq, wk, wv)
        } else {
            (
                src.matrix(cfg, &n("attn_q"), q, d)?,
                src.matrix(cfg, &n("attn_k"), kv, d)?,
                src.matrix(cfg, &n("attn_v"), kv, d)?,
            )
        };
        let ffn = match &cfg.moe {
            Some(moe) => Ffn::Moe(MoeFfn::load(src, cfg, moe, i)?),
            None if facts.fused_qkv_gate_up => {
                let gate_up = src.matrix(cfg, &n("ffn_up"), 2 * ff, d)?;
                let [w_gate, w_up] = split_rows(gate_up, [ff, ff]);
                Ffn::Dense { w_gate, w_up, w_down: src.matrix(cfg, &n("ffn_down"), d, ff)? }
            }
            None => Ffn::Dense {
                w_gate: src.matrix(cfg, &n("ffn_gate"), ff, d)?,
                w_up: src.matrix(cfg, &n("ffn_up"), ff, d)?,
                w_down: src.matrix(cfg, &n("ffn_down"), d, ff)?,
            },
        };
        let post = |s: &str| if facts.post_norms { src.vector(cfg, &n(s), d).map(Some) } else { Ok(None) };
        Ok(Block {
            index: i,
            attn_norm: pre("attn_norm")?,
            wq,
            wk,
            wv,
            bq: bias("attn_q", q, facts.qkv_bias)?,
            bk: bias("attn_k", kv, facts.qkv_bias)?,
            bv: bias("attn_v", kv, facts.qkv_bias)?,
            bo: bias("attn_output", d, facts.attn_out_bias)?,
            q_norm: norm("attn_q_norm", q)?,
            k_norm: norm("attn_k_norm", kv)?,
            wo: src.matrix(cfg, &n("attn_output"), d, q)?,
            ffn_norm: pre("ffn_norm")?,
            ffn,
            post_attn_norm: post("post_attention_norm")?,
            post_ffn_norm: post("post_ffw_norm")?,
        })
    }

    /// The block's index in the model.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The weight matrices in forward order (an MoE block: its router, then every expert's, then the shared
    /// expert's).
    fn linears(&self) -> Vec<&Matrix> {
        let mut all = vec![&self.wq, &self.wk, &self.wv, &self.wo];
        match &self.ffn {
            Ffn::Dense { w_gate, w_up, w_down } => all.extend([w_gate, w_up, w_down]),
            Ffn::Moe(moe) => all.extend(moe.matrices()),
        }
        all
    }

    /// The matrices of weight `name`: the one of that name, followed by the later parts of a fused tensor.
    fn parts_mut(&mut self, name: &str) -> Vec<&mut Matrix> {
        let mut all = vec![&mut self.wq, &mut self.wk, &mut self.wv, &mut self.wo];
        match &mut self.ffn {
            Ffn::Dense { w_gate, w_up, w_down } => all.extend([w_gate, w_up, w_down]),
            Ffn::Moe(moe) => all.extend(moe.matrices_mut()),
        }
        let part = format!("{name}{FUSED_PART}");
        let mut all = all.into_iter().skip_while(|m| m.name() != name);
        let first = all.next();
        first.into_iter().chain(all.take_while(|m| m.name() == part)).collect()
    }

    fn parts(&self, name: &str) -> Result<Vec<&Matrix>> {
        let part = format!("{name}{FUSED_PART}");
        let mut all = self.linears().into_iter().skip_while(|m| m.name() != name);
        let first = all.next().ok_or_else(|| EvalError::UnknownWeight { block: self.index, name: name.into() })?;
        Ok(std::iter::once(first).chain(all.take_while(|m| m.name() == part)).collect())
    }

    fn linear(&self, name: &str) -> Result<&Matrix> {
        Ok(self.parts(name)?[0])
    }

    /// The block's weight matrices in forward order, by GGUF name (`blk.N.attn_q.weight`,
    /// `attn_k`, `attn_v`, `attn_output`, `ffn_gate`, `ffn_up`, `blk.N.ffn_down.weight`; a fused model's
    /// `attn_qkv`, `attn_output`, `ffn_up`, `ffn_down`): the names [`Observer`] sees their inputs under.
    pub fn linear_names(&self) -> Vec<&str> {
        self.linears().into_iter().map(Matrix::name).filter(|n| !n.ends_with(FUSED_PART)).collect()
    }

    /// A weight matrix as `f32` rows: `(rows, cols, values)` with `cols` the input dimension, dequantized
    /// if stored quantized; a fused tensor whole (Phi-3's Q/K/V rows, or gate then up).
    pub fn weight_f32(&self, name: &str) -> Result<(usize, usize, Vec<f32>)> {
        let parts = self.parts(name)?;
        let mut values = Vec::new();
        for m in &parts {
            values.extend(m.to_f32_vec()?);
        }
        Ok((parts.iter().map(|m| m.rows()).sum(), parts[0].cols(), values))
    }

    /// Whether weight `name` holds exactly `values` (as [`Block::weight_f32`] gives them).
    pub fn holds(&self, name: &str, values: &[f32]) -> Result<bool> {
        Ok(self.weight_f32(name)?.2 == values)
    }

    /// The input width of weight matrix `name`.
    pub fn weight_cols(&self, name: &str) -> Result<usize> {
        Ok(self.linear(name)?.cols())
    }

    /// Replace a weight matrix by dense `f32` values of the same shape (`rows * cols`, row-major); later
    /// [`run_block`] calls use them. Fails on a name that is not one of [`Block::linear_names`] or a wrong
    /// number of values.
    pub fn replace_weight(&mut self, name: &str, values: Vec<f32>) -> Result<()> {
        let index = self.index;
        let mut parts = self.parts_mut(name);
        let Some(cols) = parts.first().map(|m| m.cols()) else {
            return Err(EvalError::UnknownWeight { block: index, name: name.into() });
        };
        let rows: usize = parts.iter().map(|m| m.rows()).sum();
        if values.len() != rows * cols {
            return Err(EvalError::BadWeightLength { name: name.into(), rows, cols, found: values.len() });
        }
        let mut rest = values.as_slice();
        for m in &mut parts {
            let (head, tail) = rest.split_at(m.rows() * m.cols());
            m.replace(head.to_vec())?;
            rest = tail;
        }
        Ok(())
    }

    /// Divide the norm weight `name` (`blk.N.attn_norm.weight` or `blk.N.ffn_norm.weight`) element-wise by
    /// `divisor`, returning its new values; later [`run_block`] calls use them.
    pub fn scale_norm(&mut self, name: &str, divisor: &[f32]) -> Result<Vec<f32>> {
        let index = self.index;
        let norm = if name == format!("blk.{index}.attn_norm.weight") {
            self.attn_norm.as_mut()
        } else if name == format!("blk.{index}.ffn_norm.weight") {
            self.ffn_norm.as_mut()
        } else {
            None
        };
        // A block without pre-norms (OLMo 2) has none to scale.
        let Some(norm) = norm else { return Err(EvalError::UnknownWeight { block: index, name: name.into() }) };
        if divisor.len() != norm.len() {
            return Err(EvalError::UnknownWeight {
                block: index,
                name: format!("{name} (scaled by {} values)", divisor.len()),
            });
        }
        norm.iter_mut().zip(divisor).for_each(|(w, d)| *w /= d);
        Ok(norm.clone())
    }

    /// Bytes of weight matrices held in memory (norms and biases are not counted).
    pub fn weight_bytes(&self) -> usize {
        self.linears().iter().map(|m| m.bytes()).sum()
    }
}

/// Marks the rows of a fused tensor after its first part (`blk.N.attn_qkv.weight#part`): the inputs of a fused
/// tensor are shown to an [`Observer`] once, under the tensor's own name.
pub const FUSED_PART: &str = "#part";

/// `m` cut into consecutive row ranges of `rows` rows; the first keeps `m`'s name.
fn split_rows<const N: usize>(m: Matrix, rows: [usize; N]) -> [Matrix; N] {
    let name = m.name().to_string();
    let mut parts = m.split_rows(&rows).into_iter();
    std::array::from_fn(|i| {
        let part = parts.next().expect("one part per row count");
        if i == 0 {
            part
        } else {
            part.renamed(format!("{name}{FUSED_PART}"))
        }
    })
}

/// Buffers of one pass, reused from block to block.
#[derive(Default)]
struct Buffers {
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    proj: Vec<f32>,
    /// Dequantized weights.
    scratch: Vec<f32>,
}

/// The hidden states of every token of a batch of sequences (sequence after sequence, `width` values per
/// token), with each token's position in its sequence; what flows from block to block.
pub struct Activations {
    hidden: Vec<f32>,
    width: usize,
    seq_lens: Vec<usize>,
    positions: Vec<usize>,
    rope: RopeCache,
    /// The RoPE of sliding-window layers, where it differs from `rope`.
    rope_swa: Option<RopeCache>,
    buffers: Buffers,
}

impl Clone for Activations {
    /// The same hidden states and positions; the per-pass buffers are not copied (they are scratch space).
    fn clone(&self) -> Activations {
        Activations {
            hidden: self.hidden.clone(),
            width: self.width,
            seq_lens: self.seq_lens.clone(),
            positions: self.positions.clone(),
            rope: self.rope.clone(),
            rope_swa: self.rope_swa.clone(),
            buffers: Buffers::default(),
        }
    }
}

impl std::fmt::Debug for Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activations").field("seq_lens", &self.seq_lens).field("width", &self.width).finish()
    }
}

impl Activations {
    /// The embeddings of `seqs` (each from position 0): `fill(tokens, out)` writes the embedding row of every
    /// token of all sequences (checked to be in the vocabulary) into `out`, `n_embd` values per token.
    pub(crate) fn embed(
        cfg: &LlamaConfig,
        seqs: &[&[u32]],
        mut fill: impl FnMut(&[u32], &mut [f32]) -> Result<()>,
    ) -> Result<Activations> {
        let max_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if max_len > cfg.n_ctx_train {
            return Err(EvalError::ContextTooLong { n_ctx: max_len, n_ctx_train: cfg.n_ctx_train });
        }
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= cfg.n_vocab) {
            return Err(EvalError::TokenOutOfRange { id, n_vocab: cfg.n_vocab });
        }
        let mut hidden = vec![0.0f32; tokens.len() * cfg.n_embd];
        fill(&tokens, &mut hidden)?;
        // Gemma: `sqrt(n_embd)`; Granite: `ggml_scale(inpL, f_embedding_scale)`.
        if let Some(s) = cfg.extras.embd_scale {
            hidden.par_iter_mut().for_each(|x| *x *= s);
        }
        let freq_factors = cfg.extras.longrope_for(max_len, cfg.rope.n_ctx_orig).or(cfg.rope_freqs.as_deref());
        Ok(Activations {
            hidden,
            width: cfg.n_embd,
            seq_lens: seqs.iter().map(|s| s.len()).collect(),
            positions: seqs.iter().flat_map(|s| 0..s.len()).collect(),
            rope: RopeCache::new(max_len, &cfg.rope, freq_factors),
            rope_swa: cfg.extras.rope_swa.as_ref().map(|r| RopeCache::new(max_len, r, cfg.rope_freqs.as_deref())),
            buffers: Buffers::default(),
        })
    }

    /// All hidden states, `n_tokens * width` values.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden
    }

    /// Tokens of all sequences together.
    pub fn n_tokens(&self) -> usize {
        self.positions.len()
    }

    /// Values per token (`n_embd`).
    pub fn width(&self) -> usize {
        self.width
    }

    /// The length of each sequence, in order.
    pub fn seq_lens(&self) -> &[usize] {
        &self.seq_lens
    }

    /// Each token's position in its sequence.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Drop the per-pass buffers (the hidden states stay).
    pub(crate) fn release_buffers(&mut self) {
        self.buffers = Buffers::default();
    }

    /// After a run stopped at stage `last` ([`run_block_stages`]), drop every buffer a run resuming at stage
    /// `last + 1` does not read; returns the bytes kept (hidden states included).
    pub(crate) fn trim(&mut self, last: usize) -> usize {
        let kept = std::mem::take(&mut self.buffers);
        match last {
            1 => self.buffers.attn = kept.attn,
            3 => self.buffers.gate = kept.gate,
            _ => {}
        }
        4 * (self.hidden.len() + self.buffers.attn.len() + self.buffers.gate.len())
    }
}

/// Resize `buf` to `n` values (contents are overwritten before they are read).
fn sized(buf: &mut Vec<f32>, n: usize) {
    if buf.len() != n {
        buf.clear();
        buf.resize(n, 0.0);
    }
}

/// Run one block in place on `acts`, the weight matrix products on `device`, showing `observe` the input
/// of each weight matrix product before it runs (`(weight name, input rows, columns per row)`, as
/// [`crate::LlamaModel::forward_observed`] does).
pub fn run_block(
    cfg: &LlamaConfig,
    block: &Block,
    acts: &mut Activations,
    device: Device,
    observe: Option<&Observer<'_>>,
) -> Result<()> {
    run_block_until(cfg, block, acts, device, observe, usize::MAX)
}

/// [`run_block`], stopping once `observe` has been shown the inputs of stage `last` ([`stage_of`]), as a
/// true-sequential calibration pass needs; `acts` is then left part-way through the block and must not be
/// used further, except to resume it with [`run_block_stages`].
pub(crate) fn run_block_until(
    cfg: &LlamaConfig,
    block: &Block,
    acts: &mut Activations,
    device: Device,
    observe: Option<&Observer<'_>>,
    last: usize,
) -> Result<()> {
    run_block_stages(cfg, block, acts, device, observe, 0, last)
}

/// Run stages `first..=last` of a block ([`stage_of`]; stage 4 is the down projection's output and the residual
/// add), showing `observe` the inputs of every stage run. `first = 0` starts from the block's input in `acts`;
/// a later `first` resumes `acts` as a run that stopped after stage `first - 1` left it ([`Activations::trim`]
/// keeps what that needs): the attention's output after stage 1, the hidden states with the attention added after
/// stage 2, and those and the down projection's input after stage 3 (a mixture of experts recomputes its FFN
/// from the hidden states). Stages from `first` on use the block's current weights, so a true-sequential pass
/// resumes where the previous one stopped instead of recomputing the layers already solved.
pub(crate) fn run_block_stages(
    cfg: &LlamaConfig,
    block: &Block,
    acts: &mut Activations,
    device: Device,
    observe: Option<&Observer<'_>>,
    first: usize,
    last: usize,
) -> Result<()> {
    let see = |w: &Matrix, input: &[f32], cols: usize| {
        if let Some(f) = observe.filter(|_| !w.name().ends_with(FUSED_PART)) {
            f(w.name(), None, input, cols);
        }
    };
    let mm = Matmul::new(device)?;
    let (d, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    let m = acts.n_tokens();
    let Activations { hidden: x, seq_lens, positions, rope, rope_swa, buffers, .. } = acts;
    let rope = match (cfg.extras.window(block.index), rope_swa) {
        (Some(_), Some(swa)) => &*swa,
        _ => &*rope,
    };
    let Buffers { xn, q, k, v, attn, gate, up, proj, scratch } = buffers;
    // Each buffer is sized where a stage first writes it: a resumed run allocates only what its stages use.
    sized(xn, m * d);
    let b = block;
    if first <= 1 {
        pre_norm(x, b.attn_norm.as_deref(), cfg.rms_eps, xn);
    }
    if first == 0 {
        for w in [&b.wq, &b.wk, &b.wv] {
            see(w, xn, d);
        }
    }
    if last == 0 {
        return Ok(());
    }
    if first <= 1 {
        for (buf, n) in [(&mut *q, m * qd), (&mut *k, m * kvd), (&mut *v, m * kvd), (&mut *attn, m * qd)] {
            sized(buf, n);
        }
        mm.matmul_t(xn, m, d, b.wq.as_f32(scratch)?, qd, q)?;
        mm.matmul_t(xn, m, d, b.wk.as_f32(scratch)?, kvd, k)?;
        mm.matmul_t(xn, m, d, b.wv.as_f32(scratch)?, kvd, v)?;
        for (buf, bias) in [(&mut *q, &b.bq), (&mut *k, &b.bk), (&mut *v, &b.bv)] {
            if let Some(bias) = bias {
                buf.par_chunks_mut(bias.len()).for_each(|row| ops::add_assign(row, bias));
            }
        }
        for (buf, width, norm) in [(&mut *q, qd, &b.q_norm), (&mut *k, kvd, &b.k_norm)] {
            if let Some(w) = norm {
                // Each token's row holds its heads; the norm runs over each head of `head_dim` values (with one
                // shared weight vector, or the head's part of a row-wide one), or over the whole row (OLMo 2).
                let span = match cfg.arch.forward.qk_norm_width {
                    QkNormWidth::Head => cfg.head_dim,
                    QkNormWidth::Projection => width,
                };
                buf.par_chunks_mut(width).for_each(|row| {
                    for (j, part) in row.chunks_exact_mut(span).enumerate() {
                        let wj =
                            if w.len() == span { w.as_slice() } else { w.get(j * span..(j + 1) * span).unwrap_or(w) };
                        ops::rms_norm_inplace(part, wj, cfg.rms_eps);
                    }
                });
            }
        }
        // SmolLM3's NoPE layers: every `step`-th layer runs without RoPE.
        let nope = cfg.arch.forward.no_rope_layer_step.is_some_and(|s| (b.index + 1).is_multiple_of(s as usize));
        if !nope {
            q.par_chunks_mut(qd).zip(&*positions).for_each(|(row, &p)| rope.apply(row, cfg.head_dim, p));
            k.par_chunks_mut(kvd).zip(&*positions).for_each(|(row, &p)| rope.apply(row, cfg.head_dim, p));
        }
        attention(cfg, b.index, seq_lens, q, k, v, attn);
        see(&b.wo, attn, qd);
    }
    if last == 1 {
        return Ok(());
    }
    sized(proj, m * d);
    if first <= 2 {
        mm.matmul_t(attn, m, qd, b.wo.as_f32(scratch)?, d, proj)?;
        if let Some(bias) = &b.bo {
            ops::add_bias(proj, bias);
        }
        residual_scale(cfg, proj);
        if let Some(w) = &b.post_attn_norm {
            ops::par_rms_norm_inplace(proj, w, cfg.rms_eps);
        }
        ops::par_add_assign(x, proj);
    }
    if first <= 3 {
        pre_norm(x, b.ffn_norm.as_deref(), cfg.rms_eps, xn);
    }
    let (w_gate, w_up, w_down) = match &b.ffn {
        Ffn::Dense { w_gate, w_up, w_down } => (w_gate, w_up, w_down),
        // The router, each expert (under its stacked tensor's name and its index) and the shared expert are
        // observed. Stages 2 and 3 are interleaved expert by expert: a run stopping at either runs the whole FFN
        // without adding it (a resumed run recomputes it from the hidden states), a run to the end adds it.
        Ffn::Moe(moe) => {
            if first == 4 {
                pre_norm(x, b.ffn_norm.as_deref(), cfg.rms_eps, xn);
            }
            moe.forward(&mm, xn, m, d, scratch, proj, observe)?;
            if last >= 4 {
                ops::par_add_assign(x, proj);
            }
            return Ok(());
        }
    };
    if first <= 2 {
        see(w_gate, xn, d);
        see(w_up, xn, d);
    }
    if last == 2 {
        return Ok(());
    }
    if first <= 3 {
        sized(gate, m * ff);
        sized(up, m * ff);
        mm.matmul_t(xn, m, d, w_gate.as_f32(scratch)?, ff, gate)?;
        mm.matmul_t(xn, m, d, w_up.as_f32(scratch)?, ff, up)?;
        let act = ops::glu(cfg.arch.forward.ffn);
        gate.par_chunks_mut(ff).zip(up.par_chunks(ff)).for_each(|(g, u)| act(g, u));
        see(w_down, gate, ff);
    }
    if last == 3 {
        return Ok(());
    }
    mm.matmul_t(gate, m, ff, w_down.as_f32(scratch)?, d, proj)?;
    residual_scale(cfg, proj);
    if let Some(w) = &b.post_ffn_norm {
        ops::par_rms_norm_inplace(proj, w, cfg.rms_eps);
    }
    ops::par_add_assign(x, proj);
    Ok(())
}

/// The step of a block at which weight `name` (GGUF naming) reads its input: 0 Q/K/V (or the fused QKV),
/// 1 the attention output, 2 the FFN's input (gate/up, the router, every expert's gate/up, the shared
/// expert's), 3 the down projections. The order in which [`run_block_stages`] shows them.
pub fn stage_of(name: &str) -> usize {
    let short = name.split('.').nth(2).unwrap_or("");
    match short {
        "attn_q" | "attn_k" | "attn_v" | "attn_qkv" => 0,
        "attn_output" => 1,
        s if s.starts_with("ffn_down") => 3,
        _ => 2,
    }
}

/// `xn` = the RMSNorm of `x` with `weight`, or `x` itself for a block without pre-norms.
fn pre_norm(x: &[f32], weight: Option<&[f32]>, eps: f32, xn: &mut [f32]) {
    match weight {
        Some(w) => ops::par_rms_norm(x, w, eps, xn),
        None => xn.copy_from_slice(x),
    }
}

/// Granite: a block output is multiplied by `residual_scale` (when set) before its residual add.
fn residual_scale(cfg: &LlamaConfig, out: &mut [f32]) {
    if let Some(s) = cfg.extras.residual_scale {
        out.par_iter_mut().for_each(|v| *v *= s);
    }
}

/// Causal multi-head attention of layer `il` with grouped KV heads over sequences of `seq_lens` tokens stacked
/// in the rows (through the layer's sliding window, soft-capped and scaled as the config's extras say); `out`
/// gets each head's result at its columns.
fn attention(cfg: &LlamaConfig, il: usize, seq_lens: &[usize], q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    /// Query rows per block: a block only attends to keys up to its last row.
    const BLOCK: usize = 128;
    let (hd, qd, kvd) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
    let group = cfg.n_head / cfg.n_head_kv;
    let scale = cfg.extras.query_scale.unwrap_or(1.0 / (hd as f32).sqrt());
    let (window, cap) = (cfg.extras.window(il), cfg.extras.attn_softcap);
    let mut starts = Vec::with_capacity(seq_lens.len());
    let mut acc = 0;
    for &len in seq_lens {
        starts.push((acc, len));
        acc += len;
    }
    let tasks: Vec<(usize, usize)> = (0..seq_lens.len()).flat_map(|s| (0..cfg.n_head).map(move |h| (s, h))).collect();
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(s, h)| {
            let (off, len) = starts[s];
            let kvh = h / group;
            let mut o = vec![0.0f32; len * hd];
            let mut scores = vec![0.0f32; BLOCK.min(len) * len];
            for r0 in (0..len).step_by(BLOCK) {
                let r1 = (r0 + BLOCK).min(len);
                let (nr, nk) = (r1 - r0, r1);
                let qv = View { data: &q[(off + r0) * qd + h * hd..], rows: nr, cols: hd, rs: qd, cs: 1 };
                let kt = View { data: &k[off * kvd + kvh * hd..], rows: hd, cols: nk, rs: 1, cs: kvd };
                ops::matmul_strided(qv, kt, &mut scores[..nr * nk]);
                for (i, row) in scores[..nr * nk].chunks_exact_mut(nk).enumerate() {
                    let hi = r0 + i + 1;
                    match (window, cap) {
                        (None, None) => ops::softmax_masked(row, hi, scale),
                        // A window of `w` tokens: the query's own and the `w - 1` before it.
                        (w, cap) => ops::softmax_window(row, w.map_or(0, |w| hi.saturating_sub(w)), hi, scale, cap),
                    }
                }
                let p = View { data: &scores[..nr * nk], rows: nr, cols: nk, rs: nk, cs: 1 };
                let vv = View { data: &v[off * kvd + kvh * hd..], rows: nk, cols: hd, rs: kvd, cs: 1 };
                ops::matmul_strided(p, vv, &mut o[r0 * hd..r1 * hd]);
            }
            o
        })
        .collect();
    // Row by row over the pool: each token's row takes its sequence's heads (tasks are sequence-major).
    let n_head = cfg.n_head;
    let mut row_seq = Vec::with_capacity(acc);
    for (s, &(_, len)) in starts.iter().enumerate() {
        row_seq.extend((0..len).map(|i| (s, i)));
    }
    out.par_chunks_mut(qd).zip(&row_seq).for_each(|(row, &(s, i))| {
        for (h, dst) in row.chunks_exact_mut(hd).enumerate() {
            dst.copy_from_slice(&results[s * n_head + h][i * hd..(i + 1) * hd]);
        }
    });
}

/// An opened model (a memory-mapped GGUF file or a HF directory) with its config read and no weights
/// loaded: blocks are loaded one at a time with [`ModelFile::load_block`], so a model larger than memory
/// can be run block by block.
pub struct ModelFile {
    path: PathBuf,
    cfg: LlamaConfig,
    opened: Opened,
}

impl std::fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFile").field("path", &self.path).field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl ModelFile {
    /// Open a GGUF file or a HF model directory and read its config (fails on unsupported architectures
    /// before any tensor is read).
    pub fn open(path: &Path) -> Result<ModelFile> {
        let opened = Opened::open(path)?;
        let cfg = opened.source().config()?;
        Ok(ModelFile { path: path.to_path_buf(), cfg, opened })
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn source(&self) -> Source<'_> {
        self.opened.source()
    }

    /// Block `i`'s weights only, copied out of the mapping (its pages released afterwards), quantized
    /// tensors kept quantized.
    pub fn load_block(&self, i: usize) -> Result<Block> {
        if i >= self.cfg.n_layer {
            return Err(EvalError::BlockOutOfRange { path: self.path.clone(), index: i, n_layer: self.cfg.n_layer });
        }
        Block::load(self.source(), &self.cfg, i)
    }

    /// The token embedding rows of `seqs` (each from position 0; only the rows used are read) as the
    /// initial hidden states.
    pub fn embed(&self, seqs: &[&[u32]]) -> Result<Activations> {
        let cfg = &self.cfg;
        Activations::embed(cfg, seqs, |tokens, out| {
            let rows = self.source().rows(cfg, "token_embd.weight", (cfg.n_vocab, cfg.n_embd), tokens)?;
            out.copy_from_slice(&rows);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
