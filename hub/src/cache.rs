//! The huggingface_hub cache layout (`file_download.py`), read and written identically:
//!
//! ```text
//! <cache>/models--org--name/blobs/<etag>                       file contents, named by etag
//!                          /snapshots/<commit>/<path>          relative symlink -> ../../blobs/<etag>
//!                          /refs/<revision>                    the commit the branch or tag pointed to
//!                          /.no_exist/<commit>/<path>          empty: the file is known not to exist
//! <cache>/.locks/models--org--name/<etag>.lock                 held while the blob is being written
//! ```
//!
//! Invariant: a path under `snapshots/` only ever points at a complete, verified blob. Blobs are written as
//! `blobs/<etag>.incomplete` and renamed into place before anything links to them.

use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{HubError, Result};
use crate::repo::{is_commit_hash, RepoRef};

/// One repo's folder in the cache.
#[derive(Clone, Debug)]
pub struct RepoCache {
    cache_dir: PathBuf,
    folder: String,
    dir: PathBuf,
}

/// What the cache knows about one file at one revision.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached {
    /// The snapshot path, which exists.
    Found(PathBuf),
    /// A `.no_exist` marker says the file is not in the repo.
    Missing,
    /// Not known.
    Unknown,
}

impl RepoCache {
    /// The folder of `repo` under `cache_dir` (nothing is created).
    pub fn new(cache_dir: &Path, repo: &RepoRef) -> RepoCache {
        let folder = repo.folder_name();
        RepoCache { cache_dir: cache_dir.to_path_buf(), dir: cache_dir.join(&folder), folder }
    }

    /// `<cache>/models--org--name`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `blobs/<etag>`.
    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    /// `snapshots/<commit>`.
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// `snapshots/<commit>/<file>`; `file` must be a relative path without `..`.
    pub fn pointer_path(&self, commit: &str, file: &str) -> Result<PathBuf> {
        check_rel_path(file)?;
        Ok(self.snapshot_dir(commit).join(file))
    }

    /// The commit `refs/<revision>` holds, if any.
    pub fn read_ref(&self, revision: &str) -> Result<Option<String>> {
        let path = self.dir.join("refs").join(revision);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => Ok(None),
            Err(e) => Err(HubError::io(path, e)),
        }
    }

    /// Record that `revision` points at `commit` (nothing to record when the revision is the commit).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit || self.read_ref(revision)?.as_deref() == Some(commit) {
            return Ok(());
        }
        check_rel_path(revision)?;
        let path = self.dir.join("refs").join(revision);
        write_atomic(&path, commit.as_bytes())
    }

    /// The commit a revision stands for, from the cache alone (as `try_to_load_from_cache`): a commit hash with a
    /// snapshot folder is itself, a branch or tag is what `refs/` says.
    pub fn commit_for(&self, revision: &str) -> Result<Option<String>> {
        if is_commit_hash(revision) && self.snapshot_dir(revision).is_dir() {
            return Ok(Some(revision.to_string()));
        }
        self.read_ref(revision)
    }

    /// What the cache knows of `file` at `revision`.
    pub fn lookup(&self, revision: &str, file: &str) -> Result<Cached> {
        let Some(commit) = self.commit_for(revision)? else { return Ok(Cached::Unknown) };
        let pointer = self.pointer_path(&commit, file)?;
        if pointer.is_file() {
            return Ok(Cached::Found(pointer));
        }
        if self.dir.join(".no_exist").join(&commit).join(file).exists() {
            return Ok(Cached::Missing);
        }
        Ok(Cached::Unknown)
    }

    /// Record that `file` does not exist at `commit`.
    pub fn mark_missing(&self, commit: &str, file: &str) -> Result<()> {
        check_rel_path(file)?;
        let path = self.dir.join(".no_exist").join(commit).join(file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        File::create(&path).map(drop).map_err(|e| HubError::io(path, e))
    }

    /// Point `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink (replacing any old link).
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let pointer = self.pointer_path(commit, file)?;
        let parent = pointer.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&parent).map_err(|e| HubError::io(&parent, e))?;
        let depth = Path::new(file).components().count();
        let mut target = PathBuf::new();
        for _ in 0..depth + 1 {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        let tmp = parent.join(unique_tmp_name("link"));
        let _ = fs::remove_file(&tmp);
        make_link(&target, &self.blob_path(etag), &tmp)?;
        fs::rename(&tmp, &pointer).map_err(|e| HubError::io(&pointer, e))?;
        Ok(pointer)
    }

    /// Hold `.locks/models--org--name/<etag>.lock` exclusively until the returned file is dropped.
    pub fn lock(&self, etag: &str) -> Result<File> {
        let dir = self.cache_dir.join(".locks").join(&self.folder);
        fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        let path = dir.join(format!("{etag}.lock"));
        let file = File::options().create(true).truncate(false).write(true).open(&path);
        let file = file.map_err(|e| HubError::io(&path, e))?;
        file.lock().map_err(|e| HubError::io(&path, e))?;
        Ok(file)
    }
}

/// A repo path or revision must stay inside its folder: relative, no `..`, no empty parts.
fn check_rel_path(p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && !p.contains('\\')
        && !p.split('/').any(str::is_empty)
        && Path::new(p).components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(HubError::Protocol { url: p.to_string(), message: "path escapes the repo folder".into() })
    }
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, at: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, at).map_err(|e| HubError::io(at, e))
}

/// Without symlinks, huggingface_hub copies the blob into the snapshot; so does this.
#[cfg(not(unix))]
fn make_link(_target: &Path, blob: &Path, at: &Path) -> Result<()> {
    fs::copy(blob, at).map(drop).map_err(|e| HubError::io(at, e))
}

/// A name no other process or thread uses at the same time (pid and a per-process counter), so parallel
/// downloads linking into one folder never share a temporary.
fn unique_tmp_name(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(".{}.{}.{kind}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Write a small file through a temporary sibling and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
    let tmp = parent.join(unique_tmp_name("tmp"));
    fs::write(&tmp, bytes).map_err(|e| HubError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| HubError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = RepoRef::parse("org/name").unwrap();
        let c = RepoCache::new(tmp.path(), &repo);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        fs::create_dir_all(c.dir().join("blobs")).unwrap();
        fs::write(c.blob_path("e1"), b"hello").unwrap();
        let p = c.link(commit, "sub/dir/f.json", "e1").unwrap();
        assert_eq!(p, tmp.path().join("models--org--name/snapshots").join(commit).join("sub/dir/f.json"));
        #[cfg(unix)]
        assert_eq!(fs::read_link(&p).unwrap(), Path::new("../../../../blobs/e1"));
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(c.lookup("main", "sub/dir/f.json").unwrap(), Cached::Unknown);
        c.write_ref("main", commit).unwrap();
        assert_eq!(fs::read_to_string(c.dir().join("refs/main")).unwrap(), commit);
        assert_eq!(c.lookup("main", "sub/dir/f.json").unwrap(), Cached::Found(p.clone()));
        assert_eq!(c.lookup(commit, "sub/dir/f.json").unwrap(), Cached::Found(p));
        c.mark_missing(commit, "absent.json").unwrap();
        assert_eq!(c.lookup("main", "absent.json").unwrap(), Cached::Missing);
        assert!(c.link(commit, "../escape", "e1").is_err());
        assert!(c.link(commit, "/abs", "e1").is_err());
        let _held = c.lock("e1").unwrap();
        assert!(tmp.path().join(".locks/models--org--name/e1.lock").is_file());
    }
}
