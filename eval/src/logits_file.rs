//! The base model's log-probabilities saved for later KL-divergence runs, in the file layout of llama.cpp's
//! `llama-perplexity --kl-divergence-base FILE` (`tools/perplexity/perplexity.cpp`: written by `perplexity()`
//! when `params.logits_file` is set, read back by `kl_divergence()`). A file written here is read by
//! `llama-perplexity --kl-divergence --kl-divergence-base FILE`, and a file it wrote is read here.
//!
//! # Layout
//!
//! All numbers are little-endian; there is no padding between fields.
//!
//! | bytes                         | content                                                                 |
//! |-------------------------------|-------------------------------------------------------------------------|
//! | 8                             | magic `_logits_` (ASCII, no terminator)                                 |
//! | 4                             | `n_ctx`: tokens per chunk (`int32`; llama.cpp reads it as `uint32`)     |
//! | 4                             | `n_vocab` (`int32`)                                                     |
//! | 4                             | `n_chunk`: chunks that follow (`int32`)                                 |
//! | 4 · n_chunk · n_ctx           | the text's first `n_chunk · n_ctx` tokens (`int32`) as tokenized, BOS   |
//! |                               | first when the model adds it, *before* the per-chunk BOS substitution   |
//! | n_chunk · rows · 2 · nv       | per chunk, `rows = n_ctx - 1 - n_ctx/2` rows of `nv` `uint16` each      |
//!
//! where `nv = 2·⌈n_vocab/2⌉ + 4`. Row `j` of a chunk belongs to position `n_ctx/2 + j` of that chunk (it
//! predicts the token after it), so the rows are exactly the positions perplexity scores. A row is:
//!
//! - `scale` (`f32`, the first two `uint16`) and `min_log_prob` (`f32`, the next two);
//! - `n_vocab` values `q_i` with `log p_i = scale · q_i + min_log_prob`;
//! - one zero `uint16` of padding when `n_vocab` is odd.
//!
//! With `max`/`min` the largest and smallest logit, the smallest clamped to `max - 16`, and `lse` the
//! log-sum-exp of the logits less `max` (summed in `f64`, logged to `f32`): `scale = (max - min) / 65535`,
//! `min_log_prob = min - max - lse`, `q_i = round_half_even((logit_i - min) / scale)` for logits above `min`
//! and 0 otherwise (all 0 when `scale` is 0).
//!
//! The writer streams: header and tokens first, then one chunk's rows at a time, into a temporary file beside
//! the destination that is renamed over it only when every chunk is written. The reader streams too (one
//! chunk's rows in memory at a time), and checks every length against sane bounds and the file size first.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use quantforge_formats::AtomicFile;
use quantforge_quant::blocks::scalar::nearest_int;
use rayon::prelude::*;

use crate::chunking::scored_rows;
use crate::error::{EvalError, Result};

/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"_logits_";
/// Bytes before the tokens: magic, `n_ctx`, `n_vocab`, `n_chunk`.
const HEADER_BYTES: u64 = 20;
/// Largest `n_ctx` a file may declare.
pub const MAX_CTX: usize = 1 << 20;
/// Largest `n_vocab` a file may declare.
pub const MAX_VOCAB: usize = 1 << 24;

/// `uint16` values per row: the two `f32`, `n_vocab` values, padded to an even count.
pub fn row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Quantize one row of logits into `out` (`row_len(logits.len())` values), as llama.cpp stores it.
fn quantize_row(logits: &[f32], out: &mut [u16]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = logits.iter().copied().fold(f32::INFINITY, f32::min).max(max - 16.0);
    let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    let (head, q) = out.split_at_mut(4);
    for (pair, v) in head.chunks_exact_mut(2).zip([scale, min_log_prob]) {
        let bits = v.to_bits();
        pair[0] = bits as u16;
        pair[1] = (bits >> 16) as u16;
    }
    let (q, pad) = q.split_at_mut(logits.len());
    pad.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &l) in q.iter_mut().zip(logits) {
            *o = if l > min { nearest_int(inv * (l - min)) as u16 } else { 0 };
        }
    } else {
        q.fill(0);
    }
}

/// One chunk's base rows, held in the file's layout (`row_len(n_vocab)` `uint16` per row).
#[derive(Clone, Debug, PartialEq)]
pub struct BaseChunk {
    n_vocab: usize,
    data: Vec<u16>,
}

/// One base row: `log p_i = scale * q[i] + min_log_prob`.
#[derive(Clone, Copy, Debug)]
pub struct BaseRow<'a> {
    pub scale: f32,
    pub min_log_prob: f32,
    pub q: &'a [u16],
}

