//! The AWQ block solver of the calibration seam, per decoder block as AutoAWQ runs it: every input's scale
//! searched on the unquantized block's statistics (Q/K/V behind the attention norm, O behind V when their
//! shapes match, gate/up behind the FFN norm, down behind up), all scales applied at once (balanced layers'
//! columns times `s`, the norm or the previous layer's rows divided by `s`), then each layer's clipping
//! searched on its scaled inputs (Q/K skipped), then AWQ's own rounding.
//!
//! Phi-3's fused Q/K/V is balanced as one layer behind the attention norm (O is left alone, as AutoAWQ does)
//! and its fused gate/up behind the FFN norm; down is balanced against the up half of gate/up.
//!
//! A mixture of experts: the FFN norm's scale balances every expert's gate/up and the shared expert's,
//! searched on the FFN's whole input (the router's); the routers' columns are multiplied by it too and kept in
//! float, so routing is unchanged; each expert's down is balanced against its up on the expert's own inputs.
//! An expert no calibration row reached keeps a scale of 1 and is not clipped.
//!
//! The loss of the scale search is measured at the balanced layers' outputs from `XᵀX`
//! ([`LinearOutputLoss::from_gram`]); AutoAWQ measures it at the output of the whole attention or MLP.
//! Invariant: the weights returned are exactly the dequantized checkpoint layers, and with the norms
//! divided as returned, the block computes what the written checkpoint computes.

use std::sync::Mutex;
use std::time::Instant;

use quantforge_formats::arch;
use quantforge_quant::awq::{
    apply_clip, awq_quantize, search_clip, search_scale, skips_clip, AwqOptions, LinearOutputLoss,
};
use quantforge_quant::calibrate::{
    expert_slice_name, split_expert_slice, BlockSolution, BlockSolver, InputStats, LinearWeight, StatsKind,
};
use quantforge_quant::intquant::IntScheme;

use super::solver::Emit;
use super::LayerReport;
use crate::blocks::stage_of;

/// What sits before a mapping's layers and takes `1/s`.
enum Prev {
    /// A norm weight of the block (GGUF name).
    Norm(String),
    /// A linear layer: its last `s.len()` output rows are divided by `s` (all of them, or the up half of a
    /// fused gate/up).
    Linear(usize),
}

/// One AWQ mapping of a block: the layers whose input columns are balanced by `s` (quantized), the layers
/// that read the same input and are only scaled (a mixture of experts' routers, kept in float), the op before
/// them, and the layer whose input statistics the search uses.
struct Mapping {
    balanced: Vec<usize>,
    carried: Vec<usize>,
    prev: Prev,
    stats_of: usize,
}

/// AutoAWQ's mappings for the layers of `weights` (block `block`), by GGUF short name: Q/K/V behind the
/// attention norm; O behind V when their shapes match; every FFN input (gate/up; a mixture of experts: every
/// expert's gate/up and the shared expert's, the routers carried along) behind the FFN norm, searched on the
/// FFN's whole input; down behind up, for the dense FFN, the shared expert and each expert on its own inputs.
fn mappings(block: usize, weights: &[LinearWeight]) -> Vec<Mapping> {
    let full = |short: &str| format!("blk.{block}.{short}.weight");
    let index = |name: &str| weights.iter().position(|w| w.name == name);
    let all = |shorts: &[&str]| shorts.iter().map(|s| index(&full(s))).collect::<Option<Vec<usize>>>();
    let mut out = Vec::new();
    // Phi-3's fused Q/K/V is one layer; AutoAWQ leaves its O unbalanced.
    if let Some(ids) = all(&["attn_q", "attn_k", "attn_v"]).or_else(|| all(&["attn_qkv"])) {
        out.push(Mapping { stats_of: ids[0], balanced: ids, carried: vec![], prev: Prev::Norm(full("attn_norm")) });
    }
    if let (Some(o), Some(v)) = (index(&full("attn_output")), index(&full("attn_v"))) {
        // O behind V only when their shapes agree (no grouped-query attention).
        if weights[v].rows == weights[o].cols && weights[v].rows == weights[v].cols {
            out.push(Mapping { balanced: vec![o], carried: vec![], prev: Prev::Linear(v), stats_of: o });
        }
    }
    let ffn_in: Vec<usize> =
        (0..weights.len()).filter(|&i| stage_of(&weights[i].name) == 2 && !arch::is_router(&weights[i].name)).collect();
    let routers: Vec<usize> = (0..weights.len()).filter(|&i| arch::is_router(&weights[i].name)).collect();
    if let Some(&first) = ffn_in.first() {
        let stats_of = index(&full("ffn_gate_inp")).unwrap_or(first);
        out.push(Mapping { balanced: ffn_in, carried: routers, prev: Prev::Norm(full("ffn_norm")), stats_of });
    }
    for (i, w) in weights.iter().enumerate() {
        let (stacked, expert) = split_expert_slice(&w.name);
        let up = [("ffn_down", "ffn_up"), ("ffn_down_shexp", "ffn_up_shexp"), ("ffn_down_exps", "ffn_up_exps")]
            .iter()
            .find(|(down, _)| stacked == full(down))
            .map(|(_, up)| match expert {
                Some(e) => expert_slice_name(&full(up), e),
                None => full(up),
            });
        if let Some(u) = up.and_then(|u| index(&u)) {
            out.push(Mapping { balanced: vec![i], carried: vec![], prev: Prev::Linear(u), stats_of: i });
        }
    }
    out
}

