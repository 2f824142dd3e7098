//! Reading GPTQ, AWQ and compressed-tensors checkpoints back to float weights.
//!
//! Invariant: [`QuantizedCheckpoint::dequantize`] gives `scales[g(k)] · (q − zeros[g(k)])` for every
//! output row and input column `k`, in the `[out, in]` layout of `nn.Linear.weight`, computed in `f32`
//! with the zero points the format defines (GPTQ v1 `(field & mask) + 1`, v2 and AWQ the field, compressed-
//! tensors the signed offset). Every tensor's dtype and shape is checked against the config before use.
//!
//! GPTQ's `checkpoint_format` is not trustworthy in the wild (a v2 checkpoint labelled `gptq` loads as
//! garbage). For a symmetric layer the data decide: every v1 zero field is `2^(b−1) − 1` and every v2 field
//! `2^(b−1)`, so a layer whose fields are uniformly one of these is read in that convention whatever the
//! label says ([`UnpackedLinear::note`] records the disagreement). Asymmetric layers follow the label.

use std::path::{Path, PathBuf};

use quantforge_formats::hf::{read_json, HfModel};
use quantforge_formats::safetensors::{Dtype, SafetensorsFile, StTensor};
use serde_json::Value;

use super::config::{parse, parse_dynamic, ModuleOverride, ParsedConfig};
use super::pack::le_bytes_to_words;
use super::{awq, ct, gptq, CheckpointError, CheckpointFormat};

/// One quantized linear layer as stored, unpacked (zero points wide enough for GPTQ v1's `2^bits`).
#[derive(Clone, Debug, PartialEq)]
pub struct UnpackedLinear {
    pub rows: usize,
    pub cols: usize,
    pub n_groups: usize,
    /// Codes (unsigned), row-major `[rows, cols]`.
    pub q: Vec<u8>,
    /// Scales, row-major `[rows, n_groups]`.
    pub scales: Vec<f32>,
    /// Zero points on the codes' scale, row-major `[rows, n_groups]`.
    pub zeros: Vec<i32>,
    /// The group of each input column.
    pub g_idx: Vec<u32>,
    /// Set when the data contradicted the config (GPTQ zero convention), saying how it was read.
    pub note: Option<String>,
}

impl UnpackedLinear {
    /// `[rows, cols]` values `scales[r, g(k)] · (q[r, k] − zeros[r, g(k)])`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            let s = &self.scales[r * self.n_groups..(r + 1) * self.n_groups];
            let z = &self.zeros[r * self.n_groups..(r + 1) * self.n_groups];
            for (k, (o, &q)) in row.iter_mut().zip(&self.q[r * self.cols..(r + 1) * self.cols]).enumerate() {
                let g = self.g_idx[k] as usize;
                *o = s[g] * (f32::from(q) - z[g] as f32);
            }
        }
        out
    }
}

/// A dequantized weight: its torch shape `[out, in]` and its values, row-major.
pub type DequantizedWeight = (Vec<usize>, Vec<f32>);

/// A directory's quantization config.
#[derive(Clone, Debug)]
pub struct QuantizedCheckpoint {
    pub(crate) cfg: ParsedConfig,
    /// GPTQModel's per-module overrides (GPTQ only).
    overrides: Vec<ModuleOverride>,
    config_path: PathBuf,
}

/// Files AutoGPTQ reads a GPTQ config from when `config.json` has none.
const GPTQ_CONFIG_FILES: [&str; 2] = ["quantize_config.json", "quant_config.json"];

/// Tensor-name suffixes of quantized modules, in every format read here.
const QUANTIZED_SUFFIXES: [&str; 7] =
    [".qweight", ".qzeros", ".g_idx", ".weight_packed", ".weight_shape", ".weight_zero_point", ".weight_g_idx"];

/// Suffixes of packed code tensors.
const PACKED_SUFFIXES: [&str; 2] = [".qweight", ".weight_packed"];

/// Suffixes of the per-group tensors that come with packed codes.
const GROUP_SUFFIXES: [&str; 7] =
    [".qzeros", ".g_idx", ".scales", ".weight_scale", ".weight_shape", ".weight_zero_point", ".weight_g_idx"];

impl QuantizedCheckpoint {
    /// The quantization config of the model directory `dir` (`config.json["quantization_config"]`, else
    /// `quantize_config.json` or `quant_config.json`); `None` for a float model.
    pub fn detect(dir: &Path) -> Result<Option<QuantizedCheckpoint>, CheckpointError> {
        let config = read_json(&dir.join("config.json"))?;
        QuantizedCheckpoint::from_config(&config, dir)
    }

