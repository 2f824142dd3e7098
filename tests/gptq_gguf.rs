//! `quantize --type T --method gptq` end to end on stories260K: the file has exactly the tensors, types and
//! sizes of `--type T`, records how it was made, loads in every evaluator command, and each calibrated layer's
//! output error is below that of the type's quantizer weighted by the same pass's importance matrix.

use std::path::Path;

use quantforge_quant::imatrix::Imatrix;
use serde_json::Value;

use crate::util::{fixture, qf};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn inspect(p: &Path) -> Value {
    qf(["inspect", "--json", &s(p)]).json()
}

#[test]
fn gptq_gguf_has_the_mix_of_the_plain_quantizer_and_lower_output_error() {
    let dir = tempfile::tempdir().unwrap();
    let (model, text) = (fixture("stories260K"), fixture("text/tinystories-valid-sample.txt"));
    let (plain, gptq) = (dir.path().join("plain.gguf"), dir.path().join("gptq.gguf"));
    let saved = dir.path().join("pass.imatrix.gguf");
    qf(["quantize", &s(&model), &s(&plain), "--type", "q4_k_m", "-q"]).ok();
    let calib = ["--calib", &s(&text), "--nsamples", "16", "--seqlen", "64", "--save-imatrix", &s(&saved)];
    let args = ["quantize", &s(&model), &s(&gptq), "--type", "q4_k_m", "--method", "gptq", "--json"];
    let j = qf(args.iter().chain(&calib)).json();

    let (a, b) = (inspect(&plain), inspect(&gptq));
    let shape = |j: &Value| -> Vec<(Value, Value, Value, Value)> {
        let t = j["tensors"].as_array().unwrap();
        t.iter().map(|t| (t["name"].clone(), t["type"].clone(), t["shape"].clone(), t["bytes"].clone())).collect()
    };
    assert_eq!(shape(&a), shape(&b));
    assert_eq!(b["metadata"]["quantize.method"], "gptq");
    assert_eq!(b["metadata"]["quantize.gptq.samples"], 16);
    assert_eq!(b["metadata"]["general.file_type"], a["metadata"]["general.file_type"]);

    // Every block linear the plan quantizes (ffn_down, 172 wide, stays F16 as llama-quantize leaves it).
    let plan = qf(["quantize", &s(&model), &s(&plain), "--type", "q4_k_m", "--dry-run", "--json"]).json();
    let planned = plan["tensors"].as_array().unwrap().iter();
    let planned = planned.filter(|t| t["quantize"] == true && t["name"].as_str().unwrap().starts_with("blk.")).count();
    let layers = j["gptq"]["layers"].as_array().unwrap();
    assert_eq!((layers.len(), planned), (30, 30));
    let coded: Vec<&Value> = layers.iter().filter(|l| l["method"] == "gptq").collect();
    assert_eq!(coded.len(), 30, "Q5_0 and Q8_0 (32-value blocks) have value grids");
    for l in &coded {
        let (e, r) = (l["output_error"].as_f64().unwrap(), l["imatrix_output_error"].as_f64().unwrap());
        assert!(e < r, "{}: gptq {e} vs imatrix quantizer {r}", l["name"]);
    }
    // The GPTQ bytes differ from the plain quantizer's, and the file evaluates.
    assert_ne!(std::fs::read(&plain).unwrap(), std::fs::read(&gptq).unwrap());
    let ppl =
        qf(["eval", "perplexity", &s(&gptq), "--text", &s(&text), "--ctx", "128", "--chunks", "2", "--json"]).json();
    assert!(ppl["ppl"].as_f64().unwrap().is_finite());

    // The pass's importance matrix: one entry per block linear layer (ffn_down included), one chunk per
    // window; layers that read the same input have the same statistics.
    let m = Imatrix::load(&saved).unwrap();
    let linears = a["tensors"].as_array().unwrap().iter().filter(|t| {
        let n = t["name"].as_str().unwrap();
        n.starts_with("blk.")
            && ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
                .iter()
                .any(|l| n.ends_with(&format!("{l}.weight")))
    });
    assert_eq!(m.len(), linears.count());
    assert_eq!(m.chunk_count(), 16);
    for b in 0..5 {
        let e = |l: &str| m.get(&format!("blk.{b}.{l}.weight")).unwrap().to_vec();
        assert_eq!(e("attn_q"), e("attn_k"));
        assert_eq!(e("attn_q"), e("attn_v"));
        assert_eq!(e("ffn_gate"), e("ffn_up"));
        assert_ne!(e("attn_q"), e("ffn_gate"));
        assert!(e("ffn_down").iter().all(|v| v.is_finite() && *v >= 0.0));
    }
    // llama.cpp's layout: the plain quantizer takes it and records its chunks.
    let with = dir.path().join("with-imatrix.gguf");
    qf(["quantize", &s(&model), &s(&with), "--type", "q4_k_m", "--imatrix", &s(&saved), "-q"]).ok();
    let with = inspect(&with);
    assert_eq!(with["metadata"]["quantize.imatrix.chunks_count"], 16);
    // The mix is llama-quantize's with an importance matrix.
    assert_eq!(shape(&with), shape(&b));
}

