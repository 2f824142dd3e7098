//! The forward pass against an independent reference: a naive `f64` Llama forward written here from the HF
//! definition (rotate-half RoPE on the safetensors' own q/k layout), on the committed stories260K model.

use std::path::{Path, PathBuf};

use quantforge_eval::LlamaModel;
use safetensors::SafeTensors;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel)
}

struct Reference {
    t: std::collections::HashMap<String, (Vec<usize>, Vec<f64>)>,
    d: usize,
    ff: usize,
    n_layer: usize,
    n_head: usize,
    n_kv: usize,
    hd: usize,
    vocab: usize,
    eps: f64,
    theta: f64,
}

impl Reference {
    fn load() -> Reference {
        let bytes = std::fs::read(fixture("stories260K/model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut t = std::collections::HashMap::new();
        for (name, view) in st.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            let vals =
                view.data().chunks_exact(4).map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect();
            t.insert(name, (view.shape().to_vec(), vals));
        }
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture("stories260K/config.json")).unwrap()).unwrap();
        let u = |k: &str| cfg[k].as_u64().unwrap() as usize;
        Reference {
            t,
            d: u("hidden_size"),
            ff: u("intermediate_size"),
            n_layer: u("num_hidden_layers"),
            n_head: u("num_attention_heads"),
            n_kv: u("num_key_value_heads"),
            hd: u("head_dim"),
            vocab: u("vocab_size"),
            eps: cfg["rms_norm_eps"].as_f64().unwrap(),
            theta: cfg["rope_theta"].as_f64().unwrap(),
        }
    }

    fn w(&self, name: &str) -> &[f64] {
        &self.t.get(name).unwrap_or_else(|| panic!("{name}")).1
    }

    /// `W x` for a `[out, in]` weight.
    fn linear(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let (shape, w) = &self.t[name];
        let (out, inp) = (shape[0], shape[1]);
        assert_eq!(x.len(), inp);
        (0..out).map(|o| (0..inp).map(|i| w[o * inp + i] * x[i]).sum()).collect()
    }

    fn rms_norm(&self, x: &[f64], name: &str) -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let s = 1.0 / (ms + self.eps).sqrt();
        x.iter().zip(self.w(name)).map(|(v, w)| v * s * w).collect()
    }

    /// HF `apply_rotary_pos_emb`: rotate-half on each head.
    fn rope(&self, x: &mut [f64], pos: usize) {
        let half = self.hd / 2;
        for head in x.chunks_exact_mut(self.hd) {
            let orig = head.to_vec();
            for i in 0..half {
                let freq = self.theta.powf(-2.0 * i as f64 / self.hd as f64);
                let (c, s) = ((pos as f64 * freq).cos(), (pos as f64 * freq).sin());
                head[i] = orig[i] * c - orig[i + half] * s;
                head[i + half] = orig[i + half] * c + orig[i] * s;
            }
        }
    }

    fn forward(&self, tokens: &[u32]) -> Vec<Vec<f64>> {
        let emb = self.w("model.embed_tokens.weight");
        let mut xs: Vec<Vec<f64>> = tokens.iter().map(|&t| emb[t as usize * self.d..][..self.d].to_vec()).collect();
        let group = self.n_head / self.n_kv;
        for l in 0..self.n_layer {
            let p = |s: &str| format!("model.layers.{l}.{s}.weight");
            let mut qs = Vec::new();
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            for (pos, x) in xs.iter().enumerate() {
                let xn = self.rms_norm(x, &p("input_layernorm"));
                let mut q = self.linear(&p("self_attn.q_proj"), &xn);
                let mut k = self.linear(&p("self_attn.k_proj"), &xn);
                self.rope(&mut q, pos);
                self.rope(&mut k, pos);
                qs.push(q);
                ks.push(k);
                vs.push(self.linear(&p("self_attn.v_proj"), &xn));
            }
            for (i, x) in xs.iter_mut().enumerate() {
                let mut att = vec![0.0; self.n_head * self.hd];
                for h in 0..self.n_head {
                    let kh = h / group;
                    let q = &qs[i][h * self.hd..][..self.hd];
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            let k = &ks[j][kh * self.hd..][..self.hd];
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (self.hd as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, ej) in e.iter().enumerate() {
                        for c in 0..self.hd {
                            att[h * self.hd + c] += ej / z * vs[j][kh * self.hd + c];
                        }
                    }
                }
                let o = self.linear(&p("self_attn.o_proj"), &att);
                x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let xn = self.rms_norm(x, &p("post_attention_layernorm"));
                let g = self.linear(&p("mlp.gate_proj"), &xn);
                let u = self.linear(&p("mlp.up_proj"), &xn);
                let hidden: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
                assert_eq!(hidden.len(), self.ff);
                let down = self.linear(&p("mlp.down_proj"), &hidden);
                x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            }
        }
        xs.iter()
            .map(|x| {
                let xn = self.rms_norm(x, "model.norm.weight");
                (0..self.vocab).map(|v| (0..self.d).map(|i| emb[v * self.d + i] * xn[i]).sum()).collect()
            })
            .collect()
    }
}

#[test]
fn stories260k_logits_match_naive_f64_forward() {
    let reference = Reference::load();
    // BOS, then a fixed pseudo-random walk over the vocabulary; two sequences of different lengths.
    let mut s = 12345u64;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u32 % 512
    };
    let a: Vec<u32> = std::iter::once(1).chain((0..47).map(|_| next())).collect();
    let b: Vec<u32> = std::iter::once(1).chain((0..20).map(|_| next())).collect();

    let model = LlamaModel::load(&fixture("stories260K")).unwrap();
    let logits = model.forward(&[&a, &b], 0).unwrap();
    let n_vocab = model.config().n_vocab;
    assert_eq!(logits.len(), (a.len() + b.len()) * n_vocab);

    let mut worst = 0.0f64;
    let mut row = 0;
    for seq in [&a, &b] {
        for want in reference.forward(seq) {
            let got = &logits[row * n_vocab..(row + 1) * n_vocab];
            for (g, w) in got.iter().zip(&want) {
                worst = worst.max((f64::from(*g) - w).abs());
            }
            row += 1;
        }
    }
    assert!(worst < 1e-4, "max |logit - reference| = {worst}");

    // Only the requested tail positions come back, with the same values.
    let tail = model.forward(&[&a], 40).unwrap();
    assert_eq!(tail.len(), 8 * n_vocab);
    assert_eq!(&tail[..], &logits[40 * n_vocab..48 * n_vocab]);
}
