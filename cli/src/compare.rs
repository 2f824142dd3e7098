//! `quantforge eval compare BASE CANDIDATE...`: one table of size against quality for several models. The
//! comparison, its cache and its renderings live in `quantforge_eval::compare`; this file parses, calls and
//! reports.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use quantforge_eval::compare::{self, cache::Cache, chart, table, CompareJob, CompareProgress, Metric};
use quantforge_formats::AtomicFile;
use quantforge_quant::progress::Progress;

use crate::eval_args::{CommonArgs, SelectArgs};
use crate::progress::Reporter;
use crate::report;

/// Arguments of `eval compare`.
#[derive(clap::Args)]
pub struct CompareArgs {
    /// The base model (e.g. the F32/F16 GGUF or the HF directory), then the models to compare with it.
    #[arg(required = true, num_args = 2.., value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    /// Text, chunks (perplexity and KL divergence are measured on them), output and run options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// MMLU data directory (test/ and dev/ CSVs): adds MMLU accuracy, selected by the options below.
    #[arg(long, value_name = "DIR")]
    pub mmlu: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
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

/// Run `eval compare`.
pub fn run(args: &CompareArgs) -> Result<()> {
    let c = &args.common;
    let device = c.run.start()?;
    let Some(metric) = Metric::from_name(&args.chart_metric) else {
        bail!("--chart-metric {}: expected kld or ppl", args.chart_metric);
    };
    crate::outputs::compare(args)?;
    let select = args.select.selection();
    let job = CompareJob {
        models: &args.models,
        text: &c.text,
        opts: c.options(),
        device,
        mmlu: args.mmlu.as_deref().map(|dir| (dir, &select)),
        cache: if args.no_cache { None } else { args.cache.clone().or_else(Cache::default_dir) },
    };
    let comparison = compare::compare(&job, &Log { quiet: c.run.quiet || c.json })?;
    if let Some(svg) = &args.svg {
        let mut f = AtomicFile::create(svg)?;
        f.write_all(chart::svg(&comparison, metric).as_bytes())?;
        f.commit()?;
    }
    let out = if c.json {
        report::json(&comparison)?
    } else if args.markdown {
        table::markdown(&comparison)
    } else {
        table::text(&comparison)
    };
    report::emit(&out)?;
    Ok(())
}

/// Progress on stderr: one line per model and stage, and each measurement's own progress.
struct Log {
    quiet: bool,
}

impl CompareProgress for Log {
    fn stage(&self, index: usize, total: usize, path: &Path, what: &str) {
        if !self.quiet {
            eprintln!("[{}/{total}] {}: {what}", index + 1, path.display());
        }
    }

    fn measurement(&self) -> Box<dyn Progress + '_> {
        Box::new(Reporter::new(self.quiet))
    }
}
