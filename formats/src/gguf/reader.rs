//! A GGUF reader over a memory map. Every count and length read from the file is checked against both
//! llama.cpp's limits and the bytes actually left, before anything is allocated from it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{
    align_up, GgufValue, GgufValueType, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC, KEY_ALIGNMENT, MAX_ARRAY_ELEMENTS,
    MAX_DIMS, MAX_NAME_LENGTH, MAX_STRING_LENGTH,
};
use crate::error::{FormatError, Result};
use crate::ggml_type::{removed_type_name, GgmlType};
use crate::mmap::Bytes;

/// An open GGUF file: parsed header, tensor infos, and the mapped data.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Map and parse `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let bytes = Bytes::map(path)?;
        GgufFile::parse(path.to_path_buf(), bytes)
    }

    /// Parse bytes held in memory; `name` is used in error messages.
    pub fn from_bytes(name: impl Into<PathBuf>, data: Vec<u8>) -> Result<GgufFile> {
        GgufFile::parse(name.into(), Bytes::Owned(data))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<GgufFile> {
        let header = parse_header(&path, &bytes)?;
        Ok(GgufFile {
            path,
            bytes,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    /// The file's path (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Data alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The bytes of `info` (bounds were checked when the file was opened).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.bytes[start..start + info.size as usize]
    }

    /// Like [`GgufFile::tensor_data`], but first asks the kernel to map the whole range at once; use it when
    /// all of the tensor is about to be read.
    pub fn tensor_data_prefetched(&self, info: &TensorInfo) -> &[u8] {
        self.bytes.prefetch((self.data_offset + info.offset) as usize, info.size as usize);
        self.tensor_data(info)
    }

    /// Hint that the caller is done with `info`'s data, so its pages can leave the resident set.
    pub fn release(&self, info: &TensorInfo) {
        self.bytes.release((self.data_offset + info.offset) as usize, info.size as usize);
    }

    /// Total parameter count (elements over all tensors).
    pub fn n_elements(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::n_elements).sum()
    }

    /// Total tensor bytes (without padding).
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size).sum()
    }

    /// Bits per weight as llama.cpp reports it: 8 × tensor bytes / elements.
    pub fn bits_per_weight(&self) -> f64 {
        crate::ggml_type::bits_per_weight(self.tensor_bytes(), self.n_elements())
    }
}

struct Header {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> u64 {
        (self.data.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(FormatError::Truncated {
                path: self.path.to_path_buf(),
                field: field(),
                offset: self.pos as u64,
                needed: n,
                available: self.left(),
            });
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &dyn Fn() -> String) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// A count or length: at most `limit`, and at most what `min_size`-byte items could fill in the rest.
    fn length(&mut self, limit: u64, min_size: u64, field: &dyn Fn() -> String) -> Result<u64> {
        let n = self.u64(field)?;
        if n > limit {
            return Err(FormatError::TooLarge { path: self.path.to_path_buf(), field: field(), value: n, limit });
        }
        let fits = self.left() / min_size.max(1);
        if n > fits {
            return Err(FormatError::Truncated {
                path: self.path.to_path_buf(),
                field: field(),
                offset: self.pos as u64,
                needed: n.saturating_mul(min_size.max(1)),
                available: self.left(),
            });
        }
        Ok(n)
    }

    fn string(&mut self, field: &dyn Fn() -> String) -> Result<String> {
        let len = self.length(MAX_STRING_LENGTH, 1, field)?;
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| FormatError::InvalidUtf8 { path: self.path.to_path_buf(), field: field() })
    }

    fn scalar(&mut self, ty: GgufValueType, field: &dyn Fn() -> String) -> Result<GgufValue> {
        Ok(match ty {
            GgufValueType::U8 => GgufValue::U8(u8::from_le_bytes(self.array(field)?)),
            GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(self.array(field)?)),
            GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array(field)?)),
            GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array(field)?)),
            GgufValueType::U32 => GgufValue::U32(self.u32(field)?),
            GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array(field)?)),
            GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array(field)?)),
            GgufValueType::Bool => GgufValue::Bool(u8::from_le_bytes(self.array(field)?) != 0),
            GgufValueType::String => GgufValue::String(self.string(field)?),
            GgufValueType::U64 => GgufValue::U64(self.u64(field)?),
            GgufValueType::I64 => GgufValue::I64(self.i64(field)?),
            GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array(field)?)),
            GgufValueType::Array => unreachable!("arrays are read by value()"),
        })
    }

    fn value(&mut self, key: &str) -> Result<GgufValue> {
        let field = || format!("type of key '{key}'");
        let type_id = self.u32(&field)?;
        let ty = GgufValueType::from_id(type_id).ok_or_else(|| FormatError::InvalidValueType {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            type_id,
        })?;
        let field = || format!("value of key '{key}'");
        if ty != GgufValueType::Array {
            return self.scalar(ty, &field);
        }
        let elem_id = self.u32(&|| format!("element type of array '{key}'"))?;
        let elem_type = GgufValueType::from_id(elem_id).ok_or_else(|| FormatError::InvalidValueType {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            type_id: elem_id,
        })?;
        if elem_type == GgufValueType::Array {
            return Err(FormatError::NestedArray { path: self.path.to_path_buf(), key: key.to_string() });
        }
        // A string element is at least its 8-byte length.
        let min_size = elem_type.scalar_size().unwrap_or(8);
        let n = self.length(MAX_ARRAY_ELEMENTS, min_size, &|| format!("length of array '{key}'"))?;
        let mut values = Vec::with_capacity(n as usize);
        for i in 0..n {
            values.push(self.scalar(elem_type, &|| format!("element {i} of array '{key}'"))?);
        }
        Ok(GgufValue::Array { elem_type, values })
    }
}

