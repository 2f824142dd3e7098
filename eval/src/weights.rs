//! Weight matrices as the forward pass holds them: `f32` for float files, the original ggml blocks for
//! quantized ones (dequantized into a scratch buffer when a batch needs them, so memory stays at the size of
//! the file), and the one tensor reader that fills them, by GGUF name, from a GGUF file or a HF safetensors
//! directory.
//!
//! Layout invariant: a matrix of `rows x cols` is row-major with `cols` = the input dimension (ggml `ne[0]`),
//! i.e. `y = W x` reads one row per output. Tensors are asked for by their GGUF name; a HF directory maps
//! that name back through the architecture's tensor rules to the HF name and applies the rule's transform
//! (the Q/K RoPE permutation of `quantforge_quant::permute::rope_permute`), so query/key rows are always in
//! the order the architecture's RoPE style expects, as in the GGUF convert makes.

use std::path::Path;

use quantforge_formats::arch::{self, Transform};
use quantforge_formats::gguf::GgufFile;
use quantforge_formats::hf::HfModel;
use quantforge_formats::safetensors::{self, SafetensorsFile, StTensor};
use quantforge_formats::GgmlType;
use quantforge_quant::calibrate::expert_slice_name;
use quantforge_quant::dequant::{can_dequantize, dequantize_row, dequantize_row_par};
use quantforge_quant::permute::rope_permute;

use crate::config::LlamaConfig;
use crate::error::{EvalError, Result};
use crate::gguf_tensors::{check_gguf_shape, gguf_info, gguf_vector};
use crate::hf_quantized::{dequantized_weight, is_quantized};

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

    /// All values as an owned `f32` vector (a copy of dense data, or the blocks dequantized).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Dense(d) => Ok(d.clone()),
            Storage::Blocks { .. } => {
                let mut scratch = Vec::new();
                self.as_f32(&mut scratch)?;
                Ok(scratch)
            }
        }
    }

    /// Replace the values by dense `f32` ones of the same shape.
    pub fn replace(&mut self, values: Vec<f32>) -> Result<()> {
        if values.len() != self.rows * self.cols {
            return Err(EvalError::BadWeightLength {
                name: self.name.clone(),
                rows: self.rows,
                cols: self.cols,
                found: values.len(),
            });
        }
        self.storage = Storage::Dense(values);
        Ok(())
    }

    /// The same matrix under another name.
    pub fn renamed(self, name: impl Into<String>) -> Matrix {
        Matrix { name: name.into(), ..self }
    }

    /// Consecutive row ranges of `rows` rows each (summing to [`Matrix::rows`]), each with this matrix's name and
    /// storage type (quantized rows stay quantized: a row's blocks are contiguous).
    pub fn split_rows(self, rows: &[usize]) -> Vec<Matrix> {
        assert_eq!(rows.iter().sum::<usize>(), self.rows, "row split of {}", self.name);
        let mut start = 0;
        rows.iter()
            .map(|&n| {
                let storage = match &self.storage {
                    Storage::Dense(d) => Storage::Dense(d[start * self.cols..(start + n) * self.cols].to_vec()),
                    Storage::Blocks { ty, data, row_bytes } => Storage::Blocks {
                        ty: *ty,
                        data: data[start * row_bytes..(start + n) * row_bytes].to_vec(),
                        row_bytes: *row_bytes,
                    },
                };
                start += n;
                Matrix { name: self.name.clone(), rows: n, cols: self.cols, storage }
            })
            .collect()
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

/// Where a model's tensors come from. Every read copies the tensor out of the mapping and then releases the
/// mapping's pages, so reading block after block keeps only what was copied resident.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Gguf(&'a GgufFile),
    Hf(&'a HfModel),
}

/// An opened model file or directory (memory-mapped; nothing is read yet).
pub(crate) enum Opened {
    Gguf(GgufFile),
    Hf(HfModel),
}

impl Opened {
    /// Open a GGUF file or a HF model directory.
    pub fn open(path: &Path) -> Result<Opened> {
        Ok(if HfModel::is_model_dir(path) {
            Opened::Hf(HfModel::open(path)?)
        } else {
            Opened::Gguf(GgufFile::open(path)?)
        })
    }

    /// Its tensors.
    pub fn source(&self) -> Source<'_> {
        match self {
            Opened::Gguf(file) => Source::Gguf(file),
            Opened::Hf(model) => Source::Hf(model),
        }
    }
}

impl<'a> Source<'a> {
    /// The model's config.
    pub fn config(&self) -> Result<LlamaConfig> {
        match *self {
            Source::Gguf(file) => LlamaConfig::from_gguf(file),
            Source::Hf(model) => LlamaConfig::from_hf(model.dir(), model.config()),
        }
    }

    /// Whether GGUF tensor `name` exists.
    pub fn has(&self, cfg: &LlamaConfig, name: &str) -> bool {
        match *self {
            Source::Gguf(file) => file.tensor(name).is_some(),
            Source::Hf(model) => {
                hf_name(cfg, name).is_some_and(|(hf, _)| model.tensor(&hf).is_some() || is_quantized(model, &hf))
            }
        }
    }

