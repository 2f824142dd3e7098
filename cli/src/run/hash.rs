//! sha256 of files and of content keys.
//!
//! Invariant: a key is the sha256 of a JSON value's compact text; values are built with fields in a fixed order
//! (serde_json keeps insertion order here), so the same inputs always give the same key.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::plan::InputFile;

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size and sha256 of a file, read in pieces.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex(&h.finalize())))
}

/// Size, sha256 and (for a directory) the files of an artifact. A directory's size is the sum of its files'
/// sizes and its sha256 is that of `sha256sum`'s lines (`<sha256>  <name>\n`) for its files sorted by name.
pub fn sha256_artifact(path: &Path) -> Result<(u64, String, Option<Vec<InputFile>>)> {
    if !path.is_dir() {
        let (size, sha256) = sha256_file(path)?;
        return Ok((size, sha256, None));
    }
    let mut names: Vec<String> = std::fs::read_dir(path)
        .with_context(|| format!("{}: cannot list", path.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("{}: cannot list", path.display()))?;
    names.sort();
    let (mut files, mut lines, mut total) = (Vec::new(), String::new(), 0u64);
    for name in names {
        let (size, sha256) = sha256_file(&path.join(&name))?;
        lines.push_str(&format!("{sha256}  {name}\n"));
        total += size;
        files.push(InputFile { path: name, size, sha256 });
    }
    Ok((total, sha256_hex(lines.as_bytes()), Some(files)))
}

/// The content key of a JSON description.
pub fn key_of(value: &serde_json::Value) -> String {
    sha256_hex(value.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        // FIPS 180-2 test vector.
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), (3, sha256_hex(b"abc")));
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("b"), b"").unwrap();
        std::fs::write(d.join("a"), b"abc").unwrap();
        let (size, sha, files) = sha256_artifact(&d).unwrap();
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let lines = format!("{}  a\n{empty}  b\n", sha256_hex(b"abc"));
        assert_eq!((size, sha), (3, sha256_hex(lines.as_bytes())));
        assert_eq!(files.unwrap().iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }
}
