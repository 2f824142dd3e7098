//! Files and snapshots of hub repos in the cache, as `hf_hub_download` and `snapshot_download` give them, with
//! what they lack: every LFS blob is checked against its sha256 before it enters `blobs/`, partial downloads
//! resume, several files download at once.
//!
//! Invariant: with `offline` set no request is sent at all; everything is answered from the cache.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::cache::{Cached, RepoCache};
use crate::env::HubConfig;
use crate::error::{HubError, Result};
use crate::filter::{is_pickle, Filter};
use crate::http::{Client, Ctx, FileMeta};
use crate::repo::{is_commit_hash, RepoRef};

/// Hears how downloads go; called from several threads at once.
pub trait DownloadProgress: Sync {
    /// A file is about to be fetched (`size` when announced).
    fn start(&self, _file: &str, _size: Option<u64>) {}
    /// `pos` bytes of the file are on disk.
    fn position(&self, _file: &str, _pos: u64) {}
    /// The file is in the snapshot; `downloaded` is false when the cache already had it.
    fn done(&self, _file: &str, _downloaded: bool) {}
}

/// No progress output.
pub struct NoProgress;
impl DownloadProgress for NoProgress {}

/// A snapshot folder and what it holds.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// `snapshots/<commit>`.
    pub dir: PathBuf,
    /// The commit.
    pub commit: String,
    /// The repo paths taken.
    pub files: Vec<String>,
}

/// The hub and its cache.
pub struct Hub {
    cfg: HubConfig,
    client: Client,
}

impl Hub {
    /// A hub as `cfg` describes it.
    pub fn new(cfg: HubConfig) -> Hub {
        let client = Client::new(&cfg);
        Hub { cfg, client }
    }

