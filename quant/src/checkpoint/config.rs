//! The JSON a quantized checkpoint carries: `config.json["quantization_config"]`, GPTQ's
//! `quantize_config.json` and the safetensors header metadata, written as the loaders read them, and parsed
//! back with the synonyms the Python tools accept.
//!
//! Invariant: what [`quantization_config`] writes, [`parse`] reads back to the same format and scheme.
//! Sources: AutoGPTQ `quantization/config.py` (`to_dict`, `from_pretrained` synonyms), GPTQModel
//! `quantization/config.py` (`format`/`checkpoint_format`/`version`, `zero_point`), AutoAWQ
//! `models/_config.py` (`to_transformers_dict`), compressed-tensors `quantization/quant_config.py`,
//! `quant_args.py` and llm-compressor's saved configs.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::{CheckpointError, CheckpointFormat};
use crate::intquant::IntScheme;

/// How the weights were quantized: what the configs record beside the scheme.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QuantInfo {
    /// `"gptq"`, `"awq"` or `"rtn"`.
    pub method: String,
    /// GPTQ act-order (`desc_act`): columns processed by decreasing Hessian diagonal.
    pub act_order: bool,
    /// Group parameters fixed on the original column order before act-order (so `g_idx` is `k / group`).
    pub static_groups: bool,
    /// GPTQ damping as a fraction of the mean Hessian diagonal.
    pub damp_percent: f64,
    /// Sub-layers quantized in order within a block (q/k/v, o, gate/up, down).
    pub true_sequential: bool,
    /// The MSE clipping search was used.
    pub mse: bool,
    /// Linear modules left unquantized (their float weights written with `add_tensor`); loaders that
    /// would otherwise expect every Linear quantized are told to skip them.
    pub not_quantized: Vec<String>,
}

impl QuantInfo {
    /// Defaults of the Python tools: no act-order, damping 0.01, true-sequential, `lm_head` not quantized.
    pub fn new(method: &str) -> QuantInfo {
        QuantInfo {
            method: method.into(),
            act_order: false,
            static_groups: false,
            damp_percent: 0.01,
            true_sequential: true,
            mse: false,
            not_quantized: vec!["lm_head".into()],
        }
    }

    /// Whether layers carry a non-monotonic `g_idx` (act-order without static groups).
    pub fn dynamic_g_idx(&self) -> bool {
        self.act_order && !self.static_groups
    }
}

/// The quantizer tag written into configs.
pub(crate) fn quantizer_tag() -> String {
    format!("quantforge:{}", env!("CARGO_PKG_VERSION"))
}

fn group_value(scheme: &IntScheme) -> i64 {
    scheme.group_size.map_or(-1, |g| g as i64)
}

/// `config.json["quantization_config"]` for `format`.
pub(crate) fn quantization_config(format: CheckpointFormat, scheme: &IntScheme, info: &QuantInfo) -> Value {
    match format {
        CheckpointFormat::Gptq | CheckpointFormat::GptqV2 => gptq_config(format, scheme, info),
        CheckpointFormat::Awq => json!({
            "quant_method": "awq",
            "zero_point": true,
            "group_size": group_value(scheme),
            "bits": scheme.bits,
            "version": "gemm",
            "modules_to_not_convert": if info.not_quantized.is_empty() { Value::Null } else { json!(info.not_quantized) },
        }),
        CheckpointFormat::CompressedTensors => ct_config(scheme, info),
    }
}

