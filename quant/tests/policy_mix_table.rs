//! The type mixes llama-quantize b9928 produced for synthetic Llama models, as measured in
//! `shared/spec/llama-cpp-reference.md` §2.3/§2.4 and llama.cpp's `tools/quantize/README.md`: every tensor's
//! type, the tensor order, and bits per weight over all tensors (F32 norms included).

use quantforge_quant::policy::{
    output_order, plan_all, planned_size, Decision, FileType, ModelInfo, Planned, PolicyOptions, TensorDesc,
};
use quantforge_quant::GgmlType;

use GgmlType as G;

/// A Llama-architecture tensor list as `convert_hf_to_gguf.py` writes it (F32 everywhere).
struct Model {
    info: ModelInfo,
    tensors: Vec<(String, Vec<u64>)>,
}

struct Shape {
    n_layer: u32,
    n_embd: u64,
    n_head: u32,
    n_head_kv: u32,
    n_ff: u64,
    vocab: u64,
    tied: bool,
    rope_freqs: bool,
}

fn llama(s: Shape) -> Model {
    let kv = s.n_embd / u64::from(s.n_head) * u64::from(s.n_head_kv);
    let mut t: Vec<(String, Vec<u64>)> =
        vec![("token_embd.weight".into(), vec![s.n_embd, s.vocab]), ("output_norm.weight".into(), vec![s.n_embd])];
    if !s.tied {
        t.push(("output.weight".into(), vec![s.n_embd, s.vocab]));
    }
    if s.rope_freqs {
        t.push(("rope_freqs.weight".into(), vec![s.n_embd / u64::from(s.n_head) / 2]));
    }
    for i in 0..s.n_layer {
        for (name, ne) in [
            ("attn_norm", vec![s.n_embd]),
            ("attn_q", vec![s.n_embd, s.n_embd]),
            ("attn_k", vec![s.n_embd, kv]),
            ("attn_v", vec![s.n_embd, kv]),
            ("attn_output", vec![s.n_embd, s.n_embd]),
            ("ffn_norm", vec![s.n_embd]),
            ("ffn_gate", vec![s.n_embd, s.n_ff]),
            ("ffn_up", vec![s.n_embd, s.n_ff]),
            ("ffn_down", vec![s.n_ff, s.n_embd]),
        ] {
            t.push((format!("blk.{i}.{name}.weight"), ne));
        }
    }
    let info =
        ModelInfo { arch: "llama".into(), n_layer: s.n_layer, n_head: s.n_head, n_head_kv: s.n_head_kv, n_expert: 0 };
    Model { info, tensors: t }
}

/// The 16-layer model of the §2.3 table: n_embd 512, 8 heads, 2 KV heads, n_ff 1024, untied. Its vocabulary
/// is not stated; 1024 is the only round size that reproduces every BPW figure of the table.
fn table_model(tied: bool) -> Model {
    llama(Shape { n_layer: 16, n_embd: 512, n_head: 8, n_head_kv: 2, n_ff: 1024, vocab: 1024, tied, rope_freqs: false })
}

fn descs(m: &Model) -> Vec<TensorDesc<'_>> {
    m.tensors.iter().map(|(n, ne)| TensorDesc { name: n, ne, src_type: G::F32 }).collect()
}

fn plan(m: &Model, opts: PolicyOptions) -> Vec<Planned<'_>> {
    plan_all(m.info.clone(), opts, &descs(m)).expect("plan")
}

fn dry(ftype: FileType) -> PolicyOptions {
    PolicyOptions { dry_run: true, ..PolicyOptions::new(ftype) }
}

/// The layer number of a block tensor.
fn layer(name: &str) -> Option<u32> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// A type that may differ on some layers.
#[derive(Clone, Copy, Debug)]
struct PerLayer {
    on: &'static [u32],
    hi: GgmlType,
    rest: GgmlType,
}

const fn all(t: GgmlType) -> PerLayer {
    PerLayer { on: &[], hi: t, rest: t }
}

