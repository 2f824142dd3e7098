//! Importance matrices as `llama-imatrix` collects them (`tools/imatrix/imatrix.cpp` at llama.cpp
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62): for every block matrix product, Σ x² per input column over every
//! token of every chunk (f32 sums, one token count per matrix), with chunks made as for perplexity (n_ctx
//! tokens, the first replaced by BOS when the model adds one). Written in llama.cpp's GGUF imatrix layout
//! (`<weight>.in_sum2`, `<weight>.counts`, `imatrix.*` keys) or its legacy `.dat` layout; both load in
//! `quantforge quantize --imatrix` and in llama-quantize. `output.weight` is not collected (llama-imatrix's
//! default without `--process-output`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use quantforge_formats::gguf::{GgufValue, GgufWriter, TensorSpec};
use quantforge_formats::{AtomicFile, GgmlType};
use quantforge_quant::progress::Progress;

use crate::chunking::{check_ctx, chunks};
use crate::error::Result;
use crate::model::LlamaModel;

/// Σ x² per column of one matrix's input, and the number of rows (tokens) summed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub sums: Vec<f32>,
    pub count: u64,
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
    let cfg = model.config();
    if cfg.moe.is_some() {
        return Err(crate::EvalError::MoeCalibration { arch: cfg.arch.gguf_name, what: "the importance matrix" });
    }
    check_ctx(model, n_ctx)?;
    let chunks = chunks(tokens, bos, n_ctx, max_chunks)?;
    let entries: Mutex<BTreeMap<String, Stats>> = Mutex::new(BTreeMap::new());
    let observe = |name: &str, input: &[f32], cols: usize| {
        let mut map = entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(name.to_string()).or_insert_with(|| Stats { sums: vec![0.0; cols], count: 0 });
        // Row after row, as llama.cpp accumulates: e.values[j] += x[j]^2 in f32.
        for row in input.chunks_exact(cols) {
            for (s, &x) in e.sums.iter_mut().zip(row) {
                *s += x * x;
            }
        }
        e.count += (input.len() / cols) as u64;
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
    /// sums) and `<weight>.counts` (F32, one count).
    pub fn write_gguf(&self, path: &Path, dataset: &str) -> Result<()> {
        let metadata = vec![
            ("general.type".to_string(), GgufValue::String("imatrix".into())),
            ("imatrix.datasets".to_string(), GgufValue::Array(vec![dataset.to_string()].into())),
            ("imatrix.chunk_count".to_string(), GgufValue::U32(self.chunk_count)),
            ("imatrix.chunk_size".to_string(), GgufValue::U32(self.chunk_size)),
        ];
        let mut specs = Vec::new();
        for (name, s) in &self.entries {
            specs.push(TensorSpec {
                name: format!("{name}.in_sum2"),
                ggml_type: GgmlType::F32,
                ne: vec![s.sums.len() as u64],
            });
            specs.push(TensorSpec { name: format!("{name}.counts"), ggml_type: GgmlType::F32, ne: vec![1] });
        }
        let mut w = GgufWriter::create(path, &metadata, specs)?;
        for s in self.entries.values() {
            let bytes: Vec<u8> = s.sums.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_tensor_data(&bytes)?;
            w.write_tensor_data(&(s.count as f32).to_le_bytes())?;
        }
        w.finish()?;
        Ok(())
    }

    /// Write llama.cpp's legacy `.dat` layout: per entry (sorted) name, `ncall` = chunks, and the mean of x²
    /// times `ncall`; then the chunk count and the dataset name.
    pub fn write_dat(&self, path: &Path, dataset: &str) -> Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.entries.len() as i32).to_le_bytes());
        let ncall = self.chunk_count.max(1) as f32;
        for (name, s) in &self.entries {
            out.extend_from_slice(&(name.len() as i32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(self.chunk_count as i32).to_le_bytes());
            out.extend_from_slice(&(s.sums.len() as i32).to_le_bytes());
            let count = s.count.max(1) as f32;
            for v in &s.sums {
                out.extend_from_slice(&(v / count * ncall).to_le_bytes());
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
