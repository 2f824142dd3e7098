//! Where the pipeline's tensors go: one GGUF file, split GGUF files, or a Hugging Face safetensors directory.
//!
//! Invariant: nothing appears at an output path until [`Sink::finish`] succeeds. Every file is written to a
//! hidden temporary (`AtomicFile`, `AtomicDir`) that is removed when the sink is dropped unfinished; split
//! files and directories are moved into place together, after every tensor was received.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::{GgufValue, GgufWriter, TensorSpec};
use quantforge_formats::safetensors::{SafetensorsWriter, StTensorSpec};
use quantforge_formats::{AtomicDir, AtomicFile, FormatError};

use super::StreamError;

/// Receives the tensors of one run, in order.
pub trait Sink {
    /// The final paths (files or a directory) it will create; checked against the inputs before [`Sink::open`].
    fn outputs(&self) -> Vec<PathBuf>;
    /// Names and byte sizes of the tensors it expects, in order.
    fn expected(&self) -> Vec<(String, u64)>;
    /// Create the temporaries. `inputs` are the files the run reads.
    fn open(&mut self, inputs: &[&Path]) -> Result<(), StreamError>;
    /// The bytes of tensor `index` (the next one).
    fn write(&mut self, index: usize, bytes: &[u8]) -> Result<(), StreamError>;
    /// The next piece of the bytes of tensor `index`: a tensor's pieces come in order, one after the other,
    /// and together are its bytes.
    fn write_piece(&mut self, index: usize, bytes: &[u8]) -> Result<(), StreamError>;
    /// Check every tensor was received, then move the outputs into place.
    fn finish(&mut self) -> Result<(), StreamError>;
}

/// One GGUF file of a [`GgufSink`]: its path, metadata and tensors.
pub struct GgufPart {
    pub path: PathBuf,
    pub metadata: Vec<(String, GgufValue)>,
    pub specs: Vec<TensorSpec>,
}

/// One GGUF file, or several split files (`llama-gguf-split` layout, see [`crate::pipeline::split`]),
/// written one after the other and moved into place together.
pub struct GgufSink {
    parts: Vec<GgufPart>,
    /// Index of the part being written, its writer, and the finished parts not yet committed.
    current: usize,
    writer: Option<GgufWriter>,
    pending: Vec<AtomicFile>,
}

impl GgufSink {
    /// One GGUF file at `path`.
    pub fn single(path: &Path, metadata: Vec<(String, GgufValue)>, specs: Vec<TensorSpec>) -> GgufSink {
        GgufSink::split(vec![GgufPart { path: path.to_path_buf(), metadata, specs }])
    }

    /// Several files, each with its own metadata and tensors, written in order.
    pub fn split(parts: Vec<GgufPart>) -> GgufSink {
        GgufSink { parts, current: 0, writer: None, pending: Vec::new() }
    }

    fn create(&self, part: usize) -> Result<GgufWriter, FormatError> {
        let p = &self.parts[part];
        GgufWriter::create(&p.path, &p.metadata, p.specs.clone())
    }

    /// Move on to the next part when the current one holds all its tensors.
    fn advance(&mut self) -> Result<(), StreamError> {
        while self.writer.as_ref().is_some_and(|w| w.next_tensor().is_none()) && self.current + 1 < self.parts.len() {
            let done = self.writer.take().map(GgufWriter::finish_deferred).transpose()?;
            self.pending.extend(done);
            self.current += 1;
            self.writer = Some(self.create(self.current)?);
        }
        Ok(())
    }
}

impl Sink for GgufSink {
    fn outputs(&self) -> Vec<PathBuf> {
        self.parts.iter().map(|p| p.path.clone()).collect()
    }

    fn expected(&self) -> Vec<(String, u64)> {
        self.parts.iter().flat_map(|p| &p.specs).map(|s| (s.name.clone(), s.n_bytes())).collect()
    }

    fn open(&mut self, _inputs: &[&Path]) -> Result<(), StreamError> {
        if !self.parts.is_empty() {
            self.writer = Some(self.create(0)?);
        }
        Ok(())
    }

    fn write(&mut self, index: usize, bytes: &[u8]) -> Result<(), StreamError> {
        // A tensor of zero elements has no bytes and no padding: its writer passed it as soon as the tensor
        // before it was complete, so there is nothing to write (llama.cpp's writer does the same).
        if bytes.is_empty() && self.parts.iter().flat_map(|p| &p.specs).nth(index).is_some_and(|s| s.n_bytes() == 0) {
            return Ok(());
        }
        self.advance()?;
        let w = self.writer.as_mut().ok_or_else(|| StreamError::SinkMismatch { message: "sink not open".into() })?;
        let name = w.next_tensor().map(|s| s.name.clone()).unwrap_or_default();
        w.write_tensor(&name, bytes)?;
        Ok(())
    }