const fn on(on: &'static [u32], hi: GgmlType, rest: GgmlType) -> PerLayer {
    PerLayer { on, hi, rest }
}

impl PerLayer {
    fn at(self, l: u32) -> GgmlType {
        if self.on.contains(&l) {
            self.hi
        } else {
            self.rest
        }
    }
}

/// One row of the mix table.
struct Row {
    ftype: FileType,
    output: GgmlType,
    token_embd: GgmlType,
    attn_q: GgmlType,
    attn_k: GgmlType,
    attn_v: PerLayer,
    attn_output: GgmlType,
    ffn_down: PerLayer,
    ffn_gate_up: PerLayer,
    /// BPW as llama-quantize prints it (two decimals), where the spec measured it.
    bpw: Option<f64>,
}

const MORE_BITS_16: &[u32] = &[0, 1, 4, 7, 10, 13, 14, 15];

#[allow(clippy::too_many_arguments)]
const fn row(
    ftype: FileType,
    output: GgmlType,
    token_embd: GgmlType,
    attn_qk: GgmlType,
    attn_v: PerLayer,
    attn_output: GgmlType,
    ffn_down: PerLayer,
    ffn_gate_up: GgmlType,
    bpw: f64,
) -> Row {
    Row {
        ftype,
        output,
        token_embd,
        attn_q: attn_qk,
        attn_k: attn_qk,
        attn_v,
        attn_output,
        ffn_down,
        ffn_gate_up: all(ffn_gate_up),
        bpw: Some(bpw),
    }
}

/// Rows whose tensors all get the default type except the output (Q6_K).
fn plain(ftype: FileType, base: GgmlType, bpw: f64) -> Row {
    row(ftype, G::Q6_K, base, base, all(base), base, all(base), base, bpw)
}

fn table() -> Vec<Row> {
    use FileType as F;
    vec![
        row(F::Q2_K, G::Q6_K, G::Q2_K, G::Q2_K, all(G::Q4_K), G::Q3_K, all(G::Q3_K), G::Q2_K, 3.03),
        row(F::Q2_K_S, G::Q6_K, G::Q2_K, G::Q2_K, all(G::Q4_K), G::Q2_K, on(&[0, 1], G::Q4_K, G::Q2_K), G::Q2_K, 2.80),
        plain(F::Q3_K_S, G::Q3_K, 3.50),
        row(
            F::Q3_K_M,
            G::Q6_K,
            G::Q3_K,
            G::Q3_K,
            on(&[0, 1], G::Q5_K, G::Q4_K),
            G::Q4_K,
            on(&[0], G::Q5_K, G::Q4_K),
            G::Q3_K,
            3.91,
        ),
        row(F::Q3_K_L, G::Q6_K, G::Q3_K, G::Q3_K, all(G::Q5_K), G::Q5_K, all(G::Q5_K), G::Q3_K, 4.26),
        row(
            F::Q4_K_S,
            G::Q6_K,
            G::Q4_K,
            G::Q4_K,
            on(&[0, 1, 2, 3], G::Q5_K, G::Q4_K),
            G::Q4_K,
            on(&[0, 1], G::Q5_K, G::Q4_K),
            G::Q4_K,
            4.58,
        ),
        row(
            F::Q4_K_M,
            G::Q6_K,
            G::Q4_K,
            G::Q4_K,
            on(MORE_BITS_16, G::Q6_K, G::Q4_K),
            G::Q4_K,
            on(MORE_BITS_16, G::Q6_K, G::Q4_K),
            G::Q4_K,
            4.81,
        ),
        plain(F::Q5_K_S, G::Q5_K, 5.53),
        row(
            F::Q5_K_M,
            G::Q6_K,
            G::Q5_K,
            G::Q5_K,
            on(MORE_BITS_16, G::Q6_K, G::Q5_K),
            G::Q5_K,
            on(MORE_BITS_16, G::Q6_K, G::Q5_K),
            G::Q5_K,
            5.66,
        ),
        plain(F::Q6_K, G::Q6_K, 6.57),
        row(F::Q8_0, G::Q8_0, G::Q8_0, G::Q8_0, all(G::Q8_0), G::Q8_0, all(G::Q8_0), G::Q8_0, 8.51),
        plain(F::Q4_0, G::Q4_0, 4.54),
        plain(F::Q4_1, G::Q4_1, 5.03),
        plain(F::Q5_0, G::Q5_0, 5.53),
        plain(F::Q5_1, G::Q5_1, 6.02),
        row(
            F::IQ4_NL,
            G::Q6_K,
            G::IQ4_NL,
            G::IQ4_NL,
            all(G::Q5_K),
            G::IQ4_NL,
            on(&[0, 1], G::Q5_K, G::IQ4_NL),
            G::IQ4_NL,
            4.60,
        ),
        row(
            F::IQ4_XS,
            G::Q6_K,
            G::IQ4_XS,
            G::IQ4_XS,
            all(G::Q5_K),
            G::IQ4_XS,
            on(&[0, 1], G::Q5_K, G::IQ4_XS),
            G::IQ4_XS,
            4.37,
        ),
        row(F::TQ1_0, G::Q6_K, G::Q4_K, G::TQ1_0, all(G::TQ1_0), G::TQ1_0, all(G::TQ1_0), G::TQ1_0, 1.81),
        row(F::TQ2_0, G::Q6_K, G::Q4_K, G::TQ2_0, all(G::TQ2_0), G::TQ2_0, all(G::TQ2_0), G::TQ2_0, 2.18),
        row(F::MXFP4_MOE, G::Q8_0, G::Q8_0, G::Q8_0, all(G::Q8_0), G::Q8_0, all(G::Q8_0), G::Q8_0, 8.51),
    ]
}

