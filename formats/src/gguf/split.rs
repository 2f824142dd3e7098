//! Split GGUF models, in the layout of llama.cpp's `gguf-split` (which `quantize --split-max-size` writes too):
//! one model stored as `<prefix>-00001-of-0000N.gguf` … `<prefix>-0000N-of-0000N.gguf`, every file carrying
//! `split.no` (u16, 0-based), `split.count` (u16) and `split.tensors.count` (i32, the model's tensors over all
//! files). The first file holds the model's metadata; any file may hold no tensors.
//!
//! Invariant: [`open_set`] gives back either every file of the set, each checked to belong to it (its name and
//! its three keys agree with the file it was opened from), together holding exactly `split.tensors.count`
//! distinct tensors, or a [`SplitError`] naming the offending file. A partial model never comes out of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::reader::ParsedFile;
use super::GgufValue;
use crate::error::{FormatError, Result};

/// Key of a split's 0-based index (u16).
pub const KEY_SPLIT_NO: &str = "split.no";
/// Key of the number of files of the set (u16).
pub const KEY_SPLIT_COUNT: &str = "split.count";
/// Key of the number of tensors of the whole model (i32).
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// The split keys of one file, checked for range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitKeys {
    /// 0-based index of the file in its set (below `count`).
    pub no: usize,
    /// Number of files in the set (1 to 65535).
    pub count: usize,
    /// Number of tensors of the whole model.
    pub tensors_count: u64,
}

/// Why a split model cannot be opened. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// The file has some split keys but not this one.
    #[error(
        "{path}: split key '{key}' is missing (a split file carries split.no, split.count and split.tensors.count)"
    )]
    MissingKey { path: PathBuf, key: &'static str },
    /// A split key has a type or value out of range.
    #[error("{path}: split key '{key}' {detail}")]
    BadKey { path: PathBuf, key: &'static str, detail: String },
    /// The file's name does not say what its keys say, so the rest of its set cannot be found.
    #[error(
        "{path}: its split keys make it split {no} of {count}, so it must be named '<name>-{no:05}-of-{count:05}.gguf'"
    )]
    BadName { path: PathBuf, no: usize, count: usize },
    /// A file of the set does not exist.
    #[error("{path}: split {no} of {count} is missing (the model was opened from {from})")]
    Missing { path: PathBuf, no: usize, count: usize, from: PathBuf },
    /// A file of the set disagrees with the file the model was opened from.
    #[error("{path}: {key} is {found}, but {reference} says {expected}: not a split of the same model")]
    Mismatch { path: PathBuf, key: &'static str, found: u64, expected: u64, reference: PathBuf },
    /// A file is named as a split of the set, with a number the set does not have.
    #[error("{path}: named as split {no} of {count}, but a set of {count} has no split {no}: it does not belong with the others")]
    Extra { path: PathBuf, no: usize, count: usize },
    /// The files together hold another number of tensors than the model has.
    #[error("{path}: split.tensors.count says the model has {declared} tensors, but its {files} files hold {found}")]
    TensorCount { path: PathBuf, declared: u64, files: usize, found: u64 },
    /// Two files of the set hold a tensor of the same name.
    #[error("{path}: tensor '{name}' is also in {other}: the splits are not from the same model")]
    DuplicateTensor { path: PathBuf, name: String, other: PathBuf },
}

/// The file name of split `index` (0-based) of `count`: `<prefix>-%05d-of-%05d.gguf`, 1-based.
pub fn split_file_name(prefix: &str, index: usize, count: usize) -> String {
    format!("{prefix}-{:05}-of-{count:05}.gguf", index + 1)
}

/// The parts of a split file name `<prefix>-NNNNN-of-MMMMM.gguf`: prefix, `NNNNN` (1-based, as written) and
/// `MMMMM`. `None` when the name does not have that form (five digits each).
pub fn parse_split_file_name(name: &str) -> Option<(&str, usize, usize)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let number = |s: &str| (s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten();
    Some((prefix, number(no)?, number(count)?))
}

/// The split keys of a file's metadata; `None` when it has none (an ordinary, unsplit file).
pub fn split_keys(path: &Path, metadata: &[(String, GgufValue)]) -> Result<Option<SplitKeys>, SplitError> {
    let get = |key: &str| metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let keys = [KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS_COUNT];
    if keys.iter().all(|k| get(k).is_none()) {
        return Ok(None);
    }
    let value = |key: &'static str, max: u64| -> Result<u64, SplitError> {
        let v = get(key).ok_or_else(|| SplitError::MissingKey { path: path.to_path_buf(), key })?;
        let bad = |detail: String| SplitError::BadKey { path: path.to_path_buf(), key, detail };
        let n = v.as_u64().ok_or_else(|| match v.as_f64() {
            Some(x) if x < 0.0 => bad(format!("is negative ({x})")),
            _ => bad(format!("has type {}, expected an integer", v.value_type().name())),
        })?;
        if n > max {
            return Err(bad(format!("is {n}, above the limit of {max}")));
        }
        Ok(n)
    };
    let count = value(KEY_SPLIT_COUNT, u64::from(u16::MAX))? as usize;
    let no = value(KEY_SPLIT_NO, u64::from(u16::MAX))? as usize;
    let tensors_count = value(KEY_SPLIT_TENSORS_COUNT, i32::MAX as u64)?;
    let bad = |key, detail: String| SplitError::BadKey { path: path.to_path_buf(), key, detail };
    if count == 0 {
        return Err(bad(KEY_SPLIT_COUNT, "is 0; a split model has at least one file".into()));
    }
    if no >= count {
        return Err(bad(KEY_SPLIT_NO, format!("is {no}, but split.count is {count} (split.no counts from 0)")));
    }
    Ok(Some(SplitKeys { no, count, tensors_count }))
}

