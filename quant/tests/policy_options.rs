//! User overrides and the errors of the type policy: `--pure`, `--leave-output-tensor`,
//! `--output-tensor-type`, `--token-embedding-type`, `--tensor-type`, imatrix requirements, copies, shape
//! problems and MoE layer parsing.

use quantforge_quant::policy::{
    plan_all, FileType, ModelInfo, Planned, Planner, PolicyError, PolicyOptions, TensorDesc, TensorPattern,
};
use quantforge_quant::GgmlType;

use GgmlType as G;

/// A small Llama: `n_layer` layers, n_embd 512, 8 heads, 2 KV heads, n_ff 1024, vocab 1024.
fn tensors(n_layer: u32, tied: bool) -> Vec<(String, Vec<u64>)> {
    let mut t: Vec<(String, Vec<u64>)> =
        vec![("token_embd.weight".into(), vec![512, 1024]), ("output_norm.weight".into(), vec![512])];
    if !tied {
        t.push(("output.weight".into(), vec![512, 1024]));
    }
    for i in 0..n_layer {
        for (name, ne) in [
            ("attn_norm", vec![512]),
            ("attn_q", vec![512, 512]),
            ("attn_k", vec![512, 128]),
            ("attn_v", vec![512, 128]),
            ("attn_output", vec![512, 512]),
            ("ffn_norm", vec![512]),
            ("ffn_gate", vec![512, 1024]),
            ("ffn_up", vec![512, 1024]),
            ("ffn_down", vec![1024, 512]),
        ] {
            t.push((format!("blk.{i}.{name}.weight"), ne));
        }
    }
    t
}

fn info(n_layer: u32) -> ModelInfo {
    ModelInfo { arch: "llama".into(), n_layer, n_head: 8, n_head_kv: 2, n_expert: 0 }
}

fn run(
    t: &[(String, Vec<u64>)],
    src: GgmlType,
    opts: PolicyOptions,
) -> Result<Vec<(String, GgmlType, bool)>, PolicyError> {
    let descs: Vec<TensorDesc> = t
        .iter()
        .map(|(n, ne)| TensorDesc { name: n, ne, src_type: if ne.len() == 1 { G::F32 } else { src } })
        .collect();
    let planned: Vec<Planned> = plan_all(info(16), opts, &descs)?;
    Ok(planned.iter().map(|p| (p.tensor.name.to_string(), p.decision.ty, p.decision.quantize)).collect())
}

fn ty_of(plan: &[(String, GgmlType, bool)], name: &str) -> GgmlType {
    plan.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("{name}")).1
}

