//! Running a [`QuantizePlan`] through [`crate::stream`]: the input model is the source (tensors to
//! quantize handed over in their stored type, which the stream decodes a piece of rows at a time; the others
//! copied), the importance matrix gives each tensor's diagonal
//! statistics, [`CodecSolver`] quantizes rows in parallel, a [`GgufSink`] writes one file or the split files.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use quantforge_formats::gguf::TensorSpec;

use super::{imatrix_entry, split, ModelSource, PipelineError, PlannedTensor, QuantizeOptions, QuantizePlan};
use crate::imatrix::Imatrix;
use crate::progress::Progress;
use crate::solver::{CodecSolver, TensorStats};
use crate::stream::sink::{GgufPart, GgufSink};
use crate::stream::{self, RunOptions, Source, StreamTensor, TensorCount, TensorData};

/// A model and a plan as a pipeline source.
struct QuantizeSource<'a> {
    input: &'a dyn ModelSource,
    plan: &'a QuantizePlan,
    imatrix: Option<&'a Imatrix>,
    coded: &'a Coded,
    tensors: Vec<StreamTensor>,
}

/// Tensors already coded in their planned type (GPTQ into GGUF types), by name: written as they are.
pub type Coded = HashMap<String, Vec<u8>>;

impl Source for QuantizeSource<'_> {
    type Error = PipelineError;

    fn tensors(&self) -> &[StreamTensor] {
        &self.tensors
    }

    fn input_paths(&self) -> Vec<&Path> {
        self.input.input_paths()
    }

    fn read<'s>(&'s self, index: usize, _values: &mut Vec<f32>) -> Result<TensorData<'s>, PipelineError> {
        let t = &self.plan.tensors[index];
        if let Some(bytes) = self.coded.get(&t.name).filter(|_| t.quantize) {
            return Ok(TensorData::Bytes(Cow::Borrowed(bytes)));
        }
        let src = self.input.bytes(t.source)?;
        if !t.quantize {
            self.input.prefetch_range(t.source, 0..src.len());
            return Ok(TensorData::Bytes(src));
        }
        // Decoded and quantized a piece of rows at a time by the stream.
        Ok(TensorData::Encoded { ty: t.src_type, bytes: src })
    }

    fn prefetch_bytes(&self, index: usize, range: Range<usize>) {
        self.input.prefetch_range(self.plan.tensors[index].source, range);
    }

    fn release_bytes(&self, index: usize, range: Range<usize>) {
        self.input.release_range(self.plan.tensors[index].source, range);
    }

    fn stats(&self, index: usize) -> Result<TensorStats<'_>, PipelineError> {
        let t = &self.plan.tensors[index];
        Ok(imatrix_entry(self.imatrix, &t.name, &t.ne)?.map_or(TensorStats::None, TensorStats::Diagonal))
    }

    fn release(&self, index: usize) {
        self.input.release(self.plan.tensors[index].source);
    }

    fn tensor_count(&self) -> Option<TensorCount> {
        Some(TensorCount::all(self.input.model_len()))
    }
}

/// Write the quantized model to `output` (or its split files). Returns the paths written.
pub fn execute(
    input: &dyn ModelSource,
    plan: &QuantizePlan,
    options: &QuantizeOptions,
    output: &Path,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>, PipelineError> {
    execute_coded(input, plan, options, output, progress, &Coded::new())
}

/// [`execute`], with the tensors in `coded` written as given instead of quantized (each must have its planned
/// type's size).
pub fn execute_coded(
    input: &dyn ModelSource,
    plan: &QuantizePlan,
    options: &QuantizeOptions,
    output: &Path,
    progress: &dyn Progress,
    coded: &Coded,
) -> Result<Vec<PathBuf>, PipelineError> {
    // A plan made for another input would read the wrong tensors.
    for t in &plan.tensors {
        if t.source >= input.len() || input.tensor(t.source).0 != t.name {
            return Err(PipelineError::PlanForOtherInput { tensor: t.name.clone(), input: input.path().into() });
        }
    }
    let paths = plan.output_paths(output);
    let mut parts = Vec::with_capacity(paths.len());
    for (split_no, path) in paths.iter().enumerate() {
        let metadata = if plan.n_splits <= 1 {
            plan.metadata.clone()
        } else {
            let keys = split::split_keys(split_no, plan.n_splits, plan.tensors.len());
            let mut m = if split_no == 0 { plan.metadata.clone() } else { Vec::new() };
            m.extend(keys);
            m
        };
        let specs = plan
            .tensors
            .iter()
            .filter(|t| t.split == split_no)
            .map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.dst_type, ne: t.ne.clone() })
            .collect();
        parts.push(GgufPart { path: path.clone(), metadata, specs });
    }
    // Split files hold the tensors in plan order (splits are assigned in order), so the sink's order is the plan's.
    let tensors = plan
        .tensors
        .iter()
        .map(|t| StreamTensor {
            name: t.name.clone(),
            ne: t.ne.clone(),
            ty: Some(t.dst_type),
            size: t.size,
            detail: describe(t),
        })
        .collect();
    let imatrix = options.imatrix.as_ref().map(|i| &i.matrix);
    let source = QuantizeSource { input, plan, imatrix, coded, tensors };
    let imatrix_path = options.imatrix.as_ref().map(|i| Path::new(&i.file_arg));
    let extra: Vec<&Path> = imatrix_path.into_iter().collect();
    let opts = RunOptions { reject_non_finite: true, extra_inputs: &extra, ..RunOptions::new(progress) };
    stream::run(&source, &CodecSolver, GgufSink::split(parts), opts)?;
    Ok(paths)
}

fn describe(t: &PlannedTensor) -> String {
    let shape: Vec<String> = t.ne.iter().map(u64::to_string).collect();
    let mut s = format!("[{}] {} -> {}", shape.join(", "), t.src_type, t.dst_type);
    if let Some(f) = t.fallback_from {
        s.push_str(&format!(" (fallback from {f})"));
    }
    if !t.quantize {
        s.push_str(" (copy)");
    }
    s
}
