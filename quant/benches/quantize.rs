//! Benchmark: quantize a 1.1B-parameter F16 model of TinyLlama's shape (22 layers, n_embd 2048, n_ff 5632,
//! vocab 32000) to Q8_0, Q6_K and Q4_K_M with the full pipeline (read, dequantize, quantize, write), and
//! report wall time and peak resident memory per type. The model (2.2 GB, synthetic weights) is generated
//! once into the system temp dir.
//!
//! Run: `cargo bench -p quantforge-quant --bench quantize` (Linux). `QF_BENCH_TYPES=Q4_K_M,Q8_0` picks types,
//! `QF_BENCH_THREADS=2` the thread count. `QF_BENCH_WRITE_MODEL=DIR` only writes the model
//! (`DIR/tinyllama-shape-f16.gguf`) and a synthetic importance matrix for it in llama.cpp's GGUF layout
//! (`DIR/tinyllama-shape-imatrix.gguf`, one entry per matrix a forward pass multiplies, as `llama-imatrix`
//! records them) and exits, for timing other tools on the same input (`scripts/bench-iquants.sh`).

use std::path::Path;
use std::time::Instant;

use half::f16;
use quantforge_formats::gguf::{GgufFile, GgufValue, GgufWriter, TensorSpec};
use quantforge_formats::GgmlType;
use quantforge_quant::pipeline::{self, QuantizeOptions};
use quantforge_quant::progress::Silent;

#[path = "../../formats/benches/support/peak_rss.rs"]
mod peak_rss;
use peak_rss::{peak_rss_mib, reset_peak_rss};

const N_LAYER: u32 = 22;
const N_EMBD: u64 = 2048;
const N_FF: u64 = 5632;
const N_VOCAB: u64 = 32000;
const N_HEAD: u32 = 32;
const N_HEAD_KV: u32 = 4;

fn specs() -> Vec<TensorSpec> {
    let kv = N_EMBD / u64::from(N_HEAD) * u64::from(N_HEAD_KV);
    let t = |name: String, ty: GgmlType, ne: Vec<u64>| TensorSpec { name, ggml_type: ty, ne };
    let mut v = vec![
        t("token_embd.weight".into(), GgmlType::F16, vec![N_EMBD, N_VOCAB]),
        t("output_norm.weight".into(), GgmlType::F32, vec![N_EMBD]),
        t("output.weight".into(), GgmlType::F16, vec![N_EMBD, N_VOCAB]),
    ];
    for i in 0..N_LAYER {
        let b = |s: &str| format!("blk.{i}.{s}.weight");
        v.push(t(b("attn_norm"), GgmlType::F32, vec![N_EMBD]));
        v.push(t(b("attn_q"), GgmlType::F16, vec![N_EMBD, N_EMBD]));
        v.push(t(b("attn_k"), GgmlType::F16, vec![N_EMBD, kv]));
        v.push(t(b("attn_v"), GgmlType::F16, vec![N_EMBD, kv]));
        v.push(t(b("attn_output"), GgmlType::F16, vec![N_EMBD, N_EMBD]));
        v.push(t(b("ffn_norm"), GgmlType::F32, vec![N_EMBD]));
        v.push(t(b("ffn_gate"), GgmlType::F16, vec![N_EMBD, N_FF]));
        v.push(t(b("ffn_up"), GgmlType::F16, vec![N_EMBD, N_FF]));
        v.push(t(b("ffn_down"), GgmlType::F16, vec![N_FF, N_EMBD]));
    }
    v
}

/// xorshift64* step: a uniform value in [0, 1).
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    ((state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32) / (1u64 << 24) as f32
}