/// The AutoGPTQ dict (also GPTQModel's and transformers' keys): the same object goes into `config.json`
/// and `quantize_config.json`.
pub(crate) fn gptq_config(format: CheckpointFormat, scheme: &IntScheme, info: &QuantInfo) -> Value {
    let mut m = Map::new();
    m.insert("bits".into(), json!(scheme.bits));
    m.insert("group_size".into(), json!(group_value(scheme)));
    m.insert("damp_percent".into(), json!(info.damp_percent));
    m.insert("desc_act".into(), json!(info.act_order));
    m.insert("static_groups".into(), json!(info.static_groups));
    m.insert("sym".into(), json!(scheme.sym));
    m.insert("true_sequential".into(), json!(info.true_sequential));
    m.insert("lm_head".into(), json!(false));
    m.insert("model_file_base_name".into(), json!("model"));
    m.insert("quant_method".into(), json!("gptq"));
    m.insert("checkpoint_format".into(), json!(format.name()));
    m.insert("format".into(), json!(format.name()));
    m.insert("pack_dtype".into(), json!("int32"));
    let skipped: Map<String, Value> = info
        .not_quantized
        .iter()
        .filter(|m| m.as_str() != "lm_head")
        .map(|m| (format!("-:^{}$", regex::escape(m)), json!({})))
        .collect();
    if !skipped.is_empty() {
        m.insert("dynamic".into(), Value::Object(skipped));
    }
    m.insert(
        "meta".into(),
        json!({
            "quantizer": [quantizer_tag()],
            "method": info.method,
            "damp_percent": info.damp_percent,
            "static_groups": info.static_groups,
            "true_sequential": info.true_sequential,
            "mse": info.mse,
        }),
    );
    Value::Object(m)
}

fn ct_config(scheme: &IntScheme, info: &QuantInfo) -> Value {
    let actorder = match (info.act_order, info.static_groups) {
        (true, false) => json!("group"),
        (true, true) => json!("weight"),
        _ => Value::Null,
    };
    let (strategy, group) = match scheme.group_size {
        Some(g) => ("group", json!(g)),
        None => ("channel", Value::Null),
    };
    json!({
        "config_groups": {
            "group_0": {
                "format": "pack-quantized",
                "input_activations": null,
                "output_activations": null,
                "targets": ["Linear"],
                "weights": {
                    "actorder": actorder,
                    "block_structure": null,
                    "dynamic": false,
                    "group_size": group,
                    "num_bits": scheme.bits,
                    "observer": "minmax",
                    "observer_kwargs": {},
                    "strategy": strategy,
                    "symmetric": scheme.sym,
                    "type": "int",
                },
            },
        },
        "format": "pack-quantized",
        "global_compression_ratio": null,
        "ignore": info.not_quantized,
        "kv_cache_scheme": null,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
    })
}

/// The safetensors header metadata: `format = pt` (transformers requires it), plus AutoGPTQ's keys for GPTQ.
pub(crate) fn safetensors_metadata(
    format: CheckpointFormat,
    scheme: &IntScheme,
    info: &QuantInfo,
) -> Vec<(String, String)> {
    let mut m = vec![("format".to_string(), "pt".to_string())];
    if format.is_gptq() {
        m.extend([
            ("gptq_bits".into(), scheme.bits.to_string()),
            ("gptq_group_size".into(), group_value(scheme).to_string()),
            ("gptq_desc_act".into(), info.act_order.to_string()),
            ("gptq_damp_percent".into(), info.damp_percent.to_string()),
            ("gptq_checkpoint_format".into(), format.name().to_string()),
            ("gptq_quant_method".into(), "gptq".to_string()),
        ]);
    }
    m.push(("quantizer".into(), quantizer_tag()));
    m
}

/// What a reader needs from a quantization config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ParsedConfig {
    pub format: CheckpointFormat,
    pub bits: u8,
    /// `None` is one group per row (`-1`, or compressed-tensors' `channel` strategy).
    pub group_size: Option<usize>,
    pub sym: bool,
}

fn get<'a>(qc: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| qc.get(*k).filter(|v| !v.is_null()))
}

