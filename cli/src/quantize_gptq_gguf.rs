//! `quantforge quantize MODEL OUT.gguf --type T --method gptq`: llama-quantize's file type and mix, each
//! decoder-block linear layer coded with GPTQ's error feedback over the calibration Hessian. The file has
//! exactly the tensor types and sizes `--type T` gives; only the codes and block scales differ.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use quantforge_eval::intquant::gguf::{gptq_gguf, GgufGptq, GgufGptqJob, GgufLayerReport};
use quantforge_eval::intquant::WindowOptions;
use quantforge_eval::Device;
use quantforge_formats::gguf::GgufValue;
use quantforge_formats::output_guard;
use quantforge_quant::calibrate::CalibrationProgress;
use quantforge_quant::gptq::GptqOptions;
use quantforge_quant::pipeline::{self, ModelSource, QuantizeOptions, QuantizePlan};
use quantforge_quant::GgmlType;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::progress::Reporter;
use crate::quantize::{default_output, open_input, options, summary_json, Args};
use crate::quantize_int::{read_calibration, Lines, MethodArg};
use crate::report;

/// Run `quantize --type T --method gptq`.
pub fn run(args: &Args, ftype: &str, method: MethodArg) -> Result<()> {
    if method != MethodArg::Gptq {
        bail!("--type with --method: only gptq codes GGUF types (without --method, --type is the plain quantizer)");
    }
    let int = &args.int;
    if int.act_order || int.static_groups || int.mse || int.asym || int.sym {
        bail!("--act-order, --static-groups, --mse, --sym and --asym apply to checkpoint outputs, not to GGUF types");
    }
    if !args.lora.is_empty() {
        bail!("--method gptq with --type does not take --lora: merge the adapter first (`convert --lora`)");
    }
    if args.imatrix.is_some() {
        bail!("--method gptq collects its own statistics: drop --imatrix");
    }
    let opts = options(args, ftype)?;
    let text = read_calibration(&int.calib)?;
    let output = args.output.clone().unwrap_or_else(|| default_output(&args.input, ftype));
    if let Some(path) = &int.save_imatrix {
        if output_guard::resolve(path) == output_guard::resolve(&output) {
            bail!("--save-imatrix {}: that is the output model", path.display());
        }
    }
    let settings = GptqSettings {
        calib: text.as_deref(),
        windows: WindowOptions { nsamples: int.nsamples, seqlen: int.seqlen, seed: int.seed },
        damp: int.damp,
        true_sequential: !int.no_true_sequential,
        batch_seqs: int.calib_batch,
    };
    let input = open_input(args)?;
    let input = input.as_ref();
    let started = Instant::now();
    let quiet = args.quiet || args.json;
    let reporter = crate::progress::Reporter::new(quiet);
    let GptqOutput { plan, paths, coded } =
        write_gptq_gguf(&args.input, input, opts, &settings, &output, &Lines { quiet, started }, &reporter)?;
    let windows = settings.windows;
    if let Some(path) = &int.save_imatrix {
        let dataset = int.calib.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",");
        let dataset = if dataset.is_empty() { "built-in".to_string() } else { dataset };
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("dat")) {
            coded.imatrix.write_dat(path, &dataset)?;
        } else {
            coded.imatrix.write_gguf(path, &dataset)?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let text = if args.json {
        let mut j = summary_json(&plan, input);
        j["outputs"] = json!(paths);
        j["seconds"] = json!(secs);
        j["imatrix_output"] = json!(int.save_imatrix);
        j["gptq"] = json!({
            "tokens": coded.tokens,
            "windows": windows,
            "layers": coded.layers,
            "calibration": coded.calibration,
            "seconds": coded.seconds,
        });
        serde_json::to_string_pretty(&j)? + "\n"
    } else {
        summary_text(&coded.layers, &paths, plan.ftype.name(), secs)
    };
    report::emit(&text)?;
    Ok(())
}