/// The IQ mixes of §2.3 (measured with `--dry-run`, i.e. without an imatrix). No BPW was recorded.
fn iq_table() -> Vec<Row> {
    use FileType as F;
    let mut rows = Vec::new();
    for (ft, base, ao) in [
        (F::IQ2_XXS, G::IQ2_XXS, G::IQ2_XXS),
        (F::IQ2_XS, G::IQ2_XS, G::IQ2_XS),
        (F::IQ1_S, G::IQ1_S, G::IQ2_XXS),
        (F::IQ1_M, G::IQ1_M, G::IQ2_XXS),
    ] {
        rows.push(Row {
            bpw: None,
            ..row(ft, G::Q5_K, G::Q2_K, base, all(G::Q4_K), ao, on(&[0, 1], G::Q2_K, base), base, 0.0)
        });
    }
    for (ft, base) in [(F::IQ2_S, G::IQ2_XS), (F::IQ2_M, G::IQ2_S)] {
        rows.push(Row {
            bpw: None,
            ..row(ft, G::Q5_K, G::IQ3_S, base, all(G::Q4_K), G::IQ3_S, on(&[0, 1], G::IQ3_S, base), base, 0.0)
        });
    }
    rows.push(Row {
        bpw: None,
        ..row(
            F::IQ3_XXS,
            G::Q5_K,
            G::IQ3_S,
            G::IQ2_S,
            all(G::Q4_K),
            G::IQ3_S,
            on(&[0, 1], G::Q4_K, G::Q3_K),
            G::IQ3_XXS,
            0.0,
        )
    });
    // IQ3_XS: the middle layers n/8 <= i < 7n/8 of ffn_gate/ffn_up get IQ3_XXS.
    let middle: &'static [u32] = &[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
    rows.push(Row {
        bpw: None,
        ffn_gate_up: on(middle, G::IQ3_XXS, G::IQ3_S),
        ..row(F::IQ3_XS, G::Q6_K, G::IQ3_S, G::IQ3_XXS, all(G::Q4_K), G::IQ3_S, all(G::IQ3_S), G::IQ3_S, 0.0)
    });
    rows.push(Row {
        bpw: None,
        ..row(
            F::IQ3_M,
            G::Q6_K,
            G::IQ3_S,
            G::IQ3_S,
            all(G::Q4_K),
            G::Q4_K,
            on(&[0, 1], G::Q4_K, G::IQ3_S),
            G::IQ3_S,
            0.0,
        )
    });
    rows
}

