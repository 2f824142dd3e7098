//! `quantforge eval`: perplexity and KL divergence of a model on a text, as llama-perplexity defines them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use quantforge_eval::{
    kl_divergence, kl_divergence_from_file, kl_divergence_save_base, perplexity, save_base_logits, Device, Estimate,
    KldReport, LlamaModel, LogitsReader, PerplexityOptions, PerplexityReport, Tokenizer,
};
use serde_json::json;

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

/// Where the forward pass runs its weight matrix products (every `eval` subcommand).
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where the weight matrix products run: cpu (the gemm crate), burn-cpu (burn's pure-Rust CPU backend;
    /// builds with --features burn-cpu) or wgpu (burn's GPU backend; builds with --features burn-wgpu).
    /// Attention and the element-wise operations stay on the CPU.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "burn-cpu", "wgpu"])]
    pub device: String,
}

impl DeviceArgs {
    /// The device asked for, or an error naming the cargo feature a build needs for it.
    pub fn device(&self) -> Result<Device> {
        self.device.parse::<Device>().map_err(|e| anyhow!("--device {}: {e}", self.device))
    }
}

/// How any evaluation runs: pass size, threads, device, progress.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Tokens per forward pass (several chunks or prompts are evaluated together). Results do not depend on it.
    #[arg(long, short = 'b', default_value_t = 2048)]
    pub batch: usize,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl RunArgs {
    /// Size the thread pool and check the device before any work.
    pub fn start(&self) -> Result<Device> {
        crate::report::set_threads(self.threads)?;
        self.device.device()
    }
}

/// Options every evaluation of a text shares.
#[derive(clap::Args)]
pub struct CommonArgs {
    /// The text to evaluate on (UTF-8).
    #[arg(long, short = 'f')]
    pub text: PathBuf,
    /// Tokens per chunk.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Print every figure as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunArgs,
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
    let c = &args.common;
    let device = c.run.start()?;
    if args.model.is_dir() {
        bail!(
            "{}: imatrix needs a GGUF model (its tensor names key the matrix); convert it first",
            args.model.display()
        );
    }
    let dat = match args.output_format.as_str() {
        "gguf" => false,
        "dat" => true,
        other => bail!("--output-format {other}: expected gguf or dat"),
    };
    quantforge_formats::check_not_input(&args.output, &[&args.model, &c.text])?;
    let text = read_text(&c.text)?;
    let (model, tokenizer, tokens, _) = load(&args.model, &text, device)?;
    let reporter = Reporter::new(c.run.quiet || c.json);
    let collected =
        quantforge_eval::imatrix::collect(&model, &tokens, tokenizer.bos_if_added(), c.ctx, c.chunks, &reporter)?;
    let dataset = c.text.display().to_string();
    if dat {
        collected.write_dat(&args.output, &dataset)?;
    } else {
        collected.write_gguf(&args.output, &dataset)?;
    }
    let out = if c.json {
        serde_json::to_string_pretty(&json!({
            "output": args.output.display().to_string(),
            "entries": collected.entries.len(),
            "chunks": collected.chunk_count,
            "chunk_size": collected.chunk_size,
        }))? + "\n"
    } else {
        format!(
            "wrote {} ({} entries, {} chunks of {})\n",
            args.output.display(),
            collected.entries.len(),
            collected.chunk_count,
            collected.chunk_size
        )
    };
    report::emit(&out)?;
    Ok(())
}

/// Load a model and its tokenizer onto `device`, and tokenize `text` as llama.cpp does (`add_special = true`).
fn load(path: &Path, text: &str, device: Device) -> Result<(LlamaModel, Tokenizer, Vec<u32>, f64)> {
    let t0 = Instant::now();
    let (model, tokenizer) = load_model(path, device)?;
    let tokens = tokenizer.encode(text, true)?;
    Ok((model, tokenizer, tokens, t0.elapsed().as_secs_f64()))
}

