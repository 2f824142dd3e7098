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
    /// The step of the block this input belongs to, in forward order (0: the attention's input, 1: its
    /// output projection's, 2: the feed-forward network's, 3: its down projection's). A true-sequential pass
    /// solves one stage at a time; several inputs may share a stage (a mixture of experts' routed inputs).
    pub stage: usize,
}

/// The seam's name for expert `expert` of the stacked expert tensor `stacked`: `blk.3.ffn_up_exps.weight[5]`.
/// Each expert is calibrated as its own linear layer, from the inputs routed to it.
pub fn expert_slice_name(stacked: &str, expert: usize) -> String {
    format!("{stacked}[{expert}]")
}

/// `(stacked tensor, Some(expert))` for a name made by [`expert_slice_name`], `(name, None)` for any other.
pub fn split_expert_slice(name: &str) -> (&str, Option<usize>) {
    let parsed = name.strip_suffix(']').and_then(|n| n.rsplit_once('[')).and_then(|(stacked, e)| {
        let plain = !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) && (e == "0" || !e.starts_with('0'));
        plain.then(|| e.parse().ok().map(|e| (stacked, e))).flatten()
    });
    match parsed {
        Some((stacked, e)) => (stacked, Some(e)),
        None => (name, None),
    }
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

    /// [`CalibrationSource::block_inputs`], which may stop once every input of stage `last` (see
    /// [`LinearInput::stage`]) has been shown: a true-sequential pass needs no more of the block. The inputs
    /// shown are the same as those of a whole run (inputs of later stages may be shown too). By default the
    /// whole block runs.
    fn block_inputs_until(
        &mut self,
        index: usize,
        last: usize,
        visit: &mut dyn FnMut(LinearInput<'_>),
    ) -> Result<(), SourceError> {
        let _ = last;
        self.block_inputs(index, visit)
    }

    /// Replace some of block `index`'s linear weights (same names and shapes) without advancing the hidden
    /// states: later [`CalibrationSource::block_inputs`] calls run the block with them.
    fn update_weights(&mut self, index: usize, weights: Vec<LinearWeight>) -> Result<(), SourceError>;

    /// Divide the vector tensor `name` of block `index` (a norm weight, `blk.N.attn_norm.weight`) element-wise
    /// by `divisor`: how a solver that scales a layer's input columns folds the inverse into the op before.
    fn scale_vector(&mut self, index: usize, name: &str, divisor: &[f32]) -> Result<Vec<f32>, SourceError>;

    /// Calibration tokens that go through every block.
    fn n_tokens(&self) -> u64;

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
    /// `Σ |x_j| / n_rows` per column.
    pub abs_mean: Vec<f32>,
    /// Row-major `XᵀX` (`cols x cols`), with [`StatsKind::Covariance`].
    pub covariance: Option<Vec<f32>>,
    /// Every `k`-th input row (row-major, `cols` values each), when a sample was asked for.
    pub sample: Option<Vec<f32>>,
}

/// Quantizes one linear layer from its weight and input statistics.
pub trait LayerSolver: Sync {
    /// The statistics this solver needs.
    fn stats_kind(&self) -> StatsKind;

    /// The weight the model continues with (the quantized values, as `f32`, same shape as `weight`).
    fn solve(&self, block: usize, weight: &LinearWeight, stats: &InputStats) -> Result<Vec<f32>, String>;
}

/// A solver that decides a whole block at once from the statistics of every input of the block (AWQ,
/// whose input scales move weight between layers and into the norm before them).
pub trait BlockSolver: Sync {
    /// The statistics this solver needs.
    fn stats_kind(&self) -> StatsKind;

    /// Rows of each input to keep as a sample (by stride over all calibration tokens); 0 for none.
    fn sample_rows(&self) -> u64 {
        0
    }

    /// The block's new weights (every layer of `weights`, same order and shapes), and the vectors of the block
    /// to divide by input scales, given each distinct input's layers and statistics.
    fn solve_block(
        &self,
        block: usize,
        weights: &[LinearWeight],
        inputs: &[(Vec<String>, InputStats)],
    ) -> Result<BlockSolution, String>;
}

