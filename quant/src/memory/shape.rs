//! What the planner needs to know about a model: its GGUF tensors (names, shapes, source types) and the
//! attention shape of every layer (KV heads, K/V head sizes, sliding window). Read from a GGUF's metadata
//! and tensor list, or derived from a Hugging Face config.json through the architecture registry
//! (`quantforge_formats::arch`).

use std::path::{Path, PathBuf};

use quantforge_formats::arch::{self, limits, Architecture, GgufHparams, HfConfig, HparamKey as K, RopeScaling};
use quantforge_formats::gguf::{GgufFile, GgufValue};
use quantforge_formats::hf::{read_json, HfModel};
use quantforge_formats::GgmlType;

use super::MemoryError;
use crate::policy::ModelInfo;

/// One GGUF tensor of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorShape {
    pub name: String,
    /// ggml order (`ne[0]` is the row length).
    pub ne: Vec<u64>,
    /// The type in the source (a GGUF's own type; F16 for 2-D and F32 for 1-D tensors of a converted HF
    /// model, as `convert --outtype f16` writes them).
    pub src_type: GgmlType,
}

/// The attention shape of one layer (`llama_hparams::n_head_kv(il)`, `n_embd_head_k`, `is_swa(il)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerAttention {
    pub n_head_kv: u32,
    pub head_dim_k: u32,
    pub head_dim_v: u32,
    /// The layer attends through a sliding window of [`ModelShape::n_swa`] tokens.
    pub swa: bool,
}

impl LayerAttention {
    /// `n_embd_k_gqa(il)`: K values stored per token.
    pub fn n_embd_k_gqa(&self) -> u64 {
        u64::from(self.head_dim_k) * u64::from(self.n_head_kv)
    }

    /// `n_embd_v_gqa(il)`: V values stored per token.
    pub fn n_embd_v_gqa(&self) -> u64 {
        u64::from(self.head_dim_v) * u64::from(self.n_head_kv)
    }
}

/// A model as the memory planner sees it.
#[derive(Clone, Debug)]
pub struct ModelShape {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// Hyper-parameters the type policy reads.
    pub info: ModelInfo,
    pub n_embd: u64,
    pub n_head: u32,
    pub n_vocab: u64,
    /// Largest feed-forward width of any layer.
    pub n_ff: u64,
    /// One entry per layer.
    pub layers: Vec<LayerAttention>,
    /// Sliding-window size (`hparams.n_swa`), 0 without SWA layers.
    pub n_swa: u32,
    /// Training context (`<arch>.context_length` / `max_position_embeddings`).
    pub n_ctx_train: Option<u32>,
    pub tensors: Vec<TensorShape>,
    /// `general.file_type` of a GGUF source.
    pub file_type: Option<u32>,
}

/// Architectures whose llama.cpp loader calls `load_swa_pattern(n_pattern, dense_first)` when the model has a
/// sliding window (`src/models/*.cpp`); a `sliding_window_pattern` key overrides the default pattern.
const SWA_PATTERNS: &[(&str, u32, bool)] = &[
    ("gemma2", 2, false),
    ("gemma3", 6, false),
    ("gemma3n", 5, false),
    ("gemma-embedding", 6, false),
    ("cohere2", 4, false),
    ("gpt-oss", 2, false),
    ("llama4", 4, false),
    ("exaone4", 4, false),
    ("olmo2", 4, false),
];

/// `llama_hparams::set_swa_pattern`.
fn swa_pattern(n_layer: usize, n_pattern: u32, dense_first: bool) -> Vec<bool> {
    let n = n_pattern as usize;
    (0..n_layer).map(|il| if dense_first { n == 0 || il % n != 0 } else { n == 0 || il % n < n - 1 }).collect()
}

