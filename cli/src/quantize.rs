//! `quantforge quantize`: a GGUF to any llama.cpp file type, byte-identical to `llama-quantize`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use quantforge_formats::bounded;
use quantforge_formats::gguf::GgufFile;
use quantforge_formats::hf::HfModel;
use quantforge_quant::convert::{ConvertedModel, OutType};
use quantforge_quant::imatrix::Imatrix;
use quantforge_quant::pipeline::{self, ImatrixInput, ModelSource, QuantizeOptions, QuantizePlan};
use quantforge_quant::policy::{parse_ggml_type, parse_tensor_type_option, FileType, QuantOption, TensorPattern};
use serde_json::json;

use crate::progress::Reporter;
use crate::{outln, report};

/// Arguments of `quantize`.
#[derive(clap::Args)]
pub struct Args {
    /// Input GGUF (F32/F16/BF16, or quantized with --allow-requantize), or a Hugging Face model directory.
    pub input: PathBuf,
    /// Output GGUF (with --split-max-size: the name the split files are derived from). Default, as
    /// llama-quantize: `ggml-model-<TYPE>.gguf` beside the input.
    pub output: Option<PathBuf>,
    /// llama.cpp file type, case-insensitive (Q4_K_M, Q8_0, IQ4_XS, F16, ...) or its numeric id.
    #[arg(long = "type", short = 't', required_unless_present = "method")]
    pub ftype: Option<String>,
    /// Importance matrix (llama.cpp GGUF imatrix or legacy .dat).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Use the imatrix only for tensors whose name contains this (repeatable).
    #[arg(long = "include-weights", conflicts_with = "exclude_weights")]
    pub include_weights: Vec<String>,
    /// Do not use the imatrix for tensors whose name contains this (repeatable).
    #[arg(long = "exclude-weights")]
    pub exclude_weights: Vec<String>,
    /// Leave output.weight unquantized.
    #[arg(long)]
    pub leave_output_tensor: bool,
    /// Type of output.weight.
    #[arg(long)]
    pub output_tensor_type: Option<String>,
    /// Type of token_embd.weight.
    #[arg(long)]
    pub token_embedding_type: Option<String>,
    /// PATTERN=TYPE: tensors whose name matches PATTERN get TYPE (repeatable; first match wins).
    #[arg(long = "tensor-type")]
    pub tensor_type: Vec<String>,
    /// A file of PATTERN=TYPE entries separated by whitespace, applied after --tensor-type.
    #[arg(long = "tensor-type-file")]
    pub tensor_type_file: Option<PathBuf>,
    /// KEY=TYPE:VALUE (TYPE int, float, bool or str): set this metadata in the output (repeatable).
    #[arg(long = "override-kv")]
    pub override_kv: Vec<String>,
    /// No K-quant mix: every quantizable tensor gets the type's base type.
    #[arg(long)]
    pub pure: bool,
    /// Allow quantizing tensors that are already quantized.
    #[arg(long)]
    pub allow_requantize: bool,
    /// Print the per-tensor plan, sizes and BPW without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Worker threads (default: all cores). The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Split the output into files of at most this much tensor data (e.g. 2G, 500M).
    #[arg(long, value_parser = parse_size)]
    pub split_max_size: Option<u64>,
    /// For a Hugging Face directory: the precision it is converted to first, as `convert --outtype` (f32, f16,
    /// bf16, q8_0 or auto = bf16 for bf16 checkpoints, else f16). The output equals `convert` then `quantize`.
    #[arg(long, default_value = "auto")]
    pub outtype: String,
    /// For a Hugging Face directory: merge this PEFT LoRA adapter first, DIR or DIR:SCALE (repeatable).
    #[arg(long = "lora", value_parser = crate::convert::parse_lora_arg)]
    pub lora: Vec<(PathBuf, f32)>,
    /// Print a JSON summary (the plan with --dry-run) on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub int: crate::quantize_int::IntArgs,
}

/// `500M`, `2G`, `1.5GiB`, `123` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size '{s}'"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        u => return Err(format!("unknown size unit '{u}' in '{s}'")),
    };
    let v = n * mult;
    if !(v >= 1.0 && v < u64::MAX as f64) {
        return Err(format!("size '{s}' is out of range"));
    }
    Ok(v as u64)
}

/// A file type and its mix choices, as `quantize` takes them (the tensor-type file already read).
pub(crate) struct TypeChoices<'a> {
    pub ftype: &'a str,
    pub pure: bool,
    pub leave_output_tensor: bool,
    pub output_tensor_type: Option<&'a str>,
    pub token_embedding_type: Option<&'a str>,
    /// `PATTERN=TYPE` entries, first match wins.
    pub tensor_types: &'a [String],
}