fn expected(r: &Row, name: &str) -> GgmlType {
    let kind = match layer(name) {
        Some(_) => name.split('.').nth(2).unwrap(),
        None => name.trim_end_matches(".weight"),
    };
    let per = |p: PerLayer| p.at(layer(name).unwrap());
    match kind {
        "output" => r.output,
        "token_embd" => r.token_embd,
        "attn_q" => r.attn_q,
        "attn_k" => r.attn_k,
        "attn_v" => per(r.attn_v),
        "attn_output" => r.attn_output,
        "ffn_down" => per(r.ffn_down),
        "ffn_gate" | "ffn_up" => per(r.ffn_gate_up),
        "attn_norm" | "ffn_norm" | "output_norm" => G::F32,
        _ => panic!("unexpected tensor {name}"),
    }
}

fn check_row(m: &Model, r: &Row) {
    let planned = plan(m, dry(r.ftype));
    assert_eq!(planned.len(), m.tensors.len());
    for p in &planned {
        let want = expected(r, p.tensor.name);
        assert_eq!(p.decision.ty, want, "{}: {}", r.ftype, p.tensor.name);
        assert_eq!(p.decision.quantize, want != G::F32, "{}: {}", r.ftype, p.tensor.name);
        assert_eq!(p.decision.fallback_from, None, "{}: {}", r.ftype, p.tensor.name);
    }
    if let Some(bpw) = r.bpw {
        let (_, got) = planned_size(&planned);
        assert_eq!(format!("{got:.2}"), format!("{bpw:.2}"), "{} BPW", r.ftype);
    }
}

#[test]
fn measured_mix_table_for_every_ftype() {
    let m = table_model(false);
    for r in table() {
        check_row(&m, &r);
    }
}

#[test]
fn measured_iq_mixes() {
    let m = table_model(false);
    for r in iq_table() {
        check_row(&m, &r);
    }
}

#[test]
fn q4_k_m_upgrades_exactly_the_use_more_bits_layers() {
    let m = table_model(false);
    let planned = plan(&m, PolicyOptions::new(FileType::Q4_K_M));
    for kind in ["attn_v", "ffn_down"] {
        let q6: Vec<u32> = planned
            .iter()
            .filter(|p| p.tensor.name.ends_with(&format!(".{kind}.weight")) && p.decision.ty == G::Q6_K)
            .map(|p| layer(p.tensor.name).unwrap())
            .collect();
        assert_eq!(q6, [0, 1, 4, 7, 10, 13, 14, 15], "{kind}");
    }
}

#[test]
fn output_order_is_layer_then_name() {
    let m = table_model(false);
    let planned = plan(&m, PolicyOptions::new(FileType::Q8_0));
    let names: Vec<&str> = planned.iter().map(|p| p.tensor.name).collect();
    assert_eq!(&names[..4], ["output.weight", "output_norm.weight", "token_embd.weight", "blk.0.attn_k.weight"]);
    assert_eq!(
        &names[3..12],
        [
            "blk.0.attn_k.weight",
            "blk.0.attn_norm.weight",
            "blk.0.attn_output.weight",
            "blk.0.attn_q.weight",
            "blk.0.attn_v.weight",
            "blk.0.ffn_down.weight",
            "blk.0.ffn_gate.weight",
            "blk.0.ffn_norm.weight",
            "blk.0.ffn_up.weight",
        ]
    );
    let layers: Vec<u32> = names.iter().filter_map(|n| layer(n)).collect();
    assert!(layers.windows(2).all(|w| w[0] <= w[1]), "layers 0..15 in numeric order, not 0,1,10,11,...");
    // The planner's order is output_order's.
    let order = output_order(&m.tensors.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>());
    assert_eq!(order.iter().map(|&i| m.tensors[i].0.as_str()).collect::<Vec<_>>(), names);
}

