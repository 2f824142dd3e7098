//! The forward pass of the architectures convert writes, as llama.cpp runs them (`src/models/llama.cpp`,
//! `qwen2.cpp`, `qwen3.cpp`, `src/llama-graph.cpp` at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62): token
//! embedding, per block RMSNorm -> Q/K/V (+ biases: optional for Llama, required for Qwen2) -> per-head Q/K
//! RMSNorm (Qwen3) -> RoPE (NORM adjacent pairs for Llama/Mistral, NEOX rotate-half for the Qwens, scaled as
//! [`crate::rope`] describes) -> causal GQA attention -> output projection (+ optional bias) -> residual,
//! RMSNorm -> SwiGLU FFN -> residual, final RMSNorm and the output head (tied to the embedding when
//! `output.weight` is absent). Attention is fully causal: Mistral's `sliding_window` is not applied, as
//! llama.cpp does not apply it to `llama`-architecture GGUFs (see [`crate::config`]).
//!
//! One model definition, one execution path: whole sequences are processed at once (no KV cache), several
//! sequences stacked into the rows of every matrix product so each weight is dequantized once per batch.
//! The weight matrix products go through one dispatch ([`crate::device`]): the `gemm` crate of [`crate::ops`]
//! by default, burn tensors on a burn backend when [`LlamaModel::set_device`] chose one (cargo features
//! `burn-cpu`, `burn-wgpu`); attention and the element-wise operations always run on the CPU.

use std::path::Path;

use quantforge_formats::gguf::GgufFile;
use quantforge_formats::hf::HfModel;
use rayon::prelude::*;

use crate::config::LlamaConfig;
use crate::device::{Device, Matmul};
use crate::error::{EvalError, Result};
use crate::ops::{self, View};
use crate::rope::RopeCache;
use crate::weights::{permute_hf_rope_rows, permute_hf_rope_vector, GgufLoader, HfLoader, Matrix};

/// Sees the input of each block matrix product: `(weight name, input rows, columns per row)`.
pub type Observer<'a> = dyn Fn(&str, &[f32], usize) + Sync + 'a;

/// One transformer block.
struct Block {
    attn_norm: Vec<f32>,
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    /// Q/K/V/output biases (Qwen2 always, Llama optionally).
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    bo: Option<Vec<f32>>,
    /// Qwen3's per-head RMSNorm weights of Q and K (`head_dim` values each).
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Matrix,
    ffn_norm: Vec<f32>,
    w_gate: Matrix,
    w_up: Matrix,
    w_down: Matrix,
}

/// A loaded model of any supported architecture (Llama, Mistral, Qwen2, Qwen3).
pub struct LlamaModel {
    cfg: LlamaConfig,
    tok_embd: Matrix,
    /// `None`: tied to `tok_embd`.
    output: Option<Matrix>,
    output_norm: Vec<f32>,
    blocks: Vec<Block>,
    /// Where the weight matrix products run.
    device: Device,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel").field("cfg", &self.cfg).field("device", &self.device).finish_non_exhaustive()
    }
}

impl LlamaModel {
    /// Load a GGUF file or a HF model directory.
    pub fn load(path: &Path) -> Result<LlamaModel> {
        if HfModel::is_model_dir(path) {
            LlamaModel::from_hf(&HfModel::open(path)?)
        } else {
            LlamaModel::from_gguf(&GgufFile::open(path)?)
        }
    }

