//! Human-readable formatting shared by the subcommands, and the one place that writes to stdout.

use std::io::Write;

/// `writeln!` into a `String` (infallible).
#[macro_export]
macro_rules! outln {
    ($o:expr) => { $o.push('\n') };
    ($o:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($o, $($arg)*);
    }};
}

/// Write `text` to stdout; a closed pipe (`quantforge inspect x | head`) is not an error.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A result as the pretty-printed JSON document of its command, with a final newline.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Size rayon's global pool (`--threads`); `None` keeps one worker per core. Outputs never depend on it.
pub fn set_threads(n: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start worker threads: {e}"))?;
    }
    Ok(())
}

/// `1234567` -> `1.23 M`; parameter counts and the like.
pub fn si(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.2} K", n / 1e3)
    } else {
        format!("{n}")
    }
}

pub use quantforge_eval::compare::table::bytes;

/// Shape as `[a, b, c]`.
pub fn shape(dims: &[u64]) -> String {
    let parts: Vec<String> = dims.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(si(135_000_000), "135.00 M");
        assert_eq!(bytes(98_362_432), "93.81 MiB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(shape(&[576, 49152]), "[576, 49152]");
    }
}
