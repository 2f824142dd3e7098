//! `eval kld`: KL divergence of a model against a base model run alongside it, or against the base's
//! log-probabilities saved in a file.

use std::path::{Path, PathBuf};

use quantforge_quant::progress::Progress;
use serde::Serialize;

use super::{device_name, display, display_opt, threads};
use crate::device::Device;
use crate::error::{EvalError, Result};
use crate::kld::{kl_divergence, kl_divergence_from_file, kl_divergence_save_base, KldReport};
use crate::load::{read_text, Loaded, LoadedText};
use crate::logits_file::LogitsReader;
use crate::perplexity::PerplexityOptions;

/// Where the base's log-probabilities come from.
#[derive(Clone, Copy, Debug)]
pub enum KldBase<'a> {
    /// A base model run over `text` (whose tokenizer tokenizes it), its log-probabilities saved to `save`
    /// when given.
    Model { path: &'a Path, text: &'a Path, save: Option<&'a Path> },
    /// A file of saved log-probabilities (and the tokens they were computed on).
    Logits(&'a Path),
}

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct KldJob<'a> {
    pub base: KldBase<'a>,
    /// The model compared with the base.
    pub model: &'a Path,
    /// Tokens per chunk: default 512 against a model, the file's against a file (which any value must equal).
    pub n_ctx: Option<usize>,
    pub n_chunks: Option<usize>,
    pub n_batch: usize,
    pub device: Device,
}

/// The figures of a run and what they were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct KldRun {
    #[serde(serialize_with = "display_opt")]
    pub base: Option<PathBuf>,
    #[serde(serialize_with = "display_opt")]
    pub base_logits: Option<PathBuf>,
    #[serde(serialize_with = "display")]
    pub model: PathBuf,
    #[serde(serialize_with = "display_opt")]
    pub text: Option<PathBuf>,
    #[serde(serialize_with = "display_opt")]
    pub saved_base: Option<PathBuf>,
    #[serde(flatten)]
    pub report: KldReport,
    pub tokens_per_second: f64,
    pub threads: usize,
    #[serde(serialize_with = "device_name")]
    pub device: Device,
}

/// Run KL divergence as `job` asks.
pub fn kld(job: &KldJob, progress: &dyn Progress) -> Result<KldRun> {
    let opts = |n_ctx: usize| PerplexityOptions { n_ctx, n_chunks: job.n_chunks, n_batch: job.n_batch };
    let (report, base, base_logits, text, saved_base) = match job.base {
        KldBase::Logits(file) => {
            // The file's header first: a bad file is reported before the model loads.
            let file_ctx = LogitsReader::open(file)?.n_ctx();
            let model = Loaded::open(job.model, job.device)?;
            let opts = opts(job.n_ctx.unwrap_or(file_ctx));
            let r = kl_divergence_from_file(&model.model, file, model.bos(), &opts, progress)?;
            (r, None, Some(file), None, None)
        }
        KldBase::Model { path, text, save } => {
            if let Some(out) = save {
                quantforge_formats::check_not_input(out, &[path, job.model, text])?;
            }
            let words = read_text(text)?;
            let base = LoadedText::open(path, &words, job.device)?;
            let model = LoadedText::open(job.model, &words, job.device)?;
            if model.tokens != base.tokens {
                return Err(EvalError::DifferentTokens { base: path.into(), model: job.model.into() });
            }
            let opts = opts(job.n_ctx.unwrap_or(512));
            let (b, m, bos) = (&base.loaded.model, &model.loaded.model, base.loaded.bos());
            let r = match save {
                Some(out) => kl_divergence_save_base(b, m, &base.tokens, bos, &opts, out, progress)?,
                None => kl_divergence(b, m, &base.tokens, bos, &opts, progress)?,
            };
            (r, Some(path), None, Some(text), save)
        }
    };
    Ok(KldRun {
        base: base.map(Path::to_path_buf),
        base_logits: base_logits.map(Path::to_path_buf),
        model: job.model.into(),
        text: text.map(Path::to_path_buf),
        saved_base: saved_base.map(Path::to_path_buf),
        tokens_per_second: report.tokens_per_second(),
        report,
        threads: threads(),
        device: job.device,
    })
}
