//! Every architecture `quantforge convert` supports (Llama/Mistral, Qwen2, Qwen3) and every RoPE scaling the
//! forward pass implements (linear, llama3, yarn), against an independent naive `f64` forward written here
//! from the transformers definitions (`modeling_llama`/`modeling_qwen2`/`modeling_qwen3`, `modeling_rope_utils`:
//! rotate-half RoPE on the safetensors' own q/k rows, HF inverse frequencies and attention scaling). Tiny
//! random checkpoints are written with the `safetensors` crate and run both from the HF directory and from the
//! F32 GGUF `convert` makes of them. Each case also checks that the reference moves by far more than the
//! tolerance when the feature under test is dropped, so a forward pass without it could not pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use quantforge_eval::{EvalError, LlamaModel};
use quantforge_formats::gguf::{GgufFile, GgufValue, GgufWriter, TensorSpec};
use quantforge_quant::convert::{ConvertedModel, OutType};
use quantforge_quant::progress::Silent;
use serde_json::{json, Value};

const D: usize = 32;
const N_HEAD: usize = 4;
const N_KV: usize = 2;
const FF: usize = 48;
const N_LAYER: usize = 2;
/// stories260K's tokenizer, which convert needs, has 512 tokens.
const VOCAB: usize = 512;
const TOL: f64 = 1e-4;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel)
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arch_reference").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deterministic uniform values in `[-1, 1)`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vec(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.next()).collect()
    }
}

/// One synthetic checkpoint: its config.json and f32 tensors.
struct Checkpoint {
    config: Value,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Checkpoint {
    /// Random weights for `arch` with head size `hd`; `extra` entries are merged into config.json.
    fn new(arch: &str, hd: usize, extra: Value, seed: u64) -> Checkpoint {
        let mut config = json!({
            "architectures": [arch], "hidden_size": D, "intermediate_size": FF, "num_hidden_layers": N_LAYER,
            "num_attention_heads": N_HEAD, "num_key_value_heads": N_KV, "head_dim": hd,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": VOCAB,
            "tie_word_embeddings": arch != "MistralForCausalLM", "bos_token_id": 1, "eos_token_id": 2,
            "torch_dtype": "float32"
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        let mut r = Rng(seed);
        let (qd, kvd) = (N_HEAD * hd, N_KV * hd);
        let lin = |r: &mut Rng, out: usize, inp: usize| r.vec(out * inp, 1.5 / (inp as f32).sqrt(), 0.0);
        let mut t = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, D], r.vec(VOCAB * D, 1.0, 0.0))];
        if config["tie_word_embeddings"] == json!(false) {
            t.push(("lm_head.weight".into(), vec![VOCAB, D], r.vec(VOCAB * D, 0.5, 0.0)));
        }
        t.push(("model.norm.weight".into(), vec![D], r.vec(D, 0.2, 1.0)));
        for l in 0..N_LAYER {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            t.push((p("input_layernorm.weight"), vec![D], r.vec(D, 0.2, 1.0)));
            t.push((p("post_attention_layernorm.weight"), vec![D], r.vec(D, 0.2, 1.0)));
            for (name, rows) in [("q_proj", qd), ("k_proj", kvd), ("v_proj", kvd)] {
                t.push((p(&format!("self_attn.{name}.weight")), vec![rows, D], lin(&mut r, rows, D)));
                if arch == "Qwen2ForCausalLM" {
                    t.push((p(&format!("self_attn.{name}.bias")), vec![rows], r.vec(rows, 0.8, 0.0)));
                }
            }
            if arch == "Qwen3ForCausalLM" {
                t.push((p("self_attn.q_norm.weight"), vec![hd], r.vec(hd, 0.5, 1.0)));
                t.push((p("self_attn.k_norm.weight"), vec![hd], r.vec(hd, 0.5, 1.0)));
            }
            t.push((p("self_attn.o_proj.weight"), vec![D, qd], lin(&mut r, D, qd)));
            t.push((p("mlp.gate_proj.weight"), vec![FF, D], lin(&mut r, FF, D)));
            t.push((p("mlp.up_proj.weight"), vec![FF, D], lin(&mut r, FF, D)));
            t.push((p("mlp.down_proj.weight"), vec![D, FF], lin(&mut r, D, FF)));
        }
        Checkpoint { config, tensors: t }
    }

