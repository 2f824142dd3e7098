//! Peak resident set of this process (Linux `/proc/self/status` `VmHWM`), shared by the benchmarks of
//! `quantforge-formats` and `quantforge-quant` (included with `#[path]`).

/// The peak resident set so far in MiB (NaN where `/proc` cannot tell).
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Reset the peak to the current resident set: writing 5 to `clear_refs` resets `VmHWM` (Linux >= 4.0).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
