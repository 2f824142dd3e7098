//! `eval mmlu`: MMLU accuracy of a model on selected subjects, optionally with its prompts in a chat template.

use std::path::{Path, PathBuf};

use quantforge_quant::progress::Progress;
use serde::Serialize;

use super::{device_name, display, threads};
use crate::chat;
use crate::device::Device;
use crate::error::Result;
use crate::load::Loaded;
use crate::mmlu::{self, Dataset, MmluOptions, MmluReport};

/// Which MMLU questions to ask, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmluSelection {
    /// Subjects by name (file names without `_test.csv`); none: all of `subset`, or every subject of the data.
    pub subjects: Vec<String>,
    /// A named subset ([`crate::mmlu::SUBSETS`]).
    pub subset: Option<String>,
    /// Dev examples before each question (0-5).
    pub shots: usize,
    /// At most this many questions per subject (the first ones of each test file).
    pub limit: Option<usize>,
    /// Longest prompt in tokens; examples are dropped from longer ones.
    pub max_tokens: usize,
    /// `auto` (the model's own, when recognised), or a template name; none: plain prompts.
    pub chat_template: Option<String>,
}

impl Default for MmluSelection {
    fn default() -> Self {
        MmluSelection {
            subjects: Vec::new(),
            subset: None,
            shots: 5,
            limit: None,
            max_tokens: 2048,
            chat_template: None,
        }
    }
}

impl MmluSelection {
    /// The subjects of `data` this selection asks for.
    pub fn subjects_of(&self, data: &Dataset) -> Result<Vec<String>> {
        data.select(&self.subjects, self.subset.as_deref())
    }

    /// Ask `subjects` of `data` to the model loaded from `path`, `n_batch` tokens per forward pass.
    pub fn evaluate(
        &self,
        loaded: &Loaded,
        path: &Path,
        data: &Dataset,
        subjects: &[String],
        n_batch: usize,
        progress: &dyn Progress,
    ) -> Result<MmluReport> {
        let chat = chat::choose(self.chat_template.as_deref(), &loaded.tokenizer, path)?;
        let opts = MmluOptions { shots: self.shots, limit: self.limit, max_tokens: self.max_tokens, n_batch, chat };
        mmlu::evaluate(&loaded.model, &loaded.tokenizer, data, subjects, &opts, progress)
    }
}

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct MmluJob<'a> {
    /// GGUF file or HF model directory.
    pub model: &'a Path,
    /// MMLU data directory in the original layout (`test/`, `dev/`).
    pub data: &'a Path,
    pub select: &'a MmluSelection,
    pub n_batch: usize,
    pub device: Device,
}

/// The figures of a run and what they were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct MmluRun {
    #[serde(flatten)]
    pub report: MmluReport,
    #[serde(serialize_with = "display")]
    pub model: PathBuf,
    #[serde(serialize_with = "display")]
    pub data: PathBuf,
    pub threads: usize,
    #[serde(serialize_with = "device_name")]
    pub device: Device,
}

/// Run MMLU as `job` asks.
pub fn mmlu(job: &MmluJob, progress: &dyn Progress) -> Result<MmluRun> {
    let data = Dataset::open(job.data)?;
    let subjects = job.select.subjects_of(&data)?;
    let loaded = Loaded::open(job.model, job.device)?;
    let report = job.select.evaluate(&loaded, job.model, &data, &subjects, job.n_batch, progress)?;
    Ok(MmluRun { report, model: job.model.into(), data: job.data.into(), threads: threads(), device: job.device })
}
