//! KL divergence of a model against a base model, with the statistics of llama.cpp's
//! `llama-perplexity --kl-divergence` (`tools/perplexity/perplexity.cpp`, `kl_divergence()` and the
//! `log_softmax` overloads, at commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62).
//!
//! Both models run chunk by chunk on the same tokens (the chunks and scored positions of
//! [`crate::perplexity`](mod@crate::perplexity)), so no logits file is needed. The base's log-probabilities go
//! through the same 16-bit quantization llama.cpp applies when it saves them (`scale`, `min_log_prob`, one `u16` per token,
//! clamped 16 nats below the top logit), so the figures are computed from the same numbers llama.cpp reads
//! back: in particular "PPL(base)" here is the clamped one (28.4405, not 28.4849, on SmolLM2).
//!
//! The base's rows can also be saved ([`kl_divergence_save_base`], [`crate::perplexity::save_base_logits`])
//! and read back ([`kl_divergence_from_file`]) in llama.cpp's `--kl-divergence-base` file layout
//! ([`crate::logits_file`]); the in-memory and file runs share the scoring, and give the same figures.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use quantforge_quant::progress::Progress;
use rayon::prelude::*;
use serde::{Deserialize, Serialize, Serializer};

use crate::chunking::{check_chunk_limit, check_ctx, chunks, scored_rows, split_chunks};
use crate::error::{EvalError, Result};
use crate::logits_file::{BaseChunk, BaseRow, LogitsReader, LogitsWriter};
use crate::model::LlamaModel;
use crate::perplexity::PerplexityOptions;

/// Per-token figures of one scored position.
#[derive(Clone, Copy, Debug, Default)]
struct TokenStats {
    nll: f32,
    nll_base: f32,
    kld: f64,
    p_diff: f32,
    same_top: bool,
}

fn score(logits: &[f32], base: BaseRow<'_>, tok: u32) -> TokenStats {
    let mut max = logits[0];
    let mut imax = 0;
    for (i, &l) in logits.iter().enumerate().skip(1) {
        if l > max {
            max = l;
            imax = i;
        }
    }
    let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let t = tok as usize;
    let nll = max + log_sum_exp - logits[t];
    let nll_base = -(base.scale * f32::from(base.q[t]) + base.min_log_prob);
    let max_plus = max + log_sum_exp;
    let mut kld = 0.0f64;
    let mut imax_base = 0;
    let mut best = 0.0f32;
    for (i, (&q, &l)) in base.q.iter().zip(logits).enumerate() {
        let lp = base.scale * f32::from(q) + base.min_log_prob;
        if i == 0 || lp > best {
            best = lp;
            imax_base = i;
        }
        if lp > -16.0 {
            kld += f64::from(lp.exp() * (lp - l + max_plus));
        }
    }
    let p_diff = (-nll).exp() - (-nll_base).exp();
    TokenStats { nll, nll_base, kld, p_diff, same_top: imax == imax_base }
}

/// A mean and llama.cpp's uncertainty of it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub uncertainty: f64,
}

