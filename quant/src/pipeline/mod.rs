//! The quantization pipeline: a GGUF in, a quantized GGUF out, exactly as `llama-quantize` writes it.
//!
//! [`plan`] decides every tensor's type (the [`crate::policy`] rules), checks everything that can be checked
//! before a byte is written (requantization, importance-matrix coverage and sizes, codec support, output
//! paths), and computes the exact output size. [`execute`] then runs the plan through [`crate::stream`]:
//! tensors in order from the memory-mapped input, large ones a piece of whole rows at a time (decoded to f32,
//! quantized by the [`crate::solver::CodecSolver`], written, the input pages released), solving overlapped
//! with writing. Rows are independent, so the bytes depend neither on the pieces nor on the thread count.
//!
//! Mirrors `llama_model_quantize_impl` in `src/llama-quant.cpp` at llama.cpp
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62.

mod error;
mod execute;
pub mod metadata;
mod source;
pub mod split;

use std::path::PathBuf;

use quantforge_formats::gguf::GgufValue;
use quantforge_formats::GgmlType;

use crate::imatrix::Imatrix;
use crate::policy::{self, FileType, ModelInfo, PolicyOptions, TensorDesc};
use crate::stream::{self, TensorCount};
use crate::{codecs, dequant};

pub use error::PipelineError;
pub use execute::{execute, execute_coded, Coded};
pub use source::ModelSource;

/// An importance matrix and the path as the user spelled it (recorded in the output's metadata).
#[derive(Clone, Debug)]
pub struct ImatrixInput {
    pub matrix: Imatrix,
    pub file_arg: String,
}

/// Everything `quantize` can be asked to do.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// Type policy options (file type, overrides, `--pure`, ...). `has_imatrix` is set by [`plan`].
    pub policy: PolicyOptions,
    /// Importance matrix, already filtered by `--include-weights` / `--exclude-weights`.
    pub imatrix: Option<ImatrixInput>,
    /// Allow quantized inputs to be requantized.
    pub allow_requantize: bool,
    /// Split the output into files of at most this many bytes of tensor data.
    pub split_max_size: Option<u64>,
    /// `--override-kv`: metadata set on the output, in order (after the file type, before imatrix keys).
    pub overrides: Vec<(String, GgufValue)>,
    /// The caller codes the block tensors from its own calibration statistics (GPTQ into GGUF types): the
    /// plan is llama-quantize's with an importance matrix, and the tensors that need one are the caller's to
    /// code (the codec refuses any left to it).
    pub calibrated: bool,
}

impl QuantizeOptions {
    /// llama-quantize's defaults for `ftype`.
    pub fn new(ftype: FileType) -> QuantizeOptions {
        QuantizeOptions {
            policy: PolicyOptions::new(ftype),
            imatrix: None,
            allow_requantize: false,
            split_max_size: None,
            overrides: Vec::new(),
            calibrated: false,
        }
    }
}

/// One output tensor.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// Index of the source tensor in the input's tensor list.
    pub source: usize,
    pub name: String,
    /// ggml-order dimensions.
    pub ne: Vec<u64>,
    pub src_type: GgmlType,
    pub dst_type: GgmlType,
    /// False: the bytes are copied unchanged.
    pub quantize: bool,
    /// The type the mix wanted before the shape fallback.
    pub fallback_from: Option<GgmlType>,
    /// Whether an importance-matrix entry is used for this tensor.
    pub uses_imatrix: bool,
    /// Output bytes (without padding).
    pub size: u64,
    /// Output file (split) index.
    pub split: usize,
}

/// The complete plan of one quantization.
#[derive(Clone, Debug)]
pub struct QuantizePlan {
    pub ftype: FileType,
    pub tensors: Vec<PlannedTensor>,
    /// Output metadata (of the first file when split).
    pub metadata: Vec<(String, GgufValue)>,
    /// Number of output files.
    pub n_splits: usize,
}

impl QuantizePlan {
    /// Total tensor bytes written.
    pub fn output_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size).sum()
    }

    /// Total elements.
    pub fn n_elements(&self) -> u64 {
        self.tensors.iter().map(|t| t.ne.iter().product::<u64>()).sum()
    }

    /// Bits per weight of the output, as llama-quantize reports it.
    pub fn bits_per_weight(&self) -> f64 {
        quantforge_formats::ggml_type::bits_per_weight(self.output_bytes(), self.n_elements())
    }

    /// Tensors whose type came from a shape fallback.
    pub fn n_fallback(&self) -> usize {
        self.tensors.iter().filter(|t| t.fallback_from.is_some()).count()
    }

    /// The output paths for a requested output path.
    pub fn output_paths(&self, output: &std::path::Path) -> Vec<PathBuf> {
        if self.n_splits <= 1 {
            vec![output.to_path_buf()]
        } else {
            (0..self.n_splits).map(|i| split::split_path(output, i, self.n_splits)).collect()
        }
    }
}