#[test]
fn tied_embeddings_take_the_output_type() {
    let m = table_model(true);
    for (ft, want) in [(FileType::Q4_K_M, G::Q6_K), (FileType::Q4_0, G::Q6_K), (FileType::Q8_0, G::Q8_0)] {
        let planned = plan(&m, PolicyOptions::new(ft));
        let emb = planned.iter().find(|p| p.tensor.name == "token_embd.weight").unwrap();
        assert_eq!(emb.decision.ty, want, "{ft}");
        // Everything else is unchanged from the untied table.
        let untied = table_model(false);
        let planned_untied = plan(&untied, PolicyOptions::new(ft));
        for p in planned.iter().filter(|p| p.tensor.name != "token_embd.weight") {
            let q = planned_untied.iter().find(|q| q.tensor.name == p.tensor.name).unwrap();
            assert_eq!(p.decision, q.decision, "{ft}: {}", p.tensor.name);
        }
    }
}

fn decisions<'a>(planned: &'a [Planned<'a>], kind: &str) -> Vec<(u32, Decision)> {
    planned
        .iter()
        .filter(|p| p.tensor.name.ends_with(&format!(".{kind}.weight")))
        .map(|p| (layer(p.tensor.name).unwrap(), p.decision))
        .collect()
}

fn use_more_bits(i: u32, n: u32) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2
}

/// §2.4: SmolLM2-135M's rows (576) are not whole Q4_K blocks, so most of its Q4_K_M falls back.
#[test]
fn smollm2_q4_k_m_falls_back() {
    let m = llama(Shape {
        n_layer: 30,
        n_embd: 576,
        n_head: 9,
        n_head_kv: 3,
        n_ff: 1536,
        vocab: 49152,
        tied: true,
        rope_freqs: false,
    });
    let model = m.info.clone();
    let d = descs(&m);
    let mut planner = quantforge_quant::policy::Planner::new(model, PolicyOptions::new(FileType::Q4_K_M), &{
        d.iter().map(|t| t.name).collect::<Vec<_>>()
    })
    .unwrap();
    let order = output_order(&d.iter().map(|t| t.name).collect::<Vec<_>>());
    let planned: Vec<Planned> =
        order.iter().map(|&i| Planned { tensor: d[i], decision: planner.plan(&d[i]).unwrap() }).collect();
    assert_eq!(planned.len(), 272);
    assert_eq!(planner.n_fallback(), 180);
    assert_eq!(planned.iter().filter(|p| p.decision.fallback_from.is_some()).count(), 180);
    assert!(planner.has_tied_embeddings());

    let emb = &planned.iter().find(|p| p.tensor.name == "token_embd.weight").unwrap().decision;
    assert_eq!((emb.ty, emb.fallback_from), (G::Q8_0, None), "nx % 256 rule, not a fallback");
    for kind in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
        for (l, d) in decisions(&planned, kind) {
            assert_eq!((d.ty, d.fallback_from), (G::Q5_0, Some(G::Q4_K)), "{kind} {l}");
        }
    }
    for (l, d) in decisions(&planned, "attn_v") {
        let want = if use_more_bits(l, 30) { (G::Q8_0, Some(G::Q6_K)) } else { (G::Q5_0, Some(G::Q4_K)) };
        assert_eq!((d.ty, d.fallback_from), want, "attn_v {l}");
    }
    for (l, d) in decisions(&planned, "ffn_down") {
        let want = if use_more_bits(l, 30) { G::Q6_K } else { G::Q4_K };
        assert_eq!((d.ty, d.fallback_from), (want, None), "ffn_down {l}");
    }
    let (_, bpw) = planned_size(&planned);
    assert_eq!(format!("{bpw:.2}"), "6.17");
}