    /// Write config.json, model.safetensors and stories260K's tokenizer files into `dir`.
    fn write(&self, dir: &Path) {
        for f in ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"] {
            std::fs::copy(fixture("stories260K").join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&self.config).unwrap()).unwrap();
        let bytes: Vec<Vec<u8>> =
            self.tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        let views = self.tensors.iter().zip(&bytes).map(|((name, shape, _), b)| {
            (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).unwrap())
        });
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    }
}

/// The naive forward pass, from the HF definitions, in `f64`.
#[derive(Clone)]
struct Reference {
    w: HashMap<String, (Vec<usize>, Vec<f64>)>,
    hd: usize,
    eps: f64,
    /// HF `inv_freq` (per rotated pair) and `attention_scaling` (multiplies cos and sin).
    inv_freq: Vec<f64>,
    attn_scaling: f64,
    /// HF's rotate-half pairs `(i, i + hd/2)`; `false` pairs adjacent dimensions instead (a wrong layout).
    rotate_half: bool,
    use_bias: bool,
    use_qk_norm: bool,
    /// Keys older than this many positions are masked (HF's sliding window), when set.
    window: Option<usize>,
}

impl Reference {
    fn new(ck: &Checkpoint) -> Reference {
        let c = &ck.config;
        let hd = c["head_dim"].as_u64().unwrap() as usize;
        let (inv_freq, attn_scaling) = hf_rope(c, hd);
        Reference {
            w: ck
                .tensors
                .iter()
                .map(|(n, s, v)| (n.clone(), (s.clone(), v.iter().map(|&x| f64::from(x)).collect())))
                .collect(),
            hd,
            eps: c["rms_norm_eps"].as_f64().unwrap(),
            inv_freq,
            attn_scaling,
            rotate_half: true,
            use_bias: true,
            use_qk_norm: true,
            window: None,
        }
    }

    /// `W x (+ b)` for a `[out, in]` weight.
    fn linear(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let (shape, w) = &self.w[&format!("{name}.weight")];
        let (out, inp) = (shape[0], shape[1]);
        let mut y: Vec<f64> = (0..out).map(|o| (0..inp).map(|i| w[o * inp + i] * x[i]).sum()).collect();
        if let (true, Some((_, b))) = (self.use_bias, self.w.get(&format!("{name}.bias"))) {
            y.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
        y
    }

    fn rms_norm(&self, x: &[f64], weight: &[f64]) -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let s = 1.0 / (ms + self.eps).sqrt();
        x.iter().zip(weight).map(|(v, w)| v * s * w).collect()
    }

    /// Qwen3's per-head norm (`q_norm`/`k_norm` over `head_dim`), when the checkpoint has one.
    fn head_norm(&self, x: &mut [f64], name: &str) {
        if let (true, Some((_, w))) = (self.use_qk_norm, self.w.get(name)) {
            for head in x.chunks_exact_mut(self.hd) {
                let n = self.rms_norm(head, w);
                head.copy_from_slice(&n);
            }
        }
    }

    /// HF `apply_rotary_pos_emb`: `x * cos + rotate_half(x) * sin` per head, cos/sin times the scaling.
    fn rope(&self, x: &mut [f64], pos: usize) {
        let half = self.hd / 2;
        for head in x.chunks_exact_mut(self.hd) {
            let orig = head.to_vec();
            for i in 0..half {
                let a = pos as f64 * self.inv_freq[i];
                let (c, s) = (a.cos() * self.attn_scaling, a.sin() * self.attn_scaling);
                let (j0, j1) = if self.rotate_half { (i, i + half) } else { (2 * i, 2 * i + 1) };
                head[j0] = orig[j0] * c - orig[j1] * s;
                head[j1] = orig[j1] * c + orig[j0] * s;
            }
        }
    }

