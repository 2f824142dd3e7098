//! The planner against llama-quantize's own output files: for every golden file in
//! `fixtures/golden/llama-quantize/` (`<model>-[imat-]<TYPE>.gguf`, made from `<model>-f32.gguf` by llama.cpp
//! b9928), the tensor order and every tensor's type must be the ones llama-quantize wrote.
//!
//! `QUANTFORGE_GOLDEN_DIR` may point at another folder with the same layout.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::GgufFile;
use quantforge_quant::policy::{plan_all, FileType, ModelInfo, PolicyOptions, TensorDesc};

fn golden_dir() -> PathBuf {
    std::env::var_os("QUANTFORGE_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden"))
}

/// `synth-tiny-imat-Q4_K_M.gguf` → (`synth-tiny`, imatrix used, Q4_K_M).
fn parse_name(file_name: &str) -> Option<(String, bool, FileType)> {
    let stem = file_name.strip_suffix(".gguf")?;
    let (head, ty) = stem.rsplit_once('-')?;
    let ftype = ty.parse().ok()?;
    match head.strip_suffix("-imat") {
        Some(model) => Some((model.to_string(), true, ftype)),
        None => Some((head.to_string(), false, ftype)),
    }
}

fn check(input: &GgufFile, golden: &GgufFile, ftype: FileType, has_imatrix: bool) -> Result<(), String> {
    let model = ModelInfo::from_gguf(input).map_err(|e| e.to_string())?;
    let tensors: Vec<TensorDesc> =
        input.tensors().iter().map(|t| TensorDesc { name: &t.name, ne: &t.ne, src_type: t.ggml_type }).collect();
    let options = PolicyOptions { has_imatrix, ..PolicyOptions::new(ftype) };
    let planned = plan_all(model, options, &tensors).map_err(|e| e.to_string())?;

    let want: Vec<(&str, _)> = golden.tensors().iter().map(|t| (t.name.as_str(), t.ggml_type)).collect();
    let got: Vec<(&str, _)> = planned.iter().map(|p| (p.tensor.name, p.decision.ty)).collect();
    if got.len() != want.len() {
        return Err(format!("{} tensors planned, {} in the file", got.len(), want.len()));
    }
    for (g, w) in got.iter().zip(&want) {
        if g != w {
            return Err(format!("planned {} as {}, llama-quantize wrote {} as {}", g.0, g.1, w.0, w.1));
        }
    }
    let file_type = golden.get("general.file_type").and_then(|v| v.as_u64());
    if file_type != Some(u64::from(ftype.id())) {
        return Err(format!("general.file_type is {file_type:?}, expected {}", ftype.id()));
    }
    Ok(())
}

#[test]
fn planner_reproduces_every_golden_file() {
    let dir = golden_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("llama-quantize"))
        .expect("golden folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();

    let mut failures = Vec::new();
    let mut checked = 0;
    for path in &files {
        let file_name = path.file_name().unwrap().to_str().unwrap();
        let (model, has_imatrix, ftype) =
            parse_name(file_name).unwrap_or_else(|| panic!("unexpected golden file name {file_name}"));
        let input = GgufFile::open(dir.join(format!("{model}-f32.gguf"))).expect("input model");
        let golden = GgufFile::open(path).expect("golden file");
        if let Err(e) = check(&input, &golden, ftype, has_imatrix) {
            failures.push(format!("{file_name}: {e}"));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // 18 plain and 14 imatrix files of synth-tiny at least.
    assert!(checked >= 32, "only {checked} golden files found in {}", dir.display());
}

#[test]
fn golden_file_names_parse() {
    assert_eq!(parse_name("synth-tiny-imat-Q2_K_S.gguf"), Some(("synth-tiny".into(), true, FileType::Q2_K_S)));
    assert_eq!(parse_name("synth-tied-Q4_K_M.gguf"), Some(("synth-tied".into(), false, FileType::Q4_K_M)));
    assert_eq!(parse_name("synth-tiny-BF16.gguf"), Some(("synth-tiny".into(), false, FileType::BF16)));
}
