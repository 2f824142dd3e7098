//! `quantforge eval`: perplexity and KL divergence of a model on a text, as llama-perplexity defines them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Subcommand;
use quantforge_eval::run::{self, ImatrixFormat, ImatrixJob, KldBase, KldJob, KldRun, PerplexityJob, PerplexityRun};

use crate::eval_args::{CommonArgs, RunArgs};
use crate::progress::Reporter;
use crate::{outln, report};

/// Arguments of `eval`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: EvalCommand,
}

/// What to evaluate.
#[derive(Subcommand)]
pub enum EvalCommand {
    /// Perplexity over a text (llama-perplexity's definition: second half of each chunk scored).
    Perplexity(PerplexityArgs),
    /// KL divergence of MODEL against BASE, chunk by chunk (llama-perplexity --kl-divergence statistics); or
    /// against a base's saved log-probabilities (--base-logits FILE MODEL).
    Kld(KldArgs),
    /// Importance matrix (llama-imatrix): Σx² per input column of every block matrix, for `quantize --imatrix`.
    Imatrix(ImatrixArgs),
    /// MMLU accuracy (original prompt format, answer by the highest log-probability of " A".." D").
    Mmlu(crate::mmlu::MmluArgs),
    /// Size against quality of BASE and CANDIDATE models: PPL, ΔPPL, KLD, same-top, MMLU, tokens/s.
    Compare(crate::compare::CompareArgs),
}

