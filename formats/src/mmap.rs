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

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}