    /// GGUF tensor `name` as a matrix of `rows` rows of `cols` values, kept in its stored type (GGUF) or
    /// converted to `f32` and transformed as convert would (HF).
    pub fn matrix(&self, cfg: &LlamaConfig, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        match *self {
            Source::Gguf(file) => gguf_matrix(file, name, rows, cols),
            Source::Hf(model) => {
                let values = hf_values(model, cfg, name, &[rows, cols])?;
                Ok(Matrix::dense(name, rows, cols, values))
            }
        }
    }

    /// Stacked expert tensor `name` (GGUF `ne = [cols, rows, n_expert]`) as one matrix per expert, kept in
    /// its stored type (GGUF) or read expert by expert from the HF tensors the rule stacks (HF).
    pub fn experts(
        &self,
        cfg: &LlamaConfig,
        name: &str,
        n_expert: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Matrix>> {
        match *self {
            Source::Gguf(file) => {
                let info = gguf_info(file, name)?;
                check_gguf_shape(file, info, &[cols, rows, n_expert])?;
                let ty = info.ggml_type;
                if !can_dequantize(ty) {
                    return Err(EvalError::UnsupportedType { path: file.path().into(), name: name.into(), ty });
                }
                let row_bytes = (cols as u64 / ty.block_size() * ty.type_size()) as usize;
                let bytes = file.tensor_data(info);
                if rows * row_bytes == 0 || bytes.len() != n_expert * rows * row_bytes {
                    let expected = vec![cols as u64, rows as u64, n_expert as u64];
                    return Err(EvalError::BadShape {
                        path: file.path().into(),
                        name: name.into(),
                        found: info.ne.clone(),
                        expected,
                    });
                }
                let out = bytes
                    .chunks_exact(rows * row_bytes)
                    .take(n_expert)
                    .enumerate()
                    .map(|(x, b)| {
                        let storage = if ty == GgmlType::F32 {
                            Storage::Dense(f32_from_le(b))
                        } else {
                            Storage::Blocks { ty, data: b.to_vec(), row_bytes }
                        };
                        Matrix { name: expert_slice_name(name, x), rows, cols, storage }
                    })
                    .collect();
                file.release(info);
                Ok(out)
            }
            Source::Hf(model) => {
                let missing = |n: &str| EvalError::MissingTensor { path: model.dir().into(), name: n.into() };
                let (rule, bid) = cfg.arch.rule_for_gguf(name).ok_or_else(|| missing(name))?;
                let mut out = Vec::new();
                for x in 0..n_expert {
                    let hf = arch::fill_expert(rule.hf, bid, x as u32);
                    let values = match model.tensor(&hf) {
                        Some((file, t)) => {
                            let expected = vec![rows as u64, cols as u64];
                            if t.shape != expected {
                                let path = file.path().into();
                                return Err(EvalError::BadShape { path, name: hf, found: t.shape.clone(), expected });
                            }
                            let values = file.to_f32(t)?;
                            file.release(t);
                            values
                        }
                        // A quantized checkpoint stores each expert's packed tensors instead of its float weight.
                        None => dequantized_weight(model, &hf, &[rows, cols])?.ok_or_else(|| missing(&hf))?,
                    };
                    out.push(Matrix::dense(expert_slice_name(name, x), rows, cols, values));
                }
                Ok(out)
            }
        }
    }

    /// GGUF tensor `name`, a vector of `n` values, as `f32`.
    pub fn vector(&self, cfg: &LlamaConfig, name: &str, n: usize) -> Result<Vec<f32>> {
        match *self {
            Source::Gguf(file) => gguf_vector(file, name, n),
            Source::Hf(model) => hf_values(model, cfg, name, &[n]),
        }
    }

    /// Rows `ids` of GGUF matrix `name` (`cols` values each, `rows` in all) as `f32`, reading only those rows.
    pub fn rows(&self, cfg: &LlamaConfig, name: &str, shape: (usize, usize), ids: &[u32]) -> Result<Vec<f32>> {
        let (rows, cols) = shape;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= rows) {
            return Err(EvalError::TokenOutOfRange { id, n_vocab: rows });
        }
        let mut out = vec![0.0f32; ids.len() * cols];
        match *self {
            Source::Gguf(file) => {
                let info = gguf_info(file, name)?;
                check_gguf_shape(file, info, &[cols, rows])?;
                let ty = info.ggml_type;
                if !can_dequantize(ty) {
                    return Err(EvalError::UnsupportedType { path: file.path().into(), name: name.into(), ty });
                }
                let row_bytes = (cols as u64 / ty.block_size() * ty.type_size()) as usize;
                let data = file.tensor_data(info);
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(cols)) {
                    let r = id as usize;
                    dequantize_row(ty, &data[r * row_bytes..(r + 1) * row_bytes], row)
                        .map_err(|source| EvalError::Dequantize { name: name.into(), source })?;
                }
                file.release(info);
            }
            Source::Hf(model) => {
                let (file, t, _) = hf_tensor(model, cfg, name, &[rows, cols])?;
                let elem = t.dtype.bitsize() / 8;
                let data = file.data(t);
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(cols)) {
                    let r = id as usize;
                    let bytes = &data[r * cols * elem..(r + 1) * cols * elem];
                    let values = safetensors::to_f32(t.dtype, bytes).ok_or_else(|| unsupported_dtype(file, t))?;
                    row.copy_from_slice(&values);
                }
                file.release(t);
            }
        }
        Ok(out)
    }
}