/// The result of a KL-divergence run (serialized with these field names, in this order; percentiles as a
/// `label: value` map, the running figures as `{ppl, kld, same_top}` objects).
#[derive(Clone, Debug, Serialize)]
pub struct KldReport {
    pub n_ctx: usize,
    pub n_chunks: usize,
    pub n_scored: usize,
    /// PPL of the model.
    pub ppl: Estimate,
    /// PPL of the base, from its clamped 16-bit log-probabilities (as llama.cpp).
    pub ppl_base: Estimate,
    /// Correlation of the per-token NLLs.
    pub ln_ppl_correlation: f64,
    /// `ln(PPL / PPL(base))`.
    pub ln_ppl_ratio: Estimate,
    /// Mean KL divergence per token.
    pub kld: Estimate,
    /// KLD percentiles: (label, value) for max, 99.9, 99, 95, 90, median, 10, 5, 1, 0.1, min.
    #[serde(serialize_with = "labelled")]
    pub kld_percentiles: Vec<(String, f64)>,
    /// Mean `p - p_base` of the correct token.
    pub p_diff: Estimate,
    /// Δp percentiles: max, 99.9, 99, 95, 90, 75, median, 25, 10, 5, 1, 0.1, min.
    #[serde(serialize_with = "labelled")]
    pub p_diff_percentiles: Vec<(String, f64)>,
    /// RMS of Δp.
    pub p_diff_rms: Estimate,
    /// Share of tokens whose most likely next token is the same for both models.
    pub same_top: Estimate,
    /// Per chunk: (PPL so far, mean KLD so far, same-top so far).
    #[serde(serialize_with = "running")]
    pub running: Vec<(f64, f64, f64)>,
    /// Seconds of the whole run (both models' forward passes, or reading the base's file, and the scoring).
    pub seconds: f64,
    /// Seconds spent inside the evaluated model's forward passes only (not the base's).
    pub forward_seconds: f64,
}

impl KldReport {
    /// Tokens the evaluated model ran (`n_chunks * n_ctx`) per second of its own forward passes.
    pub fn tokens_per_second(&self) -> f64 {
        (self.n_chunks * self.n_ctx) as f64 / self.forward_seconds.max(1e-9)
    }
}

/// `(label, value)` pairs as one JSON object.
fn labelled<S: Serializer>(pairs: &[(String, f64)], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// The running figures as `{ppl, kld, same_top}` objects.
fn running<S: Serializer>(rows: &[(f64, f64, f64)], s: S) -> std::result::Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Running {
        ppl: f64,
        kld: f64,
        same_top: f64,
    }
    s.collect_seq(rows.iter().map(|&(ppl, kld, same_top)| Running { ppl, kld, same_top }))
}

/// `(mean, uncertainty)` as llama.cpp's `mean_and_uncertainty`.
fn mean_unc(sum: f64, sum2: f64, n: usize) -> Estimate {
    let f = sum / n as f64;
    let unc = if n > 10 { ((sum2 / n as f64 - f * f) / (n - 1) as f64).max(0.0).sqrt() } else { 0.0 };
    Estimate { value: f, uncertainty: unc }
}

/// Linear interpolation at `f * (n - 1)` of sorted values.
fn percentile(sorted: &[f64], f: f64) -> f64 {
    let x = f * (sorted.len() - 1) as f64;
    let lo = x.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (x - lo as f64) * (sorted[hi] - sorted[lo])
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    } else {
        sorted[n / 2]
    }
}

/// Evaluate `model` against `base` on `tokens` (tokenized by the base's tokenizer).
pub fn kl_divergence(
    base: &LlamaModel,
    model: &LlamaModel,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    progress: &dyn Progress,
) -> Result<KldReport> {
    in_memory(base, model, tokens, bos, opts, None, progress)
}

/// [`kl_divergence`], also saving the base's log-probabilities to `save` as it goes (the file
/// [`kl_divergence_from_file`] and `llama-perplexity --kl-divergence-base` read).
pub fn kl_divergence_save_base(
    base: &LlamaModel,
    model: &LlamaModel,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    save: &Path,
    progress: &dyn Progress,
) -> Result<KldReport> {
    in_memory(base, model, tokens, bos, opts, Some(save), progress)
}

