//! One model's line of the comparison: what its files weigh and what was measured. A row serializes to one
//! entry of the comparison's `models` array; the field names and their order are part of the interface (the
//! file `plan --quality` reads).

use std::path::Path;

use quantforge_formats::gguf::GgufFile;
use quantforge_formats::hf::HfModel;
use quantforge_quant::checkpoint::QuantizedCheckpoint;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::kld::{Estimate, KldReport};
use crate::mmlu::Score;

/// The figures of one model.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// File or directory name (made unique among the rows).
    pub label: String,
    pub path: String,
    #[serde(rename = "base")]
    pub is_base: bool,
    /// Bytes on disk (GGUF file, or the HF directory's safetensors).
    pub file_bytes: u64,
    /// Weights (elements of every tensor) and their bytes.
    pub params: u64,
    pub weight_bytes: u64,
    /// Bits per weight over all tensors.
    pub bits_per_weight: f64,
    pub ppl: Option<Estimate>,
    /// PPL change against the base, in percent (0 for the base).
    pub delta_ppl_percent: Option<f64>,
    pub ln_ppl_ratio: Option<Estimate>,
    pub kld: Option<Estimate>,
    pub kld_p99: Option<f64>,
    pub same_top: Option<Estimate>,
    /// Overall MMLU score, when MMLU ran.
    pub mmlu: Option<Score>,
    pub tokens_per_second: Option<f64>,
    /// Chunks the figures were measured on.
    #[serde(skip)]
    pub chunks: Option<u64>,
}

impl Row {
    /// Sizes of the model at `path`.
    pub fn describe(path: &Path) -> Result<Row> {
        let (file_bytes, params, weight_bytes) = if HfModel::is_model_dir(path) {
            let m = HfModel::open(path)?;
            let ckpt = QuantizedCheckpoint::from_config(m.config(), m.dir())?;
            let weights = |name: &str, n: u64| ckpt.as_ref().map_or(n, |c| c.weights_in(&m, name, n));
            let (p, b) =
                m.tensors().fold((0, 0), |(p, b), (_, t)| (p + weights(&t.name, t.n_elements()), b + t.size()));
            (m.file_size(), p, b)
        } else {
            let f = GgufFile::open(path)?;
            (f.file_size(), f.n_elements(), f.tensor_bytes())
        };
        let label = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let bits_per_weight = quantforge_formats::ggml_type::bits_per_weight(weight_bytes, params);
        Ok(Row {
            label,
            path: path.display().to_string(),
            file_bytes,
            params,
            weight_bytes,
            bits_per_weight,
            ..Default::default()
        })
    }

    /// Figures of the base's perplexity run.
    pub fn set_base(&mut self, f: &BaseFigures) {
        self.is_base = true;
        self.ppl = est(f.ppl, f.ppl_uncertainty);
        self.tokens_per_second = f.tokens_per_second;
        self.chunks = f.n_chunks;
    }

    /// Figures of a candidate's KL-divergence run.
    pub fn set_candidate(&mut self, f: &KldFigures) {
        self.ppl = est(f.ppl, f.ppl_uncertainty);
        self.kld = est(f.kld, f.kld_uncertainty);
        self.kld_p99 = f.kld_p99;
        self.same_top = est(f.same_top, f.same_top_uncertainty);
        self.ln_ppl_ratio = est(f.ln_ppl_ratio, f.ln_ppl_ratio_uncertainty);
        self.tokens_per_second = f.tokens_per_second;
        self.chunks = f.n_chunks;
    }

    /// PPL change against the base, in percent.
    pub fn delta_ppl(&self, base: &Row) -> Option<f64> {
        Some(100.0 * (self.ppl?.value / base.ppl?.value - 1.0))
    }
}

fn est(value: Option<f64>, uncertainty: Option<f64>) -> Option<Estimate> {
    Some(Estimate { value: value?, uncertainty: uncertainty.unwrap_or(0.0) })
}

/// What the base's perplexity run contributes to its row (and to the cache).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaseFigures {
    pub ppl: Option<f64>,
    pub ppl_uncertainty: Option<f64>,
    /// Tokens evaluated per second of the base's forward passes.
    pub tokens_per_second: Option<f64>,
    /// [`super::cache::hash_tokens`] of the text's tokens, which every candidate must reproduce.
    pub tokens: Option<String>,
    pub n_chunks: Option<u64>,
}

/// What a candidate's KL-divergence run contributes to its row (and to the cache).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KldFigures {
    pub n_chunks: Option<u64>,
    pub ppl: Option<f64>,
    pub ppl_uncertainty: Option<f64>,
    pub kld: Option<f64>,
    pub kld_uncertainty: Option<f64>,
    pub kld_p99: Option<f64>,
    pub same_top: Option<f64>,
    pub same_top_uncertainty: Option<f64>,
    pub ln_ppl_ratio: Option<f64>,
    pub ln_ppl_ratio_uncertainty: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

impl KldFigures {
    /// The figures of a KL-divergence report.
    pub fn of(r: &KldReport) -> KldFigures {
        let p99 = r.kld_percentiles.iter().find(|(l, _)| l == "99.0%").map(|(_, v)| *v);
        KldFigures {
            n_chunks: Some(r.n_chunks as u64),
            ppl: Some(r.ppl.value),
            ppl_uncertainty: Some(r.ppl.uncertainty),
            kld: Some(r.kld.value),
            kld_uncertainty: Some(r.kld.uncertainty),
            kld_p99: p99,
            same_top: Some(r.same_top.value),
            same_top_uncertainty: Some(r.same_top.uncertainty),
            ln_ppl_ratio: Some(r.ln_ppl_ratio.value),
            ln_ppl_ratio_uncertainty: Some(r.ln_ppl_ratio.uncertainty),
            tokens_per_second: Some(r.tokens_per_second()),
        }
    }
}

/// What an MMLU run contributes to a row: its overall score (the cache keeps the whole report).
#[derive(Clone, Debug, Deserialize)]
pub struct MmluFigures {
    pub overall: Score,
}

/// Append ` (2)`, ` (3)`... to labels that repeat.
pub fn label_uniquely(rows: &mut [Row]) {
    let original: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    for (i, row) in rows.iter_mut().enumerate() {
        let before = original[..i].iter().filter(|l| **l == original[i]).count();
        if before > 0 {
            row.label = format!("{} ({})", original[i], before + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_labels_are_numbered() {
        let mut rows: Vec<Row> =
            ["a", "b", "a", "a"].iter().map(|l| Row { label: l.to_string(), ..Default::default() }).collect();
        label_uniquely(&mut rows);
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["a", "b", "a (2)", "a (3)"]);
    }
}
