//! One model's line of the comparison: what its files weigh and what was measured.

use std::path::Path;

use anyhow::Result;
use quantforge_eval::KldReport;
use quantforge_formats::gguf::GgufFile;
use quantforge_formats::hf::HfModel;
use serde_json::{json, Value};

/// A value and its ± uncertainty.
pub type Est = (f64, f64);

/// The figures of one model.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// File or directory name (made unique among the rows).
    pub label: String,
    pub path: String,
    pub is_base: bool,
    /// Bytes on disk (GGUF file, or the HF directory's safetensors).
    pub file_bytes: u64,
    /// Weights (elements of every tensor) and their bytes.
    pub params: u64,
    pub weight_bytes: u64,
    pub chunks: Option<u64>,
    pub ppl: Option<Est>,
    pub tokens_per_second: Option<f64>,
    pub kld: Option<Est>,
    pub kld_p99: Option<f64>,
    pub same_top: Option<Est>,
    pub ln_ppl_ratio: Option<Est>,
    /// `overall` of an MMLU report: n, correct, accuracy, stderr.
    pub mmlu: Option<Value>,
}

impl Row {
    /// Sizes of the model at `path`.
    pub fn describe(path: &Path) -> Result<Row> {
        let (file_bytes, params, weight_bytes) = if HfModel::is_model_dir(path) {
            let m = HfModel::open(path)?;
            let (p, b) = m.tensors().fold((0, 0), |(p, b), (_, t)| (p + t.n_elements(), b + t.size()));
            (m.file_size(), p, b)
        } else {
            let f = GgufFile::open(path)?;
            (f.file_size(), f.n_elements(), f.tensor_bytes())
        };
        let label = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Row { label, path: path.display().to_string(), file_bytes, params, weight_bytes, ..Default::default() })
    }

    /// Bits per weight over all tensors.
    pub fn bpw(&self) -> f64 {
        if self.params == 0 {
            0.0
        } else {
            8.0 * self.weight_bytes as f64 / self.params as f64
        }
    }

    /// Figures of the base's perplexity run.
    pub fn set_base(&mut self, v: &Value) {
        self.is_base = true;
        self.ppl = est(v, "ppl", "ppl_uncertainty");
        self.tokens_per_second = v["tokens_per_second"].as_f64();
        self.chunks = v["n_chunks"].as_u64();
    }

    /// Figures of a candidate's KL-divergence run.
    pub fn set_candidate(&mut self, v: &Value) {
        self.ppl = est(v, "ppl", "ppl_uncertainty");
        self.kld = est(v, "kld", "kld_uncertainty");
        self.kld_p99 = v["kld_p99"].as_f64();
        self.same_top = est(v, "same_top", "same_top_uncertainty");
        self.ln_ppl_ratio = est(v, "ln_ppl_ratio", "ln_ppl_ratio_uncertainty");
        self.tokens_per_second = v["tokens_per_second"].as_f64();
        self.chunks = v["n_chunks"].as_u64();
    }

    /// The overall figures of an MMLU report.
    pub fn set_mmlu(&mut self, report: &Value) {
        self.mmlu = Some(report["overall"].clone());
    }

    /// MMLU accuracy and its standard error.
    pub fn mmlu_accuracy(&self) -> Option<Est> {
        let m = self.mmlu.as_ref()?;
        Some((m["accuracy"].as_f64()?, m["stderr"].as_f64()?))
    }

    /// PPL change against the base, in percent.
    pub fn delta_ppl(&self, base: &Row) -> Option<f64> {
        Some(100.0 * (self.ppl?.0 / base.ppl?.0 - 1.0))
    }
}

fn est(v: &Value, value: &str, unc: &str) -> Option<Est> {
    Some((v[value].as_f64()?, v[unc].as_f64().unwrap_or(0.0)))
}

/// What a KL-divergence run contributes to a row (and to the cache).
pub fn kld_figures(r: &KldReport) -> Value {
    let p99 = r.kld_percentiles.iter().find(|(l, _)| l == "99.0%").map(|(_, v)| *v);
    json!({
        "n_chunks": r.n_chunks,
        "ppl": r.ppl.value,
        "ppl_uncertainty": r.ppl.uncertainty,
        "kld": r.kld.value,
        "kld_uncertainty": r.kld.uncertainty,
        "kld_p99": p99,
        "same_top": r.same_top.value,
        "same_top_uncertainty": r.same_top.uncertainty,
        "ln_ppl_ratio": r.ln_ppl_ratio.value,
        "ln_ppl_ratio_uncertainty": r.ln_ppl_ratio.uncertainty,
        "tokens_per_second": r.tokens_per_second(),
    })
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
