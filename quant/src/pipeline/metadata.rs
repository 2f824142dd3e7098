//! The metadata of a quantized file, as `llama_model_quantize_impl` writes it: the input's keys in order
//! minus `split.*`, then `general.quantization_version` and `general.file_type` removed and re-appended at
//! the end, then the `quantize.imatrix.*` keys when an importance matrix was used.

use quantforge_formats::gguf::GgufValue;

/// `GGML_QUANT_VERSION`.
pub const QUANT_VERSION: u32 = 2;

/// Output metadata for `input` quantized as file type `ftype_id`.
pub fn output_metadata(
    input: &[(String, GgufValue)],
    ftype_id: u32,
    imatrix: &[(String, GgufValue)],
) -> Vec<(String, GgufValue)> {
    let replaced = ["general.quantization_version", "general.file_type"];
    let mut out: Vec<(String, GgufValue)> =
        input.iter().filter(|(k, _)| !k.starts_with("split.") && !replaced.contains(&k.as_str())).cloned().collect();
    out.push((replaced[0].into(), GgufValue::U32(QUANT_VERSION)));
    out.push((replaced[1].into(), GgufValue::U32(ftype_id)));
    for (k, v) in imatrix {
        out.retain(|(x, _)| x != k);
        out.push((k.clone(), v.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_version_and_file_type_to_the_end_and_drops_splits() {
        let s = |x: &str| GgufValue::String(x.into());
        let input = vec![
            ("general.architecture".to_string(), s("llama")),
            ("general.file_type".to_string(), GgufValue::U32(0)),
            ("split.count".to_string(), GgufValue::U16(2)),
            ("general.quantization_version".to_string(), GgufValue::U32(2)),
            ("tokenizer.ggml.model".to_string(), s("llama")),
        ];
        let out = output_metadata(&input, 15, &[("quantize.imatrix.file".into(), s("m.gguf"))]);
        let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "general.architecture",
                "tokenizer.ggml.model",
                "general.quantization_version",
                "general.file_type",
                "quantize.imatrix.file"
            ]
        );
        assert_eq!(out[3].1, GgufValue::U32(15));
    }
}
