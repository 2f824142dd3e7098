//! The one place that memory-maps files.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use crate::error::{FormatError, Result};

/// A read-only view of a whole file: memory-mapped, or owned bytes (tests, empty files).
pub(crate) enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    /// Map `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Bytes> {
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
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|e| FormatError::io(path, e))?;
        #[cfg(unix)]
        {
            // Tensors are read front to back; a hint only, so failure does not matter.
            let _ = map.advise(memmap2::Advice::Sequential);
        }
        Ok(Bytes::Mapped(map))
    }
}

impl Bytes {
    /// Ask the kernel to map `[start, start + len)` in one go (faster than faulting page by page when the
    /// caller is about to read all of it). Only a hint.
    pub(crate) fn prefetch(&self, start: usize, len: usize) {
        #[cfg(target_os = "linux")]
        if let Bytes::Mapped(m) = self {
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
        if let Bytes::Mapped(m) = self {
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
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}