impl ModelShape {
    /// Open a model: a GGUF file, a HF directory, or a bare `config.json`.
    pub fn open(path: &Path) -> Result<ModelShape, MemoryError> {
        if path.is_dir() {
            return ModelShape::from_hf_dir(path);
        }
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            return ModelShape::from_config_json(path);
        }
        ModelShape::from_gguf(&GgufFile::open(path)?)
    }

    /// From a GGUF file's metadata and tensor list.
    pub fn from_gguf(file: &GgufFile) -> Result<ModelShape, MemoryError> {
        let path = file.path().to_path_buf();
        let missing = |key: &str| MemoryError::MissingKey { path: path.clone(), key: key.into() };
        let bad = |key: &str, message: &str| MemoryError::BadKey {
            path: path.clone(),
            key: key.into(),
            message: message.into(),
        };
        let hp = GgufHparams::new(file).ok_or_else(|| missing("general.architecture"))?;
        let arch = hp.arch().to_string();
        let key = |k: K| hp.key(k);
        // Every count and size is within its limit before anything is sized from it.
        let capped = |k: K, v: u64| -> Result<u64, MemoryError> {
            match limits::for_hparam(k) {
                Some(limit) => Ok(limit.check(&path, &key(k), v)?),
                None => Ok(v),
            }
        };
        let scalar = |k: K| -> Result<Option<u64>, MemoryError> {
            match hp.get(k) {
                None => Ok(None),
                Some(v) => {
                    let v = v.as_u64().ok_or_else(|| bad(&key(k), "is not an unsigned integer"))?;
                    capped(k, v).map(Some)
                }
            }
        };
        let n_layer = scalar(K::BlockCount)?.ok_or_else(|| missing(&key(K::BlockCount)))?;
        if n_layer == 0 || n_layer > 4096 {
            return Err(bad(&key(K::BlockCount), "must be in 1..=4096"));
        }
        let n_layer = n_layer as usize;
        // A per-layer array or one value for every layer (`get_key_or_arr`).
        let per_layer = |k: K| -> Result<Option<Vec<u64>>, MemoryError> {
            let Some(v) = hp.get(k) else { return Ok(None) };
            let values: Vec<Option<u64>> = match v.as_array() {
                Some(a) => a.iter().map(|v| v.as_u64()).collect(),
                None => vec![v.as_u64(); n_layer],
            };
            if values.len() != n_layer || values.iter().any(Option::is_none) {
                return Err(bad(&key(k), "must be a count or one count per layer"));
            }
            values.into_iter().flatten().map(|v| capped(k, v)).collect::<Result<Vec<_>, _>>().map(Some)
        };
        let n_embd = scalar(K::EmbeddingLength)?.ok_or_else(|| missing(&key(K::EmbeddingLength)))?;
        let n_head = per_layer(K::HeadCount)?.ok_or_else(|| missing(&key(K::HeadCount)))?;
        let n_head_kv = per_layer(K::HeadCountKv)?.unwrap_or_else(|| n_head.clone());
        let n_head0 = n_head[0];
        if n_head0 == 0 || n_head0 > u64::from(u32::MAX) {
            return Err(bad(&key(K::HeadCount), "must be positive"));
        }
        let head_dim_k = scalar(K::KeyLength)?.unwrap_or(n_embd / n_head0);
        let head_dim_v = scalar(K::ValueLength)?.unwrap_or(n_embd / n_head0);
        for (hd, k) in [(head_dim_k, K::KeyLength), (head_dim_v, K::ValueLength)] {
            // Two capped values: the product cannot overflow; its size has its own limit.
            let what = format!("{} × {}", key(K::HeadCount), key(k));
            limits::ATTENTION_WIDTH.check(&path, &what, n_head0 * hd)?;
        }
        let to_u32 = |v: u64, k: K| u32::try_from(v).map_err(|_| bad(&key(k), "is too large"));
        let mut n_swa = to_u32(scalar(K::SlidingWindow)?.unwrap_or(0), K::SlidingWindow)?;
        // A registered architecture's loader facts (window default, pattern) come from the registry.
        let registered = arch::ARCHITECTURES.iter().find(|a| a.gguf_name == arch);
        // Only a registered pattern; OLMo 2's refused window (OLMo 3 files) is sized from the table below.
        let sliding =
            registered.map(|a| a.forward.sliding_window).filter(|s| matches!(s, arch::SlidingWindow::Pattern { .. }));
        let swa = if let Some(sliding) = sliding {
            let layers = arch::swa_layers(sliding, n_layer, |k| hp.get(k))
                .map_err(|k| bad(&key(k), "is not a window size or layer pattern"))?;
            n_swa = layers.as_ref().map_or(0, |s| s.window);
            layers.map_or_else(|| vec![false; n_layer], |s| s.layers)
        } else {
            match SWA_PATTERNS.iter().find(|(a, _, _)| *a == arch) {
                Some(&(_, n_pattern, dense_first)) if n_swa > 0 => match hp.get(K::SlidingWindowPattern) {
                    Some(GgufValue::Array(values)) => {
                        let flags: Vec<Option<bool>> = values.iter().map(|v| v.as_bool()).collect();
                        if flags.len() != n_layer || flags.iter().any(Option::is_none) {
                            return Err(bad(&key(K::SlidingWindowPattern), "must hold one bool per layer"));
                        }
                        flags.into_iter().flatten().collect()
                    }
                    Some(v) => {
                        let n = v.as_u64().ok_or_else(|| bad(&key(K::SlidingWindowPattern), "is not a count"))?;
                        swa_pattern(n_layer, to_u32(n, K::SlidingWindowPattern)?, dense_first)
                    }
                    None => swa_pattern(n_layer, n_pattern, dense_first),
                },
                _ => vec![false; n_layer],
            }
        };
        // `n_swa` is 0 without SWA layers (llama.cpp zeroes it where it disables the window, e.g. Phi-3).
        let n_swa = if swa.iter().any(|&s| s) { n_swa } else { 0 };
        let layers = (0..n_layer)
            .map(|il| {
                Ok(LayerAttention {
                    n_head_kv: to_u32(n_head_kv[il], K::HeadCountKv)?,
                    head_dim_k: to_u32(head_dim_k, K::KeyLength)?,
                    head_dim_v: to_u32(head_dim_v, K::ValueLength)?,
                    swa: swa[il],
                })
            })
            .collect::<Result<Vec<_>, MemoryError>>()?;
        let tensors: Vec<TensorShape> = file
            .tensors()
            .iter()
            .map(|t| TensorShape { name: t.name.clone(), ne: t.ne.clone(), src_type: t.ggml_type })
            .collect();
        if tensors.is_empty() {
            return Err(MemoryError::NoTensors { path });
        }
        let n_vocab = match file.tensor("token_embd.weight") {
            Some(t) => t.ne.get(1).copied().unwrap_or(0),
            None => scalar(K::VocabSize)?
                .or_else(|| file.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map(|a| a.len() as u64))
                .ok_or_else(|| missing("tokenizer.ggml.tokens"))?,
        };
        let n_ff = per_layer(K::FeedForwardLength)?.and_then(|v| v.into_iter().max()).unwrap_or(4 * n_embd);
        let info = ModelInfo {
            arch: arch.clone(),
            n_layer: n_layer as u32,
            n_head: n_head0 as u32,
            n_head_kv: to_u32(n_head_kv[0], K::HeadCountKv)?,
            n_expert: to_u32(scalar(K::ExpertCount)?.unwrap_or(0), K::ExpertCount)?,
        };
        let n_ctx_train = scalar(K::ContextLength)?.map(|c| to_u32(c, K::ContextLength)).transpose()?;
        let file_type = file.get("general.file_type").and_then(GgufValue::as_u64).and_then(|v| u32::try_from(v).ok());
        Ok(ModelShape {
            path,
            info,
            n_embd,
            n_head: n_head0 as u32,
            n_vocab,
            n_ff,
            layers,
            n_swa,
            n_ctx_train,
            tensors,
            file_type,
        })
    }

    /// From a HF model directory: the GGUF tensors its safetensors would convert to.
    pub fn from_hf_dir(dir: &Path) -> Result<ModelShape, MemoryError> {
        let config_path = dir.join("config.json");
        let cfg = HfConfig::parse(&config_path, &read_json(&config_path)?)?;
        let arch = arch::lookup(&config_path, &cfg.architecture)?;
        let model = HfModel::open(dir)?;
        let mut tensors: Vec<TensorShape> = arch::plan_tensors(&model, arch, &cfg)?
            .into_iter()
            .map(|t| {
                let ne = t.ne();
                TensorShape { src_type: converted_type(&t.gguf_name, &ne), name: t.gguf_name, ne }
            })
            .collect();
        tensors.extend(generated_tensors(arch, &cfg));
        ModelShape::from_config(arch, &cfg, tensors)
    }

    /// From a bare `config.json`: the GGUF tensors are derived from the architecture's rules.
    pub fn from_config_json(path: &Path) -> Result<ModelShape, MemoryError> {
        ModelShape::from_config_value(path, &read_json(path)?)
    }

    /// From a parsed `config.json` (`path` names it in messages).
    pub fn from_config_value(path: &Path, json: &serde_json::Value) -> Result<ModelShape, MemoryError> {
        let cfg = HfConfig::parse(path, json)?;
        let arch = arch::lookup(path, &cfg.architecture)?;
        arch::check_config(arch, &cfg)?;
        ModelShape::from_config(arch, &cfg, config_tensors(arch, &cfg))
    }

    fn from_config(arch: &Architecture, cfg: &HfConfig, tensors: Vec<TensorShape>) -> Result<ModelShape, MemoryError> {
        if tensors.is_empty() {
            return Err(MemoryError::NoTensors { path: cfg.path.clone() });
        }
        let layer = LayerAttention {
            n_head_kv: cfg.kv_heads(),
            head_dim_k: cfg.head_dim(),
            head_dim_v: cfg.head_dim(),
            // Llama, Mistral and Qwen run without SWA in llama.cpp (Mistral's `sliding_window` is not even
            // written to GGUF); Gemma's sliding layers are read below from the keys convert writes.
            swa: false,
        };
        let mut kv = quantforge_formats::kv::KvList::new();
        arch::arch_metadata(&mut kv, arch, cfg, 0);
        let n_layer = cfg.block_count as usize;
        let swa = arch::swa_layers(arch.forward.sliding_window, n_layer, |k| kv.get(&k.key(arch.gguf_name))).map_err(
            |k| MemoryError::BadKey {
                path: cfg.path.clone(),
                key: k.key(arch.gguf_name),
                message: "is not a window size or layer pattern".into(),
            },
        )?;
        let layers = (0..n_layer)
            .map(|il| LayerAttention { swa: swa.as_ref().is_some_and(|s| s.layers[il]), ..layer })
            .collect();
        Ok(ModelShape {
            path: cfg.path.clone(),
            info: ModelInfo {
                arch: arch.gguf_name.to_string(),
                n_layer: cfg.block_count,
                n_head: cfg.head_count,
                n_head_kv: cfg.kv_heads(),
                // Convert writes `{arch}.expert_count` whenever config.json states it.
                n_expert: cfg.expert_count.unwrap_or(0),
            },
            n_embd: u64::from(cfg.hidden_size),
            n_head: cfg.head_count,
            n_vocab: u64::from(cfg.vocab_size),
            n_ff: u64::from(cfg.ffn_length),
            layers,
            n_swa: swa.map_or(0, |s| s.window),
            n_ctx_train: cfg.context_length,
            tensors,
            file_type: None,
        })
    }

    /// Number of layers (`n_layer`).
    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// Whether `output.weight` is absent, so llama.cpp uses `token_embd` as the output too.
    pub fn tied_embeddings(&self) -> bool {
        !self.tensors.iter().any(|t| t.name == "output.weight")
    }

    /// Total parameters (saturating: the readers' limits keep real totals far below `u64::MAX`).
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.ne.iter().fold(1u64, |n, &d| n.saturating_mul(d))).fold(0u64, u64::saturating_add)
    }
}

