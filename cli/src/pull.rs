//! `quantforge pull REPO_ID[@REV]`, and hub repo ids accepted wherever a model directory is: every such argument
//! goes through [`resolve_model`] once, before the command runs, and the command sees a local path.
//!
//! An argument that exists on disk is always the local file or folder; only a missing path that reads as
//! `org/name[@rev]` is taken from the hub.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use quantforge_hub::{DownloadProgress, Filter, Hub, HubConfig, RepoRef};
use serde_json::json;

use crate::eval::EvalCommand;
use crate::{outln, report, Command};

/// Arguments of `pull`.
#[derive(clap::Args)]
pub struct Args {
    /// Hub repo id, `org/name`, optionally `@REVISION` (branch, tag or commit hash).
    pub repo: String,
    /// Take only the repo files matching this glob (repeatable; default: what a conversion reads).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out the repo files matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What a command reads of a model.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Weights, config and tokenizer (what `pull` takes by default).
    Model,
    /// config.json alone (`estimate`, `plan`).
    Config,
}

/// Run `pull`: download into the hub cache and print the snapshot folder.
pub fn run(args: &Args) -> Result<()> {
    let repo = RepoRef::parse(&args.repo)?;
    let filter = Filter::new(&args.include, &args.exclude)?;
    let hub = Hub::new(HubConfig::from_env());
    let progress = Progress::new(args.quiet || args.json);
    let snapshot = hub.snapshot(&repo, &filter, &progress);
    progress.finish();
    let snapshot = snapshot?;
    let mut out = String::new();
    if args.json {
        out = report::json(&json!({"repo": repo.id, "revision": repo.revision, "commit": snapshot.commit,
                                   "snapshot": snapshot.dir, "files": snapshot.files}))?;
    } else {
        outln!(out, "{}", snapshot.dir.display());
    }
    Ok(report::emit(&out)?)
}

/// The local path for a model argument: itself when it exists or is no repo id, else the hub snapshot (or its
/// config.json with [`Need::Config`]). A local folder holding a config.json and no weights is its config.json
/// under [`Need::Config`].
pub fn resolve_model(arg: &Path, need: Need) -> Result<PathBuf> {
    if arg.exists() {
        if need == Need::Config && arg.is_dir() && !has_weights(arg) && arg.join("config.json").is_file() {
            return Ok(arg.join("config.json"));
        }
        return Ok(arg.to_path_buf());
    }
    let Some(repo) = arg.to_str().filter(|s| looks_like_repo(s)).and_then(|s| RepoRef::parse(s).ok()) else {
        return Ok(arg.to_path_buf());
    };
    let hub = Hub::new(HubConfig::from_env());
    let progress = Progress::new(false);
    let fetched = match need {
        Need::Config => hub.file(&repo, "config.json", &progress).map(|config| {
            let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
            if has_weights(&dir) {
                dir
            } else {
                config
            }
        }),
        Need::Model => hub.snapshot(&repo, &Filter::model(), &progress).map(|s| s.dir),
    };
    progress.finish();
    fetched.with_context(|| format!("{}: no such file or folder, and fetching it from the hub failed", arg.display()))
}

/// The hub snapshot of a model repo (what a conversion reads), with its commit: from the cache or downloaded,
/// progress shown unless `quiet`.
pub fn model_snapshot(repo: &RepoRef, quiet: bool) -> Result<quantforge_hub::Snapshot> {
    let hub = Hub::new(HubConfig::from_env());
    let progress = Progress::new(quiet);
    let snapshot = hub.snapshot(repo, &Filter::model(), &progress);
    progress.finish();
    snapshot.with_context(|| format!("{}: fetching it from the hub failed", repo.id))
}

