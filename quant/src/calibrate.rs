//! The calibration seam: layer-wise quantization (GPTQ, AWQ, Hessian-aware K-quants) works block by block,
//! each block's linear layers quantized from statistics of their inputs, and those inputs computed with every
//! earlier block already quantized. `quant` never sees a model: it draws calibration data through
//! [`CalibrationSource`], which the evaluator implements, and hands each linear layer to a [`LayerSolver`]
//! with its input statistics ([`InputStats`]: the per-column sums of squares of an importance matrix, or the
//! full `XᵀX`).
//!
//! Invariants of [`calibrate`]:
//! - block `i`'s inputs are computed only after blocks `0..i` were committed with the weights the solver
//!   returned (the order is real, not a simulation: the source recomputes the hidden states);
//! - layers that read the same input (Q/K/V, gate/up) share one accumulator and see identical statistics;
//! - the statistics do not depend on the thread count: `XᵀX` is accumulated batch after batch in a fixed
//!   order, each product by `gemm` into its own buffer before being added.

use std::time::Instant;

use rayon::prelude::*;

/// An error raised by a calibration source (the evaluator's own error type, boxed).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong while calibrating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// The calibration source failed (reading weights, running a block).
    #[error("block {block}: {source}")]
    Source {
        block: usize,
        #[source]
        source: SourceError,
    },
    /// The source handed out an input whose width differs from a layer's weight.
    #[error("block {block}: layer '{layer}' takes {expected} inputs, the source gave rows of {got}")]
    InputWidth { block: usize, layer: String, expected: usize, got: usize },
    /// A layer the source listed never received an input.
    #[error("block {block}: layer '{layer}' received no calibration input")]
    NoInput { block: usize, layer: String },
    /// The solver failed on a layer.
    #[error("block {block}: layer '{layer}': {message}")]
    Solver { block: usize, layer: String, message: String },
    /// The solver returned a weight of the wrong size.
    #[error("block {block}: the solver returned {got} values for layer '{layer}' of {expected}")]
    SolvedSize { block: usize, layer: String, expected: usize, got: usize },
}

/// The input of one or more linear layers of a block, for one batch of calibration sequences.
#[derive(Clone, Copy, Debug)]
pub struct LinearInput<'a> {
    /// The layers (weight names) that multiply this input, in forward order.
    pub layers: &'a [&'a str],
    /// Row-major input rows, `cols` values each (one row per token).
    pub rows: &'a [f32],
    /// Columns per row: the layers' input dimension.
    pub cols: usize,
}

/// A linear layer's weight as `f32`: `rows` outputs of `cols` inputs each, row-major (`y = W x`).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearWeight {
    /// The weight's tensor name (GGUF naming, e.g. `blk.3.attn_q.weight`).
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

/// A model that can be run block by block over a fixed set of calibration sequences.
///
/// The source keeps the hidden states of every calibration token at the input of the next block to run.
pub trait CalibrationSource {
    /// Number of decoder blocks.
    fn n_blocks(&self) -> usize;

    /// The linear layers of block `index` and their current weights, in forward order.
    fn block_weights(&mut self, index: usize) -> Result<Vec<LinearWeight>, SourceError>;

    /// Run block `index` on the current hidden states without advancing them, showing `visit` the input of
    /// every linear layer (once per distinct input and batch of sequences, naming all layers that read it).
    fn block_inputs(&mut self, index: usize, visit: &mut dyn FnMut(LinearInput<'_>)) -> Result<(), SourceError>;

    /// Replace block `index`'s linear weights by `weights` (same names and shapes) and advance the hidden
    /// states through the block, so that the next block's inputs are computed with them.
    fn commit_block(&mut self, index: usize, weights: Vec<LinearWeight>) -> Result<(), SourceError>;
}

/// Which statistics the solver needs of each layer's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsKind {
    /// Per-column sums of squares (llama.cpp's importance matrix, before averaging).
    Diagonal,
    /// The full `cols x cols` matrix `XᵀX` (GPTQ's Hessian up to a factor `2 / n_rows`).
    Covariance,
}

/// Statistics of a layer's input over all calibration tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct InputStats {
    /// Input dimension.
    pub cols: usize,
    /// Tokens seen.
    pub n_rows: u64,
    /// `Σ x_j²` per column.
    pub diagonal: Vec<f32>,
    /// Row-major `XᵀX` (`cols x cols`), with [`StatsKind::Covariance`].
    pub covariance: Option<Vec<f32>>,
}

