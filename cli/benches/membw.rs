//! A STREAM-like memory-bandwidth bench, to give `quantforge estimate --bandwidth` this machine's figure.
//!
//! `cargo bench -p quantforge-cli --bench membw [-- SIZE_MIB]`. Reports the best of several passes for
//! `read` (sum a large array: what decoding does to weights), `copy` (a -> b, counted as read + write
//! bytes, as STREAM counts them) and `triad` (a = b + s*c), on one thread and on all threads. Arrays are far
//! larger than any cache (256 MiB each by default), so the figure is DRAM bandwidth.

use std::hint::black_box;
use std::time::Instant;

use rayon::prelude::*;

const PASSES: usize = 5;
const CHUNK: usize = 1 << 16;

fn best<F: FnMut()>(bytes: usize, mut f: F) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..PASSES {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    bytes as f64 / best / 1e9
}

fn run(label: &str, a: &mut [f64], b: &mut [f64], c: &[f64]) {
    let n = a.len();
    let bytes = n * 8;
    let read = best(bytes, || {
        // Eight independent accumulators, so the sum is limited by memory, not by the latency of one
        // dependent chain of additions.
        let s: f64 = a
            .par_chunks(CHUNK)
            .map(|ch| {
                let mut acc = [0.0f64; 8];
                for block in ch.chunks_exact(8) {
                    for (x, y) in acc.iter_mut().zip(block) {
                        *x += y;
                    }
                }
                acc.iter().sum::<f64>()
            })
            .sum();
        black_box(s);
    });
    let copy = best(2 * bytes, || {
        b.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(dst, src)| dst.copy_from_slice(src));
        black_box(&b);
    });
    let triad = best(3 * bytes, || {
        a.par_chunks_mut(CHUNK).zip(b.par_chunks(CHUNK)).zip(c.par_chunks(CHUNK)).for_each(|((x, y), z)| {
            for i in 0..x.len() {
                x[i] = y[i] + 3.0 * z[i];
            }
        });
        black_box(&a);
    });
    println!("{label:<12} read {read:7.2} GB/s   copy {copy:7.2} GB/s   triad {triad:7.2} GB/s");
}

fn main() {
    // `cargo bench` passes `--bench`; the first number, if any, is the array size in MiB.
    let mib: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(256);
    let n = mib * 1024 * 1024 / 8;
    let mut a = vec![1.0f64; n];
    let mut b = vec![2.0f64; n];
    let c = vec![0.5f64; n];
    println!("arrays: 3 x {mib} MiB, best of {PASSES} passes");
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("thread pool");
    one.install(|| run("1 thread", &mut a, &mut b, &c));
    let all = rayon::current_num_threads();
    run(&format!("{all} threads"), &mut a, &mut b, &c);
}
