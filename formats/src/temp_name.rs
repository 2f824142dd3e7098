//! Names of temporary outputs, and the removal of those that dead processes left behind.
//!
//! A temporary for the destination `DIR/NAME` is `DIR/.STEM.PID-N.tmp`: PID is the writing process, N a counter
//! within it. STEM is NAME itself when the whole temporary name fits the file-system limit on one name
//! ([`NAME_MAX`] bytes); otherwise a prefix of NAME followed by `~` and a 64-bit hash of the whole NAME, so that
//! any valid output name has a valid temporary name and two long names sharing a prefix still get different
//! stems. Invariant: [`stem`] is the only place that derives a stem, so the writer and the cleaner of stale
//! temporaries ([`remove_stale`]) always agree on which files belong to a destination.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

/// Longest file name (bytes) the common file systems accept (ext4, xfs, btrfs, tmpfs: 255).
pub const NAME_MAX: usize = 255;

/// Room for `.` + `.PID-N.tmp` with a 10-digit pid and a 20-digit counter.
const SUFFIX_ROOM: usize = 1 + 1 + 10 + 1 + 20 + 4;

/// The stem of `name`'s temporaries (see the module documentation).
pub(crate) fn stem(name: &OsStr) -> String {
    let name = name.to_string_lossy();
    if name.len() + SUFFIX_ROOM <= NAME_MAX {
        return name.into_owned();
    }
    // 16 hex digits of hash plus '~'.
    let keep = NAME_MAX - SUFFIX_ROOM - 17;
    let mut cut = keep;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{:016x}", &name[..cut], fnv1a(name.as_bytes()))
}

/// 64-bit FNV-1a: stable across runs and platforms (the stem must not change between two runs).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The temporary path number `n` of this process for a destination whose file name is `name`, in `dir`.
pub(crate) fn temp_path(dir: &Path, name: &OsStr, n: u64) -> PathBuf {
    dir.join(format!(".{}.{}-{n}.tmp", stem(name), std::process::id()))
}

/// The pid in a temporary's file name, when `file` is a temporary of a destination with stem `stem`.
fn owner_pid(file: &str, stem: &str) -> Option<u32> {
    let rest = file.strip_prefix('.')?.strip_prefix(stem)?.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` may be alive. Only a definite "no" (Linux's /proc lists no such process) lets a
/// temporary be removed; where /proc is not there, every process counts as alive.
fn may_be_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Remove the temporaries of the destination named `name` in `dir` whose writing process is dead (a run killed
/// with SIGKILL, or a crash). Temporaries of this process and of live processes are never touched. Returns
/// the paths removed; failures to remove are ignored (the file may be gone already, or not ours to remove).
pub(crate) fn remove_stale(dir: &Path, name: &OsStr) -> Vec<PathBuf> {
    let stem = stem(name);
    let me = std::process::id();
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = owner_pid(&file.to_string_lossy(), &stem) else { continue };
        if pid == me || may_be_alive(pid) {
            continue;
        }
        let path = entry.path();
        // `file_type` does not follow symbolic links: a link named like a temporary is removed, never its target.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let gone = if is_dir { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid that no process has: above Linux's largest possible pid (2^22).
    const DEAD_PID: u32 = 4_194_305;

    #[test]
    fn short_names_keep_their_stem_long_names_fit_the_limit() {
        assert_eq!(stem(OsStr::new("out.gguf")), "out.gguf");
        for len in [200, 210, 218, 219, 243, 250, 255] {
            let name = "é".repeat(len / 2) + &"x".repeat(len % 2);
            assert_eq!(name.len(), len);
            let t = temp_path(Path::new("/d"), OsStr::new(&name), u64::MAX);
            let file = t.file_name().unwrap().to_string_lossy().into_owned();
            assert!(file.len() <= NAME_MAX, "{len}: temporary name is {} bytes", file.len());
            assert!(owner_pid(&file, &stem(OsStr::new(&name))).is_some());
        }
        // Two long names with the same prefix get different stems.
        let a = "a".repeat(250) + "1";
        let b = "a".repeat(250) + "2";
        assert_ne!(stem(OsStr::new(&a)), stem(OsStr::new(&b)));
        // The hash is FNV-1a (reference value of the empty input and of "a").
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn owner_pid_parses_only_temporaries_of_the_stem() {
        assert_eq!(owner_pid(".out.gguf.123-0.tmp", "out.gguf"), Some(123));
        assert_eq!(owner_pid(".out.gguf.123-45.tmp", "out.gguf"), Some(123));
        assert_eq!(owner_pid(".out.gguf.x-0.tmp", "out.gguf"), None);
        assert_eq!(owner_pid(".out.gguf.123.tmp", "out.gguf"), None);
        assert_eq!(owner_pid(".other.gguf.123-0.tmp", "out.gguf"), None);
        assert_eq!(owner_pid("out.gguf.123-0.tmp", "out.gguf"), None);
        assert_eq!(owner_pid(".out.gguf.extra.123-0.tmp", "out.gguf"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stale_temporaries_of_dead_processes_go_live_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let name = OsStr::new("out.gguf");
        let dead = d.path().join(format!(".out.gguf.{DEAD_PID}-0.tmp"));
        let dead_dir = d.path().join(format!(".out.gguf.{DEAD_PID}-1.tmp"));
        // pid 1 is always alive; and this process's own temporaries are never touched.
        let live = d.path().join(".out.gguf.1-0.tmp");
        let own = d.path().join(format!(".out.gguf.{}-7.tmp", std::process::id()));
        let other_target = d.path().join(format!(".other.gguf.{DEAD_PID}-0.tmp"));
        for f in [&dead, &live, &own, &other_target] {
            fs::write(f, b"x").unwrap();
        }
        fs::create_dir(&dead_dir).unwrap();
        fs::write(dead_dir.join("inner"), b"x").unwrap();
        let mut removed = remove_stale(d.path(), name);
        removed.sort();
        assert_eq!(removed, vec![dead.clone(), dead_dir.clone()]);
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(live.exists() && own.exists() && other_target.exists());
    }
}