/// The type `convert --outtype f16` gives a tensor: F32 for 1-D tensors, F16 otherwise.
fn converted_type(name: &str, ne: &[u64]) -> GgmlType {
    // Expert routers stay F32 (`prepare_tensors`' F32 list), like 1-D tensors.
    if ne.len() <= 1 || name.contains(".ffn_gate_inp") {
        GgmlType::F32
    } else {
        GgmlType::F16
    }
}

/// Tensors the converter generates rather than maps: `rope_freqs.weight` (`head_dim / 2` F32 values) for
/// Llama 3 RoPE scaling (`LlamaModel.generate_extra_tensors`), Phi-3's LongRoPE factors (`n_rot / 2` each).
fn generated_tensors(arch: &Architecture, cfg: &HfConfig) -> Vec<TensorShape> {
    if let Ok(Some(f)) = arch::longrope_factors(arch, cfg) {
        return ["rope_factors_long.weight", "rope_factors_short.weight"]
            .iter()
            .map(|name| TensorShape { name: (*name).into(), ne: vec![f.long.len() as u64], src_type: GgmlType::F32 })
            .collect();
    }
    match cfg.rope_scaling {
        RopeScaling::Llama3 { .. } if arch.llama3_rope_freqs => vec![TensorShape {
            name: "rope_freqs.weight".into(),
            ne: vec![u64::from(cfg.head_dim() / 2)],
            src_type: GgmlType::F32,
        }],
        _ => Vec::new(),
    }
}

