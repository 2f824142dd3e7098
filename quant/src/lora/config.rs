//! `adapter_config.json` of a PEFT LoRA adapter, parsed into typed fields before any tensor is read.
//!
//! Matching follows PEFT (huggingface/peft `tuners/tuners_utils.py` `check_target_module_exists`,
//! `utils/other.py` `get_pattern_key`, `tuners/lora/layer.py` `update_layer`):
//! - `target_modules` as a string is a regex that must match the whole module name (`re.fullmatch`); as a list,
//!   an entry matches a module named exactly so or ending in `.entry`; `layers_to_transform` (with
//!   `layers_pattern`) then keeps only the listed layer indices. `"all-linear"` is every linear layer but the
//!   output head. `exclude_modules` (same forms) wins over `target_modules`.
//! - `rank_pattern`/`alpha_pattern`: the first key (in file order) for which `(.*\.)?(KEY)$` matches the module
//!   name from its start gives that module's r / alpha.
//! - scaling = alpha / r, or alpha / sqrt(r) with `use_rslora`.
//!
//! Python regexes are compiled with the `regex` crate; a pattern using look-around or back-references fails
//! with an error naming the key, never silently.

use std::path::{Path, PathBuf};

use quantforge_formats::hf::read_json;
use regex::Regex;
use serde_json::{Map, Value};

use super::LoraError;

/// The module names PEFT's `"all-linear"` leaves out: input embeddings and output heads (only Linear layers
/// are targeted, and the output layer is excluded).
const NOT_LINEAR: &[&str] =
    &["lm_head", "embed_tokens", "embed_out", "wte", "wpe", "word_embeddings", "embed_positions", "output", "score"];

/// `target_modules` (or `exclude_modules`) in any of its forms.
#[derive(Clone, Debug)]
pub enum ModuleSelector {
    /// `null`: PEFT used the architecture's default list; the adapter's tensors say which modules were adapted.
    Unspecified,
    /// A list of names; each matches a module called exactly that or ending in `.name`.
    Names(Vec<String>),
    /// A regex matched against the whole module name.
    Regex(Regex),
    /// `"all-linear"`.
    AllLinear,
}

impl ModuleSelector {
    fn parse(path: &Path, key: &str, v: Option<&Value>) -> Result<ModuleSelector, LoraError> {
        match v {
            None | Some(Value::Null) => Ok(ModuleSelector::Unspecified),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("all-linear") => Ok(ModuleSelector::AllLinear),
            Some(Value::String(s)) => Ok(ModuleSelector::Regex(compile(path, key, &format!("^(?:{s})$"))?)),
            Some(Value::Array(items)) => {
                let names = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| LoraError::config(path, key, "must be a string or a list of strings"))?;
                Ok(ModuleSelector::Names(names))
            }
            Some(_) => Err(LoraError::config(path, key, "must be a string or a list of strings")),
        }
    }

    /// Whether the selector names `module` directly (a list entry equal to it, or the regex).
    fn matches(&self, module: &str) -> Match {
        match self {
            ModuleSelector::Unspecified => Match::No,
            ModuleSelector::Names(names) if names.iter().any(|n| n == module) => Match::Exact,
            ModuleSelector::Names(names) => {
                if names.iter().any(|n| module.strip_suffix(n.as_str()).is_some_and(|p| p.ends_with('.'))) {
                    Match::Suffix
                } else {
                    Match::No
                }
            }
            ModuleSelector::Regex(re) => {
                if re.is_match(module) {
                    Match::Exact
                } else {
                    Match::No
                }
            }
            ModuleSelector::AllLinear => {
                let last = module.rsplit('.').next().unwrap_or(module);
                // PEFT expands "all-linear" into a list of names, so layers_to_transform applies.
                if NOT_LINEAR.contains(&last) {
                    Match::No
                } else {
                    Match::Suffix
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Match {
    No,
    /// Named exactly (or by regex): `layers_to_transform` does not apply.
    Exact,
    /// Matched a list entry by suffix: `layers_to_transform` applies.
    Suffix,
}

/// A `rank_pattern`/`alpha_pattern` entry.
#[derive(Clone, Debug)]
struct Pattern<T> {
    key: String,
    re: Regex,
    value: T,
}

/// A module's rank, alpha and the scale its delta is multiplied by.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleScale {
    pub r: u64,
    pub alpha: f64,
    /// alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub scaling: f64,
    /// Where r came from, for messages (`"r"` or `"rank_pattern['q_proj']"`).
    pub r_from: String,
}

/// A parsed `adapter_config.json`.
#[derive(Clone, Debug)]
pub struct LoraConfig {
    pub path: PathBuf,
    pub r: u64,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub fan_in_fan_out: bool,
    pub lora_bias: bool,
    /// `bias` is `"all"` or `"lora_only"`: trained base biases are stored in the adapter as replacements.
    pub trained_biases: bool,
    pub target_modules: ModuleSelector,
    pub exclude_modules: ModuleSelector,
    pub layers_to_transform: Option<Vec<u64>>,
    pub layers_pattern: Vec<String>,
    pub modules_to_save: Vec<String>,
    rank_pattern: Vec<Pattern<u64>>,
    alpha_pattern: Vec<Pattern<f64>>,
}

fn compile(path: &Path, key: &str, pattern: &str) -> Result<Regex, LoraError> {
    Regex::new(pattern).map_err(|e| LoraError::config(path, key, format!("regex {pattern:?} is not supported: {e}")))
}

fn strings(path: &Path, key: &str, v: Option<&Value>) -> Result<Vec<String>, LoraError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LoraError::config(path, key, "must be a string or a list of strings")),
        Some(_) => Err(LoraError::config(path, key, "must be a string or a list of strings")),
    }
}