    fn write_piece(&mut self, index: usize, bytes: &[u8]) -> Result<(), StreamError> {
        self.advance()?;
        let w = self.writer.as_ref().ok_or_else(|| StreamError::SinkMismatch { message: "sink not open".into() })?;
        let expected = self.parts.iter().flat_map(|p| &p.specs).nth(index).map(|s| &s.name);
        let next = w.next_tensor().map(|s| &s.name);
        if next.is_none() || next != expected {
            let message = format!("a piece of tensor {index} arrived while the file expects {next:?}");
            return Err(StreamError::SinkMismatch { message });
        }
        self.writer.as_mut().map(|w| w.write_tensor_data(bytes)).transpose()?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.advance()?;
        if self.current + 1 < self.parts.len() {
            let next = &self.parts[self.current + 1];
            let name = next.specs.first().map(|s| s.name.clone()).unwrap_or_default();
            return Err(StreamError::SinkMismatch { message: format!("finished before tensor '{name}'") });
        }
        let done = self.writer.take().map(GgufWriter::finish_deferred).transpose()?;
        self.pending.extend(done);
        for f in self.pending.drain(..) {
            f.commit()?;
        }
        Ok(())
    }
}

/// One safetensors file of a [`SafetensorsDirSink`].
pub struct Shard {
    /// File name inside the directory.
    pub file_name: String,
    /// The header's `__metadata__`.
    pub metadata: Vec<(String, String)>,
    pub tensors: Vec<StTensorSpec>,
}

/// Writes the other files of the directory (config, tokenizer, ...) into the temporary directory.
pub type SideFiles<'a> = Box<dyn FnOnce(&Path) -> Result<(), FormatError> + 'a>;

/// A Hugging Face directory: safetensors shards written in order, then the side files, all in a temporary
/// directory renamed into place when complete. The destination must not exist, or be empty.
pub struct SafetensorsDirSink<'a> {
    dest: PathBuf,
    shards: Vec<Shard>,
    side_files: Option<SideFiles<'a>>,
    dir: Option<AtomicDir>,
    current: usize,
    writer: Option<SafetensorsWriter>,
    /// Tensors left in the current shard.
    left: usize,
    /// Bytes of the current tensor received so far in pieces.
    piece_bytes: u64,
}

impl<'a> SafetensorsDirSink<'a> {
    pub fn new(dest: &Path, shards: Vec<Shard>, side_files: SideFiles<'a>) -> Self {
        SafetensorsDirSink {
            dest: dest.to_path_buf(),
            shards,
            side_files: Some(side_files),
            dir: None,
            current: 0,
            writer: None,
            left: 0,
            piece_bytes: 0,
        }
    }

    fn tmp(&self) -> Result<&Path, StreamError> {
        self.dir
            .as_ref()
            .map(AtomicDir::tmp)
            .ok_or_else(|| StreamError::SinkMismatch { message: "sink not open".into() })
    }

    /// Close finished shards and open the next ones until one has room (or none is left).
    fn advance(&mut self) -> Result<(), StreamError> {
        while self.left == 0 && self.current < self.shards.len() {
            if let Some(w) = self.writer.take() {
                w.finish()?;
                self.current += 1;
                continue;
            }
            let shard = &self.shards[self.current];
            let path = self.tmp()?.join(&shard.file_name);
            self.writer = Some(SafetensorsWriter::create(path, &shard.metadata, &shard.tensors)?);
            // An empty shard is complete as soon as it is created (the loop closes it).
            self.left = shard.tensors.len();
        }
        Ok(())
    }
}

impl Sink for SafetensorsDirSink<'_> {
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.dest.clone()]
    }

    fn expected(&self) -> Vec<(String, u64)> {
        self.shards.iter().flat_map(|s| &s.tensors).map(|t| (t.name.clone(), st_size(t))).collect()
    }

    fn open(&mut self, inputs: &[&Path]) -> Result<(), StreamError> {
        self.dir = Some(AtomicDir::create(&self.dest, inputs)?);
        Ok(())
    }

    fn write(&mut self, _index: usize, bytes: &[u8]) -> Result<(), StreamError> {
        self.advance()?;
        let w = self.writer.as_mut().ok_or_else(|| StreamError::SinkMismatch {
            message: format!("{} bytes written past the last tensor", bytes.len()),
        })?;
        w.write_tensor_data(bytes)?;
        self.left -= 1;
        Ok(())
    }

    fn write_piece(&mut self, _index: usize, bytes: &[u8]) -> Result<(), StreamError> {
        self.advance()?;
        let size = self.shards.get(self.current).and_then(|s| s.tensors.get(s.tensors.len() - self.left)).map(st_size);
        let (Some(w), Some(size)) = (self.writer.as_mut(), size) else {
            let message = format!("{} bytes written past the last tensor", bytes.len());
            return Err(StreamError::SinkMismatch { message });
        };
        w.write_tensor_data(bytes)?;
        self.piece_bytes += bytes.len() as u64;
        if self.piece_bytes >= size {
            self.piece_bytes = 0;
            self.left -= 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.advance()?;
        if self.current < self.shards.len() {
            return Err(StreamError::SinkMismatch {
                message: format!("finished before shard '{}' was complete", self.shards[self.current].file_name),
            });
        }
        let tmp = self.tmp()?.to_path_buf();
        if let Some(side) = self.side_files.take() {
            side(&tmp)?;
        }
        if let Some(dir) = self.dir.take() {
            dir.commit()?;
        }
        Ok(())
    }
}

/// Bytes of a safetensors tensor.
fn st_size(t: &StTensorSpec) -> u64 {
    t.shape.iter().product::<u64>() * t.dtype.bitsize() as u64 / 8
}