    /// Load from an open GGUF file; quantized tensors stay quantized.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaModel> {
        let cfg = LlamaConfig::from_gguf(file)?;
        let l = GgufLoader { file };
        let (d, q, kv, ff, hd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff, cfg.head_dim);
        let (bias_required, qk_norm) = (cfg.arch.requires_qkv_bias(), cfg.arch.has_qk_norm());
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                let bias = |s: &str, len: usize, required: bool| -> Result<Option<Vec<f32>>> {
                    let name = format!("blk.{i}.{s}.bias");
                    if required || l.has(&name) {
                        Ok(Some(l.vector(&name, len)?))
                    } else {
                        Ok(None)
                    }
                };
                let norm = |s: &str| if qk_norm { l.vector(&n(s), hd).map(Some) } else { Ok(None) };
                Ok(Block {
                    attn_norm: l.vector(&n("attn_norm"), d)?,
                    wq: l.matrix(&n("attn_q"), q, d)?,
                    wk: l.matrix(&n("attn_k"), kv, d)?,
                    wv: l.matrix(&n("attn_v"), kv, d)?,
                    bq: bias("attn_q", q, bias_required)?,
                    bk: bias("attn_k", kv, bias_required)?,
                    bv: bias("attn_v", kv, bias_required)?,
                    bo: bias("attn_output", d, false)?,
                    q_norm: norm("attn_q_norm")?,
                    k_norm: norm("attn_k_norm")?,
                    wo: l.matrix(&n("attn_output"), d, q)?,
                    ffn_norm: l.vector(&n("ffn_norm"), d)?,
                    w_gate: l.matrix(&n("ffn_gate"), ff, d)?,
                    w_up: l.matrix(&n("ffn_up"), ff, d)?,
                    w_down: l.matrix(&n("ffn_down"), d, ff)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output = if l.has("output.weight") { Some(l.matrix("output.weight", cfg.n_vocab, d)?) } else { None };
        Ok(LlamaModel {
            tok_embd: l.matrix("token_embd.weight", cfg.n_vocab, d)?,
            output,
            output_norm: l.vector("output_norm.weight", d)?,
            blocks,
            cfg,
            device: Device::Cpu,
        })
    }

    /// Load a HF directory of a supported architecture (f32/f16/bf16 safetensors). For Llama and Mistral
    /// the q/k rows (and biases) are permuted from HF's rotate-half layout into llama.cpp's interleaved one,
    /// as convert does, so that NORM RoPE applies; Qwen rows stay as they are and run with NEOX RoPE.
    pub fn from_hf(model: &HfModel) -> Result<LlamaModel> {
        let cfg = LlamaConfig::from_hf(model.dir(), model.config())?;
        let l = HfLoader { model };
        let (d, q, kv, ff, hd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff, cfg.head_dim);
        let (bias_required, qk_norm, permute) =
            (cfg.arch.requires_qkv_bias(), cfg.arch.has_qk_norm(), cfg.arch.permutes_hf_qk());
        let (n_head, n_head_kv) = (cfg.n_head, cfg.n_head_kv);
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let n = |s: &str| format!("model.layers.{i}.{s}.weight");
                let bias = |s: &str, len: usize, required: bool, heads: Option<usize>| -> Result<Option<Vec<f32>>> {
                    let name = format!("model.layers.{i}.{s}.bias");
                    if !required && !l.has(&name) {
                        return Ok(None);
                    }
                    let v = l.vector(&name, len)?;
                    Ok(Some(match heads {
                        Some(h) if permute => permute_hf_rope_vector(&v, h),
                        _ => v,
                    }))
                };
                let qk = |s: &str, rows: usize, heads: usize| -> Result<Matrix> {
                    let m = l.matrix(&n(s), rows, d)?;
                    Ok(if permute { permute_hf_rope_rows(m, heads) } else { m })
                };
                let norm = |s: &str| if qk_norm { l.vector(&n(s), hd).map(Some) } else { Ok(None) };
                Ok(Block {
                    attn_norm: l.vector(&n("input_layernorm"), d)?,
                    wq: qk("self_attn.q_proj", q, n_head)?,
                    wk: qk("self_attn.k_proj", kv, n_head_kv)?,
                    wv: l.matrix(&n("self_attn.v_proj"), kv, d)?,
                    bq: bias("self_attn.q_proj", q, bias_required, Some(n_head))?,
                    bk: bias("self_attn.k_proj", kv, bias_required, Some(n_head_kv))?,
                    bv: bias("self_attn.v_proj", kv, bias_required, None)?,
                    bo: bias("self_attn.o_proj", d, false, None)?,
                    q_norm: norm("self_attn.q_norm")?,
                    k_norm: norm("self_attn.k_norm")?,
                    wo: l.matrix(&n("self_attn.o_proj"), d, q)?,
                    ffn_norm: l.vector(&n("post_attention_layernorm"), d)?,
                    w_gate: l.matrix(&n("mlp.gate_proj"), ff, d)?,
                    w_up: l.matrix(&n("mlp.up_proj"), ff, d)?,
                    w_down: l.matrix(&n("mlp.down_proj"), d, ff)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output = if l.has("lm_head.weight") { Some(l.matrix("lm_head.weight", cfg.n_vocab, d)?) } else { None };
        Ok(LlamaModel {
            tok_embd: l.matrix("model.embed_tokens.weight", cfg.n_vocab, d)?,
            output,
            output_norm: l.vector("model.norm.weight", d)?,
            blocks,
            cfg,
            device: Device::Cpu,
        })
    }

    /// Run the weight matrix products of later forward passes on `device` (default [`Device::Cpu`]). Fails,
    /// leaving the device as it was, if this build does not include it.
    pub fn set_device(&mut self, device: Device) -> Result<()> {
        self.device = device.check()?;
        Ok(())
    }

    /// Where the weight matrix products run.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Bytes of weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down].iter().map(|m| m.bytes()).sum::<usize>()
            })
            .sum();
        blocks + self.tok_embd.bytes() + self.output.as_ref().map_or(0, Matrix::bytes)
    }

