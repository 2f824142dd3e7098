//! `quantforge run PIPELINE.toml`: a declarative pipeline from one source model to published GGUF artifacts with
//! quality gates, a hash manifest, a model card and Ollama Modelfiles; `--plan`/`--unit`/`--gather` split it
//! over machines, `--explain` prints it, `--init` writes a starter.
//!
//! Invariant: paths in the pipeline are relative to its file; the run works in that folder, so nothing written
//! depends on where the command was started or on absolute paths.

mod card;
mod chart;
mod checkpoint;
mod events;
mod execute;
mod explain;
mod hash;
mod init;
mod manifest;
mod modelfile;
mod plan;
pub mod schema;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use quantforge_formats::bounded;
use serde_json::json;

use crate::report;
use events::Events;

/// Arguments of `run`.
#[derive(clap::Args)]
pub struct Args {
    /// The pipeline file (TOML).
    #[arg(required_unless_present = "init")]
    pub pipeline: Option<PathBuf>,
    /// Output folder: artifacts, manifest.json, README.md, Modelfiles [default: `out` beside the pipeline].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Redo every step, even those whose inputs are unchanged.
    #[arg(long)]
    pub force: bool,
    /// Print the steps the pipeline would take, and do nothing.
    #[arg(long, conflicts_with_all = ["plan", "unit", "gather", "init"])]
    pub explain: bool,
    /// Print the independent work units as JSON (content keys, what each needs), and do nothing.
    #[arg(long, conflicts_with_all = ["unit", "gather", "init"])]
    pub plan: bool,
    /// Run work unit N of --plan (and any unit it needs that is not done in the output folder).
    #[arg(long, value_name = "N", conflicts_with_all = ["gather", "init"])]
    pub unit: Option<usize>,
    /// Merge the finished units in the output folder into the manifest, card and Modelfiles; check the gates.
    #[arg(long, conflicts_with = "init")]
    pub gather: bool,
    /// Write a commented starter pipeline for SOURCE (hub repo id or model folder) to -o FILE.
    #[arg(long, value_name = "SOURCE", requires = "output")]
    pub init: Option<String>,
    /// The starter pipeline file --init writes.
    #[arg(long, short, requires = "init")]
    pub output: Option<PathBuf>,
    /// For --init: the calibration and evaluation text [default: a bundled TinyStories sample, written as
    /// calibration.txt beside the pipeline].
    #[arg(long, requires = "init")]
    pub text: Option<PathBuf>,
    /// Worker threads (default: all cores). The outputs do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON event per line on stdout instead of step lines on stderr.
    #[arg(long)]
    pub json: bool,
    /// No step lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Run `run`.
pub fn run(args: &Args) -> Result<()> {
    if let (Some(source), Some(output)) = (&args.init, &args.output) {
        return init::write(source, output, args.text.as_deref());
    }
    let Some(file) = &args.pipeline else { bail!("give the pipeline file") };
    report::set_threads(args.threads)?;
    crate::outputs::pipeline_file(file)?;
    let text = bounded::read_to_string_capped(file, 1 << 20, "pipeline file")?;
    let pipeline = schema::parse(file, &text)?;
    if args.explain {
        return Ok(report::emit(&explain::explain(&pipeline, file))?);
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let out = match &args.out {
        Some(o) => absolute(o)?,
        None => absolute(&dir.join("out"))?,
    };
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let pipeline_path = absolute(file)?;
    std::env::set_current_dir(&dir).with_context(|| format!("{}: cannot enter the folder", dir.display()))?;
    let events = Events { json: args.json, quiet: args.quiet };
    let ctx = plan::resolve(pipeline, file_name, text, out, args.quiet || args.json)?;
    let (files, dirs) = artifact_paths(&ctx);
    let mut inputs = ctx.inputs();
    inputs.push(&pipeline_path);
    crate::outputs::pipeline(&inputs, &ctx.out, &files, &dirs)?;
    if args.plan {
        return Ok(report::emit(&report::json(&plan_json(&ctx))?)?);
    }
    std::fs::create_dir_all(&ctx.out).with_context(|| format!("{}: cannot create", ctx.out.display()))?;
    if let Some(n) = args.unit {
        if n >= ctx.units.len() {
            bail!("--unit {n}: the pipeline's units are numbered 0 to {} (see --plan)", ctx.units.len() - 1);
        }
        ctx.ensure(n, args.force, &events)?;
        return Ok(());
    }
    if !args.gather {
        for i in 0..ctx.units.len() {
            ctx.ensure(i, args.force, &events)?;
        }
    }
    manifest::gather(&ctx, &events)
}

/// Every file, and every checkpoint directory, a run may write in the output folder.
fn artifact_paths(ctx: &plan::Context) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut dirs = Vec::new();
    let mut v: Vec<PathBuf> =
        ["manifest.json", "README.md", "chart.svg", ctx.imatrix_file()].iter().map(|f| ctx.out.join(f)).collect();
    for u in &ctx.units {
        match (u.kind, u.ftype) {
            (plan::Kind::Output(_), Some(_)) => {
                v.push(ctx.out.join(format!("{}.gguf", u.name)));
                v.push(ctx.out.join(format!("{}.Modelfile", u.name)));
            }
            (plan::Kind::Output(_), None) => dirs.push(ctx.out.join(&u.name)),
            _ => {}
        }
    }
    (v, dirs)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) })
}

/// `--plan`: the units, their keys and needs, and the stage each can run in.
fn plan_json(ctx: &plan::Context) -> serde_json::Value {
    let units: Vec<serde_json::Value> = ctx
        .units
        .iter()
        .enumerate()
        .map(|(i, u)| {
            json!({"index": i, "name": u.name, "key": u.key, "needs": u.needs, "stage": ctx.stage(i),
                   "done": ctx.done(i).is_some()})
        })
        .collect();
    json!({"pipeline": ctx.file_name, "units": units})
}