    fn forward(&self, tokens: &[u32]) -> Vec<Vec<f64>> {
        let emb = &self.w["model.embed_tokens.weight"].1;
        let mut xs: Vec<Vec<f64>> = tokens.iter().map(|&t| emb[t as usize * D..][..D].to_vec()).collect();
        let (hd, group) = (self.hd, N_HEAD / N_KV);
        for l in 0..N_LAYER {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
            for (pos, x) in xs.iter().enumerate() {
                let xn = self.rms_norm(x, &self.w[&p("input_layernorm.weight")].1);
                let mut q = self.linear(&p("self_attn.q_proj"), &xn);
                let mut k = self.linear(&p("self_attn.k_proj"), &xn);
                self.head_norm(&mut q, &p("self_attn.q_norm.weight"));
                self.head_norm(&mut k, &p("self_attn.k_norm.weight"));
                self.rope(&mut q, pos);
                self.rope(&mut k, pos);
                qs.push(q);
                ks.push(k);
                vs.push(self.linear(&p("self_attn.v_proj"), &xn));
            }
            for (i, x) in xs.iter_mut().enumerate() {
                let first = self.window.map_or(0, |w| (i + 1).saturating_sub(w));
                let mut att = vec![0.0; N_HEAD * hd];
                for h in 0..N_HEAD {
                    let kh = h / group;
                    let q = &qs[i][h * hd..][..hd];
                    let scores: Vec<f64> = (first..=i)
                        .map(|j| {
                            q.iter().zip(&ks[j][kh * hd..][..hd]).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, ej) in (first..=i).zip(&e) {
                        for c in 0..hd {
                            att[h * hd + c] += ej / z * vs[j][kh * hd + c];
                        }
                    }
                }
                let o = self.linear(&p("self_attn.o_proj"), &att);
                x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let xn = self.rms_norm(x, &self.w[&p("post_attention_layernorm.weight")].1);
                let g = self.linear(&p("mlp.gate_proj"), &xn);
                let u = self.linear(&p("mlp.up_proj"), &xn);
                let hidden: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
                let down = self.linear(&p("mlp.down_proj"), &hidden);
                x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            }
        }
        let head = &self.w.get("lm_head.weight").unwrap_or(&self.w["model.embed_tokens.weight"]).1;
        xs.iter()
            .map(|x| {
                let xn = self.rms_norm(x, &self.w["model.norm.weight"].1);
                (0..VOCAB).map(|v| (0..D).map(|i| head[v * D + i] * xn[i]).sum()).collect()
            })
            .collect()
    }
}

/// transformers' `ROPE_INIT_FUNCTIONS` for the config's `rope_scaling`: `(inv_freq, attention_scaling)`.
fn hf_rope(c: &Value, dim: usize) -> (Vec<f64>, f64) {
    let base = c["rope_theta"].as_f64().unwrap();
    let inv: Vec<f64> = (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64)).collect();
    let rs = &c["rope_scaling"];
    let f = |k: &str| rs[k].as_f64().unwrap();
    match rs["rope_type"].as_str() {
        None => (inv, 1.0),
        Some("linear") => (inv.iter().map(|x| x / f("factor")).collect(), 1.0),
        Some("llama3") => {
            let (factor, low, high, old) =
                (f("factor"), f("low_freq_factor"), f("high_freq_factor"), f("original_max_position_embeddings"));
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            let out = inv
                .iter()
                .map(|&x| {
                    let wavelen = 2.0 * std::f64::consts::PI / x;
                    if wavelen < high_wavelen {
                        x
                    } else if wavelen > low_wavelen {
                        x / factor
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * x / factor + smooth * x
                    }
                })
                .collect();
            (out, 1.0)
        }
        Some("yarn") => {
            let orig = f("original_max_position_embeddings");
            let factor = c["max_position_embeddings"].as_f64().unwrap() / orig;
            let attention = if factor <= 1.0 { 1.0 } else { 0.1 * factor.ln() + 1.0 };
            let corr = |rot: f64| dim as f64 * (orig / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln());
            let low = corr(32.0).floor().max(0.0);
            let mut high = corr(1.0).ceil().min(dim as f64 - 1.0);
            if low == high {
                high += 0.001;
            }
            let out = inv
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let extrapolation = 1.0 - ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    x / factor * (1.0 - extrapolation) + x * extrapolation
                })
                .collect();
            (out, attention)
        }
        Some(other) => panic!("no reference for {other}"),
    }
}

