//! The mixture-of-experts feed-forward network, as llama.cpp's `build_moe_ffn` (`src/llama-graph.cpp` at
//! 0c1e57098, `LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX`) computes it for Mixtral (`src/models/llama.cpp`),
//! Qwen2-MoE (`qwen2moe.cpp`) and Qwen3-MoE (`qwen3moe.cpp`):
//!
//! 1. router logits `ffn_gate_inp · x` (one per expert), softmax;
//! 2. the `expert_used_count` most probable experts (ties to the lower index), their probabilities as
//!    weights, divided by their sum where the architecture renormalizes ([`MoeRouting::normalizes`]);
//! 3. each selected expert's SwiGLU `down(silu(gate(x)) * up(x))` times its weight, summed over the
//!    selected experts in selection order;
//! 4. Qwen2-MoE adds the shared expert's SwiGLU times `sigmoid(ffn_gate_inp_shexp · x)`.
//!
//! Tokens are grouped by expert so that each expert's matrices are multiplied once per batch (one matrix
//! product of the tokens routed to it), the way a batched CPU implementation should; the result does not
//! depend on the grouping (each token's output is summed in its own selection order).

use quantforge_formats::arch::{MoeRouting, SharedExpert};
use quantforge_quant::calibrate::split_expert_slice;
use rayon::prelude::*;

use crate::blocks::Observer;
use crate::config::{LlamaConfig, MoeConfig};
use crate::device::Matmul;
use crate::error::Result;
use crate::ops;
use crate::weights::{Matrix, Source};

/// Values of router logits and weighted expert outputs held at once (64 MiB of f32): the tokens of a batch
/// go through the experts in chunks of this size, whatever the expert counts a file states.
const CHUNK_VALUES: usize = 1 << 24;

/// The shared expert of a layer (Qwen2-MoE).
struct Shared {
    /// `ffn_gate_inp_shexp`: one row of `n_embd`.
    gate_inp: Matrix,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

/// One layer's router, experts and shared expert.
pub(crate) struct MoeFfn {
    /// `ffn_gate_inp`: `n_expert` rows of `n_embd`.
    router: Matrix,
    /// Per expert: `ffn_gate_exps`, `ffn_up_exps` (`n_ff_exp` rows of `n_embd`), `ffn_down_exps`.
    gate: Vec<Matrix>,
    up: Vec<Matrix>,
    down: Vec<Matrix>,
    shared: Option<Box<Shared>>,
    routing: MoeRouting,
    n_used: usize,
    /// The experts' gated activation (SwiGLU for every registered MoE architecture).
    act: fn(&mut [f32], &[f32]),
}

impl MoeFfn {
    /// Block `i`'s router and experts from `src`, shapes checked against `moe`.
    pub(crate) fn load(src: Source<'_>, cfg: &LlamaConfig, moe: &MoeConfig, i: usize) -> Result<MoeFfn> {
        let (d, ne, ff, sff) = (cfg.n_embd, moe.n_expert, moe.n_ff_exp, moe.n_ff_shexp);
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        let facts = &cfg.arch.forward;
        let shared = match facts.shared_expert {
            SharedExpert::None => None,
            SharedExpert::SigmoidGated => Some(Box::new(Shared {
                gate_inp: src.matrix(cfg, &n("ffn_gate_inp_shexp"), 1, d)?,
                gate: src.matrix(cfg, &n("ffn_gate_shexp"), sff, d)?,
                up: src.matrix(cfg, &n("ffn_up_shexp"), sff, d)?,
                down: src.matrix(cfg, &n("ffn_down_shexp"), d, sff)?,
            })),
        };
        Ok(MoeFfn {
            router: src.matrix(cfg, &n("ffn_gate_inp"), ne, d)?,
            gate: src.experts(cfg, &n("ffn_gate_exps"), ne, ff, d)?,
            up: src.experts(cfg, &n("ffn_up_exps"), ne, ff, d)?,
            down: src.experts(cfg, &n("ffn_down_exps"), ne, d, ff)?,
            shared,
            routing: facts.moe.unwrap_or(MoeRouting::SoftmaxTopK),
            n_used: moe.n_expert_used,
            act: ops::glu(facts.ffn),
        })
    }

