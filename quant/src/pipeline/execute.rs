//! Running a [`QuantizePlan`]: one tensor in memory at a time, rows quantized in parallel.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::{GgufWriter, TensorSpec};
use quantforge_formats::{check_not_input, AtomicFile};
use rayon::prelude::*;

use super::source::{to_f32, ModelSource};
use super::{imatrix_entry, split, PipelineError, PlannedTensor, QuantizeOptions, QuantizePlan};
use crate::codecs;
use crate::progress::Progress;

/// Rows per parallel work item: whole rows of at least 16384 values, as llama-quantize chunks its work.
fn rows_per_chunk(n_per_row: usize) -> usize {
    16384usize.div_ceil(n_per_row.max(1)).max(1)
}

/// Write the quantized model to `output` (or its split files). Returns the paths written.
pub fn execute(
    input: &dyn ModelSource,
    plan: &QuantizePlan,
    options: &QuantizeOptions,
    output: &Path,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>, PipelineError> {
    let paths = plan.output_paths(output);
    for p in &paths {
        let mut inputs: Vec<&Path> = input.input_paths();
        if let Some(i) = &options.imatrix {
            inputs.push(Path::new(&i.file_arg));
        }
        check_not_input(p, &inputs)?;
    }
    let imatrix = options.imatrix.as_ref().map(|i| &i.matrix);
    progress.start(plan.tensors.len(), plan.output_bytes());
    let mut pending: Vec<AtomicFile> = Vec::with_capacity(paths.len());
    let mut scratch = Scratch::default();
    let mut index = 0;
    for (split_no, path) in paths.iter().enumerate() {
        let tensors: Vec<&PlannedTensor> = plan.tensors.iter().filter(|t| t.split == split_no).collect();
        let metadata = if plan.n_splits <= 1 {
            plan.metadata.clone()
        } else {
            let keys = split::split_keys(split_no, plan.n_splits, plan.tensors.len());
            let mut m = if split_no == 0 { plan.metadata.clone() } else { Vec::new() };
            m.extend(keys);
            m
        };
        let specs = tensors
            .iter()
            .map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.dst_type, ne: t.ne.clone() })
            .collect();
        let mut writer = GgufWriter::create(path, &metadata, specs)?;
        for t in tensors {
            progress.item(index, &t.name, &describe(t));
            let src = input.bytes(t.source)?;
            if t.quantize {
                let weights = imatrix_entry(imatrix, &t.name, &t.ne)?;
                let bytes = scratch.quantize(&src, t, weights)?;
                writer.write_tensor(&t.name, bytes)?;
            } else {
                writer.write_tensor(&t.name, &src)?;
            }
            drop(src);
            input.release(t.source);
            progress.item_done(index, t.size);
            index += 1;
        }
        pending.push(writer.finish_deferred()?);
    }
    for f in pending {
        f.commit()?;
    }
    progress.finish();
    Ok(paths)
}

fn describe(t: &PlannedTensor) -> String {
    let shape: Vec<String> = t.ne.iter().map(u64::to_string).collect();
    let mut s = format!("[{}] {} -> {}", shape.join(", "), t.src_type, t.dst_type);
    if let Some(f) = t.fallback_from {
        s.push_str(&format!(" (fallback from {f})"));
    }
    if !t.quantize {
        s.push_str(" (copy)");
    }
    s
}

/// Buffers reused from tensor to tensor.
#[derive(Default)]
struct Scratch {
    f32s: Vec<f32>,
    out: Vec<u8>,
}

impl Scratch {
    fn quantize(&mut self, src: &[u8], t: &PlannedTensor, weights: Option<&[f32]>) -> Result<&[u8], PipelineError> {
        let codec_err = |source| PipelineError::Codec { tensor: t.name.clone(), source };
        let n = t.ne.iter().product::<u64>() as usize;
        self.out.clear();
        if n == 0 {
            return Ok(&self.out);
        }
        self.f32s.resize(n, 0.0);
        to_f32(t.src_type, src, &mut self.f32s).map_err(codec_err)?;
        if let Some(index) = first_non_finite(&self.f32s) {
            return Err(PipelineError::NonFinite { tensor: t.name.clone(), index, value: self.f32s[index] });
        }
        self.out.resize(t.size as usize, 0);
        let n_per_row = t.ne[0] as usize;
        let row_bytes =
            t.dst_type.row_size(t.ne[0]).ok_or_else(|| PipelineError::Shape { tensor: t.name.clone() })? as usize;
        // Expert tensors (ne[2] > 1) use one imatrix slice of ne[0] weights per expert.
        let rows_per_slice = (t.ne.get(1).copied().unwrap_or(1) as usize).max(1);
        let slice_values = rows_per_slice * n_per_row;
        let chunk = rows_per_chunk(n_per_row);
        self.f32s
            .par_chunks(slice_values)
            .zip(self.out.par_chunks_mut(rows_per_slice * row_bytes))
            .enumerate()
            .try_for_each(|(slice, (src, dst))| {
                let w = weights.map(|w| {
                    let start = (slice * n_per_row) % w.len().max(1);
                    &w[start..start + n_per_row]
                });
                src.par_chunks(chunk * n_per_row)
                    .zip(dst.par_chunks_mut(chunk * row_bytes))
                    .try_for_each(|(s, d)| codecs::quantize_rows(t.dst_type, s, n_per_row, w, d))
            })
            .map_err(codec_err)?;
        Ok(&self.out)
    }
}

/// Index of the first NaN or infinity. Checked a chunk at a time with a branch-free fold that vectorizes;
/// only a chunk that has one is searched again.
fn first_non_finite(values: &[f32]) -> Option<usize> {
    const CHUNK: usize = 1 << 16;
    let chunk = values
        .par_chunks(CHUNK)
        .position_first(|c| c.iter().fold(false, |bad, v| bad | (v.to_bits() & 0x7f80_0000 == 0x7f80_0000)))?;
    let start = chunk * CHUNK;
    values[start..].iter().position(|v| !v.is_finite()).map(|i| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_non_finite_value() {
        let mut v = vec![0.5f32; 300_000];
        assert_eq!(first_non_finite(&v), None);
        v[200_001] = f32::INFINITY;
        v[250_000] = f32::NAN;
        assert_eq!(first_non_finite(&v), Some(200_001));
        v[3] = -f32::NAN;
        assert_eq!(first_non_finite(&v), Some(3));
    }

    #[test]
    fn chunks_hold_whole_rows_of_at_least_16384_values() {
        assert_eq!(rows_per_chunk(4096), 4);
        assert_eq!(rows_per_chunk(5000), 4);
        assert_eq!(rows_per_chunk(32768), 1);
        assert_eq!(rows_per_chunk(0), 16384);
    }
}
