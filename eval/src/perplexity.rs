//! Perplexity exactly as llama.cpp's `llama-perplexity` defines it (`tools/perplexity/perplexity.cpp`,
//! `perplexity()`, at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//!
//! - the whole text is tokenized once (with BOS when the model adds it), cut into non-overlapping chunks of
//!   `n_ctx` tokens (the tail is dropped), at most `n_chunks` of them, and at least 2 are needed;
//! - the first token of every chunk is replaced (not preceded) by BOS when the model adds BOS;
//! - only the second half is scored: logits at positions `n_ctx/2 .. n_ctx-2` predict the tokens after them,
//!   `n_ctx - 1 - n_ctx/2` tokens per chunk;
//! - per token `nll = -(logit[tok] - max - ln Σ exp(logit - max))` with the sum in `f64`; PPL is
//!   `exp(Σ nll / count)` over all scored tokens (never an average of chunk perplexities), and the ± is
//!   `sqrt((mean(nll²) - mean²) / (count - 1)) * PPL`.

use std::path::Path;
use std::time::Instant;

use quantforge_quant::progress::Progress;
use rayon::prelude::*;
use serde::Serialize;

use crate::chunking::{check_ctx, chunks, nll, scored_rows};
use crate::error::Result;
use crate::logits_file::{BaseChunk, LogitsWriter};
use crate::model::LlamaModel;

/// How to run perplexity.
#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    /// Tokens per chunk (llama.cpp's `-c`, default 512).
    pub n_ctx: usize,
    /// Most chunks to evaluate (`--chunks`); `None` = all.
    pub n_chunks: Option<usize>,
    /// Tokens per forward pass (`-b`, default 2048): `max(1, n_batch / n_ctx)` chunks are evaluated together.
    /// The result does not depend on it.
    pub n_batch: usize,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        PerplexityOptions { n_ctx: 512, n_chunks: None, n_batch: 2048 }
    }
}

/// The result of a perplexity run (serialized with these field names, in this order).
#[derive(Clone, Debug, Serialize)]
pub struct PerplexityReport {
    /// Tokens of the whole text (with BOS if added).
    pub n_tokens: usize,
    /// Chunk size.
    pub n_ctx: usize,
    /// Chunks evaluated.
    pub n_chunks: usize,
    /// Tokens scored.
    pub n_scored: usize,
    /// `exp(mean NLL)`.
    pub ppl: f64,
    /// llama.cpp's ± estimate of `ppl`.
    pub ppl_uncertainty: f64,
    /// Mean NLL per scored token (nats).
    pub mean_nll: f64,
    /// PPL over the chunks so far, after each chunk (llama.cpp's `[1]12.8638,[2]...` line).
    pub running_ppl: Vec<f64>,
    /// Seconds spent in forward passes and scoring (and writing the log-probabilities, when saved).
    pub seconds: f64,
    /// Seconds spent inside the model's forward passes only.
    pub forward_seconds: f64,
}

impl PerplexityReport {
    /// Tokens evaluated (`n_chunks * n_ctx`) per second of [`PerplexityReport::seconds`], as llama.cpp counts
    /// them.
    pub fn tokens_per_second(&self) -> f64 {
        (self.n_chunks * self.n_ctx) as f64 / self.seconds.max(1e-9)
    }
}

/// Run perplexity over `tokens` (the tokenized text, BOS included when the model adds it).
pub fn perplexity(
    model: &LlamaModel,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    progress: &dyn Progress,
) -> Result<PerplexityReport> {
    evaluate(model, tokens, bos, opts, None, progress)
}

/// Perplexity of `base` over `tokens` (the figures of [`perplexity`], unclamped), writing its log-probabilities
/// to `path` in the same pass ([`crate::logits_file`]'s layout) for later KL-divergence runs against the file or
/// `llama-perplexity --kl-divergence`.
pub fn save_base_logits(
    base: &LlamaModel,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    path: &Path,
    progress: &dyn Progress,
) -> Result<PerplexityReport> {
    evaluate(base, tokens, bos, opts, Some(path), progress)
}

/// [`perplexity`], also writing the model's log-probabilities to `save` when given.
fn evaluate(
    model: &LlamaModel,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    save: Option<&Path>,
    progress: &dyn Progress,
) -> Result<PerplexityReport> {
    let n_ctx = opts.n_ctx;
    check_ctx(model, n_ctx)?;
    let chunks = chunks(tokens, bos, n_ctx, opts.n_chunks)?;
    let n_vocab = model.config().n_vocab;
    let mut writer = match save {
        Some(path) => Some(LogitsWriter::create(path, n_ctx, n_vocab, &tokens[..chunks.len() * n_ctx])?),
        None => None,
    };
    let (first, per_chunk) = scored_rows(n_ctx);
    let n_seq = (opts.n_batch / n_ctx).max(1);
    progress.start(chunks.len(), 0);
    let start = Instant::now();
    let mut forward_seconds = 0.0;
    let (mut sum, mut sum2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(chunks.len());
    for (g, group) in chunks.chunks(n_seq).enumerate() {
        let i0 = g * n_seq;
        progress.item(i0, &format!("chunks {}-{}", i0 + 1, i0 + group.len()), "");
        let seqs: Vec<&[u32]> = group.iter().map(Vec::as_slice).collect();
        let t = Instant::now();
        let logits = model.forward(&seqs, first)?;
        forward_seconds += t.elapsed().as_secs_f64();
        for (c, chunk) in group.iter().enumerate() {
            let rows = &logits[c * (n_ctx - first) * n_vocab..][..per_chunk * n_vocab];
            let nlls: Vec<f64> = (0..per_chunk)
                .into_par_iter()
                .map(|j| nll(&rows[j * n_vocab..(j + 1) * n_vocab], chunk[first + j + 1]))
                .collect();
            if let Some(w) = writer.as_mut() {
                w.write_chunk(&BaseChunk::from_logits(rows, n_vocab))?;
            }
            for v in nlls {
                sum += v;
                sum2 += v * v;
            }
            count += per_chunk;
            running.push((sum / count as f64).exp());
            progress.item_done(i0 + c, 0);
        }
    }
    if let Some(w) = writer {
        w.finish()?;
    }
    progress.finish();
    let mean = sum / count as f64;
    let ppl = mean.exp();
    let var = sum2 / count as f64 - mean * mean;
    let unc = if count > 1 { (var / (count - 1) as f64).max(0.0).sqrt() * ppl } else { 0.0 };
    Ok(PerplexityReport {
        n_tokens: tokens.len(),
        n_ctx,
        n_chunks: chunks.len(),
        n_scored: count,
        ppl,
        ppl_uncertainty: unc,
        mean_nll: mean,
        running_ppl: running,
        seconds: start.elapsed().as_secs_f64(),
        forward_seconds,
    })
}
