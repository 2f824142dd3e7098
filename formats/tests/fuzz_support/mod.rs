//! The fuzzing harness shared by every `fuzz_*` test binary (formats, quant, eval): proptest-driven byte
//! mutation of committed seed inputs (`fixtures/fuzz/<target>/`), a counting global allocator, and a runner
//! that fails a case on a panic or on an allocation beyond [`CASE_CAP`].
//!
//! Invariants checked for every input, seeds first (they include the regressions found so far), then
//! mutations of them:
//! - the target returns (an `Ok` or an error); a panic fails the case, which proptest then shrinks;
//! - no single allocation, and no growth of the live heap during the case, exceeds [`CASE_CAP`];
//! - an allocation above [`HARD_CAP`] is refused on the spot (the process aborts after printing the input in
//!   hex), so a missing bound can never exhaust the machine.
//!
//! Cases per target: the target's default, or `QF_FUZZ_CASES`; the mutation stream is fixed (deterministic
//! in CI) unless `QF_FUZZ_SEED` gives another. See the README's Fuzzing section.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// A case fails when one allocation, or the growth of the live heap, exceeds this.
pub const CASE_CAP: usize = 256 << 20;
/// Allocations above this are refused outright (the process aborts with the input printed).
pub const HARD_CAP: usize = 1 << 30;

/// The counting allocator each fuzz binary installs as its `#[global_allocator]`.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// The input of the running case, for the message printed when an allocation is refused.
static INPUT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);

fn note_alloc(size: usize) -> bool {
    if size > HARD_CAP {
        refuse(size);
        return false;
    }
    LARGEST.fetch_max(size, Ordering::Relaxed);
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    true
}

/// Print the refused size and the current input without allocating.
fn refuse(size: usize) {
    let mut err = std::io::stderr();
    let mut buf = [0u8; 64];
    let _ = err.write_all(b"\nfuzz: refused an allocation of ");
    let _ = err.write_all(decimal(size, &mut buf));
    let _ = err.write_all(b" bytes; input (hex):\n");
    let ptr = INPUT_PTR.load(Ordering::Relaxed);
    let len = INPUT_LEN.load(Ordering::Relaxed);
    if !ptr.is_null() {
        // SAFETY: the runner stores a pointer to the case's input, which lives until the case returns and
        // clears it; allocations during the case happen while it is alive.
        let input = unsafe { std::slice::from_raw_parts(ptr, len) };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for chunk in input.chunks(32) {
            let mut line = [0u8; 65];
            for (i, b) in chunk.iter().enumerate() {
                line[2 * i] = HEX[usize::from(b >> 4)];
                line[2 * i + 1] = HEX[usize::from(b & 15)];
            }
            line[2 * chunk.len()] = b'\n';
            let _ = err.write_all(&line[..2 * chunk.len() + 1]);
        }
    }
}

fn decimal(mut n: usize, buf: &mut [u8; 64]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

// SAFETY: every method forwards to the system allocator with the caller's layout; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the same layout.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the same layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note_alloc(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` was allocated with `layout`; the caller guarantees `new_size` is valid.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            LIVE.fetch_sub(new_size, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// One edit of an input.
#[derive(Clone, Debug)]
enum Edit {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Overwrite with a boundary integer (little-endian, 1, 2, 4 or 8 bytes).
    Integer(usize, u8, u64),
    /// Copy a chunk elsewhere (repeats structures).
    Copy(usize, usize, usize),
    Truncate(usize),
    /// Replace the n-th run of ASCII digits with a boundary number written out (for JSON inputs).
    Number(usize, &'static str),
}

const INTEGERS: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
    u64::MAX - 31,
];

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "65537",
    "16385",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "99999999999999999999999",
    "1e308",
    "-0.0",
    "3.5",
    "2147483648",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Edit::Set(p, v)),
        2 => (any::<usize>(), 0u8..8).prop_map(|(p, b)| Edit::Flip(p, b)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, v)| Edit::Insert(p, v)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        3 => (any::<usize>(), prop::sample::select(vec![1u8, 2, 4, 8]), prop::sample::select(INTEGERS))
            .prop_map(|(p, w, v)| Edit::Integer(p, w, v)),
        1 => (any::<usize>(), 1usize..64, any::<usize>()).prop_map(|(a, n, b)| Edit::Copy(a, n, b)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        3 => (any::<usize>(), prop::sample::select(NUMBERS)).prop_map(|(n, s)| Edit::Number(n, s)),
    ]
}

/// Edits for JSON inputs: mostly boundary numbers, so most cases stay valid JSON and reach the parser
/// behind the JSON reader; sometimes a byte edit, for the JSON reader itself.
fn json_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        8 => (any::<usize>(), prop::sample::select(NUMBERS)).prop_map(|(n, s)| Edit::Number(n, s)),
        1 => edit(),
    ]
}

