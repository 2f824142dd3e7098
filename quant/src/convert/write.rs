//! Streaming a [`ConvertedModel`] to GGUF: one tensor in memory at a time (its f32 values and its encoded
//! bytes), rows encoded in parallel (results do not depend on the thread count: rows are independent), the
//! file written through `GgufWriter`'s atomic temporary and renamed into place only when complete.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use quantforge_formats::check_not_input;
use quantforge_formats::gguf::{GgufWriter, TensorSpec};
use rayon::prelude::*;

use super::{ConvertError, ConvertedModel};
use crate::codecs::quantize_rows;
use crate::progress::Progress;
use crate::GgmlType;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Encode `values` (rows of `ne0`) as `ty`.
pub(crate) fn encode(name: &str, ty: GgmlType, values: &[f32], ne0: usize) -> Result<Vec<u8>, ConvertError> {
    let codec = |source| ConvertError::Codec { tensor: name.to_string(), source };
    let row_bytes =
        ty.row_size(ne0 as u64).ok_or_else(|| codec(crate::QuantError::Unsupported { ty, op: "row size" }))? as usize;
    let n_rows = values.len() / ne0.max(1);
    let mut out = vec![0u8; n_rows * row_bytes];
    out.par_chunks_mut(ROWS_PER_TASK * row_bytes)
        .zip(values.par_chunks(ROWS_PER_TASK * ne0))
        .try_for_each(|(dst, src)| quantize_rows(ty, src, ne0, None, dst))
        .map_err(codec)?;
    Ok(out)
}

impl ConvertedModel {
    /// The bytes tensor `index` gets in the converted GGUF (its values encoded as its `ggml_type`).
    pub fn tensor_bytes(&self, index: usize) -> Result<Vec<u8>, ConvertError> {
        let t = &self.tensors[index];
        let values = self.tensor_f32(index)?;
        encode(&t.name, t.ggml_type, &values, t.ne[0] as usize)
    }

    /// The files the model is read from (its safetensors shards).
    pub fn input_paths(&self) -> Vec<&Path> {
        self.model.shards().iter().map(|s| s.path()).collect()
    }

    /// Write the GGUF to `out`. `cancel`, when set by another thread, stops the run between tensors with
    /// [`ConvertError::Interrupted`] and no output. Returns the number of bytes written.
    pub fn write_gguf(
        &self,
        out: &Path,
        progress: &dyn Progress,
        cancel: Option<&AtomicBool>,
    ) -> Result<u64, ConvertError> {
        check_not_input(out, &self.input_paths())?;
        let specs: Vec<TensorSpec> = self
            .tensors
            .iter()
            .map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.ggml_type, ne: t.ne.clone() })
            .collect();
        let total: u64 = specs.iter().filter_map(|s| s.ggml_type.tensor_size(&s.ne)).sum();
        let mut w = GgufWriter::create(out, &self.metadata, specs)?;
        progress.start(self.tensors.len(), total);
        let mut written = 0;
        for (i, t) in self.tensors.iter().enumerate() {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(ConvertError::Interrupted);
            }
            progress.item(i, &t.name, &format!("-> {}", t.ggml_type.name()));
            let values = self.tensor_f32(i)?;
            let bytes = encode(&t.name, t.ggml_type, &values, t.ne[0] as usize)?;
            drop(values);
            w.write_tensor(&t.name, &bytes)?;
            written += bytes.len() as u64;
            progress.item_done(i, bytes.len() as u64);
        }
        w.finish()?;
        progress.finish();
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::OutType;
    use crate::progress::Silent;

    #[test]
    fn cancelled_run_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/stories260K");
        let model = ConvertedModel::open(&src, OutType::F16).unwrap();
        let out = dir.path().join("out.gguf");
        let cancel = AtomicBool::new(true);
        assert!(matches!(model.write_gguf(&out, &Silent, Some(&cancel)), Err(ConvertError::Interrupted)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let bytes = model.write_gguf(&out, &Silent, Some(&AtomicBool::new(false))).unwrap();
        assert!(bytes > 0 && out.is_file());
        // Refuses to overwrite its input.
        let input = src.join("model.safetensors");
        assert!(model.write_gguf(&input, &Silent, None).is_err());
    }
}
