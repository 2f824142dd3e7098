//! A PEFT adapter directory: the config plus `adapter_model.safetensors`, with its tensors grouped per base
//! module. Key layout (`utils/save_and_load.py`, adapter name already stripped on save):
//! `base_model.model.<module>.lora_A.weight` `[r, in]`, `.lora_B.weight` `[out, r]`, `.lora_B.bias` `[out]`
//! (`lora_bias`), `.lora_embedding_A` `[r, num_embeddings]`, `.lora_embedding_B` `[embedding_dim, r]`,
//! `.lora_magnitude_vector.weight` (or without `.weight`, as older files write it) for DoRA, and full
//! replacement tensors `base_model.model.<module>.<param>` for `modules_to_save` (and trained biases with
//! `bias: "all"`/`"lora_only"`). Every tensor must be one of these; anything else is an error naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quantforge_formats::safetensors::{Dtype, SafetensorsFile, StTensor};
use quantforge_formats::FormatError;

use super::{LoraConfig, LoraError, ModuleScale};

/// The prefix PEFT puts before base module names.
pub const KEY_PREFIX: &str = "base_model.model.";

/// What kind of layer a module's LoRA adapts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraKind {
    /// `nn.Linear` (`lora_A`/`lora_B`).
    Linear,
    /// `nn.Embedding` (`lora_embedding_A`/`lora_embedding_B`): ΔW = (B·A)ᵀ.
    Embedding,
}

/// The LoRA tensors of one base module.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleLora {
    /// The base module name, e.g. `model.layers.0.self_attn.q_proj`.
    pub module: String,
    pub kind: LoraKind,
    /// Adapter tensor names.
    pub a: String,
    pub b: String,
    pub bias: Option<String>,
    pub magnitude: Option<String>,
    /// The rank read from A.
    pub rank: u64,
    pub scale: ModuleScale,
}

impl ModuleLora {
    /// The base tensor the delta is added to.
    pub fn weight_name(&self) -> String {
        format!("{}.weight", self.module)
    }
}

/// An open adapter.
pub struct Adapter {
    pub dir: PathBuf,
    pub config: LoraConfig,
    pub file: SafetensorsFile,
    /// LoRA modules by module name.
    pub modules: BTreeMap<String, ModuleLora>,
    /// Full replacement tensors: base tensor name -> adapter tensor name.
    pub replacements: BTreeMap<String, String>,
}

#[derive(Default)]
struct Parts {
    a: Option<(String, LoraKind)>,
    b: Option<(String, LoraKind)>,
    bias: Option<String>,
    magnitude: Option<String>,
}

/// Split an adapter key into (module, role).
fn classify(key: &str) -> Option<(&str, &'static str)> {
    const ROLES: &[&str] = &[
        ".lora_A.weight",
        ".lora_B.weight",
        ".lora_B.bias",
        ".lora_embedding_A",
        ".lora_embedding_B",
        ".lora_magnitude_vector.weight",
        ".lora_magnitude_vector",
    ];
    ROLES.iter().find_map(|r| key.strip_suffix(r).map(|m| (m, *r)))
}