/// What a [`BlockSolver`] decided for a block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockSolution {
    pub weights: Vec<LinearWeight>,
    /// `(vector name, divisor)`: each vector is divided element-wise by its divisor before the block is committed.
    pub vector_scales: Vec<(String, Vec<f32>)>,
}

/// Every vector a block solver scaled: name and new values, in order.
pub type ScaledVectors = Vec<(String, Vec<f32>)>;

/// Calibrate every block of `source` in order with a block-level solver: one pass collects every input's
/// statistics from the unquantized block, the solver decides the whole block, its vector scales are folded,
/// the block is committed. Returns the report and every scaled vector's new values, in order.
pub fn calibrate_blocks(
    source: &mut dyn CalibrationSource,
    solver: &dyn BlockSolver,
    progress: &dyn CalibrationProgress,
) -> Result<(CalibrationReport, ScaledVectors), CalibrationError> {
    let kind = solver.stats_kind();
    let n_blocks = source.n_blocks();
    let every = match solver.sample_rows() {
        0 => 0,
        n => source.n_tokens().div_ceil(n).max(1),
    };
    let mut report = CalibrationReport::default();
    let mut vectors = Vec::new();
    for block in 0..n_blocks {
        let src_err = |source| CalibrationError::Source { block, source };
        let weights = source.block_weights(block).map_err(src_err)?;
        let t0 = Instant::now();
        let (groups, tokens) = collect(source, block, &weights, kind, None, every)?;
        let inputs: Vec<(Vec<String>, InputStats)> =
            groups.into_iter().filter_map(|g| g.stats.map(|s| (g.layers, s.finish()))).collect();
        for w in &weights {
            if !inputs.iter().any(|(names, _)| names.contains(&w.name)) {
                return Err(CalibrationError::NoInput { block, layer: w.name.clone() });
            }
        }
        let collect_seconds = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let solution = solver.solve_block(block, &weights, &inputs).map_err(|message| CalibrationError::Solver {
            block,
            layer: format!("block {block}"),
            message,
        })?;
        drop(inputs);
        for w in &weights {
            let got = solution.weights.iter().find(|s| s.name == w.name).map_or(0, |s| s.values.len());
            if got != w.values.len() {
                return Err(CalibrationError::SolvedSize {
                    block,
                    layer: w.name.clone(),
                    expected: w.values.len(),
                    got,
                });
            }
        }
        progress.layer_done(block, &format!("block {block}"), t1.elapsed().as_secs_f64());
        let solve_seconds = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        for (name, divisor) in &solution.vector_scales {
            let values = source.scale_vector(block, name, divisor).map_err(src_err)?;
            vectors.push((name.clone(), values));
        }
        let b = BlockReport { index: block, tokens, collect_seconds, solve_seconds, commit_seconds: 0.0 };
        commit(source, solution.weights, t2, b, n_blocks, progress, &mut report)?;
    }
    Ok((report, vectors))
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
    abs_sum: Vec<f64>,
    covariance: Option<Vec<f32>>,
    /// Keep every `sample_every`-th row (0: none).
    sample_every: u64,
    sample: Vec<f32>,
}

impl StatsAccumulator {
    /// An empty accumulator for inputs of `cols` columns.
    pub fn new(cols: usize, kind: StatsKind) -> StatsAccumulator {
        let covariance = (kind == StatsKind::Covariance).then(|| vec![0.0; cols * cols]);
        StatsAccumulator {
            cols,
            n_rows: 0,
            diagonal: vec![0.0; cols],
            abs_sum: vec![0.0; cols],
            covariance,
            sample_every: 0,
            sample: Vec::new(),
        }
    }

    /// Also keep every `every`-th input row (counting from the first).
    pub fn with_sample(mut self, every: u64) -> StatsAccumulator {
        self.sample_every = every.max(1);
        self
    }

