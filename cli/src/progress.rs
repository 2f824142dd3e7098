//! Progress for long work: a bar on a terminal, one line per item otherwise, nothing when asked.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use quantforge_quant::progress::Progress;

/// How progress is shown.
pub enum Reporter {
    Bar(ProgressBar),
    Lines(Mutex<usize>),
    Quiet,
}

impl Reporter {
    /// A bar when stderr is a terminal, plain lines when it is not, nothing with `quiet`.
    pub fn new(quiet: bool) -> Reporter {
        if quiet {
            Reporter::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Reporter::Bar(bar)
        } else {
            Reporter::Lines(Mutex::new(0))
        }
    }
}

impl Progress for Reporter {
    fn start(&self, total: usize, _total_bytes: u64) {
        match self {
            Reporter::Bar(b) => b.set_length(total as u64),
            Reporter::Lines(n) => *n.lock().unwrap_or_else(|e| e.into_inner()) = total,
            Reporter::Quiet => {}
        }
    }

    fn item(&self, index: usize, name: &str, detail: &str) {
        match self {
            Reporter::Bar(b) => b.set_message(format!("{name} {detail}")),
            Reporter::Lines(n) => {
                let total = *n.lock().unwrap_or_else(|e| e.into_inner());
                let w = total.to_string().len();
                eprintln!("[{:>w$}/{total}] {name} {detail}", index + 1);
            }
            Reporter::Quiet => {}
        }
    }

    fn item_done(&self, _index: usize, _bytes: u64) {
        if let Reporter::Bar(b) = self {
            b.inc(1);
        }
    }

    fn finish(&self) {
        if let Reporter::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}
