//! Ranking the quantization types that fit: by measured quality when there are measurements, otherwise by
//! bits per weight (more bits, less quantization error).
//!
//! Quality table schema (`--quality FILE` also takes the JSON of `eval compare`, turned into this table by the
//! evaluator's `compare::quality`):
//!
//! ```json
//! { "model": "SmolLM2-135M-Instruct",          // optional, informational
//!   "types": {                                 // or these entries directly at the top level
//!     "Q8_0":   { "ppl": 28.6547, "kld": 0.004097 },
//!     "Q4_K_M": { "ppl": 30.0869, "kld": 0.059070 },
//!     "Q4_0":   29.9 } }                        // a bare number is a perplexity
//! ```
//!
//! Type names are llama.cpp's, case-insensitive. `kld` is the mean KL divergence against the unquantized
//! model, `ppl` the perplexity; both lower is better. Types are ranked by `kld` when every measured
//! candidate has one, else by `ppl`; unmeasured candidates follow, by bits per weight.

use std::cmp::Ordering;
use std::path::Path;

use serde_json::Value;

use super::MemoryError;
use crate::policy::FileType;

/// Measured quality of one type.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quality {
    pub ppl: Option<f64>,
    pub kld: Option<f64>,
}

/// Quality measurements by type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QualityTable {
    pub entries: Vec<(FileType, Quality)>,
}

impl QualityTable {
    /// Parse the JSON schema above; `path` is for messages.
    pub fn parse(path: &Path, json: &Value) -> Result<QualityTable, MemoryError> {
        let err = |message: String| MemoryError::Quality { path: path.into(), message };
        let root = json.as_object().ok_or_else(|| err("expected a JSON object".into()))?;
        let types = match root.get("types") {
            Some(Value::Object(t)) => t,
            Some(_) => return Err(err("'types' must be an object of TYPE -> {ppl, kld}".into())),
            None => root,
        };
        let mut entries = Vec::new();
        for (name, v) in types {
            if name == "model" && !root.contains_key("types") {
                continue;
            }
            let ftype: FileType = name.parse().map_err(|_| err(format!("unknown quantization type '{name}'")))?;
            let number = |key: &str, v: Option<&Value>| -> Result<Option<f64>, MemoryError> {
                match v {
                    None | Some(Value::Null) => Ok(None),
                    Some(x) => match x.as_f64() {
                        Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
                        _ => Err(err(format!("{name}.{key} must be a non-negative number, found {x}"))),
                    },
                }
            };
            let q = match v {
                Value::Number(_) => Quality { ppl: number("ppl", Some(v))?, kld: None },
                Value::Object(o) => Quality { ppl: number("ppl", o.get("ppl"))?, kld: number("kld", o.get("kld"))? },
                _ => return Err(err(format!("{name}: expected a number (ppl) or an object {{ppl, kld}}"))),
            };
            if q.ppl.is_none() && q.kld.is_none() {
                return Err(err(format!("{name}: neither ppl nor kld given")));
            }
            if entries.iter().any(|(f, _)| *f == ftype) {
                return Err(err(format!("{name}: listed twice")));
            }
            entries.push((ftype, q));
        }
        Ok(QualityTable { entries })
    }

    pub fn get(&self, ftype: FileType) -> Option<Quality> {
        self.entries.iter().find(|(f, _)| *f == ftype).map(|(_, q)| *q)
    }
}

/// What the ranking was based on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankBy {
    Kld,
    Ppl,
    BitsPerWeight,
}

impl RankBy {
    pub fn name(self) -> &'static str {
        match self {
            RankBy::Kld => "KL divergence (measured)",
            RankBy::Ppl => "perplexity (measured)",
            RankBy::BitsPerWeight => "bits per weight",
        }
    }
}

/// One type that fits.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub ftype: FileType,
    pub bits_per_weight: f64,
    pub quality: Option<Quality>,
}

/// Order `candidates` best first (see the module docs) and say on what basis.
pub fn rank(mut candidates: Vec<Candidate>, table: Option<&QualityTable>) -> (Vec<Candidate>, RankBy) {
    for c in &mut candidates {
        c.quality = table.and_then(|t| t.get(c.ftype));
    }
    let measured: Vec<&Quality> = candidates.iter().filter_map(|c| c.quality.as_ref()).collect();
    let by = if measured.is_empty() {
        RankBy::BitsPerWeight
    } else if measured.iter().all(|q| q.kld.is_some()) {
        RankBy::Kld
    } else if measured.iter().all(|q| q.ppl.is_some()) {
        RankBy::Ppl
    } else {
        // Mixed: some only kld, some only ppl. KLD where every one has it is not possible; prefer ppl
        // for those that have it and let the rest follow by bits per weight.
        RankBy::Ppl
    };
    let key = |c: &Candidate| -> Option<f64> {
        let q = c.quality?;
        match by {
            RankBy::Kld => q.kld,
            RankBy::Ppl => q.ppl,
            RankBy::BitsPerWeight => None,
        }
    };
    candidates.sort_by(|a, b| match (key(a), key(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => b.bits_per_weight.partial_cmp(&a.bits_per_weight).unwrap_or(Ordering::Equal),
    });
    (candidates, by)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cand(ftype: FileType, bpw: f64) -> Candidate {
        Candidate { ftype, bits_per_weight: bpw, quality: None }
    }

    #[test]
    fn ranks_by_measurement_then_bits() {
        let t = QualityTable::parse(
            Path::new("q.json"),
            &json!({"types": {"q8_0": {"ppl": 28.65, "kld": 0.0041}, "Q4_K_M": {"ppl": 30.09, "kld": 0.059},
                              "Q4_1": {"ppl": 28.64, "kld": 0.0029}}}),
        )
        .unwrap();
        let c = vec![
            cand(FileType::Q4_K_M, 4.9),
            cand(FileType::Q8_0, 8.5),
            cand(FileType::Q6_K, 6.6),
            cand(FileType::Q4_1, 5.0),
        ];
        let (r, by) = rank(c.clone(), Some(&t));
        assert_eq!(by, RankBy::Kld);
        let order: Vec<FileType> = r.iter().map(|c| c.ftype).collect();
        assert_eq!(order, [FileType::Q4_1, FileType::Q8_0, FileType::Q4_K_M, FileType::Q6_K]);
        let (r, by) = rank(c, None);
        assert_eq!(by, RankBy::BitsPerWeight);
        assert_eq!(r[0].ftype, FileType::Q8_0);
        // Top-level map with bare perplexities.
        let t = QualityTable::parse(Path::new("q.json"), &json!({"model": "x", "Q4_0": 29.9})).unwrap();
        assert_eq!(t.get(FileType::Q4_0), Some(Quality { ppl: Some(29.9), kld: None }));
    }

    #[test]
    fn rejects_bad_files() {
        let p = Path::new("q.json");
        for bad in
            [json!([1]), json!({"types": 3}), json!({"Q9_X": 1.0}), json!({"Q4_0": {"ppl": -1}}), json!({"Q4_0": {}})]
        {
            assert!(matches!(QualityTable::parse(p, &bad), Err(MemoryError::Quality { .. })), "{bad}");
        }
    }
}