/// AWQ over the calibration seam.
pub(super) struct AwqSolver<'a> {
    scheme: IntScheme,
    opts: AwqOptions,
    emit: &'a Emit<'a>,
    reports: Mutex<Vec<LayerReport>>,
    /// Routers whose input columns were scaled: GGUF name and new values.
    scaled: Mutex<Vec<(String, Vec<f32>)>>,
}

impl<'a> AwqSolver<'a> {
    pub(super) fn new(scheme: IntScheme, emit: &'a Emit<'a>) -> Self {
        let (reports, scaled) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
        AwqSolver { scheme, opts: AwqOptions::default(), emit, reports, scaled }
    }

    /// The report lines, and the routers whose input columns were scaled (GGUF name, new values).
    pub(super) fn into_parts(self) -> (Vec<LayerReport>, Vec<(String, Vec<f32>)>) {
        let reports = self.reports.into_inner().unwrap_or_else(|e| e.into_inner());
        (reports, self.scaled.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}

impl BlockSolver for AwqSolver<'_> {
    fn stats_kind(&self) -> StatsKind {
        StatsKind::Covariance
    }

    fn sample_rows(&self) -> u64 {
        self.opts.n_sample_token as u64
    }

    fn solve_block(
        &self,
        block: usize,
        weights: &[LinearWeight],
        inputs: &[(Vec<String>, InputStats)],
    ) -> Result<BlockSolution, String> {
        let t0 = Instant::now();
        let stats = |name: &str| inputs.iter().find(|(names, _)| names.iter().any(|n| n == name)).map(|(_, s)| s);
        let mut values: Vec<Vec<f32>> = weights.iter().map(|w| w.values.clone()).collect();
        // Per layer: the scale its input columns were multiplied by (1 where no mapping applied).
        let mut col_scale: Vec<Option<Vec<f32>>> = vec![None; weights.len()];
        let mut vector_scales = Vec::new();
        // 1. Search every mapping on the unquantized weights and inputs.
        let mut searched = Vec::new();
        for m in mappings(block, weights) {
            let name = &weights[m.stats_of].name;
            let st = stats(name).ok_or_else(|| format!("no input statistics for {name}"))?;
            // An expert no calibration token reached keeps its scale of 1.
            if st.n_rows == 0 {
                continue;
            }
            let group: Vec<&LinearWeight> = m.balanced.iter().map(|&i| &weights[i]).collect();
            let gram = st.covariance.clone().ok_or("no input covariance was collected")?;
            let loss = LinearOutputLoss::from_gram(gram, st.n_rows, &group).map_err(|e| e.to_string())?;
            let found =
                search_scale(&group, &st.abs_mean, self.scheme, &self.opts, &loss).map_err(|e| e.to_string())?;
            searched.push((m, found.scales));
        }
        // 2. Apply them all: balanced (and carried) columns times s, the previous op divided by s.
        for (m, s) in searched {
            for &i in m.balanced.iter().chain(&m.carried) {
                let cols = weights[i].cols;
                for row in values[i].chunks_exact_mut(cols) {
                    row.iter_mut().zip(&s).for_each(|(w, s)| *w *= s);
                }
                col_scale[i] = Some(s.clone());
            }
            match m.prev {
                Prev::Norm(n) => vector_scales.push((n, s)),
                Prev::Linear(p) => {
                    let (rows, cols) = (weights[p].rows, weights[p].cols);
                    let last = values[p].chunks_exact_mut(cols).skip(rows.saturating_sub(s.len()));
                    for (row, d) in last.zip(&s) {
                        row.iter_mut().for_each(|w| *w /= d);
                    }
                }
            }
        }
        // 3. Clip each layer on its scaled inputs, 4. quantize with AWQ's rounding.
        let mut out = Vec::with_capacity(weights.len());
        for (i, w) in weights.iter().enumerate() {
            let t = Instant::now();
            let st = stats(&w.name).ok_or_else(|| format!("no input statistics for {}", w.name))?;
            let mut v = std::mem::take(&mut values[i]);
            // Routers stay in float, scaled where their input was.
            if arch::is_router(&w.name) {
                if col_scale[i].is_some() {
                    self.scaled.lock().unwrap_or_else(|e| e.into_inner()).push((w.name.clone(), v.clone()));
                }
                out.push(LinearWeight { values: v, ..w.clone() });
                continue;
            }
            if !skips_clip(split_expert_slice(&w.name).0) && st.n_rows > 0 {
                let mut sample = st.sample.clone().ok_or("no input sample was collected")?;
                if let Some(s) = &col_scale[i] {
                    for row in sample.chunks_exact_mut(w.cols) {
                        row.iter_mut().zip(s).for_each(|(x, s)| *x /= s);
                    }
                }
                let n_tokens = sample.len() / w.cols.max(1);
                let scaled = LinearWeight { values: v, ..w.clone() };
                let max =
                    search_clip(&scaled, &sample, n_tokens, self.scheme, &self.opts).map_err(|e| e.to_string())?;
                v = scaled.values;
                apply_clip(&w.name, &mut v, w.rows, w.cols, self.scheme, &max).map_err(|e| e.to_string())?;
            }
            let q = awq_quantize(&w.name, &v, w.rows, w.cols, self.scheme).map_err(|e| e.to_string())?;
            let deq = q.dequantize();
            let module = (self.emit)(&w.name, q)?;
            let report = LayerReport::plain(&w.name, module, (w.rows, w.cols), t.elapsed().as_secs_f64(), st.n_rows);
            self.reports.lock().unwrap_or_else(|e| e.into_inner()).push(report);
            out.push(LinearWeight { values: deq, ..w.clone() });
        }
        let _ = t0;
        Ok(BlockSolution { weights: out, vector_scales })
    }
}
