//! A memory-mapped safetensors file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{FormatError, Result};
use crate::mmap::Bytes;

/// One tensor of a safetensors file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StTensor {
    pub name: String,
    pub dtype: Dtype,
    /// Shape in torch order (outermost first).
    pub shape: Vec<u64>,
    /// Byte range within the file.
    pub start: u64,
    pub end: u64,
}

impl StTensor {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Size of the data in bytes.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }
}

/// The tensor that makes an invalid header invalid, when the header's JSON can be read (see `diagnose`).
fn header_fault(bytes: &[u8]) -> Option<String> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    // The crate's own header limit: a larger header is refused as too large, nothing to explain.
    if len > 100_000_000 {
        return None;
    }
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    super::diagnose::explain(bytes.get(8..end)?, (bytes.len() - end) as u64)
}

/// An open safetensors file; tensors are listed in file (offset) order.
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Bytes,
    tensors: Vec<StTensor>,
    index: HashMap<String, usize>,
    metadata: Vec<(String, String)>,
}

impl SafetensorsFile {
    /// Map and validate `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
        let path = path.as_ref();
        let bytes = Bytes::map(path)?;
        SafetensorsFile::parse(path.to_path_buf(), bytes)
    }

    /// Parse bytes held in memory; `name` is used in error messages.
    pub fn from_bytes(name: impl Into<PathBuf>, data: Vec<u8>) -> Result<SafetensorsFile> {
        SafetensorsFile::parse(name.into(), Bytes::Owned(data))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<SafetensorsFile> {
        let (header_len, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| FormatError::Safetensors {
            message: header_fault(&bytes).unwrap_or_else(|| e.to_string()),
            path: path.clone(),
        })?;
        let base = 8 + header_len as u64;
        let mut tensors = Vec::new();
        for name in meta.offset_keys() {
            let Some(info) = meta.info(&name) else { continue };
            tensors.push(StTensor {
                dtype: info.dtype,
                shape: info.shape.iter().map(|&d| d as u64).collect(),
                start: base + info.data_offsets.0 as u64,
                end: base + info.data_offsets.1 as u64,
                name,
            });
        }
        let index = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let mut metadata: Vec<(String, String)> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        metadata.sort();
        Ok(SafetensorsFile { path, bytes, tensors, index, metadata })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[StTensor] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&StTensor> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// `__metadata__` entries, sorted by key.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Raw little-endian bytes of `t` (validated when the file was opened).
    pub fn data(&self, t: &StTensor) -> &[u8] {
        &self.bytes[t.start as usize..t.end as usize]
    }

    /// Like [`SafetensorsFile::data`], but first asks the kernel to map the whole range at once.
    pub fn data_prefetched(&self, t: &StTensor) -> &[u8] {
        self.bytes.prefetch(t.start as usize, t.size() as usize);
        self.data(t)
    }

    /// Hint that the caller is done with `t`'s data, so its pages can leave the resident set.
    pub fn release(&self, t: &StTensor) {
        self.bytes.release(t.start as usize, t.size() as usize);
    }

    /// The tensor's values as f32 (float, int and bool dtypes).
    pub fn to_f32(&self, t: &StTensor) -> Result<Vec<f32>> {
        super::to_f32(t.dtype, self.data(t)).ok_or_else(|| FormatError::UnsupportedDtype {
            path: self.path.clone(),
            name: t.name.clone(),
            dtype: t.dtype.to_string(),
            wanted: "f32",
        })
    }
}