    /// Add row-major rows of `cols` values.
    pub fn add(&mut self, rows: &[f32]) {
        let n = self.cols;
        if n == 0 {
            return;
        }
        let m = rows.len() / n;
        if m == 0 {
            return;
        }
        let rows = &rows[..m * n];
        let mut diag = vec![0.0f64; n];
        let mut abs = vec![0.0f64; n];
        for (i, row) in rows.chunks_exact(n).enumerate() {
            for ((d, a), &x) in diag.iter_mut().zip(abs.iter_mut()).zip(row) {
                *d += f64::from(x) * f64::from(x);
                *a += f64::from(x.abs());
            }
            if self.sample_every > 0 && (self.n_rows + i as u64).is_multiple_of(self.sample_every) {
                self.sample.extend_from_slice(row);
            }
        }
        self.n_rows += m as u64;
        for (acc, d) in self.diagonal.iter_mut().zip(diag) {
            *acc += d;
        }
        for (acc, a) in self.abs_sum.iter_mut().zip(abs) {
            *acc += a;
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
        let n = self.n_rows.max(1) as f64;
        InputStats {
            cols: self.cols,
            n_rows: self.n_rows,
            diagonal: self.diagonal.iter().map(|&d| d as f32).collect(),
            abs_mean: self.abs_sum.iter().map(|&a| (a / n) as f32).collect(),
            covariance: self.covariance,
            sample: (self.sample_every > 0).then_some(self.sample),
        }
    }
}

/// Receives one line per calibration step.
pub trait CalibrationProgress: Sync {
    /// Layer `layer` of block `block` was solved in `seconds`.
    fn layer_done(&self, _block: usize, _layer: &str, _seconds: f64) {}
    /// Block `index` of `total` is done.
    fn block_done(&self, _index: usize, _total: usize, _report: &BlockReport) {}
}

impl CalibrationProgress for crate::progress::Silent {}

/// How blocks are calibrated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CalibrateOptions {
    /// Solve a block's layers input by input (Q/K/V, then O, then gate/up, then down), each from inputs
    /// computed with the layers before it already quantized: one pass over the calibration tokens per
    /// distinct input. Otherwise one pass collects every layer's statistics from the unquantized block.
    pub true_sequential: bool,
}

/// Calibrate every block of `source` in order, all layers of a block from one pass.
pub fn calibrate(
    source: &mut dyn CalibrationSource,
    solver: &dyn LayerSolver,
    progress: &dyn CalibrationProgress,
) -> Result<CalibrationReport, CalibrationError> {
    calibrate_with(source, solver, progress, &CalibrateOptions::default())
}

/// The layers reading one distinct input, its stage, and its statistics when they were collected.
struct InputGroup {
    layers: Vec<String>,
    stage: usize,
    stats: Option<StatsAccumulator>,
}

