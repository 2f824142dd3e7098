//! Command-line options the `eval` subcommands share: how a run goes (pass size, threads, device, progress),
//! the text and its chunks, and the MMLU question selection. Each converts to the library's own settings.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use quantforge_eval::run::MmluSelection;
use quantforge_eval::{Device, PerplexityOptions};

/// Where the forward pass runs its weight matrix products (every `eval` subcommand).
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where the weight matrix products run: cpu (the gemm crate), burn-cpu (burn's pure-Rust CPU backend;
    /// builds with --features burn-cpu) or wgpu (burn's GPU backend; builds with --features burn-wgpu).
    /// Attention and the element-wise operations stay on the CPU.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "burn-cpu", "wgpu"])]
    pub device: String,
}

impl DeviceArgs {
    /// The device asked for, or an error naming the cargo feature a build needs for it.
    pub fn device(&self) -> Result<Device> {
        self.device.parse::<Device>().map_err(|e| anyhow!("--device {}: {e}", self.device))
    }
}

/// How any evaluation runs: pass size, threads, device, progress.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Tokens per forward pass (several chunks or prompts are evaluated together). Results do not depend on it.
    #[arg(long, short = 'b', default_value_t = 2048)]
    pub batch: usize,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl RunArgs {
    /// Size the thread pool and check the device before any work.
    pub fn start(&self) -> Result<Device> {
        crate::report::set_threads(self.threads)?;
        self.device.device()
    }
}

/// Options every evaluation of a text shares.
#[derive(clap::Args)]
pub struct CommonArgs {
    /// The text to evaluate on (UTF-8).
    #[arg(long, short = 'f')]
    pub text: PathBuf,
    /// Tokens per chunk.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many chunks (default: all).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Print every figure as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

impl CommonArgs {
    /// Chunk size, chunk limit and pass size.
    pub fn options(&self) -> PerplexityOptions {
        PerplexityOptions { n_ctx: self.ctx, n_chunks: self.chunks, n_batch: self.run.batch }
    }
}

/// Which MMLU questions to ask, and how.
#[derive(clap::Args, Clone, Debug)]
pub struct SelectArgs {
    /// Comma-separated subjects (file names without `_test.csv`).
    #[arg(long, value_delimiter = ',')]
    pub subjects: Vec<String>,
    /// A named subset: quick10 (10 subjects, 1,041 questions), stem, humanities, social_sciences, other, all.
    #[arg(long)]
    pub subset: Option<String>,
    /// Dev examples before each question (0-5).
    #[arg(long, default_value_t = 5)]
    pub shots: usize,
    /// At most this many questions per subject (the first ones of each test file).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Longest prompt in tokens; examples are dropped from longer ones.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Put each prompt in a chat template: auto (the model's own, recognised), chatml, llama3, llama2.
    /// Without it prompts are plain text, as in the original benchmark.
    #[arg(long)]
    pub chat_template: Option<String>,
}

impl SelectArgs {
    /// The library's selection.
    pub fn selection(&self) -> MmluSelection {
        MmluSelection {
            subjects: self.subjects.clone(),
            subset: self.subset.clone(),
            shots: self.shots,
            limit: self.limit,
            max_tokens: self.max_tokens,
            chat_template: self.chat_template.clone(),
        }
    }
}