/// Decide and check everything about quantizing `input`.
pub fn plan(input: &dyn ModelSource, options: &QuantizeOptions) -> Result<QuantizePlan, PipelineError> {
    let ftype = options.policy.ftype;
    ftype.ensure_supported()?;
    let model = ModelInfo::from_metadata(|k| input.get(k))?;
    let imatrix = options.imatrix.as_ref().map(|i| &i.matrix).filter(|m| !m.is_empty());
    if let Some(m) = imatrix {
        if !m.names().any(|n| input.find(n).is_some()) {
            return Err(PipelineError::ImatrixForOtherModel {
                imatrix: options.imatrix.as_ref().map(|i| i.file_arg.clone()).unwrap_or_default(),
                model: input.path().into(),
            });
        }
    }
    let mut policy_options = options.policy.clone();
    policy_options.has_imatrix = imatrix.is_some() || options.calibrated;

    let descs: Vec<TensorDesc<'_>> = (0..input.len())
        .map(|i| {
            let (name, ne, src_type) = input.tensor(i);
            TensorDesc { name, ne, src_type }
        })
        .collect();
    let planned = policy::plan_all(model, policy_options, &descs)?;

    let mut tensors = Vec::with_capacity(planned.len());
    for p in planned {
        let name = p.tensor.name;
        let source = input.find(name).unwrap_or_default();
        let (src_type, dst_type) = (p.tensor.src_type, p.decision.ty);
        let quantize = p.decision.quantize && src_type != dst_type;
        let mut uses_imatrix = false;
        if quantize {
            if src_type.is_quantized() && !options.allow_requantize {
                return Err(PipelineError::Requantize { tensor: name.into(), from: src_type, to: dst_type });
            }
            if !dequant::can_dequantize(src_type) {
                return Err(PipelineError::NoDecoder { tensor: name.into(), ty: src_type });
            }
            if !codecs::can_quantize(dst_type) {
                return Err(PipelineError::NoEncoder { tensor: name.into(), ty: dst_type });
            }
            uses_imatrix = imatrix_entry(imatrix, name, p.tensor.ne)?.is_some();
            if p.decision.requires_imatrix && !uses_imatrix && !options.calibrated {
                return Err(PipelineError::MissingImatrixEntry { tensor: name.into(), ty: dst_type });
            }
        }
        let size = dst_type.tensor_size(p.tensor.ne).ok_or_else(|| PipelineError::Shape { tensor: name.into() })?;
        tensors.push(PlannedTensor {
            source,
            name: name.into(),
            // llama-quantize writes each tensor with `ggml_n_dims` dimensions (trailing 1s dropped: Qwen2-MoE's
            // `ffn_gate_inp_shexp` of `ne = [n_embd, 1]` comes out as `[n_embd]`).
            ne: p.tensor.ne[..policy::tensor::n_dims(p.tensor.ne)].to_vec(),
            src_type,
            dst_type,
            quantize,
            fallback_from: p.decision.fallback_from,
            uses_imatrix,
            size,
            split: 0,
        });
    }
    // The output holds every tensor of the input model (quantize drops none).
    stream::check_count(tensors.len(), TensorCount::all(input.model_len()))?;
    let mut n_splits = 1;
    if let Some(max) = options.split_max_size {
        let sizes: Vec<u64> = tensors.iter().map(|t| t.size).collect();
        let assignment = split::assign(&sizes, max, quantforge_formats::gguf::DEFAULT_ALIGNMENT);
        for (t, s) in tensors.iter_mut().zip(&assignment) {
            t.split = *s;
        }
        n_splits = assignment.last().map_or(1, |s| s + 1);
        // split.count is a u16: a larger set could not be read back.
        if n_splits > usize::from(u16::MAX) {
            return Err(PipelineError::TooManySplits { n_splits, max_size: max });
        }
    }
    let mut extra_kv = options.overrides.clone();
    if let (Some(i), Some(m)) = (&options.imatrix, imatrix) {
        extra_kv.extend(m.output_metadata(&i.file_arg));
    }
    let metadata = metadata::output_metadata(input.metadata(), ftype.id(), &extra_kv);
    Ok(QuantizePlan { ftype, tensors, metadata, n_splits })
}

/// The imatrix weights for a tensor: `ne[0] * ne[2]` values. A size mismatch is an error except for
/// `token_embd.weight`, which llama.cpp quantizes without the entry.
pub(crate) fn imatrix_entry<'a>(
    imatrix: Option<&'a Imatrix>,
    name: &str,
    ne: &[u64],
) -> Result<Option<&'a [f32]>, PipelineError> {
    let Some(values) = imatrix.and_then(|m| m.get(name)) else { return Ok(None) };
    let expected = ne.first().copied().unwrap_or(1) * ne.get(2).copied().unwrap_or(1);
    if values.len() as u64 == expected {
        Ok(Some(values))
    } else if name == "token_embd.weight" {
        Ok(None)
    } else {
        Err(PipelineError::ImatrixSize { tensor: name.into(), got: values.len() as u64, expected })
    }
}