/// Replace every model argument of `command` that is a repo id by its local path.
pub(crate) fn resolve_repo_ids(command: &mut Command) -> Result<()> {
    let model = |p: &mut PathBuf| -> Result<()> {
        *p = resolve_model(p, Need::Model)?;
        Ok(())
    };
    match command {
        Command::Convert(a) => {
            model(&mut a.input)?;
            a.lora_base.as_mut().map(model).transpose()?;
            a.lora.iter_mut().try_for_each(|(p, _)| model(p))?;
        }
        Command::Inspect(a) => model(&mut a.path)?,
        Command::Quantize(a) => {
            model(&mut a.input)?;
            a.lora.iter_mut().try_for_each(|(p, _)| model(p))?;
        }
        Command::Estimate(a) => a.common.model = resolve_model(&a.common.model, Need::Config)?,
        Command::Plan(a) => a.common.model = resolve_model(&a.common.model, Need::Config)?,
        Command::Eval(a) => match &mut a.command {
            EvalCommand::Perplexity(p) => model(&mut p.model)?,
            EvalCommand::Kld(k) => k.models.iter_mut().try_for_each(model)?,
            EvalCommand::Imatrix(i) => model(&mut i.model)?,
            EvalCommand::Mmlu(m) => model(&mut m.model)?,
            EvalCommand::Compare(c) => c.models.iter_mut().try_for_each(model)?,
        },
        Command::MergeLora(a) => {
            model(&mut a.base)?;
            model(&mut a.adapter)?;
        }
        Command::Pull(_) | Command::Run(_) => {}
    }
    Ok(())
}

/// `org/name` or `org/name@rev`, not a path: one `/` before any `@`, no leading `.` or `/`, no model file
/// extension (a missing `dir/model.gguf` stays a missing file).
pub fn looks_like_repo(s: &str) -> bool {
    let id = s.split('@').next().unwrap_or(s);
    let lower = id.to_ascii_lowercase();
    id.matches('/').count() == 1
        && !id.starts_with(['.', '/', '~'])
        && ![".gguf", ".safetensors", ".json", ".dat", ".txt"].iter().any(|e| lower.ends_with(e))
}

/// A folder with safetensors weights.
fn has_weights(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
    })
}

/// Download progress: a bar per file and one overall on a terminal, a line per downloaded file otherwise.
enum Progress {
    Bars { multi: MultiProgress, total: ProgressBar, bars: Mutex<Vec<(String, ProgressBar)>> },
    Lines,
    Quiet,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            return Progress::Lines;
        }
        let multi = MultiProgress::new();
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template("{spinner} total {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        total.enable_steady_tick(Duration::from_millis(200));
        Progress::Bars { multi, total, bars: Mutex::new(Vec::new()) }
    }

    fn finish(&self) {
        if let Progress::Bars { total, .. } = self {
            total.finish_and_clear();
        }
    }
}

impl DownloadProgress for Progress {
    fn start(&self, file: &str, size: Option<u64>) {
        if let Progress::Bars { multi, total, bars } = self {
            let bar = multi.add(ProgressBar::new(size.unwrap_or(0)));
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(file.to_string());
            total.inc_length(size.unwrap_or(0));
            bars.lock().unwrap_or_else(|p| p.into_inner()).push((file.to_string(), bar));
        }
    }

    fn position(&self, file: &str, pos: u64) {
        if let Progress::Bars { total, bars, .. } = self {
            let bars = bars.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, bar)) = bars.iter().find(|(f, _)| f == file) {
                let before = bar.position();
                bar.set_position(pos);
                if pos >= before {
                    total.inc(pos - before);
                } else {
                    total.set_position(total.position().saturating_sub(before - pos));
                }
            }
        }
    }

    fn done(&self, file: &str, downloaded: bool) {
        match self {
            Progress::Bars { multi, bars, .. } => {
                let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = bars.iter().position(|(f, _)| f == file) {
                    let (_, bar) = bars.remove(i);
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
            }
            Progress::Lines if downloaded => eprintln!("downloaded {file}"),
            Progress::Lines | Progress::Quiet => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths() {
        for id in ["org/name", "org/name@main", "org/name@refs/pr/1", "HuggingFaceTB/SmolLM2-135M"] {
            assert!(looks_like_repo(id), "{id}");
        }
        for path in ["dir", "/abs/dir", "./org/name", "a/b/c", "out/model.gguf", "dir/config.json", "~/x"] {
            assert!(!looks_like_repo(path), "{path}");
        }
    }

    #[test]
    fn a_folder_with_config_only_is_its_config_for_estimates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let config = dir.path().join("config.json");
        assert_eq!(resolve_model(dir.path(), Need::Config).unwrap(), config);
        assert_eq!(resolve_model(dir.path(), Need::Model).unwrap(), dir.path());
        std::fs::write(dir.path().join("model.safetensors"), "").unwrap();
        assert_eq!(resolve_model(dir.path(), Need::Config).unwrap(), dir.path());
        // A missing path that is no repo id is left for the command to refuse.
        let missing = dir.path().join("missing");
        assert_eq!(resolve_model(&missing, Need::Model).unwrap(), missing);
    }
}