    /// As [`QuantizedCheckpoint::detect`] with `config.json` already parsed.
    pub fn from_config(config: &Value, dir: &Path) -> Result<Option<QuantizedCheckpoint>, CheckpointError> {
        if let Some(qc) = config.get("quantization_config").filter(|v| !v.is_null()) {
            let config_path = dir.join("config.json");
            return QuantizedCheckpoint::parse(qc, config_path).map(Some);
        }
        for name in GPTQ_CONFIG_FILES {
            let path = dir.join(name);
            if path.is_file() {
                let qc = read_json(&path)?;
                return QuantizedCheckpoint::parse(&qc, path).map(Some);
            }
        }
        Ok(None)
    }

    fn parse(qc: &Value, config_path: PathBuf) -> Result<QuantizedCheckpoint, CheckpointError> {
        let cfg = parse(qc, &config_path)?;
        let overrides = if cfg.format.is_gptq() { parse_dynamic(qc, &config_path)? } else { Vec::new() };
        Ok(QuantizedCheckpoint { cfg, overrides, config_path })
    }

    /// The layout.
    pub fn format(&self) -> CheckpointFormat {
        self.cfg.format
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.cfg.bits
    }

    /// Input columns per group (`None`: one group per row).
    pub fn group_size(&self) -> Option<usize> {
        self.cfg.group_size
    }

    /// Whether the config says symmetric.
    pub fn sym(&self) -> bool {
        self.cfg.sym
    }

    /// The file the config was read from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Whether `name` is one of the tensors a quantized module is stored as (not a float weight).
    pub fn is_quantized_tensor_name(name: &str) -> bool {
        QUANTIZED_SUFFIXES.iter().any(|s| name.ends_with(s))
    }

    /// Weights the stored tensor `name` of `n_elements` elements stands for: a packed code tensor
    /// (`qweight`, `weight_packed`) holds `32 / bits` codes per 32-bit word, the per-group tensors (scales,
    /// zero points, `g_idx`, `weight_shape`) hold none, and any other tensor one weight per element.
    /// Compressed-tensors rows are padded to whole words: there the module's `weight_shape` counts.
    pub fn weights_in(&self, model: &HfModel, name: &str, n_elements: u64) -> u64 {
        if let Some(module) = PACKED_SUFFIXES.iter().find_map(|s| name.strip_suffix(s)) {
            let shape = Tensors { model }.ints(&format!("{module}.weight_shape"), &[2]).ok();
            if let Some([rows, cols]) = shape.as_deref() {
                return rows.unsigned_abs().saturating_mul(cols.unsigned_abs());
            }
            let bits = ModuleOverride::apply(&self.overrides, self.cfg, module).bits;
            return n_elements * 32 / u64::from(bits.max(1));
        }
        if GROUP_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            return 0;
        }
        n_elements
    }

    /// Module `module` (e.g. `model.layers.0.self_attn.q_proj`) unpacked; `None` when it is not stored
    /// quantized.
    pub fn unpack(&self, model: &HfModel, module: &str) -> Result<Option<UnpackedLinear>, CheckpointError> {
        let src = Tensors { model };
        let cfg = ModuleOverride::apply(&self.overrides, self.cfg, module);
        match cfg.format {
            CheckpointFormat::Gptq | CheckpointFormat::GptqV2 => gptq::decode(&src, module, &cfg),
            CheckpointFormat::Awq => awq::decode(&src, module, &cfg),
            CheckpointFormat::CompressedTensors => ct::decode(&src, module, &cfg),
        }
    }

    /// The float weight `hf_weight_name` (`<module>.weight`) of a quantized module as its torch shape
    /// `[out, in]` and values; `None` when the name is not a `.weight` or its module is not quantized.
    pub fn dequantize(
        &self,
        model: &HfModel,
        hf_weight_name: &str,
    ) -> Result<Option<DequantizedWeight>, CheckpointError> {
        let Some(module) = hf_weight_name.strip_suffix(".weight") else { return Ok(None) };
        Ok(self.unpack(model, module)?.map(|u| (vec![u.rows, u.cols], u.dequantize())))
    }
}

/// The quantization method of a model directory whose `config.json` is `config` (its
/// `quantization_config.quant_method`, or `gptq` when AutoGPTQ's `quantize_config.json` or
/// `quant_config.json` is present); `None` for float weights. Any method is named, read here or not.
pub fn quantization_method(config: &Value, dir: &Path) -> Option<String> {
    if let Some(qc) = config.get("quantization_config").filter(|v| !v.is_null()) {
        let method = qc.get("quant_method").and_then(Value::as_str).unwrap_or("unknown");
        return Some(method.to_string());
    }
    GPTQ_CONFIG_FILES.iter().any(|f| dir.join(f).is_file()).then(|| "gptq".to_string())
}