fn layers_with(plan: &[(String, GgmlType, bool)], kind: &str, ty: GgmlType) -> Vec<u32> {
    plan.iter()
        .filter(|(n, t, _)| n.ends_with(&format!(".{kind}.weight")) && *t == ty)
        .map(|(n, _, _)| n.split('.').nth(1).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn pure_gives_every_tensor_the_default_type() {
    let t = tensors(16, false);
    let plan = run(&t, G::F32, PolicyOptions { pure: true, ..PolicyOptions::new(FileType::Q4_K_M) }).unwrap();
    for (name, ty, _) in &plan {
        let want = if name.ends_with("norm.weight") { G::F32 } else { G::Q4_K };
        assert_eq!(*ty, want, "{name}");
    }
}

#[test]
fn leave_output_tensor_and_type_overrides() {
    let t = tensors(16, false);
    let plan =
        run(&t, G::F16, PolicyOptions { leave_output_tensor: true, ..PolicyOptions::new(FileType::Q4_K_M) }).unwrap();
    assert_eq!(ty_of(&plan, "output.weight"), G::F16);
    assert!(!plan.iter().find(|p| p.0 == "output.weight").unwrap().2, "same type as the source: copied");

    let opts = PolicyOptions {
        output_tensor_type: Some(G::Q8_0),
        token_embedding_type: Some(G::Q5_K),
        ..PolicyOptions::new(FileType::Q4_K_M)
    };
    let plan = run(&t, G::F32, opts).unwrap();
    assert_eq!(ty_of(&plan, "output.weight"), G::Q8_0);
    assert_eq!(ty_of(&plan, "token_embd.weight"), G::Q5_K);
}

#[test]
fn tied_embeddings_follow_the_output_tensor_type() {
    // With no output.weight, token_embd is treated as the output, so --output-tensor-type reaches it.
    let t = tensors(2, true);
    let opts = PolicyOptions { output_tensor_type: Some(G::Q8_0), ..PolicyOptions::new(FileType::Q4_K_M) };
    let plan = run(&t, G::F32, opts).unwrap();
    assert_eq!(ty_of(&plan, "token_embd.weight"), G::Q8_0);
    let opts = PolicyOptions {
        output_tensor_type: Some(G::Q8_0),
        token_embedding_type: Some(G::Q4_0),
        ..PolicyOptions::new(FileType::Q4_K_M)
    };
    assert_eq!(ty_of(&run(&t, G::F32, opts).unwrap(), "token_embd.weight"), G::Q4_0);
}

#[test]
fn first_matching_tensor_type_wins_and_skips_the_counters() {
    let t = tensors(16, false);
    let opts = PolicyOptions {
        tensor_types: vec![
            (TensorPattern::parse(r"blk\.0\.attn_v").unwrap(), G::Q8_0),
            (TensorPattern::parse("attn_v").unwrap(), G::Q5_0),
            (TensorPattern::parse("FFN_UP").unwrap(), G::IQ4_NL),
        ],
        ..PolicyOptions::new(FileType::Q4_K_M)
    };
    let plan = run(&t, G::F32, opts.clone()).unwrap();
    assert_eq!(ty_of(&plan, "blk.0.attn_v.weight"), G::Q8_0);
    assert_eq!(layers_with(&plan, "attn_v", G::Q5_0).len(), 15);
    assert_eq!(layers_with(&plan, "ffn_up", G::IQ4_NL).len(), 16);

    // Only blk.0.attn_v overridden: llama.cpp does not advance i_attention_wv for it, so the use_more_bits
    // pattern shifts by one layer (layer l gets index l-1).
    let only_first = PolicyOptions { tensor_types: opts.tensor_types[..1].to_vec(), ..opts.clone() };
    let plan = run(&t, G::F32, only_first).unwrap();
    assert_eq!(layers_with(&plan, "attn_v", G::Q6_K), [1, 2, 5, 8, 11, 14, 15]);
    assert_eq!(layers_with(&plan, "ffn_down", G::Q6_K), [0, 1, 4, 7, 10, 13, 14, 15]);

    // --tensor-type applies under --pure too.
    let pure = PolicyOptions { pure: true, ..opts };
    let plan = run(&t, G::F32, pure).unwrap();
    assert_eq!(ty_of(&plan, "blk.3.attn_v.weight"), G::Q5_0);
    assert_eq!(ty_of(&plan, "blk.3.ffn_down.weight"), G::Q4_K);
}

#[test]
fn float_file_types_and_copies() {
    let t = tensors(2, false);
    let plan = run(&t, G::F32, PolicyOptions::new(FileType::F16)).unwrap();
    for (name, ty, quantize) in &plan {
        let norm = name.ends_with("norm.weight");
        assert_eq!(*ty, if norm { G::F32 } else { G::F16 }, "{name}");
        assert_eq!(*quantize, !norm, "{name}");
    }
    // F16 source to F16: nothing to convert.
    assert!(run(&t, G::F16, PolicyOptions::new(FileType::F16)).unwrap().iter().all(|p| !p.2));
    // COPY: everything kept.
    let plan = run(&t, G::Q4_K, PolicyOptions::new(FileType::Copy)).unwrap();
    assert!(plan.iter().all(|(n, ty, q)| !q && (*ty == G::Q4_K || n.ends_with("norm.weight"))));
    // A quantized source planned to its own type is a copy, any other type is a (re)quantization.
    let plan = run(&t, G::Q8_0, PolicyOptions::new(FileType::Q8_0)).unwrap();
    assert!(plan.iter().all(|p| !p.2));
}

#[test]
fn imatrix_requirements() {
    let t = tensors(16, false);
    let err = run(&t, G::F32, PolicyOptions::new(FileType::Q2_K_S)).unwrap_err();
    match err {
        PolicyError::ImatrixRequired { tensor, ty } => {
            // token_embd (q2_K) never needs one; the first block tensor in output order does.
            assert_eq!((tensor.as_str(), ty), ("blk.0.attn_k.weight", G::Q2_K));
        }
        e => panic!("{e}"),
    }
    assert!(run(&t, G::F32, PolicyOptions { has_imatrix: true, ..PolicyOptions::new(FileType::Q2_K_S) }).is_ok());
    assert!(run(&t, G::F32, PolicyOptions { dry_run: true, ..PolicyOptions::new(FileType::Q2_K_S) }).is_ok());
    assert!(matches!(
        run(&t, G::F32, PolicyOptions::new(FileType::IQ2_XXS)),
        Err(PolicyError::ImatrixRequired { ty: G::IQ2_XXS, .. })
    ));
    // Forcing a type that needs an imatrix through --tensor-type is refused too.
    let opts = PolicyOptions {
        tensor_types: vec![(TensorPattern::parse("ffn_up").unwrap(), G::IQ1_S)],
        ..PolicyOptions::new(FileType::Q4_K_M)
    };
    assert!(matches!(run(&t, G::F32, opts), Err(PolicyError::ImatrixRequired { ty: G::IQ1_S, .. })));
}

#[test]
fn imatrix_changes_the_q4_0_mix() {
    let t = tensors(16, false);
    let plan = run(&t, G::F32, PolicyOptions { has_imatrix: true, ..PolicyOptions::new(FileType::Q4_0) }).unwrap();
    assert_eq!(layers_with(&plan, "ffn_down", G::Q4_1), [0, 1]);
    let plan = run(&t, G::F32, PolicyOptions::new(FileType::Q4_0)).unwrap();
    assert!(layers_with(&plan, "ffn_down", G::Q4_1).is_empty());
}

#[test]
fn shape_errors() {
    // Row length 48: Q8_0 has no fallback.
    let t = vec![("blk.0.attn_q.weight".to_string(), vec![48u64, 48])];
    let err = run(&t, G::F32, PolicyOptions::new(FileType::Q8_0)).unwrap_err();
    assert!(matches!(err, PolicyError::NoFallback { ty: G::Q8_0, ne0: 48, .. }), "{err}");
    // Row length 80: Q4_K -> Q5_0 does not fit either, so F16.
    let t = vec![("blk.0.attn_q.weight".to_string(), vec![80u64, 64])];
    assert_eq!(run(&t, G::F32, PolicyOptions::new(FileType::Q4_K_S)).unwrap()[0].1, G::F16);
    // An override is not subject to the fallback, and an impossible one is an error rather than a crash.
    let t = vec![("output.weight".to_string(), vec![576u64, 64])];
    let opts = PolicyOptions { output_tensor_type: Some(G::Q6_K), ..PolicyOptions::new(FileType::Q8_0) };
    assert!(matches!(run(&t, G::F32, opts), Err(PolicyError::ShapeIncompatible { ty: G::Q6_K, .. })));
}

#[test]
fn planner_misuse_is_reported() {
    let names = ["a.weight", "a.weight"];
    assert!(matches!(
        Planner::new(info(1), PolicyOptions::new(FileType::Q8_0), &names),
        Err(PolicyError::DuplicateTensor { .. })
    ));
    let mut p = Planner::new(info(1), PolicyOptions::new(FileType::Q8_0), &["a.weight"]).unwrap();
    let err = p.plan(&TensorDesc { name: "b.weight", ne: &[32, 32], src_type: G::F32 }).unwrap_err();
    assert!(matches!(err, PolicyError::UnknownTensor { .. }));
}

#[test]
fn file_type_support_and_names() {
    assert!(FileType::Q4_K_M.ensure_supported().is_ok());
    let err = FileType::Q1_0.ensure_supported().unwrap_err();
    assert!(err.to_string().contains("Q1_0"), "{err}");
    assert_eq!("q4_k_m".parse::<FileType>().unwrap(), FileType::Q4_K_M);
    assert_eq!("Q5_K".parse::<FileType>().unwrap(), FileType::Q5_K_M);
    assert_eq!("7".parse::<FileType>().unwrap(), FileType::Q8_0);
    assert!(matches!("Q4_K_X".parse::<FileType>(), Err(PolicyError::UnknownFileType { .. })));
    assert_eq!(FileType::Q4_K_M.id(), 15);
    assert_eq!(FileType::BF16.id(), 32);
    assert_eq!(FileType::Q2_0.id(), 41);
    assert_eq!(FileType::IQ2_S.default_type(), G::IQ2_XS);
    for ft in FileType::all() {
        let supported = ft.supported_by_encoder();
        let name = ft.name();
        let no_encoder = ["Q1_0", "Q2_0"];
        assert_eq!(supported, !no_encoder.contains(&name), "{name}");
    }
}

/// An 8-expert MoE (Mixtral-like): attn_v and attn_k go to Q8_0, attn_output to Q5_K, and the ffn rules
/// read the layer from the tensor name.
#[test]
fn eight_expert_rules() {
    let mut t = Vec::new();
    t.push(("token_embd.weight".to_string(), vec![512u64, 1024]));
    t.push(("output.weight".to_string(), vec![512, 1024]));
    for i in 0..16 {
        t.push((format!("blk.{i}.attn_k.weight"), vec![512, 128]));
        t.push((format!("blk.{i}.attn_v.weight"), vec![512, 128]));
        t.push((format!("blk.{i}.attn_output.weight"), vec![512, 512]));
        t.push((format!("blk.{i}.ffn_gate_inp.weight"), vec![512, 8]));
        t.push((format!("blk.{i}.ffn_down_exps.weight"), vec![1024, 512, 8]));
    }
    let model = ModelInfo { n_expert: 8, ..info(16) };
    let descs: Vec<TensorDesc> = t.iter().map(|(n, ne)| TensorDesc { name: n, ne, src_type: G::F32 }).collect();
    let planned = plan_all(model.clone(), PolicyOptions::new(FileType::Q4_K_M), &descs).unwrap();
    let plan: Vec<_> =
        planned.iter().map(|p| (p.tensor.name.to_string(), p.decision.ty, p.decision.quantize)).collect();
    assert_eq!(layers_with(&plan, "attn_v", G::Q8_0).len(), 16);
    assert_eq!(layers_with(&plan, "attn_k", G::Q8_0).len(), 16);
    assert_eq!(layers_with(&plan, "attn_output", G::Q5_K).len(), 16);
    assert_eq!(layers_with(&plan, "ffn_gate_inp", G::F32).len(), 16);
    assert_eq!(layers_with(&plan, "ffn_down_exps", G::Q6_K), [0, 1, 4, 7, 10, 13, 14, 15]);

    // MoE ffn tensors must name their layer, and it must exist.
    for (name, bad) in [("ffn_down_shared.weight", "NoLayer"), ("blk.16.ffn_down_exps.weight", "BadLayer")] {
        let descs = [TensorDesc { name, ne: &[1024, 512, 8], src_type: G::F32 }];
        let err = plan_all(model.clone(), PolicyOptions::new(FileType::Q4_K_M), &descs).unwrap_err();
        assert!(format!("{err:?}").starts_with(bad), "{err:?}");
    }
}
