//! Importance matrices as `llama-quantize` loads them: llama.cpp's GGUF layout (`<weight>.in_sum2` and
//! `<weight>.counts` tensors, `imatrix.*` metadata) or the legacy `.dat` layout. Each entry becomes the
//! quantizer weights of its tensor: the mean of x² per input column (`in_sum2 / count` per expert slice, a
//! count of 0 giving weight 1; legacy: `values / ncall`).
//!
//! Ported from `tools/quantize/quantize.cpp` (`load_imatrix`, `prepare_imatrix`) and
//! `common/imatrix-loader.cpp` at llama.cpp 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quantforge_formats::gguf::{GgufFile, GgufValue};
use quantforge_formats::{bounded, FormatError, GgmlType};

/// Errors loading an importance matrix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImatrixError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: missing imatrix metadata ({key}); is this an importance matrix?")]
    MissingMetadata { path: PathBuf, key: &'static str },
    #[error("{path}: entry '{name}': {message}")]
    BadEntry { path: PathBuf, name: String, message: String },
    #[error("{path}: not an importance matrix (neither GGUF nor the legacy .dat layout): {message}")]
    BadLegacy { path: PathBuf, message: String },
}

/// A loaded importance matrix.
#[derive(Clone, Debug, Default)]
pub struct Imatrix {
    entries: BTreeMap<String, Vec<f32>>,
    datasets: Vec<String>,
    chunk_count: u32,
}

impl Imatrix {
    /// Load `path`, trying the GGUF layout first and then the legacy one. A GGUF file is memory-mapped; a
    /// legacy one is read whole, at most [`bounded::MAX_IMATRIX_BYTES`].
    pub fn load(path: impl AsRef<Path>) -> Result<Imatrix, ImatrixError> {
        let path = path.as_ref();
        let io = |source| ImatrixError::Io { path: path.into(), source };
        let mut magic = [0u8; 4];
        let mut file = std::fs::File::open(path).map_err(io)?;
        let n = read_prefix(&mut file, &mut magic).map_err(io)?;
        drop(file);
        if n == 4 && &magic == b"GGUF" {
            load_gguf(path, &GgufFile::open(path)?)
        } else {
            let bytes =
                bounded::read_capped(path, bounded::MAX_IMATRIX_BYTES, "importance matrix").map_err(|e| match e {
                    FormatError::Io { source, .. } => io(source),
                    other => ImatrixError::Format(other),
                })?;
            load_legacy(path, &bytes)
        }
    }