/// Evaluate `model` against the base log-probabilities saved in `path` ([`crate::logits_file`]), on the tokens
/// saved with them, as `llama-perplexity --kl-divergence --kl-divergence-base FILE`. `bos` is the model's BOS
/// when its tokenizer adds one (the first token of every chunk is replaced with it, as when the file was
/// written). The file's context must be `opts.n_ctx`; `opts.n_chunks` limits the chunks read. The figures
/// are those of [`kl_divergence`] against the base model that wrote the file.
pub fn kl_divergence_from_file(
    model: &LlamaModel,
    path: &Path,
    bos: Option<u32>,
    opts: &PerplexityOptions,
    progress: &dyn Progress,
) -> Result<KldReport> {
    let reader = LogitsReader::open(path)?;
    let bad = |message: String| EvalError::LogitsFile { path: path.to_path_buf(), message };
    let n_ctx = reader.n_ctx();
    if n_ctx != opts.n_ctx {
        return Err(bad(format!(
            "was written with a context of {n_ctx} tokens, but a context of {} was asked for (use --ctx {n_ctx})",
            opts.n_ctx
        )));
    }
    let n_vocab = model.config().n_vocab;
    if reader.n_vocab() != n_vocab {
        return Err(bad(format!(
            "holds log-probabilities over {} tokens, but the model has {n_vocab}: it was not written by this \
             model's base",
            reader.n_vocab()
        )));
    }
    check_ctx(model, n_ctx)?;
    let n = reader.n_chunks().min(check_chunk_limit(opts.n_chunks)?);
    let chunks = split_chunks(&reader.tokens()[..n * n_ctx], bos, n_ctx);
    evaluate(model, &chunks, opts, &mut FileBase(reader), progress)
}

/// The in-memory run, saving the base's rows to `save` when given.
fn in_memory(
    base: &LlamaModel,
    model: &LlamaModel,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    save: Option<&Path>,
    progress: &dyn Progress,
) -> Result<KldReport> {
    let n_vocab = base.config().n_vocab;
    if model.config().n_vocab != n_vocab {
        return Err(EvalError::Mismatch {
            message: format!("the base has {n_vocab} tokens, the model {}", model.config().n_vocab),
        });
    }
    let n_ctx = opts.n_ctx;
    check_ctx(base, n_ctx)?;
    check_ctx(model, n_ctx)?;
    let chunks = chunks(tokens, bos, n_ctx, opts.n_chunks)?;
    let save = match save {
        Some(path) => Some(LogitsWriter::create(path, n_ctx, n_vocab, &tokens[..chunks.len() * n_ctx])?),
        None => None,
    };
    let mut source = ModelBase { model: base, n_ctx, pending: VecDeque::new(), save };
    let report = evaluate(model, &chunks, opts, &mut source, progress)?;
    if let Some(w) = source.save {
        w.finish()?;
    }
    Ok(report)
}

/// Where the base's rows come from, chunk by chunk.
trait BaseSource {
    /// A group of chunks (with BOS substituted) is about to be evaluated by the model.
    fn prepare(&mut self, seqs: &[&[u32]]) -> Result<()>;
    /// The base's rows of the next chunk.
    fn next_chunk(&mut self) -> Result<BaseChunk>;
}

/// The base model run on each group before the evaluated model, its rows quantized (and saved) at once.
struct ModelBase<'a> {
    model: &'a LlamaModel,
    n_ctx: usize,
    pending: VecDeque<BaseChunk>,
    save: Option<LogitsWriter>,
}

impl BaseSource for ModelBase<'_> {
    fn prepare(&mut self, seqs: &[&[u32]]) -> Result<()> {
        let n_vocab = self.model.config().n_vocab;
        let (first, rows) = scored_rows(self.n_ctx);
        let logits = self.model.forward(seqs, first)?;
        for c in 0..seqs.len() {
            let chunk =
                BaseChunk::from_logits(&logits[c * (self.n_ctx - first) * n_vocab..][..rows * n_vocab], n_vocab);
            if let Some(w) = self.save.as_mut() {
                w.write_chunk(&chunk)?;
            }
            self.pending.push_back(chunk);
        }
        Ok(())
    }

    fn next_chunk(&mut self) -> Result<BaseChunk> {
        Ok(self.pending.pop_front().expect("prepare runs the base on every chunk first"))
    }
}

/// The base's rows read from a file, one chunk at a time.
struct FileBase(LogitsReader);

