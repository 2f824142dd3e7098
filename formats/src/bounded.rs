//! Reading side files (config and tokenizer JSON, evaluation and calibration text, imatrix files, chat
//! templates, `--tensor-type-file`) whole into memory, never more than a cap.
//!
//! Invariant: every side file the tools read whole goes through [`read_capped`] or
//! [`read_to_string_capped`], so no input can make them allocate more than its cap (plus the growth slack of
//! one `Vec`, at most the cap again): a regular file larger than the cap is refused before anything is read,
//! and a stream that never ends (`/dev/zero`, a pipe) is refused as soon as it has delivered one byte more
//! than the cap. The error names the file, what it was read as, and the cap.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{FormatError, Result};

/// Largest JSON side file (config.json, tokenizer.json, adapter_config.json, shard index).
pub const MAX_JSON_BYTES: u64 = 256 * 1024 * 1024;
/// Largest evaluation or calibration text (`--text`, `--calib`).
pub const MAX_TEXT_BYTES: u64 = 256 * 1024 * 1024;
/// Largest `--tensor-type-file`.
pub const MAX_TENSOR_TYPE_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest chat template (`chat_template.jinja`).
pub const MAX_CHAT_TEMPLATE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest SentencePiece `tokenizer.model`.
pub const MAX_TOKENIZER_MODEL_BYTES: u64 = 64 * 1024 * 1024;
/// Largest legacy (`.dat`) importance matrix read whole (a GGUF imatrix is memory-mapped instead).
pub const MAX_IMATRIX_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest model card (`README.md`) read for metadata.
pub const MAX_README_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes read per step from a file whose size is not known in advance.
const CHUNK: usize = 64 * 1024;

/// The whole of `path`, refused with [`FormatError::FileTooLarge`] (naming `what` and `cap`) when it holds
/// more than `cap` bytes.
pub fn read_capped(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    let too_large = || FormatError::FileTooLarge { path: path.into(), what: what.into(), limit: cap };
    let mut file = File::open(path).map_err(|e| FormatError::io(path, e))?;
    let meta = file.metadata().map_err(|e| FormatError::io(path, e))?;
    let mut out = Vec::new();
    if meta.is_file() {
        if meta.len() > cap {
            return Err(too_large());
        }
        // The size is known; the loop below still stops at the cap should the file grow meanwhile.
        out.reserve_exact(meta.len() as usize);
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FormatError::io(path, e)),
        };
        if out.len() as u64 + n as u64 > cap {
            return Err(too_large());
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The whole of `path` as UTF-8 text, capped like [`read_capped`]; invalid UTF-8 is
/// [`FormatError::InvalidUtf8`] naming `what`.
pub fn read_to_string_capped(path: &Path, cap: u64, what: &str) -> Result<String> {
    let bytes = read_capped(path, cap, what)?;
    String::from_utf8(bytes).map_err(|_| FormatError::InvalidUtf8 { path: path.into(), field: what.into() })
}

/// A byte count for messages: `256 MiB`, `16 MiB`, `4 GiB`, `1000 bytes`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_under_the_cap_and_refuses_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "hello").unwrap();
        assert_eq!(read_to_string_capped(&p, 5, "text").unwrap(), "hello");
        let e = read_to_string_capped(&p, 4, "evaluation text").unwrap_err();
        assert!(matches!(e, FormatError::FileTooLarge { limit: 4, .. }));
        let msg = e.to_string();
        assert!(msg.contains("t.txt") && msg.contains("evaluation text") && msg.contains("4 bytes"), "{msg}");
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_to_string_capped(&p, 10, "text"), Err(FormatError::InvalidUtf8 { .. })));
        let e = read_capped(&dir.path().join("missing"), 10, "text").unwrap_err();
        assert!(matches!(e, FormatError::Io { .. }));
    }

    #[test]
    fn an_endless_stream_stops_at_the_cap() {
        let zero = Path::new("/dev/zero");
        if !zero.exists() {
            return;
        }
        let t = std::time::Instant::now();
        let e = read_capped(zero, 1 << 20, "evaluation text").unwrap_err();
        assert!(matches!(e, FormatError::FileTooLarge { limit: 1048576, .. }), "{e}");
        assert!(e.to_string().contains("1 MiB"), "{e}");
        assert!(t.elapsed().as_secs() < 10);
    }

    #[test]
    fn byte_counts_read_naturally() {
        assert_eq!(human_bytes(256 << 20), "256 MiB");
        assert_eq!(human_bytes(4 << 30), "4 GiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
        assert_eq!(human_bytes(3 << 10), "3 KiB");
    }
}
