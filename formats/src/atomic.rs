//! Atomic outputs: bytes go to a temporary file (or directory) beside the destination, which is renamed over
//! the destination only when committed. Dropping an uncommitted one removes the temporary, so a failed run
//! never leaves a half-written output and never touches an existing one. Temporaries alive at any moment are
//! registered ([`crate::pending`]), so that an interrupt handler can remove them ([`interrupt`]) and report
//! exactly which outputs were completed before it. Creating an output first removes the temporaries that dead
//! processes left for the same destination ([`crate::temp_name`]), and refuses a destination that exists and is
//! not a regular file ([`crate::output_guard`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{FormatError, Result};
use crate::output_guard::{check_output_kind, resolve};
use crate::pending::{InterruptReport, REGISTRY};
use crate::temp_name;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Remove every temporary output still being written (files and directories), and refuse any later commit.
/// For an interrupt handler that is about to exit the process; safe to call from any thread.
pub fn remove_pending() {
    interrupt();
}

/// Mark the process interrupted: remove every temporary still being written, refuse any later commit, and
/// report the outputs completed before this call. For a Ctrl-C / SIGTERM handler about to exit.
pub fn interrupt() -> InterruptReport {
    REGISTRY.interrupt(Path::new("/"))
}

/// [`interrupt`] for a fault (SIGBUS) handler: it never waits for a lock, and gives `None` when the registry
/// is locked by the interrupted code (the temporaries are then left for the next run's stale cleanup).
pub fn interrupt_from_fault() -> Option<InterruptReport> {
    REGISTRY.try_interrupt()
}

fn parent_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file being written; invisible at its destination until committed.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    written: u64,
    committed: bool,
}

impl AtomicFile {
    /// Start writing `dest` (created or replaced on commit). Refused when `dest` exists and is not a regular file.
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile> {
        let dest = dest.as_ref().to_path_buf();
        check_output_kind(&dest)?;
        let dir = parent_dir(&dest);
        let name = dest.file_name().ok_or_else(|| FormatError::Writer {
            path: dest.clone(),
            message: "output path has no file name".into(),
        })?;
        temp_name::remove_stale(&dir, name);
        let tmp = temp_name::temp_path(&dir, name, COUNTER.fetch_add(1, Ordering::Relaxed));
        let file = REGISTRY
            .create(&tmp, || OpenOptions::new().write(true).create_new(true).open(&tmp))
            .map_err(|e| FormatError::io(&tmp, e))?;
        Ok(AtomicFile { dest, tmp, out: Some(BufWriter::with_capacity(1 << 20, file)), written: 0, committed: false })
    }

    /// The final destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.written
    }

    /// Append bytes.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| FormatError::Writer { path: self.dest.clone(), message: "write after commit".into() })?;
        out.write_all(buf).map_err(|e| FormatError::io(&self.tmp, e))?;
        self.written += buf.len() as u64;
        Ok(())
    }

    /// Append `n` zero bytes.
    pub fn write_zeros(&mut self, n: u64) -> Result<()> {
        const ZEROS: [u8; 256] = [0; 256];
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..k])?;
            left -= k as u64;
        }
        Ok(())
    }

    /// Flush, sync and rename the temporary over the destination.
    pub fn commit(mut self) -> Result<()> {
        let out = self
            .out
            .take()
            .ok_or_else(|| FormatError::Writer { path: self.dest.clone(), message: "committed twice".into() })?;
        let file = out.into_inner().map_err(|e| FormatError::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| FormatError::io(&self.tmp, e))?;
        drop(file);
        let (tmp, dest) = (&self.tmp, &self.dest);
        // On error the drop removes the temporary (still registered).
        REGISTRY.commit(tmp, dest, || fs::rename(tmp, dest)).map_err(|e| FormatError::io(dest, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
            REGISTRY.unregister(&self.tmp);
        }
    }
}