fn tokens(seed: u64, n: usize) -> Vec<u32> {
    let mut r = Rng(seed);
    std::iter::once(1).chain((1..n).map(|_| ((r.next() + 1.0) * 256.0) as u32 % VOCAB as u32)).collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Largest |logit - reference| over both sequences of one batched forward.
fn worst_error(model: &LlamaModel, reference: &Reference, seqs: &[&[u32]]) -> (f64, Vec<f32>) {
    let logits = model.forward(seqs, 0).unwrap();
    let want: Vec<Vec<f64>> = seqs.iter().flat_map(|s| reference.forward(s)).collect();
    assert_eq!(logits.len(), want.len() * VOCAB);
    let got: Vec<Vec<f64>> = logits.chunks(VOCAB).map(|r| r.iter().map(|&v| f64::from(v)).collect()).collect();
    (max_diff(&got, &want), logits)
}

/// Convert `dir` to an F32 GGUF next to it.
fn convert(dir: &Path) -> PathBuf {
    let out = dir.with_extension("gguf");
    ConvertedModel::open(dir, OutType::F32).unwrap().write_gguf(&out, &Silent, None).unwrap();
    out
}

/// Run the checkpoint from its HF directory and from its converted GGUF against the reference, and check that
/// each `(what, variant)` of the reference without the feature under test is far off.
fn check(name: &str, ck: &Checkpoint, wrong: &[(&str, Reference)]) {
    let dir = scratch(name).join("hf");
    std::fs::create_dir_all(&dir).unwrap();
    ck.write(&dir);
    let reference = Reference::new(ck);
    let (a, b) = (tokens(7, 40), tokens(11, 23));
    let seqs: [&[u32]; 2] = [&a, &b];
    let (hf_err, hf_logits) = worst_error(&LlamaModel::load(&dir).unwrap(), &reference, &seqs);
    let gguf = convert(&dir);
    let (gguf_err, gguf_logits) = worst_error(&LlamaModel::load(&gguf).unwrap(), &reference, &seqs);
    assert!(hf_err < TOL && gguf_err < TOL, "{name}: max |logit - reference| HF {hf_err}, GGUF {gguf_err}");
    // The converted file holds the same values (permuted or not, factors generated by the same code).
    assert_eq!(hf_logits, gguf_logits, "{name}: HF directory and converted GGUF disagree");
    let want = reference.forward(&a);
    for (what, variant) in wrong {
        let off = max_diff(&variant.forward(&a), &want);
        assert!(off > 100.0 * TOL, "{name}: the reference {what} moves only {off}; the check would be blind");
    }
}

#[test]
fn mistral_runs_as_llama_with_permuted_qk_and_no_sliding_window() {
    // A window shorter than the 40-token sequence: llama.cpp runs Mistral as `llama` (convert does not record
    // the window, the llama graph has no SWA), so attention stays fully causal, unlike transformers.
    let ck = Checkpoint::new("MistralForCausalLM", 8, json!({"sliding_window": 8}), 1);
    let r = Reference::new(&ck);
    let adjacent = Reference { rotate_half: false, ..r.clone() };
    let windowed = Reference { window: Some(8), ..r };
    check("mistral", &ck, &[("with adjacent-pair RoPE on HF rows", adjacent), ("with the window", windowed)]);
}

#[test]
fn qwen2_adds_qkv_biases_and_uses_neox_rope() {
    let ck = Checkpoint::new("Qwen2ForCausalLM", 8, json!({}), 2);
    let r = Reference::new(&ck);
    let no_bias = Reference { use_bias: false, ..r.clone() };
    let adjacent = Reference { rotate_half: false, ..r };
    check("qwen2", &ck, &[("without biases", no_bias), ("with adjacent-pair RoPE", adjacent)]);
}

#[test]
fn qwen3_normalizes_q_and_k_per_head_with_a_wider_head() {
    // head_dim 16 while hidden_size / heads = 8.
    let ck = Checkpoint::new("Qwen3ForCausalLM", 16, json!({}), 3);
    let r = Reference::new(&ck);
    let no_norm = Reference { use_qk_norm: false, ..r.clone() };
    let adjacent = Reference { rotate_half: false, ..r };
    check("qwen3", &ck, &[("without q/k norms", no_norm), ("with adjacent-pair RoPE", adjacent)]);
}

/// The reference without the config's RoPE scaling.
fn unscaled(r: &Reference) -> Reference {
    let theta: f64 = 10000.0;
    let base = (0..r.hd / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / r.hd as f64)).collect();
    Reference { inv_freq: base, attn_scaling: 1.0, ..r.clone() }
}

