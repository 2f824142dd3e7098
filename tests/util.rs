//! A small harness that runs the built binary, so end-to-end tests are one-liners.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of a committed fixture.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel)
}

/// The result of one run of `quantforge`.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Assert success and return stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self.stdout
    }

    /// Assert failure without a panic, and return stderr.
    #[track_caller]
    pub fn fails(self) -> String {
        assert_ne!(self.code, 0, "unexpected success: {}", self.stdout);
        assert!(!self.stderr.contains("panicked"), "panicked: {}", self.stderr);
        self.stderr
    }

    /// Parse stdout as JSON.
    #[track_caller]
    pub fn json(self) -> serde_json::Value {
        serde_json::from_str(&self.ok()).expect("stdout is JSON")
    }
}

/// Run `quantforge` with these arguments.
pub fn qf<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let Output { status, stdout, stderr } =
        Command::new(env!("CARGO_BIN_EXE_quantforge")).args(args).output().expect("run quantforge");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The SmolLM2 Q4_1 GGUF fetched by `scripts/fetch-models.sh` (slow tests only).
pub fn smollm2_q4_1() -> PathBuf {
    let cache = std::env::var_os("QUANTFORGE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/quantforge")))
        .expect("HOME or QUANTFORGE_CACHE");
    let p = cache.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} missing: run scripts/fetch-models.sh first", p.display());
    p
}
