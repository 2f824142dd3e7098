//! The one place that memory-maps files. Only regular files are mapped (a pipe or device is refused before it
//! is opened, so a FIFO with no writer cannot block), and every live mapping is listed ([`mapped_files`]) so
//! that a fault handler can name the input that was truncated under it.

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, TryLockError};

use crate::error::{FormatError, Result};

/// Paths of the files mapped now (one entry per live mapping).
static MAPPED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The files mapped now, for a fault (SIGBUS) handler: it never waits for the lock, and gets an empty list
/// when another thread holds it.
pub fn mapped_files() -> Vec<PathBuf> {
    match MAPPED.try_lock() {
        Ok(m) => m.clone(),
        Err(TryLockError::Poisoned(e)) => e.into_inner().clone(),
        Err(TryLockError::WouldBlock) => Vec::new(),
    }
}

/// A live mapping of `path`, listed in [`MAPPED`] while it lives.
pub(crate) struct Mapping {
    map: memmap2::Mmap,
    path: PathBuf,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let mut m = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = m.iter().position(|p| p == &self.path) {
            m.swap_remove(i);
        }
    }
}

/// A read-only view of a whole file: memory-mapped, or owned bytes (tests, empty files).
pub(crate) enum Bytes {
    Mapped(Mapping),
    Owned(Vec<u8>),
}

impl Bytes {
    /// Map `path` read-only. Refused, before it is opened, when it is not a regular file.
    pub(crate) fn map(path: &Path) -> Result<Bytes> {
        crate::output_guard::check_input_file(path)?;
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; nothing to map anyway.
            return Ok(Bytes::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and private to this process. Undefined behaviour would need another
        // process to truncate or rewrite the file while it is mapped; quantforge never writes its inputs (all
        // outputs go to a fresh temporary file that is renamed into place), and the mapping's lifetime is tied
        // to the reader that owns it.
        // A file truncated after this point makes a read of the lost pages raise SIGBUS; the binary turns that
        // into an error report naming the file (see `mapped_files`).
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|e| FormatError::io(path, e))?;
        #[cfg(unix)]
        {
            // Tensors are read front to back; a hint only, so failure does not matter.
            let _ = map.advise(memmap2::Advice::Sequential);
        }
        MAPPED.lock().unwrap_or_else(|e| e.into_inner()).push(path.to_path_buf());
        Ok(Bytes::Mapped(Mapping { map, path: path.to_path_buf() }))
    }
}

impl Bytes {
    /// Ask the kernel to map `[start, start + len)` in one go (faster than faulting page by page when the
    /// caller is about to read all of it). Only a hint.
    pub(crate) fn prefetch(&self, start: usize, len: usize) {
        #[cfg(target_os = "linux")]
        if let Bytes::Mapped(Mapping { map: m, .. }) = self {
            if start.checked_add(len).is_some_and(|end| end <= m.len()) && len > 0 {
                let _ = m.advise_range(memmap2::Advice::PopulateRead, start, len);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (start, len);
    }

    /// Tell the kernel the caller is done with `[start, start + len)`: resident pages of the mapping are
    /// dropped so that streaming through a large file keeps the resident set small. Only a hint.
    pub(crate) fn release(&self, start: usize, len: usize) {
        #[cfg(unix)]
        if let Bytes::Mapped(Mapping { map: m, .. }) = self {
            if start.checked_add(len).is_some_and(|end| end <= m.len()) && len > 0 {
                // SAFETY: the mapping is read-only and backed by a file that is not modified while mapped (see
                // `map`). MADV_DONTNEED on such a mapping only discards clean page-cache references; any later
                // access faults the same bytes back in from the file, so slices handed out stay valid and keep
                // their contents.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
            }
        }
        #[cfg(not(unix))]
        let _ = (start, len);
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => &m.map,
            Bytes::Owned(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_listed_while_they_live() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("input.gguf");
        std::fs::write(&p, b"GGUF....").unwrap();
        let b = Bytes::map(&p).unwrap();
        assert_eq!(&b[..4], b"GGUF");
        assert!(MAPPED.lock().unwrap().contains(&p));
        drop(b);
        assert!(!MAPPED.lock().unwrap().contains(&p));
    }

    #[cfg(unix)]
    #[test]
    fn a_pipe_is_refused_before_it_is_opened() {
        // /dev/zero stands for any non-regular input; a FIFO is exercised end to end (opening it would block).
        let e = Bytes::map(Path::new("/dev/zero")).err().unwrap().to_string();
        assert!(e.contains("character device"), "{e}");
    }
}
