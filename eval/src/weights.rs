//! Weight matrices as the forward pass holds them: `f32` for float files, the original ggml blocks for
//! quantized ones (dequantized into a scratch buffer when a batch needs them, so memory stays at the size of
//! the file), and the loaders that fill them from GGUF or a HF safetensors directory.
//!
//! Layout invariant: a matrix of `rows x cols` is row-major with `cols` = the input dimension (ggml `ne[0]`),
//! i.e. `y = W x` reads one row per output. Query/key rows are in the order the architecture's RoPE mode
//! expects: llama.cpp's interleaved pairs for Llama/Mistral (HF rotate-half rows are permuted into that order on
//! load, `permute_hf_rope_rows`), HF's own rotate-half order for Qwen2/Qwen3 (NEOX mode).

use std::path::Path;

use quantforge_formats::gguf::{GgufFile, TensorInfo};
use quantforge_formats::hf::HfModel;
use quantforge_formats::GgmlType;
use quantforge_quant::dequant::{can_dequantize, dequantize_row, dequantize_row_par};

use crate::error::{EvalError, Result};

/// How a matrix is stored.
enum Storage {
    /// Plain `f32`, `rows * cols` values.
    Dense(Vec<f32>),
    /// ggml blocks of `ty`, `rows * row_bytes` bytes.
    Blocks { ty: GgmlType, data: Vec<u8>, row_bytes: usize },
}

/// One weight matrix.
pub struct Matrix {
    name: String,
    rows: usize,
    cols: usize,
    storage: Storage,
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Matrix({} {}x{} {})", self.name, self.rows, self.cols, self.ggml_type())
    }
}

impl Matrix {
    /// A dense matrix (tests and HF loading).
    pub fn dense(name: impl Into<String>, rows: usize, cols: usize, data: Vec<f32>) -> Matrix {
        assert_eq!(data.len(), rows * cols, "dense matrix size");
        Matrix { name: name.into(), rows, cols, storage: Storage::Dense(data) }
    }

    /// Output dimension.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input dimension.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The tensor name it came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ggml type it is stored as.
    pub fn ggml_type(&self) -> GgmlType {
        match &self.storage {
            Storage::Dense(_) => GgmlType::F32,
            Storage::Blocks { ty, .. } => *ty,
        }
    }

    /// Bytes held in memory.
    pub fn bytes(&self) -> usize {
        match &self.storage {
            Storage::Dense(d) => d.len() * 4,
            Storage::Blocks { data, .. } => data.len(),
        }
    }

    /// All values as `f32`: the dense data itself, or the blocks dequantized into `scratch`.
    pub fn as_f32<'a>(&'a self, scratch: &'a mut Vec<f32>) -> Result<&'a [f32]> {
        match &self.storage {
            Storage::Dense(d) => Ok(d),
            Storage::Blocks { ty, data, .. } => {
                scratch.resize(self.rows * self.cols, 0.0);
                dequantize_row_par(*ty, data, scratch)
                    .map_err(|source| EvalError::Dequantize { name: self.name.clone(), source })?;
                Ok(scratch)
            }
        }
    }

    /// Row `r` as `f32` into `out` (`cols` values).
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        match &self.storage {
            Storage::Dense(d) => out.copy_from_slice(&d[r * self.cols..(r + 1) * self.cols]),
            Storage::Blocks { ty, data, row_bytes } => {
                dequantize_row(*ty, &data[r * row_bytes..(r + 1) * row_bytes], out)
                    .map_err(|source| EvalError::Dequantize { name: self.name.clone(), source })?
            }
        }
        Ok(())
    }
}

/// Reads tensors of a GGUF file, checking shapes.
pub(crate) struct GgufLoader<'a> {
    pub file: &'a GgufFile,
}