/// Quantizes one linear layer from its weight and input statistics.
pub trait LayerSolver: Sync {
    /// The statistics this solver needs.
    fn stats_kind(&self) -> StatsKind;

    /// The weight the model continues with (the quantized values, as `f32`, same shape as `weight`).
    fn solve(&self, block: usize, weight: &LinearWeight, stats: &InputStats) -> Result<Vec<f32>, String>;
}

/// Timings and sizes of one calibration run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct CalibrationReport {
    pub blocks: Vec<BlockReport>,
}

/// One block of a [`CalibrationReport`].
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct BlockReport {
    pub index: usize,
    /// Calibration tokens that went through the block.
    pub tokens: u64,
    /// Seconds spent running the block to collect inputs, solving, and committing.
    pub collect_seconds: f64,
    pub solve_seconds: f64,
    pub commit_seconds: f64,
}

/// Accumulates [`InputStats`] batch by batch.
#[derive(Clone, Debug)]
pub struct StatsAccumulator {
    cols: usize,
    n_rows: u64,
    diagonal: Vec<f64>,
    covariance: Option<Vec<f32>>,
}

impl StatsAccumulator {
    /// An empty accumulator for inputs of `cols` columns.
    pub fn new(cols: usize, kind: StatsKind) -> StatsAccumulator {
        let covariance = (kind == StatsKind::Covariance).then(|| vec![0.0; cols * cols]);
        StatsAccumulator { cols, n_rows: 0, diagonal: vec![0.0; cols], covariance }
    }

    /// Add row-major rows of `cols` values.
    pub fn add(&mut self, rows: &[f32]) {
        let n = self.cols;
        if n == 0 {
            return;
        }
        let m = rows.len() / n;
        let rows = &rows[..m * n];
        self.n_rows += m as u64;
        let mut diag = vec![0.0f64; n];
        for row in rows.chunks_exact(n) {
            for (d, &x) in diag.iter_mut().zip(row) {
                *d += f64::from(x) * f64::from(x);
            }
        }
        for (acc, d) in self.diagonal.iter_mut().zip(diag) {
            *acc += d;
        }
        if let Some(cov) = &mut self.covariance {
            // The batch's product goes to a temporary, then is added: the sum runs batch by batch in order.
            let mut product = vec![0.0f32; n * n];
            crate::linalg::xtx(rows, m, n, &mut product);
            cov.par_iter_mut().zip(product.par_iter()).for_each(|(c, s)| *c += s);
        }
    }

    /// The statistics so far.
    pub fn finish(self) -> InputStats {
        InputStats {
            cols: self.cols,
            n_rows: self.n_rows,
            diagonal: self.diagonal.iter().map(|&d| d as f32).collect(),
            covariance: self.covariance,
        }
    }
}

/// Receives one line per calibration step.
pub trait CalibrationProgress: Sync {
    /// Block `index` of `total` is done.
    fn block_done(&self, _index: usize, _total: usize, _report: &BlockReport) {}
}

impl CalibrationProgress for crate::progress::Silent {}

