//! The solver seam: turning one tensor's f32 values into the stored bytes of its planned type.
//!
//! The pipeline ([`crate::stream`]) calls only [`Solver::solve`]; what a solver does with the values, and
//! which per-tensor statistics it can use, is its own business. [`CodecSolver`] is llama.cpp's block codecs
//! ([`crate::codecs`]), with or without an importance vector; the plain dtype encoders of `convert` (F32,
//! F16, BF16, Q8_0) are the same solver with no statistics. Solvers that need a full input covariance (GPTQ)
//! implement the trait on their own.
//!
//! Invariant: a solver's output depends only on the job and the values, never on the thread count.

use quantforge_formats::GgmlType;
use rayon::prelude::*;

use crate::{codecs, QuantError};

/// Statistics of a tensor's inputs, handed to the solver with its values.
#[derive(Clone, Copy, Debug, Default)]
pub enum TensorStats<'a> {
    /// Nothing is known.
    #[default]
    None,
    /// A diagonal importance vector (llama.cpp's imatrix): `ne[0]` values per expert (`ne[0] * ne[2]`).
    Diagonal(&'a [f32]),
    /// A full `n x n` input covariance (`n = ne[0]`), row-major.
    Covariance { n: usize, values: &'a [f32] },
}

impl TensorStats<'_> {
    /// A short name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            TensorStats::None => "none",
            TensorStats::Diagonal(_) => "diagonal",
            TensorStats::Covariance { .. } => "covariance",
        }
    }
}

/// One tensor to solve: its name (for messages), ggml-order shape, stored type and statistics.
#[derive(Clone, Copy, Debug)]
pub struct SolveJob<'a> {
    pub name: &'a str,
    pub ne: &'a [u64],
    pub ty: GgmlType,
    pub stats: TensorStats<'a>,
}