    /// Run each sequence from position 0 and return the logits of positions `logits_from..len` of every
    /// sequence, sequence after sequence (`n_vocab` values per position).
    pub fn forward(&self, seqs: &[&[u32]], logits_from: usize) -> Result<Vec<f32>> {
        self.forward_observed(seqs, logits_from, None)
    }

    /// [`LlamaModel::forward`], showing `observe` the input of every block matrix product before it runs:
    /// `(weight name, input rows, columns per row)`. The importance-matrix collector uses it.
    pub fn forward_observed(
        &self,
        seqs: &[&[u32]],
        logits_from: usize,
        observe: Option<&Observer<'_>>,
    ) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let see = |w: &Matrix, input: &[f32], cols: usize| {
            if let Some(f) = observe {
                f(w.name(), input, cols);
            }
        };
        let (d, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let max_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if max_len > cfg.n_ctx_train {
            return Err(EvalError::ContextTooLong { n_ctx: max_len, n_ctx_train: cfg.n_ctx_train });
        }
        let mm = Matmul::new(self.device)?;
        let m: usize = seqs.iter().map(|s| s.len()).sum();
        let mut x = vec![0.0f32; m * d];
        for (tok, row) in seqs.iter().flat_map(|s| s.iter()).zip(x.chunks_exact_mut(d)) {
            if *tok as usize >= cfg.n_vocab {
                return Err(EvalError::TokenOutOfRange { id: *tok, n_vocab: cfg.n_vocab });
            }
            self.tok_embd.row_into(*tok as usize, row)?;
        }
        let rope = RopeCache::new(max_len, &cfg.rope, cfg.rope_freqs.as_deref());
        let positions: Vec<usize> = seqs.iter().flat_map(|s| 0..s.len()).collect();
        let mut xn = vec![0.0f32; m * d];
        let mut q = vec![0.0f32; m * qd];
        let mut k = vec![0.0f32; m * kvd];
        let mut v = vec![0.0f32; m * kvd];
        let mut attn = vec![0.0f32; m * qd];
        let mut gate = vec![0.0f32; m * ff];
        let mut up = vec![0.0f32; m * ff];
        let mut proj = vec![0.0f32; m * d];
        let mut scratch = Vec::new();
        for b in &self.blocks {
            ops::rms_norm(&x, &b.attn_norm, cfg.rms_eps, &mut xn);
            for w in [&b.wq, &b.wk, &b.wv] {
                see(w, &xn, d);
            }
            mm.matmul_t(&xn, m, d, b.wq.as_f32(&mut scratch)?, qd, &mut q)?;
            mm.matmul_t(&xn, m, d, b.wk.as_f32(&mut scratch)?, kvd, &mut k)?;
            mm.matmul_t(&xn, m, d, b.wv.as_f32(&mut scratch)?, kvd, &mut v)?;
            for (buf, bias) in [(&mut q, &b.bq), (&mut k, &b.bk), (&mut v, &b.bv)] {
                if let Some(bias) = bias {
                    buf.par_chunks_mut(bias.len()).for_each(|row| ops::add_assign(row, bias));
                }
            }
            for (buf, width, norm) in [(&mut q, qd, &b.q_norm), (&mut k, kvd, &b.k_norm)] {
                if let Some(w) = norm {
                    // Each token's row holds its heads; the norm runs over each head of `head_dim` values.
                    buf.par_chunks_mut(width).for_each(|row| ops::rms_norm_inplace(row, w, cfg.rms_eps));
                }
            }
            q.par_chunks_mut(qd).zip(&positions).for_each(|(row, &p)| rope.apply(row, cfg.head_dim, p));
            k.par_chunks_mut(kvd).zip(&positions).for_each(|(row, &p)| rope.apply(row, cfg.head_dim, p));
            self.attention(seqs, &q, &k, &v, &mut attn);
            see(&b.wo, &attn, qd);
            mm.matmul_t(&attn, m, qd, b.wo.as_f32(&mut scratch)?, d, &mut proj)?;
            if let Some(bias) = &b.bo {
                ops::add_bias(&mut proj, bias);
            }
            ops::add_assign(&mut x, &proj);

            ops::rms_norm(&x, &b.ffn_norm, cfg.rms_eps, &mut xn);
            see(&b.w_gate, &xn, d);
            see(&b.w_up, &xn, d);
            mm.matmul_t(&xn, m, d, b.w_gate.as_f32(&mut scratch)?, ff, &mut gate)?;
            mm.matmul_t(&xn, m, d, b.w_up.as_f32(&mut scratch)?, ff, &mut up)?;
            gate.par_chunks_mut(ff).zip(up.par_chunks(ff)).for_each(|(g, u)| ops::silu_mul(g, u));
            see(&b.w_down, &gate, ff);
            mm.matmul_t(&gate, m, ff, b.w_down.as_f32(&mut scratch)?, d, &mut proj)?;
            ops::add_assign(&mut x, &proj);
        }
        drop((q, k, v, attn, gate, up, proj));

        // Only the rows whose logits are wanted go through the final norm and the head.
        let mut rows = Vec::new();
        let mut start = 0;
        for s in seqs {
            let from = logits_from.min(s.len());
            rows.extend_from_slice(&x[(start + from) * d..(start + s.len()) * d]);
            start += s.len();
        }
        let n_out = rows.len() / d;
        let mut normed = vec![0.0f32; rows.len()];
        ops::rms_norm(&rows, &self.output_norm, cfg.rms_eps, &mut normed);
        let head = self.output.as_ref().unwrap_or(&self.tok_embd);
        let mut logits = vec![0.0f32; n_out * cfg.n_vocab];
        mm.matmul_t(&normed, n_out, d, head.as_f32(&mut scratch)?, cfg.n_vocab, &mut logits)?;
        Ok(logits)
    }

