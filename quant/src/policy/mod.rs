//! The per-tensor type policy of llama.cpp's `llama-quantize`: which tensors are quantized, to which type,
//! and in which order they are written.
//!
//! Invariant: for the same tensor list, model hyper-parameters and options, [`plan_all`] chooses exactly
//! the types llama-quantize b9928 writes, in its order (checked against llama.cpp's measured mix tables and
//! against its output files in `quant/tests/policy_*.rs`).
//!
//! Ported from `src/llama-quant.cpp`, `src/llama-model-loader.h` and `tools/quantize/quantize.cpp` at
//! <https://github.com/ggml-org/llama.cpp/tree/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62>:
//! - `ftype`: file types, `QUANT_OPTIONS`, `try_parse_ftype`, `llama_ftype_get_default_type`;
//! - `tensor`: categories, `tensor_allows_quantization`, `tensor_requires_imatrix`, `tensor_type_fallback`;
//! - `mix`: `llama_tensor_get_type_impl` as rule tables, with its counters;
//! - `planner`: `llama_tensor_get_type` and the checks made before writing;
//! - `order`: `weight_name_comparer`;
//! - `pattern`: `--tensor-type PATTERN=TYPE`.
//!
//! Options the pipeline handles itself and this module does not see: `--allow-requantize` (a quantized
//! source whose type changes is an error without it), per-tensor imatrix lookup (a tensor whose
//! [`Decision::requires_imatrix`] is set but that has no imatrix entry is an error), `--include-weights` /
//! `--exclude-weights` (they decide [`PolicyOptions::has_imatrix`]: true when any imatrix entry is left),
//! `--prune-layers` (prune and rename before building the planner) and `--keep-split` (another order).

mod error;
pub mod ftype;
mod mix;
mod model;
pub mod order;
pub mod pattern;
pub mod planner;
pub mod tensor;

use quantforge_formats::GgmlType;

pub use error::PolicyError;
pub use ftype::{FileType, QuantOption, QUANT_OPTIONS};
pub use model::ModelInfo;
pub use order::{compare_weight_names, output_order, parse_blk_layer};
pub use pattern::{parse_ggml_type, parse_tensor_type_option, NameMatcher, TensorPattern};
pub use planner::{plan_all, planned_size, Planned, Planner};
pub use tensor::TensorCategory;

/// The llama-quantize options that affect tensor types.
#[derive(Clone, Debug)]
pub struct PolicyOptions {
    /// The TYPE argument.
    pub ftype: FileType,
    /// `--pure`: no mix, every quantizable tensor gets the default type (`--tensor-type` still applies).
    pub pure: bool,
    /// `--leave-output-tensor`: keep `output.weight` as it is.
    pub leave_output_tensor: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--tensor-type PATTERN=TYPE`, in command-line order; the first matching pattern wins.
    pub tensor_types: Vec<(TensorPattern, GgmlType)>,
    /// Whether an importance matrix is used.
    pub has_imatrix: bool,
    /// `--dry-run`: plan only, so a missing importance matrix is not an error (llama.cpp only warns).
    pub dry_run: bool,
}

impl PolicyOptions {
    /// The defaults of llama-quantize for `ftype`: no overrides, no imatrix.
    pub fn new(ftype: FileType) -> PolicyOptions {
        PolicyOptions {
            ftype,
            pure: false,
            leave_output_tensor: false,
            output_tensor_type: None,
            token_embedding_type: None,
            tensor_types: Vec::new(),
            has_imatrix: false,
            dry_run: false,
        }
    }
}

/// What the policy needs to know about one source tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorDesc<'a> {
    /// GGUF tensor name.
    pub name: &'a str,
    /// Dimensions in ggml order (`ne[0]` is the row length).
    pub ne: &'a [u64],
    /// The tensor's type in the source file.
    pub src_type: GgmlType,
}

/// The type chosen for one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The type written.
    pub ty: GgmlType,
    /// False when `ty` equals the source type: the data is copied unchanged.
    pub quantize: bool,
    /// The type the mix wanted before `tensor_type_fallback` replaced it (row length not a whole number
    /// of its blocks).
    pub fallback_from: Option<GgmlType>,
    /// Whether `ty` needs an importance matrix for this tensor (`tensor_requires_imatrix`).
    pub requires_imatrix: bool,
    /// The tensor's category.
    pub category: TensorCategory,
}
