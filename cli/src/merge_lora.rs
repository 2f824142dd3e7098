//! `quantforge merge-lora`: a PEFT LoRA adapter merged into its Hugging Face base model, written as a new HF
//! directory (ready for `convert` and `quantize`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use quantforge_quant::lora::{export_gguf, merge_lora, MergeOptions, OutDtype};
use quantforge_quant::GgmlType;
use serde_json::json;

use crate::convert;
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
                       "dtype": dtype.map(|d| format!("{d:?}").to_lowercase()), "scale": args.scale,
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

/// `convert ADAPTER_DIR --lora-base BASE_DIR -o adapter.gguf`: a PEFT adapter as a GGUF LoRA adapter.
pub fn run_export(args: &convert::Args, base: &Path) -> Result<()> {
    report::set_threads(args.threads)?;
    if args.to == Some(convert::Target::Hf) {
        bail!("--lora-base writes a GGUF adapter; --to hf does not apply");
    }
    let outtype = match args.outtype.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("f32") => GgmlType::F32,
        Some("f16") => GgmlType::F16,
        Some("bf16") => GgmlType::BF16,
        Some("q8_0") => GgmlType::Q8_0,
        Some(other) => bail!("--outtype {other} is not supported for LoRA adapters (use f32, f16, bf16 or q8_0)"),
    };
    let reporter = Reporter::new(args.quiet || args.json);
    let started = Instant::now();
    let s = export_gguf(&args.input, base, &args.output, outtype, &reporter)?;
    let secs = started.elapsed().as_secs_f64();
    let text = if args.json {
        let j = json!({"input": args.input, "lora_base": base, "output": args.output, "to": "gguf-lora",
                       "architecture": s.architecture, "alpha": s.alpha, "modules": s.modules,
                       "tensors": 2 * s.modules, "rescaled_modules": s.rescaled,
                       "outtype": outtype.name(), "tensor_bytes": s.bytes, "seconds": secs});
        serde_json::to_string_pretty(&j)? + "\n"
    } else {
        format!(
            "wrote {} (LoRA adapter, {} tensors, alpha {}) in {secs:.2} s\n",
            args.output.display(),
            2 * s.modules,
            s.alpha
        )
    };
    report::emit(&text)?;
    Ok(())
}

/// `--lora DIR[:SCALE]`: an adapter directory and a user scale (default 1). The scale is taken from the text
/// after the last ':' only when that text is a number, so directories containing ':' still work.
pub fn parse_lora_arg(s: &str) -> Result<(PathBuf, f32), String> {
    if let Some((dir, scale)) = s.rsplit_once(':') {
        if let Ok(v) = scale.parse::<f32>() {
            if !v.is_finite() {
                return Err(format!("--lora '{s}': the scale must be a finite number"));
            }
            return Ok((PathBuf::from(dir), v));
        }
    }
    Ok((PathBuf::from(s), 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_args() {
        assert_eq!(parse_lora_arg("ad").unwrap(), (PathBuf::from("ad"), 1.0));
        assert_eq!(parse_lora_arg("ad:0.5").unwrap(), (PathBuf::from("ad"), 0.5));
        assert_eq!(parse_lora_arg("c:/x:y").unwrap(), (PathBuf::from("c:/x:y"), 1.0));
        assert!(parse_lora_arg("ad:inf").is_err());
    }
}
