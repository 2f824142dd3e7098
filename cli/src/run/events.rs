//! What a run tells its user: one line per step with its timing on stderr, or with `--json` one JSON event per
//! line on stdout. Library progress (bars) only on a terminal.
//!
//! Invariant: nothing here goes into an artifact, the manifest or the card; timings live only in these lines.

use std::io::IsTerminal;

use serde_json::json;

use super::plan::Context;
use crate::progress::Reporter;
use crate::report;

/// How steps are reported.
pub struct Events {
    pub json: bool,
    pub quiet: bool,
}

impl Events {
    /// A bar for the work inside a step, on a terminal only (a log gets one line per step instead).
    pub fn reporter(&self) -> Reporter {
        Reporter::new(self.json || self.quiet || !std::io::stderr().is_terminal())
    }

    /// Step `i` finished: `done`, or `unchanged` when its key matched a finished one.
    pub fn step(&self, ctx: &Context, i: usize, status: &str, seconds: f64) {
        let u = &ctx.units[i];
        if self.json {
            let e = json!({"event": "step", "unit": i, "name": u.name, "key": u.key, "status": status,
                           "seconds": seconds});
            let _ = report::emit(&(e.to_string() + "\n"));
        } else if !self.quiet {
            let n = ctx.units.len();
            let w = n.to_string().len();
            match status {
                "unchanged" => eprintln!("[{:>w$}/{n}] {}: unchanged, kept", i + 1, u.name),
                _ => eprintln!("[{:>w$}/{n}] {}: {status} in {seconds:.2} s", i + 1, u.name),
            }
        }
    }

    /// Any other event (a gate, the end of the run) as a JSON line, with a text line otherwise.
    pub fn note(&self, value: serde_json::Value, text: &str) {
        if self.json {
            let _ = report::emit(&(value.to_string() + "\n"));
        } else if !self.quiet {
            eprintln!("{text}");
        }
    }
}
