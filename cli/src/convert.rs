//! `quantforge convert`: a Hugging Face safetensors directory to GGUF as llama.cpp's converter writes it,
//! or (`--to hf`) a GGUF back to a Hugging Face directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use quantforge_formats::gguf::GgufFile;
use quantforge_quant::convert::to_hf::{gguf_to_hf, HfDtype};
use quantforge_quant::convert::{ConvertedModel, OutType};
use serde_json::json;

use crate::progress::Reporter;
use crate::report;

/// Output format of `convert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Gguf,
    Hf,
}

/// Arguments of `convert`.
#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer files), or a GGUF with --to hf.
    pub input: PathBuf,
    /// Output GGUF file, or output directory with --to hf.
    #[arg(long, short)]
    pub output: PathBuf,
    /// What to write: gguf (default for a directory) or hf (default for a .gguf file).
    #[arg(long, value_enum)]
    pub to: Option<Target>,
    /// Tensor type: f32, f16, bf16, q8_0 or auto for GGUF (default f16, as llama.cpp); f32, f16 or bf16 for
    /// HF safetensors (default f32, which holds dequantized values exactly).
    #[arg(long)]
    pub outtype: Option<String>,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// INPUT is a PEFT LoRA adapter for this HF base model: write a GGUF LoRA adapter for llama.cpp's --lora.
    #[arg(long, value_name = "BASE_DIR")]
    pub lora_base: Option<PathBuf>,
    /// Merge this PEFT LoRA adapter into the weights while converting: DIR or DIR:SCALE (repeatable, applied in
    /// order; SCALE multiplies the adapter's own alpha/r, default 1).
    #[arg(long = "lora", value_parser = crate::merge_lora::parse_lora_arg)]
    pub lora: Vec<(PathBuf, f32)>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if let Some(base) = &args.lora_base {
        return crate::merge_lora::run_export(args, base);
    }
    report::set_threads(args.threads)?;
    let target = args.to.unwrap_or(if args.input.is_dir() { Target::Gguf } else { Target::Hf });
    let reporter = Reporter::new(args.quiet || args.json);
    let started = Instant::now();
    let summary = match target {
        Target::Gguf => {
            if !args.input.is_dir() {
                bail!("{}: --to gguf needs a Hugging Face model directory", args.input.display());
            }
            let outtype = OutType::parse(args.outtype.as_deref().unwrap_or("f16"))?;
            let model = ConvertedModel::open(&args.input, outtype)?.with_loras(&args.lora)?;
            let bytes = model.write_gguf(&args.output, &reporter, None)?;
            json!({"input": args.input, "output": args.output, "to": "gguf",
                   "architecture": model.arch.gguf_name, "outtype": format!("{:?}", model.outtype).to_lowercase(),
                   "tensors": model.tensors.len(), "metadata_keys": model.metadata.len(), "tensor_bytes": bytes})
        }
        Target::Hf => {
            if args.input.is_dir() {
                bail!("{}: --to hf needs a GGUF file", args.input.display());
            }
            if !args.lora.is_empty() {
                bail!("--lora applies to Hugging Face input; use `merge-lora` for HF output");
            }
            let dtype = HfDtype::parse(args.outtype.as_deref().unwrap_or("f32"))?;
            let gguf = GgufFile::open(&args.input)?;
            gguf_to_hf(&gguf, &args.output, dtype, &reporter)?;
            json!({"input": args.input, "output": args.output, "to": "hf",
                   "dtype": format!("{dtype:?}").to_lowercase(), "tensors": gguf.tensors().len()})
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let text = if args.json {
        let mut j = summary;
        j["seconds"] = json!(secs);
        serde_json::to_string_pretty(&j)? + "\n"
    } else {
        format!("wrote {} ({} tensors) in {secs:.2} s\n", args.output.display(), summary["tensors"])
    };
    report::emit(&text)?;
    Ok(())
}