/// A Llama-3-70B-shaped model is `LLM_TYPE_70B`: attn_v gets Q5_K where the mix says Q3_K/Q4_K.
#[test]
fn seventy_b_attn_v() {
    let shape = |n_head_kv| Shape {
        n_layer: 80,
        n_embd: 8192,
        n_head: 64,
        n_head_kv,
        n_ff: 28672,
        vocab: 128256,
        tied: false,
        rope_freqs: true,
    };
    let m = llama(shape(8));
    assert!(m.info.is_70b());
    let planned = plan(&m, PolicyOptions::new(FileType::Q4_K_M));
    for (l, d) in decisions(&planned, "attn_v") {
        assert_eq!(d.ty, if use_more_bits(l, 80) { G::Q6_K } else { G::Q5_K }, "attn_v {l}");
    }
    for (l, d) in decisions(&planned, "ffn_down") {
        assert_eq!(d.ty, if use_more_bits(l, 80) { G::Q6_K } else { G::Q4_K }, "ffn_down {l}");
    }
    for ft in [FileType::Q2_K, FileType::Q3_K_M, FileType::Q4_K_S] {
        let planned = plan(&m, PolicyOptions { dry_run: true, ..PolicyOptions::new(ft) });
        assert!(decisions(&planned, "attn_v").iter().all(|(_, d)| d.ty == G::Q5_K), "{ft}");
    }
    // With as many KV heads as heads the same depth is "65B": no bump.
    let m = llama(shape(64));
    assert!(!m.info.is_70b());
    let planned = plan(&m, PolicyOptions::new(FileType::Q4_K_M));
    for (l, d) in decisions(&planned, "attn_v") {
        assert_eq!(d.ty, if use_more_bits(l, 80) { G::Q6_K } else { G::Q4_K }, "65B attn_v {l}");
    }
}

/// Llama-3.1-8B shape (with its `rope_freqs.weight`): the q6_K layers of Q4_K_M, and the bits per weight of
/// every K-quant mix in llama.cpp's `tools/quantize/README.md` to four decimals.
#[test]
fn llama3_8b_layers_and_readme_bpw() {
    let m = llama(Shape {
        n_layer: 32,
        n_embd: 4096,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 14336,
        vocab: 128256,
        tied: false,
        rope_freqs: true,
    });
    let planned = plan(&m, PolicyOptions::new(FileType::Q4_K_M));
    let want: Vec<u32> = (0..=3).chain((6..=27).step_by(3)).chain(28..=31).collect();
    for kind in ["attn_v", "ffn_down"] {
        let q6: Vec<u32> =
            decisions(&planned, kind).into_iter().filter(|(_, d)| d.ty == G::Q6_K).map(|(l, _)| l).collect();
        assert_eq!(q6, want, "{kind}");
    }
    let rope = planned.iter().find(|p| p.tensor.name == "rope_freqs.weight").unwrap();
    assert_eq!((rope.decision.ty, rope.decision.quantize), (G::F32, false));

    for (ft, bpw) in [
        (FileType::Q2_K, "3.1593"),
        (FileType::Q3_K_S, "3.6429"),
        (FileType::Q3_K_M, "3.9960"),
        (FileType::Q3_K_L, "4.2979"),
        (FileType::Q4_K_S, "4.6672"),
        (FileType::Q4_K_M, "4.8944"),
        (FileType::Q5_K_S, "5.5704"),
        (FileType::Q5_K_M, "5.7036"),
        (FileType::Q6_K, "6.5633"),
        (FileType::Q8_0, "8.5008"),
        (FileType::F16, "16.0005"),
    ] {
        let (_, got) = planned_size(&plan(&m, PolicyOptions::new(ft)));
        assert_eq!(format!("{got:.4}"), bpw, "{ft}");
    }
}