/// The GGUF tensors a checkpoint described by `cfg` converts to, from the architecture's rules alone (no
/// safetensors needed): every required rule for every layer, `output.weight` unless the embeddings are
/// tied, optional biases when `attention_bias` / `mlp_bias` say so, and generated tensors.
pub fn config_tensors(arch: &Architecture, cfg: &HfConfig) -> Vec<TensorShape> {
    let flag = |k: &str| cfg.raw.get(k).and_then(serde_json::Value::as_bool).unwrap_or(false);
    let mut out = Vec::new();
    for rule in arch.rules {
        let present = !rule.optional
            || match rule.gguf {
                "output.weight" => !cfg.tie_word_embeddings,
                g if g.ends_with(".bias") && g.contains(".ffn_") => flag("mlp_bias"),
                g if g.ends_with(".bias") => flag("attention_bias") || flag("qkv_bias"),
                // Qwen2-MoE's shared expert, present with its size.
                g if g.contains("_shexp.") => cfg.shared_expert_ffn_length.is_some(),
                _ => false,
            };
        if !present {
            continue;
        }
        let mut ne: Vec<u64> = rule.shape.iter().rev().map(|&d| d.resolve(cfg)).collect();
        if rule.stacks_experts() {
            // Stacked experts: `[.., n_expert]` in ggml order.
            ne.push(u64::from(cfg.expert_count.unwrap_or(0)));
        }
        let bids: Vec<Option<u32>> =
            if rule.gguf.contains("{bid}") { (0..cfg.block_count).map(Some).collect() } else { vec![None] };
        for bid in bids {
            let name = arch::fill(rule.gguf, bid);
            out.push(TensorShape { src_type: converted_type(&name, &ne), name, ne: ne.clone() });
        }
    }
    out.extend(generated_tensors(arch, cfg));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swa_patterns_follow_llama_cpp() {
        // gemma2: every other layer, starting with a SWA layer; gemma3: five SWA then one full.
        assert_eq!(swa_pattern(4, 2, false), [true, false, true, false]);
        assert_eq!(swa_pattern(7, 6, false), [true, true, true, true, true, false, true]);
        assert_eq!(swa_pattern(5, 4, true), [false, true, true, true, false]);
        assert_eq!(swa_pattern(3, 0, false), [true, true, true]);
    }

    /// The planner sizes Granite, SmolLM3, Phi-3 and OLMo 2 the same from llama.cpp's GGUF, the HF directory and the bare
    /// config.json: every layer with a full-context KV cache (llama.cpp disables Phi-3's sliding window, and
    /// SmolLM3's NoPE layers keep their cache), the same tensors (Phi-3's fused ones and LongRoPE factors).
    #[test]
    fn new_architectures_plan_alike_from_gguf_hf_and_config() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs");
        for name in ["granite", "smollm3", "phi3", "olmo2"] {
            let dir = root.join(name);
            let gguf = ModelShape::open(&dir.join("llama.cpp-f32.gguf")).unwrap();
            assert!(gguf.layers.iter().all(|l| !l.swa && l.head_dim_k == 8 && l.n_head_kv == 2), "{name}");
            let sorted = |m: &ModelShape| {
                let mut t: Vec<(String, Vec<u64>)> = m.tensors.iter().map(|t| (t.name.clone(), t.ne.clone())).collect();
                t.sort();
                t
            };
            for other in [ModelShape::open(&dir).unwrap(), ModelShape::open(&dir.join("config.json")).unwrap()] {
                assert_eq!(other.layers, gguf.layers, "{name}");
                assert_eq!((other.n_embd, other.n_ff, other.n_vocab), (gguf.n_embd, gguf.n_ff, gguf.n_vocab), "{name}");
                assert_eq!(sorted(&other), sorted(&gguf), "{name}");
            }
        }
        // Phi-3's `sliding_window` (2047 in the fixture) is recorded in GGUF but disabled by llama.cpp.
        assert_eq!(ModelShape::open(&root.join("phi3/llama.cpp-f32.gguf")).unwrap().n_swa, 0);
    }

    #[test]
    fn qwen3_config_tensors() {
        let v = serde_json::json!({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "vocab_size": 100, "tie_word_embeddings": true});
        let cfg = HfConfig::parse(Path::new("config.json"), &v).unwrap();
        let arch = arch::lookup(Path::new("config.json"), &cfg.architecture).unwrap();
        let t = config_tensors(arch, &cfg);
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert!(!names.contains(&"output.weight"), "tied");
        assert!(names.contains(&"blk.1.attn_k_norm.weight"));
        // 2 global + 11 per layer.
        assert_eq!(t.len(), 2 + 2 * 11);
        let q = t.iter().find(|t| t.name == "blk.0.attn_q.weight").unwrap();
        assert_eq!((q.ne.clone(), q.src_type), (vec![64, 128], GgmlType::F16));
        let k = t.iter().find(|t| t.name == "blk.0.attn_k.weight").unwrap();
        assert_eq!(k.ne, [64, 64]);
    }

    #[test]
    fn gemma_configs_count_their_sliding_layers_at_the_window() {
        use crate::memory::{kv_cache, KvLayout};
        let gemma = |arch: &str, layers: u32, extra: serde_json::Value| {
            let mut v = serde_json::json!({"architectures": [arch], "hidden_size": 64, "intermediate_size": 96,
                "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                "vocab_size": 100, "max_position_embeddings": 8192, "rms_norm_eps": 1e-6,
                "query_pre_attn_scalar": 32, "sliding_window": 1024});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            ModelShape::from_config_value(Path::new("config.json"), &v).unwrap()
        };
        // Gemma 3: five sliding layers in six (llama.cpp's fixed pattern), window 1024.
        let m = gemma("Gemma3ForCausalLM", 7, serde_json::json!({}));
        assert_eq!(m.n_swa, 1024);
        assert_eq!(m.layers.iter().map(|l| l.swa).collect::<Vec<_>>(), [true, true, true, true, true, false, true]);
        let kv = kv_cache(&m, &KvLayout::new(8192)).unwrap();
        // One full layer of 8192 cells, six sliding ones of pad(1024 + 512, 256) = 1536 cells; 2 x 2 x 32 x 2 bytes each.
        assert_eq!(kv.bytes(), 256 * (8192 + 6 * 1536));
        // Pattern 1: no window key, every layer global.
        let m = gemma("Gemma3ForCausalLM", 7, serde_json::json!({"sliding_window_pattern": 1}));
        assert!(m.n_swa == 0 && m.layers.iter().all(|l| !l.swa));
        // Gemma 2: every other layer.
        let m = gemma("Gemma2ForCausalLM", 4, serde_json::json!({}));
        assert_eq!((m.n_swa, m.layers.iter().filter(|l| l.swa).count()), (1024, 2));
        // A config llama.cpp cannot run is refused by key.
        let v = serde_json::json!({"architectures": ["Gemma2ForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "vocab_size": 100, "max_position_embeddings": 8192, "rms_norm_eps": 1e-6});
        let e = ModelShape::from_config_value(Path::new("config.json"), &v).unwrap_err().to_string();
        assert!(e.contains("query_pre_attn_scalar"), "{e}");
    }

    #[test]
    fn gemma_ggufs_read_their_sliding_layers_through_the_registry() {
        let fixture = |n: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs").join(n);
        let m = ModelShape::open(&fixture("gemma2").join("llama.cpp-f32.gguf")).unwrap();
        assert_eq!((m.n_swa, m.layers.iter().map(|l| l.swa).collect::<Vec<_>>()), (8, vec![true, false]));
        let m = ModelShape::open(&fixture("gemma3").join("llama.cpp-f32.gguf")).unwrap();
        assert_eq!(m.layers.iter().filter(|l| l.swa).count(), 5);
        // The HF directory gives the same layers.
        let h = ModelShape::open(&fixture("gemma3")).unwrap();
        assert_eq!((h.n_swa, h.layers), (m.n_swa, m.layers));
    }

    #[test]
    fn moe_config_tensors_are_the_converted_ggufs() {
        // Every expert stacked and resident: the tensors a bare config.json implies are those llama.cpp's
        // converter wrote for the fixture (names and shapes), and the policy sees the expert count.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs");
        for name in ["mixtral", "qwen2moe", "qwen3moe"] {
            let from_config = ModelShape::open(&root.join(name).join("config.json")).unwrap();
            let gguf = ModelShape::open(&root.join(name).join("llama.cpp-f32.gguf")).unwrap();
            let set = |m: &ModelShape| {
                let mut v: Vec<(String, Vec<u64>)> = m.tensors.iter().map(|t| (t.name.clone(), t.ne.clone())).collect();
                v.sort();
                v
            };
            assert_eq!(set(&from_config), set(&gguf), "{name}");
            assert_eq!((from_config.info.n_expert, gguf.info.n_expert), (4, 4), "{name}");
            let exps = from_config.tensors.iter().find(|t| t.name == "blk.1.ffn_down_exps.weight").unwrap();
            assert_eq!((exps.ne.len(), exps.ne[2], exps.src_type), (3, 4, GgmlType::F16), "{name}");
            let router = from_config.tensors.iter().find(|t| t.name == "blk.0.ffn_gate_inp.weight").unwrap();
            assert_eq!(router.src_type, GgmlType::F32, "{name}");
        }
    }
}
