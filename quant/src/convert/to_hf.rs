//! GGUF -> Hugging Face directory: `config.json`, `model.safetensors` (f32, f16 or bf16, with the Q/K RoPE
//! permutation undone), and the tokenizer files of `quantforge_formats::vocab::hf_tokenizer_files`. Every
//! tensor of the GGUF must map back through its architecture's rules (quantized tensors are dequantized).
//! Everything that can be checked is checked before the safetensors file is written; the directory is
//! written through [`crate::stream`] into a [`SafetensorsDirSink`], so it appears only when complete.

use std::path::Path;

use quantforge_formats::arch::{self, fill, Transform as ArchTransform};
use quantforge_formats::gguf::{GgufFile, GgufValue};
use quantforge_formats::safetensors::StTensorSpec;
use quantforge_formats::vocab::{hf_tokenizer_files, write_tokenizer_files};
use quantforge_formats::{AtomicFile, FormatError, GgmlType};

use super::ConvertError;
use crate::progress::Progress;
use crate::solver::CodecSolver;
use crate::stream::sink::{SafetensorsDirSink, Shard};
use crate::stream::transform::{decode, Transform};
use crate::stream::{self, RunOptions, Source, StreamTensor, TensorCount, TensorData};

/// The dtype of the safetensors written (`--outtype` of `convert --to hf`).
pub use crate::stream::FloatType as HfDtype;

/// Parse `--outtype` for `--to hf`: f32, f16 or bf16.
pub fn parse_hf_dtype(s: &str) -> Result<HfDtype, ConvertError> {
    HfDtype::parse(s).ok_or_else(|| ConvertError::OutType(format!("{s} (for --to hf: f32, f16 or bf16)")))
}

/// A GGUF's tensors in HF layout: dequantized, RoPE permutation undone, solved to the output dtype.
struct ToHfSource<'g> {
    gguf: &'g GgufFile,
    /// Per output tensor: the GGUF tensor index, the heads to unpermute, whether 1 is subtracted (Gemma's
    /// norm weights), and for a stacked expert tensor the expert it is the slice of.
    mapped: Vec<(usize, Option<usize>, bool, Option<u64>)>,
    tensors: Vec<StreamTensor>,
    /// GGUF tensors generated from config.json, not written.
    dropped: u64,
    /// Outputs beyond one per input tensor: a stacked tensor of `n` experts comes out as `n` tensors.
    extra_outputs: u64,
}

impl Source for ToHfSource<'_> {
    type Error = ConvertError;

    fn tensors(&self) -> &[StreamTensor] {
        &self.tensors
    }

    fn input_paths(&self) -> Vec<&Path> {
        self.gguf.files()
    }

    fn read<'s>(&'s self, index: usize, values: &mut Vec<f32>) -> Result<TensorData<'s>, ConvertError> {
        let (gi, heads, shifted, expert) = self.mapped[index];
        let t = &self.gguf.tensors()[gi];
        let data = self.gguf.tensor_data(t);
        // One expert of a stacked tensor is a contiguous `1 / ne[2]` of its bytes (whole rows).
        let (data, n) = match expert {
            None => (data, t.n_elements()),
            Some(x) => {
                let n_expert = t.ne.get(2).copied().unwrap_or(1).max(1);
                let len = data.len() as u64 / n_expert;
                (&data[(x * len) as usize..((x + 1) * len) as usize], t.n_elements() / n_expert)
            }
        };
        let mut v = vec![0f32; n as usize];
        decode(t.ggml_type, data, &mut v).map_err(|source| ConvertError::Codec { tensor: t.name.clone(), source })?;
        self.gguf.release(t);
        if let Some(heads) = heads {
            let n_rows = t.ne.last().copied().unwrap_or(1) as usize;
            v = Transform::RopeUnpermute { heads }
                .apply(v, n_rows, &t.name)
                .map_err(|e| ConvertError::Lora(Box::new(e)))?;
        }
        if shifted {
            v = Transform::Offset { delta: -1.0, round_f16: false }
                .apply(v, 1, &t.name)
                .map_err(|e| ConvertError::Lora(Box::new(e)))?;
        }
        *values = v;
        Ok(TensorData::Values)
    }

    fn release(&self, index: usize) {
        self.gguf.release(&self.gguf.tensors()[self.mapped[index].0]);
    }

    fn tensor_count(&self) -> Option<TensorCount> {
        // Counted as if each stacked tensor were its experts, so a partial input is still refused.
        Some(TensorCount { input: self.gguf.model_tensor_count() + self.extra_outputs, dropped: self.dropped })
    }
}

