//! `eval perplexity`: a model's perplexity over a text, optionally saving its log-probabilities for later KL
//! divergence runs.

use std::path::{Path, PathBuf};

use quantforge_quant::progress::Progress;
use serde::Serialize;

use super::{device_name, display, display_opt, threads};
use crate::device::Device;
use crate::error::Result;
use crate::load::{read_text, LoadedText};
use crate::perplexity::{perplexity as measure, save_base_logits, PerplexityOptions, PerplexityReport};

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct PerplexityJob<'a> {
    /// GGUF file or HF model directory.
    pub model: &'a Path,
    /// The text (UTF-8).
    pub text: &'a Path,
    pub opts: PerplexityOptions,
    /// Also save the model's log-probabilities here (llama-perplexity's `--kl-divergence-base` file).
    pub save_logits: Option<&'a Path>,
    pub device: Device,
}

/// The figures of a run and what they were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct PerplexityRun {
    #[serde(serialize_with = "display")]
    pub model: PathBuf,
    #[serde(serialize_with = "display")]
    pub text: PathBuf,
    #[serde(serialize_with = "display_opt")]
    pub saved_logits: Option<PathBuf>,
    #[serde(flatten)]
    pub report: PerplexityReport,
    /// Seconds loading the model and tokenizing the text took.
    pub load_seconds: f64,
    pub tokens_per_second: f64,
    pub threads: usize,
    #[serde(serialize_with = "device_name")]
    pub device: Device,
}

/// Run perplexity as `job` asks.
pub fn perplexity(job: &PerplexityJob, progress: &dyn Progress) -> Result<PerplexityRun> {
    if let Some(out) = job.save_logits {
        quantforge_formats::check_not_input(out, &[job.model, job.text])?;
    }
    let text = read_text(job.text)?;
    let run = LoadedText::open(job.model, &text, job.device)?;
    let m = &run.loaded;
    let report = match job.save_logits {
        Some(out) => save_base_logits(&m.model, &run.tokens, m.bos(), &job.opts, out, progress)?,
        None => measure(&m.model, &run.tokens, m.bos(), &job.opts, progress)?,
    };
    Ok(PerplexityRun {
        model: job.model.into(),
        text: job.text.into(),
        saved_logits: job.save_logits.map(Path::to_path_buf),
        tokens_per_second: report.tokens_per_second(),
        report,
        load_seconds: run.seconds,
        threads: threads(),
        device: job.device,
    })
}