/// An output directory being written: files go into a temporary directory beside the destination, renamed
/// into place by [`AtomicDir::commit`]. The destination must not exist or be an empty directory.
pub struct AtomicDir {
    dest: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl AtomicDir {
    /// Start writing `dest`, refusing when it is one of `inputs`, lies inside one or contains one, or is a
    /// non-empty directory.
    pub fn create(dest: &Path, inputs: &[&Path]) -> Result<AtomicDir> {
        let parent = parent_dir(dest);
        let name = dest.file_name().ok_or_else(|| FormatError::Writer {
            path: dest.into(),
            message: "output path has no directory name".into(),
        })?;
        let resolved = resolve(dest);
        for input in inputs {
            let input_c = resolve(input);
            if resolved.starts_with(&input_c) || input_c.starts_with(&resolved) {
                return Err(FormatError::WouldOverwriteInput { path: dest.into(), input: input.to_path_buf() });
            }
        }
        if dest.exists() {
            let empty = dest.is_dir() && fs::read_dir(dest).map_err(|e| FormatError::io(dest, e))?.next().is_none();
            if !empty {
                return Err(FormatError::OutputExists { path: dest.into() });
            }
        }
        fs::create_dir_all(&parent).map_err(|e| FormatError::io(&parent, e))?;
        temp_name::remove_stale(&parent, name);
        let tmp = temp_name::temp_path(&parent, name, COUNTER.fetch_add(1, Ordering::Relaxed));
        REGISTRY.create(&tmp, || fs::create_dir(&tmp)).map_err(|e| FormatError::io(&tmp, e))?;
        Ok(AtomicDir { dest: dest.into(), tmp, committed: false })
    }

    /// The temporary directory to write into.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The final destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Move the finished directory into place.
    pub fn commit(mut self) -> Result<()> {
        let (tmp, dest) = (&self.tmp, &self.dest);
        REGISTRY
            .commit(tmp, dest, || {
                if dest.is_dir() {
                    // Checked empty at creation; remove_dir fails (rather than deleting) if something appeared.
                    fs::remove_dir(dest)?;
                }
                fs::rename(tmp, dest)
            })
            .map_err(|e| FormatError::io(dest, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
            REGISTRY.unregister(&self.tmp);
        }
    }
}

/// Whether `a` and `b` name the same existing file (so an output would overwrite an input).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Refuse to write `output` when it resolves to one of `inputs` or to a file read from an input directory
/// (see [`crate::output_guard`]); through symbolic links and `..` too, and before `output` exists.
pub fn check_not_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    crate::output_guard::check_not_read(output, inputs)
}

impl io::Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        AtomicFile::write_all(self, buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_dir_refuses_inputs_and_non_empty_dirs_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("base");
        fs::create_dir(&input).unwrap();
        fs::write(input.join("config.json"), "{}").unwrap();
        assert!(matches!(AtomicDir::create(&input, &[&input]), Err(FormatError::WouldOverwriteInput { .. })));
        assert!(matches!(
            AtomicDir::create(&input.join("sub"), &[&input]),
            Err(FormatError::WouldOverwriteInput { .. })
        ));
        assert!(matches!(AtomicDir::create(&input, &[]), Err(FormatError::OutputExists { .. })));
        let out = d.path().join("out");
        {
            let o = AtomicDir::create(&out, &[&input]).unwrap();
            fs::write(o.tmp().join("x"), "1").unwrap();
        }
        assert!(!out.exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "temporary directory left behind");
        fs::create_dir(&out).unwrap();
        let o = AtomicDir::create(&out, &[&input]).unwrap();
        fs::write(o.tmp().join("x"), "1").unwrap();
        o.commit().unwrap();
        assert_eq!(fs::read_to_string(out.join("x")).unwrap(), "1");
    }

    #[test]
    fn pending_temporaries_are_removed_on_request() {
        let d = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(d.path().join("a.gguf")).unwrap();
        f.write_all(b"partial").unwrap();
        let dir = AtomicDir::create(&d.path().join("outdir"), &[]).unwrap();
        fs::write(dir.tmp().join("x"), "1").unwrap();
        // Only this test's temporaries: other tests run concurrently in this process.
        REGISTRY.remove_under(d.path());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
        drop((f, dir));
    }

    #[test]
    fn uncommitted_file_leaves_no_trace_and_keeps_old_output() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        fs::write(&dest, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"new data").unwrap();
        }
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"new").unwrap();
        f.write_zeros(300).unwrap();
        f.commit().unwrap();
        let got = fs::read(&dest).unwrap();
        assert_eq!(got.len(), 303);
        assert_eq!(&got[..3], b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_to_overwrite_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.gguf");
        fs::write(&p, b"x").unwrap();
        let alias = dir.path().join(".").join("in.gguf");
        assert!(matches!(check_not_input(&alias, &[&p]), Err(FormatError::WouldOverwriteInput { .. })));
        assert!(check_not_input(&dir.path().join("other"), &[&p]).is_ok());
    }
}