impl BaseSource for FileBase {
    fn prepare(&mut self, _seqs: &[&[u32]]) -> Result<()> {
        Ok(())
    }

    fn next_chunk(&mut self) -> Result<BaseChunk> {
        self.0.read_chunk()
    }
}

/// Run `model` over `chunks` and score every scored position against the base's row of it.
fn evaluate(
    model: &LlamaModel,
    chunks: &[Vec<u32>],
    opts: &PerplexityOptions,
    base: &mut dyn BaseSource,
    progress: &dyn Progress,
) -> Result<KldReport> {
    let n_vocab = model.config().n_vocab;
    let n_ctx = opts.n_ctx;
    let (first, per_chunk) = scored_rows(n_ctx);
    let n_seq = (opts.n_batch / n_ctx).max(1);
    progress.start(chunks.len(), 0);
    let start = Instant::now();
    let mut forward_seconds = 0.0;
    let mut all: Vec<TokenStats> = Vec::with_capacity(chunks.len() * per_chunk);
    let mut running = Vec::with_capacity(chunks.len());
    let (mut sum_nll, mut sum_kld, mut n_same) = (0.0f64, 0.0f64, 0usize);
    for (g, group) in chunks.chunks(n_seq).enumerate() {
        let i0 = g * n_seq;
        progress.item(i0, &format!("chunks {}-{}", i0 + 1, i0 + group.len()), "");
        let seqs: Vec<&[u32]> = group.iter().map(Vec::as_slice).collect();
        base.prepare(&seqs)?;
        let t = Instant::now();
        let logits = model.forward(&seqs, first)?;
        forward_seconds += t.elapsed().as_secs_f64();
        for (c, chunk) in group.iter().enumerate() {
            let base_rows = base.next_chunk()?;
            let rows = &logits[c * (n_ctx - first) * n_vocab..];
            let stats: Vec<TokenStats> = (0..per_chunk)
                .into_par_iter()
                .map(|j| score(&rows[j * n_vocab..(j + 1) * n_vocab], base_rows.row(j), chunk[first + j + 1]))
                .collect();
            for s in &stats {
                sum_nll += f64::from(s.nll);
                sum_kld += s.kld;
                n_same += usize::from(s.same_top);
            }
            all.extend(stats);
            let n = all.len() as f64;
            running.push(((sum_nll / n).exp(), sum_kld / n, n_same as f64 / n));
            progress.item_done(i0 + c, 0);
        }
    }
    progress.finish();
    let mut report = summarize(&all, n_ctx, chunks.len(), running, start.elapsed().as_secs_f64());
    report.forward_seconds = forward_seconds;
    Ok(report)
}

