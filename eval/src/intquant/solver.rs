//! The GPTQ layer solver of the calibration seam: each layer quantized from its inputs' `XᵀX`, the result
//! handed on at once (so only packed layers are kept), and a report line with the output error of GPTQ and
//! of round-to-nearest on the same inputs.

use std::sync::Mutex;
use std::time::Instant;

use quantforge_formats::arch;
use quantforge_quant::calibrate::{InputStats, LayerSolver, LinearWeight, StatsKind};
use quantforge_quant::gptq::{gptq, output_errors, GptqOptions};
use quantforge_quant::intquant::{rtn, IntScheme, QuantizedLinear};

use super::LayerReport;

/// Takes a solved layer (GGUF name, rows in the evaluator's order) and returns its HF module name.
pub(super) type Emit<'a> = dyn Fn(&str, QuantizedLinear) -> Result<String, String> + Sync + 'a;

/// GPTQ over the calibration seam.
pub(super) struct GptqSolver<'a> {
    scheme: IntScheme,
    opts: GptqOptions,
    emit: &'a Emit<'a>,
    reports: Mutex<Vec<LayerReport>>,
}

impl<'a> GptqSolver<'a> {
    pub(super) fn new(scheme: IntScheme, opts: GptqOptions, emit: &'a Emit<'a>) -> Self {
        GptqSolver { scheme, opts, emit, reports: Mutex::new(Vec::new()) }
    }

    /// The report lines, in the order the layers were solved.
    pub(super) fn into_reports(self) -> Vec<LayerReport> {
        self.reports.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl LayerSolver for GptqSolver<'_> {
    fn stats_kind(&self) -> StatsKind {
        StatsKind::Covariance
    }

    fn solve(&self, _block: usize, w: &LinearWeight, stats: &InputStats) -> Result<Vec<f32>, String> {
        // Routers stay in float: the writer copies them.
        if arch::is_router(&w.name) {
            return Ok(w.values.clone());
        }
        let t = Instant::now();
        if stats.n_rows == 0 {
            // An expert no calibration token was routed to: round-to-nearest.
            let q = rtn(&w.name, &w.values, w.rows, w.cols, self.scheme).map_err(|e| e.to_string())?;
            let values = q.dequantize();
            let module = (self.emit)(&w.name, q)?;
            let report = LayerReport::plain(&w.name, module, (w.rows, w.cols), t.elapsed().as_secs_f64(), 0);
            self.reports.lock().unwrap_or_else(|e| e.into_inner()).push(report);
            return Ok(values);
        }
        let h = stats.covariance.as_deref().ok_or("no input covariance was collected")?;
        let g = gptq(&w.name, &w.values, w.rows, w.cols, h, self.scheme, &self.opts).map_err(|e| e.to_string())?;
        let values = g.quantized.dequantize();
        let baseline = rtn(&w.name, &w.values, w.rows, w.cols, self.scheme).map_err(|e| e.to_string())?.dequantize();
        let errors = output_errors(&w.values, &[&values, &baseline], w.rows, w.cols, h);
        let (error, rtn_error) = (errors[0], errors[1]);
        let module = (self.emit)(&w.name, g.quantized)?;
        let report = LayerReport {
            name: w.name.clone(),
            module,
            rows: w.rows,
            cols: w.cols,
            seconds: t.elapsed().as_secs_f64(),
            output_error: Some(error),
            rtn_output_error: Some(rtn_error),
            damp: Some(g.damp),
            damp_retries: g.damp_retries,
            dead_columns: g.dead_columns,
            tokens: stats.n_rows,
        };
        self.reports.lock().unwrap_or_else(|e| e.into_inner()).push(report);
        Ok(values)
    }
}
