//! Which outputs this process is writing and which it has completed, shared between the writers and an
//! interrupt (Ctrl-C, SIGTERM) or fault handler.
//!
//! Invariant: a temporary is renamed over its destination ([`Registry::commit`]) and an interrupt is taken
//! ([`Registry::interrupt`]) under one lock, so each commit happens wholly before or wholly after the
//! interrupt. Before: the destination is listed as completed and the handler reports it. After: the commit
//! refuses (the temporary is already removed) and the destination is untouched. A handler's report therefore
//! always matches the files on disk.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// What an interrupt found: the outputs completed before it, and the unfinished temporaries it removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterruptReport {
    /// Destinations whose temporary had been renamed into place before the interrupt.
    pub completed: Vec<PathBuf>,
    /// Unfinished temporaries removed by the interrupt.
    pub removed: Vec<PathBuf>,
}

impl InterruptReport {
    /// One line for the user: what the interrupted run left on disk.
    pub fn message(&self) -> String {
        if self.completed.is_empty() {
            return "interrupted; no output was written".into();
        }
        let done = format!("interrupted after {} was completed", path_list(&self.completed));
        if self.removed.is_empty() {
            done
        } else {
            format!("{done}; unfinished outputs were removed")
        }
    }
}

/// The paths as a list for a message: all of them up to three, else the first three and a count.
pub fn path_list(paths: &[PathBuf]) -> String {
    const SHOWN: usize = 3;
    let mut text: Vec<String> = paths.iter().take(SHOWN).map(|p| p.display().to_string()).collect();
    if paths.len() > SHOWN {
        text.push(format!("and {} more", paths.len() - SHOWN));
    }
    text.join(", ")
}

/// The state behind [`Registry`].
#[derive(Default)]
struct State {
    pending: Vec<PathBuf>,
    completed: Vec<PathBuf>,
    interrupted: bool,
}

/// Temporaries being written, destinations completed, and whether the process was interrupted.
pub(crate) struct Registry(Mutex<State>);

/// The process's registry.
pub(crate) static REGISTRY: Registry = Registry::new();

fn remove_path(p: &Path) {
    // `symlink_metadata`: a temporary is never a link, but if one were, remove the link, not its target.
    if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
        let _ = fs::remove_dir_all(p);
    } else {
        let _ = fs::remove_file(p);
    }
}

impl Registry {
    pub(crate) const fn new() -> Registry {
        Registry(Mutex::new(State { pending: Vec::new(), completed: Vec::new(), interrupted: false }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create the temporary `tmp` with `make` and record it, under the lock: an interrupt either comes first
    /// (and `make` does not run) or sees the temporary and removes it.
    pub(crate) fn create<T>(&self, tmp: &Path, make: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let mut s = self.lock();
        if s.interrupted {
            return Err(interrupted());
        }
        let made = make()?;
        s.pending.push(tmp.to_path_buf());
        Ok(made)
    }

    /// Forget a temporary that was removed (an abandoned output).
    pub(crate) fn unregister(&self, tmp: &Path) {
        self.lock().pending.retain(|x| x != tmp);
    }

    /// Run `rename` (which moves `tmp` over `dest`) unless the process was interrupted, and record `dest` as
    /// completed when it succeeds; all under the lock an interrupt takes.
    pub(crate) fn commit(&self, tmp: &Path, dest: &Path, rename: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut s = self.lock();
        if s.interrupted {
            return Err(interrupted());
        }
        rename()?;
        s.pending.retain(|x| x != tmp);
        s.completed.push(dest.to_path_buf());
        Ok(())
    }

    /// Mark the process interrupted, remove every pending temporary below `under`, and report.
    pub(crate) fn interrupt(&self, under: &Path) -> InterruptReport {
        Self::interrupt_locked(&mut self.lock(), under)
    }

    /// [`Registry::interrupt`] for a fault handler, which must not wait for a lock the faulting thread might
    /// hold: `None` when the lock is taken.
    pub(crate) fn try_interrupt(&self) -> Option<InterruptReport> {
        match self.0.try_lock() {
            Ok(mut s) => Some(Self::interrupt_locked(&mut s, Path::new("/"))),
            Err(TryLockError::Poisoned(e)) => Some(Self::interrupt_locked(&mut e.into_inner(), Path::new("/"))),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn interrupt_locked(s: &mut State, under: &Path) -> InterruptReport {
        s.interrupted = true;
        let (take, keep) = s.pending.drain(..).partition(|p: &PathBuf| p.starts_with(under) || !p.is_absolute());
        s.pending = keep;
        for p in &take {
            remove_path(p);
        }
        InterruptReport { completed: s.completed.clone(), removed: take }
    }

    /// Remove the pending temporaries below `dir` without marking the process interrupted (tests).
    #[cfg(test)]
    pub(crate) fn remove_under(&self, dir: &Path) {
        let mut s = self.lock();
        let (take, keep) = s.pending.drain(..).partition(|p: &PathBuf| p.starts_with(dir));
        s.pending = keep;
        for p in take {
            remove_path(&p);
        }
    }
}

fn interrupted() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "interrupted before the output was completed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_before_the_interrupt_is_reported_one_after_it_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        let (tmp_a, a) = (d.path().join(".a.tmp"), d.path().join("a"));
        let (tmp_b, b) = (d.path().join(".b.tmp"), d.path().join("b"));
        r.create(&tmp_a, || fs::write(&tmp_a, b"A")).unwrap();
        r.create(&tmp_b, || fs::write(&tmp_b, b"B")).unwrap();
        r.commit(&tmp_a, &a, || fs::rename(&tmp_a, &a)).unwrap();
        let report = r.interrupt(d.path());
        assert_eq!(report, InterruptReport { completed: vec![a.clone()], removed: vec![tmp_b.clone()] });
        assert_eq!(
            report.message(),
            format!("interrupted after {} was completed; unfinished outputs were removed", a.display())
        );
        assert!(!tmp_b.exists(), "the unfinished temporary is removed");
        // A commit after the interrupt does not run its rename.
        let mut ran = false;
        let e = r.commit(&tmp_b, &b, || {
            ran = true;
            Ok(())
        });
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::Interrupted);
        assert!(!ran && !b.exists());
        let tmp_c = d.path().join(".c.tmp");
        assert!(r.create(&tmp_c, || fs::write(&tmp_c, b"C")).is_err());
        assert!(!tmp_c.exists(), "nothing is created after an interrupt");
        assert_eq!(fs::read(&a).unwrap(), b"A");
    }

    #[test]
    fn an_interrupt_with_nothing_completed_says_so() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::new();
        let tmp = d.path().join(".x.tmp");
        r.create(&tmp, || fs::create_dir(&tmp)).unwrap();
        fs::write(tmp.join("f"), b"1").unwrap();
        let report = r.try_interrupt().unwrap();
        assert_eq!(report.message(), "interrupted; no output was written");
        assert_eq!(report.removed, vec![tmp.clone()]);
        assert!(!tmp.exists());
        let only_done = InterruptReport { completed: vec![PathBuf::from("o.gguf")], removed: vec![] };
        assert_eq!(only_done.message(), "interrupted after o.gguf was completed");
        let many: Vec<PathBuf> = (0..5).map(|i| PathBuf::from(format!("c{i}"))).collect();
        assert_eq!(path_list(&many), "c0, c1, c2, and 2 more");
    }
}