/// The quantization options for a file type and its mix choices (no imatrix, overrides or splits).
pub(crate) fn type_options(c: &TypeChoices) -> Result<QuantizeOptions> {
    let ftype: FileType = c.ftype.parse()?;
    let mut o = QuantizeOptions::new(ftype);
    o.policy.pure = c.pure;
    o.policy.leave_output_tensor = c.leave_output_tensor;
    o.policy.output_tensor_type = c.output_tensor_type.map(parse_ggml_type).transpose()?;
    o.policy.token_embedding_type = c.token_embedding_type.map(parse_ggml_type).transpose()?;
    for arg in c.tensor_types {
        let (pattern, ty) = parse_tensor_type_option(arg)?;
        o.policy.tensor_types.push((TensorPattern::parse(&pattern)?, ty));
    }
    Ok(o)
}

pub(crate) fn options(args: &Args, ftype: &str) -> Result<QuantizeOptions> {
    // The type is checked before the tensor-type file is read, so a bad type is the error reported.
    ftype.parse::<FileType>()?;
    let mut tensor_types = args.tensor_type.clone();
    if let Some(path) = &args.tensor_type_file {
        let text = bounded::read_to_string_capped(path, bounded::MAX_TENSOR_TYPE_FILE_BYTES, "tensor type file")?;
        tensor_types.extend(text.split_whitespace().map(String::from));
    }
    let mut o = type_options(&TypeChoices {
        ftype,
        pure: args.pure,
        leave_output_tensor: args.leave_output_tensor,
        output_tensor_type: args.output_tensor_type.as_deref(),
        token_embedding_type: args.token_embedding_type.as_deref(),
        tensor_types: &tensor_types,
    })?;
    for arg in &args.override_kv {
        o.overrides.push(pipeline::metadata::parse_override(arg).map_err(anyhow::Error::msg)?);
    }
    o.allow_requantize = args.allow_requantize;
    o.split_max_size = args.split_max_size;
    if let Some(path) = &args.imatrix {
        let mut matrix = Imatrix::load(path)?;
        matrix.filter(&args.include_weights, &args.exclude_weights);
        o.imatrix = Some(ImatrixInput { matrix, file_arg: path.to_string_lossy().into_owned() });
    } else if !args.include_weights.is_empty() || !args.exclude_weights.is_empty() {
        bail!("--include-weights/--exclude-weights need --imatrix");
    }
    Ok(o)
}

pub fn run(args: &Args) -> Result<()> {
    report::set_threads(args.threads)?;
    crate::outputs::quantize(args)?;
    if let (Some(method), Some(ftype)) = (args.int.method, args.ftype.as_deref()) {
        return crate::quantize_gptq_gguf::run(args, ftype, method);
    }
    if let Some(path) = &args.int.save_imatrix {
        bail!("--save-imatrix {}: only `--method gptq --type T` writes an importance matrix", path.display());
    }
    if let Some(method) = args.int.method {
        let common = crate::quantize_int::Common {
            input: &args.input,
            output: args.output.as_deref(),
            json: args.json,
            quiet: args.quiet,
        };
        return crate::quantize_int::run(&common, &args.int, method);
    }
    let ftype = args.ftype.as_deref().context("--type is required")?;
    let opts = options(args, ftype)?;
    let input = open_input(args)?;
    let input = input.as_ref();
    let plan = pipeline::plan(input, &opts)?;
    if args.dry_run {
        return report::emit(&if args.json { plan_json(&plan) } else { plan_text(&plan) }).map_err(Into::into);
    }
    let output = match &args.output {
        Some(o) => o.clone(),
        None => default_output(&args.input, ftype),
    };
    let reporter = Reporter::new(args.quiet || args.json);
    let started = Instant::now();
    let paths = pipeline::execute(input, &plan, &opts, &output, &reporter)?;
    let secs = started.elapsed().as_secs_f64();
    let text = if args.json {
        let mut j = summary_json(&plan, input);
        j["outputs"] = json!(paths);
        j["seconds"] = json!(secs);
        serde_json::to_string_pretty(&j)? + "\n"
    } else {
        summary_text(&plan, input, &paths, secs)
    };
    report::emit(&text)?;
    Ok(())
}

/// The input as a tensor source: a GGUF, or a Hugging Face directory converted on the fly (LoRAs merged).
pub(crate) fn open_input(args: &Args) -> Result<Box<dyn ModelSource>> {
    open_model(&args.input, &args.outtype, &args.lora)
}

