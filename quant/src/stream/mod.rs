//! The one streaming pipeline every command that writes tensors goes through:
//! **source -> per-tensor transforms -> solver -> sink**.
//!
//! - A [`Source`] lists its output tensors up front ([`StreamTensor`]: name, ggml-order shape, stored type,
//!   byte size) and yields each one in turn, either as stored bytes (copied) or as f32 values (already
//!   transformed, see [`transform`]), plus the statistics its solver may use.
//! - A [`Solver`] turns f32 values into stored bytes ([`crate::solver`]).
//! - A [`Sink`] writes them: one GGUF or split GGUF files ([`sink::GgufSink`]), an HF safetensors directory
//!   ([`sink::SafetensorsDirSink`]).
//!
//! [`run`] is the only loop. It owns: refusing outputs that are inputs, the sink's atomic temporaries (a
//! failed or cancelled run leaves nothing), progress, cancellation between tensors, releasing the source's
//! pages after each tensor (after each piece for [`TensorData::Encoded`]), the output-size accounting, and the
//! checks that the sink expects exactly the planned tensors and received every one of them at its planned
//! size. Its work runs as a small bounded pipeline ([`pieces`]): solving overlaps writing, large tensors go
//! through in pieces of rows, and the output is the same bytes at any thread count.
//!
//! Invariant: the output holds exactly the tensors the source plans, and, for a source that reads one input
//! model ([`Source::tensor_count`]), the plan holds exactly the input model's tensors less those dropped on
//! purpose ([`check_count`]). A source that saw only part of its input (one split of a split GGUF opened on
//! its own) cannot write a partial model: the run stops before anything is written.
//!
//! Where each command enters: `convert` ([`crate::convert::ConvertedModel::write_gguf`]), `convert --to hf`
//! ([`crate::convert::to_hf::gguf_to_hf`]), `quantize` ([`crate::pipeline::execute`]), `merge-lora`
//! ([`crate::lora::merge_lora`]) and `convert --lora-base` ([`crate::lora::export_gguf`]) each build a source
//! and a sink and call [`run`].

mod dtype;
pub mod pieces;
pub mod sink;
pub mod transform;

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use quantforge_formats::{check_not_input, FormatError, GgmlType};
use rayon::prelude::*;

pub use dtype::FloatType;
pub use sink::Sink;

use crate::progress::Progress;
use crate::solver::{Solver, SolverError, TensorStats};

/// One tensor a source produces and a sink receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTensor {
    pub name: String,
    /// Dimensions in ggml order.
    pub ne: Vec<u64>,
    /// The stored type the solver encodes f32 values to; `None` for tensors only ever copied as bytes
    /// (safetensors dtypes with no ggml type).
    pub ty: Option<GgmlType>,
    /// Stored bytes (without padding).
    pub size: u64,
    /// What happens to it, for progress.
    pub detail: String,
}

impl StreamTensor {
    /// A tensor solved to `ty`, its size computed from the shape. `None` when the shape does not fit `ty`.
    pub fn solved(name: impl Into<String>, ne: Vec<u64>, ty: GgmlType, detail: impl Into<String>) -> Option<Self> {
        let size = ty.tensor_size(&ne)?;
        Some(StreamTensor { name: name.into(), ne, ty: Some(ty), size, detail: detail.into() })
    }
}

/// One tensor's data as a source yields it.
pub enum TensorData<'s> {
    /// Stored bytes, written as they are.
    Bytes(Cow<'s, [u8]>),
    /// The f32 values were put in the buffer handed to [`Source::read`]; the solver encodes them.
    Values,
    /// Stored bytes of type `ty` (the whole tensor) whose values the solver encodes. The driver decodes and
    /// solves them a piece of whole rows at a time ([`pieces`]), so a large tensor is never all in f32; only
    /// for solvers that solve rows independently ([`crate::solver::CodecSolver`]).
    Encoded { ty: GgmlType, bytes: Cow<'s, [u8]> },
}

/// What a source's output must hold, counted on the input side: the input model's tensors less those the
/// source leaves out on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorCount {
    /// Tensors of the whole input model (for a split GGUF, its `split.tensors.count`).
    pub input: u64,
    /// Input tensors the source drops on purpose.
    pub dropped: u64,
}

impl TensorCount {
    /// Every tensor of an input model of `input` tensors, none dropped.
    pub fn all(input: u64) -> TensorCount {
        TensorCount { input, dropped: 0 }
    }
}

/// Where tensors come from.
pub trait Source: Sync {
    /// The caller's error type; the driver's own failures convert into it.
    type Error: From<StreamError>;
    /// The output tensors, in write order.
    fn tensors(&self) -> &[StreamTensor];
    /// Files no output may overwrite.
    fn input_paths(&self) -> Vec<&Path>;
    /// Tensor `index`: its bytes, or its values put in `values` (resized by the source).
    fn read<'s>(&'s self, index: usize, values: &mut Vec<f32>) -> Result<TensorData<'s>, Self::Error>;
    /// Statistics for the solver of tensor `index`.
    fn stats(&self, _index: usize) -> Result<TensorStats<'_>, Self::Error> {
        Ok(TensorStats::None)
    }
    /// Tensor `index` is done with: its pages may be released.
    fn release(&self, _index: usize) {}
    /// Hint: `range` of the bytes of tensor `index` given as [`TensorData::Encoded`] is about to be read.
    fn prefetch_bytes(&self, _index: usize, _range: Range<usize>) {}
    /// Hint: `range` of the bytes of tensor `index` given as [`TensorData::Encoded`] is done with.
    fn release_bytes(&self, _index: usize, _range: Range<usize>) {}
    /// For a source that reads one input model, how many tensors that model has and how many the source
    /// drops on purpose; [`run`] refuses a plan of any other length. `None` for sources that build their
    /// tensors from several inputs.
    fn tensor_count(&self) -> Option<TensorCount> {
        None
    }
}

