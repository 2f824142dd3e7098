//! The forward pass with its matrix products on burn's CPU backend (`--features burn-cpu`) against the default
//! `gemm` path, on the committed stories260K model: the same logits and the same perplexity.

#![cfg(feature = "burn-cpu")]

use std::path::{Path, PathBuf};

use quantforge_eval::{perplexity, Device, LlamaModel, PerplexityOptions, Tokenizer};
use quantforge_quant::progress::Silent;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel)
}

fn model_on(device: Device) -> LlamaModel {
    let mut model = LlamaModel::load(&fixture("stories260K")).unwrap();
    model.set_device(device).unwrap();
    assert_eq!(model.device(), device);
    model
}

#[test]
fn burn_cpu_logits_match_gemm() {
    // BOS, then a fixed pseudo-random walk over the vocabulary; two sequences of different lengths.
    let mut s = 987654321u64;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u32 % 512
    };
    let a: Vec<u32> = std::iter::once(1).chain((0..95).map(|_| next())).collect();
    let b: Vec<u32> = std::iter::once(1).chain((0..30).map(|_| next())).collect();

    let cpu = model_on(Device::Cpu).forward(&[&a, &b], 0).unwrap();
    let burn = model_on(Device::BurnCpu).forward(&[&a, &b], 0).unwrap();
    assert_eq!(cpu.len(), burn.len());
    assert_eq!(cpu.len(), (a.len() + b.len()) * 512);
    let worst = cpu.iter().zip(&burn).map(|(c, b)| (c - b).abs()).fold(0.0f32, f32::max);
    eprintln!("max |logit(gemm) - logit(burn-cpu)| = {worst:e}");
    assert!(worst < 1e-4, "max |logit(gemm) - logit(burn-cpu)| = {worst}");
    assert!(burn.iter().all(|v| v.is_finite()));
}

#[test]
fn burn_cpu_perplexity_matches_gemm() {
    let text = std::fs::read_to_string(fixture("text/tinystories-valid-sample.txt")).unwrap();
    let tokenizer = Tokenizer::load(&fixture("stories260K")).unwrap();
    let tokens = tokenizer.encode(&text, true).unwrap();
    let opts = PerplexityOptions { n_ctx: 128, n_chunks: Some(4), n_batch: 256 };
    let ppl = |device| perplexity(&model_on(device), &tokens, tokenizer.bos_if_added(), &opts, &Silent).unwrap().ppl;
    let (cpu, burn) = (ppl(Device::Cpu), ppl(Device::BurnCpu));
    eprintln!("ppl gemm {cpu} burn-cpu {burn} (relative difference {:e})", ((burn - cpu) / cpu).abs());
    assert!(cpu > 1.5 && cpu < 12.0, "ppl {cpu}");
    assert!(((burn - cpu) / cpu).abs() < 1e-5, "ppl gemm {cpu} vs burn-cpu {burn}");
}

#[test]
fn devices_not_built_are_refused() {
    assert_eq!("burn-cpu".parse::<Device>().unwrap(), Device::BurnCpu);
    let mut model = model_on(Device::Cpu);
    if !cfg!(feature = "burn-wgpu") {
        let err = model.set_device(Device::Wgpu).unwrap_err().to_string();
        assert_eq!(err, "this build has no wgpu support (build with --features burn-wgpu)");
        assert_eq!(model.device(), Device::Cpu);
    }
}
