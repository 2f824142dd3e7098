//! LoRA adapters (PEFT layout): merging into a Hugging Face base model ([`merge_lora`]) and export as a GGUF
//! adapter llama.cpp loads with `--lora` ([`gguf`]).
//!
//! The spec is PEFT (huggingface/peft `src/peft/tuners/lora/{config,layer,variants}.py`,
//! `utils/save_and_load.py`); every flavour PEFT writes for linear and embedding layers is handled: LoRA
//! (alpha/r), rsLoRA (alpha/sqrt r), `rank_pattern`/`alpha_pattern`, `fan_in_fan_out`, `target_modules`
//! (list, regex, `"all-linear"`, with `exclude_modules` and `layers_to_transform`/`layers_pattern`),
//! embedding adapters, `modules_to_save`, `lora_bias`, DoRA. Configs and tensors are checked against the base
//! on headers only ([`plan`]), before any weight is read.

mod adapter;
mod config;
mod error;
pub mod gguf;
pub mod math;
mod merge;
pub mod plan;

pub use adapter::{Adapter, LoraKind, ModuleLora, KEY_PREFIX};
pub use config::{LoraConfig, ModuleScale, ModuleSelector};
pub use error::LoraError;
pub use gguf::{export_gguf, GgufAdapterSummary};
pub use merge::{apply, merge_lora, merge_module, MergeOptions, MergeSummary, OutDtype};