/// The driver's own failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("interrupted; no output was written")]
    Interrupted,
    #[error("tensor '{tensor}': {source}")]
    Solve { tensor: String, source: SolverError },
    #[error("tensor '{tensor}' has non-finite values (value {index} is {value}); refusing to quantize it")]
    NonFinite { tensor: String, index: usize, value: f32 },
    #[error("tensor '{tensor}': the source gave {got} bytes, {expected} were planned")]
    Size { tensor: String, expected: u64, got: u64 },
    #[error("tensor '{tensor}' has no stored type to encode its values to")]
    NoType { tensor: String },
    #[error("the output does not match the plan: {message}")]
    SinkMismatch { message: String },
    #[error("{planned} tensors planned, but the input model has {input}{}: refusing to write a partial model (is the input one split of a split model, opened on its own?)", dropped_note(*.dropped))]
    TensorCount { planned: u64, input: u64, dropped: u64 },
}

fn dropped_note(dropped: u64) -> String {
    if dropped == 0 {
        String::new()
    } else {
        format!(" of which {dropped} are dropped on purpose")
    }
}

/// How to run.
#[derive(Clone, Copy)]
pub struct RunOptions<'a> {
    pub progress: &'a dyn Progress,
    /// Set by another thread to stop between tensors with [`StreamError::Interrupted`] and no output.
    pub cancel: Option<&'a AtomicBool>,
    /// Refuse tensors with NaN or infinite values before solving them (quantize does, convert does not).
    pub reject_non_finite: bool,
    /// Inputs besides the source's own files that no output may overwrite (an imatrix file).
    pub extra_inputs: &'a [&'a Path],
}

impl<'a> RunOptions<'a> {
    /// Progress only; no cancellation, no finiteness check, no extra inputs.
    pub fn new(progress: &'a dyn Progress) -> Self {
        RunOptions { progress, cancel: None, reject_non_finite: false, extra_inputs: &[] }
    }
}

/// What a run wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub tensors: usize,
    /// Tensor bytes written (without padding).
    pub bytes: u64,
    /// The files or directory written.
    pub outputs: Vec<PathBuf>,
}

/// Stream every tensor of `source` through `solver` into `sink`.
pub fn run<S: Source + ?Sized, K: Sink>(
    source: &S,
    solver: &dyn Solver,
    mut sink: K,
    opts: RunOptions<'_>,
) -> Result<RunSummary, S::Error> {
    let tensors = source.tensors();
    if let Some(count) = source.tensor_count() {
        check_count(tensors.len(), count)?;
    }
    check_plan(tensors, &sink.expected())?;
    let mut inputs = source.input_paths();
    inputs.extend_from_slice(opts.extra_inputs);
    let outputs = sink.outputs();
    for out in &outputs {
        check_not_input(out, &inputs).map_err(StreamError::from)?;
    }
    sink.open(&inputs)?;
    let total: u64 = tensors.iter().map(|t| t.size).sum();
    opts.progress.start(tensors.len(), total);
    let written = pieces::drive(source, solver, &mut sink, &opts)?;
    sink.finish()?;
    opts.progress.finish();
    Ok(RunSummary { tensors: tensors.len(), bytes: written, outputs })
}

/// A plan of `planned` tensors must hold exactly the input model's tensors less those dropped on purpose.
pub fn check_count(planned: usize, count: TensorCount) -> Result<(), StreamError> {
    let planned = planned as u64;
    if count.input.checked_sub(count.dropped) == Some(planned) {
        return Ok(());
    }
    Err(StreamError::TensorCount { planned, input: count.input, dropped: count.dropped })
}

/// The sink must expect exactly the source's tensors, in order, at their sizes.
fn check_plan(tensors: &[StreamTensor], expected: &[(String, u64)]) -> Result<(), StreamError> {
    let mismatch = |message: String| Err(StreamError::SinkMismatch { message });
    if tensors.len() != expected.len() {
        return mismatch(format!("{} tensors planned, the sink expects {}", tensors.len(), expected.len()));
    }
    for (t, (name, size)) in tensors.iter().zip(expected) {
        if &t.name != name || t.size != *size {
            return mismatch(format!(
                "planned '{}' ({} bytes), the sink expects '{name}' ({size} bytes)",
                t.name, t.size
            ));
        }
    }
    Ok(())
}

fn check_size(t: &StreamTensor, got: usize) -> Result<(), StreamError> {
    if got as u64 != t.size {
        return Err(StreamError::Size { tensor: t.name.clone(), expected: t.size, got: got as u64 });
    }
    Ok(())
}

/// Index of the first NaN or infinity. Checked a chunk at a time with a branch-free fold that vectorizes;
/// only a chunk that has one is searched again.
fn first_non_finite(values: &[f32]) -> Option<usize> {
    const CHUNK: usize = 1 << 16;
    let chunk = values
        .par_chunks(CHUNK)
        .position_first(|c| c.iter().fold(false, |bad, v| bad | (v.to_bits() & 0x7f80_0000 == 0x7f80_0000)))?;
    let start = chunk * CHUNK;
    values[start..].iter().position(|v| !v.is_finite()).map(|i| start + i)
}

#[cfg(test)]
mod tests;
