//! A PEFT LoRA adapter as a GGUF adapter that llama.cpp loads with `--lora` (`src/llama-adapter.cpp`,
//! `convert_lora_to_gguf.py` at ggml-org/llama.cpp 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62).
//!
//! Layout: `general.architecture` (the base's), `general.type = "adapter"`, `adapter.type = "lora"`,
//! `adapter.lora.alpha`; for each adapted base tensor `X` (its GGUF name through the base architecture's rules
//! in `quantforge_formats::arch`), `X.lora_a` with ggml ne `[n_in, r]` (torch A) and `X.lora_b` with ne
//! `[r, n_out]` (torch B); Q/K rows permuted as the base's converter permutes them, which for W = B·A means
//! permuting B's rows. `token_embd.weight.lora_a` is stored transposed (ne `[r, n_vocab]`), as llama.cpp's
//! `llm_build_inp_embd` takes rows of it per token.
//!
//! llama.cpp applies `scale = alpha / r` with one global alpha and r read per tensor from B. The alpha written
//! is the one that reproduces PEFT's scale: `lora_alpha · sqrt(r)` for rsLoRA (alpha/sqrt r = alpha·sqrt r / r).
//! When `rank_pattern`/`alpha_pattern` make the needed alpha differ between modules, the first module's is
//! written and each other module's B is multiplied by its own ratio, so every delta stays exact.
//! DoRA, `modules_to_save`/trained biases, `lora_bias` and `fan_in_fan_out` are refused: llama.cpp has nothing
//! to apply them with.

use std::path::Path;

use quantforge_formats::arch::{self, fill, HfConfig, Transform as ArchTransform};
use quantforge_formats::gguf::TensorSpec;
use quantforge_formats::hf::{read_json, HfModel};
use quantforge_formats::kv::KvList;

use super::adapter::LoraKind;
use super::plan::plan;
use super::{Adapter, LoraError};
use crate::progress::Progress;
use crate::solver::CodecSolver;
use crate::stream::sink::GgufSink;
use crate::stream::transform::{apply_all, Transform};
use crate::stream::{self, RunOptions, Source, StreamTensor, TensorData};
use crate::GgmlType;

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufAdapterSummary {
    pub architecture: &'static str,
    /// `adapter.lora.alpha`.
    pub alpha: f64,
    /// Adapted base tensors (two GGUF tensors each).
    pub modules: usize,
    /// Modules whose B absorbed a per-module scale correction (rank/alpha patterns).
    pub rescaled: usize,
    pub bytes: u64,
}

/// One pair of tensors to write.
struct Pair {
    gguf: String,
    module: String,
    permute_heads: Option<u32>,
    /// B is multiplied by this (1 unless patterns make the alpha differ).
    b_factor: f64,
}

/// Refuse what llama.cpp cannot apply.
fn check_exportable(adapter: &Adapter) -> Result<(), LoraError> {
    let path = adapter.dir.join("adapter_config.json");
    let refuse = |message: String| Err(LoraError::NotExportable { path: path.clone(), message });
    if adapter.config.use_dora || adapter.modules.values().any(|m| m.magnitude.is_some()) {
        return refuse("the adapter uses DoRA (magnitude vectors)".into());
    }
    if let Some((base, tensor)) = adapter.replacements.iter().next() {
        return refuse(format!("the adapter replaces whole tensors (modules_to_save: '{tensor}' for '{base}')"));
    }
    if adapter.modules.values().any(|m| m.bias.is_some()) {
        return refuse("the adapter has lora_B biases (lora_bias)".into());
    }
    if adapter.config.fan_in_fan_out {
        return refuse("the adapter is fan_in_fan_out (Conv1D layers)".into());
    }
    Ok(())
}

fn ggml_type_for(ty: GgmlType, ne0: u64) -> GgmlType {
    // As the HF converter: a row that is not a whole number of blocks falls back to F16.
    if !ne0.is_multiple_of(ty.block_size()) {
        GgmlType::F16
    } else {
        ty
    }
}

