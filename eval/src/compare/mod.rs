//! Size against quality for several models: one table of file size, bits per weight, perplexity, KL
//! divergence and same-top rate against a base model, MMLU accuracy and tokens/s.
//!
//! The base runs once over the text, writing its 16-bit log-probabilities (llama-perplexity's
//! `--kl-divergence-base` file) into the cache; every candidate then runs once against that file, which gives
//! its perplexity, KL divergence and same-top rate together. MMLU, when asked, runs on every model. Each
//! finished figure is cached ([`cache`]) under a hash of what it depends on (model file, text, settings,
//! device), so an interrupted run picks up where it stopped and a repeated one only measures new models.
//!
//! The result, [`Comparison`], serializes to the JSON of `eval compare --json` (which `plan --quality` reads
//! back through [`quality`]), and renders as a terminal table, Markdown ([`table`]) and SVG ([`chart`]).

mod axis;
pub mod cache;
pub mod chart;
pub mod quality;
pub mod row;
pub mod table;

use std::path::{Path, PathBuf};

use quantforge_quant::progress::Progress;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::device::Device;
use crate::error::{EvalError, Result};
use crate::kld::kl_divergence_from_file;
use crate::load::{read_text, LazyModel};
use crate::mmlu::{Dataset, MmluReport};
use crate::perplexity::{save_base_logits, PerplexityOptions};
use crate::run::{threads, MmluSelection};
use cache::{hash_file, hash_model, hash_tokens, Cache};
pub use chart::Metric;
pub use row::{label_uniquely, Row};
use row::{BaseFigures, KldFigures, MmluFigures};

/// What to compare, on what.
#[derive(Clone, Debug)]
pub struct CompareJob<'a> {
    /// The base model, then the candidates (GGUF files or HF directories).
    pub models: &'a [PathBuf],
    /// The text perplexity and KL divergence are measured on.
    pub text: &'a Path,
    pub opts: PerplexityOptions,
    pub device: Device,
    /// MMLU data directory and the questions to ask every model, when MMLU is wanted.
    pub mmlu: Option<(&'a Path, &'a MmluSelection)>,
    /// Cache directory; `None` measures everything and keeps nothing.
    pub cache: Option<PathBuf>,
}

/// What a comparison reports while it runs.
pub trait CompareProgress {
    /// Model `index` (of `total`) at `path` starts `what`.
    fn stage(&self, index: usize, total: usize, path: &Path, what: &str);
    /// Progress of one measurement (chunks or questions).
    fn measurement(&self) -> Box<dyn Progress + '_>;
}

/// The comparison: what every figure was measured on, and one row per model, the base first.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The text, as given.
    pub text: String,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks measured.
    pub chunks: Option<u64>,
    /// The MMLU selection, when MMLU ran.
    pub mmlu: Option<String>,
    pub threads: usize,
    pub models: Vec<Row>,
}

impl Comparison {
    /// One sentence for under a table: what was measured on what, against `base`.
    pub fn sentence(&self, base: &str) -> String {
        let chunks = self.chunks.map_or(String::new(), |c| format!("{c} chunks of "));
        let mut s = format!(
            "PPL and KLD on {}, {chunks}{} tokens (second half of each chunk scored); KLD and same-top against {base}.",
            self.text, self.ctx
        );
        if let Some(m) = &self.mmlu {
            s.push_str(&format!(" MMLU: {m}."));
        }
        s
    }
}