fn parse_header(path: &Path, data: &[u8]) -> Result<Header> {
    let mut c = Cursor { path, data, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(FormatError::BadMagic { path: path.to_path_buf(), found: magic });
    }
    let version = c.u32(&|| "version".into())?;
    match version {
        1 => return Err(FormatError::GgufV1 { path: path.to_path_buf() }),
        2 | 3 => {}
        v => {
            let hint = if v & 0xFFFF == 0 { "; this looks like a big-endian file, which is not supported" } else { "" };
            return Err(FormatError::UnsupportedVersion { path: path.to_path_buf(), version: v, hint });
        }
    }
    // Each tensor info takes at least 8 (name len) + 4 + 4 + 8 bytes; each KV at least 8 + 4 + 1.
    let n_tensors = signed_count(&mut c, "tensor count", 24)?;
    let n_kv = signed_count(&mut c, "metadata count", 13)?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut keys = HashSet::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let value = c.value(&key)?;
        if !keys.insert(key.clone()) {
            return Err(FormatError::DuplicateKey { path: path.to_path_buf(), key });
        }
        metadata.push((key, value));
    }
    let alignment = alignment_of(path, &metadata)?;

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info = tensor_info(&mut c, i)?;
        if !names.insert(info.name.clone()) {
            return Err(FormatError::DuplicateTensor { path: path.to_path_buf(), name: info.name });
        }
        tensors.push(info);
    }
    let header_end = c.pos as u64;
    let data_offset = if tensors.is_empty() {
        header_end
    } else {
        align_up(header_end, alignment).ok_or_else(|| FormatError::BadAlignment {
            path: path.to_path_buf(),
            detail: "overflows the header size".into(),
        })?
    };
    check_layout(path, data.len() as u64, data_offset, alignment, &tensors)?;
    Ok(Header { version, metadata, tensors, alignment, data_offset })
}

fn signed_count(c: &mut Cursor<'_>, field: &str, min_size: u64) -> Result<u64> {
    let v = c.i64(&|| field.to_string())?;
    if v < 0 {
        return Err(FormatError::Negative { path: c.path.to_path_buf(), field: field.into(), value: v });
    }
    let fits = c.left() / min_size;
    if v as u64 > fits {
        return Err(FormatError::TooLarge {
            path: c.path.to_path_buf(),
            field: field.into(),
            value: v as u64,
            limit: fits,
        });
    }
    Ok(v as u64)
}

fn alignment_of(path: &Path, metadata: &[(String, GgufValue)]) -> Result<u64> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let bad = |detail: String| FormatError::BadAlignment { path: path.to_path_buf(), detail };
    match v {
        GgufValue::U32(a) if a.is_power_of_two() => Ok(u64::from(*a)),
        GgufValue::U32(a) => Err(bad(format!("is {a}, not a power of two"))),
        other => Err(bad(format!("has type {}, expected u32", other.value_type().name()))),
    }
}

fn tensor_info(c: &mut Cursor<'_>, i: u64) -> Result<TensorInfo> {
    let path = c.path.to_path_buf();
    let name = c.string(&|| format!("name of tensor {i}"))?;
    if name.len() >= MAX_NAME_LENGTH {
        return Err(FormatError::NameTooLong { path, len: name.len(), name, limit: MAX_NAME_LENGTH - 1 });
    }
    let n_dims = c.u32(&|| format!("n_dims of tensor '{name}'"))?;
    if n_dims > MAX_DIMS {
        return Err(FormatError::TooManyDims { path, name, n_dims, limit: MAX_DIMS });
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        let v = c.i64(&|| format!("ne[{d}] of tensor '{name}'"))?;
        if v < 0 {
            return Err(FormatError::Negative { path, field: format!("ne[{d}] of tensor '{name}'"), value: v });
        }
        ne.push(v as u64);
    }
    let type_id = c.u32(&|| format!("type of tensor '{name}'"))?;
    let ggml_type = match GgmlType::from_id(type_id) {
        Some(t) => t,
        None => {
            return Err(match removed_type_name(type_id) {
                Some(type_name) => FormatError::RemovedTensorType { path, name, type_id, type_name },
                None => FormatError::UnknownTensorType { path, name, type_id },
            })
        }
    };
    let offset = c.u64(&|| format!("offset of tensor '{name}'"))?;
    let ne0 = ne.first().copied().unwrap_or(1);
    if !ne0.is_multiple_of(ggml_type.block_size()) {
        return Err(FormatError::RowNotDivisible { path, name, ne0, ty: ggml_type, block: ggml_type.block_size() });
    }
    // llama.cpp also requires the element count to fit in int64.
    let n_elems = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= i64::MAX as u64);
    let size = n_elems.and_then(|_| ggml_type.tensor_size(&ne)).ok_or_else(|| FormatError::SizeOverflow {
        path: path.clone(),
        name: name.clone(),
        detail: format!("ne = {ne:?}, type {ggml_type}"),
    })?;
    Ok(TensorInfo { name, ggml_type, ne, offset, size })
}

fn check_layout(path: &Path, file_len: u64, data_offset: u64, alignment: u64, tensors: &[TensorInfo]) -> Result<()> {
    for t in tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(FormatError::MisalignedTensor {
                path: path.to_path_buf(),
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len => {
                let _ = s;
            }
            _ => {
                return Err(FormatError::TensorOutOfBounds {
                    path: path.to_path_buf(),
                    name: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        if pair[0].offset + pair[0].size > pair[1].offset {
            return Err(FormatError::OverlappingTensors {
                path: path.to_path_buf(),
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }
    Ok(())
}
