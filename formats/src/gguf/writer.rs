//! A streaming GGUF v3 writer. The header (metadata and tensor infos with their final offsets) is written
//! first, then tensor data in info order, each tensor zero-padded to the alignment — exactly the layout
//! llama.cpp's reader demands (contiguous offsets in info order). Output goes through [`AtomicFile`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{
    align_up, GgufValue, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, KEY_ALIGNMENT, MAX_DIMS, MAX_NAME_LENGTH,
};
use crate::atomic::AtomicFile;
use crate::error::{FormatError, Result};
use crate::GgmlType;

/// A tensor to be written: name, type and ggml-order dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub ggml_type: GgmlType,
    pub ne: Vec<u64>,
}

impl TensorSpec {
    /// Bytes of its data (without padding); `u64::MAX` when the shape does not fit its type, which the
    /// writer refuses.
    pub fn n_bytes(&self) -> u64 {
        self.ggml_type.tensor_size(&self.ne).unwrap_or(u64::MAX)
    }
}

struct Planned {
    spec: TensorSpec,
    size: u64,
}

/// Writes one GGUF file, tensor by tensor.
pub struct GgufWriter {
    out: AtomicFile,
    alignment: u64,
    tensors: Vec<Planned>,
    /// Index of the tensor being written and bytes of it written so far.
    current: usize,
    current_written: u64,
}

impl GgufWriter {
    /// Create `path` (atomically, on [`GgufWriter::finish`]) with this metadata and these tensors.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &[(String, GgufValue)],
        tensors: Vec<TensorSpec>,
    ) -> Result<GgufWriter> {
        let path = path.as_ref();
        let alignment = check_metadata(path, metadata)?;
        let planned = plan(path, tensors)?;
        let mut header = Vec::with_capacity(header_capacity(metadata, &planned));
        header.extend_from_slice(&GGUF_MAGIC);
        header.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        header.extend_from_slice(&(planned.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            put_string(&mut header, key);
            header.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut header, value);
        }
        let mut offset = 0u64;
        for p in &planned {
            put_string(&mut header, &p.spec.name);
            header.extend_from_slice(&(p.spec.ne.len() as u32).to_le_bytes());
            for &d in &p.spec.ne {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&p.spec.ggml_type.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = align_up(offset + p.size, alignment).ok_or_else(|| overflow(path, &p.spec.name))?;
        }
        let pad =
            align_up(header.len() as u64, alignment).ok_or_else(|| overflow(path, "header"))? - header.len() as u64;
        let mut out = AtomicFile::create(path)?;
        out.write_all(&header)?;
        out.write_zeros(pad)?;
        let mut w = GgufWriter { out, alignment, tensors: planned, current: 0, current_written: 0 };
        w.skip_empty()?;
        Ok(w)
    }

    /// Append bytes of the current tensor; may be called several times per tensor. When a tensor is complete
    /// its padding is written and the next tensor becomes current.
    pub fn write_tensor_data(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let Some(p) = self.tensors.get(self.current) else {
                return Err(self.misuse(format!("{} bytes written past the last tensor", data.len())));
            };
            let want = p.size - self.current_written;
            let k = want.min(data.len() as u64) as usize;
            self.out.write_all(&data[..k])?;
            self.current_written += k as u64;
            data = &data[k..];
            self.skip_empty()?;
        }
        Ok(())
    }

    /// Write the whole data of tensor `name`, which must be the next one.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        if data.is_empty() && self.passed_empty(name) {
            return Ok(());
        }
        let p = self
            .tensors
            .get(self.current)
            .ok_or_else(|| self.misuse(format!("tensor '{name}' written after the last tensor")))?;
        if p.spec.name != name || self.current_written != 0 {
            return Err(self.misuse(format!("tensor '{name}' written out of order (expected '{}')", p.spec.name)));
        }
        if data.len() as u64 != p.size {
            return Err(self.misuse(format!("tensor '{name}' has {} bytes, expected {}", data.len(), p.size)));
        }
        self.write_tensor_data(data)
    }

    /// Whether `name` is a zero-size tensor the writer has already passed (zero-size tensors hold no data,
    /// so the writer moves past them as soon as the tensor before them is complete).
    fn passed_empty(&self, name: &str) -> bool {
        self.tensors[..self.current.min(self.tensors.len())]
            .iter()
            .rev()
            .take_while(|p| p.size == 0)
            .any(|p| p.spec.name == name)
    }

    /// The name of the tensor expected next.
    pub fn next_tensor(&self) -> Option<&TensorSpec> {
        self.tensors.get(self.current).map(|p| &p.spec)
    }

    /// Check every tensor was written, then move the file into place.
    pub fn finish(self) -> Result<()> {
        self.finish_deferred()?.commit()
    }

    /// Check every tensor was written and return the still-hidden file, for callers that write several
    /// files and move them into place together (split outputs). Dropping it removes it.
    pub fn finish_deferred(self) -> Result<AtomicFile> {
        if self.current != self.tensors.len() {
            let name = self.tensors[self.current].spec.name.clone();
            return Err(self.misuse(format!("finished before tensor '{name}' was complete")));
        }
        Ok(self.out)
    }

    /// Advance past completed tensors, writing their padding.
    fn skip_empty(&mut self) -> Result<()> {
        while let Some(p) = self.tensors.get(self.current) {
            if self.current_written < p.size {
                break;
            }
            let padded = align_up(p.size, self.alignment).unwrap_or(p.size);
            self.out.write_zeros(padded - p.size)?;
            self.current += 1;
            self.current_written = 0;
        }
        Ok(())
    }

    fn misuse(&self, message: String) -> FormatError {
        FormatError::Writer { path: self.out.dest().to_path_buf(), message }
    }
}

