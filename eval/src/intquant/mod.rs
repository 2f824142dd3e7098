//! Calibrated integer quantization of a Hugging Face model (GPTQ, or round-to-nearest as its baseline):
//! calibration windows from text, the model run block by block through [`BlockCalibrator`], every linear
//! layer of a block solved from its inputs' `XᵀX` with the earlier blocks (and, true-sequentially, the
//! earlier layers of the block) already quantized, each result handed to a sink under its HF module name
//! with its rows in HF order. A mixture of experts' experts are layers of their own (their HF per-expert
//! modules); its routers are never quantized ([`router_modules`]).
//!
//! Invariants: one decoder block's weights are resident at a time (plus the hidden states of the calibration
//! tokens); the layers reach the sink in forward order, block after block; the per-layer report measures
//! `‖(W − Ŵ)Xᵀ‖ / ‖WXᵀ‖` on the same calibration inputs the solver saw, for the method and for
//! round-to-nearest, so every figure is comparable.

mod awq;
pub mod gguf;
mod solver;
pub mod windows;

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use quantforge_formats::arch::{self, Transform};
use quantforge_quant::calibrate::{
    calibrate_blocks, calibrate_with, split_expert_slice, CalibrateOptions, CalibrationProgress, CalibrationReport,
};
use quantforge_quant::gptq::GptqOptions;
use quantforge_quant::intquant::{rtn, IntScheme, QuantizedLinear};
use quantforge_quant::permute::rope_unpermute;
use serde::Serialize;

use crate::blocks::ModelFile;
use crate::calibration::BlockCalibrator;
use crate::config::LlamaConfig;
use crate::device::Device;
use crate::error::{EvalError, Result};
use crate::tokenizer::Tokenizer;
pub use windows::{default_text, sample_windows, WindowOptions};

/// The quantization method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Round-to-nearest per group: no calibration.
    Rtn,
    /// GPTQ with error feedback from the calibration Hessian.
    Gptq,
    /// AWQ: activation-aware input scales folded into the norms, clipping, AWQ's rounding.
    Awq,
}

/// What to quantize and how.
#[derive(Clone, Debug)]
pub struct IntQuantJob<'a> {
    /// A Hugging Face model directory.
    pub model: &'a Path,
    pub method: Method,
    pub scheme: IntScheme,
    pub gptq: GptqOptions,
    pub true_sequential: bool,
    /// Calibration text; `None` is [`default_text`].
    pub calib: Option<&'a str>,
    pub windows: WindowOptions,
    /// Calibration sequences run together through a block.
    pub batch_seqs: usize,
    pub device: Device,
}

/// One quantized layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// Tensor name in GGUF naming (`blk.3.attn_q.weight`).
    pub name: String,
    /// HF module (`model.layers.3.self_attn.q_proj`).
    pub module: String,
    pub rows: usize,
    pub cols: usize,
    pub seconds: f64,
    /// `‖(W − Ŵ)Xᵀ‖² / ‖WXᵀ‖²` on the calibration inputs (GPTQ only).
    pub output_error: Option<f64>,
    /// The same for round-to-nearest with the same scheme.
    pub rtn_output_error: Option<f64>,
    /// Damping used, and how many increases it took (GPTQ only).
    pub damp: Option<f32>,
    pub damp_retries: u32,
    pub dead_columns: usize,
    /// Calibration tokens the layer's statistics came from (an expert: those routed to it; 0 for
    /// round-to-nearest, and for an expert no token reached, which is rounded to nearest).
    pub tokens: u64,
}