fn make_model(path: &Path) {
    let s = |x: &str| GgufValue::String(x.into());
    let meta = vec![
        ("general.architecture".to_string(), s("llama")),
        ("general.name".to_string(), s("synthetic-tinyllama-shape")),
        ("llama.block_count".to_string(), GgufValue::U32(N_LAYER)),
        ("llama.context_length".to_string(), GgufValue::U32(2048)),
        ("llama.embedding_length".to_string(), GgufValue::U32(N_EMBD as u32)),
        ("llama.feed_forward_length".to_string(), GgufValue::U32(N_FF as u32)),
        ("llama.attention.head_count".to_string(), GgufValue::U32(N_HEAD)),
        ("llama.attention.head_count_kv".to_string(), GgufValue::U32(N_HEAD_KV)),
        ("llama.rope.freq_base".to_string(), GgufValue::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon".to_string(), GgufValue::F32(1e-5)),
        ("general.file_type".to_string(), GgufValue::U32(1)),
    ];
    let specs = specs();
    let mut w = GgufWriter::create(path, &meta, specs.clone()).expect("create model");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = Vec::new();
    for spec in &specs {
        let n = spec.ne.iter().product::<u64>() as usize;
        buf.clear();
        for _ in 0..n {
            // xorshift64*; a sum of 4 uniforms is close enough to the bell shape of real weights.
            let acc: f32 = (0..4).map(|_| uniform(&mut state)).sum();
            let x = (acc - 2.0) * 0.035;
            if spec.ggml_type == GgmlType::F32 {
                buf.extend_from_slice(&(1.0 + x).to_le_bytes());
            } else {
                buf.extend_from_slice(&f16::from_f32(x).to_le_bytes());
            }
        }
        w.write_tensor_data(&buf).expect("write");
    }
    w.finish().expect("finish");
}

/// An importance matrix for the model: `in_sum2` and `counts` per matrix (all but `token_embd`, which is
/// looked up, not multiplied), sorted by name, 8 chunks of 512 tokens. The mean of x² per input column is
/// log-normal around 0.2 (spread e^±1.4), always positive, as activations of a real model are.
fn make_imatrix(path: &Path) {
    const CHUNKS: u32 = 8;
    const CHUNK_SIZE: u32 = 512;
    let count = (CHUNKS * CHUNK_SIZE) as f32;
    let mut names: Vec<(String, u64)> = specs()
        .into_iter()
        .filter(|s| s.ne.len() == 2 && s.name != "token_embd.weight")
        .map(|s| (s.name, s.ne[0]))
        .collect();
    names.sort();
    let mut tensors = Vec::new();
    for (name, ne0) in &names {
        tensors.push(TensorSpec { name: format!("{name}.in_sum2"), ggml_type: GgmlType::F32, ne: vec![*ne0] });
        tensors.push(TensorSpec { name: format!("{name}.counts"), ggml_type: GgmlType::F32, ne: vec![1] });
    }
    let meta = vec![
        ("general.architecture".to_string(), GgufValue::String("llama".into())),
        ("general.type".to_string(), GgufValue::String("imatrix".into())),
        ("imatrix.datasets".to_string(), GgufValue::Array(vec!["synthetic".to_string()].into())),
        ("imatrix.chunk_count".to_string(), GgufValue::U32(CHUNKS)),
        ("imatrix.chunk_size".to_string(), GgufValue::U32(CHUNK_SIZE)),
    ];
    let mut w = GgufWriter::create(path, &meta, tensors).expect("create imatrix");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for (_, ne0) in &names {
        let mut buf = Vec::with_capacity(*ne0 as usize * 4);
        for _ in 0..*ne0 {
            let g: f32 = (0..4).map(|_| uniform(&mut state)).sum::<f32>() - 2.0;
            let mean_sq = 0.2 * (2.4 * g).exp();
            buf.extend_from_slice(&(mean_sq * count).to_le_bytes());
        }
        w.write_tensor_data(&buf).expect("write");
        w.write_tensor_data(&count.to_le_bytes()).expect("write");
    }
    w.finish().expect("finish");
}

fn main() {
    if let Some(dir) = std::env::var_os("QF_BENCH_WRITE_MODEL") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("model dir");
        make_model(&dir.join("tinyllama-shape-f16.gguf"));
        make_imatrix(&dir.join("tinyllama-shape-imatrix.gguf"));
        println!("wrote {}/tinyllama-shape-{{f16,imatrix}}.gguf", dir.display());
        return;
    }
    let threads: usize = std::env::var("QF_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("thread pool");
    let types = std::env::var("QF_BENCH_TYPES").unwrap_or_else(|_| "Q8_0,Q6_K,Q4_K_M".into());
    let dir = std::env::temp_dir().join("quantforge-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let model = dir.join("tinyllama-shape-f16.gguf");
    if !model.exists() {
        println!("generating {} ...", model.display());
        make_model(&model);
    }
    let input = GgufFile::open(&model).expect("open model");
    println!(
        "input: {} ({:.2} GB, {:.2} B params), {threads} threads",
        model.display(),
        input.file_size() as f64 / 1e9,
        input.n_elements() as f64 / 1e9
    );
    for ty in types.split(',') {
        let options = QuantizeOptions::new(ty.parse().expect("file type"));
        let out = dir.join(format!("out-{ty}.gguf"));
        reset_peak_rss();
        let t = Instant::now();
        let plan = pipeline::plan(&input, &options).expect("plan");
        pipeline::execute(&input, &plan, &options, &out, &Silent).expect("quantize");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{ty:<7} {secs:>7.1} s  {:>6.1} M weights/s  peak RSS {:>6.0} MiB  output {:.2} GB ({:.2} BPW)",
            input.n_elements() as f64 / secs / 1e6,
            peak_rss_mib(),
            plan.output_bytes() as f64 / 1e9,
            plan.bits_per_weight()
        );
        let _ = std::fs::remove_file(&out);
    }
}