    /// Causal multi-head attention with grouped KV heads; `out` gets each head's result at its columns.
    fn attention(&self, seqs: &[&[u32]], q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
        /// Query rows per block: a block only attends to keys up to its last row.
        const BLOCK: usize = 128;
        let cfg = &self.cfg;
        let (hd, qd, kvd) = (cfg.head_dim, cfg.q_dim(), cfg.kv_dim());
        let group = cfg.n_head / cfg.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut starts = Vec::with_capacity(seqs.len());
        let mut acc = 0;
        for s in seqs {
            starts.push((acc, s.len()));
            acc += s.len();
        }
        let tasks: Vec<(usize, usize)> = (0..seqs.len()).flat_map(|s| (0..cfg.n_head).map(move |h| (s, h))).collect();
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
                        ops::softmax_masked(row, r0 + i + 1, scale);
                    }
                    let p = View { data: &scores[..nr * nk], rows: nr, cols: nk, rs: nk, cs: 1 };
                    let vv = View { data: &v[off * kvd + kvh * hd..], rows: nk, cols: hd, rs: kvd, cs: 1 };
                    ops::matmul_strided(p, vv, &mut o[r0 * hd..r1 * hd]);
                }
                o
            })
            .collect();
        for (&(s, h), o) in tasks.iter().zip(&results) {
            let (off, len) = starts[s];
            for i in 0..len {
                out[(off + i) * qd + h * hd..(off + i) * qd + (h + 1) * hd].copy_from_slice(&o[i * hd..(i + 1) * hd]);
            }
        }
    }
}