/// Arguments of `eval perplexity`.
#[derive(clap::Args)]
pub struct PerplexityArgs {
    /// GGUF file (any type quantforge can dequantize) or HF model directory.
    pub model: PathBuf,
    /// Also save the model's log-probabilities to FILE in the same pass, as the base of later
    /// `eval kld --base-logits FILE MODEL` runs (llama-perplexity's --kl-divergence-base file).
    #[arg(long, value_name = "FILE")]
    pub save_logits: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `eval kld`: `BASE MODEL --text F`, or `--base-logits FILE MODEL`.
#[derive(clap::Args)]
#[command(override_usage = "quantforge eval kld [OPTIONS] --text <TEXT> <BASE> <MODEL>\n       \
                            quantforge eval kld [OPTIONS] --base-logits <FILE> <MODEL>")]
pub struct KldArgs {
    /// BASE MODEL: the reference model (e.g. the F32 or F16 GGUF, whose tokenizer tokenizes the text) and the
    /// model to compare with it (e.g. a quantization of it). With --base-logits, MODEL only.
    #[arg(value_name = "MODEL", num_args = 1..=2, required = true)]
    pub models: Vec<PathBuf>,
    /// Read the base's log-probabilities, and the tokens, from FILE instead of running a base model (written by
    /// --save-base, `eval perplexity --save-logits` or llama-perplexity --kl-divergence-base).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["text", "save_base"])]
    pub base_logits: Option<PathBuf>,
    /// Also save the base's log-probabilities to FILE, for later --base-logits runs (llama-perplexity's
    /// --kl-divergence-base file).
    #[arg(long, value_name = "FILE")]
    pub save_base: Option<PathBuf>,
    /// The text to evaluate on (UTF-8). Not with --base-logits, whose file holds the tokens.
    #[arg(long, short = 'f', required_unless_present = "base_logits")]
    pub text: Option<PathBuf>,
    /// Tokens per chunk [default: 512; with --base-logits, the file's, which any value given must equal].
    #[arg(long, short = 'c')]
    pub ctx: Option<usize>,
    /// Evaluate at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Print every figure as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `eval imatrix`.
#[derive(clap::Args)]
pub struct ImatrixArgs {
    /// GGUF model (its tensor names key the matrix).
    pub model: PathBuf,
    /// Output file.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// gguf (llama.cpp's current layout) or dat (the legacy one).
    #[arg(long, default_value = "gguf")]
    pub output_format: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Run `eval`.
pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        EvalCommand::Perplexity(a) => run_perplexity(a),
        EvalCommand::Kld(a) => run_kld(a),
        EvalCommand::Imatrix(a) => run_imatrix(a),
        EvalCommand::Mmlu(a) => crate::mmlu::run(a),
        EvalCommand::Compare(a) => crate::compare::run(a),
    }
}

fn run_imatrix(args: &ImatrixArgs) -> Result<()> {
    crate::outputs::imatrix(args)?;
    let c = &args.common;
    let device = c.run.start()?;
    let format = match args.output_format.as_str() {
        "gguf" => ImatrixFormat::Gguf,
        "dat" => ImatrixFormat::Dat,
        other => bail!("--output-format {other}: expected gguf or dat"),
    };
    let job = ImatrixJob {
        model: &args.model,
        text: &c.text,
        output: &args.output,
        format,
        n_ctx: c.ctx,
        n_chunks: c.chunks,
        device,
    };
    let r = run::imatrix(&job, &Reporter::new(c.run.quiet || c.json))?;
    let out = if c.json {
        report::json(&r)?
    } else {
        format!("wrote {} ({} entries, {} chunks of {})\n", r.output.display(), r.entries, r.chunks, r.chunk_size)
    };
    report::emit(&out)?;
    Ok(())
}

fn run_perplexity(args: &PerplexityArgs) -> Result<()> {
    crate::outputs::perplexity(args)?;
    let c = &args.common;
    let device = c.run.start()?;
    let job = PerplexityJob {
        model: &args.model,
        text: &c.text,
        opts: c.options(),
        save_logits: args.save_logits.as_deref(),
        device,
    };
    let r = run::perplexity(&job, &Reporter::new(c.run.quiet || c.json))?;
    report::emit(&if c.json { report::json(&r)? } else { perplexity_text(&r) })?;
    Ok(())
}

fn perplexity_text(run: &PerplexityRun) -> String {
    let (r, device) = (&run.report, run.device);
    let mut o = String::new();
    let running: Vec<String> = r.running_ppl.iter().enumerate().map(|(i, p)| format!("[{}]{p:.4}", i + 1)).collect();
    outln!(o, "{}", running.join(","));
    outln!(o, "tokens      {} ({} chunks of {}, {} scored)", r.n_tokens, r.n_chunks, r.n_ctx, r.n_scored);
    outln!(
        o,
        "speed       {:.1} tokens/s ({:.2} s, {} threads, device {device})",
        run.tokens_per_second,
        r.seconds,
        run.threads
    );
    outln!(o, "Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_uncertainty);
    if let Some(p) = &run.saved_logits {
        outln!(o, "saved the log-probabilities to {}", p.display());
    }
    o
}

fn run_kld(args: &KldArgs) -> Result<()> {
    crate::outputs::kld(args)?;
    let device = args.run.start()?;
    let base = match (&args.base_logits, args.models.as_slice()) {
        (Some(file), [_]) => KldBase::Logits(file),
        (Some(_), _) => {
            bail!("with --base-logits FILE give MODEL only: the base's log-probabilities come from FILE")
        }
        (None, [base, _]) => {
            let Some(text) = &args.text else { bail!("--text is needed to evaluate BASE and MODEL") };
            KldBase::Model { path: base, text, save: args.save_base.as_deref() }
        }
        (None, _) => bail!("give BASE and MODEL (with --text), or --base-logits FILE and MODEL"),
    };
    let model: &Path = args.models.last().map(PathBuf::as_path).unwrap_or(Path::new(""));
    let job = KldJob { base, model, n_ctx: args.ctx, n_chunks: args.chunks, n_batch: args.run.batch, device };
    let r = run::kld(&job, &Reporter::new(args.run.quiet || args.json))?;
    report::emit(&if args.json { report::json(&r)? } else { kld_text(&r) })?;
    Ok(())
}

fn kld_text(run: &KldRun) -> String {
    let (r, device) = (&run.report, run.device);
    let mut o = String::new();
    outln!(o, "chunk  {:>10}  {:>10}  {:>8}", "PPL(Q)", "KLD", "same top");
    for (i, (p, k, s)) in r.running.iter().enumerate() {
        outln!(o, "{:>5}  {p:>10.4}  {k:>10.6}  {:>7.3}%", i + 1, 100.0 * s);
    }
    outln!(o);
    outln!(o, "====== Perplexity statistics ======");
    outln!(o, "Mean PPL(Q)                   : {:10.6} ± {:10.6}", r.ppl.value, r.ppl.uncertainty);
    outln!(o, "Mean PPL(base)                : {:10.6} ± {:10.6}", r.ppl_base.value, r.ppl_base.uncertainty);
    outln!(o, "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%", 100.0 * r.ln_ppl_correlation);
    outln!(o, "Mean ln(PPL(Q)/PPL(base))     : {:10.6} ± {:10.6}", r.ln_ppl_ratio.value, r.ln_ppl_ratio.uncertainty);
    outln!(o);
    outln!(o, "====== KL divergence statistics ======");
    outln!(o, "Mean    KLD: {:10.6} ± {:10.6}", r.kld.value, r.kld.uncertainty);
    for (label, v) in &r.kld_percentiles {
        outln!(o, "{label:<7} KLD: {v:10.6}");
    }
    outln!(o);
    outln!(o, "====== Token probability statistics ======");
    outln!(o, "Mean    Δp: {:7.3} ± {:5.3} %", 100.0 * r.p_diff.value, 100.0 * r.p_diff.uncertainty);
    for (label, v) in &r.p_diff_percentiles {
        outln!(o, "{label:<7} Δp: {:7.3}%", 100.0 * v);
    }
    outln!(o, "RMS Δp    : {:7.3} ± {:5.3} %", 100.0 * r.p_diff_rms.value, 100.0 * r.p_diff_rms.uncertainty);
    outln!(o, "Same top p: {:7.3} ± {:5.3} %", 100.0 * r.same_top.value, 100.0 * r.same_top.uncertainty);
    outln!(o, "({} chunks of {}, {} scored tokens, {:.2} s)", r.n_chunks, r.n_ctx, r.n_scored, r.seconds);
    outln!(
        o,
        "speed      : {:.1} tokens/s (the model's forward passes, {:.2} s, {} threads, device {device})",
        run.tokens_per_second,
        r.forward_seconds,
        run.threads
    );
    if let Some(p) = &run.saved_base {
        outln!(o, "saved the base's log-probabilities to {}", p.display());
    }
    o
}
