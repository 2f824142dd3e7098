//! GGUF -> Hugging Face directory: `config.json`, `model.safetensors` (f32, f16 or bf16, with the Q/K RoPE
//! permutation undone), and the tokenizer files of `quantforge_formats::vocab::hf_tokenizer_files`. Every
//! tensor of the GGUF must map back through its architecture's rules (quantized tensors are dequantized).
//! Everything that can be checked is checked before the safetensors file is written; each file is written
//! atomically.

use std::path::Path;

use quantforge_formats::arch::{self, fill, Transform};
use quantforge_formats::gguf::{GgufFile, GgufValue};
use quantforge_formats::safetensors::{Dtype, SafetensorsWriter, StTensorSpec};
use quantforge_formats::vocab::{hf_tokenizer_files, write_tokenizer_files};
use quantforge_formats::{AtomicDir, AtomicFile, FormatError, GgmlType};

use super::write::encode;
use super::{rope_unpermute, ConvertError};
use crate::dequant::dequantize_row_par;
use crate::progress::Progress;

/// The dtype of the safetensors written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfDtype {
    F32,
    F16,
    BF16,
}

impl HfDtype {
    /// Parse `f32`, `f16` or `bf16` (case-insensitive).
    pub fn parse(s: &str) -> Result<HfDtype, ConvertError> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(HfDtype::F32),
            "f16" => Ok(HfDtype::F16),
            "bf16" => Ok(HfDtype::BF16),
            _ => Err(ConvertError::OutType(format!("{s} (for --to hf: f32, f16 or bf16)"))),
        }
    }

    fn parts(self) -> (Dtype, GgmlType, &'static str) {
        match self {
            HfDtype::F32 => (Dtype::F32, GgmlType::F32, "float32"),
            HfDtype::F16 => (Dtype::F16, GgmlType::F16, "float16"),
            HfDtype::BF16 => (Dtype::BF16, GgmlType::BF16, "bfloat16"),
        }
    }
}

struct Mapped {
    index: usize,
    hf_name: String,
    heads: Option<usize>,
    shape: Vec<u64>,
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
    let arch = arch::lookup_gguf(path, arch_name)?;
    let key = |k: &str| gguf.get(&format!("{arch_name}.{k}")).and_then(GgufValue::as_u64);
    let n_head = key("attention.head_count").unwrap_or(1) as usize;
    let n_head_kv = key("attention.head_count_kv").map_or(n_head, |v| v as usize);
    let (st_dtype, ggml, torch) = dtype.parts();
    let mut mapped = Vec::new();
    for (index, t) in gguf.tensors().iter().enumerate() {
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
            Transform::None => None,
            Transform::RopePermuteQ => Some(n_head),
            Transform::RopePermuteK => Some(n_head_kv),
        };
        mapped.push(Mapped { index, hf_name: fill(rule.hf, bid), heads, shape: t.shape() });
    }
    let config = arch::hf_config_from_gguf(gguf, arch, torch);
    let tokenizer = hf_tokenizer_files(gguf)?;
    let dir = AtomicDir::create(out_dir, &[path])?;
    let out_dir = dir.tmp();
    let specs: Vec<StTensorSpec> = mapped
        .iter()
        .map(|m| StTensorSpec { name: m.hf_name.clone(), dtype: st_dtype, shape: m.shape.clone() })
        .collect();
    let mut w =
        SafetensorsWriter::create(out_dir.join("model.safetensors"), &[("format".into(), "pt".into())], &specs)?;
    progress.start(mapped.len(), 0);
    for m in &mapped {
        let t = &gguf.tensors()[m.index];
        progress.item(m.index, &t.name, &format!("-> {} {}", m.hf_name, ggml.name()));
        let data = gguf.tensor_data(t);
        let mut values = vec![0f32; t.n_elements() as usize];
        dequantize_row_par(t.ggml_type, data, &mut values)
            .map_err(|source| ConvertError::Codec { tensor: t.name.clone(), source })?;
        gguf.release(t);
        if let Some(h) = m.heads {
            let n_rows = m.shape[0] as usize;
            values = rope_unpermute(&values, n_rows, h, values.len() / n_rows.max(1));
        }
        let row = t.ne.first().copied().unwrap_or(1) as usize;
        let bytes = encode(&t.name, ggml, &values, row)?;
        w.write_tensor_data(&bytes)?;
        progress.item_done(m.index, bytes.len() as u64);
    }
    w.finish()?;
    let cfg_path = out_dir.join("config.json");
    let text = serde_json::to_vec_pretty(&config)
        .map_err(|e| FormatError::Json { path: cfg_path.clone(), message: e.to_string() })?;
    let mut f = AtomicFile::create(&cfg_path)?;
    f.write_all(&text)?;
    f.commit()?;
    write_tokenizer_files(out_dir, &tokenizer)?;
    dir.commit()?;
    progress.finish();
    Ok(())
}