impl Adapter {
    /// Open `dir` (`adapter_config.json` + `adapter_model.safetensors`) and check it on its own: every tensor
    /// recognised, A and B paired, ranks consistent with the config, DoRA and bias tensors as configured.
    pub fn open(dir: impl AsRef<Path>) -> Result<Adapter, LoraError> {
        let dir = dir.as_ref().to_path_buf();
        let config = LoraConfig::open(&dir)?;
        let st_path = dir.join("adapter_model.safetensors");
        if !st_path.is_file() {
            let bin = dir.join("adapter_model.bin");
            if bin.is_file() {
                return Err(FormatError::PickleCheckpoint { path: bin }.into());
            }
            return Err(LoraError::MissingTensor {
                path: dir.clone(),
                name: "adapter_model.safetensors".into(),
                why: "a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors".into(),
            });
        }
        let file = SafetensorsFile::open(&st_path)?;
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        let mut replacements = BTreeMap::new();
        for t in file.tensors() {
            if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) {
                return Err(FormatError::UnsupportedDtype {
                    path: st_path.clone(),
                    name: t.name.clone(),
                    dtype: t.dtype.to_string(),
                    wanted: "a float tensor (F32, F16, BF16 or F64)",
                }
                .into());
            }
            let key = t.name.strip_prefix(KEY_PREFIX).unwrap_or(&t.name);
            let Some((module, role)) = classify(key) else {
                let (module, param) = key.rsplit_once('.').unwrap_or(("", key));
                let is_bias = param == "bias" && config.trained_biases;
                if config.saves(module) || is_bias {
                    replacements.insert(key.to_string(), t.name.clone());
                    continue;
                }
                let hint = if key.contains(".lora_") {
                    "looks like a LoRA tensor saved with an adapter name or in another layout".to_string()
                } else {
                    format!("not a LoRA tensor, and module '{module}' is not in modules_to_save")
                };
                return Err(LoraError::UnexpectedTensor { path: st_path, name: t.name.clone(), message: hint });
            };
            let p = parts.entry(module.to_string()).or_default();
            let slot = match role {
                ".lora_A.weight" => p.a.replace((t.name.clone(), LoraKind::Linear)).map(|x| x.0),
                ".lora_embedding_A" => p.a.replace((t.name.clone(), LoraKind::Embedding)).map(|x| x.0),
                ".lora_B.weight" => p.b.replace((t.name.clone(), LoraKind::Linear)).map(|x| x.0),
                ".lora_embedding_B" => p.b.replace((t.name.clone(), LoraKind::Embedding)).map(|x| x.0),
                ".lora_B.bias" => p.bias.replace(t.name.clone()),
                _ => p.magnitude.replace(t.name.clone()),
            };
            if let Some(other) = slot {
                return Err(LoraError::UnexpectedTensor {
                    path: st_path,
                    name: t.name.clone(),
                    message: format!("duplicates '{other}'"),
                });
            }
        }
        let mut modules = BTreeMap::new();
        for (module, p) in parts {
            let m = check_module(&config, &file, &st_path, &module, p)?;
            modules.insert(module, m);
        }
        Ok(Adapter { dir, config, file, modules, replacements })
    }

    /// The path of the tensor file, for messages.
    pub fn tensor_path(&self) -> &Path {
        self.file.path()
    }

    /// An adapter tensor's header.
    pub fn header(&self, name: &str) -> &StTensor {
        // Names come from this file's own header.
        self.file.tensor(name).expect("adapter tensor listed at open")
    }

    /// An adapter tensor as f32.
    pub fn values(&self, name: &str) -> Result<Vec<f32>, LoraError> {
        Ok(self.file.to_f32(self.header(name))?)
    }
}

fn check_module(
    config: &LoraConfig,
    file: &SafetensorsFile,
    path: &Path,
    module: &str,
    p: Parts,
) -> Result<ModuleLora, LoraError> {
    let full = |suffix: &str| format!("{KEY_PREFIX}{module}{suffix}");
    let missing = |name: String, why: &str| LoraError::MissingTensor { path: path.into(), name, why: why.into() };
    let (a, kind) = p.a.ok_or_else(|| missing(full(".lora_A.weight"), "its lora_B is present"))?;
    let (b, kind_b) = p.b.ok_or_else(|| missing(full(".lora_B.weight"), "its lora_A is present"))?;
    if kind != kind_b {
        return Err(LoraError::UnexpectedTensor {
            path: path.into(),
            name: b,
            message: format!("pairs an embedding LoRA tensor with a linear one ('{a}')"),
        });
    }
    let shape = |n: &str| file.tensor(n).map(|t| t.shape.clone()).unwrap_or_default();
    let (sa, sb) = (shape(&a), shape(&b));
    if sa.len() != 2 || sb.len() != 2 {
        let (name, s) = if sa.len() != 2 { (a, sa) } else { (b, sb) };
        return Err(LoraError::UnexpectedTensor {
            path: path.into(),
            name,
            message: format!("has shape {s:?}; LoRA A and B are matrices (conv adapters are not supported)"),
        });
    }
    if sa[0] != sb[1] {
        return Err(LoraError::RankMismatch {
            path: path.into(),
            tensor: b,
            expected: sa[0],
            expected_from: format!("'{a}' (shape {sa:?})"),
            found: sb[1],
        });
    }
    let scale = config.scale_of(module);
    if scale.r != sa[0] {
        return Err(LoraError::RankMismatch {
            path: path.into(),
            tensor: a,
            expected: scale.r,
            expected_from: format!("adapter_config.json {}", scale.r_from),
            found: sa[0],
        });
    }
    match (&p.magnitude, config.use_dora) {
        (None, true) => return Err(missing(full(".lora_magnitude_vector.weight"), "use_dora is true")),
        (Some(m), false) => {
            return Err(LoraError::UnexpectedTensor {
                path: path.into(),
                name: m.clone(),
                message: "DoRA magnitude vector, but use_dora is false in adapter_config.json".into(),
            })
        }
        _ => {}
    }
    match (&p.bias, config.lora_bias) {
        (None, true) if kind == LoraKind::Linear => return Err(missing(full(".lora_B.bias"), "lora_bias is true")),
        (Some(bias), false) => {
            return Err(LoraError::UnexpectedTensor {
                path: path.into(),
                name: bias.clone(),
                message: "lora_B bias, but lora_bias is false in adapter_config.json".into(),
            })
        }
        _ => {}
    }
    Ok(ModuleLora { module: module.into(), kind, a, b, bias: p.bias, magnitude: p.magnitude, rank: sa[0], scale })
}
