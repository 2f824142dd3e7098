//! `quantforge quantize MODEL OUT_DIR --method gptq|rtn`: a calibrated integer checkpoint (GPTQ v1/v2, AWQ
//! GEMM or compressed-tensors) that transformers and vLLM load, written atomically as a directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use quantforge_eval::intquant::{
    quantize_int, router_modules, IntQuantJob, IntQuantReport, LayerReport, Method, WindowOptions,
};
use quantforge_eval::Device;
use quantforge_formats::bounded;
use quantforge_formats::hf::HfModel;
use quantforge_formats::safetensors::Dtype;
use quantforge_quant::calibrate::{BlockReport, CalibrationProgress};
use quantforge_quant::checkpoint::{CheckpointFormat, CheckpointSummary, CheckpointWriter, QuantInfo};
use quantforge_quant::gptq::GptqOptions;
use quantforge_quant::intquant::IntScheme;
use serde_json::json;

use crate::report;

/// Calibration windows by default.
pub(crate) const DEFAULT_NSAMPLES: usize = 128;
/// Tokens per calibration window by default.
pub(crate) const DEFAULT_SEQLEN: usize = 2048;
/// GPTQ damping by default.
pub(crate) const DEFAULT_DAMP: f32 = 0.01;
/// Calibration windows run through a block together by default.
pub(crate) const DEFAULT_CALIB_BATCH: usize = 8;

/// The calibrated integer methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    Gptq,
    Awq,
    Rtn,
}

/// Options of `quantize --method`.
#[derive(clap::Args, Debug)]
pub struct IntArgs {
    /// Write a calibrated integer checkpoint directory for transformers/vLLM instead of a GGUF:
    /// gptq, awq, or rtn (round-to-nearest, no calibration). MODEL must be a Hugging Face directory.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Output layout: compressed-tensors (pack-quantized, what vLLM prefers), gptq (v1), gptq_v2 or awq.
    #[arg(long, default_value = "compressed-tensors")]
    pub format: String,
    /// Bits per weight: 2, 3, 4 or 8.
    #[arg(long, default_value_t = 4)]
    pub bits: u8,
    /// Input columns per group: 32, 64, 128, or -1 for one group per row.
    #[arg(long, default_value_t = 128, allow_hyphen_values = true)]
    pub group_size: i64,
    /// Symmetric groups (zero point 2^(bits-1)); the default for gptq and rtn.
    #[arg(long, conflicts_with = "asym")]
    pub sym: bool,
    /// Asymmetric groups (a zero point per group); the default for awq.
    #[arg(long)]
    pub asym: bool,
    /// GPTQ act-order (desc_act): columns by decreasing Hessian diagonal.
    #[arg(long)]
    pub act_order: bool,
    /// With --act-order: group parameters fixed on the original column order (no g_idx at inference).
    #[arg(long)]
    pub static_groups: bool,
    /// Search a shrunk range per group (GPTQ's MSE clipping).
    #[arg(long)]
    pub mse: bool,
    /// GPTQ damping, a fraction of the mean Hessian diagonal; raised by 0.01 while the factorization fails.
    #[arg(long, default_value_t = DEFAULT_DAMP)]
    pub damp: f32,
    /// Collect each block's statistics once instead of input by input (q/k/v, o, gate/up, down).
    #[arg(long)]
    pub no_true_sequential: bool,
    /// Calibration text, plain UTF-8 (repeatable; default: the bundled WikiText-2 text).
    #[arg(long)]
    pub calib: Vec<PathBuf>,
    /// Calibration windows.
    #[arg(long, default_value_t = DEFAULT_NSAMPLES)]
    pub nsamples: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = DEFAULT_SEQLEN)]
    pub seqlen: usize,
    /// Seed of the window positions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Calibration windows run through a block together.
    #[arg(long, default_value_t = DEFAULT_CALIB_BATCH)]
    pub calib_batch: usize,
    /// With --method gptq --type: also write the calibration pass's importance matrix here (llama.cpp's GGUF
    /// imatrix layout; the legacy layout for a `.dat` name), for llama-quantize or `quantize --imatrix`.
    #[arg(long, value_name = "FILE")]
    pub save_imatrix: Option<PathBuf>,
}

/// What `run` needs of the shared `quantize` arguments.
pub struct Common<'a> {
    pub input: &'a Path,
    pub output: Option<&'a Path>,
    pub json: bool,
    pub quiet: bool,
}