#[test]
fn gptq_gguf_refusals_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = s(&fixture("stories260K"));
    let out = dir.path().join("x.gguf");
    let o = s(&out);
    for (extra, want) in [
        (&["--method", "awq"][..], "only gptq"),
        (&["--method", "gptq", "--act-order"], "--act-order"),
        (&["--method", "gptq", "--imatrix", "nothing.dat"], "--imatrix"),
        (&["--method", "gptq", "--damp", "2"], "--damp"),
        (&["--method", "gptq", "--save-imatrix", &o], "output model"),
        (&["--save-imatrix", "pass.dat"], "only `--method gptq --type T`"),
    ] {
        let args = ["quantize", &model, &o, "--type", "q4_k_m"];
        let err = qf(args.iter().chain(extra)).fails();
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!out.exists());
    }
}

#[test]
fn experts_are_coded_one_by_one_inside_their_stacked_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let text = fixture("text/tinystories-valid-sample.txt");
    for name in ["mixtral", "qwen2moe", "qwen3moe"] {
        let model = fixture(&format!("archs/{name}"));
        let (plain, gptq) = (dir.path().join(format!("{name}.gguf")), dir.path().join(format!("{name}-gptq.gguf")));
        let saved = dir.path().join(format!("{name}.imatrix.gguf"));
        qf(["quantize", &s(&model), &s(&plain), "--type", "q4_k_m", "-q"]).ok();
        let calib = ["--calib", &s(&text), "--nsamples", "8", "--seqlen", "64", "--save-imatrix", &s(&saved)];
        let args = ["quantize", &s(&model), &s(&gptq), "--type", "q4_k_m", "--method", "gptq", "--json"];
        let j = qf(args.iter().chain(&calib)).json();
        // The same tensors, types and sizes as the plain quantizer's (stacked experts included).
        let shape = |j: &Value| -> Vec<(Value, Value, Value, Value)> {
            let t = j["tensors"].as_array().unwrap();
            t.iter().map(|t| (t["name"].clone(), t["type"].clone(), t["shape"].clone(), t["bytes"].clone())).collect()
        };
        assert_eq!(shape(&inspect(&plain)), shape(&inspect(&gptq)), "{name}");
        // Each expert's gate and up (Q5_0 here; down stays F16 at 16 or 24 columns) coded by GPTQ from the
        // rows routed to it, with a lower output error than the plain quantizer with the same statistics.
        let layers = j["gptq"]["layers"].as_array().unwrap();
        let experts: Vec<&Value> =
            layers.iter().filter(|l| l["name"].as_str().unwrap().contains("_exps.weight[")).collect();
        assert_eq!(experts.len(), 2 * 2 * 4, "{name}");
        for l in &experts {
            assert_eq!(l["method"], "gptq", "{}", l["name"]);
            let (e, r) = (l["output_error"].as_f64().unwrap(), l["imatrix_output_error"].as_f64().unwrap());
            assert!(e < r, "{}: gptq {e} vs imatrix quantizer {r}", l["name"]);
        }
        let bytes = |p: &Path| std::fs::read(p).unwrap();
        assert_ne!(bytes(&plain), bytes(&gptq), "{name}");
        let ppl =
            qf(["eval", "perplexity", &s(&gptq), "--text", &s(&text), "-c", "64", "--chunks", "2", "--json"]).json();
        assert!(ppl["ppl"].as_f64().unwrap().is_finite(), "{name}");
        // The pass's importance matrix holds every expert's columns in turn, as llama-imatrix writes a stacked
        // tensor's, and the plain quantizer takes it.
        let m = Imatrix::load(&saved).unwrap();
        assert_eq!(m.get("blk.1.ffn_down_exps.weight").unwrap().len(), 4 * if name == "mixtral" { 24 } else { 16 });
        let g = m.get("blk.0.ffn_gate_exps.weight").unwrap();
        assert_eq!(g.len(), 4 * 32);
        assert_ne!(g[..32], g[32..64], "{name}: experts 0 and 1 have the same statistics");
        let with = dir.path().join(format!("{name}-imatrix.gguf"));
        qf(["quantize", &s(&model), &s(&with), "--type", "q4_k_m", "--imatrix", &s(&saved), "-q"]).ok();
    }
}
