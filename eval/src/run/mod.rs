//! Whole evaluations as the command line runs them: check the outputs against the inputs, read the text, load
//! the model(s) onto a device, run, and return one serializable result that names its inputs alongside the
//! figures. Nothing here prints; progress goes through [`Progress`](quantforge_quant::progress::Progress),
//! and the caller sizes the thread pool before calling.
//!
//! Each result serializes to the JSON document of its command (`eval perplexity --json`, ...): the field names
//! and their order are part of the interface.

pub mod imatrix;
pub mod kld;
pub mod mmlu;
pub mod perplexity;

use std::path::Path;

use serde::Serializer;

use crate::device::Device;

pub use imatrix::{imatrix, ImatrixFormat, ImatrixJob, ImatrixRun};
pub use kld::{kld, KldBase, KldJob, KldRun};
pub use mmlu::{mmlu, MmluJob, MmluRun, MmluSelection};
pub use perplexity::{perplexity, PerplexityJob, PerplexityRun};

/// Worker threads of the pool the evaluation runs on.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// A path as text (`Path::display`).
pub(crate) fn display<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&path.display())
}

/// An optional path as text, `null` when absent.
pub(crate) fn display_opt<P: AsRef<Path>, S: Serializer>(path: &Option<P>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.collect_str(&p.as_ref().display()),
        None => s.serialize_none(),
    }
}

/// A device by its name.
pub(crate) fn device_name<S: Serializer>(device: &Device, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(device.name())
}
