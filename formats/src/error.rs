//! The crate's error type: one variant per failure, each naming the file and the field or tensor.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

/// Everything that can go wrong reading or writing model files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, found: [u8; 4] },
    #[error("{path}: GGUFv1 is no longer supported; convert the model again with a current tool")]
    GgufV1 { path: PathBuf },
    #[error("{path}: GGUF version {version} is not supported (expected 2 or 3{hint})")]
    UnsupportedVersion { path: PathBuf, version: u32, hint: &'static str },
    #[error("{path}: truncated while reading {field} at byte {offset}: needs {needed} bytes, {available} left")]
    Truncated { path: PathBuf, field: String, offset: u64, needed: u64, available: u64 },
    #[error("{path}: {field} is {value}, above the limit of {limit}")]
    TooLarge { path: PathBuf, field: String, value: u64, limit: u64 },
    #[error("{path}: {field} is negative ({value})")]
    Negative { path: PathBuf, field: String, value: i64 },
    #[error("{path}: {field} is not valid UTF-8")]
    InvalidUtf8 { path: PathBuf, field: String },
    #[error("{path}: key '{key}' has invalid value type id {type_id}")]
    InvalidValueType { path: PathBuf, key: String, type_id: u32 },
    #[error("{path}: key '{key}' is an array of arrays, which GGUF does not allow")]
    NestedArray { path: PathBuf, key: String },
    #[error("{path}: duplicate key '{key}'")]
    DuplicateKey { path: PathBuf, key: String },
    #[error("{path}: duplicate tensor name '{name}'")]
    DuplicateTensor { path: PathBuf, name: String },
    #[error("{path}: tensor name '{name}' is {len} bytes, the limit is {limit}")]
    NameTooLong { path: PathBuf, name: String, len: usize, limit: usize },
    #[error("{path}: tensor '{name}' has {n_dims} dimensions, the limit is {limit}")]
    TooManyDims { path: PathBuf, name: String, n_dims: u32, limit: u32 },
    #[error("{path}: tensor '{name}' has unknown ggml type id {type_id}")]
    UnknownTensorType { path: PathBuf, name: String, type_id: u32 },
    #[error("{path}: tensor '{name}' uses ggml type {type_name} (id {type_id}), which has been removed from ggml")]
    RemovedTensorType { path: PathBuf, name: String, type_id: u32, type_name: &'static str },
    #[error("{path}: tensor '{name}': row length {ne0} is not a multiple of the {ty} block size {block}")]
    RowNotDivisible { path: PathBuf, name: String, ne0: u64, ty: crate::GgmlType, block: u64 },
    #[error("{path}: tensor '{name}': size overflows ({detail})")]
    SizeOverflow { path: PathBuf, name: String, detail: String },
    #[error("{path}: general.alignment {detail}")]
    BadAlignment { path: PathBuf, detail: String },
    #[error("{path}: tensor '{name}' offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor { path: PathBuf, name: String, offset: u64, alignment: u64 },
    #[error("{path}: tensor '{name}' data [{start}, {end}) lies outside the file ({file_len} bytes)")]
    TensorOutOfBounds { path: PathBuf, name: String, start: u64, end: u64, file_len: u64 },
    #[error("{path}: tensors '{first}' and '{second}' overlap")]
    OverlappingTensors { path: PathBuf, first: String, second: String },
    /// A split GGUF model whose files do not form one complete set (each variant names the file).
    #[error(transparent)]
    Split(#[from] crate::gguf::SplitError),
    #[error("{path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: tensor '{name}' has dtype {dtype}, which cannot be read as {wanted}")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String, wanted: &'static str },
    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: tensor '{name}' is listed in the shard index but missing from shard {shard}")]
    MissingShardTensor { path: PathBuf, name: String, shard: String },
    #[error("{path}: tensor '{name}' appears in more than one shard")]
    DuplicateShardTensor { path: PathBuf, name: String },
    #[error("{path}: {message}")]
    NotAModel { path: PathBuf, message: String },
    #[error("{path}: writer misuse: {message}")]
    Writer { path: PathBuf, message: String },
    #[error("{path}: refusing to overwrite the input {input}")]
    WouldOverwriteInput { path: PathBuf, input: PathBuf },
    /// An output path where something other than a regular file exists (a directory, pipe, device, socket).
    #[error("{path}: the output path is {kind}, not a regular file; refusing to replace it (give a file name)")]
    NotRegularOutput { path: PathBuf, kind: &'static str },
    /// An input that is not a regular file (a pipe, device or socket): it cannot be mapped or sized.
    #[error("{path}: is {kind}, not a regular file; inputs must be regular files (save the data to a file first)")]
    NotRegularInput { path: PathBuf, kind: &'static str },
    #[error("{path}: already exists and is not an empty directory; choose a new output directory")]
    OutputExists { path: PathBuf },
    #[error("{path}: config key '{key}': {message}")]
    Config { path: PathBuf, key: String, message: String },
    /// A config.json value the architecture's GGUF cannot record or the forward pass does not implement.
    /// `reason` names the architecture.
    #[error("{path}: config key '{key}' = {value} is not supported: {reason}")]
    UnsupportedConfig { path: PathBuf, key: String, value: String, reason: String },
    #[error("{path}: architecture '{name}' is not supported; supported: {supported}")]
    UnknownArchitecture { path: PathBuf, name: String, supported: String },
    #[error("{path}: tensor '{name}' is not mapped by any rule of architecture {arch}")]
    UnmappedTensor { path: PathBuf, name: String, arch: String },
    #[error("{path}: tensor '{name}' has shape {found:?}, config.json implies {expected:?}")]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("{path}: required tensor '{name}' is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// A side file read whole holds more than its cap (see [`crate::bounded`]).
    #[error("{path}: {what} is larger than the limit of {}", crate::bounded::human_bytes(*limit))]
    FileTooLarge { path: PathBuf, what: String, limit: u64 },
    #[error("{path}: PyTorch pickle checkpoints are refused: unpickling can execute arbitrary code. Convert it to safetensors first (e.g. with the `safetensors` convert script in a sandbox)")]
    PickleCheckpoint { path: PathBuf },
}

impl FormatError {
    /// Wrap an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io { path: path.into(), source }
    }
}
