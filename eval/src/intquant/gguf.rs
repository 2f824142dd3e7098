//! GPTQ into GGUF types: every decoder-block linear layer that the file type's mix quantizes is coded in its
//! llama.cpp type with GPTQ's error feedback ([`gptq_ggml`]), from the calibration Hessian of its inputs with
//! the earlier blocks (and, true-sequentially, the earlier layers of the block) already quantized. The type's
//! quantizer is weighted by the diagonal of the same statistics (the importance matrix the pass implies).
//!
//! Invariants: the bytes of each layer are a valid tensor of the type the plan gives it (same size as
//! llama-quantize's); a layer whose type cannot be coded value by value (the grid IQ types), or whose width is
//! not a whole number of its blocks, gets the type's own quantizer with that importance matrix, so the values
//! the later blocks are calibrated on are always those the file holds. Layers the plan leaves unquantized are
//! not touched (a mixture of experts' routers among them). Each expert of a stacked `ffn_*_exps` tensor is
//! coded as a layer of its own from the rows routed to it, and the slices are joined in expert order; an
//! expert no calibration row reached gets the type's quantizer without an importance matrix.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use quantforge_quant::calibrate::{
    calibrate_with, split_expert_slice, CalibrateOptions, CalibrationProgress, CalibrationReport, InputStats,
    LayerSolver, LinearWeight, StatsKind,
};
use quantforge_quant::codecs::quantize_rows;
use quantforge_quant::dequant::dequantize_row;
use quantforge_quant::gptq::grid::Grid;
use quantforge_quant::gptq::{gptq_ggml, output_errors, GptqOptions};
use quantforge_quant::GgmlType;
use serde::Serialize;

use super::{default_text, sample_windows, WindowOptions};
use crate::blocks::ModelFile;
use crate::calibration::BlockCalibrator;
use crate::device::Device;
use crate::error::Result;
use crate::imatrix::{Collected, Stats};
use crate::tokenizer::Tokenizer;

/// What to calibrate and how.
#[derive(Clone, Debug)]
pub struct GgufGptqJob<'a> {
    /// A GGUF (F32/F16/BF16) or a Hugging Face model directory.
    pub model: &'a std::path::Path,
    /// The type of each tensor the plan quantizes (GGUF names).
    pub types: &'a HashMap<String, GgmlType>,
    pub gptq: GptqOptions,
    pub true_sequential: bool,
    /// Calibration text; `None` is [`default_text`].
    pub calib: Option<&'a str>,
    pub windows: WindowOptions,
    pub batch_seqs: usize,
    pub device: Device,
}

/// How one layer was coded.
#[derive(Clone, Debug, Serialize)]
pub struct GgufLayerReport {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub rows: usize,
    pub cols: usize,
    /// `gptq`; `imatrix` where the type cannot be coded value by value; `unreached` for an expert no
    /// calibration token was routed to (the type's quantizer without an importance matrix).
    pub method: &'static str,
    pub seconds: f64,
    /// `‖(W − Ŵ)Xᵀ‖² / ‖WXᵀ‖²` on the calibration inputs.
    pub output_error: f64,
    /// The same for the type's quantizer with the pass's importance matrix.
    pub imatrix_output_error: f64,
    pub damp: Option<f32>,
    pub damp_retries: u32,
    pub dead_columns: usize,
}

/// The coded layers and the run's report.
#[derive(Debug)]
pub struct GgufGptq {
    /// Tensor bytes by GGUF name.
    pub tensors: HashMap<String, Vec<u8>>,
    pub layers: Vec<GgufLayerReport>,
    pub calibration: CalibrationReport,
    /// Calibration tokens per block.
    pub tokens: u64,
    pub seconds: f64,
    /// The importance matrix of the pass (Σ x² per input column of every decoder-block linear layer, over the
    /// inputs its layer was calibrated on), one chunk per calibration window: what `--save-imatrix` writes.
    pub imatrix: Collected,
}

/// Calibrate `job.model` and code every planned decoder-block linear layer.
pub fn gptq_gguf(job: &GgufGptqJob<'_>, progress: &dyn CalibrationProgress) -> Result<GgufGptq> {
    let t0 = Instant::now();
    let model = ModelFile::open(job.model)?;
    let tokenizer = Tokenizer::load(job.model)?;
    let text: &str = match job.calib {
        Some(t) => t,
        None => default_text(),
    };
    let tokens = tokenizer.encode(text, false)?;
    let seqs = sample_windows(&tokens, &job.windows)?;
    let mut source = BlockCalibrator::new(&model, &seqs, job.batch_seqs, job.device)?;
    let solver = GgmlSolver { job, out: Mutex::new(Solved::default()) };
    let opts = CalibrateOptions { true_sequential: job.true_sequential };
    let calibration = calibrate_with(&mut source, &solver, progress, &opts)?;
    let solved = solver.out.into_inner().unwrap_or_else(|e| e.into_inner());
    let tokens = calibration.blocks.first().map_or(0, |b| b.tokens);
    let imatrix = Collected {
        entries: stack_stats(solved.stats),
        chunk_count: seqs.len() as u32,
        chunk_size: seqs.first().map_or(0, |s| s.len() as u32),
    };
    Ok(GgufGptq {
        tensors: stack_tensors(solved.tensors)?,
        layers: solved.layers,
        calibration,
        tokens,
        seconds: t0.elapsed().as_secs_f64(),
        imatrix,
    })
}

/// Entries by name split into those of whole tensors and, per stacked tensor, those of its expert slices
/// (`blk.N.ffn_up_exps.weight[e]`) by expert.
type Split<V> = (Vec<(String, V)>, BTreeMap<String, BTreeMap<usize, V>>);

