//! The `quantforge` binary: parses arguments, calls the libraries, reports, and maps errors to exit codes.

mod compare;
mod convert;
mod estimate;
mod eval;
mod eval_args;
mod inspect;
mod merge_lora;
mod mmlu;
mod outputs;
mod progress;
mod pull;
mod quantize;
mod quantize_gptq_gguf;
mod quantize_int;
mod report;
mod run;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Hugging Face models to quantized GGUF, and what the quantization cost.
#[derive(Parser)]
#[command(name = "quantforge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face safetensors directory to GGUF (as llama.cpp's converter), or a GGUF back to HF.
    Convert(convert::Args),
    /// Show metadata, tensors and totals of a GGUF file, a safetensors file or a HF model directory.
    Inspect(inspect::Args),
    /// Quantize a GGUF to any llama.cpp file type (byte-identical to llama-quantize).
    Quantize(Box<quantize::Args>),
    /// Memory (weights, KV cache, compute) and decode-speed bound per quantization type and context.
    Estimate(Box<estimate::EstimateArgs>),
    /// Rank the quantization types that fit a memory budget.
    Plan(Box<estimate::PlanArgs>),
    /// Evaluate a model: perplexity, KL divergence against a base model.
    Eval(eval::Args),
    /// Merge a PEFT LoRA adapter into its Hugging Face base model, writing a new HF directory.
    MergeLora(Box<merge_lora::Args>),
    /// Download a model from the Hugging Face hub into its cache (REPO_ID[@REVISION]); print the snapshot folder.
    Pull(pull::Args),
    /// Run a pipeline file: quantize a source to several GGUFs, evaluate, gate, and write manifest and card.
    Run(Box<run::Args>),
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    signals::install();
    if let Err(e) = pull::resolve_repo_ids(&mut cli.command) {
        eprintln!("error: {}", error_text(&e));
        return ExitCode::from(1);
    }
    let result = match cli.command {
        Command::Convert(args) => convert::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::Estimate(args) => estimate::run_estimate(&args),
        Command::Plan(args) => estimate::run_plan(&args),
        Command::Eval(args) => eval::run(&args),
        Command::MergeLora(args) => merge_lora::run(&args),
        Command::Pull(args) => pull::run(&args),
        Command::Run(args) => run::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, each cause shown only if the text so far does not already include it (library
/// errors often print their source inline).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}