    /// Parse an importance matrix held in memory (either layout); `name` is used in messages.
    pub fn from_bytes(name: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Imatrix, ImatrixError> {
        let path = name.as_ref();
        if bytes.starts_with(b"GGUF") {
            load_gguf(path, &GgufFile::from_bytes(path, bytes)?)
        } else {
            load_legacy(path, &bytes)
        }
    }

    /// Keep only entries whose name contains one of `include` (if any), then drop those containing one of
    /// `exclude` — `--include-weights` / `--exclude-weights`.
    pub fn filter(&mut self, include: &[String], exclude: &[String]) {
        if !exclude.is_empty() {
            self.entries.retain(|k, _| !exclude.iter().any(|x| k.contains(x.as_str())));
        }
        if !include.is_empty() {
            self.entries.retain(|k, _| include.iter().any(|x| k.contains(x.as_str())));
        }
    }

    /// Quantizer weights for tensor `name` (`ne[0] * n_expert` values).
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.entries.get(name).map(Vec::as_slice)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entries are left.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Datasets the matrix was computed on.
    pub fn datasets(&self) -> &[String] {
        &self.datasets
    }

    /// Chunks the matrix was computed on.
    pub fn chunk_count(&self) -> u32 {
        self.chunk_count
    }

    /// The `quantize.imatrix.*` keys llama-quantize adds to its output; `file_arg` is the path exactly as
    /// the user gave it (llama.cpp records it verbatim).
    pub fn output_metadata(&self, file_arg: &str) -> Vec<(String, GgufValue)> {
        let mut kv = vec![("quantize.imatrix.file".to_string(), GgufValue::String(file_arg.to_string()))];
        if let Some(first) = self.datasets.first() {
            kv.push(("quantize.imatrix.dataset".into(), GgufValue::String(first.clone())));
        }
        kv.push(("quantize.imatrix.entries_count".into(), GgufValue::U32(self.entries.len() as u32)));
        kv.push(("quantize.imatrix.chunks_count".into(), GgufValue::U32(self.chunk_count)));
        kv
    }

    /// Build from entries directly (tests, and the imatrix collector).
    pub fn from_entries(entries: BTreeMap<String, Vec<f32>>, datasets: Vec<String>, chunk_count: u32) -> Imatrix {
        Imatrix { entries, datasets, chunk_count }
    }
}

fn f32_values(f: &GgufFile, name: &str) -> Result<Vec<f32>, ImatrixError> {
    let t = f.tensor(name).ok_or_else(|| ImatrixError::BadEntry {
        path: f.path().into(),
        name: name.into(),
        message: "tensor missing".into(),
    })?;
    if t.ggml_type != GgmlType::F32 {
        return Err(ImatrixError::BadEntry {
            path: f.path().into(),
            name: name.into(),
            message: format!("has type {}, expected f32", t.ggml_type),
        });
    }
    Ok(f.tensor_data(t).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Fill `buf` from the start of `file` as far as the file goes; the number of bytes read.
fn read_prefix(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn load_gguf(path: &Path, f: &GgufFile) -> Result<Imatrix, ImatrixError> {
    let datasets = match f.get("imatrix.datasets") {
        Some(GgufValue::Array(a)) => a.strings().map_or_else(Vec::new, |s| s.iter().map(String::from).collect()),
        _ => return Err(ImatrixError::MissingMetadata { path: path.into(), key: "imatrix.datasets" }),
    };
    let chunk_count = f
        .get("imatrix.chunk_count")
        .and_then(GgufValue::as_u64)
        .ok_or(ImatrixError::MissingMetadata { path: path.into(), key: "imatrix.chunk_count" })?;
    f.get("imatrix.chunk_size")
        .and_then(GgufValue::as_u64)
        .ok_or(ImatrixError::MissingMetadata { path: path.into(), key: "imatrix.chunk_size" })?;
    let mut entries = BTreeMap::new();
    for t in f.tensors() {
        let Some(name) = t.name.strip_suffix(".in_sum2") else { continue };
        let sums = f32_values(f, &t.name)?;
        let counts = f32_values(f, &format!("{name}.counts"))?;
        let bad = |message: String| ImatrixError::BadEntry { path: path.into(), name: name.into(), message };
        if counts.is_empty() || sums.is_empty() {
            continue;
        }
        if sums.len() % counts.len() != 0 {
            return Err(bad(format!("{} sums do not split into {} counts", sums.len(), counts.len())));
        }
        let ne0 = sums.len() / counts.len();
        let mut values = Vec::with_capacity(sums.len());
        for (j, &count) in counts.iter().enumerate() {
            let slice = &sums[j * ne0..(j + 1) * ne0];
            if count > 0.0 {
                values.extend(slice.iter().map(|&s| s / count));
            } else {
                values.extend(std::iter::repeat_n(1.0f32, ne0));
            }
        }
        check_finite(path, name, &values)?;
        entries.insert(name.to_string(), values);
    }
    Ok(Imatrix { entries, datasets, chunk_count: chunk_count as u32 })
}

fn check_finite(path: &Path, name: &str, values: &[f32]) -> Result<(), ImatrixError> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ImatrixError::BadEntry {
            path: path.into(),
            name: name.into(),
            message: format!("value {i} is not finite ({})", values[i]),
        });
    }
    Ok(())
}

/// A little-endian reader for the legacy layout with every length checked against what is left.
struct Legacy<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl Legacy<'_> {
    fn i32(&mut self, what: &str) -> Result<i32, ImatrixError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&[u8], ImatrixError> {
        if n > self.data.len() - self.pos {
            return Err(ImatrixError::BadLegacy {
                path: self.path.into(),
                message: format!("truncated reading {what} at byte {}", self.pos),
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn len(&mut self, what: &str, elem: usize) -> Result<usize, ImatrixError> {
        let n = self.i32(what)?;
        let left = (self.data.len() - self.pos) / elem;
        if n < 0 || n as usize > left {
            return Err(ImatrixError::BadLegacy {
                path: self.path.into(),
                message: format!("{what} {n} is out of range"),
            });
        }
        Ok(n as usize)
    }
}

fn load_legacy(path: &Path, data: &[u8]) -> Result<Imatrix, ImatrixError> {
    let mut r = Legacy { path, data, pos: 0 };
    // Each entry is at least 4 + 1 + 4 + 4 bytes.
    let n_entries = r.len("entry count", 13)?;
    let mut entries = BTreeMap::new();
    for i in 0..n_entries {
        let len = r.len(&format!("name length of entry {i}"), 1)?;
        let name = String::from_utf8(r.bytes(len, "entry name")?.to_vec()).map_err(|_| ImatrixError::BadLegacy {
            path: path.into(),
            message: format!("entry {i} name is not UTF-8"),
        })?;
        let ncall = r.i32(&format!("ncall of '{name}'"))?;
        let nval = r.len(&format!("value count of '{name}'"), 4)?;
        let raw = r.bytes(nval * 4, "values")?;
        let mut values: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if ncall > 0 {
            let n = ncall as f32;
            values.iter_mut().for_each(|v| *v /= n);
        }
        check_finite(path, &name, &values)?;
        if entries.insert(name.clone(), values).is_some() {
            return Err(ImatrixError::BadEntry { path: path.into(), name, message: "duplicate entry".into() });
        }
    }
    // Optional trailer: chunk count and dataset name.
    let mut chunk_count = 0;
    let mut datasets = Vec::new();
    if r.pos + 4 <= data.len() {
        chunk_count = r.i32("chunk count")?.max(0) as u32;
        if r.pos + 4 <= data.len() {
            let len = r.len("dataset name length", 1)?;
            datasets.push(String::from_utf8_lossy(r.bytes(len, "dataset name")?).into_owned());
        }
    }
    Ok(Imatrix { entries, datasets, chunk_count })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden/synth-tiny-imatrix.gguf")
    }

    #[test]
    fn loads_golden_gguf_imatrix() {
        let m = Imatrix::load(golden()).unwrap();
        assert_eq!(m.len(), 14);
        assert_eq!(m.chunk_count(), 8);
        assert_eq!(m.datasets(), ["synthetic"]);
        assert_eq!(m.get("blk.0.ffn_down.weight").unwrap().len(), 512);
        let kv = m.output_metadata("synth-tiny-imatrix.gguf");
        assert_eq!(kv.len(), 4);
        assert_eq!(kv[2].1, GgufValue::U32(14));
    }

    #[test]
    fn legacy_round_trip_and_filters() {
        let m = Imatrix::load(golden()).unwrap();
        // Legacy stores values * ncall; use ncall = 3.
        let mut dat = Vec::new();
        dat.extend_from_slice(&(m.len() as i32).to_le_bytes());
        for name in m.names() {
            dat.extend_from_slice(&(name.len() as i32).to_le_bytes());
            dat.extend_from_slice(name.as_bytes());
            dat.extend_from_slice(&3i32.to_le_bytes());
            let v = m.get(name).unwrap();
            dat.extend_from_slice(&(v.len() as i32).to_le_bytes());
            v.iter().for_each(|x| dat.extend_from_slice(&(x * 3.0).to_le_bytes()));
        }
        dat.extend_from_slice(&8i32.to_le_bytes());
        dat.extend_from_slice(&9i32.to_le_bytes());
        dat.extend_from_slice(b"synthetic");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.dat");
        std::fs::write(&p, &dat).unwrap();
        let mut l = Imatrix::load(&p).unwrap();
        assert_eq!(l.len(), 14);
        assert_eq!(l.chunk_count(), 8);
        assert_eq!(l.datasets(), ["synthetic"]);
        for name in m.names() {
            for (a, b) in m.get(name).unwrap().iter().zip(l.get(name).unwrap()) {
                assert!((a - b).abs() <= a.abs() * 1e-6);
            }
        }
        l.filter(&["ffn_".into()], &["ffn_up".into()]);
        assert_eq!(l.len(), 4);
        // Truncations and garbage are errors, never panics.
        for cut in [0, 3, 10, 50, dat.len() / 2] {
            std::fs::write(&p, &dat[..cut]).unwrap();
            let r = Imatrix::load(&p);
            assert!(cut == 0 && r.as_ref().is_ok_and(|m| m.is_empty()) || r.is_err(), "cut {cut}");
        }
        std::fs::write(&p, [0xFFu8; 64]).unwrap();
        assert!(Imatrix::load(&p).is_err());
    }
}