fn apply(input: &mut Vec<u8>, e: &Edit) {
    let len = input.len();
    let at = |p: usize| if len == 0 { 0 } else { p % len };
    match e {
        Edit::Set(p, v) if len > 0 => input[at(*p)] = *v,
        Edit::Flip(p, b) if len > 0 => input[at(*p)] ^= 1 << b,
        Edit::Insert(p, v) => {
            let i = if len == 0 { 0 } else { p % (len + 1) };
            input.splice(i..i, v.iter().copied());
        }
        Edit::Delete(p, n) if len > 0 => {
            let i = at(*p);
            input.drain(i..(i + n).min(len));
        }
        Edit::Integer(p, w, v) if len > 0 => {
            let i = at(*p);
            let bytes = v.to_le_bytes();
            let end = (i + usize::from(*w)).min(len);
            input[i..end].copy_from_slice(&bytes[..end - i]);
        }
        Edit::Copy(a, n, b) if len > 0 => {
            let i = at(*a);
            let chunk = input[i..(i + n).min(len)].to_vec();
            let j = at(*b);
            input.splice(j..j, chunk);
        }
        Edit::Truncate(p) => input.truncate(if len == 0 { 0 } else { p % len }),
        Edit::Number(n, s) => {
            let runs = digit_runs(input);
            if !runs.is_empty() {
                let (start, end) = runs[n % runs.len()];
                input.splice(start..end, s.bytes());
            }
        }
        _ => {}
    }
}

fn digit_runs(input: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i].is_ascii_digit() {
            let start = i;
            while i < input.len() && input[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// The committed inputs of `target`, by file name: `fixtures/fuzz/<target>/*`.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fuzz").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// Run `target` on `input` with the checks of the module docs.
fn run_case(target: &dyn Fn(&[u8]), input: &[u8]) -> Result<(), String> {
    INPUT_PTR.store(input.as_ptr() as *mut u8, Ordering::Relaxed);
    INPUT_LEN.store(input.len(), Ordering::Relaxed);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    let result = catch_unwind(AssertUnwindSafe(|| target(input)));
    INPUT_PTR.store(std::ptr::null_mut(), Ordering::Relaxed);
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let largest = LARGEST.load(Ordering::Relaxed);
    if result.is_err() {
        return Err("panicked".into());
    }
    if largest > CASE_CAP || grew > CASE_CAP {
        return Err(format!("allocated too much: largest {largest} bytes, live heap grew by {grew} bytes"));
    }
    Ok(())
}

/// Run `f` alone (no fuzz case at the same time) and return its result with the largest growth of the live
/// heap while it ran.
pub fn heap_growth<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// Summary of one target's run.
#[derive(Debug)]
pub struct FuzzReport {
    pub executions: u64,
    pub seconds: f64,
}

/// Tests of one binary run one at a time, so the allocator's counters belong to one case.
static SERIAL: Mutex<()> = Mutex::new(());

/// Run `target` on every committed input of the `corpora` (`fixtures/fuzz/<corpus>/`), then on
/// `default_cases` (or `QF_FUZZ_CASES`) mutations of them. Panics (failing the test) with the shrunk input on
/// the first case that panics or over-allocates.
pub fn fuzz(name: &str, corpora: &[&str], default_cases: u32, target: impl Fn(&[u8])) -> FuzzReport {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let seeds: Vec<(PathBuf, Vec<u8>)> = corpora.iter().flat_map(|c| corpus(c)).collect();
    assert!(!seeds.is_empty(), "no seed inputs for fuzz target {name}");
    let mut executions = 0u64;
    for (path, bytes) in &seeds {
        if let Err(e) = run_case(&target, bytes) {
            panic!("fuzz {name}: seed {} {e}", path.display());
        }
        executions += 1;
    }
    let cases = std::env::var("QF_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    let seed: u64 = std::env::var("QF_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_f022);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 2000, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let inputs: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    let json = inputs.iter().all(|b| serde_json::from_slice::<serde_json::Value>(b).is_ok());
    let edits = if json { json_edit().boxed() } else { edit().boxed() };
    let strategy = (0..inputs.len(), prop::collection::vec(edits, 1..10));
    let count = std::cell::Cell::new(0u64);
    let result = runner.run(&strategy, |(which, edits)| {
        let mut input = inputs[which].clone();
        for e in &edits {
            apply(&mut input, e);
        }
        count.set(count.get() + 1);
        run_case(&target, &input).map_err(|e| TestCaseError::fail(format!("{e}; input (hex): {}", hex(&input))))
    });
    executions += count.get();
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
    let report = FuzzReport { executions, seconds: t0.elapsed().as_secs_f64() };
    println!(
        "fuzz {name}: {} executions in {:.1} s, none panicked or allocated over {} MiB",
        report.executions,
        report.seconds,
        CASE_CAP >> 20
    );
    report
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_allocation_and_panics_fail_a_case() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let big = |_: &[u8]| drop(std::hint::black_box(vec![1u8; CASE_CAP + 1]));
        assert!(run_case(&big, b"x").unwrap_err().contains("allocated too much"));
        let grows = |_: &[u8]| {
            let v: Vec<Vec<u8>> = (0..5).map(|_| vec![1u8; CASE_CAP / 4]).collect();
            drop(std::hint::black_box(v));
        };
        assert!(run_case(&grows, b"x").unwrap_err().contains("live heap grew"));
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let panicked = run_case(&|_: &[u8]| panic!("boom"), b"x");
        std::panic::set_hook(hook);
        assert!(panicked.unwrap_err().contains("panicked"));
        assert!(run_case(&|b: &[u8]| drop(std::hint::black_box(b.to_vec())), b"x").is_ok());
    }

    #[test]
    fn edits_stay_in_bounds() {
        let mut v = b"{\"a\": 12, \"b\": [3]}".to_vec();
        apply(&mut v, &Edit::Number(1, "4294967296"));
        assert_eq!(v, b"{\"a\": 12, \"b\": [4294967296]}");
        let mut e = Vec::new();
        for edit in [Edit::Set(5, 1), Edit::Delete(3, 9), Edit::Copy(1, 2, 3), Edit::Truncate(7)] {
            apply(&mut e, &edit);
        }
        assert!(e.is_empty());
    }
}
