//! Every tensor of every llama-quantize (b9928) output in `fixtures/golden/llama-quantize/` dequantizes to
//! something close to the F32 source `fixtures/golden/synth-tiny-f32.gguf`: the relative RMSE
//! ‖deq − x‖ / ‖x‖ of each tensor, and its mean over all tensors of a type, stay under per-type bounds
//! (the spec's §2.8 typical values are Q8_0 0.005, Q6_K 0.018, Q4_K 0.071, Q2_K 0.30, …). A wrong block
//! layout, nibble order or scale decoding gives errors of order 1 and fails loudly; honest quantization
//! noise passes. `DEQUANT_GOLDEN_VERBOSE=1 cargo test --test dequant_golden -- --nocapture` prints every
//! tensor's figure, to re-measure the bounds.

use quantforge_formats::gguf::GgufFile;
use quantforge_quant::dequant::dequantize_row;
use quantforge_quant::GgmlType;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden");

/// Largest accepted relative RMSE of one tensor, and of the mean over all tensors of the type. Measured on
/// these files (32 outputs, 160 F32 + 557 other tensors): maxima come from `blk.0.attn_k.weight` (outliers,
/// worst with an imatrix, which weights the error differently), e.g. Q4_K max 0.156 / mean 0.087,
/// Q2_K 0.397 / 0.316, Q8_0 0.0090 / 0.0069; the bounds leave about 25% headroom over both.
fn bounds(ty: GgmlType) -> (f64, f64) {
    use GgmlType as T;
    match ty {
        T::F32 => (0.0, 0.0),
        T::F16 => (0.0003, 0.00025),
        T::BF16 => (0.0025, 0.002),
        T::Q8_0 => (0.012, 0.0085),
        T::Q6_K => (0.06, 0.025),
        T::Q5_K => (0.08, 0.05),
        T::Q5_1 => (0.08, 0.053),
        T::Q5_0 => (0.11, 0.071),
        T::Q4_K => (0.2, 0.108),
        T::Q4_1 => (0.19, 0.11),
        T::Q4_0 => (0.22, 0.142),
        T::IQ4_NL | T::IQ4_XS => (0.17, 0.119),
        T::Q3_K => (0.33, 0.22),
        T::Q2_K => (0.5, 0.395),
        // The low-bit types of the imatrix IQ1/IQ2/IQ3/TQ outputs (maxima again from attn_k/attn_q/attn_v of
        // layer 0, e.g. IQ3_S 0.239 / mean 0.179, IQ2_XXS 0.644 / 0.549, TQ1_0 0.821 / 0.779).
        T::IQ3_S => (0.3, 0.225),
        T::IQ3_XXS => (0.4, 0.33),
        T::IQ2_S => (0.56, 0.445),
        T::IQ2_XS => (0.61, 0.53),
        T::IQ2_XXS => (0.8, 0.69),
        T::IQ1_S => (0.89, 0.765),
        T::IQ1_M => (0.82, 0.69),
        // Ternary: most values round to 0, so even honest output is near 0.8; a wrong layout exceeds 1.
        T::TQ1_0 | T::TQ2_0 => (0.95, 0.9),
        other => panic!("no bound for {other}: add one when a golden file uses it"),
    }
}

fn f32_values(file: &GgufFile, name: &str) -> Vec<f32> {
    let info = file.tensor(name).unwrap_or_else(|| panic!("source has no {name}"));
    assert_eq!(info.ggml_type, GgmlType::F32, "{name}");
    file.tensor_data(info).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn every_golden_tensor_dequantizes_close_to_its_source() {
    let source = GgufFile::open(format!("{GOLDEN}/synth-tiny-f32.gguf")).unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(format!("{GOLDEN}/llama-quantize"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 18, "expected the llama-quantize golden files, found {}", paths.len());

    let mut per_type = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    for path in &paths {
        let file = GgufFile::open(path).unwrap();
        assert_eq!(file.tensors().len(), source.tensors().len(), "{}", path.display());
        for info in file.tensors() {
            let want = f32_values(&source, &info.name);
            let src_info = source.tensor(&info.name).unwrap();
            assert_eq!(info.ne, src_info.ne, "{}: {}", path.display(), info.name);
            let mut got = vec![0f32; want.len()];
            // Row by row, as the evaluator will.
            let row_len = info.ne[0] as usize;
            let row_bytes = info.ggml_type.row_size(info.ne[0]).unwrap() as usize;
            let data = file.tensor_data(info);
            assert_eq!(data.len(), row_bytes * (want.len() / row_len), "{}: {}", path.display(), info.name);
            for (s, d) in data.chunks_exact(row_bytes).zip(got.chunks_exact_mut(row_len)) {
                dequantize_row(info.ggml_type, s, d).unwrap();
            }
            let (mut err2, mut ref2) = (0f64, 0f64);
            for (&g, &w) in got.iter().zip(&want) {
                err2 += (g as f64 - w as f64).powi(2);
                ref2 += (w as f64).powi(2);
            }
            let rel = if ref2 > 0.0 { (err2 / ref2).sqrt() } else { err2.sqrt() };
            let (limit, _) = bounds(info.ggml_type);
            if rel > limit {
                failures.push(format!(
                    "{} {} ({}): relative RMSE {rel:.5} > {limit}",
                    path.file_name().unwrap().to_string_lossy(),
                    info.name,
                    info.ggml_type
                ));
            }
            if std::env::var_os("DEQUANT_GOLDEN_VERBOSE").is_some() {
                eprintln!("{} {} {} {rel:.5}", path.file_name().unwrap().to_string_lossy(), info.name, info.ggml_type);
            }
            let entry = per_type.entry(info.ggml_type).or_insert((0f64, 0usize));
            entry.0 += rel;
            entry.1 += 1;
        }
    }
    for (&ty, &(sum, count)) in &per_type {
        let (_, limit) = bounds(ty);
        let mean = sum / count as f64;
        if mean > limit {
            failures.push(format!("{ty}: mean relative RMSE over {count} tensors {mean:.5} > {limit}"));
        }
    }
    assert!(failures.is_empty(), "{} tensors over their bound:\n{}", failures.len(), failures.join("\n"));
    // The quantized types the golden files are made of, all exercised.
    use GgmlType as T;
    for ty in [
        T::F16,
        T::BF16,
        T::Q8_0,
        T::Q4_0,
        T::Q4_1,
        T::Q5_0,
        T::Q5_1,
        T::Q2_K,
        T::Q3_K,
        T::Q4_K,
        T::Q5_K,
        T::Q6_K,
        T::IQ4_NL,
        T::IQ4_XS,
        T::IQ1_S,
        T::IQ1_M,
        T::IQ2_XXS,
        T::IQ2_XS,
        T::IQ2_S,
        T::IQ3_XXS,
        T::IQ3_S,
        T::TQ1_0,
        T::TQ2_0,
    ] {
        assert!(per_type.contains_key(&ty), "no golden tensor of type {ty}");
    }
}