/// The GPTQ settings of a GGUF output, as `quantize --type T --method gptq` and pipelines give them.
pub(crate) struct GptqSettings<'a> {
    /// Calibration text; `None` is the bundled text.
    pub calib: Option<&'a str>,
    pub windows: WindowOptions,
    /// Damping, a fraction of the mean Hessian diagonal, in [0, 1).
    pub damp: f32,
    pub true_sequential: bool,
    /// Calibration windows run through a block together (at least 1).
    pub batch_seqs: usize,
}

/// A GGUF written with GPTQ codes.
pub(crate) struct GptqOutput {
    pub plan: QuantizePlan,
    pub paths: Vec<PathBuf>,
    pub coded: GgufGptq,
}

/// Quantize `input` (opened from `model`) to `opts`' file type with every decoder-block linear layer coded by
/// GPTQ, and write `output`. The file records the method, the calibration text's sha256 and the windows.
pub(crate) fn write_gptq_gguf(
    model: &Path,
    input: &dyn ModelSource,
    mut opts: QuantizeOptions,
    s: &GptqSettings<'_>,
    output: &Path,
    calibration: &dyn CalibrationProgress,
    reporter: &Reporter,
) -> Result<GptqOutput> {
    if !(0.0..1.0).contains(&s.damp) {
        bail!("--damp {}: use a fraction in [0, 1)", s.damp);
    }
    opts.calibrated = true;
    let text_hash = s.calib.map_or_else(
        || "built-in".to_string(),
        |t| Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>(),
    );
    opts.overrides.extend([
        ("quantize.method".to_string(), GgufValue::String("gptq".into())),
        ("quantize.gptq.calibration_sha256".to_string(), GgufValue::String(text_hash)),
        ("quantize.gptq.samples".to_string(), GgufValue::U32(s.windows.nsamples as u32)),
        ("quantize.gptq.sequence_length".to_string(), GgufValue::U32(s.windows.seqlen as u32)),
    ]);
    let plan = pipeline::plan(input, &opts)?;
    let types: HashMap<String, GgmlType> =
        plan.tensors.iter().filter(|t| t.quantize).map(|t| (t.name.clone(), t.dst_type)).collect();
    let job = GgufGptqJob {
        model,
        types: &types,
        gptq: GptqOptions { damp_percent: s.damp, ..GptqOptions::default() },
        true_sequential: s.true_sequential,
        calib: s.calib,
        windows: s.windows,
        batch_seqs: s.batch_seqs.max(1),
        device: Device::Cpu,
    };
    let coded = gptq_gguf(&job, calibration)?;
    let paths = pipeline::execute_coded(input, &plan, &opts, output, reporter, &coded.tensors)?;
    Ok(GptqOutput { plan, paths, coded })
}

fn summary_text(layers: &[GgufLayerReport], paths: &[PathBuf], ftype: &str, secs: f64) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut s =
        format!("wrote {} ({ftype}, GPTQ): {} layers calibrated in {secs:.1} s\n", names.join(", "), layers.len());
    let coded: Vec<&GgufLayerReport> = layers.iter().filter(|l| l.method == "gptq").collect();
    if !coded.is_empty() {
        let n = coded.len() as f64;
        let mean = |f: fn(&GgufLayerReport) -> f64| coded.iter().map(|l| f(l)).sum::<f64>() / n;
        let better = coded.iter().filter(|l| l.output_error < l.imatrix_output_error).count();
        s += &format!(
            "relative output error on the calibration inputs: mean {:.5} (imatrix quantizer {:.5}); lower on {better} of {} layers\n",
            mean(|l| l.output_error),
            mean(|l| l.imatrix_output_error),
            coded.len()
        );
    }
    let count = |m: &str| layers.iter().filter(|l| l.method == m).count();
    let plain = count("imatrix");
    if plain > 0 {
        s += &format!("{plain} layers in types without a value grid were quantized with the pass's imatrix\n");
    }
    let unreached = count("unreached");
    if unreached > 0 {
        s += &format!(
            "{unreached} experts no calibration token was routed to were quantized without an imatrix (more \
             calibration text reaches more experts)\n"
        );
    }
    s
}
