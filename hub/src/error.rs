//! The crate's error type: one variant per refusal, each naming the repo, revision, file or path involved.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// Everything that can go wrong resolving, downloading or caching hub files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// A local file or folder of the cache could not be read or written (disk full lands here).
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The text is not a repo id (`org/name`, optionally `@revision`).
    #[error("'{text}' is not a hub repo id: {reason}")]
    BadRepoId { text: String, reason: &'static str },
    /// A glob of --include/--exclude is malformed.
    #[error("bad glob '{glob}': {reason}")]
    BadGlob { glob: String, reason: &'static str },
    /// The repo does not exist, or is private and no token (or a token without access) was sent.
    #[error("repo {repo} not found on {endpoint} (if it is private, {token_hint})")]
    RepoNotFound { repo: String, endpoint: String, token_hint: String },
    /// The repo is gated: its licence must be accepted on the hub and a token sent.
    #[error("repo {repo} is gated or private: access needs a token ({token_hint})")]
    Unauthorized { repo: String, token_hint: String },
    /// The revision (branch, tag or commit) does not exist in the repo.
    #[error("revision '{revision}' not found in repo {repo}")]
    RevisionNotFound { repo: String, revision: String },
    /// The file does not exist in the repo at this revision.
    #[error("file '{file}' not found in repo {repo} at revision '{revision}'")]
    EntryNotFound { repo: String, revision: String, file: String, commit: Option<String> },
    /// The repo has only pickle weights (`*.bin`, `*.pt`, ...), which are never downloaded.
    #[error("repo {repo} has no safetensors weights, only pickle files ({files}); pickle files can run code when loaded and are never downloaded")]
    PickleOnly { repo: String, files: String },
    /// Nothing in the repo matches the filters.
    #[error("no file of repo {repo} at revision '{revision}' matches the include/exclude filters")]
    NothingToDownload { repo: String, revision: String },
    /// Offline (HF_HUB_OFFLINE) and the cache does not hold what is asked.
    #[error("HF_HUB_OFFLINE is set and the cache {cache} has no {what} of repo {repo} at revision '{revision}'")]
    NotCached { repo: String, revision: String, what: String, cache: PathBuf },
    /// The server answered in a way the protocol does not allow (missing X-Repo-Commit or ETag, bad JSON).
    #[error("{url}: {message}")]
    Protocol { url: String, message: String },
    /// The server answered with an error status that retries did not cure.
    #[error("{url}: HTTP {status}{detail}")]
    Status { url: String, status: u16, detail: String },
    /// The connection failed, timed out or was cut, and retries did not cure it.
    #[error("{url}: {message} (after {attempts} attempts)")]
    Network { url: String, message: String, attempts: u32 },
    /// A downloaded blob's bytes do not hash to the sha256 the hub gave as its etag; nothing was linked.
    #[error("{file} of repo {repo}: sha256 of the downloaded bytes is {actual}, the hub says {expected}; the download was discarded")]
    HashMismatch { repo: String, file: String, expected: String, actual: String },
    /// A downloaded file's length differs from the length the hub announced.
    #[error(
        "{file} of repo {repo}: downloaded {actual} bytes, the hub announced {expected}; the download was discarded"
    )]
    SizeMismatch { repo: String, file: String, expected: u64, actual: u64 },
}

impl HubError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> HubError {
        HubError::Io { path: path.into(), source }
    }
}
