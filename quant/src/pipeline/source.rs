//! What the pipeline quantizes: a GGUF file, or a Hugging Face directory converted on the fly. Either way the
//! tensors are seen as a converted GGUF would hold them (names, ggml-order shapes, element types), so
//! `quantize HF_DIR` writes exactly what `convert` followed by `quantize` writes. A split GGUF is all its
//! files ([`GgufFile::open`] joins them); its inputs are every file of the set.

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;

use quantforge_formats::gguf::{GgufFile, GgufValue};
use quantforge_formats::GgmlType;

use super::PipelineError;
use crate::convert::ConvertedModel;

/// A model the pipeline can read one tensor at a time.
pub trait ModelSource: Sync {
    /// Where the model comes from (for messages).
    fn path(&self) -> &Path;
    /// Files the output must not overwrite.
    fn input_paths(&self) -> Vec<&Path>;
    /// GGUF metadata, in order.
    fn metadata(&self) -> &[(String, GgufValue)];
    /// Number of tensors.
    fn len(&self) -> usize;
    /// Number of tensors of the whole model: more than [`ModelSource::len`] only for a source that holds part
    /// of its model (one split of a split GGUF opened on its own), which the pipeline refuses.
    fn model_len(&self) -> u64 {
        self.len() as u64
    }
    /// Whether there are no tensors.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Name, ggml-order dimensions and element type of tensor `i`.
    fn tensor(&self, i: usize) -> (&str, &[u64], GgmlType);
    /// The bytes of tensor `i` in its element type (from a file, mapped but not yet read: see
    /// [`ModelSource::prefetch_range`]).
    fn bytes(&self, i: usize) -> Result<Cow<'_, [u8]>, PipelineError>;
    /// Hint that tensor `i` is done with.
    fn release(&self, _i: usize) {}
    /// Hint that bytes `range` of tensor `i` are about to be read.
    fn prefetch_range(&self, _i: usize, _range: Range<usize>) {}
    /// Hint that bytes `range` of tensor `i` are done with.
    fn release_range(&self, _i: usize, _range: Range<usize>) {}

    /// The value of metadata `key`.
    fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata().iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Index of the tensor called `name`.
    fn find(&self, name: &str) -> Option<usize> {
        (0..self.len()).find(|&i| self.tensor(i).0 == name)
    }

    /// Total bytes of all tensors in their source types.
    fn tensor_bytes_total(&self) -> u64 {
        (0..self.len())
            .filter_map(|i| {
                let (_, ne, ty) = self.tensor(i);
                ty.tensor_size(ne)
            })
            .sum()
    }
}

impl ModelSource for GgufFile {
    fn path(&self) -> &Path {
        GgufFile::path(self)
    }

    fn input_paths(&self) -> Vec<&Path> {
        self.files()
    }

    fn metadata(&self) -> &[(String, GgufValue)] {
        GgufFile::metadata(self)
    }

    fn len(&self) -> usize {
        self.tensors().len()
    }

    fn model_len(&self) -> u64 {
        self.model_tensor_count()
    }

    fn tensor(&self, i: usize) -> (&str, &[u64], GgmlType) {
        let t = &self.tensors()[i];
        (&t.name, &t.ne, t.ggml_type)
    }

    fn bytes(&self, i: usize) -> Result<Cow<'_, [u8]>, PipelineError> {
        Ok(Cow::Borrowed(self.tensor_data(&self.tensors()[i])))
    }

    fn release(&self, i: usize) {
        GgufFile::release(self, &self.tensors()[i]);
    }

    fn prefetch_range(&self, i: usize, range: Range<usize>) {
        GgufFile::prefetch_range(self, &self.tensors()[i], range.start as u64..range.end as u64);
    }

    fn release_range(&self, i: usize, range: Range<usize>) {
        GgufFile::release_range(self, &self.tensors()[i], range.start as u64..range.end as u64);
    }
}

impl ModelSource for ConvertedModel {
    fn path(&self) -> &Path {
        self.dir()
    }

    fn input_paths(&self) -> Vec<&Path> {
        ConvertedModel::input_paths(self)
    }

    fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    fn len(&self) -> usize {
        self.tensors.len()
    }

    fn tensor(&self, i: usize) -> (&str, &[u64], GgmlType) {
        let t = &self.tensors[i];
        (&t.name, &t.ne, t.ggml_type)
    }

    fn bytes(&self, i: usize) -> Result<Cow<'_, [u8]>, PipelineError> {
        Ok(Cow::Owned(self.tensor_bytes(i).map_err(|e| PipelineError::Convert(Box::new(e)))?))
    }
}
