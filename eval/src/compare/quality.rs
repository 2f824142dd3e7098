//! A comparison read back as measured quality per quantization type: what `plan --quality FILE` ranks by when
//! FILE is the JSON of `eval compare --json`.
//!
//! Each row's type is its GGUF's `general.file_type` when the row's file can be opened (the path as written, or
//! relative to the comparison file's folder), else the type name its file name carries (`Q4_K_M.gguf`,
//! `model-Q4_K_M-imatrix.gguf`: the last `-`/`.`-separated part of the name that is a type). Rows of HF
//! directories, and rows whose name carries no type, give no entry. The base's KL divergence against itself
//! is 0. When several rows have the same type (a plain and an imatrix Q4_K_M), the best measured one counts:
//! it is the quality that type can reach.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::GgufFile;
use quantforge_quant::memory::{Quality, QualityTable};
use quantforge_quant::policy::FileType;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::kld::Estimate;

/// What a comparison row gives the table.
#[derive(Deserialize)]
struct QualityRow {
    label: String,
    path: String,
    #[serde(default)]
    base: bool,
    ppl: Option<Estimate>,
    kld: Option<Estimate>,
}

/// The top level of a comparison.
#[derive(Deserialize)]
struct QualityDocument {
    models: Vec<QualityRow>,
}

/// Whether `json` is a comparison (an object with a `models` array).
pub fn is_comparison(json: &Value) -> bool {
    json.get("models").is_some_and(Value::is_array)
}

/// The quality table of the comparison `json` read from `path`; `None` when `json` is not a comparison.
pub fn quality_table(path: &Path, json: &Value) -> Result<Option<QualityTable>> {
    if !is_comparison(json) {
        return Ok(None);
    }
    let doc = QualityDocument::deserialize(json).map_err(|source| EvalError::Json { path: path.into(), source })?;
    let folder = path.parent().unwrap_or(Path::new(""));
    let mut table = QualityTable::default();
    for row in &doc.models {
        let kld = if row.base { Some(0.0) } else { row.kld.map(|k| k.value) };
        let q = Quality { ppl: row.ppl.map(|p| p.value), kld };
        if q.ppl.is_none() && q.kld.is_none() {
            continue;
        }
        let Some(ftype) = row_type(row, folder) else { continue };
        match table.entries.iter_mut().find(|(f, _)| *f == ftype) {
            Some((_, old)) => {
                if better(&q, old) {
                    *old = q;
                }
            }
            None => table.entries.push((ftype, q)),
        }
    }
    if table.entries.is_empty() {
        return Err(EvalError::Comparison {
            path: path.into(),
            message: "no row gives a quantization type (a GGUF's general.file_type, or a type in its file name)".into(),
        });
    }
    Ok(Some(table))
}

/// `a` measured better than `b`: lower KLD when both have one, else lower PPL.
fn better(a: &Quality, b: &Quality) -> bool {
    match (a.kld, b.kld, a.ppl, b.ppl) {
        (Some(x), Some(y), _, _) => x < y,
        (_, _, Some(x), Some(y)) => x < y,
        _ => false,
    }
}

/// The quantization type of a row: its GGUF's file type, else the type its name carries.
fn row_type(row: &QualityRow, folder: &Path) -> Option<FileType> {
    let written = PathBuf::from(&row.path);
    let file = if written.exists() || written.is_absolute() { written } else { folder.join(&written) };
    if file.is_dir() {
        return None;
    }
    if file.is_file() {
        if let Some(t) = GgufFile::open(&file).ok().and_then(|g| gguf_type(&g)) {
            return Some(t);
        }
    }
    type_in_name(&row.label).or_else(|| type_in_name(&row.path))
}

/// A GGUF's `general.file_type`.
fn gguf_type(file: &GgufFile) -> Option<FileType> {
    let id = file.get("general.file_type")?.as_u64()?;
    FileType::from_id(u32::try_from(id).ok()?)
}

/// The type a file name carries: the last `-`/`.`-separated part of its name (extension dropped) that is a type.
fn type_in_name(name: &str) -> Option<FileType> {
    let file = Path::new(name).file_name()?.to_str()?;
    let stem = file.strip_suffix(".gguf").unwrap_or(file);
    stem.rsplit(['-', '.']).find_map(|part| part.parse::<FileType>().ok())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn types_come_from_names_when_files_are_gone() {
        assert_eq!(type_in_name("Q4_K_M.gguf"), Some(FileType::Q4_K_M));
        assert_eq!(type_in_name("dir/SmolLM2-135M.q8_0.gguf"), Some(FileType::Q8_0));
        assert_eq!(type_in_name("Q4_K_M-imatrix.gguf"), Some(FileType::Q4_K_M));
        assert_eq!(type_in_name("stories260K"), None);
        let doc = json!({"text": "t", "models": [
            {"label": "F16.gguf", "path": "/nowhere/F16.gguf", "base": true, "ppl": {"value": 28.5, "uncertainty": 1.0},
             "kld": null},
            {"label": "Q4_K_M.gguf", "path": "/nowhere/Q4_K_M.gguf", "base": false,
             "ppl": {"value": 30.1, "uncertainty": 1.0}, "kld": {"value": 0.054, "uncertainty": 0.001}},
            {"label": "Q4_K_M-imatrix.gguf", "path": "/nowhere/Q4_K_M-imatrix.gguf", "base": false,
             "ppl": {"value": 29.2, "uncertainty": 1.0}, "kld": {"value": 0.031, "uncertainty": 0.001}},
            {"label": "hf", "path": "/nowhere/hf", "base": false, "ppl": {"value": 28.5, "uncertainty": 1.0},
             "kld": {"value": 0.0, "uncertainty": 0.0}}
        ]});
        let t = quality_table(Path::new("c.json"), &doc).unwrap().unwrap();
        assert_eq!(t.get(FileType::F16), Some(Quality { ppl: Some(28.5), kld: Some(0.0) }));
        assert_eq!(t.get(FileType::Q4_K_M), Some(Quality { ppl: Some(29.2), kld: Some(0.031) }));
        assert_eq!(t.entries.len(), 2);
        assert!(quality_table(Path::new("q.json"), &json!({"types": {}})).unwrap().is_none());
        let none = json!({"models": [{"label": "hf", "path": "hf", "ppl": {"value": 1.0, "uncertainty": 0.0}}]});
        let err = quality_table(Path::new("c.json"), &none).unwrap_err().to_string();
        assert!(err.contains("c.json") && err.contains("no row"), "{err}");
    }
}