/// A GGUF, or a Hugging Face directory converted on the fly at `outtype` with `lora` adapters merged.
pub(crate) fn open_model(input: &Path, outtype: &str, lora: &[(PathBuf, f32)]) -> Result<Box<dyn ModelSource>> {
    Ok(if HfModel::is_model_dir(input) {
        Box::new(ConvertedModel::open(input, OutType::parse(outtype)?)?.with_loras(lora)?)
    } else if !lora.is_empty() {
        bail!(
            "{}: --lora needs a Hugging Face base directory (adapters are merged into full-precision weights)",
            input.display()
        );
    } else {
        Box::new(GgufFile::open(input)?)
    })
}

/// `<input dir>/ggml-model-<TYPE>.gguf` (inside a model directory), TYPE spelled as llama-quantize spells it.
pub(crate) fn default_output(input: &Path, ftype: &str) -> PathBuf {
    let name = QuantOption::parse(ftype).map_or(ftype, |o| o.name);
    let dir = if input.is_dir() { input } else { input.parent().unwrap_or(Path::new(".")) };
    dir.join(format!("ggml-model-{name}.gguf"))
}

pub(crate) fn summary_json(plan: &QuantizePlan, input: &dyn ModelSource) -> serde_json::Value {
    json!({
        "ftype": plan.ftype.name(),
        "input_bytes": input.tensor_bytes_total(),
        "output_bytes": plan.output_bytes(),
        "parameters": plan.n_elements(),
        "bits_per_weight": plan.bits_per_weight(),
        "fallbacks": plan.n_fallback(),
        "splits": plan.n_splits,
    })
}

fn plan_json(plan: &QuantizePlan) -> String {
    let tensors: Vec<_> = plan
        .tensors
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "ne": t.ne, "from": t.src_type.name(), "to": t.dst_type.name(),
                "quantize": t.quantize, "fallback_from": t.fallback_from.map(|f| f.name()),
                "imatrix": t.uses_imatrix, "bytes": t.size, "split": t.split,
            })
        })
        .collect();
    let j = json!({
        "ftype": plan.ftype.name(),
        "output_bytes": plan.output_bytes(),
        "parameters": plan.n_elements(),
        "bits_per_weight": plan.bits_per_weight(),
        "fallbacks": plan.n_fallback(),
        "splits": plan.n_splits,
        "tensors": tensors,
    });
    serde_json::to_string_pretty(&j).unwrap_or_default() + "\n"
}

fn plan_text(plan: &QuantizePlan) -> String {
    let mut o = String::new();
    let w = plan.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    outln!(o, "{:<w$}  {:<22}  {:<8}  {:<8}  {:>12}  note", "tensor", "ne", "from", "to", "bytes");
    for t in &plan.tensors {
        let mut note = Vec::new();
        if let Some(f) = t.fallback_from {
            note.push(format!("fallback from {f}"));
        }
        if t.uses_imatrix {
            note.push("imatrix".into());
        }
        if !t.quantize {
            note.push("copy".into());
        }
        if plan.n_splits > 1 {
            note.push(format!("split {}", t.split + 1));
        }
        outln!(
            o,
            "{:<w$}  {:<22}  {:<8}  {:<8}  {:>12}  {}",
            t.name,
            report::shape(&t.ne),
            t.src_type.name(),
            t.dst_type.name(),
            t.size,
            note.join(", ")
        );
    }
    outln!(o);
    outln!(
        o,
        "{}: {} tensors, quant size = {} ({:.2} BPW), {} fallbacks, {} file(s)",
        plan.ftype.name(),
        plan.tensors.len(),
        report::bytes(plan.output_bytes()),
        plan.bits_per_weight(),
        plan.n_fallback(),
        plan.n_splits
    );
    o
}

fn summary_text(plan: &QuantizePlan, input: &dyn ModelSource, paths: &[PathBuf], secs: f64) -> String {
    let mut o = String::new();
    let names: Vec<String> = paths.iter().map(|p: &PathBuf| Path::display(p).to_string()).collect();
    outln!(o, "wrote {}", names.join(", "));
    outln!(
        o,
        "{}: model size = {}, quant size = {} ({:.2} BPW), {} fallbacks, {:.2} s",
        plan.ftype.name(),
        report::bytes(input.tensor_bytes_total()),
        report::bytes(plan.output_bytes()),
        plan.bits_per_weight(),
        plan.n_fallback(),
        secs
    );
    o
}
