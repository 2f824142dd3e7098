//! Benchmark: peak memory and time of collecting every linear layer's input covariance (`XᵀX`, what GPTQ
//! needs) over calibration text, (a) through the calibration seam, one decoder block resident at a time,
//! and (b) with the whole model loaded and one forward pass per batch, as a calibration without the seam
//! would run. Each mode runs in its own process so its peak resident set is its own.
//!
//! Run (SmolLM2-135M-Instruct as F32, made from the model `scripts/fetch-models.sh` fetches):
//! ```sh
//! scripts/fetch-models.sh
//! cargo run --release -p quantforge-cli -- quantize --allow-requantize ~/.cache/quantforge/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-f32.gguf -t F32 -q
//! QF_BENCH_MODEL=/tmp/smollm2-f32.gguf cargo bench -p quantforge-eval --bench calibrate
//! ```
//! `QF_BENCH_SEQS` (default 16) sequences of `QF_BENCH_CTX` (512) tokens are cut from the second half of
//! `fixtures/text/wiki.test.raw` (never the evaluated part), run 4 sequences at a time. The peak resident set
//! is measured from after the text is tokenized to the end of the calibration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use quantforge_eval::calibration::BlockCalibrator;
use quantforge_eval::{Device, LlamaModel, ModelFile, Tokenizer};
use quantforge_formats::gguf::GgufFile;
use quantforge_quant::calibrate::{calibrate, InputStats, LayerSolver, LinearWeight, StatsAccumulator, StatsKind};
use quantforge_quant::progress::Silent;

#[path = "../../formats/benches/support/peak_rss.rs"]
mod peak_rss;
use peak_rss::{peak_rss_mib, reset_peak_rss};

/// Sequences per batch in both modes.
const BATCH: usize = 4;
/// Where the calibration half of wiki.test.raw starts (shared/data README: first line start after the midpoint).
const CALIBRATION_START: usize = 645_741;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn sequences(model: &Path) -> Vec<Vec<u32>> {
    let text_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/text/wiki.test.raw");
    let text = std::fs::read(&text_path).expect("fixtures/text/wiki.test.raw");
    let (n, ctx) = (env_usize("QF_BENCH_SEQS", 16), env_usize("QF_BENCH_CTX", 512));
    // Only as much text as the sequences need (English text is well under 16 bytes a token).
    let start = CALIBRATION_START.min(text.len());
    let end = (start + n * ctx * 16).min(text.len());
    let text = String::from_utf8_lossy(&text[start..end]).into_owned();
    let tok = Tokenizer::from_gguf(&GgufFile::open(model).expect("model")).expect("tokenizer");
    let ids = tok.encode(&text, false).expect("tokenize");
    assert!(ids.len() >= n * ctx, "calibration text too short for {n} x {ctx} tokens");
    ids.chunks_exact(ctx).take(n).map(<[u32]>::to_vec).collect()
}

/// Keeps the weights as they are; the statistics are computed for it and dropped.
struct KeepWeights;

impl LayerSolver for KeepWeights {
    fn stats_kind(&self) -> StatsKind {
        StatsKind::Covariance
    }

    fn solve(&self, _block: usize, weight: &LinearWeight, stats: &InputStats) -> Result<Vec<f32>, String> {
        assert!(stats.covariance.is_some() && stats.n_rows > 0);
        Ok(weight.values.clone())
    }
}

fn run_seam(model_path: &Path, seqs: &[Vec<u32>]) -> (f64, String) {
    let t = Instant::now();
    let model = ModelFile::open(model_path).expect("open");
    let mut source = BlockCalibrator::new(&model, seqs, BATCH, Device::Cpu).expect("embed");
    let hidden: usize = source.hidden().map(<[f32]>::len).sum();
    let block_mib = model.load_block(0).expect("block 0").weight_bytes() as f64 / 1048576.0;
    calibrate(&mut source, &KeepWeights, &Silent).expect("calibrate");
    let extra = format!("one block {block_mib:.1} MiB, hidden states {:.1} MiB", hidden as f64 * 4.0 / 1048576.0);
    (t.elapsed().as_secs_f64(), extra)
}

fn run_full(model_path: &Path, seqs: &[Vec<u32>]) -> (f64, String) {
    let t = Instant::now();
    let model = LlamaModel::load(model_path).expect("load");
    let acc: Mutex<BTreeMap<String, StatsAccumulator>> = Mutex::new(BTreeMap::new());
    let observe = |name: &str, _: Option<usize>, rows: &[f32], cols: usize| {
        let mut acc = acc.lock().unwrap();
        acc.entry(name.to_string()).or_insert_with(|| StatsAccumulator::new(cols, StatsKind::Covariance)).add(rows);
    };
    for batch in seqs.chunks(BATCH) {
        let refs: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
        // Only the hidden states matter here: ask for the logits of the last position alone.
        let len = refs.iter().map(|s| s.len()).max().unwrap_or(0);
        model.forward_observed(&refs, len.saturating_sub(1), Some(&observe)).expect("forward");
    }
    let layers = acc.into_inner().unwrap().len();
    let extra =
        format!("whole model {:.1} MiB of weights, {layers} accumulators", model.weight_bytes() as f64 / 1048576.0);
    (t.elapsed().as_secs_f64(), extra)
}

fn main() {
    let model: PathBuf = std::env::var_os("QF_BENCH_MODEL")
        .map(PathBuf::from)
        .expect("set QF_BENCH_MODEL to an F32 or F16 GGUF (see the module docs)");
    if let Ok(mode) = std::env::var("QF_BENCH_MODE") {
        let seqs = sequences(&model);
        // The peak is taken over the calibration alone, not the tokenization of the text.
        reset_peak_rss();
        let (secs, extra) = match mode.as_str() {
            "seam" => run_seam(&model, &seqs),
            "full" => run_full(&model, &seqs),
            other => panic!("QF_BENCH_MODE {other}: seam or full"),
        };
        println!("{mode}\t{secs:.2}\t{:.0}\t{extra}", peak_rss_mib());
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let file_mib = std::fs::metadata(&model).map(|m| m.len() as f64 / 1048576.0).unwrap_or(f64::NAN);
    println!("model {} ({file_mib:.0} MiB), {} threads", model.display(), rayon::current_num_threads());
    println!("| mode | time | peak RSS | notes |\n|---|---|---|---|");
    for mode in ["seam", "full"] {
        let out = std::process::Command::new(&exe).env("QF_BENCH_MODE", mode).output().expect("run mode");
        assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.trim().split('\t').collect();
        let label = if mode == "seam" { "block by block (calibration seam)" } else { "whole model loaded" };
        println!("| {label} | {} s | {} MiB | {} |", f[1], f[2], f[3]);
    }
}
