//! The forward pass of the architectures convert writes, as llama.cpp runs them (`src/models/llama.cpp`,
//! `qwen2.cpp`, `qwen3.cpp`, `src/llama-graph.cpp` at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62): token
//! embedding, the decoder blocks of [`crate::blocks`] (composed from the architecture registry's facts), final
//! RMSNorm and the output head (tied to the embedding when `output.weight` is absent). Attention is fully
//! causal except on Gemma's sliding-window layers: Mistral's `sliding_window` is not applied, as llama.cpp
//! does not apply it to `llama`-architecture GGUFs (see [`crate::config`]). Gemma's embeddings are scaled by
//! `sqrt(n_embd)` and its logits soft-capped ([`crate::extras`]).
//!
//! One model definition, one execution path: [`LlamaModel`] is a [`ModelFile`] with every block loaded, and
//! its forward pass is embed -> [`run_block`] for each block -> head, the same function block-by-block
//! calibration runs. Whole sequences are processed at once (no KV cache), several sequences stacked into the
//! rows of every matrix product so each weight is dequantized once per batch. The weight matrix products go
//! through one dispatch ([`crate::device`]): the `gemm` crate of [`crate::ops`] by default, burn tensors on a
//! burn backend when [`LlamaModel::set_device`] chose one (cargo features `burn-cpu`, `burn-wgpu`); attention
//! and the element-wise operations always run on the CPU.

use std::path::Path;

use quantforge_formats::gguf::GgufFile;
use quantforge_formats::hf::HfModel;
use rayon::prelude::*;

use crate::blocks::{run_block, Activations, Block, ModelFile, Observer};
use crate::config::LlamaConfig;
use crate::device::{Device, Matmul};
use crate::error::Result;
use crate::ops;
use crate::weights::{Matrix, Source};

