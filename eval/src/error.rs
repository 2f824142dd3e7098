//! The crate's error type: one variant per failure, each naming the model, key or tensor involved.

use std::path::PathBuf;

use quantforge_formats::{FormatError, GgmlType};
use quantforge_quant::QuantError;

/// Result alias for this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// Everything that can go wrong loading a model, tokenizing or evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A quantized checkpoint (GPTQ, AWQ, compressed-tensors) that cannot be read.
    #[error(transparent)]
    Checkpoint(#[from] quantforge_quant::checkpoint::CheckpointError),
    #[error("tensor '{name}': {source}")]
    Dequantize { name: String, source: QuantError },
    #[error("{path}: architecture '{arch}' is not supported by the forward pass (supported: {supported})")]
    UnsupportedArchitecture { path: PathBuf, arch: String, supported: String },
    /// The architecture's registry entry states a forward-pass feature the forward pass does not implement.
    #[error("{path}: architecture '{arch}' needs {feature}, which the forward pass does not implement")]
    UnsupportedFeature { path: PathBuf, arch: &'static str, feature: &'static str },
    /// AWQ folds the inverse of its Q/K/V and gate/up input scales into the RMSNorm before them; an
    /// architecture without pre-norms (OLMo 2) has nothing to fold them into.
    #[error(
        "{path}: architecture '{arch}' has no RMSNorm before its Q/K/V and gate/up projections, into which AWQ folds \
         its input scales; use --method gptq or rtn"
    )]
    AwqWithoutPreNorms { path: PathBuf, arch: &'static str },
    /// A block index past the model's last block.
    #[error("{path}: block {index} does not exist (the model has {n_layer} blocks)")]
    BlockOutOfRange { path: PathBuf, index: usize, n_layer: usize },
    /// A weight name that is not one of the block's matrices.
    #[error("block {block} has no weight matrix '{name}'")]
    UnknownWeight { block: usize, name: String },
    /// Replacement values of the wrong size for a weight matrix.
    #[error("weight '{name}' is {rows}x{cols}, but {found} values were given")]
    BadWeightLength { name: String, rows: usize, cols: usize, found: usize },
    #[error("{path}: RoPE scaling type '{kind}' is not supported by the forward pass (supported: {supported})")]
    UnsupportedRopeScaling { path: PathBuf, kind: String, supported: &'static str },
    #[error("{path}: metadata key '{key}' is missing or has the wrong type")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: invalid model config: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("{path}: tensor '{name}' is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor '{name}' has shape {found:?}, expected {expected:?}")]
    BadShape { path: PathBuf, name: String, found: Vec<u64>, expected: Vec<u64> },
    #[error("{path}: tensor '{name}' has type {ty}, which cannot be dequantized")]
    UnsupportedType { path: PathBuf, name: String, ty: GgmlType },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("token id {id} is outside the vocabulary of {n_vocab} tokens")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("a context of {n_ctx} tokens is longer than the model's training context of {n_ctx_train}")]
    ContextTooLong { n_ctx: usize, n_ctx_train: usize },
    #[error(
        "the text has {n_tokens} tokens; at least 2*ctx = {needed} are needed (use a longer text or a smaller --ctx)"
    )]
    TextTooShort { n_tokens: usize, needed: usize },
    #[error("invalid option: {message}")]
    BadOption { message: String },
    /// A [`crate::Device`] whose cargo feature this build does not include.
    #[error("this build has no {device} support (build with --features {feature})")]
    DeviceNotBuilt { device: &'static str, feature: &'static str },
    /// The tensor backend of a [`crate::Device`] failed.
    #[error("{message}")]
    Backend { message: String },
    #[error("{path}: {message}")]
    Mmlu { path: PathBuf, message: String },
    #[error("models disagree: {message}")]
    Mismatch { message: String },
    /// A base log-probabilities file (llama-perplexity's `--kl-divergence-base` layout) that cannot be used.
    #[error("{path}: {message}")]
    LogitsFile { path: PathBuf, message: String },
    /// A file that could not be read (an evaluation text, a cache entry, a model directory's listing).
    #[error("reading {path}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A directory that could not be created.
    #[error("creating {path}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    /// An evaluation text that is not UTF-8.
    #[error("{path} is not UTF-8 text")]
    NotText { path: PathBuf, source: std::string::FromUtf8Error },
    /// A model file or directory that does not exist.
    #[error("{path}: no such model file or directory")]
    NoModel { path: PathBuf },
    /// Calibration windows that cannot be drawn (bad options, a text too short).
    #[error("calibration: {0}")]
    Calibration(String),
    /// Layer-wise calibrated quantization failed (a layer, a block, the solver).
    #[error(transparent)]
    Calibrate(#[from] quantforge_quant::calibrate::CalibrationError),
    /// A model directory given where a GGUF file is needed.
    #[error("{path}: {what} needs a GGUF model (its tensor names key the matrix); convert it first")]
    NeedsGguf { path: PathBuf, what: &'static str },
    /// A model that failed to load.
    #[error("loading {path}")]
    Load { path: PathBuf, source: Box<EvalError> },
    /// A model whose tokenizer failed to load.
    #[error("reading the tokenizer of {path}")]
    LoadTokenizer { path: PathBuf, source: Box<EvalError> },
    /// A model whose tokenizer and embedding disagree on the vocabulary size.
    #[error("{path}: the tokenizer has {tokenizer} tokens but the model's embedding has {model} rows")]
    VocabularySize { path: PathBuf, tokenizer: usize, model: usize },
    /// A device the model could not be moved to.
    #[error("--device {device}")]
    SetDevice { device: &'static str, source: Box<EvalError> },
    /// Two models that tokenize the evaluation text differently.
    #[error("{model} tokenizes the text differently from {base}: they do not share a tokenizer")]
    DifferentTokens { base: PathBuf, model: PathBuf },
    /// A model that has no chat template, when `auto` asked for its own.
    #[error("{path} has no chat template")]
    NoChatTemplate { path: PathBuf },
    /// A model's chat template that is none of the known ones.
    #[error("{path}: the model's chat template is not one of {known}; name one with --chat-template")]
    UnknownChatTemplate { path: PathBuf, known: &'static str },
    /// A chat template name that is none of the known ones.
    #[error("--chat-template {name}: expected auto or one of {known}")]
    ChatTemplateName { name: String, known: &'static str },
    /// A JSON document (a cache entry, a comparison) that cannot be written or read.
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    /// A comparison file whose rows give no quality figures by quantization type.
    #[error("{path}: {message}")]
    Comparison { path: PathBuf, message: String },
}
