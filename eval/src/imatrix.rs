//! Importance matrices as `llama-imatrix` collects them (`tools/imatrix/imatrix.cpp` at llama.cpp
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62): for every block matrix product, Σ x² per input column over every
//! token of every chunk (f32 sums, one token count per matrix), with chunks made as for perplexity (n_ctx
//! tokens, the first replaced by BOS when the model adds one). For a mixture-of-experts model (the
//! `GGML_OP_MUL_MAT_ID` branch of `collect_imatrix` and `save_imatrix` at llama.cpp 0c1e57098) each stacked
//! expert tensor (`ffn_{gate,up,down}_exps`, multiplied by `ggml_mul_mat_id`) gets Σ x² and a token count per
//! expert, over the rows routed to that expert (an expert no token reached keeps zero sums and a zero count);
//! the router `ffn_gate_inp` and the shared expert's matrices are plain matrix products. Written in llama.cpp's
//! GGUF imatrix layout (`<weight>.in_sum2`, `<weight>.counts`, `imatrix.*` keys) or its legacy `.dat` layout;
//! both load in `quantforge quantize --imatrix` and in llama-quantize. `output.weight` is not collected
//! (llama-imatrix's default without `--process-output`).
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use quantforge_formats::gguf::{GgufValue, GgufWriter, TensorSpec};
use quantforge_formats::{AtomicFile, GgmlType};
use quantforge_quant::progress::Progress;

use crate::chunking::{check_ctx, chunks};
use crate::error::Result;
use crate::model::LlamaModel;

/// Σ x² per column of one matrix's input, and the number of rows (tokens) summed: one count for a plain
/// matrix; for a stacked expert tensor, `n_expert` counts and `sums` holding each expert's columns in turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub sums: Vec<f32>,
    pub counts: Vec<u64>,
}

/// A collected importance matrix.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    pub entries: BTreeMap<String, Stats>,
    pub chunk_count: u32,
    pub chunk_size: u32,
}

/// Run `model` over `tokens` in chunks of `n_ctx` (at most `max_chunks`) and collect Σ x².
pub fn collect(
    model: &LlamaModel,
    tokens: &[u32],
    bos: Option<u32>,
    n_ctx: usize,
    max_chunks: Option<usize>,
    progress: &dyn Progress,
) -> Result<Collected> {
    // The expert count was checked against the registry's limits when the configuration was read.
    let n_expert = model.config().moe.as_ref().map_or(1, |m| m.n_expert.max(1));
    check_ctx(model, n_ctx)?;
    let chunks = chunks(tokens, bos, n_ctx, max_chunks)?;
    let entries: Mutex<BTreeMap<String, Stats>> = Mutex::new(BTreeMap::new());
    let observe = |name: &str, expert: Option<usize>, input: &[f32], cols: usize| {
        let mut map = entries.lock().unwrap_or_else(|e| e.into_inner());
        let n_mat = if expert.is_some() { n_expert } else { 1 };
        let e = map
            .entry(name.to_string())
            .or_insert_with(|| Stats { sums: vec![0.0; cols * n_mat], counts: vec![0; n_mat] });
        let slot = expert.unwrap_or(0).min(n_mat - 1);
        // Row after row, as llama.cpp accumulates: e.values[j] += x[j]^2 in f32.
        for row in input.chunks_exact(cols) {
            for (s, &x) in e.sums[slot * cols..][..cols].iter_mut().zip(row) {
                *s += x * x;
            }
        }
        e.counts[slot] += (input.len() / cols) as u64;
    };
    progress.start(chunks.len(), 0);
    for (i, c) in chunks.iter().enumerate() {
        progress.item(i, &format!("chunk {}", i + 1), "");
        model.forward_observed(&[c.as_slice()], c.len(), Some(&observe))?;
        progress.item_done(i, 0);
    }
    progress.finish();
    let entries = entries.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(Collected { entries, chunk_count: chunks.len() as u32, chunk_size: n_ctx as u32 })
}

impl Collected {
    /// Write llama.cpp's GGUF imatrix layout: `general.type = imatrix`, `imatrix.datasets`,
    /// `imatrix.chunk_count`, `imatrix.chunk_size`; per weight (sorted by name) `<weight>.in_sum2` (F32, the raw
    /// sums, `[n_in, n_expert]` for a stacked expert tensor) and `<weight>.counts` (F32, one count per matrix,
    /// `[1, n_expert]`). As ggml writes them, trailing dimensions of 1 are dropped; every entry is written,
    /// experts without tokens included.
    pub fn write_gguf(&self, path: &Path, dataset: &str) -> Result<()> {
        let metadata = vec![
            ("general.type".to_string(), GgufValue::String("imatrix".into())),
            ("imatrix.datasets".to_string(), GgufValue::Array(vec![dataset.to_string()].into())),
            ("imatrix.chunk_count".to_string(), GgufValue::U32(self.chunk_count)),
            ("imatrix.chunk_size".to_string(), GgufValue::U32(self.chunk_size)),
        ];
        let mut specs = Vec::new();
        let stored = || self.entries.iter().filter(|(_, s)| !s.sums.is_empty() && !s.counts.is_empty());
        for (name, s) in stored() {
            let n_mat = s.counts.len() as u64;
            let (sums_ne, counts_ne) = if n_mat > 1 {
                (vec![s.sums.len() as u64 / n_mat, n_mat], vec![1, n_mat])
            } else {
                (vec![s.sums.len() as u64], vec![1])
            };
            specs.push(TensorSpec { name: format!("{name}.in_sum2"), ggml_type: GgmlType::F32, ne: sums_ne });
            specs.push(TensorSpec { name: format!("{name}.counts"), ggml_type: GgmlType::F32, ne: counts_ne });
        }
        let mut w = GgufWriter::create(path, &metadata, specs)?;
        for (_, s) in stored() {
            let bytes: Vec<u8> = s.sums.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_tensor_data(&bytes)?;
            let counts: Vec<u8> = s.counts.iter().flat_map(|&c| (c as f32).to_le_bytes()).collect();
            w.write_tensor_data(&counts)?;
        }
        w.finish()?;
        Ok(())
    }

