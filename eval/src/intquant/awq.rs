//! The AWQ block solver of the calibration seam, per decoder block as AutoAWQ runs it: every input's scale
//! searched on the unquantized block's statistics (Q/K/V behind the attention norm, O behind V when their
//! shapes match, gate/up behind the FFN norm, down behind up), all scales applied at once (balanced layers'
//! columns times `s`, the norm or the previous layer's rows divided by `s`), then each layer's clipping
//! searched on its scaled inputs (Q/K skipped), then AWQ's own rounding.
//!
//! The loss of the scale search is measured at the balanced layers' outputs from `XᵀX`
//! ([`LinearOutputLoss::from_gram`]); AutoAWQ measures it at the output of the whole attention or MLP.
//! Invariant: the weights returned are exactly the dequantized checkpoint layers, and with the norms
//! divided as returned, the block computes what the written checkpoint computes.

use std::sync::Mutex;
use std::time::Instant;

use quantforge_quant::awq::{
    apply_clip, awq_quantize, search_clip, search_scale, skips_clip, AwqOptions, LinearOutputLoss,
};
use quantforge_quant::calibrate::{BlockSolution, BlockSolver, InputStats, LinearWeight, StatsKind};
use quantforge_quant::intquant::IntScheme;

use super::solver::Emit;
use super::LayerReport;

/// What sits before a mapping's layers and takes `1/s`.
enum Prev {
    Norm(&'static str),
    Linear(&'static str),
}

/// AutoAWQ's Llama mappings: the balanced layers (GGUF short names) and the op before them.
const MAPPINGS: [(&[&str], Prev); 4] = [
    (&["attn_q", "attn_k", "attn_v"], Prev::Norm("attn_norm")),
    (&["attn_output"], Prev::Linear("attn_v")),
    (&["ffn_gate", "ffn_up"], Prev::Norm("ffn_norm")),
    (&["ffn_down"], Prev::Linear("ffn_up")),
];

/// AWQ over the calibration seam.
pub(super) struct AwqSolver<'a> {
    scheme: IntScheme,
    opts: AwqOptions,
    emit: &'a Emit<'a>,
    reports: Mutex<Vec<LayerReport>>,
}

impl<'a> AwqSolver<'a> {
    pub(super) fn new(scheme: IntScheme, emit: &'a Emit<'a>) -> Self {
        AwqSolver { scheme, opts: AwqOptions::default(), emit, reports: Mutex::new(Vec::new()) }
    }

    pub(super) fn into_reports(self) -> Vec<LayerReport> {
        self.reports.into_inner().unwrap_or_else(|e| e.into_inner())
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
        let full = |short: &str| format!("blk.{block}.{short}.weight");
        let index = |short: &str| weights.iter().position(|w| w.name == full(short));
        let stats = |name: &str| inputs.iter().find(|(names, _)| names.iter().any(|n| n == name)).map(|(_, s)| s);
        let mut values: Vec<Vec<f32>> = weights.iter().map(|w| w.values.clone()).collect();
        // Per layer: the scale its input columns were multiplied by (1 where no mapping applied).
        let mut col_scale: Vec<Option<Vec<f32>>> = vec![None; weights.len()];
        let mut vector_scales = Vec::new();
        // 1. Search every mapping on the unquantized weights and inputs.
        let mut searched = Vec::new();
        for (layers, prev) in &MAPPINGS {
            let Some(ids) = layers.iter().map(|l| index(l)).collect::<Option<Vec<usize>>>() else { continue };
            if let Prev::Linear(p) = prev {
                // O behind V only when their shapes agree (no grouped-query attention).
                let (Some(pi), Some(&first)) = (index(p), ids.first()) else { continue };
                if weights[pi].rows != weights[first].cols || weights[pi].rows != weights[pi].cols {
                    continue;
                }
            }
            let group: Vec<&LinearWeight> = ids.iter().map(|&i| &weights[i]).collect();
            let st = stats(&group[0].name).ok_or_else(|| format!("no input statistics for {}", group[0].name))?;
            let gram = st.covariance.clone().ok_or("no input covariance was collected")?;
            let loss = LinearOutputLoss::from_gram(gram, st.n_rows, &group).map_err(|e| e.to_string())?;
            let found =
                search_scale(&group, &st.abs_mean, self.scheme, &self.opts, &loss).map_err(|e| e.to_string())?;
            searched.push((ids, prev, found.scales));
        }
        // 2. Apply them all: balanced columns times s, the previous op divided by s.
        for (ids, prev, s) in searched {
            for &i in &ids {
                let cols = weights[i].cols;
                for row in values[i].chunks_exact_mut(cols) {
                    row.iter_mut().zip(&s).for_each(|(w, s)| *w *= s);
                }
                col_scale[i] = Some(s.clone());
            }
            match prev {
                Prev::Norm(n) => vector_scales.push((full(n), s)),
                Prev::Linear(p) => {
                    let pi = index(p).ok_or("previous layer vanished")?;
                    let cols = weights[pi].cols;
                    for (row, d) in values[pi].chunks_exact_mut(cols).zip(&s) {
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
            if !skips_clip(&w.name) {
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
            self.reports.lock().unwrap_or_else(|e| e.into_inner()).push(LayerReport {
                name: w.name.clone(),
                module,
                rows: w.rows,
                cols: w.cols,
                seconds: t.elapsed().as_secs_f64(),
                output_error: None,
                rtn_output_error: None,
                damp: None,
                damp_retries: 0,
                dead_columns: 0,
            });
            out.push(LinearWeight { values: deq, ..w.clone() });
        }
        let _ = t0;
        Ok(BlockSolution { weights: out, vector_scales })
    }
}
