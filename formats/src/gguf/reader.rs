//! A GGUF reader over a memory map. Every count and length read from the file is checked against both
//! llama.cpp's limits and the bytes actually left, before anything is allocated from it.
//!
//! A model is one file or, split, several ([`super::split`] checks they form one set); each file keeps its own
//! mapping, and every tensor's bytes are read from (and released in) the mapping of the file that holds it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{
    align_up, GgufArray, GgufValue, GgufValueType, StringArray, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC,
    KEY_ALIGNMENT, MAX_ARRAY_ELEMENTS, MAX_DIMS, MAX_NAME_LENGTH, MAX_STRING_LENGTH,
};
use crate::error::{FormatError, Result};
use crate::ggml_type::{removed_type_name, GgmlType};
use crate::mmap::Bytes;

/// An open GGUF model: parsed header, tensor infos, and the mapped data. Usually one file; a split model
/// (see [`super::split`]) is every file of its set, seen as one model.
pub struct GgufFile {
    /// The path it was opened with (for messages).
    path: PathBuf,
    /// Every file, in split order; the first holds the model's metadata.
    parts: Vec<Part>,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    /// Every tensor, the parts' in split order.
    tensors: Vec<TensorInfo>,
    /// For each tensor, the index of the part holding it (empty when there is one part).
    tensor_part: Vec<usize>,
    alignment: u64,
}

/// One file of a model: its path, its mapping, and where its data section starts.
pub(crate) struct Part {
    pub(crate) path: PathBuf,
    bytes: Bytes,
    data_offset: u64,
}

/// One file parsed on its own: its part and its header.
pub(crate) struct ParsedFile {
    pub(crate) part: Part,
    pub(crate) version: u32,
    pub(crate) metadata: Vec<(String, GgufValue)>,
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) alignment: u64,
}

impl ParsedFile {
    /// Map and parse one file.
    pub(crate) fn open(path: &Path) -> Result<ParsedFile> {
        ParsedFile::parse(path.to_path_buf(), Bytes::map(path)?)
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<ParsedFile> {
        let header = parse_header(&path, &bytes)?;
        Ok(ParsedFile {
            part: Part { path, bytes, data_offset: header.data_offset },
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
        })
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("files", &self.parts.len())
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Map and parse the model at `path`. When `path` is one split of a split model, every split of its set is
    /// opened and checked (see [`super::split`]), and the result is the whole model: its metadata from the
    /// first split, its tensors from all of them. A missing, extra or mismatched split is an error naming the
    /// file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let (first, rest) = super::split::open_set(path, ParsedFile::open(path)?)?;
        Ok(GgufFile::join(path.to_path_buf(), first, rest))
    }

    /// Map and parse exactly one file, as stored: a split is not joined with the rest of its set, so the
    /// tensors may be only part of a model ([`GgufFile::is_complete`] tells).
    pub fn open_single_file(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        Ok(GgufFile::join(path.to_path_buf(), ParsedFile::open(path)?, Vec::new()))
    }

    /// Parse one file's bytes held in memory; `name` is used in error messages. Like
    /// [`GgufFile::open_single_file`], a split is not joined with its set.
    pub fn from_bytes(name: impl Into<PathBuf>, data: Vec<u8>) -> Result<GgufFile> {
        let name = name.into();
        Ok(GgufFile::join(name.clone(), ParsedFile::parse(name, Bytes::Owned(data))?, Vec::new()))
    }

    /// One model from files already checked to form it: the first (which holds the metadata) and the rest.
    fn join(path: PathBuf, first: ParsedFile, rest: Vec<ParsedFile>) -> GgufFile {
        let (version, metadata, alignment) = (first.version, first.metadata, first.alignment);
        let mut tensors = first.tensors;
        let mut parts = vec![first.part];
        let mut tensor_part = Vec::new();
        for file in rest {
            if tensor_part.is_empty() {
                tensor_part = vec![0; tensors.len()];
            }
            tensor_part.extend(std::iter::repeat_n(parts.len(), file.tensors.len()));
            tensors.extend(file.tensors);
            parts.push(file.part);
        }
        GgufFile { path, parts, version, metadata, tensors, tensor_part, alignment }
    }

    /// The path the model was opened with (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every file the model was read from, in split order (one unless it is a split model).
    pub fn files(&self) -> Vec<&Path> {
        self.parts.iter().map(|p| p.path.as_path()).collect()
    }

    /// The size in bytes of each file, in split order.
    pub fn file_sizes(&self) -> Vec<u64> {
        self.parts.iter().map(|p| p.bytes.len() as u64).collect()
    }

    /// How many of the tensors each file holds, in split order.
    pub fn tensors_per_file(&self) -> Vec<usize> {
        let mut counts = vec![0; self.parts.len()];
        if self.tensor_part.is_empty() {
            counts[0] = self.tensors.len();
        }
        for &p in &self.tensor_part {
            counts[p] += 1;
        }
        counts
    }

    /// Number of tensors of the whole model: `split.tensors.count` for a split opened on its own with
    /// [`GgufFile::open_single_file`], otherwise the tensors held.
    pub fn model_tensor_count(&self) -> u64 {
        if self.parts.len() == 1 {
            if let Some(n) = super::split::declared_tensor_count(&self.metadata) {
                return n;
            }
        }
        self.tensors.len() as u64
    }

    /// Whether every tensor of the model is here (false for one split of a set opened on its own).
    pub fn is_complete(&self) -> bool {
        self.model_tensor_count() == self.tensors.len() as u64
    }

    /// GGUF version (2 or 3) of the first file.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Metadata in file order (of the first file, for a split model).
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Tensor infos in file order (split after split, for a split model).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Data alignment in bytes (of the first file, for a split model).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section (of the first file, for a split model).
    pub fn data_offset(&self) -> u64 {
        self.parts[0].data_offset
    }

    /// Size in bytes (of all files together, for a split model).
    pub fn file_size(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes.len() as u64).sum()
    }

