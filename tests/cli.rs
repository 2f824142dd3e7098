//! End-to-end tests of the `quantforge` binary.

mod util;

#[path = "checkpoint.rs"]
mod checkpoint;

#[path = "compare.rs"]
mod compare;

#[path = "convert.rs"]
mod convert;

#[path = "gptq_gguf.rs"]
mod gptq_gguf;

#[path = "intquant.rs"]
mod intquant;

#[path = "inspect.rs"]
mod inspect;

#[path = "lora.rs"]
mod lora;

#[path = "quantize.rs"]
mod quantize;

#[path = "reliability.rs"]
mod reliability;

#[path = "eval.rs"]
mod eval;

#[path = "estimate.rs"]
mod estimate;

#[path = "mmlu.rs"]
mod mmlu;

#[path = "split.rs"]
mod split;

#[path = "bounds.rs"]
mod bounds;