/// Write the HF directory `out_dir` for `gguf` (it must not exist or be empty; it appears only when complete).
pub fn gguf_to_hf(
    gguf: &GgufFile,
    out_dir: &Path,
    dtype: HfDtype,
    progress: &dyn Progress,
) -> Result<(), ConvertError> {
    let path = gguf.path();
    let arch_name = gguf.get("general.architecture").and_then(GgufValue::as_str).unwrap_or("");
    let arch = arch::lookup_gguf_file(gguf)?;
    let key = |k: &str| gguf.get(&format!("{arch_name}.{k}")).and_then(GgufValue::as_u64);
    let n_head = key("attention.head_count").unwrap_or(1) as usize;
    let n_head_kv = key("attention.head_count_kv").map_or(n_head, |v| v as usize);
    let ggml = dtype.ggml_type();
    let mut mapped = Vec::new();
    let mut tensors = Vec::new();
    let mut specs = Vec::new();
    let mut dropped = 0;
    let mut extra_outputs = 0;
    for (index, t) in gguf.tensors().iter().enumerate() {
        if arch::GENERATED_TENSORS.contains(&t.name.as_str()) {
            // Made from config.json by the converter; config.json gets them back (`hf_config_from_gguf`).
            dropped += 1;
            continue;
        }
        let (rule, bid) = arch.rule_for_gguf(&t.name).ok_or_else(|| FormatError::UnmappedTensor {
            path: path.into(),
            name: t.name.clone(),
            arch: format!("{arch_name} (GGUF -> HF)"),
        })?;
        if !t.ggml_type.is_quantized() && !matches!(t.ggml_type, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(FormatError::UnsupportedDtype {
                path: path.into(),
                name: t.name.clone(),
                dtype: t.ggml_type.name().into(),
                wanted: "f32",
            }
            .into());
        }
        let heads = match rule.transform {
            ArchTransform::None | ArchTransform::NormShift => None,
            ArchTransform::RopePermuteQ => Some(n_head),
            ArchTransform::RopePermuteK => Some(n_head_kv),
        };
        // A stacked expert tensor (`ne = [cols, rows, n_expert]`) goes back as one HF tensor per expert.
        let experts = if rule.stacks_experts() {
            if t.ne.len() != 3 {
                return Err(FormatError::ShapeMismatch {
                    path: path.into(),
                    name: t.name.clone(),
                    expected: vec![0, 0, 0],
                    found: t.shape(),
                }
                .into());
            }
            arch::limits::EXPERTS.check(path, &format!("{} (experts)", t.name), t.ne[2])?;
            (0..t.ne[2]).map(Some).collect()
        } else {
            vec![None]
        };
        extra_outputs += experts.len() as u64 - 1;
        for x in experts {
            let (hf_name, ne) = match x {
                None => (fill(rule.hf, bid), t.ne.clone()),
                Some(x) => (arch::fill_expert(rule.hf, bid, x as u32), t.ne[..2].to_vec()),
            };
            let detail = format!("<- {} {}", t.name, ggml.name());
            let st =
                StreamTensor::solved(hf_name.clone(), ne.clone(), ggml, detail).ok_or_else(|| ConvertError::Codec {
                    tensor: t.name.clone(),
                    source: crate::QuantError::Unsupported { ty: ggml, op: "row size" },
                })?;
            tensors.push(st);
            specs.push(StTensorSpec { name: hf_name, dtype: dtype.dtype(), shape: ne.iter().rev().copied().collect() });
            mapped.push((index, heads, rule.transform == ArchTransform::NormShift, x));
        }
    }
    let config = arch::hf_config_from_gguf(gguf, arch, dtype.torch_name());
    let tokenizer = hf_tokenizer_files(gguf)?;
    let shard =
        Shard { file_name: "model.safetensors".into(), metadata: vec![("format".into(), "pt".into())], tensors: specs };
    let side_files = Box::new(move |dir: &Path| -> Result<(), FormatError> {
        let cfg_path = dir.join("config.json");
        let text = serde_json::to_vec_pretty(&config)
            .map_err(|e| FormatError::Json { path: cfg_path.clone(), message: e.to_string() })?;
        let mut f = AtomicFile::create(&cfg_path)?;
        f.write_all(&text)?;
        f.commit()?;
        write_tokenizer_files(dir, &tokenizer)
    });
    let sink = SafetensorsDirSink::new(out_dir, vec![shard], side_files);
    let source = ToHfSource { gguf, mapped, tensors, dropped, extra_outputs };
    stream::run(&source, &CodecSolver, sink, RunOptions::new(progress))?;
    Ok(())
}