#[test]
fn llama_linear_and_llama3_rope_scaling() {
    let linear = json!({"rope_scaling": {"rope_type": "linear", "factor": 2.0}, "tie_word_embeddings": false});
    let ck = Checkpoint::new("LlamaForCausalLM", 8, linear, 4);
    let r = Reference::new(&ck);
    check("llama-linear", &ck, &[("unscaled", unscaled(&r))]);

    // Pair frequencies 1, 0.1, 0.01, 0.001 (wavelengths 6.3, 63, 628, 6283) against 128 / 1 and 128 / 4:
    // one pair kept, one smoothed, two divided by the factor. transformers reads the original context inside
    // rope_scaling, convert at the top level: both are given.
    let l3 = json!({"original_max_position_embeddings": 128, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 128}});
    let ck = Checkpoint::new("LlamaForCausalLM", 8, l3, 5);
    let r = Reference::new(&ck);
    assert!(r.inv_freq[1] < 0.09 && r.inv_freq[1] > 0.02, "the second pair is smoothed: {}", r.inv_freq[1]);
    check("llama3", &ck, &[("unscaled", unscaled(&r))]);
}

#[test]
fn yarn_rope_scaling_on_neox_and_norm_layouts() {
    // factor 4 = 256 / 64; correction range: pair 0 extrapolated, pair 1 half-way, pairs 2-3 interpolated.
    let yarn = json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}});
    for (arch, seed) in [("Qwen2ForCausalLM", 6), ("LlamaForCausalLM", 7), ("Qwen3ForCausalLM", 8)] {
        let ck = Checkpoint::new(arch, 8, yarn.clone(), seed);
        let r = Reference::new(&ck);
        assert!((r.attn_scaling - (1.0 + 0.1 * 4f64.ln())).abs() < 1e-12);
        let no_mscale = Reference { attn_scaling: 1.0, ..r.clone() };
        check(&format!("yarn-{arch}"), &ck, &[("unscaled", unscaled(&r)), ("without the magnitude", no_mscale)]);
    }
}

/// Copy `src` to `dst` with `edit` applied to its metadata and only the tensors `keep` accepts.
fn rewrite_gguf(src: &Path, dst: &Path, edit: impl Fn(&mut Vec<(String, GgufValue)>), keep: impl Fn(&str) -> bool) {
    let g = GgufFile::open(src).unwrap();
    let mut kv = g.metadata().to_vec();
    edit(&mut kv);
    let tensors: Vec<_> = g.tensors().iter().filter(|t| keep(&t.name)).collect();
    let specs =
        tensors.iter().map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.ggml_type, ne: t.ne.clone() }).collect();
    let mut w = GgufWriter::create(dst, &kv, specs).unwrap();
    for t in tensors {
        w.write_tensor(&t.name, g.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
}

fn set(kv: &mut Vec<(String, GgufValue)>, key: &str, value: GgufValue) {
    match kv.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => kv.push((key.into(), value)),
    }
}