/// Run `quantize --method`.
pub fn run(common: &Common<'_>, args: &IntArgs, method: MethodArg) -> Result<()> {
    let started = Instant::now();
    let quiet = common.quiet || common.json;
    let Checkpoint { report, summary, format } = write_checkpoint(common.input, common.output, args, method, quiet)?;
    let secs = started.elapsed().as_secs_f64();
    let text = if common.json {
        let j = json!({ "output": summary, "report": report, "seconds": secs });
        serde_json::to_string_pretty(&j)? + "\n"
    } else {
        summary_text(&report, &summary.out_dir, format, secs)
    };
    report::emit(&text)?;
    Ok(())
}

/// A checkpoint directory written.
pub(crate) struct Checkpoint {
    pub report: IntQuantReport,
    pub summary: CheckpointSummary,
    pub format: CheckpointFormat,
}

/// Check `args`, calibrate the Hugging Face model directory `input` and write its integer checkpoint to
/// `output` (default: beside the input, named after the method and scheme).
pub(crate) fn write_checkpoint(
    input: &Path,
    output: Option<&Path>,
    args: &IntArgs,
    method: MethodArg,
    quiet: bool,
) -> Result<Checkpoint> {
    if !HfModel::is_model_dir(input) {
        bail!(
            "{}: --method needs a Hugging Face model directory (config.json and safetensors); \
             convert a GGUF with `quantforge convert --to hf` first",
            input.display()
        );
    }
    let model = HfModel::open(input)?;
    let format: CheckpointFormat = args.format.parse()?;
    let group_size = match args.group_size {
        -1 => None,
        g if g > 0 => Some(g as usize),
        g => bail!("--group-size {g}: use a positive number of columns or -1"),
    };
    let torch_dtype = model.config().get("torch_dtype").and_then(|v| v.as_str());
    let sym = if method == MethodArg::Awq { args.sym } else { !args.asym };
    let scheme = IntScheme::new(args.bits, group_size, sym, format.scale_dtype(torch_dtype))?;
    if args.static_groups && !args.act_order {
        bail!("--static-groups only changes --act-order; add --act-order or drop it");
    }
    let gptq = GptqOptions {
        damp_percent: args.damp,
        act_order: args.act_order,
        static_groups: args.static_groups,
        mse: args.mse,
        ..GptqOptions::default()
    };
    if !(0.0..1.0).contains(&gptq.damp_percent) {
        bail!("--damp {}: use a fraction in [0, 1)", gptq.damp_percent);
    }
    let (method, name) = match method {
        MethodArg::Gptq => (Method::Gptq, "gptq"),
        MethodArg::Awq => (Method::Awq, "awq"),
        MethodArg::Rtn => (Method::Rtn, "rtn"),
    };
    let mut info = QuantInfo::new(name);
    info.act_order = method == Method::Gptq && args.act_order;
    info.static_groups = method == Method::Gptq && args.static_groups;
    info.damp_percent = f64::from(args.damp);
    info.true_sequential = !args.no_true_sequential;
    info.mse = args.mse;
    let output = match output {
        Some(o) => o.to_path_buf(),
        None => default_output(input, name, &scheme),
    };
    // A calibration file inside OUT_DIR would be destroyed when a previous checkpoint there is replaced.
    let out_abs = std::path::absolute(&output).unwrap_or_else(|_| output.clone());
    for c in &args.calib {
        let c_abs = c.canonicalize().unwrap_or_else(|_| std::path::absolute(c).unwrap_or_else(|_| c.clone()));
        let out_real = out_abs.canonicalize().unwrap_or_else(|_| out_abs.clone());
        if c_abs.starts_with(&out_real) {
            bail!("{}: the calibration text is inside the output directory {}", c.display(), output.display());
        }
    }
    let text = read_calibration(&args.calib)?;
    let job = IntQuantJob {
        model: input,
        method,
        scheme,
        gptq,
        true_sequential: !args.no_true_sequential,
        calib: text.as_deref(),
        windows: WindowOptions { nsamples: args.nsamples, seqlen: args.seqlen, seed: args.seed },
        batch_seqs: args.calib_batch.max(1),
        device: Device::Cpu,
    };
    let started = Instant::now();
    // A mixture of experts' routers stay in float; the loaders are told so.
    let routers = router_modules(input)?;
    if !routers.is_empty() && !scheme.sym && format == CheckpointFormat::CompressedTensors {
        let fix = if method == Method::Awq { "add --sym" } else { "drop --asym" };
        bail!(
            "{}: a mixture of experts is written with symmetric groups only in compressed-tensors (transformers and \
             vLLM load no zero points for experts); {fix}",
            input.display()
        );
    }
    info.not_quantized.extend(routers.iter().cloned());
    let mut writer = CheckpointWriter::create(&output, input, format, scheme, info)?;
    // Every block linear must fit the format's packing: refused now, not after calibrating.
    for (_, t) in model.tensors() {
        if let (Some(module), [rows, cols]) = (t.name.strip_suffix(".weight"), t.shape.as_slice()) {
            if module.contains(".layers.") && !routers.iter().any(|r| r == module) {
                writer.check_shape(module, *rows as usize, *cols as usize)?;
            }
        }
    }
    let lines = Lines { quiet, started };
    let mut sink = |module: &str, q: quantforge_quant::intquant::QuantizedLinear| {
        writer.add_quantized(module, &q).map_err(|e| e.to_string())
    };
    let report = quantize_int(&job, &mut sink, &lines)?;
    let quantized: std::collections::HashSet<String> =
        report.layers.iter().map(|l| format!("{}.weight", l.module)).collect();
    for (file, t) in model.tensors() {
        if quantized.contains(&t.name) {
            continue;
        }
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let changed = report.vectors.iter().find(|(name, _)| *name == t.name);
        let bytes = match changed {
            Some((_, values)) => encode(values, t.dtype).with_context(|| format!("writing the scaled '{}'", t.name))?,
            None => file.data(t).to_vec(),
        };
        writer
            .add_tensor(&t.name, t.dtype, &shape, &bytes)
            .with_context(|| format!("copying tensor '{}' of {}", t.name, file.path().display()))?;
        file.release(t);
    }
    let summary = writer.finish()?;
    Ok(Checkpoint { report, summary, format })
}