/// `split.tensors.count` of one file when it is a split (its keys valid), else `None`.
pub(crate) fn declared_tensor_count(metadata: &[(String, GgufValue)]) -> Option<u64> {
    split_keys(Path::new(""), metadata).ok().flatten().map(|k| k.tensors_count)
}

/// Every file of the model `given` (opened from `path`) belongs to: the first and the rest, in split order.
/// An unsplit file is the whole model by itself.
pub(crate) fn open_set(path: &Path, given: ParsedFile) -> Result<(ParsedFile, Vec<ParsedFile>)> {
    let Some(keys) = split_keys(path, &given.metadata)? else {
        return Ok((given, Vec::new()));
    };
    if keys.count == 1 {
        // A set of one is whole whatever its name; only its tensor count is left to check.
        check_tensors(path, keys, &[&given])?;
        return Ok((given, Vec::new()));
    }
    let prefix = set_prefix(path, keys)?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut given = Some(given);
    let mut take = |index: usize| match given.take_if(|_| index == keys.no) {
        Some(file) => Ok(file),
        None => open_member(&dir.join(split_file_name(prefix, index, keys.count)), index, keys, path),
    };
    let first = take(0)?;
    let rest = (1..keys.count).map(&mut take).collect::<Result<Vec<_>>>()?;
    check_no_extra(dir, prefix, keys.count)?;
    let all: Vec<&ParsedFile> = std::iter::once(&first).chain(&rest).collect();
    check_tensors(path, keys, &all)?;
    Ok((first, rest))
}

/// The `<prefix>` of the set, from the name of the file opened; its name must agree with its keys.
fn set_prefix(path: &Path, keys: SplitKeys) -> Result<&str, SplitError> {
    let name = path.file_name().and_then(|n| n.to_str()).and_then(parse_split_file_name);
    match name {
        Some((prefix, no, count)) if no == keys.no + 1 && count == keys.count => Ok(prefix),
        _ => Err(SplitError::BadName { path: path.to_path_buf(), no: keys.no + 1, count: keys.count }),
    }
}

/// Open split `index` of the set described by `keys` (read from `reference`) and check it belongs.
fn open_member(path: &Path, index: usize, keys: SplitKeys, reference: &Path) -> Result<ParsedFile> {
    let file = ParsedFile::open(path).map_err(|e| match e {
        FormatError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            FormatError::from(SplitError::Missing {
                path: path.to_path_buf(),
                no: index + 1,
                count: keys.count,
                from: reference.to_path_buf(),
            })
        }
        e => e,
    })?;
    let own = split_keys(path, &file.metadata)?
        .ok_or_else(|| SplitError::MissingKey { path: path.to_path_buf(), key: KEY_SPLIT_COUNT })?;
    let mismatch = |key, found: usize, expected: usize| SplitError::Mismatch {
        path: path.to_path_buf(),
        key,
        found: found as u64,
        expected: expected as u64,
        reference: reference.to_path_buf(),
    };
    if own.count != keys.count {
        return Err(mismatch(KEY_SPLIT_COUNT, own.count, keys.count).into());
    }
    if own.tensors_count != keys.tensors_count {
        return Err(SplitError::Mismatch {
            path: path.to_path_buf(),
            key: KEY_SPLIT_TENSORS_COUNT,
            found: own.tensors_count,
            expected: keys.tensors_count,
            reference: reference.to_path_buf(),
        }
        .into());
    }
    if own.no != index {
        return Err(SplitError::BadName { path: path.to_path_buf(), no: own.no + 1, count: own.count }.into());
    }
    Ok(file)
}

/// No file in `dir` may be named as a split of this set with a number outside it (`-00000-of-`, or above the
/// count): such a file means two sets were mixed up. Only a hint when `dir` cannot be listed.
fn check_no_extra(dir: &Path, prefix: &str, count: usize) -> Result<(), SplitError> {
    let listing = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(listing) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((p, no, c)) = name.to_str().and_then(parse_split_file_name) else { continue };
        if p == prefix && c == count && (no == 0 || no > count) {
            return Err(SplitError::Extra { path: dir.join(&name), no, count });
        }
    }
    Ok(())
}

/// The files hold `split.tensors.count` tensors together, no name twice.
fn check_tensors(path: &Path, keys: SplitKeys, files: &[&ParsedFile]) -> Result<(), SplitError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        for t in &file.tensors {
            if let Some(&other) = seen.get(t.name.as_str()) {
                return Err(SplitError::DuplicateTensor {
                    path: file.part.path.clone(),
                    name: t.name.clone(),
                    other: files[other].part.path.clone(),
                });
            }
            seen.insert(&t.name, i);
        }
    }
    let found = seen.len() as u64;
    if found != keys.tensors_count {
        return Err(SplitError::TensorCount {
            path: path.to_path_buf(),
            declared: keys.tensors_count,
            files: files.len(),
            found,
        });
    }
    Ok(())
}
