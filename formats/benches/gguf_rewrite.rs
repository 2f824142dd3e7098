//! Benchmark: read a ~1 GiB GGUF and rewrite it with the streaming writer, against a plain userspace file
//! copy of the same file (read/write with a 1 MiB buffer, then fsync, as the writer also syncs). Reports
//! throughput and the peak resident set of each phase.
//!
//! Run: `cargo bench -p quantforge-formats --bench gguf_rewrite` (Linux; set QF_BENCH_MB to change the size).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use quantforge_formats::gguf::{GgufFile, GgufValue, GgufWriter, TensorSpec};
use quantforge_formats::GgmlType;

#[path = "support/peak_rss.rs"]
mod peak_rss;
use peak_rss::{peak_rss_mib, reset_peak_rss};

fn make_input(path: &Path, mib: u64) {
    // Tensors of 32 MiB (F32 rows of 4096), like the large matrices of a 1-3B model, plus small norms.
    let n_big = mib / 32;
    let mut specs = Vec::new();
    for i in 0..n_big {
        specs.push(TensorSpec {
            name: format!("blk.{i}.ffn_up.weight"),
            ggml_type: GgmlType::F32,
            ne: vec![4096, 2048],
        });
        specs.push(TensorSpec { name: format!("blk.{i}.attn_norm.weight"), ggml_type: GgmlType::F32, ne: vec![4096] });
    }
    let meta = vec![("general.architecture".to_string(), GgufValue::String("llama".into()))];
    let mut w = GgufWriter::create(path, &meta, specs.clone()).unwrap();
    let mut buf = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let n = s.ne.iter().product::<u64>() as usize;
        buf.clear();
        buf.extend((0..n).flat_map(|j| ((j ^ i) as f32 * 1e-3).to_le_bytes()));
        w.write_tensor_data(&buf).unwrap();
    }
    w.finish().unwrap();
}

fn plain_copy(src: &Path, dst: &Path) {
    let mut r = File::open(src).unwrap();
    let mut w = File::create(dst).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).unwrap();
    }
    w.sync_all().unwrap();
}

fn rewrite(src: &Path, dst: &Path) {
    let f = GgufFile::open(src).unwrap();
    let specs = f
        .tensors()
        .iter()
        .map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.ggml_type, ne: t.ne.clone() })
        .collect();
    let mut w = GgufWriter::create(dst, f.metadata(), specs).unwrap();
    for t in f.tensors() {
        w.write_tensor_data(f.tensor_data_prefetched(t)).unwrap();
        f.release(t);
    }
    w.finish().unwrap();
}

fn time(label: &str, size: u64, runs: usize, mut f: impl FnMut()) {
    let mut secs = Vec::new();
    let mut peak = 0f64;
    for _ in 0..runs {
        reset_peak_rss();
        let t = Instant::now();
        f();
        secs.push(t.elapsed().as_secs_f64());
        peak = peak.max(peak_rss_mib());
    }
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    println!(
        "{label:<28} median {median:>6.3} s  {:>7.0} MiB/s  (best {:.3} s)  peak RSS {peak:.0} MiB",
        size as f64 / 1048576.0 / median,
        secs[0]
    );
}

fn main() {
    let mib: u64 = std::env::var("QF_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let dir: PathBuf = std::env::temp_dir().join("quantforge-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join(format!("synthetic-{mib}m.gguf"));
    if !input.exists() {
        make_input(&input, mib);
    }
    let size = std::fs::metadata(&input).unwrap().len();
    println!("input: {} ({:.0} MiB)", input.display(), size as f64 / 1048576.0);
    let out = dir.join("out.gguf");
    // Warm the page cache so both contenders read from memory.
    plain_copy(&input, &out);
    time("plain copy (read/write)", size, 5, || plain_copy(&input, &out));
    time("GGUF read + rewrite", size, 5, || rewrite(&input, &out));
    let a = std::fs::read(&input).unwrap();
    let b = std::fs::read(&out).unwrap();
    assert!(a == b, "rewrite differs from input");
    println!("rewrite is byte-identical to the input");
    let _ = std::fs::remove_file(&out);
}
