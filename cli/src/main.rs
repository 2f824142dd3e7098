//! The `quantforge` binary: parses arguments, calls the libraries, reports, and maps errors to exit codes.

mod inspect;
mod progress;
mod quantize;
mod report;

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
    /// Show metadata, tensors and totals of a GGUF file, a safetensors file or a HF model directory.
    Inspect(inspect::Args),
    /// Quantize a GGUF to any llama.cpp file type (byte-identical to llama-quantize).
    Quantize(Box<quantize::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Quantize(args) => quantize::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
