//! `eval imatrix`: collect llama.cpp's importance matrix of a GGUF model over a text and write it.

use std::path::{Path, PathBuf};

use quantforge_quant::progress::Progress;
use serde::Serialize;

use super::display;
use crate::device::Device;
use crate::error::{EvalError, Result};
use crate::imatrix::collect;
use crate::load::{read_text, LoadedText};

/// The file layout written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImatrixFormat {
    /// llama.cpp's current GGUF layout.
    Gguf,
    /// The legacy `.dat` layout.
    Dat,
}

/// What to collect and where to write it.
#[derive(Clone, Debug)]
pub struct ImatrixJob<'a> {
    /// A GGUF model (its tensor names key the matrix).
    pub model: &'a Path,
    pub text: &'a Path,
    pub output: &'a Path,
    pub format: ImatrixFormat,
    pub n_ctx: usize,
    pub n_chunks: Option<usize>,
    pub device: Device,
}

/// What was written.
#[derive(Clone, Debug, Serialize)]
pub struct ImatrixRun {
    #[serde(serialize_with = "display")]
    pub output: PathBuf,
    /// Weights with statistics.
    pub entries: usize,
    pub chunks: u32,
    pub chunk_size: u32,
}

/// Collect and write the importance matrix as `job` asks.
pub fn imatrix(job: &ImatrixJob, progress: &dyn Progress) -> Result<ImatrixRun> {
    if job.model.is_dir() {
        return Err(EvalError::NeedsGguf { path: job.model.into(), what: "imatrix" });
    }
    quantforge_formats::check_not_input(job.output, &[job.model, job.text])?;
    let text = read_text(job.text)?;
    let run = LoadedText::open(job.model, &text, job.device)?;
    let collected = collect(&run.loaded.model, &run.tokens, run.loaded.bos(), job.n_ctx, job.n_chunks, progress)?;
    let dataset = job.text.display().to_string();
    match job.format {
        ImatrixFormat::Gguf => collected.write_gguf(job.output, &dataset)?,
        ImatrixFormat::Dat => collected.write_dat(job.output, &dataset)?,
    }
    Ok(ImatrixRun {
        output: job.output.into(),
        entries: collected.entries.len(),
        chunks: collected.chunk_count,
        chunk_size: collected.chunk_size,
    })
}