fn split_slices<V>(entries: impl IntoIterator<Item = (String, V)>) -> Split<V> {
    let (mut whole, mut slices) = (Vec::new(), BTreeMap::<String, BTreeMap<usize, V>>::new());
    for (name, v) in entries {
        match split_expert_slice(&name) {
            (stacked, Some(e)) => {
                slices.entry(stacked.to_string()).or_default().insert(e, v);
            }
            _ => whole.push((name, v)),
        }
    }
    (whole, slices)
}

/// Expert slices joined into their stacked tensor, experts in order; other entries as they are. A stacked
/// tensor needs every expert from 0 up.
fn stack_tensors(tensors: HashMap<String, Vec<u8>>) -> Result<HashMap<String, Vec<u8>>> {
    let (whole, slices) = split_slices(tensors);
    let mut out: HashMap<String, Vec<u8>> = whole.into_iter().collect();
    for (stacked, experts) in slices {
        if experts.keys().copied().ne(0..experts.len()) {
            return Err(crate::EvalError::Calibration(format!("{stacked}: experts missing from the calibration")));
        }
        out.insert(stacked, experts.into_values().flatten().collect());
    }
    Ok(out)
}

/// The importance-matrix entries of expert slices joined as llama-imatrix stores a stacked tensor's: each
/// expert's sums in turn, one count per expert.
fn stack_stats(stats: BTreeMap<String, Stats>) -> BTreeMap<String, Stats> {
    let (whole, slices) = split_slices(stats);
    let mut out: BTreeMap<String, Stats> = whole.into_iter().collect();
    for (stacked, experts) in slices {
        let mut joined = Stats { sums: Vec::new(), counts: Vec::new() };
        for st in experts.into_values() {
            joined.sums.extend(st.sums);
            joined.counts.extend(st.counts);
        }
        out.insert(stacked, joined);
    }
    out
}

/// What the solver gathers: coded tensors by name, the report lines in solving order, and each layer's
/// input statistics as an importance-matrix entry.
#[derive(Default)]
struct Solved {
    tensors: HashMap<String, Vec<u8>>,
    layers: Vec<GgufLayerReport>,
    stats: BTreeMap<String, Stats>,
}

struct GgmlSolver<'a> {
    job: &'a GgufGptqJob<'a>,
    out: Mutex<Solved>,
}

/// The type's own quantizer on `w` with `imatrix` (none for an expert no calibration token reached): bytes
/// and their values.
fn quantize_plain(
    ty: GgmlType,
    w: &LinearWeight,
    imatrix: Option<&[f32]>,
) -> std::result::Result<(Vec<u8>, Vec<f32>), String> {
    let row = ty.row_size(w.cols as u64).ok_or_else(|| format!("{}: {} columns do not fit {ty}", w.name, w.cols))?;
    let mut bytes = vec![0u8; w.rows * row as usize];
    quantize_rows(ty, &w.values, w.cols, imatrix, &mut bytes).map_err(|e| format!("{}: {e}", w.name))?;
    let mut values = vec![0.0f32; w.values.len()];
    dequantize_row(ty, &bytes, &mut values).map_err(|e| format!("{}: {e}", w.name))?;
    Ok((bytes, values))
}

impl LayerSolver for GgmlSolver<'_> {
    fn stats_kind(&self) -> StatsKind {
        StatsKind::Covariance
    }

    fn solve(&self, _block: usize, w: &LinearWeight, stats: &InputStats) -> std::result::Result<Vec<f32>, String> {
        let entry = Stats { sums: stats.diagonal.clone(), counts: vec![stats.n_rows] };
        self.out.lock().unwrap_or_else(|e| e.into_inner()).stats.insert(w.name.clone(), entry);
        // An expert slice takes its stacked tensor's type.
        let Some(&ty) = self.job.types.get(split_expert_slice(&w.name).0) else { return Ok(w.values.clone()) };
        let t = Instant::now();
        let h = stats.covariance.as_deref().ok_or("no input covariance was collected")?;
        // The importance matrix of the pass: mean squared input per column, as llama.cpp's imatrix holds. An
        // expert no calibration token was routed to has none: the type's quantizer codes it without one.
        let n = stats.n_rows.max(1) as f32;
        let imatrix: Vec<f32> = stats.diagonal.iter().map(|d| d / n).collect();
        let reached = stats.n_rows > 0;
        let (plain_bytes, plain) = quantize_plain(ty, w, reached.then_some(imatrix.as_slice()))?;
        let coded = Grid::of(ty).filter(|g| reached && w.cols.is_multiple_of(g.block));
        let (bytes, values, fit) = match coded {
            Some(_) => {
                let g = gptq_ggml(&w.name, &w.values, w.rows, w.cols, h, ty, Some(&imatrix), &self.job.gptq)
                    .map_err(|e| e.to_string())?;
                (g.bytes, g.values, Some((g.damp, g.damp_retries, g.dead_columns)))
            }
            None => (plain_bytes, plain.clone(), None),
        };
        let errors = output_errors(&w.values, &[&values, &plain], w.rows, w.cols, h);
        let report = GgufLayerReport {
            name: w.name.clone(),
            ty: ty.name().to_string(),
            rows: w.rows,
            cols: w.cols,
            method: match (fit.is_some(), reached) {
                (true, _) => "gptq",
                (false, true) => "imatrix",
                (false, false) => "unreached",
            },
            seconds: t.elapsed().as_secs_f64(),
            output_error: errors[0],
            imatrix_output_error: errors[1],
            damp: fit.map(|f| f.0),
            damp_retries: fit.map_or(0, |f| f.1),
            dead_columns: fit.map_or(0, |f| f.2),
        };
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.tensors.insert(w.name.clone(), bytes);
        out.layers.push(report);
        Ok(values)
    }
}