    /// Every weight matrix, router first.
    pub(crate) fn matrices(&self) -> Vec<&Matrix> {
        let mut all = vec![&self.router];
        all.extend(self.gate.iter().chain(&self.up).chain(&self.down));
        if let Some(s) = &self.shared {
            all.extend([&s.gate_inp, &s.gate, &s.up, &s.down]);
        }
        all
    }

    /// Mutable access to the same matrices.
    pub(crate) fn matrices_mut(&mut self) -> Vec<&mut Matrix> {
        let mut all = vec![&mut self.router];
        all.extend(self.gate.iter_mut().chain(&mut self.up).chain(&mut self.down));
        if let Some(s) = &mut self.shared {
            all.extend([&mut s.gate_inp, &mut s.gate, &mut s.up, &mut s.down]);
        }
        all
    }

    /// The FFN output of the `m` normalized rows `xn` (`d` values each) into `out` (`m * d`, overwritten), in
    /// chunks of tokens whose router logits and weighted expert outputs fit [`CHUNK_VALUES`]. `observe` sees
    /// the inputs as llama-imatrix collects them: the router's and the shared expert's as plain matrix products,
    /// each expert's (gate/up: the normed rows routed to it; down: its activations) under the stacked tensor's
    /// name and the expert's index, rows in `ggml_mul_mat_id`'s order (selection slot, then token).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &self,
        mm: &Matmul,
        xn: &[f32],
        m: usize,
        d: usize,
        scratch: &mut Vec<f32>,
        out: &mut [f32],
        observe: Option<&Observer<'_>>,
    ) -> Result<()> {
        let per_token = (self.n_used * d).max(self.router.rows()).max(1);
        let chunk = (CHUNK_VALUES / per_token).max(1);
        for c0 in (0..m).step_by(chunk) {
            let c1 = (c0 + chunk).min(m);
            let (x, o) = (&xn[c0 * d..c1 * d], &mut out[c0 * d..c1 * d]);
            self.forward_chunk(mm, x, c1 - c0, d, scratch, o, observe)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_chunk(
        &self,
        mm: &Matmul,
        xn: &[f32],
        m: usize,
        d: usize,
        scratch: &mut Vec<f32>,
        out: &mut [f32],
        observe: Option<&Observer<'_>>,
    ) -> Result<()> {
        // Experts are shown under their stacked tensor's name and their index.
        let see = |w: &Matrix, expert: Option<usize>, rows: &[f32], cols: usize| {
            if let Some(f) = observe {
                f(split_expert_slice(w.name()).0, expert, rows, cols);
            }
        };
        let (ne, k) = (self.router.rows(), self.n_used);
        see(&self.router, None, xn, d);
        let mut logits = vec![0.0f32; m * ne];
        mm.matmul_t(xn, m, d, self.router.as_f32(scratch)?, ne, &mut logits)?;
        let normalize = self.routing.normalizes();
        let routes: Vec<Vec<(usize, f32)>> = logits.par_chunks(ne).map(|row| route(row, k, normalize)).collect();
        // Per expert: the (token, slot) pairs routed to it, slot by slot and in token order within a slot (the
        // order in which `ggml_mul_mat_id` hands llama-imatrix the rows).
        let mut assigned: Vec<Vec<(usize, usize)>> = vec![Vec::new(); ne];
        for s in 0..k {
            for (t, r) in routes.iter().enumerate() {
                if let Some(&(e, _)) = r.get(s) {
                    assigned[e].push((t, s));
                }
            }
        }
        // Each token's weighted expert outputs, slot by slot, summed afterwards in slot order.
        let mut slots = vec![0.0f32; m * k * d];
        for (e, list) in assigned.iter().enumerate().filter(|(_, l)| !l.is_empty()) {
            let x: Vec<f32> = list.iter().flat_map(|&(t, _)| &xn[t * d..(t + 1) * d]).copied().collect();
            see(&self.gate[e], Some(e), &x, d);
            see(&self.up[e], Some(e), &x, d);
            let see_act = |act: &[f32], cols: usize| see(&self.down[e], Some(e), act, cols);
            let y = self.glu(mm, &x, list.len(), d, (&self.gate[e], &self.up[e], &self.down[e]), scratch, see_act)?;
            for (row, &(t, s)) in y.chunks_exact(d).zip(list) {
                let w = routes[t][s].1;
                slots[(t * k + s) * d..][..d].iter_mut().zip(row).for_each(|(o, v)| *o = v * w);
            }
        }
        for (t, o) in out.chunks_exact_mut(d).enumerate().take(m) {
            o.copy_from_slice(&slots[t * k * d..][..d]);
            for s in 1..k {
                ops::add_assign(o, &slots[(t * k + s) * d..][..d]);
            }
        }
        if let Some(sh) = &self.shared {
            for w in [&sh.gate_inp, &sh.gate, &sh.up] {
                see(w, None, xn, d);
            }
            let mut g = vec![0.0f32; m];
            mm.matmul_t(xn, m, d, sh.gate_inp.as_f32(scratch)?, 1, &mut g)?;
            let see_act = |act: &[f32], cols: usize| see(&sh.down, None, act, cols);
            let y = self.glu(mm, xn, m, d, (&sh.gate, &sh.up, &sh.down), scratch, see_act)?;
            for ((o, row), &g) in out.chunks_exact_mut(d).zip(y.chunks_exact(d)).zip(&g) {
                let gate = 1.0 / (1.0 + (-g).exp());
                o.iter_mut().zip(row).for_each(|(o, v)| *o += v * gate);
            }
        }
        Ok(())
    }
}

impl MoeFfn {
    /// `down(act(gate(x)) * up(x))` for the `n` rows of `x`, showing `see_act` the input of `down`.
    #[allow(clippy::too_many_arguments)]
    fn glu(
        &self,
        mm: &Matmul,
        x: &[f32],
        n: usize,
        d: usize,
        (gate, up, down): (&Matrix, &Matrix, &Matrix),
        scratch: &mut Vec<f32>,
        see_act: impl FnOnce(&[f32], usize),
    ) -> Result<Vec<f32>> {
        let ff = gate.rows();
        let (mut g, mut u, mut y) = (vec![0.0f32; n * ff], vec![0.0f32; n * ff], vec![0.0f32; n * d]);
        mm.matmul_t(x, n, d, gate.as_f32(scratch)?, ff, &mut g)?;
        mm.matmul_t(x, n, d, up.as_f32(scratch)?, ff, &mut u)?;
        g.par_chunks_mut(ff).zip(u.par_chunks(ff)).for_each(|(g, u)| (self.act)(g, u));
        see_act(&g, ff);
        mm.matmul_t(&g, n, ff, down.as_f32(scratch)?, d, &mut y)?;
        Ok(y)
    }
}

/// The experts one token goes to, with their weights: softmax over `logits`, the `k` largest probabilities
/// (ties to the lower expert index), divided by their sum when `normalize`. In selection order.
pub(crate) fn route(logits: &[f32], k: usize, normalize: bool) -> Vec<(usize, f32)> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| exps[b].total_cmp(&exps[a]).then(a.cmp(&b)));
    let mut sel: Vec<(usize, f32)> = order.iter().take(k).map(|&e| (e, exps[e] / sum)).collect();
    if normalize {
        let s: f32 = sel.iter().map(|p| p.1).sum();
        sel.iter_mut().for_each(|p| p.1 /= s);
    }
    sel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_picks_the_most_probable_experts_ties_to_the_lower_index() {
        let r = route(&[0.0, 2.0, 1.0, 2.0], 2, false);
        assert_eq!(r.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 3]);
        let z: f32 = [0.0f32, 2.0, 1.0, 2.0].iter().map(|l| l.exp()).sum();
        assert!((r[0].1 - 2f32.exp() / z).abs() < 1e-6 && r[0].1 == r[1].1, "{r:?}");
        // All equal: the first k.
        assert_eq!(route(&[5.0; 6], 3, false).iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn normalized_weights_sum_to_one_and_keep_their_ratios() {
        let logits = [0.3, -1.0, 2.5, 0.9, 1.7];
        let plain = route(&logits, 3, false);
        let norm = route(&logits, 3, true);
        assert_eq!(plain.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 4, 3]);
        assert!(plain.iter().map(|p| p.1).sum::<f32>() < 0.95);
        assert!((norm.iter().map(|p| p.1).sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((norm[0].1 / norm[1].1 - plain[0].1 / plain[1].1).abs() < 1e-5);
        // k = all experts, normalized: the softmax itself.
        let all = route(&logits, 5, true);
        assert!((all.iter().map(|p| p.1).sum::<f32>() - 1.0).abs() < 1e-6);
    }

    /// Mean KL(transformers || ours) over the positions of fixture `name`, its config changed by `change`.
    fn fixture_kld(name: &str, change: impl Fn(&mut MoeConfig)) -> f64 {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs").join(name);
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
        let tokens: Vec<u32> = meta["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        let want: Vec<f32> = std::fs::read(dir.join("reference-logprobs.f32"))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let file = crate::ModelFile::open(&dir).unwrap();
        let mut cfg = file.config().clone();
        change(cfg.moe.as_mut().unwrap());
        let model = crate::LlamaModel::from_source(file.source(), cfg).unwrap();
        let logits = model.forward(&[&tokens], 0).unwrap();
        let vocab = want.len() / tokens.len();
        let total: f64 = logits
            .chunks(vocab)
            .zip(want.chunks(vocab))
            .map(|(row, lp)| {
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
                let lse = max + row.iter().map(|&x| (f64::from(x) - max).exp()).sum::<f64>().ln();
                lp.iter()
                    .zip(row)
                    .map(|(&l, &x)| f64::from(l).exp() * (f64::from(l) - (f64::from(x) - lse)))
                    .sum::<f64>()
            })
            .sum();
        total / tokens.len() as f64
    }

    #[test]
    fn routing_is_what_matches_the_reference() {
        // The fixtures' routers are decisive: sending every token through every expert (or through one) is far
        // from transformers, so the MoE fixtures cannot pass with routing ignored.
        for name in ["mixtral", "qwen2moe", "qwen3moe"] {
            let exact = fixture_kld(name, |_| {});
            assert!(exact < 1e-6, "{name}: {exact}");
            let all = fixture_kld(name, |m| m.n_expert_used = m.n_expert);
            let one = fixture_kld(name, |m| m.n_expert_used = 1);
            eprintln!("{name}: mean KLD {exact:.2e} as routed, {all:.3} through all experts, {one:.3} top-1");
            assert!(all > 1e-2 && one > 1e-2, "{name}: all experts {all}, top-1 {one}");
        }
    }

    /// Records each layer's input statistics and keeps its weights.
    struct Record(std::sync::Mutex<std::collections::BTreeMap<String, quantforge_quant::calibrate::InputStats>>);

    impl quantforge_quant::calibrate::LayerSolver for Record {
        fn stats_kind(&self) -> quantforge_quant::calibrate::StatsKind {
            quantforge_quant::calibrate::StatsKind::Covariance
        }
        fn solve(
            &self,
            _: usize,
            w: &quantforge_quant::calibrate::LinearWeight,
            stats: &quantforge_quant::calibrate::InputStats,
        ) -> std::result::Result<Vec<f32>, String> {
            self.0.lock().unwrap().insert(w.name.clone(), stats.clone());
            Ok(w.values.clone())
        }
    }

    fn calibrated(name: &str, seqs: &[Vec<u32>], sequential: bool) -> Record {
        use quantforge_quant::calibrate::{calibrate_with, CalibrateOptions};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs").join(name);
        let file = crate::ModelFile::open(&dir).unwrap();
        let mut source = crate::calibration::BlockCalibrator::new(&file, seqs, 2, crate::Device::Cpu).unwrap();
        let rec = Record(Default::default());
        let opts = CalibrateOptions { true_sequential: sequential };
        calibrate_with(&mut source, &rec, &quantforge_quant::progress::Silent, &opts).unwrap();
        rec
    }

    #[test]
    fn every_expert_is_calibrated_on_the_rows_routed_to_it() {
        use quantforge_quant::calibrate::expert_slice_name;
        // Each expert is a layer of its own whose statistics are those of the rows routed to it: the importance
        // matrix's per-expert counts and sums on the same tokens, in every block, whether the block is solved in
        // one pass or stage by stage; the routers and the shared expert see every token.
        for name in ["mixtral", "qwen2moe", "qwen3moe"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs").join(name);
            let model = crate::LlamaModel::load(&dir).unwrap();
            let (cfg, moe) = (model.config(), model.config().moe.unwrap());
            let tokens: Vec<u32> = (0..64).map(|i| (i * 37 + 11) % 500).collect();
            let silent = quantforge_quant::progress::Silent;
            let want = crate::imatrix::collect(&model, &tokens, None, 16, None, &silent).unwrap();
            let seqs: Vec<Vec<u32>> = tokens.chunks(16).map(<[u32]>::to_vec).collect();
            for sequential in [false, true] {
                let got = calibrated(name, &seqs, sequential).0.into_inner().unwrap();
                for b in 0..cfg.n_layer {
                    for t in ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] {
                        let stacked = format!("blk.{b}.{t}.weight");
                        let w = &want.entries[&stacked];
                        for e in 0..moe.n_expert {
                            let st = &got[&expert_slice_name(&stacked, e)];
                            assert_eq!(st.n_rows, w.counts[e], "{name} {stacked} expert {e}");
                            for (j, d) in st.diagonal.iter().enumerate() {
                                let r = w.sums[e * st.cols + j];
                                assert!((d - r).abs() <= 1e-4 * r.abs().max(1e-3), "{name} {stacked}[{e}] col {j}");
                            }
                        }
                    }
                    let router = &got[&format!("blk.{b}.ffn_gate_inp.weight")];
                    assert_eq!(router.n_rows, tokens.len() as u64, "{name}");
                    if let Some(sh) = got.get(&format!("blk.{b}.ffn_down_shexp.weight")) {
                        assert_eq!(sh.n_rows, tokens.len() as u64, "{name}");
                    }
                }
            }
            // One token reaches `n_expert_used` experts per block: the others are still layers, with no rows.
            let got = calibrated(name, &[vec![5]], true).0.into_inner().unwrap();
            let reached = (0..moe.n_expert)
                .filter(|&e| got[&expert_slice_name("blk.0.ffn_down_exps.weight", e)].n_rows > 0)
                .count();
            assert_eq!(reached, moe.n_expert_used, "{name}");
            assert_eq!(got.keys().filter(|k| k.contains("_exps.weight[")).count(), 3 * moe.n_expert * cfg.n_layer);
        }
    }

    #[test]
    fn the_importance_matrix_counts_each_experts_tokens() {
        // Per layer: every token goes to `n_expert_used` experts, so the expert counts of a stacked tensor sum
        // to that many times the tokens; gate, up and down of an expert see the same tokens; the router and the
        // shared expert see every token once.
        for name in ["mixtral", "qwen2moe", "qwen3moe"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archs").join(name);
            let model = crate::LlamaModel::load(&dir).unwrap();
            let moe = model.config().moe.unwrap();
            let tokens: Vec<u32> = (0..64).map(|i| (i * 37 + 11) % 500).collect();
            let silent = quantforge_quant::progress::Silent;
            let c = crate::imatrix::collect(&model, &tokens, None, 16, None, &silent).unwrap();
            let n_tokens = 4 * 16;
            let gate = &c.entries["blk.0.ffn_gate_exps.weight"];
            assert_eq!(gate.counts.len(), moe.n_expert, "{name}");
            assert_eq!(gate.sums.len(), moe.n_expert * model.config().n_embd, "{name}");
            assert_eq!(gate.counts.iter().sum::<u64>(), (n_tokens * moe.n_expert_used) as u64, "{name}");
            assert_eq!(c.entries["blk.0.ffn_up_exps.weight"].counts, gate.counts, "{name}");
            let down = &c.entries["blk.0.ffn_down_exps.weight"];
            assert_eq!((down.counts.clone(), down.sums.len()), (gate.counts.clone(), moe.n_expert * moe.n_ff_exp));
            assert_eq!(c.entries["blk.0.ffn_gate_inp.weight"].counts, [n_tokens as u64], "{name}");
            let shared = c.entries.get("blk.0.ffn_gate_inp_shexp.weight").map(|s| s.counts.clone());
            assert_eq!(shared, (name == "qwen2moe").then(|| vec![n_tokens as u64]), "{name}");
        }
    }
}
