//! `quantforge eval mmlu`: MMLU accuracy of a model, per subject, per category and overall.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use quantforge_eval::mmlu::{self, ChatTemplate, Dataset, MmluOptions, MmluReport, Score};
use quantforge_eval::{LlamaModel, Tokenizer};
use quantforge_quant::progress::Progress;
use serde_json::{json, Value};

use crate::progress::Reporter;
use crate::{outln, report};

/// Which MMLU questions to ask, and how.
#[derive(clap::Args, Clone, Debug)]
pub struct MmluSelection {
    /// Comma-separated subjects (file names without `_test.csv`).
    #[arg(long, value_delimiter = ',')]
    pub subjects: Vec<String>,
    /// A named subset: quick10 (10 subjects, 1,041 questions), stem, humanities, social_sciences, other, all.
    #[arg(long)]
    pub subset: Option<String>,
    /// Dev examples before each question (0-5).
    #[arg(long, default_value_t = 5)]
    pub shots: usize,
    /// At most this many questions per subject (the first ones of each test file).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Longest prompt in tokens; examples are dropped from longer ones.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Put each prompt in a chat template: auto (the model's own, recognised), chatml, llama3, llama2.
    /// Without it prompts are plain text, as in the original benchmark.
    #[arg(long)]
    pub chat_template: Option<String>,
}

/// Arguments of `eval mmlu`.
#[derive(clap::Args)]
pub struct MmluArgs {
    /// GGUF file or HF model directory.
    pub model: PathBuf,
    /// MMLU data directory in the original layout: test/<subject>_test.csv, dev/<subject>_dev.csv.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub select: MmluSelection,
    /// Print every figure as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: crate::eval::RunArgs,
}

/// Run `eval mmlu`.
pub fn run(args: &MmluArgs) -> Result<()> {
    let device = args.run.start()?;
    let data = Dataset::open(&args.data)?;
    let subjects = data.select(&args.select.subjects, args.select.subset.as_deref())?;
    let (model, tokenizer) = crate::eval::load_model(&args.model, device)?;
    let reporter = Reporter::new(args.run.quiet || args.json);
    let r = evaluate(&model, &tokenizer, &args.model, &data, &subjects, &args.select, args.run.batch, &reporter)?;
    let out = if args.json {
        let mut j = report_json(&r);
        j["model"] = json!(args.model.display().to_string());
        j["data"] = json!(args.data.display().to_string());
        j["threads"] = json!(rayon::current_num_threads());
        j["device"] = json!(device.name());
        serde_json::to_string_pretty(&j)? + "\n"
    } else {
        report_text(&r)
    };
    report::emit(&out)?;
    Ok(())
}

/// Run the selected questions on a loaded model.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &LlamaModel,
    tokenizer: &Tokenizer,
    path: &Path,
    data: &Dataset,
    subjects: &[String],
    select: &MmluSelection,
    n_batch: usize,
    progress: &dyn Progress,
) -> Result<MmluReport> {
    let chat = match select.chat_template.as_deref() {
        None => None,
        Some("auto") => {
            let t = tokenizer.chat_template().with_context(|| format!("{} has no chat template", path.display()))?;
            Some(ChatTemplate::detect(t).with_context(|| {
                format!(
                    "{}: the model's chat template is not one of {}; name one with --chat-template",
                    path.display(),
                    ChatTemplate::NAMES
                )
            })?)
        }
        Some(name) => Some(
            ChatTemplate::from_name(name)
                .with_context(|| format!("--chat-template {name}: expected auto or one of {}", ChatTemplate::NAMES))?,
        ),
    };
    let opts = MmluOptions { shots: select.shots, limit: select.limit, max_tokens: select.max_tokens, n_batch, chat };
    Ok(mmlu::evaluate(model, tokenizer, data, subjects, &opts, progress)?)
}

fn score_json(s: &Score) -> Value {
    json!({"n": s.n, "correct": s.correct, "accuracy": s.accuracy(), "stderr": s.stderr()})
}

/// Every figure of a run.
pub fn report_json(r: &MmluReport) -> Value {
    let subjects: Vec<Value> = r
        .subjects
        .iter()
        .map(|s| {
            let mut j = score_json(&s.score);
            j["subject"] = json!(s.subject);
            j["category"] = json!(s.category.name());
            j["min_shots"] = json!(s.min_shots);
            j["truncated"] = json!(s.truncated);
            j
        })
        .collect();
    let categories: serde_json::Map<String, Value> =
        r.categories.iter().map(|(c, s)| (c.name().to_string(), score_json(s))).collect();
    json!({
        "shots": r.shots,
        "chat_template": r.chat_template.map(ChatTemplate::name),
        "overall": score_json(&r.overall),
        "categories": categories,
        "subjects": subjects,
        "n_tokens": r.n_tokens,
        "seconds": r.seconds,
        "tokens_per_second": r.n_tokens as f64 / r.seconds.max(1e-9),
    })
}

fn pct(s: &Score) -> String {
    format!("{:6.2}% ± {:5.2}", 100.0 * s.accuracy(), 100.0 * s.stderr())
}

fn report_text(r: &MmluReport) -> String {
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
        r.n_tokens as f64 / r.seconds.max(1e-9),
        rayon::current_num_threads()
    );
    o
}