/// Why a solver could not produce a tensor's bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SolverError {
    /// The codec refused the rows.
    #[error(transparent)]
    Codec(#[from] QuantError),
    /// The solver cannot use this kind of statistics.
    #[error("the {solver} solver cannot use {stats} statistics")]
    StatsUnsupported { solver: &'static str, stats: &'static str },
    /// The shape does not fit the type (a row that is not a whole number of blocks).
    #[error("shape {ne:?} does not fit type {ty}")]
    Shape { ne: Vec<u64>, ty: GgmlType },
    /// The value or output buffer does not match the shape.
    #[error("{what}: expected {expected}, got {got}")]
    Size { what: &'static str, expected: usize, got: usize },
}

/// Turns a tensor's f32 values into stored bytes.
pub trait Solver: Sync {
    /// Encode `values` (the tensor in ggml order, `ne` product long) into `out`, which is exactly
    /// `job.ty.tensor_size(job.ne)` bytes.
    fn solve(&self, job: &SolveJob<'_>, values: &[f32], out: &mut [u8]) -> Result<(), SolverError>;
}

/// llama.cpp's codecs (`quantize_row_*` / `ggml_quantize_chunk`), rows in parallel.
#[derive(Clone, Copy, Debug, Default)]
pub struct CodecSolver;

/// Rows per parallel work item: whole rows of at least 16384 values, as llama-quantize chunks its work.
fn rows_per_chunk(n_per_row: usize) -> usize {
    16384usize.div_ceil(n_per_row.max(1)).max(1)
}

impl Solver for CodecSolver {
    fn solve(&self, job: &SolveJob<'_>, values: &[f32], out: &mut [u8]) -> Result<(), SolverError> {
        let weights = match job.stats {
            TensorStats::None => None,
            TensorStats::Diagonal(w) => Some(w),
            TensorStats::Covariance { .. } => {
                return Err(SolverError::StatsUnsupported { solver: "codec", stats: job.stats.kind() })
            }
        };
        let n: u64 = job.ne.iter().product();
        if values.len() as u64 != n {
            return Err(SolverError::Size { what: "values", expected: n as usize, got: values.len() });
        }
        if n == 0 {
            return Ok(());
        }
        let shape = || SolverError::Shape { ne: job.ne.to_vec(), ty: job.ty };
        let n_per_row = job.ne[0] as usize;
        let row_bytes = job.ty.row_size(job.ne[0]).ok_or_else(shape)? as usize;
        let expected = row_bytes * (values.len() / n_per_row);
        if out.len() != expected {
            return Err(SolverError::Size { what: "output bytes", expected, got: out.len() });
        }
        // Expert tensors (ne[2] > 1) use one importance slice of ne[0] weights per expert.
        let rows_per_slice = (job.ne.get(1).copied().unwrap_or(1) as usize).max(1);
        let slice_values = rows_per_slice * n_per_row;
        let chunk = rows_per_chunk(n_per_row);
        values.par_chunks(slice_values).zip(out.par_chunks_mut(rows_per_slice * row_bytes)).enumerate().try_for_each(
            |(slice, (src, dst))| {
                let w = weights.map(|w| {
                    let start = (slice * n_per_row) % w.len().max(1);
                    &w[start..(start + n_per_row).min(w.len())]
                });
                src.par_chunks(chunk * n_per_row)
                    .zip(dst.par_chunks_mut(chunk * row_bytes))
                    .try_for_each(|(s, d)| codecs::quantize_rows(job.ty, s, n_per_row, w, d))
            },
        )?;
        Ok(())
    }
}

/// Solve a job into a new buffer of the right size.
pub fn solve_to_vec(solver: &dyn Solver, job: &SolveJob<'_>, values: &[f32]) -> Result<Vec<u8>, SolverError> {
    let size = job.ty.tensor_size(job.ne).ok_or_else(|| SolverError::Shape { ne: job.ne.to_vec(), ty: job.ty })?;
    let mut out = vec![0u8; size as usize];
    solver.solve(job, values, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_whole_rows_of_at_least_16384_values() {
        assert_eq!(rows_per_chunk(4096), 4);
        assert_eq!(rows_per_chunk(5000), 4);
        assert_eq!(rows_per_chunk(32768), 1);
        assert_eq!(rows_per_chunk(0), 16384);
    }

    #[test]
    fn covariance_is_refused_by_the_codec_solver() {
        let values = vec![0.5f32; 64];
        let cov = vec![0f32; 32 * 32];
        let job = SolveJob {
            name: "blk.0.attn_q.weight",
            ne: &[32, 2],
            ty: GgmlType::Q8_0,
            stats: TensorStats::Covariance { n: 32, values: &cov },
        };
        let err = solve_to_vec(&CodecSolver, &job, &values).unwrap_err();
        assert!(matches!(err, SolverError::StatsUnsupported { stats: "covariance", .. }), "{err}");
        assert_eq!(err.to_string(), "the codec solver cannot use covariance statistics");
    }

    #[test]
    fn codec_solver_matches_the_row_codec_and_ignores_thread_count() {
        let values: Vec<f32> = (0..256 * 8).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let imatrix: Vec<f32> = (0..256).map(|i| 1.0 + (i % 7) as f32).collect();
        let job = SolveJob { name: "t", ne: &[256, 8], ty: GgmlType::Q4_K, stats: TensorStats::Diagonal(&imatrix) };
        let a = solve_to_vec(&CodecSolver, &job, &values).unwrap();
        let mut b = vec![0u8; a.len()];
        codecs::quantize_rows(GgmlType::Q4_K, &values, 256, Some(&imatrix), &mut b).unwrap();
        assert_eq!(a, b);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(one.install(|| solve_to_vec(&CodecSolver, &job, &values).unwrap()), a);
        // Wrong value count is a typed error, not a panic.
        assert!(matches!(solve_to_vec(&CodecSolver, &job, &values[1..]), Err(SolverError::Size { .. })));
    }
}