/// `values` as little-endian bytes of `dtype` (a float type).
fn encode(values: &[f32], dtype: Dtype) -> Result<Vec<u8>> {
    Ok(match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        other => bail!("a {other:?} norm cannot take scales"),
    })
}

/// `<model dir>-<method>-w<bits>g<group>` beside the model directory.
fn default_output(input: &Path, method: &str, scheme: &IntScheme) -> PathBuf {
    let name = input.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
    let group = scheme.group_size.map_or("-1".to_string(), |g| g.to_string());
    input.with_file_name(format!("{name}-{method}-w{}g{group}", scheme.bits))
}

/// The concatenated calibration files, or `None` for the built-in text.
pub(crate) fn read_calibration(paths: &[PathBuf]) -> Result<Option<String>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let mut text = String::new();
    for p in paths {
        let s = bounded::read_to_string_capped(p, bounded::MAX_TEXT_BYTES, "calibration text")?;
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&s);
    }
    Ok(Some(text))
}

fn summary_text(report: &IntQuantReport, out: &Path, format: CheckpointFormat, secs: f64) -> String {
    let mut s = format!(
        "wrote {} ({format}, {}-bit, group {}, {}): {} layers in {secs:.1} s\n",
        out.display(),
        report.scheme.bits,
        report.scheme.group_size.map_or("-1".into(), |g| g.to_string()),
        if report.scheme.sym { "symmetric" } else { "asymmetric" },
        report.layers.len(),
    );
    let errs: Vec<&LayerReport> = report.layers.iter().filter(|l| l.output_error.is_some()).collect();
    if !errs.is_empty() {
        let mean =
            |f: fn(&LayerReport) -> Option<f64>| errs.iter().filter_map(|l| f(l)).sum::<f64>() / errs.len() as f64;
        let better = errs.iter().filter(|l| l.output_error < l.rtn_output_error).count();
        s += &format!(
            "relative output error on the calibration inputs: mean {:.5} (round-to-nearest {:.5}); lower than RTN on {better} of {} layers\n",
            mean(|l| l.output_error),
            mean(|l| l.rtn_output_error),
            errs.len()
        );
    }
    for l in report.damped_layers() {
        s += &format!(
            "{}: damping raised to {:.2} after {} failed factorizations\n",
            l.module,
            l.damp.unwrap_or(0.0),
            l.damp_retries
        );
    }
    s
}

/// One line per layer and per block on stderr (progress is not the command's output).
pub(crate) struct Lines {
    pub(crate) quiet: bool,
    pub(crate) started: Instant,
}

impl CalibrationProgress for Lines {
    fn layer_done(&self, block: usize, layer: &str, seconds: f64) {
        if !self.quiet {
            eprintln!("[{:7.1} s] block {block} {layer}: {seconds:.2} s", self.started.elapsed().as_secs_f64());
        }
    }

    fn block_done(&self, index: usize, total: usize, r: &BlockReport) {
        if !self.quiet {
            eprintln!(
                "[{:7.1} s] block {}/{total} done: {} tokens, collect {:.1} s, solve {:.1} s, commit {:.1} s",
                self.started.elapsed().as_secs_f64(),
                index + 1,
                r.tokens,
                r.collect_seconds,
                r.solve_seconds,
                r.commit_seconds
            );
        }
    }
}
