//! `quantforge eval compare BASE CANDIDATE...`: one table of size against quality for several models.
//!
//! The base runs once over the text, writing its 16-bit log-probabilities (llama-perplexity's
//! `--kl-divergence-base` file) into the cache; every candidate then runs once against that file, which
//! gives its perplexity, KL divergence and same-top rate together. MMLU, when asked, runs on every model.
//! Each finished figure is cached under a hash of what it depends on, so an interrupted run picks up where
//! it stopped and a repeated one only measures new models.

mod axis;
pub mod cache;
mod chart;
mod row;
mod table;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use quantforge_eval::mmlu::Dataset;
use quantforge_eval::{kl_divergence_from_file, save_base_logits, Device, LlamaModel, PerplexityOptions, Tokenizer};
use serde_json::{json, Value};

use crate::mmlu::MmluSelection;
use crate::progress::Reporter;
use crate::report;
use cache::{hash_file, hash_model, Cache};
pub use row::Row;

/// Arguments of `eval compare`.
#[derive(clap::Args)]
pub struct CompareArgs {
    /// The base model (e.g. the F32/F16 GGUF or the HF directory), then the models to compare with it.
    #[arg(required = true, num_args = 2.., value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    /// Text, chunks (perplexity and KL divergence are measured on them), output and run options.
    #[command(flatten)]
    pub common: crate::eval::CommonArgs,
    /// MMLU data directory (test/ and dev/ CSVs): adds MMLU accuracy, selected by the options below.
    #[arg(long, value_name = "DIR")]
    pub mmlu: Option<PathBuf>,
    #[command(flatten)]
    pub select: MmluSelection,
    /// Print a Markdown table (for a model card) instead of the terminal table.
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Also write an SVG chart of file size against quality to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// The chart's quality axis: kld or ppl.
    #[arg(long, default_value = "kld")]
    pub chart_metric: String,
    /// Cache directory [default: $QUANTFORGE_CACHE/compare, else ~/.cache/quantforge/compare].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Measure everything again and keep nothing.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
}

/// The chart's quality axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Kld,
    Ppl,
}

/// Run `eval compare`.
pub fn run(args: &CompareArgs) -> Result<()> {
    let c = &args.common;
    let device = c.run.start()?;
    let metric = match args.chart_metric.as_str() {
        "kld" => Metric::Kld,
        "ppl" => Metric::Ppl,
        other => bail!("--chart-metric {other}: expected kld or ppl"),
    };
    let mut inputs: Vec<&Path> = args.models.iter().map(PathBuf::as_path).collect();
    inputs.push(&c.text);
    if let Some(svg) = &args.svg {
        quantforge_formats::check_not_input(svg, &inputs)?;
    }
    for m in &args.models {
        if !m.exists() {
            bail!("{}: no such model file or directory", m.display());
        }
    }
    let scratch = Scratch::new(args.no_cache)?;
    let cache = Cache::new(if args.no_cache { None } else { args.cache.clone().or_else(Cache::default_dir) });
    let mmlu = match &args.mmlu {
        Some(dir) => Some(MmluRun::prepare(dir, &args.select)?),
        None => None,
    };
    let log = Log { quiet: c.run.quiet || c.json, n: args.models.len() };
    let text_hash = hash_file(&c.text)?;
    let opts = PerplexityOptions { n_ctx: c.ctx, n_chunks: c.chunks, n_batch: c.run.batch };
    // Tokens/s depend on the device, so it is part of every key (the figures themselves do not).
    let text_key = json!({"text": text_hash, "ctx": c.ctx, "chunks": c.chunks, "device": device.name()});

    let mut rows = Vec::with_capacity(args.models.len());
    let mut base_ctx: Option<BaseContext> = None;
    for (i, path) in args.models.iter().enumerate() {
        log.line(i, path, "hashing");
        let mut row = Row::describe(path)?;
        let model_hash = hash_model(path)?;
        let mut model = LazyModel { path, device, loaded: None };
        if i == 0 {
            let key = json!({"model": model_hash, "eval": text_key});
            let logits = match cache.artefact("logits", &key, "bin")? {
                Some(p) => p,
                None => scratch.path("base.logits")?,
            };
            let figures = cache.get_or("base", &key, !logits.is_file(), || {
                log.line(i, path, "perplexity (base, writing its log-probabilities)");
                let (model, tok) = model.get()?;
                let tokens = tok.encode(&crate::eval::read_text(&c.text)?, true)?;
                let r = save_base_logits(model, &tokens, tok.bos_if_added(), &opts, &logits, &log.reporter())?;
                Ok(json!({
                    "ppl": r.ppl,
                    "ppl_uncertainty": r.ppl_uncertainty,
                    "tokens_per_second": (r.n_chunks * r.n_ctx) as f64 / r.forward_seconds.max(1e-9),
                    "tokens": token_hash(&tokens),
                    "n_chunks": r.n_chunks,
                }))
            })?;
            row.set_base(&figures);
            base_ctx = Some(BaseContext { key, logits, tokens: figures["tokens"].clone() });
        } else {
            let base = base_ctx.as_ref().context("the base runs first")?;
            let key = json!({"model": model_hash, "base": base.key});
            let figures = cache.get_or("kld", &key, false, || {
                log.line(i, path, "perplexity and KL divergence against the base");
                let (model, tok) = model.get()?;
                if json!(token_hash(&tok.encode(&crate::eval::read_text(&c.text)?, true)?)) != base.tokens {
                    bail!(
                        "{} tokenizes the text differently from {}: they do not share a tokenizer",
                        path.display(),
                        args.models[0].display()
                    );
                }
                let r = kl_divergence_from_file(model, &base.logits, tok.bos_if_added(), &opts, &log.reporter())?;
                Ok(row::kld_figures(&r))
            })?;
            row.set_candidate(&figures);
        }
        if let Some(m) = &mmlu {
            let key = json!({"model": model_hash, "mmlu": m.key, "device": device.name()});
            let figures = cache.get_or("mmlu", &key, false, || {
                log.line(i, path, "MMLU");
                let (model, tok) = model.get()?;
                let r = crate::mmlu::evaluate(
                    model,
                    tok,
                    path,
                    &m.data,
                    &m.subjects,
                    &args.select,
                    c.run.batch,
                    &log.reporter(),
                )?;
                Ok(crate::mmlu::report_json(&r))
            })?;
            row.set_mmlu(&figures);
        }
        rows.push(row);
    }
    row::label_uniquely(&mut rows);
    let setup = table::Setup {
        text: c.text.display().to_string(),
        ctx: c.ctx,
        chunks: rows[0].chunks,
        mmlu: mmlu.as_ref().map(|m| m.describe(&args.select)),
    };
    if let Some(svg) = &args.svg {
        chart::write(svg, &rows, metric, &setup)?;
    }
    let out = if c.json {
        serde_json::to_string_pretty(&table::to_json(&rows, &setup))? + "\n"
    } else if args.markdown {
        table::markdown(&rows, &setup)
    } else {
        table::text(&rows, &setup)
    };
    report::emit(&out)?;
    Ok(())
}

