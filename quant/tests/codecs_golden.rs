//! Golden tests for the quantizers: every tensor of every `llama-quantize` (b9928) output in
//! `fixtures/golden/llama-quantize/` is re-quantized from `synth-tiny-f32.gguf` to the type the golden
//! file gave it, and the bytes must be identical. The `synth-tiny-imat-*` files were made with
//! `synth-tiny-imatrix.gguf`: the weight of column i of tensor W is `W.in_sum2[i] / W.counts[0]`
//! (as `load_imatrix` in `tools/quantize/quantize.cpp` computes it); tensors without an entry
//! (token_embd, output, norms) were quantized without one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use quantforge_formats::gguf::{GgufFile, TensorInfo};
use quantforge_quant::codecs::{can_quantize, quantize_rows};
use quantforge_quant::GgmlType;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden")).join(rel)
}

fn f32_data(file: &GgufFile, info: &TensorInfo) -> Vec<f32> {
    assert_eq!(info.ggml_type, GgmlType::F32, "{}", info.name);
    file.tensor_data(info).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Per-column importance weights by weight name, from a GGUF imatrix.
fn load_imatrix() -> BTreeMap<String, Vec<f32>> {
    let file = GgufFile::open(fixture("synth-tiny-imatrix.gguf")).expect("open imatrix");
    let mut out = BTreeMap::new();
    for info in file.tensors() {
        let Some(name) = info.name.strip_suffix(".in_sum2") else { continue };
        let counts = file.tensor(&format!("{name}.counts")).expect("counts tensor");
        let counts = f32_data(&file, counts);
        assert_eq!(counts.len(), 1, "{name}: dense tensors have one count");
        let sums = f32_data(&file, info);
        let count = counts[0];
        let w = if count > 0.0 { sums.iter().map(|s| s / count).collect() } else { vec![1.0; sums.len()] };
        out.insert(name.to_string(), w);
    }
    out
}

/// Re-quantize every tensor of a golden file; returns (matching, total) and prints a summary.
fn check_golden(name: &str, with_imatrix: bool) {
    let src = GgufFile::open(fixture("synth-tiny-f32.gguf")).expect("open f32 source");
    let golden = GgufFile::open(fixture(&format!("llama-quantize/{name}"))).expect("open golden");
    let imatrix = if with_imatrix { load_imatrix() } else { BTreeMap::new() };
    let mut matched = 0;
    let mut with_weights = 0;
    let mut mismatches = Vec::new();
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for info in golden.tensors() {
        let ty = info.ggml_type;
        assert!(can_quantize(ty), "{name}: {} has unsupported type {ty:?}", info.name);
        let src_info = src.tensor(&info.name).unwrap_or_else(|| panic!("{} missing in source", info.name));
        assert_eq!(src_info.ne, info.ne, "{}", info.name);
        let values = f32_data(&src, src_info);
        let n_per_row = info.ne[0] as usize;
        let weights = imatrix.get(&info.name).map(Vec::as_slice);
        with_weights += usize::from(weights.is_some());
        let expected = golden.tensor_data(info);
        let mut got = vec![0u8; expected.len()];
        quantize_rows(ty, &values, n_per_row, weights, &mut got).expect("quantize");
        let entry = by_type.entry(ty.name()).or_default();
        entry.1 += 1;
        if got == expected {
            matched += 1;
            entry.0 += 1;
        } else {
            let first = got.iter().zip(expected).position(|(a, b)| a != b).unwrap();
            let block = ty.type_size() as usize;
            let n_diff = got.chunks(block).zip(expected.chunks(block)).filter(|(a, b)| a != b).count();
            mismatches.push(format!(
                "{} ({}, imatrix: {}): first difference at byte {first} (block {}), {n_diff}/{} blocks differ",
                info.name,
                ty.name(),
                weights.is_some(),
                first / block,
                expected.len() / block
            ));
        }
    }
    let total = golden.tensors().len();
    let types: Vec<String> = by_type.iter().map(|(t, (m, n))| format!("{t} {m}/{n}")).collect();
    println!(
        "{name}: {matched}/{total} tensors byte-identical ({}); {with_weights} quantized with imatrix",
        types.join(", ")
    );
    if with_imatrix {
        // Every 2-D weight of both layers has an entry (token_embd and output do not).
        assert_eq!(with_weights, 14, "{name}: imatrix entries used");
    }
    assert!(mismatches.is_empty(), "{name}: {matched}/{total} match; mismatches:\n{}", mismatches.join("\n"));
}

macro_rules! golden_tests {
    ($($test:ident => $file:literal, $imatrix:literal;)*) => {
        $(
            #[test]
            fn $test() {
                check_golden($file, $imatrix);
            }
        )*
    };
}

golden_tests! {
    golden_f16 => "synth-tiny-F16.gguf", false;
    golden_bf16 => "synth-tiny-BF16.gguf", false;
    golden_q8_0 => "synth-tiny-Q8_0.gguf", false;
    golden_q4_0 => "synth-tiny-Q4_0.gguf", false;
    golden_q4_1 => "synth-tiny-Q4_1.gguf", false;
    golden_q5_0 => "synth-tiny-Q5_0.gguf", false;
    golden_q5_1 => "synth-tiny-Q5_1.gguf", false;
    golden_q2_k => "synth-tiny-Q2_K.gguf", false;
    golden_q3_k_s => "synth-tiny-Q3_K_S.gguf", false;
    golden_q3_k_m => "synth-tiny-Q3_K_M.gguf", false;
    golden_q3_k_l => "synth-tiny-Q3_K_L.gguf", false;
    golden_q4_k_s => "synth-tiny-Q4_K_S.gguf", false;
    golden_q4_k_m => "synth-tiny-Q4_K_M.gguf", false;
    golden_q5_k_s => "synth-tiny-Q5_K_S.gguf", false;
    golden_q5_k_m => "synth-tiny-Q5_K_M.gguf", false;
    golden_q6_k => "synth-tiny-Q6_K.gguf", false;
    golden_iq4_nl => "synth-tiny-IQ4_NL.gguf", false;
    golden_iq4_xs => "synth-tiny-IQ4_XS.gguf", false;
    golden_imat_q2_k => "synth-tiny-imat-Q2_K.gguf", true;
    golden_imat_q2_k_s => "synth-tiny-imat-Q2_K_S.gguf", true;
    golden_imat_q3_k_s => "synth-tiny-imat-Q3_K_S.gguf", true;
    golden_imat_q3_k_m => "synth-tiny-imat-Q3_K_M.gguf", true;
    golden_imat_q4_0 => "synth-tiny-imat-Q4_0.gguf", true;
    golden_imat_q4_1 => "synth-tiny-imat-Q4_1.gguf", true;
    golden_imat_q5_0 => "synth-tiny-imat-Q5_0.gguf", true;
    golden_imat_q5_1 => "synth-tiny-imat-Q5_1.gguf", true;
    golden_imat_q4_k_s => "synth-tiny-imat-Q4_K_S.gguf", true;
    golden_imat_q4_k_m => "synth-tiny-imat-Q4_K_M.gguf", true;
    golden_imat_q5_k_m => "synth-tiny-imat-Q5_K_M.gguf", true;
    golden_imat_q6_k => "synth-tiny-imat-Q6_K.gguf", true;
    golden_imat_iq4_nl => "synth-tiny-imat-IQ4_NL.gguf", true;
    golden_imat_iq4_xs => "synth-tiny-imat-IQ4_XS.gguf", true;
    golden_imat_iq2_xxs => "synth-tiny-imat-IQ2_XXS.gguf", true;
    golden_imat_iq2_xs => "synth-tiny-imat-IQ2_XS.gguf", true;
    golden_imat_iq2_s => "synth-tiny-imat-IQ2_S.gguf", true;
    golden_imat_iq3_xxs => "synth-tiny-imat-IQ3_XXS.gguf", true;
    golden_imat_iq3_s => "synth-tiny-imat-IQ3_S.gguf", true;
    golden_imat_iq3_xs => "synth-tiny-imat-IQ3_XS.gguf", true;
    golden_imat_iq3_m => "synth-tiny-imat-IQ3_M.gguf", true;
    golden_imat_iq2_m => "synth-tiny-imat-IQ2_M.gguf", true;
    golden_imat_iq1_s => "synth-tiny-imat-IQ1_S.gguf", true;
    golden_imat_iq1_m => "synth-tiny-imat-IQ1_M.gguf", true;
    golden_imat_tq1_0 => "synth-tiny-imat-TQ1_0.gguf", true;
    golden_imat_tq2_0 => "synth-tiny-imat-TQ2_0.gguf", true;
}

/// Every golden file in the folder is covered by a test above.
#[test]
fn every_golden_file_is_tested() {
    let listed = include_str!("codecs_golden.rs");
    for entry in std::fs::read_dir(fixture("llama-quantize")).expect("golden dir") {
        let name = entry.expect("dir entry").file_name().into_string().expect("utf-8 name");
        if name.starts_with("synth-tiny-") && name.ends_with(".gguf") {
            assert!(listed.contains(&format!("\"{name}\"")), "{name} has no golden test");
        }
    }
}