    /// Write llama.cpp's legacy `.dat` layout: per entry (sorted) name, `ncall` (the largest count in chunks,
    /// rounded up: the chunk count for a plain matrix), and the mean of x² times `ncall` (1 times `ncall` for an
    /// expert without tokens; an entry without any token is left out); then the chunk count and the dataset
    /// name.
    pub fn write_dat(&self, path: &Path, dataset: &str) -> Result<()> {
        let chunk_size = u64::from(self.chunk_size.max(1));
        let stored: Vec<(&String, &Stats)> = self
            .entries
            .iter()
            .filter(|(_, s)| !s.sums.is_empty() && s.counts.iter().any(|&c| c > 0))
            .filter(|(_, s)| s.sums.len().is_multiple_of(s.counts.len()))
            .collect();
        let mut out = Vec::new();
        out.extend_from_slice(&(stored.len() as i32).to_le_bytes());
        for (name, s) in stored {
            let max = s.counts.iter().copied().max().unwrap_or(0);
            let ncall = max.div_ceil(chunk_size) as i32;
            out.extend_from_slice(&(name.len() as i32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&ncall.to_le_bytes());
            out.extend_from_slice(&(s.sums.len() as i32).to_le_bytes());
            let per_mat = s.sums.len() / s.counts.len();
            for (sums, &count) in s.sums.chunks_exact(per_mat).zip(&s.counts) {
                for &v in sums {
                    let (v, c) = if count == 0 { (1.0, 1.0) } else { (v, count as f32) };
                    out.extend_from_slice(&(v / c * ncall as f32).to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&(self.chunk_count as i32).to_le_bytes());
        out.extend_from_slice(&(dataset.len() as i32).to_le_bytes());
        out.extend_from_slice(dataset.as_bytes());
        let mut f = AtomicFile::create(path)?;
        f.write_all(&out)?;
        f.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quantforge_formats::gguf::GgufFile;
    use quantforge_quant::imatrix::Imatrix;

    /// Two experts of 2 columns, the second without tokens; a plain matrix; an expert tensor no token reached.
    fn collected() -> Collected {
        let stats = |sums: Vec<f32>, counts: Vec<u64>| Stats { sums, counts };
        let entries = BTreeMap::from([
            ("blk.0.ffn_up_exps.weight".to_string(), stats(vec![6.0, 9.0, 0.0, 0.0], vec![3, 0])),
            ("blk.0.attn_q.weight".to_string(), stats(vec![8.0, 4.0], vec![8])),
            ("blk.1.ffn_up_exps.weight".to_string(), stats(vec![0.0; 4], vec![0, 0])),
        ]);
        Collected { entries, chunk_count: 2, chunk_size: 4 }
    }

    #[test]
    fn expert_entries_keep_a_count_per_expert_in_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let (g, d) = (dir.path().join("m.gguf"), dir.path().join("m.dat"));
        collected().write_gguf(&g, "t.txt").unwrap();
        collected().write_dat(&d, "t.txt").unwrap();
        let f = GgufFile::open(&g).unwrap();
        let ne = |n: &str| f.tensor(n).unwrap().ne.clone();
        assert_eq!(ne("blk.0.ffn_up_exps.weight.in_sum2"), [2, 2]);
        assert_eq!(ne("blk.0.ffn_up_exps.weight.counts"), [1, 2]);
        assert_eq!((ne("blk.0.attn_q.weight.in_sum2"), ne("blk.0.attn_q.weight.counts")), (vec![2], vec![1]));
        // Means per expert; an expert without tokens weighs 1 (llama-quantize's reading of both layouts).
        let (a, b) = (Imatrix::load(&g).unwrap(), Imatrix::load(&d).unwrap());
        for m in [&a, &b] {
            assert_eq!(m.get("blk.0.ffn_up_exps.weight").unwrap(), [2.0, 3.0, 1.0, 1.0]);
            assert_eq!(m.get("blk.0.attn_q.weight").unwrap(), [1.0, 0.5]);
        }
        // The GGUF layout keeps the untouched tensor (all weights 1); the legacy one drops it, as llama.cpp does.
        assert_eq!(a.get("blk.1.ffn_up_exps.weight").unwrap(), [1.0; 4]);
        assert!(b.get("blk.1.ffn_up_exps.weight").is_none());
    }
}
