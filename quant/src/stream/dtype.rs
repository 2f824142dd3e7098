//! The float element types written to Hugging Face safetensors and chosen by `--dtype` / `--outtype`:
//! one place for their names, ggml type, safetensors dtype and torch name.

use quantforge_formats::safetensors::Dtype;
use quantforge_formats::GgmlType;

/// f32, f16 or bf16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatType {
    F32,
    F16,
    BF16,
}

impl FloatType {
    /// Parse `f32`/`float32`, `f16`/`float16` or `bf16`/`bfloat16` (case-insensitive).
    pub fn parse(s: &str) -> Option<FloatType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(FloatType::F32),
            "f16" | "float16" => Some(FloatType::F16),
            "bf16" | "bfloat16" => Some(FloatType::BF16),
            _ => None,
        }
    }

    /// The short name (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            FloatType::F32 => "f32",
            FloatType::F16 => "f16",
            FloatType::BF16 => "bf16",
        }
    }

    /// The ggml type.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            FloatType::F32 => GgmlType::F32,
            FloatType::F16 => GgmlType::F16,
            FloatType::BF16 => GgmlType::BF16,
        }
    }

    /// The safetensors dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            FloatType::F32 => Dtype::F32,
            FloatType::F16 => Dtype::F16,
            FloatType::BF16 => Dtype::BF16,
        }
    }

    /// The `torch_dtype` name in config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            FloatType::F32 => "float32",
            FloatType::F16 => "float16",
            FloatType::BF16 => "bfloat16",
        }
    }

    /// The float type of a safetensors dtype, if it is one of the three.
    pub fn from_dtype(d: Dtype) -> Option<FloatType> {
        match d {
            Dtype::F32 => Some(FloatType::F32),
            Dtype::F16 => Some(FloatType::F16),
            Dtype::BF16 => Some(FloatType::BF16),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [FloatType::F32, FloatType::F16, FloatType::BF16] {
            assert_eq!(FloatType::parse(t.name()), Some(t));
            assert_eq!(FloatType::parse(t.torch_name()), Some(t));
            assert_eq!(FloatType::from_dtype(t.dtype()), Some(t));
            assert_eq!(t.ggml_type().name().to_ascii_lowercase(), t.name());
        }
        assert_eq!(FloatType::parse("BF16"), Some(FloatType::BF16));
        assert_eq!(FloatType::parse("q8_0"), None);
    }
}