/// The largest tensor dimension (or `weight_shape` entry) read.
pub(crate) const MAX_DIM: u64 = 1 << 32;

/// `d` as `usize` when it is at most [`MAX_DIM`].
pub(crate) fn dim(d: u64) -> Option<usize> {
    (d <= MAX_DIM).then_some(d as usize)
}

/// Checked access to a model's tensors for the format decoders.
pub(crate) struct Tensors<'a> {
    pub model: &'a HfModel,
}

impl Tensors<'_> {
    pub fn has(&self, name: &str) -> bool {
        self.model.tensor(name).is_some()
    }

    pub fn err(&self, name: &str, message: String) -> CheckpointError {
        CheckpointError::Tensor { path: self.model.dir().into(), name: name.into(), message }
    }

    fn get(&self, name: &str) -> Result<(&SafetensorsFile, &StTensor), CheckpointError> {
        self.model.tensor(name).ok_or_else(|| self.err(name, "missing".into()))
    }

    /// The tensor's shape, every dimension at most [`MAX_DIM`] (so index arithmetic cannot overflow).
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, CheckpointError> {
        let (_, t) = self.get(name)?;
        t.shape
            .iter()
            .map(|&d| dim(d).ok_or_else(|| self.err(name, format!("dimension {d} is over {MAX_DIM}"))))
            .collect()
    }

    fn check_shape(&self, name: &str, t: &StTensor, shape: &[usize]) -> Result<(), CheckpointError> {
        if t.shape.len() != shape.len() || t.shape.iter().zip(shape).any(|(&a, &b)| a != b as u64) {
            return Err(self.err(name, format!("shape {:?}, expected {shape:?}", t.shape)));
        }
        Ok(())
    }

    /// An I32 tensor of exactly `shape`, as words.
    pub fn words(&self, name: &str, shape: &[usize]) -> Result<Vec<u32>, CheckpointError> {
        let (file, t) = self.get(name)?;
        if t.dtype != Dtype::I32 {
            return Err(self.err(name, format!("dtype {}, expected I32", t.dtype)));
        }
        self.check_shape(name, t, shape)?;
        let words = le_bytes_to_words(file.data(t));
        file.release(t);
        Ok(words)
    }

    /// An integer tensor (I8, I16, I32 or I64) of exactly `shape`, as `i64` values.
    pub fn ints(&self, name: &str, shape: &[usize]) -> Result<Vec<i64>, CheckpointError> {
        let (file, t) = self.get(name)?;
        self.check_shape(name, t, shape)?;
        let data = file.data(t);
        let values = match t.dtype {
            Dtype::I8 => data.iter().map(|&b| i64::from(b as i8)).collect(),
            Dtype::I16 => data.chunks_exact(2).map(|b| i64::from(i16::from_le_bytes([b[0], b[1]]))).collect(),
            Dtype::I32 => {
                data.chunks_exact(4).map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect()
            }
            Dtype::I64 => data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect(),
            d => {
                file.release(t);
                return Err(self.err(name, format!("dtype {d}, expected an integer type")));
            }
        };
        file.release(t);
        Ok(values)
    }

    /// A float tensor (F16, BF16 or F32) of exactly `shape`, as `f32`.
    pub fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CheckpointError> {
        let (file, t) = self.get(name)?;
        if !matches!(t.dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32) {
            return Err(self.err(name, format!("dtype {}, expected F16, BF16 or F32", t.dtype)));
        }
        self.check_shape(name, t, shape)?;
        let values = file.to_f32(t)?;
        file.release(t);
        Ok(values)
    }

    /// A group-index tensor of `cols` entries, each below `n_groups`.
    pub fn g_idx(&self, name: &str, cols: usize, n_groups: usize) -> Result<Vec<u32>, CheckpointError> {
        let raw = self.ints(name, &[cols])?;
        raw.iter()
            .map(|&g| {
                u32::try_from(g)
                    .ok()
                    .filter(|&g| (g as usize) < n_groups)
                    .ok_or_else(|| self.err(name, format!("group index {g} outside 0..{n_groups}")))
            })
            .collect()
    }
}

/// `k / group` for every input column.
pub(crate) fn natural_g_idx(cols: usize, group: usize) -> Vec<u32> {
    (0..cols).map(|k| (k / group.max(1)) as u32).collect()
}

/// Groups per row and columns per group of a layer of `cols` inputs under `cfg`.
pub(crate) fn groups(cfg: &ParsedConfig, cols: usize) -> (usize, usize) {
    let g = cfg.group_size.unwrap_or(cols).max(1);
    (cols.div_ceil(g), g)
}