/// Parse a quantization config (`config.json["quantization_config"]` or a `quantize_config.json`, in which
/// `quant_method` may be missing and means GPTQ). Methods other than GPTQ, AWQ and compressed-tensors
/// `pack-quantized` are refused with the reason.
pub(crate) fn parse(qc: &Value, path: &Path) -> Result<ParsedConfig, CheckpointError> {
    let bad = |message: String| CheckpointError::Config { path: path.into(), message };
    if !qc.is_object() {
        return Err(bad("not a JSON object".into()));
    }
    let method = get(qc, &["quant_method"]).and_then(Value::as_str).unwrap_or("gptq").to_ascii_lowercase();
    match method.as_str() {
        "gptq" | "awq" => {
            let bits = get(qc, &["bits", "w_bit"]).and_then(Value::as_u64).ok_or_else(|| bad("no 'bits'".into()))?;
            let bits = u8::try_from(bits).ok().filter(|b| matches!(b, 2 | 3 | 4 | 8));
            let bits = bits.ok_or_else(|| bad("'bits' must be 2, 3, 4 or 8".into()))?;
            let group = get(qc, &["group_size", "q_group_size"]).and_then(Value::as_i64).unwrap_or(-1);
            let group_size = match group {
                -1 => None,
                g if g > 0 => Some(g as usize),
                g => return Err(bad(format!("group size {g} is neither -1 nor positive"))),
            };
            let zero_point = get(qc, &["zero_point"]).and_then(Value::as_bool);
            let layout = get(qc, &["checkpoint_format", "format", "version"])
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase);
            if method == "awq" {
                match layout.as_deref() {
                    None | Some("gemm") => {}
                    Some(v) => return Err(bad(format!("AWQ version '{v}' is not read (only gemm)"))),
                }
                if bits != 4 {
                    return Err(bad(format!("AWQ GEMM is 4-bit; the config says {bits}")));
                }
                let sym = !zero_point.unwrap_or(true);
                return Ok(ParsedConfig { format: CheckpointFormat::Awq, bits, group_size, sym });
            }
            let format = match layout.as_deref() {
                None | Some("gptq") => CheckpointFormat::Gptq,
                Some("gptq_v2") => CheckpointFormat::GptqV2,
                Some(v) => {
                    return Err(bad(format!("GPTQ checkpoint format '{v}' is not read (only gptq and gptq_v2)")))
                }
            };
            let sym = get(qc, &["sym"]).and_then(Value::as_bool).or(zero_point.map(|z| !z)).unwrap_or(true);
            Ok(ParsedConfig { format, bits, group_size, sym })
        }
        "compressed-tensors" => parse_ct(qc, path),
        m => Err(bad(format!("quantization method '{m}' is not read (only gptq, awq and compressed-tensors)"))),
    }
}

/// One of GPTQModel's per-module overrides (`dynamic`): modules whose name matches `pattern` (Python
/// `re.match`, anchored at the start) use these values instead of the top-level ones. Negative entries
/// (`"-:regex"`) are modules left unquantized, which need no override: they have no packed tensors.
#[derive(Clone, Debug)]
pub(crate) struct ModuleOverride {
    pattern: regex::Regex,
    bits: Option<u8>,
    group_size: Option<Option<usize>>,
    sym: Option<bool>,
}

/// The positive `dynamic` overrides of a GPTQ config, in order.
pub(crate) fn parse_dynamic(qc: &Value, path: &Path) -> Result<Vec<ModuleOverride>, CheckpointError> {
    let bad = |message: String| CheckpointError::Config { path: path.into(), message };
    let Some(map) = get(qc, &["dynamic"]).and_then(Value::as_object) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (key, v) in map {
        if key.starts_with("-:") {
            continue;
        }
        let pat = key.strip_prefix("+:").unwrap_or(key);
        let pattern = regex::Regex::new(&format!("^(?:{pat})"))
            .map_err(|e| bad(format!("dynamic pattern '{key}' is not a supported regex: {e}")))?;
        let bits = match get(v, &["bits"]).and_then(Value::as_u64) {
            None => None,
            Some(b @ (2 | 3 | 4 | 8)) => Some(b as u8),
            Some(b) => return Err(bad(format!("dynamic '{key}': {b}-bit is not read"))),
        };
        let group_size = match get(v, &["group_size"]).and_then(Value::as_i64) {
            None => None,
            Some(-1) => Some(None),
            Some(g) if g > 0 => Some(Some(g as usize)),
            Some(g) => return Err(bad(format!("dynamic '{key}': group size {g}"))),
        };
        out.push(ModuleOverride { pattern, bits, group_size, sym: get(v, &["sym"]).and_then(Value::as_bool) });
    }
    Ok(out)
}

