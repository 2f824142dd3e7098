//! The metadata of a quantized file, as `llama_model_quantize_impl` writes it: the input's keys in order
//! minus `split.*`, then `general.quantization_version` and `general.file_type` removed and re-appended at
//! the end, then `--override-kv` keys and the `quantize.imatrix.*` keys (each set the way `gguf_set_val_*`
//! does: an existing key is removed and the new value appended).

use quantforge_formats::gguf::GgufValue;

/// `GGML_QUANT_VERSION`.
pub const QUANT_VERSION: u32 = 2;

/// Output metadata for `input` quantized as file type `ftype_id`.
pub fn output_metadata(
    input: &[(String, GgufValue)],
    ftype_id: u32,
    extra: &[(String, GgufValue)],
) -> Vec<(String, GgufValue)> {
    let replaced = ["general.quantization_version", "general.file_type"];
    let mut out: Vec<(String, GgufValue)> =
        input.iter().filter(|(k, _)| !k.starts_with("split.") && !replaced.contains(&k.as_str())).cloned().collect();
    out.push((replaced[0].into(), GgufValue::U32(QUANT_VERSION)));
    out.push((replaced[1].into(), GgufValue::U32(ftype_id)));
    for (k, v) in extra {
        out.retain(|(x, _)| x != k);
        out.push((k.clone(), v.clone()));
    }
    out
}

/// Parse llama.cpp's `--override-kv KEY=TYPE:VALUE` (TYPE is `int`, `float`, `bool` or `str`). As
/// llama-quantize writes them, integers become u32 (of the absolute value) and floats f32.
pub fn parse_override(arg: &str) -> Result<(String, GgufValue), String> {
    let bad =
        |why: &str| format!("invalid --override-kv '{arg}': {why} (expected KEY=TYPE:VALUE, TYPE int|float|bool|str)");
    let (key, rest) = arg.split_once('=').ok_or_else(|| bad("no '='"))?;
    if key.is_empty() || key.len() >= 128 {
        return Err(bad("the key must have 1 to 127 characters"));
    }
    let (ty, value) = rest.split_once(':').ok_or_else(|| bad("no TYPE:"))?;
    let v = match ty {
        "int" => {
            let i: i64 = value.trim().parse().map_err(|_| bad("not an integer"))?;
            GgufValue::U32(u32::try_from(i.unsigned_abs()).map_err(|_| bad("integer out of u32 range"))?)
        }
        "float" => GgufValue::F32(value.trim().parse::<f64>().map_err(|_| bad("not a number"))? as f32),
        "bool" => match value {
            "true" => GgufValue::Bool(true),
            "false" => GgufValue::Bool(false),
            _ => return Err(bad("bool must be true or false")),
        },
        "str" if value.len() < 128 => GgufValue::String(value.to_string()),
        "str" => return Err(bad("strings are limited to 127 bytes")),
        _ => return Err(bad("unknown TYPE")),
    };
    Ok((key.to_string(), v))
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

    #[test]
    fn overrides_parse_like_llama_cpp() {
        assert_eq!(parse_override("a.b=int:-7").unwrap(), ("a.b".into(), GgufValue::U32(7)));
        assert_eq!(parse_override("x=float:0.5").unwrap().1, GgufValue::F32(0.5));
        assert_eq!(parse_override("x=bool:true").unwrap().1, GgufValue::Bool(true));
        assert_eq!(parse_override("x=str:hi:there").unwrap().1, GgufValue::String("hi:there".into()));
        for bad in ["x", "=int:1", "x=int", "x=int:abc", "x=bool:yes", "x=blob:1"] {
            assert!(parse_override(bad).is_err(), "{bad}");
        }
    }
}
