//! Atomic output files: bytes go to a temporary file beside the destination, which is renamed over the
//! destination only when [`AtomicFile::commit`] is called. Dropping an uncommitted file removes the
//! temporary, so an interrupted run never leaves a half-written output and never touches an existing one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{FormatError, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written; invisible at its destination until committed.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    written: u64,
}

impl AtomicFile {
    /// Start writing `dest` (created or replaced on commit).
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile> {
        let dest = dest.as_ref().to_path_buf();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest
            .file_name()
            .ok_or_else(|| FormatError::Writer { path: dest.clone(), message: "output path has no file name".into() })?
            .to_string_lossy()
            .into_owned();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{file_name}.{}-{n}.tmp", std::process::id()));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
        Ok(AtomicFile { dest, tmp, out: Some(BufWriter::with_capacity(1 << 20, file)), written: 0 })
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
        fs::rename(&self.tmp, &self.dest).map_err(|e| FormatError::io(&self.dest, e))?;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
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

/// Refuse to write `output` when it is the same file as any of `inputs`.
pub fn check_not_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    for input in inputs {
        if same_file(output, input) {
            return Err(FormatError::WouldOverwriteInput { path: output.to_path_buf(), input: input.to_path_buf() });
        }
    }
    Ok(())
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
