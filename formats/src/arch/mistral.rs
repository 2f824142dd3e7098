//! `MistralForCausalLM` -> `llama`: llama.cpp registers it on `LlamaModel` (`conversion/llama.py`), so it
//! is Llama in every respect (sliding-window attention is not recorded in GGUF).

use super::{llama::LLAMA, Architecture};

pub(super) static MISTRAL: Architecture = Architecture { hf_names: &["MistralForCausalLM"], ..LLAMA };