fn summarize(
    all: &[TokenStats],
    n_ctx: usize,
    n_chunks: usize,
    running: Vec<(f64, f64, f64)>,
    seconds: f64,
) -> KldReport {
    let n = all.len();
    let sum = |f: &dyn Fn(&TokenStats) -> f64| all.iter().map(f).sum::<f64>();
    let nll = mean_unc(sum(&|s| f64::from(s.nll)), sum(&|s| f64::from(s.nll) * f64::from(s.nll)), n);
    let nll_b = mean_unc(sum(&|s| f64::from(s.nll_base)), sum(&|s| f64::from(s.nll_base) * f64::from(s.nll_base)), n);
    let sab = sum(&|s| f64::from(s.nll) * f64::from(s.nll_base)) / n as f64;
    let cov = (sab - nll.value * nll_b.value) / (n - 1).max(1) as f64;
    let ratio_unc = (nll.uncertainty.powi(2) + nll_b.uncertainty.powi(2) - 2.0 * cov).max(0.0).sqrt();
    let ppl = nll.value.exp();
    let ppl_base = nll_b.value.exp();
    let kld = mean_unc(sum(&|s| s.kld), sum(&|s| s.kld * s.kld), n);
    let pd = |s: &TokenStats| f64::from(s.p_diff);
    let p_diff = mean_unc(sum(&pd), sum(&|s| pd(s) * pd(s)), n);
    let mse = mean_unc(sum(&|s| pd(s) * pd(s)), sum(&|s| pd(s).powi(4)), n);
    let rms = mse.value.sqrt();
    let same = all.iter().filter(|s| s.same_top).count() as f64 / n as f64;
    let mut k: Vec<f64> = all.iter().map(|s| s.kld).collect();
    k.sort_by(f64::total_cmp);
    let mut p: Vec<f64> = all.iter().map(pd).collect();
    p.sort_by(f64::total_cmp);
    let pct = |v: &[f64], labels: &[(&str, f64)]| -> Vec<(String, f64)> {
        labels
            .iter()
            .map(|&(l, f)| {
                let value = match l {
                    "Maximum" => v[v.len() - 1],
                    "Minimum" => v[0],
                    "Median" => median(v),
                    _ => percentile(v, f),
                };
                (l.to_string(), value)
            })
            .collect()
    };
    let kld_labels = [
        ("Maximum", 1.0),
        ("99.9%", 0.999),
        ("99.0%", 0.99),
        ("95.0%", 0.95),
        ("90.0%", 0.90),
        ("Median", 0.5),
        ("10.0%", 0.10),
        ("5.0%", 0.05),
        ("1.0%", 0.01),
        ("0.1%", 0.001),
        ("Minimum", 0.0),
    ];
    let p_labels = [
        ("Maximum", 1.0),
        ("99.9%", 0.999),
        ("99.0%", 0.99),
        ("95.0%", 0.95),
        ("90.0%", 0.90),
        ("75.0%", 0.75),
        ("Median", 0.5),
        ("25.0%", 0.25),
        ("10.0%", 0.10),
        ("5.0%", 0.05),
        ("1.0%", 0.01),
        ("0.1%", 0.001),
        ("Minimum", 0.0),
    ];
    KldReport {
        n_ctx,
        n_chunks,
        n_scored: n,
        ppl: Estimate { value: ppl, uncertainty: ppl * nll.uncertainty },
        ppl_base: Estimate { value: ppl_base, uncertainty: ppl_base * nll_b.uncertainty },
        ln_ppl_correlation: cov / (nll.uncertainty * nll_b.uncertainty),
        ln_ppl_ratio: Estimate { value: nll.value - nll_b.value, uncertainty: ratio_unc },
        kld,
        kld_percentiles: pct(&k, &kld_labels),
        p_diff,
        p_diff_percentiles: pct(&p, &p_labels),
        p_diff_rms: Estimate { value: rms, uncertainty: if rms > 0.0 { 0.5 / rms * mse.uncertainty } else { 0.0 } },
        same_top: Estimate { value: same, uncertainty: (same * (1.0 - same) / (n - 1).max(1) as f64).sqrt() },
        running,
        seconds,
        forward_seconds: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use quantforge_quant::progress::Silent;

    use super::*;
    use crate::logits_file::row_len;
    use crate::test_util::{small_logits_file as small_file, stories, Scratch};

    /// Every figure but the timings, for comparing two runs.
    fn figures(r: &KldReport) -> String {
        let mut r = r.clone();
        r.seconds = 0.0;
        r.forward_seconds = 0.0;
        format!("{r:?}")
    }

    fn quantize_base(logits: &[f32]) -> BaseChunk {
        BaseChunk::from_logits(logits, logits.len())
    }

    #[test]
    fn identical_logits_have_zero_kld_and_same_top() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7919) % 97) as f32 * 0.1 - 3.0).collect();
        let s = score(&logits, quantize_base(&logits).row(0), 3);
        // The base log-probabilities are stored in 16 bits (steps of about 1e-4 nats here), as llama.cpp does.
        assert!(s.kld.abs() < 1e-4, "{}", s.kld);
        assert!(s.same_top);
        assert!((s.nll - s.nll_base).abs() < 1e-3);
        assert!(s.p_diff.abs() < 1e-3);
    }

    #[test]
    fn kld_of_shifted_distribution_is_positive() {
        let base: Vec<f32> = (0..50).map(|i| i as f32 * 0.1).collect();
        let other: Vec<f32> = base.iter().rev().copied().collect();
        let s = score(&other, quantize_base(&base).row(0), 3);
        assert!(s.kld > 0.1);
        assert!(!s.same_top);
    }

    #[test]
    fn percentiles_interpolate() {
        let v = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(percentile(&v, 0.5), 1.5);
        assert_eq!(median(&v), 1.5);
    }

    /// One base pass that saves the file gives perplexity()'s figures, and the KLD read back from the file is
    /// the in-memory KLD, figure for figure; --chunks limits the chunks read; a different ctx is refused.
    #[test]
    fn file_kld_equals_in_memory_kld_on_stories260k() {
        let (model, bos, tokens) = stories();
        let dir = Scratch::new();
        let path = dir.path("base.kld");
        let opts = PerplexityOptions { n_ctx: 64, n_chunks: Some(5), n_batch: 128 };
        let saved = crate::perplexity::save_base_logits(&model, &tokens, bos, &opts, &path, &Silent).unwrap();
        let plain = crate::perplexity::perplexity(&model, &tokens, bos, &opts, &Silent).unwrap();
        assert_eq!(saved.ppl, plain.ppl);
        assert_eq!(saved.ppl_uncertainty, plain.ppl_uncertainty);
        assert_eq!(saved.running_ppl, plain.running_ppl);
        assert!(saved.forward_seconds > 0.0 && saved.forward_seconds <= saved.seconds);
        let (_, rows) = scored_rows(64);
        let size = std::fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(size, 20 + 5 * 64 * 4 + 5 * rows * row_len(512) * 2);
        let r = LogitsReader::open(&path).unwrap();
        assert_eq!(r.tokens(), &tokens[..5 * 64], "the tokens before BOS substitution");

        // The model against itself through a batch size that groups chunks differently.
        let mem = kl_divergence(&model, &model, &tokens, bos, &opts, &Silent).unwrap();
        let other = PerplexityOptions { n_batch: 64, ..opts.clone() };
        let file = kl_divergence_from_file(&model, &path, bos, &other, &Silent).unwrap();
        assert_eq!(figures(&file), figures(&mem));
        assert_eq!(file.n_scored, 5 * rows);
        assert!(file.kld.value.abs() < 1e-4);
        assert!(file.forward_seconds > 0.0 && file.tokens_per_second() > 0.0);

        // Saving from the in-memory run writes the same bytes.
        let again = dir.path("again.kld");
        let mem2 = kl_divergence_save_base(&model, &model, &tokens, bos, &opts, &again, &Silent).unwrap();
        assert_eq!(figures(&mem2), figures(&mem));
        assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&path).unwrap());

        let three = PerplexityOptions { n_chunks: Some(3), ..opts.clone() };
        let a = kl_divergence_from_file(&model, &path, bos, &three, &Silent).unwrap();
        let b = kl_divergence(&model, &model, &tokens, bos, &three, &Silent).unwrap();
        assert_eq!(a.n_chunks, 3);
        assert_eq!(figures(&a), figures(&b));

        let wrong = PerplexityOptions { n_ctx: 128, ..opts.clone() };
        let err = kl_divergence_from_file(&model, &path, bos, &wrong, &Silent).unwrap_err().to_string();
        assert!(err.contains("base.kld") && err.contains("64") && err.contains("128"), "{err}");

        let small = small_file(&dir, 5, 64, 2);
        let err = kl_divergence_from_file(&model, &small, bos, &opts, &Silent).unwrap_err().to_string();
        assert!(err.contains("small.bin") && err.contains("over 5 tokens") && err.contains("512"), "{err}");
    }
}