impl LayerReport {
    /// A layer quantized without GPTQ's figures (round-to-nearest, AWQ): name, HF module, shape, time and the
    /// calibration tokens its statistics came from.
    pub(crate) fn plain(name: &str, module: String, shape: (usize, usize), seconds: f64, tokens: u64) -> Self {
        LayerReport {
            name: name.to_string(),
            module,
            rows: shape.0,
            cols: shape.1,
            seconds,
            output_error: None,
            rtn_output_error: None,
            damp: None,
            damp_retries: 0,
            dead_columns: 0,
            tokens,
        }
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct IntQuantReport {
    pub method: Method,
    pub scheme: IntScheme,
    pub gptq: Option<GptqOptions>,
    pub true_sequential: bool,
    pub windows: Option<WindowOptions>,
    /// Calibration tokens per block.
    pub tokens: u64,
    pub layers: Vec<LayerReport>,
    pub calibration: Option<CalibrationReport>,
    pub seconds: f64,
    /// Float tensors the method changed (AWQ's scaled norms and routers): HF tensor name and new values, to be
    /// written in place of the source's.
    #[serde(skip)]
    pub vectors: Vec<(String, Vec<f32>)>,
}

impl IntQuantReport {
    /// Layers whose factorization needed more damping than asked.
    pub fn damped_layers(&self) -> impl Iterator<Item = &LayerReport> {
        self.layers.iter().filter(|l| l.damp_retries > 0)
    }
}

/// Receives each quantized layer: its HF module name and the layer with rows in HF order.
pub type LayerSink<'a> = dyn FnMut(&str, QuantizedLinear) -> std::result::Result<(), String> + Send + 'a;

/// Quantize every decoder-block linear layer of `job.model`, handing each to `sink` in forward order.
pub fn quantize_int(
    job: &IntQuantJob<'_>,
    sink: &mut LayerSink<'_>,
    progress: &dyn CalibrationProgress,
) -> Result<IntQuantReport> {
    let t0 = Instant::now();
    if !job.model.is_dir() {
        return Err(EvalError::Calibration(format!(
            "{}: --method needs a Hugging Face model directory (convert a GGUF with `convert --to hf` first)",
            job.model.display()
        )));
    }
    let model = ModelFile::open(job.model)?;
    let cfg = model.config().clone();
    if job.method == Method::Awq && !cfg.arch.forward.pre_norms {
        return Err(EvalError::AwqWithoutPreNorms { path: job.model.into(), arch: cfg.arch.gguf_name });
    }
    check_scheme(&model, &job.scheme)?;
    let mut report = IntQuantReport {
        method: job.method,
        scheme: job.scheme,
        gptq: (job.method == Method::Gptq).then_some(job.gptq),
        true_sequential: job.true_sequential,
        windows: None,
        tokens: 0,
        layers: Vec::new(),
        calibration: None,
        seconds: 0.0,
        vectors: Vec::new(),
    };
    let hf = |name: &str, q: QuantizedLinear| to_hf(&cfg, name, q);
    match job.method {
        Method::Rtn => {
            for b in 0..cfg.n_layer {
                let block = model.load_block(b)?;
                for name in block.linear_names().into_iter().filter(|n| !arch::is_router(n)) {
                    let t = Instant::now();
                    let (rows, cols, w) = block.weight_f32(name)?;
                    let q = rtn(name, &w, rows, cols, job.scheme).map_err(|e| EvalError::Calibration(e.to_string()))?;
                    let (module, q) = hf(name, q)?;
                    sink(&module, q).map_err(EvalError::Calibration)?;
                    let seconds = t.elapsed().as_secs_f64();
                    progress.layer_done(b, name, seconds);
                    report.layers.push(LayerReport::plain(name, module, (rows, cols), seconds, 0));
                }
            }
        }
        Method::Gptq | Method::Awq => {
            let tokenizer = Tokenizer::from_hf_dir(job.model)?;
            let text: &str = match job.calib {
                Some(t) => t,
                None => default_text(),
            };
            let tokens = tokenizer.encode(text, false)?;
            let seqs = sample_windows(&tokens, &job.windows)?;
            report.windows = Some(job.windows);
            let mut source = BlockCalibrator::new(&model, &seqs, job.batch_seqs, job.device)?;
            let sink = Mutex::new(sink);
            let emit = |name: &str, q: QuantizedLinear| -> std::result::Result<String, String> {
                let (module, q) = hf(name, q).map_err(|e| e.to_string())?;
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                (*s)(&module, q)?;
                Ok(module)
            };
            let cal = if job.method == Method::Gptq {
                let solver = solver::GptqSolver::new(job.scheme, job.gptq, &emit);
                let opts = CalibrateOptions { true_sequential: job.true_sequential };
                let cal = calibrate_with(&mut source, &solver, progress, &opts)?;
                report.layers = solver.into_reports();
                cal
            } else {
                let solver = awq::AwqSolver::new(job.scheme, &emit);
                let (cal, vectors) = calibrate_blocks(&mut source, &solver, progress)?;
                let (layers, routers) = solver.into_parts();
                report.layers = layers;
                for (name, values) in vectors.into_iter().chain(routers) {
                    report.vectors.push(hf_vector(&cfg, &name, values)?);
                }
                cal
            };
            report.tokens = cal.blocks.first().map_or(0, |b| b.tokens);
            report.calibration = Some(cal);
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The HF modules of `model`'s routers (`mlp.gate`, `mlp.shared_expert_gate`): kept in float, never
/// quantized, so a checkpoint's loaders must be told to leave them alone. Empty for a dense model.
pub fn router_modules(model: &Path) -> Result<Vec<String>> {
    let file = ModelFile::open(model)?;
    let cfg = file.config();
    let mut out = Vec::new();
    for b in 0..cfg.n_layer {
        for short in arch::ROUTERS {
            if let Some((rule, bid)) = cfg.arch.rule_for_gguf(&format!("blk.{b}.{short}.weight")) {
                let hf = arch::fill(rule.hf, bid);
                out.push(hf.strip_suffix(".weight").unwrap_or(&hf).to_string());
            }
        }
    }
    Ok(out)
}

/// Refuse a scheme whose groups do not divide some layer's input width, before any work.
fn check_scheme(model: &ModelFile, scheme: &IntScheme) -> Result<()> {
    let block = model.load_block(0)?;
    for name in block.linear_names().into_iter().filter(|n| !arch::is_router(n)) {
        let (_, cols, _) = block.weight_f32(name)?;
        scheme.check_layer(name, cols).map_err(|e| EvalError::Calibration(e.to_string()))?;
    }
    Ok(())
}

/// The HF name of GGUF tensor `name` kept in float but changed by the method (a norm weight, a router) and
/// `values` as HF stores them: Gemma's zero-centred norms get their + 1 back off.
fn hf_vector(cfg: &LlamaConfig, name: &str, mut values: Vec<f32>) -> Result<(String, Vec<f32>)> {
    let (rule, bid) = cfg.arch.rule_for_gguf(name).ok_or_else(|| {
        EvalError::Calibration(format!("tensor '{name}' has no Hugging Face name in the {} rules", cfg.arch.gguf_name))
    })?;
    if rule.transform == Transform::NormShift {
        values.iter_mut().for_each(|v| *v -= 1.0);
    }
    Ok((arch::fill(rule.hf, bid), values))
}

/// The HF module of GGUF weight `name` (or of one expert of a stacked tensor, [`split_expert_slice`]), and
/// the layer with its rows back in HF order (the evaluator holds Q/K rows in llama.cpp's RoPE layout).
fn to_hf(cfg: &LlamaConfig, name: &str, q: QuantizedLinear) -> Result<(String, QuantizedLinear)> {
    let (stacked, expert) = split_expert_slice(name);
    let (rule, bid) = cfg.arch.rule_for_gguf(stacked).ok_or_else(|| {
        EvalError::Calibration(format!("tensor '{name}' has no Hugging Face name in the {} rules", cfg.arch.gguf_name))
    })?;
    let hf = match expert {
        Some(e) => arch::fill_expert(rule.hf, bid, e as u32),
        None => arch::fill(rule.hf, bid),
    };
    let module = hf.strip_suffix(".weight").unwrap_or(&hf).to_string();
    let heads = match rule.transform {
        Transform::None | Transform::NormShift => None,
        Transform::RopePermuteQ => Some(cfg.n_head),
        Transform::RopePermuteK => Some(cfg.n_head_kv),
    };
    let q = match heads {
        Some(h) => {
            let rows: Vec<usize> = (0..q.rows).collect();
            q.permute_rows(&rope_unpermute(&rows, q.rows, h, 1))
        }
        None => q,
    };
    Ok((module, q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_gemma_norms_go_back_zero_centred() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs/gemma2");
        let cfg = ModelFile::open(&dir).unwrap().config().clone();
        let (name, v) = hf_vector(&cfg, "blk.1.ffn_norm.weight", vec![1.25, 0.5]).unwrap();
        assert_eq!((name.as_str(), v), ("model.layers.1.pre_feedforward_layernorm.weight", vec![0.25, -0.5]));
        let stories = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/stories260K");
        let cfg = ModelFile::open(&stories).unwrap().config().clone();
        assert_eq!(hf_vector(&cfg, "blk.0.attn_norm.weight", vec![1.25]).unwrap().1, [1.25]);
    }
}
