//! `quantforge eval mmlu`: MMLU accuracy of a model, per subject, per category and overall.

use std::path::PathBuf;

use anyhow::Result;
use quantforge_eval::mmlu::Score;
use quantforge_eval::run::{self, MmluJob, MmluRun};

use crate::eval_args::{RunArgs, SelectArgs};
use crate::progress::Reporter;
use crate::{outln, report};

/// Arguments of `eval mmlu`.
#[derive(clap::Args)]
pub struct MmluArgs {
    /// GGUF file or HF model directory.
    pub model: PathBuf,
    /// MMLU data directory in the original layout: test/<subject>_test.csv, dev/<subject>_dev.csv.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print every figure as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Run `eval mmlu`.
pub fn run(args: &MmluArgs) -> Result<()> {
    let device = args.run.start()?;
    let select = args.select.selection();
    let job = MmluJob { model: &args.model, data: &args.data, select: &select, n_batch: args.run.batch, device };
    let r = run::mmlu(&job, &Reporter::new(args.run.quiet || args.json))?;
    report::emit(&if args.json { report::json(&r)? } else { report_text(&r) })?;
    Ok(())
}

fn pct(s: &Score) -> String {
    format!("{:6.2}% ± {:5.2}", 100.0 * s.accuracy(), 100.0 * s.stderr())
}

fn report_text(run: &MmluRun) -> String {
    let r = &run.report;
    let mut o = String::new();
    let w = r.subjects.iter().map(|s| s.subject.len()).max().unwrap_or(7).max(7);
    outln!(o, "{:<w$}  {:<15}  {:>5}  {:>15}", "subject", "category", "n", "accuracy ± se");
    for s in &r.subjects {
        let note = if s.min_shots < r.shots { format!("  (down to {} shots)", s.min_shots) } else { String::new() };
        outln!(o, "{:<w$}  {:<15}  {:>5}  {}{note}", s.subject, s.category.name(), s.score.n, pct(&s.score));
    }
    outln!(o);
    for (c, s) in &r.categories {
        outln!(o, "{:<w$}  {:<15}  {:>5}  {}", "", c.name(), s.n, pct(s));
    }
    outln!(o, "{:<w$}  {:<15}  {:>5}  {}", "overall", "", r.overall.n, pct(&r.overall));
    let chat = r.chat_template.map_or(String::new(), |t| format!(", {} chat template", t.name()));
    outln!(
        o,
        "({}-shot{chat}, {} tokens in {:.1} s, {:.0} tokens/s, {} threads)",
        r.shots,
        r.n_tokens,
        r.seconds,
        r.tokens_per_second(),
        run.threads
    );
    o
}
