//! Models from the Hugging Face hub: repo ids, the huggingface_hub cache layout, and a small blocking client for
//! the hub's HTTP protocol that verifies every LFS blob by sha256 before it enters the cache, resumes cut
//! downloads and never sends the token to another host.
//!
//! Nothing here prints; progress goes through [`DownloadProgress`].

mod cache;
mod env;
mod error;
mod filter;
mod glob;
mod http;
mod hub;
mod repo;

pub use cache::{Cached, RepoCache};
pub use env::{HubConfig, DEFAULT_ENDPOINT};
pub use error::{HubError, Result};
pub use filter::{is_pickle, Filter, MODEL_FILES, PICKLE_EXTENSIONS};
pub use glob::Glob;
pub use hub::{DownloadProgress, Hub, NoProgress, Snapshot};
pub use repo::{is_commit_hash, RepoRef, DEFAULT_REVISION};