fn overflow(path: &Path, name: &str) -> FormatError {
    FormatError::SizeOverflow {
        path: path.to_path_buf(),
        name: name.to_string(),
        detail: "file offsets overflow".into(),
    }
}

fn check_metadata(path: &Path, metadata: &[(String, GgufValue)]) -> Result<u64> {
    let mut keys = HashSet::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for (key, value) in metadata {
        if !keys.insert(key.as_str()) {
            return Err(FormatError::DuplicateKey { path: path.to_path_buf(), key: key.clone() });
        }
        if key == KEY_ALIGNMENT {
            alignment = match value {
                GgufValue::U32(a) if a.is_power_of_two() => u64::from(*a),
                _ => {
                    return Err(FormatError::BadAlignment {
                        path: path.to_path_buf(),
                        detail: "must be a u32 power of two".into(),
                    })
                }
            };
        }
    }
    Ok(alignment)
}

fn plan(path: &Path, tensors: Vec<TensorSpec>) -> Result<Vec<Planned>> {
    let mut names = HashSet::new();
    let mut planned = Vec::with_capacity(tensors.len());
    for spec in tensors {
        let p: PathBuf = path.to_path_buf();
        if !names.insert(spec.name.clone()) {
            return Err(FormatError::DuplicateTensor { path: p, name: spec.name });
        }
        if spec.name.len() >= MAX_NAME_LENGTH {
            return Err(FormatError::NameTooLong {
                path: p,
                len: spec.name.len(),
                name: spec.name,
                limit: MAX_NAME_LENGTH - 1,
            });
        }
        if spec.ne.len() as u32 > MAX_DIMS {
            return Err(FormatError::TooManyDims {
                path: p,
                n_dims: spec.ne.len() as u32,
                name: spec.name,
                limit: MAX_DIMS,
            });
        }
        let ne0 = spec.ne.first().copied().unwrap_or(1);
        let block = spec.ggml_type.block_size();
        if !ne0.is_multiple_of(block) {
            return Err(FormatError::RowNotDivisible { path: p, name: spec.name, ne0, ty: spec.ggml_type, block });
        }
        let size = spec.ggml_type.tensor_size(&spec.ne).ok_or_else(|| overflow(path, &spec.name))?;
        planned.push(Planned { spec, size });
    }
    Ok(planned)
}

/// The header's size before padding, so it is allocated once (a large metadata array is not copied while
/// the buffer grows).
fn header_capacity(metadata: &[(String, GgufValue)], planned: &[Planned]) -> usize {
    let value_len = |v: &GgufValue| match v {
        GgufValue::String(s) => 8 + s.len() as u64,
        GgufValue::Array(a) => 4 + 8 + a.encoded_len(),
        other => other.value_type().scalar_size().unwrap_or(0),
    };
    let kv: u64 = metadata.iter().map(|(k, v)| 8 + k.len() as u64 + 4 + value_len(v)).sum();
    let infos: u64 = planned.iter().map(|p| 8 + p.spec.name.len() as u64 + 4 + 8 * p.spec.ne.len() as u64 + 12).sum();
    (24 + kv + infos) as usize
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::Array(a) => {
            out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            a.write_elements(out);
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, ne: &[u64]) -> TensorSpec {
        TensorSpec { name: name.into(), ggml_type: GgmlType::F32, ne: ne.to_vec() }
    }

    /// Zero-element tensors (first, between two others, last) take no data and no padding; writing one, in
    /// order, is accepted even though the writer already moved past it.
    #[test]
    fn zero_element_tensors_take_no_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.gguf");
        let specs = vec![
            spec("e0", &[0]),
            spec("a", &[3]),
            spec("e1", &[4, 0]),
            spec("e2", &[0, 2]),
            spec("b", &[1]),
            spec("e3", &[0]),
        ];
        let mut w = GgufWriter::create(&path, &[], specs).unwrap();
        w.write_tensor("e0", &[]).unwrap();
        w.write_tensor("a", &[0; 12]).unwrap();
        w.write_tensor("e1", &[]).unwrap();
        w.write_tensor("e2", &[]).unwrap();
        w.write_tensor("b", &[1; 4]).unwrap();
        assert!(w.write_tensor("a", &[]).is_err(), "a non-empty tensor cannot be written empty");
        w.write_tensor("e3", &[]).unwrap();
        w.finish().unwrap();
        let f = crate::gguf::GgufFile::open(&path).unwrap();
        let offsets: Vec<(u64, u64)> = f.tensors().iter().map(|t| (t.offset, t.size)).collect();
        assert_eq!(offsets, [(0, 0), (0, 12), (32, 0), (32, 0), (32, 4), (64, 0)]);
    }
}
