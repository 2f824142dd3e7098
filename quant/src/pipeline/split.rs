//! Splitting output into several GGUF files the way `llama-gguf-split --split-max-size` does: a new file
//! starts when the tensors already in the current one plus the next tensor (each padded to the alignment)
//! would exceed the limit. The first file carries all metadata; every file carries `split.no` (u16),
//! `split.count` (u16) and `split.tensors.count` (i32). Names are `<prefix>-%05d-of-%05d.gguf`. The layout's
//! names and keys are `quantforge_formats::gguf::split`'s, which reads such files back as one model.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::split::{split_file_name, KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT};
use quantforge_formats::gguf::GgufValue;

/// Assign each tensor (given its data size) to a split; returns the split index per tensor.
pub fn assign(sizes: &[u64], max_size: u64, alignment: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(sizes.len());
    let (mut split, mut current) = (0usize, 0u64);
    for (i, &s) in sizes.iter().enumerate() {
        let padded = s.div_ceil(alignment) * alignment;
        if i > 0 && current > 0 && current + padded > max_size {
            split += 1;
            current = 0;
        }
        current += padded;
        out.push(split);
    }
    out
}

/// The path of split `index` (0-based) of `count`, from the requested output path.
pub fn split_path(output: &Path, index: usize, count: usize) -> PathBuf {
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    output.with_file_name(split_file_name(&stem, index, count))
}

/// The `split.*` keys of split `index` of `count` for a model of `n_tensors` tensors.
pub fn split_keys(index: usize, count: usize, n_tensors: usize) -> Vec<(String, GgufValue)> {
    vec![
        (KEY_SPLIT_NO.into(), GgufValue::U16(index as u16)),
        (KEY_SPLIT_COUNT.into(), GgufValue::U16(count as u16)),
        (KEY_SPLIT_TENSORS_COUNT.into(), GgufValue::I32(n_tensors as i32)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_padded_sizes() {
        assert_eq!(assign(&[100, 100, 100], 256, 32), [0, 0, 1]);
        // A tensor larger than the limit gets a file of its own.
        assert_eq!(assign(&[10, 1000, 10], 256, 32), [0, 1, 2]);
        assert_eq!(assign(&[10, 10], 1 << 30, 32), [0, 0]);
        assert_eq!(split_path(Path::new("/x/model-q4.gguf"), 0, 3), PathBuf::from("/x/model-q4-00001-of-00003.gguf"));
    }
}