impl BaseRow<'_> {
    /// The stored log-probability of token `i`.
    pub fn log_prob(&self, i: usize) -> f32 {
        self.scale * f32::from(self.q[i]) + self.min_log_prob
    }
}

impl BaseChunk {
    /// Quantize `logits` (rows of `n_vocab` values), in parallel.
    pub fn from_logits(logits: &[f32], n_vocab: usize) -> BaseChunk {
        assert!(n_vocab > 0 && logits.len().is_multiple_of(n_vocab), "logits are not rows of {n_vocab}");
        let nv = row_len(n_vocab);
        let mut data = vec![0u16; logits.len() / n_vocab * nv];
        data.par_chunks_mut(nv).zip(logits.par_chunks(n_vocab)).for_each(|(out, row)| quantize_row(row, out));
        BaseChunk { n_vocab, data }
    }

    /// The vocabulary size of the rows.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Rows held.
    pub fn n_rows(&self) -> usize {
        self.data.len() / row_len(self.n_vocab)
    }

    /// Row `j`.
    pub fn row(&self, j: usize) -> BaseRow<'_> {
        let nv = row_len(self.n_vocab);
        let r = &self.data[j * nv..(j + 1) * nv];
        let f = |lo: u16, hi: u16| f32::from_bits(u32::from(lo) | (u32::from(hi) << 16));
        BaseRow { scale: f(r[0], r[1]), min_log_prob: f(r[2], r[3]), q: &r[4..4 + self.n_vocab] }
    }
}

/// Writes a base log-probabilities file chunk by chunk; the destination appears only on [`LogitsWriter::finish`].
pub struct LogitsWriter {
    out: AtomicFile,
    n_vocab: usize,
    rows_per_chunk: usize,
    n_chunks: usize,
    written: usize,
    bytes: Vec<u8>,
}

impl LogitsWriter {
    /// Start writing `path`: the header and `tokens`, which are the text's first `n_chunk * n_ctx` tokens as
    /// tokenized (the chunks' BOS substitution is not applied to them).
    pub fn create(path: &Path, n_ctx: usize, n_vocab: usize, tokens: &[u32]) -> Result<LogitsWriter> {
        let bad = |message: String| EvalError::LogitsFile { path: path.to_path_buf(), message };
        if !(4..=MAX_CTX).contains(&n_ctx) {
            return Err(bad(format!("cannot write a context of {n_ctx} tokens (4 to {MAX_CTX})")));
        }
        if !(1..=MAX_VOCAB).contains(&n_vocab) {
            return Err(bad(format!("cannot write a vocabulary of {n_vocab} tokens (1 to {MAX_VOCAB})")));
        }
        let n_chunks = tokens.len() / n_ctx;
        if tokens.is_empty() || !tokens.len().is_multiple_of(n_ctx) || i32::try_from(n_chunks).is_err() {
            return Err(bad(format!("{} tokens are not a whole number of chunks of {n_ctx}", tokens.len())));
        }
        let mut out = AtomicFile::create(path)?;
        out.write_all(MAGIC)?;
        for v in [n_ctx, n_vocab, n_chunks] {
            out.write_all(&(v as u32).to_le_bytes())?;
        }
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        out.write_all(&bytes)?;
        let (_, rows_per_chunk) = scored_rows(n_ctx);
        Ok(LogitsWriter { out, n_vocab, rows_per_chunk, n_chunks, written: 0, bytes: Vec::new() })
    }

    /// Append the next chunk's rows.
    pub fn write_chunk(&mut self, chunk: &BaseChunk) -> Result<()> {
        if chunk.n_vocab != self.n_vocab || chunk.n_rows() != self.rows_per_chunk || self.written == self.n_chunks {
            return Err(EvalError::LogitsFile {
                path: self.out.dest().to_path_buf(),
                message: format!(
                    "chunk {} of {} rows of {} tokens does not fit a file of {} chunks of {} rows of {} tokens",
                    self.written + 1,
                    chunk.n_rows(),
                    chunk.n_vocab,
                    self.n_chunks,
                    self.rows_per_chunk,
                    self.n_vocab
                ),
            });
        }
        self.bytes.clear();
        self.bytes.extend(chunk.data.iter().flat_map(|v| v.to_le_bytes()));
        self.out.write_all(&self.bytes)?;
        self.written += 1;
        Ok(())
    }

    /// Check every chunk was written and move the file into place.
    pub fn finish(self) -> Result<()> {
        if self.written != self.n_chunks {
            return Err(EvalError::LogitsFile {
                path: self.out.dest().to_path_buf(),
                message: format!("only {} of {} chunks were written", self.written, self.n_chunks),
            });
        }
        Ok(self.out.commit()?)
    }
}

