//! `quantforge convert`: a Hugging Face safetensors directory to GGUF as llama.cpp's converter writes it,
//! or (`--to hf`) a GGUF back to a Hugging Face directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use quantforge_formats::gguf::GgufFile;
use quantforge_quant::convert::to_hf::{gguf_to_hf, parse_hf_dtype};
use quantforge_quant::convert::{ConvertedModel, OutType};
use quantforge_quant::lora::export_gguf;
use quantforge_quant::GgmlType;
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
    #[arg(long = "lora", value_parser = parse_lora_arg)]
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
        return run_export(args, base);
    }
    report::set_threads(args.threads)?;
    let target = args.to.unwrap_or(if args.input.is_dir() { Target::Gguf } else { Target::Hf });
    crate::outputs::convert(args, target == Target::Hf)?;
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
            let dtype = parse_hf_dtype(args.outtype.as_deref().unwrap_or("f32"))?;
            let gguf = GgufFile::open(&args.input)?;
            gguf_to_hf(&gguf, &args.output, dtype, &reporter)?;
            json!({"input": args.input, "output": args.output, "to": "hf",
                   "dtype": dtype.name(), "tensors": gguf.tensors().len()})
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

/// `convert ADAPTER_DIR --lora-base BASE_DIR -o adapter.gguf`: a PEFT adapter as a GGUF LoRA adapter.
fn run_export(args: &Args, base: &Path) -> Result<()> {
    report::set_threads(args.threads)?;
    crate::outputs::convert(args, false)?;
    if args.to == Some(Target::Hf) {
        bail!("--lora-base writes a GGUF adapter; --to hf does not apply");
    }
    // llama.cpp's adapter converter defaults to f32; `auto` has no meaning for an adapter.
    let outtype = match args.outtype.as_deref().map(|s| (s, OutType::parse(s))) {
        None => GgmlType::F32,
        Some((_, Ok(o))) if o != OutType::Auto => o.ggml_type(),
        Some((other, _)) => bail!(
            "--outtype {} is not supported for LoRA adapters (use f32, f16, bf16 or q8_0)",
            other.to_ascii_lowercase()
        ),
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