    /// The settings in use.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.client.requests()
    }

    /// One file of `repo` at its revision, from the cache or downloaded into it: the snapshot path.
    pub fn file(&self, repo: &RepoRef, file: &str, progress: &dyn DownloadProgress) -> Result<PathBuf> {
        let cache = RepoCache::new(&self.cfg.cache_dir, repo);
        let cached = cache.lookup(&repo.revision, file)?;
        let missing = || HubError::EntryNotFound {
            repo: repo.id.clone(),
            revision: repo.revision.clone(),
            file: file.into(),
            commit: None,
        };
        if self.cfg.offline || is_commit_hash(&repo.revision) {
            match cached {
                Cached::Found(p) => return Ok(p),
                Cached::Missing => return Err(missing()),
                Cached::Unknown if self.cfg.offline => return Err(self.not_cached(repo, &format!("file '{file}'"))),
                Cached::Unknown => {}
            }
        }
        let meta = match self.client.file_meta(repo, &repo.revision, file) {
            Ok(m) => m,
            Err(HubError::EntryNotFound { commit: Some(commit), .. }) => {
                cache.mark_missing(&commit, file)?;
                cache.write_ref(&repo.revision, &commit)?;
                return Err(missing());
            }
            // As huggingface_hub: the hub cannot be reached, but the cache has the file.
            Err(e @ HubError::Network { .. }) => match cached {
                Cached::Found(p) => return Ok(p),
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        };
        cache.write_ref(&repo.revision, &meta.commit)?;
        self.fetch(repo, &cache, file, &meta, progress)
    }

    /// The files `filter` takes of `repo` at its revision, downloaded into one snapshot folder.
    pub fn snapshot(&self, repo: &RepoRef, filter: &Filter, progress: &dyn DownloadProgress) -> Result<Snapshot> {
        let cache = RepoCache::new(&self.cfg.cache_dir, repo);
        if let Some(snapshot) = self.cached_snapshot(repo, &cache, filter)? {
            return Ok(snapshot);
        }
        let info = self.client.repo_info(repo)?;
        if !is_commit_hash(&info.sha) {
            return Err(HubError::Protocol { url: repo.id.clone(), message: "the commit 'sha' is not a hash".into() });
        }
        cache.write_ref(&repo.revision, &info.sha)?;
        let has_weights = info.files.iter().any(|f| f.ends_with(".safetensors"));
        let pickles: Vec<&str> =
            info.files.iter().map(String::as_str).filter(|f| is_pickle(f) && !f.contains('/')).collect();
        if filter.is_model() && !has_weights && !pickles.is_empty() {
            return Err(HubError::PickleOnly { repo: repo.id.clone(), files: pickles.join(", ") });
        }
        let files: Vec<String> = info.files.iter().filter(|f| filter.keeps(f)).cloned().collect();
        if files.is_empty() {
            return Err(HubError::NothingToDownload { repo: repo.id.clone(), revision: repo.revision.clone() });
        }
        let at_commit = RepoRef { id: repo.id.clone(), revision: info.sha.clone() };
        self.fetch_all(&at_commit, &files, progress)?;
        fs::create_dir_all(cache.snapshot_dir(&info.sha))
            .map_err(|e| HubError::io(cache.snapshot_dir(&info.sha), e))?;
        Ok(Snapshot { dir: cache.snapshot_dir(&info.sha), commit: info.sha, files })
    }

    /// The snapshot from the cache alone: always offline; online only for a commit hash (which cannot move)
    /// whose folder already holds a model (config and safetensors weights), when `filter` is the default.
    fn cached_snapshot(&self, repo: &RepoRef, cache: &RepoCache, filter: &Filter) -> Result<Option<Snapshot>> {
        let immutable = is_commit_hash(&repo.revision) && filter.is_model();
        if !self.cfg.offline && !immutable {
            return Ok(None);
        }
        let commit = cache.commit_for(&repo.revision)?;
        let dir = commit.as_ref().map(|c| cache.snapshot_dir(c)).filter(|d| d.is_dir());
        let (Some(commit), Some(dir)) = (commit, dir) else {
            return if self.cfg.offline { Err(self.not_cached(repo, "snapshot")) } else { Ok(None) };
        };
        let mut files = Vec::new();
        list_files(&dir, "", &mut files)?;
        files.retain(|f| filter.keeps(f));
        let is_model = files.iter().any(|f| f == "config.json" || f == "adapter_config.json")
            && files.iter().any(|f| f.ends_with(".safetensors"));
        if !self.cfg.offline && !is_model {
            return Ok(None);
        }
        Ok(Some(Snapshot { dir, commit, files }))
    }

    /// Download `files` with up to `parallel` at once; the first error wins.
    fn fetch_all(&self, repo: &RepoRef, files: &[String], progress: &dyn DownloadProgress) -> Result<()> {
        let next = AtomicUsize::new(0);
        let first_error: Mutex<Option<HubError>> = Mutex::new(None);
        let workers = self.cfg.parallel.clamp(1, files.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    if let Err(e) = self.file(repo, file, progress) {
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                        next.store(files.len(), Ordering::Relaxed);
                        break;
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Put the blob of `meta` in the cache (verified) and link it into the snapshot.
    fn fetch(
        &self,
        repo: &RepoRef,
        cache: &RepoCache,
        file: &str,
        meta: &FileMeta,
        progress: &dyn DownloadProgress,
    ) -> Result<PathBuf> {
        let pointer = cache.pointer_path(&meta.commit, file)?;
        let blob = cache.blob_path(&meta.etag);
        if pointer.is_file() && blob.is_file() {
            progress.done(file, false);
            return Ok(pointer);
        }
        let mut downloaded = false;
        if !blob.is_file() {
            let _lock = cache.lock(&meta.etag)?;
            if !blob.is_file() {
                let blobs = blob.parent().unwrap_or(cache.dir());
                fs::create_dir_all(blobs).map_err(|e| HubError::io(blobs, e))?;
                let part = incomplete_path(&blob);
                progress.start(file, meta.size);
                let ctx = Ctx { repo, file: Some(file) };
                self.client.download(&meta.location, &part, meta.size, ctx, &|pos| progress.position(file, pos))?;
                verify(repo, file, meta, &part)?;
                fs::rename(&part, &blob).map_err(|e| HubError::io(&blob, e))?;
                downloaded = true;
            }
        }
        let linked = cache.link(&meta.commit, file, &meta.etag)?;
        progress.done(file, downloaded);
        Ok(linked)
    }

    fn not_cached(&self, repo: &RepoRef, what: &str) -> HubError {
        HubError::NotCached {
            repo: repo.id.clone(),
            revision: repo.revision.clone(),
            what: what.into(),
            cache: self.cfg.cache_dir.clone(),
        }
    }
}

/// `blobs/<etag>.incomplete`, where huggingface_hub keeps a partial download.
fn incomplete_path(blob: &Path) -> PathBuf {
    let mut s = blob.as_os_str().to_owned();
    s.push(".incomplete");
    PathBuf::from(s)
}

/// Check a finished download's size, and its sha256 when the etag is one (LFS files). A bad file is removed.
fn verify(repo: &RepoRef, file: &str, meta: &FileMeta, part: &Path) -> Result<()> {
    let len = fs::metadata(part).map_err(|e| HubError::io(part, e))?.len();
    if let Some(expected) = meta.size.filter(|&s| s != len) {
        let _ = fs::remove_file(part);
        return Err(HubError::SizeMismatch { repo: repo.id.clone(), file: file.into(), expected, actual: len });
    }
    let is_sha256 = meta.etag.len() == 64 && meta.etag.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_sha256 {
        return Ok(());
    }
    let mut f = fs::File::open(part).map_err(|e| HubError::io(part, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| HubError::io(part, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if actual != meta.etag.to_ascii_lowercase() {
        let _ = fs::remove_file(part);
        return Err(HubError::HashMismatch {
            repo: repo.id.clone(),
            file: file.into(),
            expected: meta.etag.clone(),
            actual,
        });
    }
    Ok(())
}

/// Every file under `dir`, as repo paths.
fn list_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| HubError::io(dir, e))?;
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let path = e.path();
        if path.is_dir() {
            list_files(&path, &rel, out)?;
        } else if path.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}
