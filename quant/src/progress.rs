//! How long-running library work reports progress. Libraries never print; the binary implements this
//! trait for terminals (progress bars), logs (one line per step) or machines (JSON).

/// Receives progress events; every method has a no-op default.
pub trait Progress: Sync {
    /// Work on `total` items (tensors) of `total_bytes` output bytes starts.
    fn start(&self, _total: usize, _total_bytes: u64) {}
    /// Item `index` (`name`) is about to be processed; `detail` says what happens to it.
    fn item(&self, _index: usize, _name: &str, _detail: &str) {}
    /// Item `index` is done; `bytes` were written for it.
    fn item_done(&self, _index: usize, _bytes: u64) {}
    /// All work is done.
    fn finish(&self) {}
}

/// Progress that goes nowhere.
pub struct Silent;

impl Progress for Silent {}