/// Write the adapter in `adapter_dir` for the HF base model in `base_dir` as a GGUF LoRA adapter at `out`.
/// `outtype` is F32 (llama.cpp's default), F16, BF16 or Q8_0.
pub fn export_gguf(
    adapter_dir: &Path,
    base_dir: &Path,
    out: &Path,
    outtype: GgmlType,
    progress: &dyn Progress,
) -> Result<GgufAdapterSummary, LoraError> {
    let adapter = Adapter::open(adapter_dir)?;
    check_exportable(&adapter)?;
    let base = HfModel::open(base_dir)?;
    plan(&base, &adapter)?;
    let config_path = base_dir.join("config.json");
    let cfg = HfConfig::parse(&config_path, &read_json(&config_path)?)?;
    let arch = arch::lookup(&config_path, &cfg.architecture)?;
    // The base's own tensors against its config (shapes the Q/K permutation relies on).
    arch::plan_tensors(&base, arch, &cfg)?;

    // The alpha llama.cpp needs for each module: scaling · r.
    let needed: Vec<f64> = adapter.modules.values().map(|m| m.scale.scaling * m.rank as f64).collect();
    let alpha = match needed.first() {
        Some(&a) if a != 0.0 => a,
        // alpha 0 means "no scaling" to llama.cpp; an all-zero scale is written as alpha 1 with B zeroed.
        _ => 1.0,
    };
    let mut pairs = Vec::with_capacity(adapter.modules.len());
    for (m, need) in adapter.modules.values().zip(&needed) {
        let weight = m.weight_name();
        let (rule, bid) = arch.rule_for(&weight).ok_or_else(|| LoraError::UnexpectedTensor {
            path: adapter.tensor_path().into(),
            name: m.a.clone(),
            message: format!("base tensor '{weight}' has no GGUF name in architecture {}", arch.gguf_name),
        })?;
        if rule.stacks_experts() {
            return Err(LoraError::UnexpectedTensor {
                path: adapter.tensor_path().into(),
                name: m.a.clone(),
                message: format!(
                    "base tensor '{weight}' is one expert of the stacked '{}': LoRA adapters of experts are not \
                     exported (merge them with `convert --lora` instead)",
                    fill(rule.gguf, bid)
                ),
            });
        }
        let permute_heads = match rule.transform {
            ArchTransform::None | ArchTransform::NormShift => None,
            ArchTransform::RopePermuteQ => Some(cfg.head_count),
            ArchTransform::RopePermuteK => Some(cfg.kv_heads()),
        };
        pairs.push(Pair {
            gguf: fill(rule.gguf, bid),
            module: m.module.clone(),
            permute_heads,
            b_factor: need / alpha,
        });
    }

    let mut kv = KvList::new();
    kv.string("general.architecture", arch.gguf_name);
    kv.string("general.type", "adapter");
    if let Some(name) =
        adapter_dir.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        kv.string("general.name", name);
    }
    kv.string("adapter.type", "lora");
    kv.f32("adapter.lora.alpha", alpha);

    let mut specs = Vec::with_capacity(2 * pairs.len());
    for p in &pairs {
        let m = &adapter.modules[&p.module];
        let sa = &adapter.header(&m.a).shape;
        let sb = &adapter.header(&m.b).shape;
        let ne_a = match m.kind {
            LoraKind::Linear => vec![sa[1], sa[0]],
            LoraKind::Embedding => vec![sa[0], sa[1]],
        };
        let ne_b = vec![sb[1], sb[0]];
        specs.push(TensorSpec {
            name: format!("{}.lora_a", p.gguf),
            ggml_type: ggml_type_for(outtype, ne_a[0]),
            ne: ne_a,
        });
        specs.push(TensorSpec {
            name: format!("{}.lora_b", p.gguf),
            ggml_type: ggml_type_for(outtype, ne_b[0]),
            ne: ne_b,
        });
    }
    let tensors = specs
        .iter()
        .map(|s| {
            StreamTensor::solved(s.name.clone(), s.ne.clone(), s.ggml_type, format!("-> {}", s.ggml_type.name()))
                .ok_or_else(|| LoraError::Codec {
                    tensor: s.name.clone(),
                    source: crate::QuantError::Unsupported { ty: s.ggml_type, op: "row size" },
                })
        })
        .collect::<Result<_, _>>()?;
    let inputs = std::iter::once(adapter.tensor_path()).chain(base.shards().iter().map(|s| s.path())).collect();
    let source = AdapterSource { adapter: &adapter, pairs: &pairs, inputs, tensors };
    let sink = GgufSink::single(out, kv.into_vec(), specs);
    let bytes_written = stream::run(&source, &CodecSolver, sink, RunOptions::new(progress))?.bytes;
    Ok(GgufAdapterSummary {
        architecture: arch.gguf_name,
        alpha,
        modules: pairs.len(),
        rescaled: pairs.iter().filter(|p| p.b_factor != 1.0).count(),
        bytes: bytes_written,
    })
}

/// The adapter's A and B matrices, two tensors per module, in GGUF layout.
struct AdapterSource<'a> {
    adapter: &'a Adapter,
    pairs: &'a [Pair],
    inputs: Vec<&'a Path>,
    tensors: Vec<StreamTensor>,
}

impl Source for AdapterSource<'_> {
    type Error = LoraError;

    fn tensors(&self) -> &[StreamTensor] {
        &self.tensors
    }

    fn input_paths(&self) -> Vec<&Path> {
        self.inputs.clone()
    }

    fn read<'s>(&'s self, index: usize, values: &mut Vec<f32>) -> Result<TensorData<'s>, LoraError> {
        let p = &self.pairs[index / 2];
        let m = &self.adapter.modules[&p.module];
        let r = m.rank as usize;
        *values = if index.is_multiple_of(2) {
            let a = self.adapter.values(&m.a)?;
            match m.kind {
                LoraKind::Linear => a,
                // [r, n_vocab] -> [n_vocab, r].
                LoraKind::Embedding => {
                    let n = a.len() / r.max(1);
                    (0..n).flat_map(|e| (0..r).map(move |k| (e, k))).map(|(e, k)| a[k * n + e]).collect()
                }
            }
        } else {
            let b = self.adapter.values(&m.b)?;
            let mut transforms = vec![Transform::Scale(p.b_factor)];
            if let Some(h) = p.permute_heads {
                transforms.push(Transform::RopePermute { heads: h as usize });
            }
            let n_rows = b.len() / r.max(1);
            apply_all(b, n_rows, &self.tensors[index].name, &transforms)?
        };
        Ok(TensorData::Values)
    }
}