/// A matrix of `rows` rows of `cols` values (ggml `ne = [cols, rows]`), kept in its stored type.
fn gguf_matrix(file: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    let info = gguf_info(file, name)?;
    check_gguf_shape(file, info, &[cols, rows])?;
    let ty = info.ggml_type;
    if !can_dequantize(ty) {
        return Err(EvalError::UnsupportedType { path: file.path().into(), name: name.into(), ty });
    }
    let bytes = file.tensor_data(info);
    let storage = if ty == GgmlType::F32 {
        Storage::Dense(f32_from_le(bytes))
    } else {
        let blocks = cols as u64 / ty.block_size();
        let row_bytes = (blocks * ty.type_size()) as usize;
        Storage::Blocks { ty, data: bytes.to_vec(), row_bytes }
    };
    file.release(info);
    Ok(Matrix { name: name.into(), rows, cols, storage })
}

/// Little-endian `f32` bytes to values.
fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// The HF name of GGUF tensor `name` and the transform convert applies to it (through the rule producing it).
fn hf_name(cfg: &LlamaConfig, name: &str) -> Option<(String, Transform)> {
    let (rule, bid) = cfg.arch.rule_for_gguf(name)?;
    Some((arch::fill(rule.hf, bid), rule.transform))
}

/// The safetensors tensor behind GGUF tensor `name`, its shape checked against `shape` (torch order).
fn hf_tensor<'a>(
    model: &'a HfModel,
    cfg: &LlamaConfig,
    name: &str,
    shape: &[usize],
) -> Result<(&'a SafetensorsFile, &'a StTensor, Transform)> {
    let missing = |n: &str| EvalError::MissingTensor { path: model.dir().into(), name: n.into() };
    let (hf, transform) = hf_name(cfg, name).ok_or_else(|| missing(name))?;
    let (file, t) = model.tensor(&hf).ok_or_else(|| missing(&hf))?;
    let expected: Vec<u64> = shape.iter().map(|&v| v as u64).collect();
    if t.shape != expected {
        return Err(EvalError::BadShape { path: file.path().into(), name: hf, found: t.shape.clone(), expected });
    }
    Ok((file, t, transform))
}

fn unsupported_dtype(file: &SafetensorsFile, t: &StTensor) -> EvalError {
    EvalError::Format(quantforge_formats::FormatError::UnsupportedDtype {
        path: file.path().into(),
        name: t.name.clone(),
        dtype: t.dtype.to_string(),
        wanted: "f32",
    })
}

/// GGUF tensor `name` of a HF directory as `f32` in GGUF row order: `shape` is the torch shape (rows first),
/// and the rule's RoPE permutation is applied with the query or key head count.
fn hf_values(model: &HfModel, cfg: &LlamaConfig, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let mut f16_source = false;
    let (values, transform) = match hf_tensor(model, cfg, name, shape) {
        Ok((file, t, transform)) => {
            let values = file.to_f32(t)?;
            file.release(t);
            f16_source = t.dtype == safetensors::Dtype::F16;
            (values, transform)
        }
        // A quantized checkpoint stores the module's packed tensors instead of its float weight.
        Err(EvalError::MissingTensor { path, name: missing }) => {
            let found = match hf_name(cfg, name) {
                Some((hf, transform)) => dequantized_weight(model, &hf, shape)?.map(|v| (v, transform)),
                None => None,
            };
            found.ok_or(EvalError::MissingTensor { path, name: missing })?
        }
        Err(e) => return Err(e),
    };
    let rows = shape[0];
    let row_len = shape[1..].iter().product();
    Ok(match transform {
        Transform::None => values,
        Transform::RopePermuteQ => rope_permute(&values, rows, cfg.n_head, row_len),
        Transform::RopePermuteK => rope_permute(&values, rows, cfg.n_head_kv, row_len),
        // As convert: + 1, in f16 for an f16 tensor.
        Transform::NormShift => values
            .into_iter()
            .map(|v| if f16_source { half::f16::from_f32(v + 1.0).to_f32() } else { v + 1.0 })
            .collect(),
    })
}

/// Whether a path is a HF model directory rather than a GGUF file.
pub fn is_hf_dir(path: &Path) -> bool {
    HfModel::is_model_dir(path)
}