    /// The file holding `info`: found by position when `info` is one of [`GgufFile::tensors`], else by name.
    fn part_of(&self, info: &TensorInfo) -> &Part {
        if self.tensor_part.is_empty() {
            return &self.parts[0];
        }
        let base = self.tensors.as_ptr() as usize;
        let at = info as *const TensorInfo as usize;
        let size = std::mem::size_of::<TensorInfo>();
        let index = if at >= base && at < base + self.tensors.len() * size && (at - base).is_multiple_of(size) {
            Some((at - base) / size)
        } else {
            self.tensors.iter().position(|t| t.name == info.name)
        };
        &self.parts[index.map_or(0, |i| self.tensor_part[i])]
    }

    /// The bytes of `info` (bounds were checked when the file was opened).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let part = self.part_of(info);
        let start = (part.data_offset + info.offset) as usize;
        &part.bytes[start..start + info.size as usize]
    }

    /// Like [`GgufFile::tensor_data`], but first asks the kernel to map the whole range at once; use it when
    /// all of the tensor is about to be read.
    pub fn tensor_data_prefetched(&self, info: &TensorInfo) -> &[u8] {
        let part = self.part_of(info);
        part.bytes.prefetch((part.data_offset + info.offset) as usize, info.size as usize);
        self.tensor_data(info)
    }

    /// Like [`GgufFile::tensor_data_prefetched`] for bytes `range` of `info`'s data only (clamped to it): for a
    /// caller that reads a large tensor a piece at a time.
    pub fn prefetch_range(&self, info: &TensorInfo, range: std::ops::Range<u64>) {
        let part = self.part_of(info);
        let (start, len) = clamp_range(info, range);
        part.bytes.prefetch((part.data_offset + info.offset + start) as usize, len as usize);
    }

    /// Like [`GgufFile::release`] for bytes `range` of `info`'s data only (clamped to it).
    pub fn release_range(&self, info: &TensorInfo, range: std::ops::Range<u64>) {
        let part = self.part_of(info);
        let (start, len) = clamp_range(info, range);
        part.bytes.release((part.data_offset + info.offset + start) as usize, len as usize);
    }

    /// Hint that the caller is done with `info`'s data, so its pages can leave the resident set.
    pub fn release(&self, info: &TensorInfo) {
        let part = self.part_of(info);
        part.bytes.release((part.data_offset + info.offset) as usize, info.size as usize);
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

/// Start and length of `range` within `info`'s data.
fn clamp_range(info: &TensorInfo, range: std::ops::Range<u64>) -> (u64, u64) {
    let end = range.end.min(info.size);
    let start = range.start.min(end);
    (start, end - start)
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
        Ok(GgufValue::Array(self.elements(key, elem_type, n)?))
    }

    /// The `n` elements of array `key`, stored compactly: `n` was checked to fit in what is left.
    fn elements(&mut self, key: &str, elem_type: GgufValueType, n: u64) -> Result<GgufArray> {
        if elem_type == GgufValueType::String {
            return self.strings(key, n);
        }
        let size = elem_type.scalar_size().unwrap_or(1);
        let raw = self.take(n * size, &|| format!("elements of array '{key}'"))?;
        fn le<const N: usize, T>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            raw.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect()
        }
        Ok(match elem_type {
            GgufValueType::U8 => GgufArray::U8(raw.to_vec()),
            GgufValueType::I8 => GgufArray::I8(le(raw, i8::from_le_bytes)),
            GgufValueType::U16 => GgufArray::U16(le(raw, u16::from_le_bytes)),
            GgufValueType::I16 => GgufArray::I16(le(raw, i16::from_le_bytes)),
            GgufValueType::U32 => GgufArray::U32(le(raw, u32::from_le_bytes)),
            GgufValueType::I32 => GgufArray::I32(le(raw, i32::from_le_bytes)),
            GgufValueType::F32 => GgufArray::F32(le(raw, f32::from_le_bytes)),
            GgufValueType::Bool => GgufArray::Bool(raw.iter().map(|&b| b != 0).collect()),
            GgufValueType::U64 => GgufArray::U64(le(raw, u64::from_le_bytes)),
            GgufValueType::I64 => GgufArray::I64(le(raw, i64::from_le_bytes)),
            GgufValueType::F64 => GgufArray::F64(le(raw, f64::from_le_bytes)),
            GgufValueType::String | GgufValueType::Array => unreachable!("handled above and by value()"),
        })
    }

    /// `n` strings into one buffer: a first pass checks the lengths and sums them, so the buffer is
    /// allocated once at its exact size; the second copies and checks UTF-8.
    fn strings(&mut self, key: &str, n: u64) -> Result<GgufArray> {
        let start = self.pos;
        let mut total = 0u64;
        for i in 0..n {
            let field = || format!("element {i} of array '{key}'");
            let len = self.length(MAX_STRING_LENGTH, 1, &field)?;
            self.take(len, &field)?;
            total += len;
        }
        self.pos = start;
        let mut out = StringArray::with_capacity(n as usize, total as usize);
        for i in 0..n {
            let field = || format!("element {i} of array '{key}'");
            let len = self.length(MAX_STRING_LENGTH, 1, &field)?;
            let bytes = self.take(len, &field)?;
            let s = std::str::from_utf8(bytes)
                .map_err(|_| FormatError::InvalidUtf8 { path: self.path.to_path_buf(), field: field() })?;
            out.push(s);
        }
        Ok(GgufArray::String(out))
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