/// Run the comparison `job` describes.
pub fn compare(job: &CompareJob, progress: &dyn CompareProgress) -> Result<Comparison> {
    let Some(base_path) = job.models.first() else {
        return Err(EvalError::BadOption { message: "no models to compare".into() });
    };
    for m in job.models {
        if !m.exists() {
            return Err(EvalError::NoModel { path: m.clone() });
        }
    }
    let scratch = Scratch::new(job.cache.is_none())?;
    let cache = Cache::new(job.cache.clone());
    let mmlu = match job.mmlu {
        Some((dir, select)) => Some(MmluRun::prepare(dir, select)?),
        None => None,
    };
    let n = job.models.len();
    let opts = &job.opts;
    let text_hash = hash_file(job.text)?;
    // Tokens/s depend on the device, so it is part of every key (the figures themselves do not).
    let text_key = json!({"text": text_hash, "ctx": opts.n_ctx, "chunks": opts.n_chunks, "device": job.device.name()});

    let mut rows = Vec::with_capacity(n);
    let mut base_ctx: Option<BaseContext> = None;
    for (i, path) in job.models.iter().enumerate() {
        progress.stage(i, n, path, "hashing");
        let mut row = Row::describe(path)?;
        let model_hash = hash_model(path)?;
        let mut model = LazyModel::new(path, job.device);
        if i == 0 {
            let key = json!({"model": model_hash, "eval": text_key});
            let logits = match cache.artefact("logits", &key, "bin")? {
                Some(p) => p,
                None => scratch.path("base.logits")?,
            };
            let measure = || {
                progress.stage(i, n, path, "perplexity (base, writing its log-probabilities)");
                let m = model.get()?;
                let tokens = m.tokens(&read_text(job.text)?)?;
                let r = save_base_logits(&m.model, &tokens, m.bos(), opts, &logits, &*progress.measurement())?;
                Ok(BaseFigures {
                    ppl: Some(r.ppl),
                    ppl_uncertainty: Some(r.ppl_uncertainty),
                    tokens_per_second: Some((r.n_chunks * r.n_ctx) as f64 / r.forward_seconds.max(1e-9)),
                    tokens: Some(hash_tokens(&tokens)),
                    n_chunks: Some(r.n_chunks as u64),
                })
            };
            let figures: BaseFigures = cached(&cache, "base", &key, !logits.is_file(), measure, |f| f)?;
            row.set_base(&figures);
            base_ctx = Some(BaseContext { key, logits, tokens: figures.tokens });
        } else {
            let base = base_ctx.as_ref().ok_or_else(|| EvalError::BadOption { message: "no base".into() })?;
            let key = json!({"model": model_hash, "base": base.key});
            let measure = || {
                progress.stage(i, n, path, "perplexity and KL divergence against the base");
                let m = model.get()?;
                if Some(hash_tokens(&m.tokens(&read_text(job.text)?)?)) != base.tokens {
                    return Err(EvalError::DifferentTokens { base: base_path.clone(), model: path.clone() });
                }
                let r = kl_divergence_from_file(&m.model, &base.logits, m.bos(), opts, &*progress.measurement())?;
                Ok(KldFigures::of(&r))
            };
            let figures: KldFigures = cached(&cache, "kld", &key, false, measure, |f| f)?;
            row.set_candidate(&figures);
        }
        if let Some(run) = &mmlu {
            let key = json!({"model": model_hash, "mmlu": run.key, "device": job.device.name()});
            let measure = || {
                progress.stage(i, n, path, "MMLU");
                let m = model.get()?;
                run.select.evaluate(m, path, &run.data, &run.subjects, opts.n_batch, &*progress.measurement())
            };
            // The cache keeps the whole report; the row takes its overall score.
            let keep = |r: MmluReport| MmluFigures { overall: r.overall };
            let figures: MmluFigures = cached(&cache, "mmlu", &key, false, measure, keep)?;
            row.mmlu = Some(figures.overall);
        }
        rows.push(row);
    }
    label_uniquely(&mut rows);
    let base = rows[0].clone();
    for r in &mut rows {
        r.delta_ppl_percent = if r.is_base { Some(0.0) } else { r.delta_ppl(&base) };
    }
    Ok(Comparison {
        text: job.text.display().to_string(),
        ctx: opts.n_ctx,
        chunks: rows[0].chunks,
        mmlu: mmlu.as_ref().map(MmluRun::describe),
        threads: threads(),
        models: rows,
    })
}

/// The cached entry `kind` for `key` read as `T`, or `measure()` stored and `keep` of it returned; `stale`
/// forces a new measurement, and so does an entry that does not read as `T`.
fn cached<T: DeserializeOwned, W: Serialize>(
    cache: &Cache,
    kind: &str,
    key: &Value,
    stale: bool,
    measure: impl FnOnce() -> Result<W>,
    keep: impl FnOnce(W) -> T,
) -> Result<T> {
    if let Some(v) = cache.get(kind, key).filter(|_| !stale).and_then(|v| T::deserialize(v).ok()) {
        return Ok(v);
    }
    let v = measure()?;
    cache.put(kind, key, &v)?;
    Ok(keep(v))
}

/// What candidates need of the base.
struct BaseContext {
    key: Value,
    logits: PathBuf,
    tokens: Option<String>,
}

/// The MMLU questions every model is asked.
struct MmluRun<'a> {
    data: Dataset,
    subjects: Vec<String>,
    select: &'a MmluSelection,
    key: Value,
}

impl<'a> MmluRun<'a> {
    fn prepare(dir: &Path, select: &'a MmluSelection) -> Result<MmluRun<'a>> {
        let data = Dataset::open(dir)?;
        let subjects = select.subjects_of(&data)?;
        let mut files = Vec::new();
        for s in &subjects {
            let test = dir.join("test").join(format!("{s}_test.csv"));
            let dev = dir.join("dev").join(format!("{s}_dev.csv"));
            let dev_hash = if select.shots > 0 && dev.is_file() { Some(hash_file(&dev)?) } else { None };
            files.push(json!([s, hash_file(&test)?, dev_hash]));
        }
        let key = json!({
            "files": files,
            "shots": select.shots,
            "limit": select.limit,
            "max_tokens": select.max_tokens,
            "chat_template": select.chat_template,
        });
        Ok(MmluRun { data, subjects, select, key })
    }

    fn describe(&self) -> String {
        let select = self.select;
        let what = match (&select.subset, self.subjects.len()) {
            (Some(name), n) => format!("subset {name} ({n} subjects)"),
            (None, 1) => self.subjects[0].clone(),
            (None, n) => format!("{n} subjects"),
        };
        let limit = select.limit.map_or(String::new(), |l| format!(", first {l} per subject"));
        format!("{what}, {}-shot{limit}", select.shots)
    }
}

/// A private temporary directory for the base log-probabilities when nothing is cached.
struct Scratch {
    dir: Option<PathBuf>,
}

impl Scratch {
    fn new(wanted: bool) -> Result<Scratch> {
        if !wanted {
            return Ok(Scratch { dir: None });
        }
        let dir = std::env::temp_dir().join(format!("quantforge-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| EvalError::CreateDir { path: dir.clone(), source })?;
        Ok(Scratch { dir: Some(dir) })
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        match &self.dir {
            Some(d) => Ok(d.join(name)),
            None => Err(EvalError::BadOption { message: "no scratch directory".into() }),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
