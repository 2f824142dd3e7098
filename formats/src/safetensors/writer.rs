//! A streaming safetensors writer: the header (with `__metadata__`) is written first from the list of
//! tensors, padded with spaces to a multiple of 8 bytes, then each tensor's bytes in the same order.

use std::path::Path;

use safetensors::Dtype;
use serde_json::{Map, Value};

use crate::atomic::AtomicFile;
use crate::error::{FormatError, Result};

/// A tensor to be written: name, dtype and torch-order shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StTensorSpec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
}

/// Writes one safetensors file, tensor by tensor.
pub struct SafetensorsWriter {
    out: AtomicFile,
    sizes: Vec<(String, u64)>,
    current: usize,
    written: u64,
}

impl SafetensorsWriter {
    /// Create `path` (atomically, on [`SafetensorsWriter::finish`]).
    pub fn create(path: impl AsRef<Path>, metadata: &[(String, String)], tensors: &[StTensorSpec]) -> Result<Self> {
        let path = path.as_ref();
        let mut header = Map::new();
        if !metadata.is_empty() {
            let m: Map<String, Value> = metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            header.insert("__metadata__".into(), Value::Object(m));
        }
        let mut offset = 0u64;
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in tensors {
            let bits = t.shape.iter().try_fold(t.dtype.bitsize() as u64, |a, &d| a.checked_mul(d));
            let size = match bits {
                Some(b) if b % 8 == 0 => b / 8,
                _ => {
                    return Err(FormatError::Writer {
                        path: path.to_path_buf(),
                        message: format!("tensor '{}' has a size that is not a whole number of bytes", t.name),
                    })
                }
            };
            if header.contains_key(&t.name) {
                return Err(FormatError::DuplicateTensor { path: path.to_path_buf(), name: t.name.clone() });
            }
            let mut e = Map::new();
            e.insert("dtype".into(), Value::String(t.dtype.to_string()));
            e.insert("shape".into(), Value::from(t.shape.clone()));
            e.insert("data_offsets".into(), Value::from(vec![offset, offset + size]));
            header.insert(t.name.clone(), Value::Object(e));
            offset += size;
            sizes.push((t.name.clone(), size));
        }
        let mut json = serde_json::to_vec(&Value::Object(header))
            .map_err(|e| FormatError::Json { path: path.to_path_buf(), message: e.to_string() })?;
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let mut out = AtomicFile::create(path)?;
        out.write_all(&(json.len() as u64).to_le_bytes())?;
        out.write_all(&json)?;
        let mut w = SafetensorsWriter { out, sizes, current: 0, written: 0 };
        w.advance();
        Ok(w)
    }

    /// Append bytes of the current tensor (may be called several times per tensor).
    pub fn write_tensor_data(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let Some((_, size)) = self.sizes.get(self.current) else {
                return Err(self.misuse("data written past the last tensor".into()));
            };
            let k = (size - self.written).min(data.len() as u64) as usize;
            self.out.write_all(&data[..k])?;
            self.written += k as u64;
            data = &data[k..];
            self.advance();
        }
        Ok(())
    }

    /// Check every tensor was written, then move the file into place.
    pub fn finish(self) -> Result<()> {
        if let Some((name, _)) = self.sizes.get(self.current) {
            let msg = format!("finished before tensor '{name}' was complete");
            return Err(self.misuse(msg));
        }
        self.out.commit()
    }

    fn advance(&mut self) {
        while let Some((_, size)) = self.sizes.get(self.current) {
            if self.written < *size {
                break;
            }
            self.current += 1;
            self.written = 0;
        }
    }

    fn misuse(&self, message: String) -> FormatError {
        FormatError::Writer { path: self.out.dest().to_path_buf(), message }
    }
}