/// A model loaded on first use, at most once.
struct LazyModel<'a> {
    path: &'a Path,
    device: Device,
    loaded: Option<(LlamaModel, Tokenizer)>,
}

impl LazyModel<'_> {
    fn get(&mut self) -> Result<&(LlamaModel, Tokenizer)> {
        if self.loaded.is_none() {
            self.loaded = Some(crate::eval::load_model(self.path, self.device)?);
        }
        self.loaded.as_ref().context("model loaded")
    }
}

/// What candidates need of the base.
struct BaseContext {
    key: Value,
    logits: PathBuf,
    tokens: Value,
}

/// SHA-256 of a token sequence (to check that candidates tokenize the text as the base does).
fn token_hash(tokens: &[u32]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The MMLU questions every model is asked.
struct MmluRun {
    data: Dataset,
    subjects: Vec<String>,
    key: Value,
}

impl MmluRun {
    fn prepare(dir: &Path, select: &MmluSelection) -> Result<MmluRun> {
        let data = Dataset::open(dir)?;
        let subjects = data.select(&select.subjects, select.subset.as_deref())?;
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
        Ok(MmluRun { data, subjects, key })
    }

    fn describe(&self, select: &MmluSelection) -> String {
        let what = match (&select.subset, self.subjects.len()) {
            (Some(name), n) => format!("subset {name} ({n} subjects)"),
            (None, 1) => self.subjects[0].clone(),
            (None, n) => format!("{n} subjects"),
        };
        let limit = select.limit.map_or(String::new(), |l| format!(", first {l} per subject"));
        format!("{what}, {}-shot{limit}", select.shots)
    }
}

/// Progress lines on stderr, one per model and stage.
struct Log {
    quiet: bool,
    n: usize,
}

impl Log {
    /// Progress of one measurement.
    fn reporter(&self) -> Reporter {
        Reporter::new(self.quiet)
    }

    fn line(&self, i: usize, path: &Path, what: &str) {
        if !self.quiet {
            eprintln!("[{}/{}] {}: {what}", i + 1, self.n, path.display());
        }
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
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch { dir: Some(dir) })
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.dir.as_ref().context("no scratch directory")?.join(name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