fn flag(path: &Path, obj: &Map<String, Value>, key: &str) -> Result<bool, LoraError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(LoraError::config(path, key, "must be true or false")),
    }
}

fn patterns<T>(
    path: &Path,
    obj: &Map<String, Value>,
    key: &str,
    value: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<Pattern<T>>, LoraError> {
    let Some(v) = obj.get(key).filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let map = v.as_object().ok_or_else(|| LoraError::config(path, key, "must be an object"))?;
    map.iter()
        .map(|(k, v)| {
            let value = value(v)
                .ok_or_else(|| LoraError::config(path, key, format!("entry '{k}' has an invalid value {v}")))?;
            Ok(Pattern { key: k.clone(), re: compile(path, key, &format!(r"^(?:.*\.)?(?:{k})$"))?, value })
        })
        .collect()
}

impl LoraConfig {
    /// Read `dir/adapter_config.json`.
    pub fn open(dir: &Path) -> Result<LoraConfig, LoraError> {
        let path = dir.join("adapter_config.json");
        if !path.is_file() {
            return Err(LoraError::MissingTensor {
                path: dir.into(),
                name: "adapter_config.json".into(),
                why: "a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors".into(),
            });
        }
        LoraConfig::parse(&path, &read_json(&path)?)
    }

    /// Parse an already-read `adapter_config.json` at `path`.
    pub fn parse(path: &Path, value: &Value) -> Result<LoraConfig, LoraError> {
        let obj = value.as_object().ok_or_else(|| LoraError::config(path, "<root>", "is not a JSON object"))?;
        match obj.get("peft_type").and_then(Value::as_str) {
            Some("LORA") => {}
            Some(other) => return Err(LoraError::UnknownPeftType { path: path.into(), found: other.into() }),
            None => return Err(LoraError::config(path, "peft_type", "missing (expected \"LORA\")")),
        }
        for (key, what) in
            [("use_qalora", "QA-LoRA adapters"), ("use_alora", "aLoRA adapters (activated by invocation tokens)")]
        {
            if flag(path, obj, key)? {
                return Err(unsupported(path, key, what));
            }
        }
        for (key, what) in [
            ("alora_invocation_tokens", "aLoRA adapters (activated by invocation tokens)"),
            ("layer_replication", "layer replication"),
            ("trainable_token_indices", "trainable token deltas"),
        ] {
            if obj.get(key).is_some_and(|v| !v.is_null()) {
                return Err(unsupported(path, key, what));
            }
        }
        if obj.get("target_parameters").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
            return Err(unsupported(path, "target_parameters", "adapters on nn.Parameter tensors (MoE experts)"));
        }
        let r = match obj.get("r") {
            None => 8,
            Some(v) => v
                .as_u64()
                .filter(|&r| r > 0)
                .ok_or_else(|| LoraError::config(path, "r", "must be a positive integer"))?,
        };
        let lora_alpha = match obj.get("lora_alpha") {
            None => 8.0,
            Some(v) => v.as_f64().ok_or_else(|| LoraError::config(path, "lora_alpha", "must be a number"))?,
        };
        let bias = obj.get("bias").and_then(Value::as_str).unwrap_or("none");
        let trained_biases = match bias {
            "none" => false,
            "all" | "lora_only" => true,
            other => return Err(LoraError::config(path, "bias", format!("unknown value {other:?}"))),
        };
        let layers_to_transform = match obj.get("layers_to_transform") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if a.is_empty() => None,
            Some(v) => Some(
                match v {
                    Value::Array(a) => a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>(),
                    v => v.as_u64().map(|i| vec![i]),
                }
                .ok_or_else(|| {
                    LoraError::config(path, "layers_to_transform", "must be an integer or a list of integers")
                })?,
            ),
        };
        Ok(LoraConfig {
            path: path.into(),
            r,
            lora_alpha,
            use_rslora: flag(path, obj, "use_rslora")?,
            use_dora: flag(path, obj, "use_dora")?,
            fan_in_fan_out: flag(path, obj, "fan_in_fan_out")?,
            lora_bias: flag(path, obj, "lora_bias")?,
            trained_biases,
            target_modules: ModuleSelector::parse(path, "target_modules", obj.get("target_modules"))?,
            exclude_modules: ModuleSelector::parse(path, "exclude_modules", obj.get("exclude_modules"))?,
            layers_to_transform,
            layers_pattern: strings(path, "layers_pattern", obj.get("layers_pattern"))?,
            modules_to_save: strings(path, "modules_to_save", obj.get("modules_to_save"))?,
            rank_pattern: patterns(path, obj, "rank_pattern", |v| v.as_u64().filter(|&r| r > 0))?,
            alpha_pattern: patterns(path, obj, "alpha_pattern", Value::as_f64)?,
        })
    }

    /// Whether PEFT would put a LoRA layer on `module` (a module name of the base model, e.g.
    /// `model.layers.0.self_attn.q_proj`). `None` when `target_modules` was not recorded.
    pub fn targets(&self, module: &str) -> Option<bool> {
        if matches!(self.target_modules, ModuleSelector::Unspecified) {
            return None;
        }
        if self.exclude_modules.matches(module) != Match::No {
            return Some(false);
        }
        Some(match self.target_modules.matches(module) {
            Match::No => false,
            Match::Exact => true,
            Match::Suffix => match &self.layers_to_transform {
                None => true,
                Some(layers) => self.layer_index(module).is_some_and(|i| layers.contains(&i)),
            },
        })
    }

    /// The layer index PEFT reads from a module name for `layers_to_transform`.
    fn layer_index(&self, module: &str) -> Option<u64> {
        let parts: Vec<&str> = module.split('.').collect();
        // `.*\.{pattern}\.(\d+)\.`: a digit segment preceded by the pattern (any segment when there is no
        // pattern; then `.*\.[^.]*\.` needs one more segment before it) and followed by another segment.
        // Greedy `.*` takes the last such position.
        (1..parts.len().saturating_sub(1)).rev().find_map(|i| {
            let digits = parts[i];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let ok = if self.layers_pattern.is_empty() {
                i >= 2
            } else {
                self.layers_pattern.iter().any(|p| {
                    let before = parts[..i].join(".");
                    before.strip_suffix(p.as_str()).is_some_and(|rest| rest.ends_with('.'))
                })
            };
            if ok {
                digits.parse().ok()
            } else {
                None
            }
        })
    }

    /// The rank, alpha and scaling of `module`.
    pub fn scale_of(&self, module: &str) -> ModuleScale {
        let (r, r_from) = match self.rank_pattern.iter().find(|p| p.re.is_match(module)) {
            Some(p) => (p.value, format!("rank_pattern['{}']", p.key)),
            None => (self.r, "r".to_string()),
        };
        let alpha = self.alpha_pattern.iter().find(|p| p.re.is_match(module)).map_or(self.lora_alpha, |p| p.value);
        let scaling = if self.use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 };
        ModuleScale { r, alpha, scaling, r_from }
    }

    /// Whether `module` is one of `modules_to_save` (a module named so, or ending in `.name`).
    pub fn saves(&self, module: &str) -> bool {
        self.modules_to_save
            .iter()
            .any(|m| module == m || module.strip_suffix(m.as_str()).is_some_and(|p| p.ends_with('.')))
    }
}