/// Calibrate every block of `source` in order: collect each layer's input statistics, let `solver` choose
/// its new weight, commit the block, move on.
pub fn calibrate_with(
    source: &mut dyn CalibrationSource,
    solver: &dyn LayerSolver,
    progress: &dyn CalibrationProgress,
    opts: &CalibrateOptions,
) -> Result<CalibrationReport, CalibrationError> {
    let kind = solver.stats_kind();
    let n_blocks = source.n_blocks();
    let mut report = CalibrationReport::default();
    for block in 0..n_blocks {
        let src_err = |source| CalibrationError::Source { block, source };
        let weights = source.block_weights(block).map_err(src_err)?;
        let (mut collect_seconds, mut solve_seconds) = (0.0, 0.0);
        let mut solved: Vec<Option<LinearWeight>> = vec![None; weights.len()];
        let mut tokens = 0u64;
        let mut pass = 0;
        loop {
            let t0 = Instant::now();
            let only = opts.true_sequential.then_some(pass);
            let (groups, seen) = collect(source, block, &weights, kind, only, 0)?;
            // A true-sequential pass stops at its stage; no input of stage `pass` means the block has no more.
            let exhausted = !groups.iter().any(|g| g.stage == pass);
            if pass == 0 {
                tokens = seen;
            }
            collect_seconds += t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let mut newly = Vec::new();
            for group in groups {
                let Some(acc) = group.stats else { continue };
                let stats = acc.finish();
                for (i, w) in weights.iter().enumerate().filter(|(_, w)| group.layers.contains(&w.name)) {
                    let t = Instant::now();
                    let values = solver.solve(block, w, &stats).map_err(|message| CalibrationError::Solver {
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
                    progress.layer_done(block, &w.name, t.elapsed().as_secs_f64());
                    let lw = LinearWeight { values, ..w.clone() };
                    if opts.true_sequential {
                        newly.push(lw.clone());
                    }
                    solved[i] = Some(lw);
                }
            }
            solve_seconds += t1.elapsed().as_secs_f64();
            pass += 1;
            if !opts.true_sequential || exhausted || solved.iter().all(Option::is_some) {
                break;
            }
            source.update_weights(block, newly).map_err(src_err)?;
        }
        let mut done = Vec::with_capacity(weights.len());
        for (w, s) in weights.iter().zip(solved) {
            done.push(s.ok_or_else(|| CalibrationError::NoInput { block, layer: w.name.clone() })?);
        }
        drop(weights);
        let t2 = Instant::now();
        let b = BlockReport { index: block, tokens, collect_seconds, solve_seconds, commit_seconds: 0.0 };
        commit(source, done, t2, b, n_blocks, progress, &mut report)?;
    }
    Ok(report)
}

/// Commit block `b.index`'s solved `weights`, count the seconds since `started` as its commit time, report the
/// block and add it to `report` (both calibration loops end a block this way).
fn commit(
    source: &mut dyn CalibrationSource,
    weights: Vec<LinearWeight>,
    started: Instant,
    mut b: BlockReport,
    n_blocks: usize,
    progress: &dyn CalibrationProgress,
    report: &mut CalibrationReport,
) -> Result<(), CalibrationError> {
    let block = b.index;
    source.commit_block(block, weights).map_err(|source| CalibrationError::Source { block, source })?;
    b.commit_seconds = started.elapsed().as_secs_f64();
    progress.block_done(block, n_blocks, &b);
    report.blocks.push(b);
    Ok(())
}

/// Run block `block` once, grouping its layers by the input they read (in forward order) and accumulating
/// the statistics of every group, or of the groups of stage `only`. Returns the groups and the tokens seen.
fn collect(
    source: &mut dyn CalibrationSource,
    block: usize,
    weights: &[LinearWeight],
    kind: StatsKind,
    only: Option<usize>,
    sample_every: u64,
) -> Result<(Vec<InputGroup>, u64), CalibrationError> {
    let mut groups: Vec<InputGroup> = Vec::new();
    let mut failure = None;
    let mut tokens = 0u64;
    let mut visit = |input: LinearInput<'_>| {
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
        let pos = match groups.iter().position(|g| g.layers.first().is_some_and(|n| n == key)) {
            Some(p) => p,
            None => {
                let layers = input.layers.iter().map(|s| s.to_string()).collect();
                let wanted = only.is_none_or(|o| o == input.stage);
                let acc = || {
                    let a = StatsAccumulator::new(input.cols, kind);
                    if sample_every > 0 {
                        a.with_sample(sample_every)
                    } else {
                        a
                    }
                };
                groups.push(InputGroup { layers, stage: input.stage, stats: wanted.then(acc) });
                groups.len() - 1
            }
        };
        if pos == 0 {
            tokens += (input.rows.len() / input.cols.max(1)) as u64;
        }
        if let Some(acc) = &mut groups[pos].stats {
            acc.add(input.rows);
        }
    };
    match only {
        Some(last) => source.block_inputs_until(block, last, &mut visit),
        None => source.block_inputs(block, &mut visit),
    }
    .map_err(|source| CalibrationError::Source { block, source })?;
    match failure {
        Some(e) => Err(e),
        None => Ok((groups, tokens)),
    }
}

#[cfg(test)]
mod tests;
