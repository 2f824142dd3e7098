//! `quantforge merge-lora`: a PEFT LoRA adapter merged into its Hugging Face base model, written as a new HF
//! directory (ready for `convert` and `quantize`). Parses, calls [`merge_lora`], reports.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use quantforge_quant::lora::{merge_lora, MergeOptions, OutDtype};
use serde_json::json;

use crate::progress::Reporter;
use crate::report;

/// Arguments of `merge-lora`.
#[derive(clap::Args)]
pub struct Args {
    /// The full-precision Hugging Face base model directory (config.json + safetensors).
    pub base: PathBuf,
    /// The PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
    pub adapter: PathBuf,
    /// Output directory (must not exist, or be empty); written atomically.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Dtype of the output tensors: bf16, f16 or f32 (default: each base tensor's own dtype).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Multiply the adapter's effect by this factor (1 = as trained).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub scale: f32,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: &Args) -> Result<()> {
    report::set_threads(args.threads)?;
    crate::outputs::merge_lora(args)?;
    let dtype = match args.dtype.as_deref() {
        None => None,
        Some(s) => match OutDtype::parse(s) {
            Some(d) => Some(d),
            None => bail!("--dtype {s} is not supported (use bf16, f16 or f32)"),
        },
    };
    if !args.scale.is_finite() {
        bail!("--scale must be a finite number");
    }
    let reporter = Reporter::new(args.quiet || args.json);
    let started = Instant::now();
    let opts = MergeOptions { dtype, scale: args.scale };
    let s = merge_lora(&args.base, &args.adapter, &args.output, &opts, &reporter)?;
    let secs = started.elapsed().as_secs_f64();
    let text = if args.json {
        let j = json!({"base": args.base, "adapter": args.adapter, "output": args.output,
                       "dtype": dtype.map(OutDtype::name), "scale": args.scale,
                       "tensors": s.tensors, "merged": s.merged, "replaced": s.replaced, "dora": s.dora,
                       "tensor_bytes": s.bytes, "seconds": secs});
        serde_json::to_string_pretty(&j)? + "\n"
    } else {
        format!(
            "wrote {} ({} tensors, {} merged, {} replaced) in {secs:.2} s\n",
            args.output.display(),
            s.tensors,
            s.merged,
            s.replaced
        )
    };
    report::emit(&text)?;
    Ok(())
}
