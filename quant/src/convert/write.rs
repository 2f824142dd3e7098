//! Streaming a [`ConvertedModel`] to GGUF through [`crate::stream`]: the model is the source (each tensor's
//! f32 values read from the memory-mapped shards, LoRA-merged and RoPE-permuted), [`CodecSolver`] encodes
//! them to the converter's types, a [`GgufSink`] writes the file atomically.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use quantforge_formats::gguf::TensorSpec;

use super::{ConvertError, ConvertedModel};
use crate::progress::Progress;
use crate::solver::{solve_to_vec, CodecSolver, SolveJob, TensorStats};
use crate::stream::sink::GgufSink;
use crate::stream::{self, RunOptions, Source, StreamError, StreamTensor, TensorData};

/// A [`ConvertedModel`] as a pipeline source: every tensor solved from f32 values to its converter type.
pub struct ConvertSource<'m> {
    model: &'m ConvertedModel,
    tensors: Vec<StreamTensor>,
}

impl<'m> ConvertSource<'m> {
    /// The model's tensors as the pipeline sees them.
    pub fn new(model: &'m ConvertedModel) -> Result<Self, ConvertError> {
        let tensors = model
            .tensors
            .iter()
            .map(|t| {
                let detail = format!("-> {}", t.ggml_type.name());
                StreamTensor::solved(t.name.clone(), t.ne.clone(), t.ggml_type, detail).ok_or_else(|| {
                    let source = crate::QuantError::Unsupported { ty: t.ggml_type, op: "row size" };
                    ConvertError::Codec { tensor: t.name.clone(), source }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ConvertSource { model, tensors })
    }
}

impl Source for ConvertSource<'_> {
    type Error = ConvertError;

    fn tensors(&self) -> &[StreamTensor] {
        &self.tensors
    }

    fn input_paths(&self) -> Vec<&Path> {
        self.model.input_paths()
    }

    fn read<'s>(&'s self, index: usize, values: &mut Vec<f32>) -> Result<TensorData<'s>, ConvertError> {
        *values = self.model.tensor_f32(index)?;
        Ok(TensorData::Values)
    }
}

impl ConvertedModel {
    /// The bytes tensor `index` gets in the converted GGUF (its values encoded as its `ggml_type`).
    pub fn tensor_bytes(&self, index: usize) -> Result<Vec<u8>, ConvertError> {
        let t = &self.tensors[index];
        let values = self.tensor_f32(index)?;
        let job = SolveJob { name: &t.name, ne: &t.ne, ty: t.ggml_type, stats: TensorStats::None };
        solve_to_vec(&CodecSolver, &job, &values)
            .map_err(|e| ConvertError::from(StreamError::Solve { tensor: t.name.clone(), source: e }))
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
        let source = ConvertSource::new(self)?;
        let specs: Vec<TensorSpec> = self
            .tensors
            .iter()
            .map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.ggml_type, ne: t.ne.clone() })
            .collect();
        let sink = GgufSink::single(out, self.metadata.clone(), specs);
        let opts = RunOptions { cancel, ..RunOptions::new(progress) };
        Ok(stream::run(&source, &CodecSolver, sink, opts)?.bytes)
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