/// A loaded model of any supported architecture (Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen2-MoE, Qwen3-MoE).
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
        LlamaModel::from_file(&ModelFile::open(path)?)
    }

    /// Load from an open GGUF file; quantized tensors stay quantized.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaModel> {
        let source = Source::Gguf(file);
        let cfg = source.config()?;
        LlamaModel::from_source(source, cfg)
    }

    /// Load a HF directory of a supported architecture (f32/f16/bf16 safetensors). Tensors are read by their
    /// GGUF names through the architecture's rules, with the rules' transforms: Llama and Mistral q/k rows
    /// (and biases) are permuted from HF's rotate-half layout into llama.cpp's interleaved one, as convert
    /// does, so that NORM RoPE applies; Qwen rows stay as they are and run with NEOX RoPE.
    pub fn from_hf(model: &HfModel) -> Result<LlamaModel> {
        let source = Source::Hf(model);
        let cfg = source.config()?;
        LlamaModel::from_source(source, cfg)
    }

    /// Load every block of an opened model.
    pub fn from_file(file: &ModelFile) -> Result<LlamaModel> {
        LlamaModel::from_source(file.source(), file.config().clone())
    }

    pub(crate) fn from_source(src: Source<'_>, cfg: LlamaConfig) -> Result<LlamaModel> {
        let d = cfg.n_embd;
        // Blocks are copied out of the file in parallel; the first failing block (in order) is the error.
        let loaded: Vec<Result<Block>> = (0..cfg.n_layer).into_par_iter().map(|i| Block::load(src, &cfg, i)).collect();
        let blocks = loaded.into_iter().collect::<Result<Vec<_>>>()?;
        // Tied to the embeddings when absent, unless llama.cpp requires the head (OLMo 2): then missing is an error.
        let output = if cfg.arch.requires_output() || src.has(&cfg, "output.weight") {
            Some(src.matrix(&cfg, "output.weight", cfg.n_vocab, d)?)
        } else {
            None
        };
        Ok(LlamaModel {
            tok_embd: src.matrix(&cfg, "token_embd.weight", cfg.n_vocab, d)?,
            output,
            output_norm: src.vector(&cfg, "output_norm.weight", d)?,
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
        let blocks: usize = self.blocks.iter().map(Block::weight_bytes).sum();
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
        let mut acts = self.embed(seqs)?;
        for b in &self.blocks {
            run_block(cfg, b, &mut acts, self.device, observe)?;
        }
        acts.release_buffers();
        self.head(&acts, seqs, logits_from)
    }

    /// The embedding rows of `seqs` as the first hidden states.
    pub(crate) fn embed(&self, seqs: &[&[u32]]) -> Result<Activations> {
        Activations::embed(&self.cfg, seqs, |tokens, x| {
            for (tok, row) in tokens.iter().zip(x.chunks_exact_mut(self.cfg.n_embd)) {
                self.tok_embd.row_into(*tok as usize, row)?;
            }
            Ok(())
        })
    }

    /// Final norm and output head on the rows of positions `logits_from..len` of every sequence.
    pub(crate) fn head(&self, acts: &Activations, seqs: &[&[u32]], logits_from: usize) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let d = cfg.n_embd;
        let x = acts.hidden();
        let mm = Matmul::new(self.device)?;
        let mut scratch = Vec::new();
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
        ops::par_rms_norm(&rows, &self.output_norm, cfg.rms_eps, &mut normed);
        let head = self.output.as_ref().unwrap_or(&self.tok_embd);
        let mut logits = vec![0.0f32; n_out * cfg.n_vocab];
        mm.matmul_t(&normed, n_out, d, head.as_f32(&mut scratch)?, cfg.n_vocab, &mut logits)?;
        if let Some(s) = cfg.extras.logit_scale {
            // Granite: `ggml_scale(cur, 1.0f / f_logit_scale)`.
            let inv = 1.0 / s;
            logits.iter_mut().for_each(|v| *v *= inv);
        }
        if let Some(cap) = cfg.extras.final_softcap {
            // llama.cpp: scale by 1/cap, tanh, scale by cap.
            logits.iter_mut().for_each(|x| *x = (*x * (1.0 / cap)).tanh() * cap);
        }
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use quantforge_formats::arch::{Architecture, FfnKind, ForwardFacts, QkNormWidth, RopeStyle};

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs").join(name)
    }

    /// Mean KL(transformers || model) over the fixture's positions.
    fn kld(model: &LlamaModel, name: &str) -> f64 {
        let dir = fixture(name);
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
        let tokens: Vec<u32> = meta["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        let bytes = std::fs::read(dir.join("reference-logprobs.f32")).unwrap();
        let want: Vec<f64> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect();
        let logits = model.forward(&[&tokens], 0).unwrap();
        let vocab = model.config().n_vocab;
        let mut sum = 0.0;
        for (row, lp) in logits.chunks(vocab).zip(want.chunks(vocab)) {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            sum += lp.iter().zip(row).map(|(&p, &x)| p.exp() * (p - (x as f64 - lse))).sum::<f64>();
        }
        sum / tokens.len() as f64
    }

    /// `arch` with other forward facts (leaked: a test-only `'static` registry entry).
    fn with_facts(arch: &Architecture, forward: ForwardFacts) -> &'static Architecture {
        Box::leak(Box::new(Architecture {
            hf_names: arch.hf_names,
            gguf_name: arch.gguf_name,
            rules: arch.rules,
            extra_keys: arch.extra_keys,
            vocab: arch.vocab,
            llama3_rope_freqs: arch.llama3_rope_freqs,
            forward,
            converter: arch.converter,
        }))
    }

    /// Each Gemma feature, taken away from the config the fixture's GGUF gives, moves the next-token
    /// distributions at least 5 times the fixture test's bound (1e-4) from transformers': none is inert there.
    #[test]
    fn every_gemma_feature_matters_on_its_fixture() {
        for name in ["gemma2", "gemma3"] {
            let file = GgufFile::open(fixture(name).join("llama.cpp-f32.gguf")).unwrap();
            let src = Source::Gguf(&file);
            let cfg = src.config().unwrap();
            let run = |c: &LlamaConfig| kld(&LlamaModel::from_source(src, c.clone()).unwrap(), name);
            assert!(run(&cfg) < 1e-6, "{name}: as loaded");
            let f = cfg.arch.forward;
            let mut variants: Vec<(&str, LlamaConfig)> = Vec::new();
            let mut edit = |what, change: &dyn Fn(&mut LlamaConfig)| {
                let mut c = cfg.clone();
                change(&mut c);
                assert_ne!(c, cfg, "{name}: {what} changes nothing");
                variants.push((what, c));
            };
            edit("sliding window", &|c| c.extras.swa = None);
            edit("embedding scale", &|c| c.extras.embd_scale = None);
            edit("query scale", &|c| c.extras.query_scale = Some(1.0 / 8f32.sqrt()));
            edit("GeGLU", &|c| c.arch = with_facts(c.arch, ForwardFacts { ffn: FfnKind::SwiGlu, ..f }));
            edit("post norms", &|c| c.arch = with_facts(c.arch, ForwardFacts { post_norms: false, ..f }));
            if name == "gemma2" {
                edit("attention soft-cap", &|c| c.extras.attn_softcap = None);
                edit("final soft-cap", &|c| c.extras.final_softcap = None);
            } else {
                edit("local RoPE base", &|c| c.extras.rope_swa = None);
                edit("Q/K norms", &|c| c.arch = with_facts(c.arch, ForwardFacts { qk_norm: false, ..f }));
                edit("RoPE scaling of global layers", &|c| c.rope.freq_scale = 1.0);
            }
            for (what, c) in variants {
                let k = run(&c);
                eprintln!("{name} without {what}: mean KLD {k:.3e}");
                assert!(k > 5e-4, "{name}: without {what} the mean KLD is only {k:e}");
            }
        }
    }

    /// Each OLMo 2 feature, taken away from the config its fixture's GGUF gives, moves the next-token
    /// distributions at least 5 times the fixture test's bound (1e-4) from transformers'. (Its lack of pre-norms
    /// has no tensors to take away; pre-norms cannot be loaded from the fixture, which has none.)
    #[test]
    fn every_olmo2_feature_matters_on_its_fixture() {
        let name = "olmo2";
        let file = GgufFile::open(fixture(name).join("llama.cpp-f32.gguf")).unwrap();
        let src = Source::Gguf(&file);
        let cfg = src.config().unwrap();
        let load = |c: &LlamaConfig| LlamaModel::from_source(src, c.clone()).unwrap();
        assert!(kld(&load(&cfg), name) < 1e-6, "as loaded");
        let f = cfg.arch.forward;
        let edited = |forward: ForwardFacts| LlamaConfig { arch: with_facts(cfg.arch, forward), ..cfg.clone() };
        let mut variants: Vec<(&str, LlamaModel)> = vec![
            ("post norms", load(&edited(ForwardFacts { post_norms: false, ..f }))),
            ("Q/K norms", load(&edited(ForwardFacts { qk_norm: false, ..f }))),
        ];
        // Adjacent-pair RoPE on the same rows.
        let mut adjacent = edited(ForwardFacts { rope: RopeStyle::Norm, ..f });
        adjacent.rope.mode = RopeStyle::Norm;
        variants.push(("NeoX RoPE", load(&adjacent)));
        // The same weights, normed per head instead of over the whole projection.
        let mut per_head = load(&cfg);
        per_head.cfg = edited(ForwardFacts { qk_norm_width: QkNormWidth::Head, ..f });
        variants.push(("whole-projection Q/K norms", per_head));
        for (what, model) in variants {
            let k = kld(&model, name);
            eprintln!("{name} without {what}: mean KLD {k:.3e}");
            assert!(k > 5e-4, "{name}: without {what} the mean KLD is only {k:e}");
        }
    }
}