impl GgufLoader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.file
            .tensor(name)
            .ok_or_else(|| EvalError::MissingTensor { path: self.file.path().into(), name: name.into() })
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn check_shape(&self, info: &TensorInfo, ne: &[usize]) -> Result<()> {
        let expected: Vec<u64> = ne.iter().map(|&v| v as u64).collect();
        let mut found = info.ne.clone();
        while found.len() > expected.len() && found.last() == Some(&1) {
            found.pop();
        }
        if found != expected {
            return Err(EvalError::BadShape {
                path: self.file.path().into(),
                name: info.name.clone(),
                found: info.ne.clone(),
                expected,
            });
        }
        Ok(())
    }

    /// A matrix of `rows` rows of `cols` values (ggml `ne = [cols, rows]`), kept in its stored type.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let info = self.info(name)?;
        self.check_shape(info, &[cols, rows])?;
        let ty = info.ggml_type;
        if !can_dequantize(ty) {
            return Err(EvalError::UnsupportedType { path: self.file.path().into(), name: name.into(), ty });
        }
        let bytes = self.file.tensor_data(info);
        let storage = if ty == GgmlType::F32 {
            Storage::Dense(f32_from_le(bytes))
        } else {
            let blocks = cols as u64 / ty.block_size();
            let row_bytes = (blocks * ty.type_size()) as usize;
            Storage::Blocks { ty, data: bytes.to_vec(), row_bytes }
        };
        Ok(Matrix { name: name.into(), rows, cols, storage })
    }

    /// A vector of `n` values, dequantized to `f32`.
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        self.check_shape(info, &[n])?;
        let mut out = vec![0.0; n];
        dequantize_row(info.ggml_type, self.file.tensor_data(info), &mut out)
            .map_err(|source| EvalError::Dequantize { name: name.into(), source })?;
        Ok(out)
    }
}

/// Little-endian `f32` bytes to values.
fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Reads tensors of a HF directory as `f32`.
pub(crate) struct HfLoader<'a> {
    pub model: &'a HfModel,
}

impl HfLoader<'_> {
    pub fn has(&self, name: &str) -> bool {
        self.model.tensor(name).is_some()
    }

    fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (file, t) = self
            .model
            .tensor(name)
            .ok_or_else(|| EvalError::MissingTensor { path: self.model.dir().into(), name: name.into() })?;
        let expected: Vec<u64> = shape.iter().map(|&v| v as u64).collect();
        if t.shape != expected {
            return Err(EvalError::BadShape {
                path: file.path().into(),
                name: name.into(),
                found: t.shape.clone(),
                expected,
            });
        }
        Ok(file.to_f32(t)?)
    }

    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        Ok(Matrix::dense(name, rows, cols, self.values(name, &[rows, cols])?))
    }

    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.values(name, &[n])
    }
}

/// Reorders the rows of a HF (rotate-half) query or key projection into llama.cpp's interleaved order:
/// within each head of `head_dim` rows, GGUF row `2i + j` is HF row `j * head_dim/2 + i` (the inverse of the
/// permutation HF's conversion script applies to Meta checkpoints). Only Llama/Mistral rows are permuted;
/// Qwen checkpoints keep HF's layout and run with NEOX RoPE.
pub fn permute_hf_rope_rows(m: Matrix, n_head: usize) -> Matrix {
    let Storage::Dense(data) = &m.storage else { return m };
    let out = permute_rows(data, m.rows, m.cols, n_head);
    Matrix { storage: Storage::Dense(out), ..m }
}

/// [`permute_hf_rope_rows`] for a query or key bias (one value per row).
pub fn permute_hf_rope_vector(v: &[f32], n_head: usize) -> Vec<f32> {
    permute_rows(v, v.len(), 1, n_head)
}

fn permute_rows(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let dst = h * head_dim + 2 * i + j;
                let src = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Whether a path is a HF model directory rather than a GGUF file.
pub fn is_hf_dir(path: &Path) -> bool {
    HfModel::is_model_dir(path)
}
