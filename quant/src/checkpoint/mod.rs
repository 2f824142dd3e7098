//! Quantized checkpoints in the layouts GPU serving stacks load: GPTQ v1 and v2 (AutoGPTQ / GPTQModel,
//! transformers, vLLM), AWQ GEMM (AutoAWQ) and compressed-tensors `pack-quantized` (llm-compressor, vLLM).
//!
//! Invariant: a layer written by [`CheckpointWriter`] and read back by [`QuantizedCheckpoint::dequantize`]
//! gives exactly [`crate::intquant::QuantizedLinear::dequantize`], `scales[g] · (q − zeros[g])` in the
//! `[out, in]` layout of `nn.Linear.weight`, and the loaders named above compute the same values from the
//! same files (tensor names, dtypes, shapes, packing and config keys as in their sources; see each format's
//! file). A format refuses up front ([`CheckpointFormat::check`]) what it cannot hold.

mod awq;
mod config;
mod ct;
mod error;
mod gptq;
pub mod pack;
mod reader;
mod writer;

use std::fmt;
use std::str::FromStr;

use quantforge_formats::safetensors::Dtype;

use crate::intquant::{IntScheme, ScaleDtype};

pub use config::QuantInfo;
pub use error::CheckpointError;
pub use reader::{quantization_method, DequantizedWeight, QuantizedCheckpoint, UnpackedLinear};
pub use writer::{CheckpointSummary, CheckpointWriter, DEFAULT_MAX_SHARD_BYTES};

/// Group sizes every loader accepts (vLLM's Marlin kernels take only these; `None` is `-1`).
pub const LOADER_GROUP_SIZES: [usize; 3] = [32, 64, 128];

/// A checkpoint layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum CheckpointFormat {
    /// GPTQ with `checkpoint_format: "gptq"`: zero fields store `z − 1`; symmetric only.
    Gptq,
    /// GPTQ with `checkpoint_format: "gptq_v2"`: zero fields store `z`.
    GptqV2,
    /// AutoAWQ GEMM: 4-bit, packed along the output dimension with the AWQ interleave.
    Awq,
    /// compressed-tensors `pack-quantized`: 4 or 8 bits, signed values offset by `2^(b−1)`.
    CompressedTensors,
}

impl FromStr for CheckpointFormat {
    type Err = CheckpointError;

    /// The command-line names `gptq`, `gptq_v2`, `awq`, `compressed-tensors` (case-insensitive; `-`/`_` alike).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "gptq" | "gptq-v1" => Ok(CheckpointFormat::Gptq),
            "gptq-v2" => Ok(CheckpointFormat::GptqV2),
            "awq" => Ok(CheckpointFormat::Awq),
            "compressed-tensors" => Ok(CheckpointFormat::CompressedTensors),
            _ => Err(CheckpointError::UnknownFormat(s.into())),
        }
    }
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl CheckpointFormat {
    /// Every format, in command-line order.
    pub const ALL: [CheckpointFormat; 4] =
        [CheckpointFormat::Gptq, CheckpointFormat::GptqV2, CheckpointFormat::Awq, CheckpointFormat::CompressedTensors];

    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            CheckpointFormat::Gptq => "gptq",
            CheckpointFormat::GptqV2 => "gptq_v2",
            CheckpointFormat::Awq => "awq",
            CheckpointFormat::CompressedTensors => "compressed-tensors",
        }
    }

    /// Whether this is one of the GPTQ layouts (which also get a `quantize_config.json`).
    pub fn is_gptq(&self) -> bool {
        matches!(self, CheckpointFormat::Gptq | CheckpointFormat::GptqV2)
    }

    /// Refuse a scheme this format cannot hold, with the reason. `act_order` means the layers carry a
    /// non-monotonic `g_idx` (act-order without static groups).
    pub fn check(&self, scheme: &IntScheme, act_order: bool) -> Result<(), CheckpointError> {
        let no = |what: String, reason: &str| {
            Err(CheckpointError::Unsupported { format: self.name(), what, reason: reason.into() })
        };
        if let Some(g) = scheme.group_size {
            if !LOADER_GROUP_SIZES.contains(&g) {
                return no(
                    format!("group size {g}"),
                    "vLLM's kernels (Marlin) accept only group sizes -1, 32, 64 and 128",
                );
            }
        }
        match self {
            CheckpointFormat::Gptq | CheckpointFormat::GptqV2 => {
                if *self == CheckpointFormat::Gptq && !scheme.sym {
                    return no(
                        "asymmetric weights".into(),
                        "v1 stores z − 1, so a zero point of 0 reads back as 2^bits; use --format gptq_v2 (as optimum does) or --sym",
                    );
                }
            }
            CheckpointFormat::Awq => {
                if scheme.bits != 4 {
                    return no(format!("{}-bit weights", scheme.bits), "AutoAWQ's GEMM layout is 4-bit only");
                }
                if scheme.group_size.is_none() {
                    return no("group size -1".into(), "AutoAWQ and vLLM's awq loader need a group size");
                }
                if act_order {
                    return no(
                        "act-order group indices".into(),
                        "the AWQ layout has no g_idx; use static groups or another format",
                    );
                }
            }
            CheckpointFormat::CompressedTensors => {
                if !matches!(scheme.bits, 4 | 8) {
                    return no(
                        format!("{}-bit weights", scheme.bits),
                        "pack-quantized is defined for 4 and 8 bits only",
                    );
                }
            }
        }
        if (self.is_gptq() || *self == CheckpointFormat::Awq) && scheme.scale_dtype != ScaleDtype::F16 {
            return no(format!("{:?} scales", scheme.scale_dtype), "GPTQ and AWQ loaders read float16 scales");
        }
        Ok(())
    }

    /// The type this format stores scales in: float16 for GPTQ and AWQ (GPTQModel and AutoAWQ write
    /// float16 whatever the model's type); for compressed-tensors the model's own `torch_dtype`, as
    /// llm-compressor computes scales in the weight's dtype (float32 when the config names none).
    pub fn scale_dtype(&self, torch_dtype: Option<&str>) -> ScaleDtype {
        match self {
            CheckpointFormat::CompressedTensors => match torch_dtype {
                Some("bfloat16") => ScaleDtype::BF16,
                Some("float16") => ScaleDtype::F16,
                _ => ScaleDtype::F32,
            },
            _ => ScaleDtype::F16,
        }
    }
}

/// One tensor of a written checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PackedTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

impl PackedTensor {
    /// An I32 tensor from words.
    fn i32(name: String, shape: &[usize], words: &[u32]) -> PackedTensor {
        PackedTensor { name, dtype: Dtype::I32, shape: dims(shape), data: pack::words_to_le_bytes(words) }
    }

    /// A scale tensor in `dtype` (values already representable in it).
    fn scales(name: String, shape: &[usize], values: &[f32], dtype: ScaleDtype) -> PackedTensor {
        let (dtype, data) = match dtype {
            ScaleDtype::F16 => {
                (Dtype::F16, values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect())
            }
            ScaleDtype::BF16 => {
                (Dtype::BF16, values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect())
            }
            ScaleDtype::F32 => (Dtype::F32, values.iter().flat_map(|&v| v.to_le_bytes()).collect()),
        };
        PackedTensor { name, dtype, shape: dims(shape), data }
    }
}

fn dims(shape: &[usize]) -> Vec<u64> {
    shape.iter().map(|&d| d as u64).collect()
}

/// A layer's scales transposed to `[n_groups, rows]` (GPTQ and AWQ store one row per group).
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests;
