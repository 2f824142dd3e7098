//! A plan for tensors coded from the caller's own calibration statistics (GPTQ into GGUF types) gives every
//! tensor the type llama-quantize gives it when it has an importance matrix: the golden `imat-*` files judge.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::GgufFile;
use quantforge_quant::pipeline::{self, QuantizeOptions};
use quantforge_quant::policy::QuantOption;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden").join(rel)
}

#[test]
fn a_calibrated_plan_has_the_imatrix_mix_of_every_type() {
    let input = GgufFile::open(fixture("synth-tiny-f32.gguf")).unwrap();
    let goldens = std::fs::read_dir(fixture("llama-quantize")).unwrap();
    let mut names: Vec<String> = goldens.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.retain(|n| n.starts_with("synth-tiny-imat-"));
    names.sort();
    assert!(names.len() >= 20, "{names:?}");
    let mut differs_without = 0;
    for name in &names {
        let ftype = name.trim_start_matches("synth-tiny-imat-").trim_end_matches(".gguf");
        let golden = GgufFile::open(fixture(&format!("llama-quantize/{name}"))).unwrap();
        let want: Vec<(String, String)> =
            golden.tensors().iter().map(|t| (t.name.clone(), t.ggml_type.name().to_string())).collect();
        let mut o = QuantizeOptions::new(QuantOption::parse(ftype).unwrap().ftype);
        let types = |o: &QuantizeOptions| -> Option<Vec<(String, String)>> {
            let plan = pipeline::plan(&input, o).ok()?;
            Some(plan.tensors.iter().map(|t| (t.name.clone(), t.dst_type.name().to_string())).collect())
        };
        if types(&o).as_ref() != Some(&want) {
            differs_without += 1;
        }
        o.calibrated = true;
        assert_eq!(types(&o).as_ref(), Some(&want), "{ftype}");
    }
    // The types that need an importance matrix, and IQ4_XS's first ffn_down, differ without one.
    assert!(differs_without >= 8, "{differs_without}");
}