impl ModuleOverride {
    /// `base` with this override applied when it matches `module`.
    pub(crate) fn apply(overrides: &[ModuleOverride], base: ParsedConfig, module: &str) -> ParsedConfig {
        match overrides.iter().find(|o| o.pattern.is_match(module)) {
            Some(o) => ParsedConfig {
                bits: o.bits.unwrap_or(base.bits),
                group_size: o.group_size.unwrap_or(base.group_size),
                sym: o.sym.unwrap_or(base.sym),
                ..base
            },
            None => base,
        }
    }
}

fn parse_ct(qc: &Value, path: &Path) -> Result<ParsedConfig, CheckpointError> {
    let bad = |message: String| CheckpointError::Config { path: path.into(), message };
    if let Some(s) = get(qc, &["quantization_status"]).and_then(Value::as_str) {
        if s != "compressed" {
            return Err(bad(format!("quantization_status '{s}' is not read (only compressed)")));
        }
    }
    let groups =
        get(qc, &["config_groups"]).and_then(Value::as_object).ok_or_else(|| bad("no 'config_groups'".into()))?;
    let top = get(qc, &["format"]).and_then(Value::as_str);
    let mut found: Option<ParsedConfig> = None;
    for (name, group) in groups {
        let format = get(group, &["format"]).and_then(Value::as_str).or(top).unwrap_or("");
        if format != "pack-quantized" {
            return Err(bad(format!("group '{name}': format '{format}' is not read (only pack-quantized)")));
        }
        if get(group, &["input_activations"]).is_some() || get(group, &["output_activations"]).is_some() {
            return Err(bad(format!("group '{name}': activation quantization is not read")));
        }
        let w = get(group, &["weights"]).ok_or_else(|| bad(format!("group '{name}': no 'weights'")))?;
        if get(w, &["type"]).and_then(Value::as_str).unwrap_or("int") != "int" {
            return Err(bad(format!("group '{name}': only integer weights are read")));
        }
        let bits = get(w, &["num_bits"]).and_then(Value::as_u64).unwrap_or(0);
        let bits = match bits {
            4 => 4,
            8 => 8,
            b => return Err(bad(format!("group '{name}': pack-quantized with {b} bits is not read (4 or 8)"))),
        };
        let sym = get(w, &["symmetric"]).and_then(Value::as_bool).unwrap_or(true);
        let group_size = match get(w, &["strategy"]).and_then(Value::as_str).unwrap_or("") {
            "channel" => None,
            "group" => {
                let g = get(w, &["group_size"]).and_then(Value::as_u64).filter(|&g| g > 0);
                Some(g.ok_or_else(|| bad(format!("group '{name}': strategy group without a group_size")))? as usize)
            }
            s => return Err(bad(format!("group '{name}': weight strategy '{s}' is not read (group or channel)"))),
        };
        let parsed = ParsedConfig { format: CheckpointFormat::CompressedTensors, bits, group_size, sym };
        match found {
            Some(f) if f != parsed => {
                return Err(bad("config groups with different weight schemes are not read".into()))
            }
            _ => found = Some(parsed),
        }
    }
    found.ok_or_else(|| bad("'config_groups' is empty".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intquant::ScaleDtype;

    fn scheme(bits: u8, g: Option<usize>, sym: bool) -> IntScheme {
        IntScheme::new(bits, g, sym, ScaleDtype::F16).unwrap()
    }

    #[test]
    fn written_configs_parse_back() {
        let p = Path::new("config.json");
        for (format, s) in [
            (CheckpointFormat::Gptq, scheme(3, None, true)),
            (CheckpointFormat::GptqV2, scheme(4, Some(128), false)),
            (CheckpointFormat::Awq, scheme(4, Some(64), false)),
            (CheckpointFormat::CompressedTensors, scheme(8, None, true)),
            (CheckpointFormat::CompressedTensors, scheme(4, Some(32), false)),
        ] {
            let qc = quantization_config(format, &s, &QuantInfo::new("gptq"));
            let got = parse(&qc, p).unwrap();
            assert_eq!(got, ParsedConfig { format, bits: s.bits, group_size: s.group_size, sym: s.sym }, "{format}");
        }
    }

    #[test]
    fn gptq_and_awq_configs_have_the_loaders_keys() {
        let mut info = QuantInfo::new("gptq");
        info.act_order = true;
        info.not_quantized.push("model.layers.0.mlp.down_proj".into());
        let qc = quantization_config(CheckpointFormat::Gptq, &scheme(4, Some(128), true), &info);
        for key in ["bits", "group_size", "desc_act", "sym", "quant_method", "checkpoint_format", "damp_percent"] {
            assert!(qc.get(key).is_some(), "{key}");
        }
        assert_eq!(qc["desc_act"], json!(true));
        assert_eq!(qc["checkpoint_format"], json!("gptq"));
        assert!(qc["dynamic"].get("-:^model\\.layers\\.0\\.mlp\\.down_proj$").is_some());
        let awq = quantization_config(CheckpointFormat::Awq, &scheme(4, Some(128), false), &QuantInfo::new("awq"));
        assert_eq!(awq["version"], json!("gemm"));
        assert_eq!(awq["zero_point"], json!(true));
        let ct = quantization_config(CheckpointFormat::CompressedTensors, &scheme(4, Some(128), true), &info);
        assert_eq!(ct["config_groups"]["group_0"]["weights"]["actorder"], json!("group"));
        assert_eq!(ct["ignore"][0], json!("lm_head"));
    }

    #[test]
    fn gptqmodel_dynamic_overrides_apply_by_module() {
        let p = Path::new("x");
        let qc = json!({"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": true, "dynamic": {
            "+:.*\\.mlp\\.down_proj": {"bits": 8, "group_size": -1},
            "-:.*\\.q_proj": {},
            ".*\\.k_proj": {"sym": false}
        }});
        let base = parse(&qc, p).unwrap();
        let o = parse_dynamic(&qc, p).unwrap();
        assert_eq!(o.len(), 2);
        let down = ModuleOverride::apply(&o, base, "model.layers.3.mlp.down_proj");
        assert_eq!((down.bits, down.group_size, down.sym), (8, None, true));
        let k = ModuleOverride::apply(&o, base, "model.layers.0.self_attn.k_proj");
        assert_eq!((k.bits, k.group_size, k.sym), (4, Some(128), false));
        assert_eq!(ModuleOverride::apply(&o, base, "model.layers.0.self_attn.v_proj"), base);
        let bad = json!({"bits": 4, "dynamic": {"+:(": {}}});
        assert!(matches!(parse_dynamic(&bad, p), Err(CheckpointError::Config { .. })));
    }

    #[test]
    fn synonyms_and_refusals() {
        let p = Path::new("x");
        let awq =
            json!({"quant_method": "awq", "w_bit": 4, "q_group_size": 128, "zero_point": true, "version": "GEMM"});
        assert_eq!(parse(&awq, p).unwrap().group_size, Some(128));
        let gm = json!({"quant_method": "gptq", "bits": 4, "group_size": 32, "format": "gptq_v2", "zero_point": true});
        let got = parse(&gm, p).unwrap();
        assert_eq!((got.format, got.sym), (CheckpointFormat::GptqV2, false));
        let ag = json!({"bits": 8, "group_size": -1, "desc_act": true});
        assert_eq!(
            parse(&ag, p).unwrap(),
            ParsedConfig { format: CheckpointFormat::Gptq, bits: 8, group_size: None, sym: true }
        );
        for bad in [
            json!({"quant_method": "gptq", "bits": 4, "checkpoint_format": "marlin"}),
            json!({"quant_method": "awq", "bits": 4, "version": "gemv"}),
            json!({"quant_method": "bitsandbytes"}),
            json!({"quant_method": "gptq", "bits": 5}),
            json!({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"g": {"weights": {}}}}),
        ] {
            assert!(matches!(parse(&bad, p), Err(CheckpointError::Config { .. })), "{bad}");
        }
    }
}