fn unsupported(path: &Path, key: &str, what: &str) -> LoraError {
    LoraError::Unsupported { path: path.into(), key: key.into(), message: format!("{what} cannot be merged") }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cfg(v: Value) -> LoraConfig {
        LoraConfig::parse(Path::new("adapter_config.json"), &v).unwrap()
    }

    #[test]
    fn target_modules_in_every_form() {
        let list = cfg(json!({"peft_type": "LORA", "target_modules": ["q_proj", "model.layers.1.mlp.up_proj"]}));
        assert_eq!(list.targets("model.layers.0.self_attn.q_proj"), Some(true));
        assert_eq!(list.targets("model.layers.0.self_attn.xq_proj"), Some(false));
        assert_eq!(list.targets("model.layers.1.mlp.up_proj"), Some(true));
        assert_eq!(list.targets("model.layers.0.mlp.up_proj"), Some(false));
        let re = cfg(json!({"peft_type": "LORA", "target_modules": r".*\.(q|v)_proj"}));
        assert_eq!(re.targets("model.layers.3.self_attn.v_proj"), Some(true));
        // fullmatch: a prefix match is not enough.
        assert_eq!(re.targets("model.layers.3.self_attn.v_proj.x"), Some(false));
        let all = cfg(json!({"peft_type": "LORA", "target_modules": "all-linear", "exclude_modules": ["down_proj"]}));
        assert_eq!(all.targets("model.layers.0.mlp.gate_proj"), Some(true));
        assert_eq!(all.targets("model.layers.0.mlp.down_proj"), Some(false));
        assert_eq!(all.targets("lm_head"), Some(false));
        assert_eq!(all.targets("model.embed_tokens"), Some(false));
        assert_eq!(cfg(json!({"peft_type": "LORA"})).targets("x"), None);
    }

    #[test]
    fn layers_to_transform_with_and_without_pattern() {
        let c = cfg(json!({"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": [1, 3]}));
        assert_eq!(c.targets("model.layers.1.self_attn.q_proj"), Some(true));
        assert_eq!(c.targets("model.layers.2.self_attn.q_proj"), Some(false));
        let c = cfg(json!({"peft_type": "LORA", "target_modules": ["q_proj"], "layers_to_transform": 2,
                           "layers_pattern": "blocks"}));
        assert_eq!(c.targets("model.layers.2.self_attn.q_proj"), Some(false));
        assert_eq!(c.targets("model.blocks.2.attn.q_proj"), Some(true));
    }

    #[test]
    fn rank_and_alpha_patterns_and_rslora() {
        let c = cfg(json!({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": true,
                           "rank_pattern": {"q_proj": 4, r"layers\.0\..*": 2}, "alpha_pattern": {"v_proj": 3}}));
        let q = c.scale_of("model.layers.0.self_attn.q_proj");
        assert_eq!((q.r, q.alpha, q.scaling), (4, 16.0, 8.0));
        assert_eq!(q.r_from, "rank_pattern['q_proj']");
        let v = c.scale_of("model.layers.0.self_attn.v_proj");
        assert_eq!((v.r, v.alpha), (2, 3.0));
        let k = c.scale_of("model.layers.1.self_attn.k_proj");
        assert_eq!((k.r, k.alpha, k.scaling), (8, 16.0, 16.0 / 8f64.sqrt()));
        // `(.*\.)?(KEY)$`: "proj" alone does not match "q_proj" (the segment must start at a dot).
        let c = cfg(json!({"peft_type": "LORA", "r": 8, "rank_pattern": {"proj": 2}}));
        assert_eq!(c.scale_of("a.q_proj").r, 8);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let e = LoraConfig::parse(Path::new("a.json"), &json!({"peft_type": "LOHA"})).unwrap_err().to_string();
        assert!(e.contains("a.json") && e.contains("LOHA") && e.contains("LORA"), "{e}");
        let e = LoraConfig::parse(Path::new("a.json"), &json!({"peft_type": "LORA", "r": 0})).unwrap_err().to_string();
        assert!(e.contains("'r'"), "{e}");
        let e = LoraConfig::parse(Path::new("a.json"), &json!({"peft_type": "LORA", "target_modules": "(?=x)q"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("target_modules") && e.contains("not supported"), "{e}");
        let e = LoraConfig::parse(Path::new("a.json"), &json!({"peft_type": "LORA", "target_parameters": ["w"]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("target_parameters"), "{e}");
    }
}