/// Load a model and its tokenizer, checking they agree on the vocabulary size; the model's matrix products
/// will run on `device`.
pub(crate) fn load_model(path: &Path, device: Device) -> Result<(LlamaModel, Tokenizer)> {
    let mut model = LlamaModel::load(path).with_context(|| format!("loading {}", path.display()))?;
    model.set_device(device).map_err(|e| anyhow!("--device {device}: {e}"))?;
    let tokenizer = Tokenizer::load(path).with_context(|| format!("reading the tokenizer of {}", path.display()))?;
    if tokenizer.n_vocab() != model.config().n_vocab {
        bail!(
            "{}: the tokenizer has {} tokens but the model's embedding has {} rows",
            path.display(),
            tokenizer.n_vocab(),
            model.config().n_vocab
        );
    }
    Ok((model, tokenizer))
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

fn run_perplexity(args: &PerplexityArgs) -> Result<()> {
    let c = &args.common;
    let device = c.run.start()?;
    if let Some(out) = &args.save_logits {
        quantforge_formats::check_not_input(out, &[&args.model, &c.text])?;
    }
    let text = read_text(&c.text)?;
    let (model, tokenizer, tokens, load_s) = load(&args.model, &text, device)?;
    let opts = PerplexityOptions { n_ctx: c.ctx, n_chunks: c.chunks, n_batch: c.run.batch };
    let reporter = Reporter::new(c.run.quiet || c.json);
    let bos = tokenizer.bos_if_added();
    let r = match &args.save_logits {
        Some(out) => save_base_logits(&model, &tokens, bos, &opts, out, &reporter)?,
        None => perplexity(&model, &tokens, bos, &opts, &reporter)?,
    };
    let saved = args.save_logits.as_deref();
    let out = if c.json {
        perplexity_json(&args.model, &c.text, &r, load_s, saved, device)
    } else {
        perplexity_text(&r, saved, device)
    };
    report::emit(&out)?;
    Ok(())
}

/// A path for JSON output, `null` when absent.
fn path_json(p: Option<&Path>) -> serde_json::Value {
    p.map_or(serde_json::Value::Null, |p| json!(p.display().to_string()))
}

fn perplexity_json(
    model: &Path,
    text: &Path,
    r: &PerplexityReport,
    load_s: f64,
    saved: Option<&Path>,
    device: Device,
) -> String {
    let j = json!({
        "model": model.display().to_string(),
        "text": text.display().to_string(),
        "saved_logits": path_json(saved),
        "n_tokens": r.n_tokens,
        "n_ctx": r.n_ctx,
        "n_chunks": r.n_chunks,
        "n_scored": r.n_scored,
        "ppl": r.ppl,
        "ppl_uncertainty": r.ppl_uncertainty,
        "mean_nll": r.mean_nll,
        "running_ppl": r.running_ppl,
        "seconds": r.seconds,
        "forward_seconds": r.forward_seconds,
        "load_seconds": load_s,
        "tokens_per_second": r.tokens_per_second(),
        "threads": rayon::current_num_threads(),
        "device": device.name(),
    });
    serde_json::to_string_pretty(&j).unwrap_or_default() + "\n"
}

fn perplexity_text(r: &PerplexityReport, saved: Option<&Path>, device: Device) -> String {
    let mut o = String::new();
    let running: Vec<String> = r.running_ppl.iter().enumerate().map(|(i, p)| format!("[{}]{p:.4}", i + 1)).collect();
    outln!(o, "{}", running.join(","));
    outln!(o, "tokens      {} ({} chunks of {}, {} scored)", r.n_tokens, r.n_chunks, r.n_ctx, r.n_scored);
    outln!(
        o,
        "speed       {:.1} tokens/s ({:.2} s, {} threads, device {device})",
        r.tokens_per_second(),
        r.seconds,
        rayon::current_num_threads()
    );
    outln!(o, "Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_uncertainty);
    if let Some(p) = saved {
        outln!(o, "saved the log-probabilities to {}", p.display());
    }
    o
}

fn run_kld(args: &KldArgs) -> Result<()> {
    let device = args.run.start()?;
    let opts = |n_ctx: usize| PerplexityOptions { n_ctx, n_chunks: args.chunks, n_batch: args.run.batch };
    let reporter = Reporter::new(args.run.quiet || args.json);
    let (r, inputs) = match (&args.base_logits, args.models.as_slice()) {
        (Some(file), [model_path]) => {
            // The file's header first: a bad file is reported before the model loads.
            let file_ctx = LogitsReader::open(file)?.n_ctx();
            let n_ctx = args.ctx.unwrap_or(file_ctx);
            let (model, tokenizer) = load_model(model_path, device)?;
            let r = kl_divergence_from_file(&model, file, tokenizer.bos_if_added(), &opts(n_ctx), &reporter)?;
            (r, KldInputs { base: None, base_logits: Some(file), model: model_path, text: None })
        }
        (Some(_), _) => {
            bail!("with --base-logits FILE give MODEL only: the base's log-probabilities come from FILE")
        }
        (None, [base_path, model_path]) => {
            let Some(text_path) = &args.text else { bail!("--text is needed to evaluate BASE and MODEL") };
            if let Some(out) = &args.save_base {
                quantforge_formats::check_not_input(out, &[base_path, model_path, text_path])?;
            }
            let text = read_text(text_path)?;
            let (base, tokenizer, tokens, _) = load(base_path, &text, device)?;
            let (model, _, model_tokens, _) = load(model_path, &text, device)?;
            if model_tokens != tokens {
                bail!(
                    "{} and {} tokenize the text differently: they do not share a tokenizer",
                    base_path.display(),
                    model_path.display()
                );
            }
            let opts = opts(args.ctx.unwrap_or(512));
            let bos = tokenizer.bos_if_added();
            let r = match &args.save_base {
                Some(out) => kl_divergence_save_base(&base, &model, &tokens, bos, &opts, out, &reporter)?,
                None => kl_divergence(&base, &model, &tokens, bos, &opts, &reporter)?,
            };
            (r, KldInputs { base: Some(base_path), base_logits: None, model: model_path, text: Some(text_path) })
        }
        (None, _) => bail!("give BASE and MODEL (with --text), or --base-logits FILE and MODEL"),
    };
    let saved = args.save_base.as_deref();
    report::emit(&if args.json { kld_json(&inputs, saved, &r, device) } else { kld_text(&r, saved, device) })?;
    Ok(())
}

/// What a KLD run read.
struct KldInputs<'a> {
    base: Option<&'a Path>,
    base_logits: Option<&'a Path>,
    model: &'a Path,
    text: Option<&'a Path>,
}

fn est(e: &Estimate) -> serde_json::Value {
    json!({"value": e.value, "uncertainty": e.uncertainty})
}

fn kld_json(inputs: &KldInputs, saved: Option<&Path>, r: &KldReport, device: Device) -> String {
    let pct = |v: &[(String, f64)]| v.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>();
    let j = json!({
        "base": path_json(inputs.base),
        "base_logits": path_json(inputs.base_logits),
        "model": inputs.model.display().to_string(),
        "text": path_json(inputs.text),
        "saved_base": path_json(saved),
        "n_ctx": r.n_ctx,
        "n_chunks": r.n_chunks,
        "n_scored": r.n_scored,
        "ppl": est(&r.ppl),
        "ppl_base": est(&r.ppl_base),
        "ln_ppl_correlation": r.ln_ppl_correlation,
        "ln_ppl_ratio": est(&r.ln_ppl_ratio),
        "kld": est(&r.kld),
        "kld_percentiles": pct(&r.kld_percentiles),
        "p_diff": est(&r.p_diff),
        "p_diff_percentiles": pct(&r.p_diff_percentiles),
        "p_diff_rms": est(&r.p_diff_rms),
        "same_top": est(&r.same_top),
        "running": r.running.iter().map(|(p, k, s)| json!({"ppl": p, "kld": k, "same_top": s})).collect::<Vec<_>>(),
        "seconds": r.seconds,
        "forward_seconds": r.forward_seconds,
        "tokens_per_second": r.tokens_per_second(),
        "threads": rayon::current_num_threads(),
        "device": device.name(),
    });
    serde_json::to_string_pretty(&j).unwrap_or_default() + "\n"
}

fn kld_text(r: &KldReport, saved: Option<&Path>, device: Device) -> String {
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
        r.tokens_per_second(),
        r.forward_seconds,
        rayon::current_num_threads()
    );
    if let Some(p) = saved {
        outln!(o, "saved the base's log-probabilities to {}", p.display());
    }
    o
}