#[test]
fn gguf_rope_keys_and_unsupported_values() {
    let dir = scratch("gguf-keys").join("hf");
    std::fs::create_dir_all(&dir).unwrap();
    let yarn = json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
        "beta_fast": 4.0, "beta_slow": 2.0, "attention_factor": 3.0}});
    Checkpoint::new("Qwen2ForCausalLM", 8, yarn, 9).write(&dir);
    let gguf = convert(&dir);
    let g = GgufFile::open(&gguf).unwrap();
    // convert records the YaRN extras; llama.cpp does not read them for qwen2, and neither do we.
    assert!(g.get("qwen2.rope.scaling.yarn_beta_fast").is_some());
    let a = tokens(3, 30);
    let base = LlamaModel::load(&gguf).unwrap().forward(&[&a], 0).unwrap();
    let all = |_: &str| true;
    let stripped = gguf.with_file_name("stripped.gguf");
    rewrite_gguf(&gguf, &stripped, |kv| kv.retain(|(k, _)| !k.contains(".yarn_")), all);
    assert_eq!(LlamaModel::load(&stripped).unwrap().forward(&[&a], 0).unwrap(), base);
    // `none` ignores the factor; the same file without any scaling key gives the same logits.
    let none = gguf.with_file_name("none.gguf");
    rewrite_gguf(&gguf, &none, |kv| set(kv, "qwen2.rope.scaling.type", GgufValue::String("none".into())), all);
    let unscaled = gguf.with_file_name("unscaled.gguf");
    rewrite_gguf(&gguf, &unscaled, |kv| kv.retain(|(k, _)| !k.starts_with("qwen2.rope.scaling.")), all);
    let none_logits = LlamaModel::load(&none).unwrap().forward(&[&a], 0).unwrap();
    assert_eq!(none_logits, LlamaModel::load(&unscaled).unwrap().forward(&[&a], 0).unwrap());
    assert_ne!(none_logits, base);
    // Without a type key llama.cpp assumes linear scaling by the factor.
    let linear = gguf.with_file_name("linear.gguf");
    rewrite_gguf(&gguf, &linear, |kv| kv.retain(|(k, _)| k != "qwen2.rope.scaling.type"), all);
    let linear_logits = LlamaModel::load(&linear).unwrap().forward(&[&a], 0).unwrap();
    assert!(linear_logits != base && linear_logits != none_logits);

    let bad = gguf.with_file_name("bad.gguf");
    rewrite_gguf(&gguf, &bad, |kv| set(kv, "qwen2.rope.scaling.type", GgufValue::String("longrope".into())), all);
    let e = LlamaModel::load(&bad).unwrap_err();
    assert!(matches!(e, EvalError::UnsupportedRopeScaling { .. }), "{e}");
    assert!(e.to_string().contains("'longrope'"), "{e}");
    rewrite_gguf(&gguf, &bad, |kv| set(kv, "general.architecture", GgufValue::String("gemma".into())), all);
    let e = LlamaModel::load(&bad).unwrap_err().to_string();
    assert!(
        e.contains("'gemma'")
            && e.contains("gemma2, gemma3, granite, llama, olmo2, phi3, qwen2, qwen2moe, qwen3, qwen3moe, smollm3"),
        "{e}"
    );
    // Qwen2 needs its Q/K/V biases.
    rewrite_gguf(&gguf, &bad, |_| {}, |name| name != "blk.1.attn_k.bias");
    let e = LlamaModel::load(&bad).unwrap_err().to_string();
    assert!(e.contains("blk.1.attn_k.bias"), "{e}");
}

/// An `olmo2` file with a sliding window (what llama.cpp's converter writes for OLMo 3, whose layers llama.cpp then
/// slides) is refused by key, and so is one without `output.weight` (llama.cpp requires OLMo 2's head).
#[test]
fn olmo2_files_llama_cpp_would_run_otherwise_are_refused() {
    let src = fixture("archs/olmo2/llama.cpp-f32.gguf");
    let dir = scratch("olmo2-refused");
    std::fs::create_dir_all(&dir).unwrap();
    let all = |_: &str| true;
    let zero = dir.join("zero-window.gguf");
    rewrite_gguf(&src, &zero, |kv| set(kv, "olmo2.attention.sliding_window", GgufValue::U32(0)), all);
    assert!(LlamaModel::load(&zero).is_ok());
    let olmo3 = dir.join("window.gguf");
    rewrite_gguf(&src, &olmo3, |kv| set(kv, "olmo2.attention.sliding_window", GgufValue::U32(16)), all);
    let e = LlamaModel::load(&olmo3).unwrap_err().to_string();
    assert!(e.contains("olmo2.attention.sliding_window") && e.contains("OLMo 3"), "{e}");
    let headless = dir.join("headless.gguf");
    rewrite_gguf(&src, &headless, |_| {}, |name| name != "output.weight");
    let e = LlamaModel::load(&headless).unwrap_err().to_string();
    assert!(e.contains("output.weight"), "{e}");
}