/// Reads a base log-probabilities file: the header and tokens on open, then one chunk's rows per call.
pub struct LogitsReader {
    path: PathBuf,
    input: BufReader<File>,
    n_ctx: usize,
    n_vocab: usize,
    n_chunks: usize,
    tokens: Vec<u32>,
    next: usize,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for LogitsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogitsReader")
            .field("path", &self.path)
            .field("n_ctx", &self.n_ctx)
            .field("n_vocab", &self.n_vocab)
            .field("n_chunks", &self.n_chunks)
            .finish_non_exhaustive()
    }
}

impl LogitsReader {
    /// Open `path`, read and check its header and tokens.
    pub fn open(path: &Path) -> Result<LogitsReader> {
        let bad = |message: String| EvalError::LogitsFile { path: path.to_path_buf(), message };
        let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let size = file.metadata().map_err(|e| bad(format!("cannot read its size: {e}")))?.len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        if size < HEADER_BYTES {
            return Err(bad(format!(
                "{size} bytes is too short for a base log-probabilities file (llama-perplexity --kl-divergence-base)"
            )));
        }
        let mut head = [0u8; HEADER_BYTES as usize];
        input.read_exact(&mut head).map_err(|e| bad(format!("reading the header: {e}")))?;
        if &head[..8] != MAGIC {
            return Err(bad(format!(
                "not a base log-probabilities file (llama-perplexity --kl-divergence-base): magic {:02x?}, expected \
                 \"_logits_\"",
                &head[..8]
            )));
        }
        let field = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (n_ctx, n_vocab, n_chunks) = (field(8) as usize, field(12) as usize, field(16) as usize);
        if !(4..=MAX_CTX).contains(&n_ctx) {
            return Err(bad(format!("context of {n_ctx} tokens is out of range (4 to {MAX_CTX})")));
        }
        if !(1..=MAX_VOCAB).contains(&n_vocab) {
            return Err(bad(format!("vocabulary of {n_vocab} tokens is out of range (1 to {MAX_VOCAB})")));
        }
        if n_chunks == 0 || n_chunks > i32::MAX as usize {
            return Err(bad(format!("chunk count {n_chunks} is out of range (1 to {})", i32::MAX)));
        }
        let (_, rows) = scored_rows(n_ctx);
        let token_bytes = 4 * n_chunks as u64 * n_ctx as u64;
        let chunk_bytes = 2 * rows as u64 * row_len(n_vocab) as u64;
        let expected = n_chunks as u64 * chunk_bytes + token_bytes + HEADER_BYTES;
        if size != expected {
            return Err(bad(format!(
                "{size} bytes, but {n_chunks} chunks of {n_ctx} tokens over a vocabulary of {n_vocab} take \
                 {expected} bytes (truncated, or not a llama-perplexity --kl-divergence-base file?)"
            )));
        }
        let mut bytes = vec![0u8; token_bytes as usize];
        input.read_exact(&mut bytes).map_err(|e| bad(format!("reading the tokens: {e}")))?;
        let tokens: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if let Some((i, t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= n_vocab) {
            return Err(bad(format!("token {i} is {}, outside the vocabulary of {n_vocab}", *t as i32)));
        }
        Ok(LogitsReader { path: path.to_path_buf(), input, n_ctx, n_vocab, n_chunks, tokens, next: 0, bytes })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tokens per chunk the file was written with.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Vocabulary size of the rows.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Chunks in the file.
    pub fn n_chunks(&self) -> usize {
        self.n_chunks
    }

    /// The tokens of all chunks (`n_chunks * n_ctx`), before BOS substitution.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The next chunk's rows.
    pub fn read_chunk(&mut self) -> Result<BaseChunk> {
        let bad = |message: String| EvalError::LogitsFile { path: self.path.clone(), message };
        if self.next == self.n_chunks {
            return Err(bad(format!("has only {} chunks", self.n_chunks)));
        }
        let (_, rows) = scored_rows(self.n_ctx);
        let n = rows * row_len(self.n_vocab);
        self.bytes.resize(2 * n, 0);
        self.input
            .read_exact(&mut self.bytes)
            .map_err(|e| bad(format!("reading the log-probabilities of chunk {}: {e}", self.next + 1)))?;
        let data = self.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        self.next += 1;
        Ok(BaseChunk { n_vocab: self.n_vocab, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{small_logits_file as small_file, Scratch};

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(65535.0), 65535);
    }

    #[test]
    fn rows_round_trip_through_the_layout() {
        // Odd vocabulary: one padding value per row.
        let n_vocab = 7;
        let logits: Vec<f32> = vec![1.0, -3.0, 2.5, 0.0, -40.0, 2.5, 0.25, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0];
        let c = BaseChunk::from_logits(&logits, n_vocab);
        assert_eq!(row_len(n_vocab), 12);
        assert_eq!(c.n_rows(), 2);
        let r = c.row(0);
        assert_eq!(r.scale, (2.5f32 - (2.5 - 16.0)) / 65535.0);
        assert_eq!(r.q[0], nearest_int((1.0 - (2.5 - 16.0)) / r.scale) as u16);
        assert_eq!(r.q[2], 65535);
        assert_eq!(r.q[4], 0, "clamped 16 below the top");
        let lse = logits[..7].iter().map(|&l| f64::from((l - 2.5f32).exp())).sum::<f64>().ln();
        assert!((f64::from(r.log_prob(2)) + lse).abs() < 1e-6);
        // A flat row: scale 0, all zeros, log p = -ln(n_vocab).
        let flat = c.row(1);
        assert_eq!(flat.scale, 0.0);
        assert!(flat.q.iter().all(|&q| q == 0));
        assert!((flat.log_prob(3) + 7f32.ln()).abs() < 1e-6);

        let dir = Scratch::new();
        let path = small_file(&dir, 5, 8, 3);
        let bytes = std::fs::read(&path).unwrap();
        let nv = row_len(5);
        assert_eq!(bytes.len(), 20 + 3 * 8 * 4 + 3 * 3 * nv * 2);
        assert_eq!(&bytes[..8], b"_logits_");
        assert_eq!(bytes[8..20], [8, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0]);
        // The first row's scale, as the f32 llama.cpp reads through a cast of the uint16 pointer.
        let at = 20 + 3 * 8 * 4;
        let mut r = LogitsReader::open(&path).unwrap();
        assert_eq!((r.n_ctx(), r.n_vocab(), r.n_chunks()), (8, 5, 3));
        assert_eq!(r.tokens(), (0..24).map(|i| i % 5).collect::<Vec<u32>>());
        let first = r.read_chunk().unwrap();
        assert_eq!(first.row(0).scale.to_le_bytes(), bytes[at..at + 4]);
        assert_eq!(first.row(0).min_log_prob.to_le_bytes(), bytes[at + 4..at + 8]);
        for c in 1..3 {
            let logits: Vec<f32> = (0..3 * 5).map(|i| ((i * 7 + c) % 13) as f32 * 0.5).collect();
            assert_eq!(r.read_chunk().unwrap(), BaseChunk::from_logits(&logits, 5));
        }
        assert!(r.read_chunk().unwrap_err().to_string().contains("has only 3 chunks"));
    }

    #[test]
    fn writer_leaves_nothing_when_unfinished() {
        let dir = Scratch::new();
        let path = dir.path("never.bin");
        let mut w = LogitsWriter::create(&path, 8, 5, &[0; 16]).unwrap();
        w.write_chunk(&BaseChunk::from_logits(&[0.0; 15], 5)).unwrap();
        assert!(w.write_chunk(&BaseChunk::from_logits(&[0.0; 10], 5)).is_err(), "wrong row count");
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("never.bin") && err.contains("only 1 of 2"), "{err}");
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let dir = Scratch::new();
        let good = std::fs::read(small_file(&dir, 5, 8, 3)).unwrap();
        let check = |name: &str, bytes: &[u8], want: &str| {
            let path = dir.path(name);
            std::fs::write(&path, bytes).unwrap();
            let err = LogitsReader::open(&path).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        };
        check("empty.bin", &[], "too short");
        check("magic.bin", &[b"_logitz_".as_slice(), &good[8..]].concat(), "magic");
        check("truncated.bin", &good[..good.len() - 1], "truncated");
        check("header-only.bin", &good[..20], "truncated");
        check("longer.bin", &[good.as_slice(), &[0]].concat(), "bytes");
        let mut b = good.clone();
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        check("huge-ctx.bin", &b, "out of range");
        let mut b = good.clone();
        b[12..16].copy_from_slice(&0u32.to_le_bytes());
        check("no-vocab.bin", &b, "out of range");
        let mut b = good.clone();
        b[16..20].copy_from_slice(&(-1i32).to_le_bytes());
        check("neg-chunks.bin", &b, "out of range");
        let mut b = good.clone();
        // A chunk count that would need far more bytes than the file has.
        b[16..20].copy_from_slice(&1_000_000i32.to_le_bytes());
        check("many-chunks.bin", &b, "truncated");
        let mut b = good.clone();
        b[24..28].copy_from_slice(&5u32.to_le_bytes());
        check("bad-token.bin", &b, "token 1 is 5");
        let missing = dir.path("missing.bin");
        let err = LogitsReader::open(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.bin"), "{err}");
    }
}