/// Calibrate every block of `source` in order: collect each layer's input statistics, let `solver` choose
/// its new weight, commit the block, move on.
pub fn calibrate(
    source: &mut dyn CalibrationSource,
    solver: &dyn LayerSolver,
    progress: &dyn CalibrationProgress,
) -> Result<CalibrationReport, CalibrationError> {
    let kind = solver.stats_kind();
    let n_blocks = source.n_blocks();
    let mut report = CalibrationReport::default();
    for block in 0..n_blocks {
        let src_err = |source| CalibrationError::Source { block, source };
        let weights = source.block_weights(block).map_err(src_err)?;
        let t0 = Instant::now();
        // One accumulator per distinct input, keyed by the first layer that reads it.
        let mut groups: Vec<(Vec<String>, StatsAccumulator)> = Vec::new();
        let mut failure = None;
        let mut tokens = 0u64;
        source
            .block_inputs(block, &mut |input| {
                if failure.is_some() {
                    return;
                }
                for layer in input.layers {
                    if let Some(w) = weights.iter().find(|w| w.name == *layer) {
                        if w.cols != input.cols {
                            failure = Some(CalibrationError::InputWidth {
                                block,
                                layer: w.name.clone(),
                                expected: w.cols,
                                got: input.cols,
                            });
                            return;
                        }
                    }
                }
                let key = input.layers.first().copied().unwrap_or("");
                let pos = match groups.iter().position(|(names, _)| names.first().is_some_and(|n| n == key)) {
                    Some(p) => p,
                    None => {
                        let names = input.layers.iter().map(|s| s.to_string()).collect();
                        groups.push((names, StatsAccumulator::new(input.cols, kind)));
                        groups.len() - 1
                    }
                };
                if pos == 0 {
                    tokens += (input.rows.len() / input.cols.max(1)) as u64;
                }
                groups[pos].1.add(input.rows);
            })
            .map_err(src_err)?;
        if let Some(e) = failure {
            return Err(e);
        }
        let stats: Vec<(Vec<String>, InputStats)> =
            groups.into_iter().map(|(names, acc)| (names, acc.finish())).collect();
        let collect_seconds = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut solved = Vec::with_capacity(weights.len());
        for w in &weights {
            let s = stats
                .iter()
                .find(|(names, _)| names.contains(&w.name))
                .map(|(_, s)| s)
                .ok_or_else(|| CalibrationError::NoInput { block, layer: w.name.clone() })?;
            let values = solver.solve(block, w, s).map_err(|message| CalibrationError::Solver {
                block,
                layer: w.name.clone(),
                message,
            })?;
            if values.len() != w.values.len() {
                return Err(CalibrationError::SolvedSize {
                    block,
                    layer: w.name.clone(),
                    expected: w.values.len(),
                    got: values.len(),
                });
            }
            solved.push(LinearWeight { values, ..w.clone() });
        }
        drop(weights);
        let solve_seconds = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        source.commit_block(block, solved).map_err(src_err)?;
        let b = BlockReport {
            index: block,
            tokens,
            collect_seconds,
            solve_seconds,
            commit_seconds: t2.elapsed().as_secs_f64(),
        };
        progress.block_done(block, n_blocks, &b);
        report.blocks.push(b);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulated_xtx_equals_the_direct_product_in_any_batching() {
        let (m, n) = (37, 9);
        let x: Vec<f32> = (0..m * n).map(|i| ((i * 7919 % 101) as f32 - 50.0) / 17.0).collect();
        let mut want = vec![0.0f64; n * n];
        for r in 0..m {
            for i in 0..n {
                for j in 0..n {
                    want[i * n + j] += f64::from(x[r * n + i]) * f64::from(x[r * n + j]);
                }
            }
        }
        for batch in [1, 5, 37] {
            let mut acc = StatsAccumulator::new(n, StatsKind::Covariance);
            for rows in x.chunks(batch * n) {
                acc.add(rows);
            }
            let s = acc.finish();
            assert_eq!(s.n_rows, m as u64);
            let cov = s.covariance.unwrap();
            for (k, (&got, &w)) in cov.iter().zip(&want).enumerate() {
                assert!((f64::from(got) - w).abs() <= 1e-4 * w.abs().max(1.0), "batch {batch} [{k}]: {got} vs {w}");
            }
            for i in 0..n {
                assert!((f64::from(s.diagonal[i]) - want[i * n + i]).abs() <= 1e-4 * want[i * n + i].max(1.0));
            }
        }
        let d = StatsAccumulator::new(n, StatsKind::Diagonal);
        assert!(d.finish().covariance.is_none());
    }

    /// A source of two "blocks", each a single 2x2 linear layer y = W x applied to fixed hidden states; it
    /// records the order of calls.
    struct Toy {
        hidden: Vec<f32>,
        weights: Vec<Vec<f32>>,
        log: Vec<String>,
    }

    impl CalibrationSource for Toy {
        fn n_blocks(&self) -> usize {
            self.weights.len()
        }
        fn block_weights(&mut self, index: usize) -> Result<Vec<LinearWeight>, SourceError> {
            let name = format!("blk.{index}.w");
            Ok(vec![LinearWeight { name, rows: 2, cols: 2, values: self.weights[index].clone() }])
        }
        fn block_inputs(&mut self, index: usize, visit: &mut dyn FnMut(LinearInput<'_>)) -> Result<(), SourceError> {
            self.log.push(format!("inputs {index}"));
            let name = format!("blk.{index}.w");
            visit(LinearInput { layers: &[name.as_str()], rows: &self.hidden, cols: 2 });
            Ok(())
        }
        fn commit_block(&mut self, index: usize, weights: Vec<LinearWeight>) -> Result<(), SourceError> {
            self.log.push(format!("commit {index}"));
            let w = &weights[0].values;
            self.hidden =
                self.hidden.chunks(2).flat_map(|x| [w[0] * x[0] + w[1] * x[1], w[2] * x[0] + w[3] * x[1]]).collect();
            Ok(())
        }
    }

    struct Halve;

    impl LayerSolver for Halve {
        fn stats_kind(&self) -> StatsKind {
            StatsKind::Covariance
        }
        fn solve(&self, _block: usize, w: &LinearWeight, stats: &InputStats) -> Result<Vec<f32>, String> {
            if stats.n_rows == 0 {
                return Err("no rows".into());
            }
            Ok(w.values.iter().map(|v| v * 0.5).collect())
        }
    }

    #[test]
    fn blocks_are_solved_in_order_through_committed_weights() {
        let mut toy =
            Toy { hidden: vec![1.0, 2.0, 3.0, 4.0], weights: vec![vec![2.0, 0.0, 0.0, 2.0]; 2], log: Vec::new() };
        let r = calibrate(&mut toy, &Halve, &crate::progress::Silent).unwrap();
        assert_eq!(toy.log, ["inputs 0", "commit 0", "inputs 1", "commit 1"]);
        assert_eq!(r.blocks.len(), 2);
        assert_eq!(r.blocks[1].tokens, 2);
        // Each block's solved weight is the identity, so the hidden states are unchanged.
        assert_eq!(toy.hidden, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        struct Wide(Toy);
        impl CalibrationSource for Wide {
            fn n_blocks(&self) -> usize {
                1
            }
            fn block_weights(&mut self, index: usize) -> Result<Vec<LinearWeight>, SourceError> {
                self.0.block_weights(index)
            }
            fn block_inputs(&mut self, _: usize, visit: &mut dyn FnMut(LinearInput<'_>)) -> Result<(), SourceError> {
                visit(LinearInput { layers: &["blk.0.w"], rows: &[1.0, 2.0, 3.0], cols: 3 });
                Ok(())
            }
            fn commit_block(&mut self, _: usize, _: Vec<LinearWeight>) -> Result<(), SourceError> {
                Ok(())
            }
        }
        let toy = Toy { hidden: vec![], weights: vec![vec![0.0; 4]], log: Vec::new() };
        let e = calibrate(&mut Wide(toy), &Halve, &crate::progress::Silent).unwrap_err().to_string();
        assert!(e.contains("blk.0.w") && e.contains("takes 2 inputs"), "{e}");
        let mut silent = Toy { hidden: vec![], weights: vec![vec![0.0; 4]], log: Vec::new() };
        silent.hidden.clear();
        struct Mute(Toy);
        impl CalibrationSource for Mute {
            fn n_blocks(&self) -> usize {
                1
            }
            fn block_weights(&mut self, index: usize) -> Result<Vec<LinearWeight>, SourceError> {
                self.0.block_weights(index)
            }
            fn block_inputs(&mut self, _: usize, _: &mut dyn FnMut(LinearInput<'_>)) -> Result<(), SourceError> {
                Ok(())
            }
            fn commit_block(&mut self, _: usize, _: Vec<LinearWeight>) -> Result<(), SourceError> {
                Ok(())
            }
        }
        let e = calibrate(&mut Mute(silent), &Halve, &crate::progress::Silent).unwrap_err().to_string();
        assert!(e.contains("received no calibration input"), "{e}");
    }
}
