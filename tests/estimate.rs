//! `quantforge estimate` and `quantforge plan`: exact weight and KV-cache bytes, fit and ranking, bad input.
//!
//! KV figures are llama.cpp's. Its context pads `-c` to a multiple of 256 (`GGML_PAD(n_ctx, 256)`,
//! `src/llama-context.cpp`), and every layer gets a K and a V tensor of `n_head_kv * head_dim` values per
//! cell in the cache type (`src/llama-kv-cache.cpp`); the `llama_kv_cache: size = X MiB` line it logs is the
//! sum of those tensors. So per cell (token) at f16:
//! - SmolLM2-135M: 30 layers x 2 (K, V) x 3 heads x 64 x 2 bytes = 23,040 bytes; 8192 cells = 180.00 MiB,
//!   which llama.cpp logged when it loaded the SmolLM2 Q4_1 file with `-c 8192` here:
//!   `llama_kv_cache: size = 180.00 MiB (8192 cells, 30 layers, 1/1 seqs), K (f16): 90.00 MiB, V (f16): 90.00 MiB`.
//!   `-c 4000` pads to 4096 cells: 90.00 MiB.
//! - Llama-3-8B: 32 x 2 x 8 x 128 x 2 = 131,072 bytes = 128 KiB per token; 8192 cells = 1024 MiB.
//! - q8_0 stores 32 values in 34 bytes, q4_0 in 18: SmolLM2 q8_0 = 30 x 2 x 192/32 x 34 = 12,240 bytes/cell.

use std::path::Path;

use quantforge_formats::gguf::{align_up, GgufFile};
use serde_json::Value;

use crate::util::{fixture, qf, smollm2_q4_1};

const MIB: u64 = 1024 * 1024;

fn estimate_json(args: &[&str]) -> Value {
    let mut a = vec!["estimate", "--json"];
    a.extend_from_slice(args);
    qf(a).json()
}

fn result<'a>(j: &'a Value, ty: &str, ctx: u64) -> &'a Value {
    j["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == ty && r["ctx"] == ctx)
        .unwrap_or_else(|| panic!("no result for {ty} at {ctx}: {j}"))
}

fn config(name: &str) -> String {
    fixture(&format!("configs/{name}")).to_string_lossy().into_owned()
}

#[test]
fn weight_bytes_equal_what_quantize_writes() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("golden/synth-tiny-f32.gguf");
    let types = ["Q4_K_M", "Q8_0", "Q6_K", "Q4_0", "Q3_K_S", "Q5_K_M", "IQ4_XS", "F16"];
    let j = estimate_json(&[input.to_str().unwrap(), "--type", &types.join(","), "--ctx", "512"]);
    for ty in types {
        let out = dir.path().join(format!("{ty}.gguf"));
        qf([
            "quantize".as_ref(),
            "--quiet".as_ref(),
            input.as_os_str(),
            out.as_os_str(),
            "--type".as_ref(),
            ty.as_ref(),
        ])
        .ok();
        let file = GgufFile::open(&out).unwrap();
        let planned = result(&j, ty, 512)["weights"]["bytes"].as_u64().unwrap();
        assert_eq!(planned, file.tensor_bytes(), "{ty}");
        // The data section holds exactly those tensors, each padded to the alignment: file minus header.
        let padded: u64 = file.tensors().iter().map(|t| align_up(t.size, file.alignment()).unwrap()).sum();
        assert_eq!(file.file_size() - file.data_offset(), padded, "{ty}");
    }
}

#[test]
fn llama3_8b_kv_cache_is_128_kib_per_token() {
    let cfg = config("llama-3.1-8b-instruct.json");
    let j = estimate_json(&[&cfg, "--type", "Q4_K_M", "--ctx", "8192,1000"]);
    let kv = &result(&j, "Q4_K_M", 8192)["kv"];
    assert_eq!(kv["bytes"], 8192 * 128 * 1024);
    assert_eq!(kv["bytes"], 1024 * MIB);
    assert_eq!(kv["caches"][0]["k_bytes"], 512 * MIB);
    // -c 1000 is padded to 1024 cells.
    let kv = &result(&j, "Q4_K_M", 1000)["kv"];
    assert_eq!((kv["n_ctx"].as_u64(), kv["bytes"].as_u64()), (Some(1024), Some(1024 * 128 * 1024)));
    // Weights from config alone: Llama-3-8B Q4_K_M is the 4.58 GiB / 4.89 BPW llama.cpp reports.
    let w = &result(&j, "Q4_K_M", 8192)["weights"];
    let gib = w["bytes"].as_u64().unwrap() as f64 / (1u64 << 30) as f64;
    assert!((gib - 4.58).abs() < 0.005, "{gib}");
    assert!((w["bits_per_weight"].as_f64().unwrap() - 4.89).abs() < 0.005, "{w}");
    assert_eq!(w["token_embd_type"], "q4_K");
    assert_eq!(w["output_type"], "q6_K");
}

#[test]
fn smollm2_kv_cache_from_config() {
    let cfg = config("smollm2-135m-instruct.json");
    let j = estimate_json(&[&cfg, "--type", "Q8_0", "--ctx", "8192,4000"]);
    let kv = &result(&j, "Q8_0", 8192)["kv"]["caches"][0];
    assert_eq!((kv["cells"].as_u64(), kv["layers"].as_u64()), (Some(8192), Some(30)));
    assert_eq!(kv["bytes"], 180 * MIB);
    assert_eq!((kv["k_bytes"].as_u64(), kv["v_bytes"].as_u64()), (Some(90 * MIB), Some(90 * MIB)));
    assert_eq!(result(&j, "Q8_0", 4000)["kv"]["bytes"], 90 * MIB);
    let j = estimate_json(&[&cfg, "--type", "Q8_0", "--ctx", "8192", "--kv-type", "q8_0"]);
    assert_eq!(result(&j, "Q8_0", 8192)["kv"]["bytes"], 12_240 * 8192);
    let j = estimate_json(&[&cfg, "--type", "Q8_0", "--ctx", "8192", "--kv-type", "q4_0"]);
    assert_eq!(result(&j, "Q8_0", 8192)["kv"]["bytes"], 30 * 2 * (192 / 32 * 18) * 8192);
    // Four sequences of 2048 in separate streams (-c 8192 -np 4): the same 8192 cells in total.
    let j = estimate_json(&[&cfg, "--type", "Q8_0", "--ctx", "2048", "--parallel", "4"]);
    let c = &result(&j, "Q8_0", 2048)["kv"]["caches"][0];
    assert_eq!(
        (c["cells"].as_u64(), c["streams"].as_u64(), c["bytes"].as_u64()),
        (Some(2048), Some(4), Some(180 * MIB))
    );
}

#[test]
fn fit_offload_and_decode_bound() {
    let cfg = config("llama-3.1-8b-instruct.json");
    // Q4_K_M at 8k fits a 24 GiB card; at 128k it does not fit an 8 GiB one, which gets some layers.
    let j = estimate_json(&[&cfg, "-t", "Q4_K_M", "--ctx", "8192", "--vram", "24GiB", "--bandwidth", "1000GB/s"]);
    let r = result(&j, "Q4_K_M", 8192);
    assert_eq!(r["fits_in_vram"], true);
    assert_eq!(r["best_offload"]["ngl"], 33);
    let max_ctx = r["max_ctx"].as_u64().unwrap();
    assert_eq!(max_ctx, 131072, "the whole trained context fits");
    // Bound: bytes read per token = weights on the GPU + 8192 cells of KV.
    let d = &r["decode"];
    let vram_read = d["vram_bytes_per_token"].as_u64().unwrap();
    let w = &r["weights"];
    let expected = w["bytes"].as_u64().unwrap() - w["token_embd"].as_u64().unwrap() + 8192 * 128 * 1024;
    assert_eq!(vram_read, expected);
    assert!((d["tokens_per_s"].as_f64().unwrap() - 1e12 / expected as f64).abs() < 1e-6);

    let j = estimate_json(&[&cfg, "-t", "Q4_K_M", "--ctx", "131072", "--vram", "8GiB", "--ram", "64GiB"]);
    let r = result(&j, "Q4_K_M", 131072);
    assert_eq!(r["fits_in_vram"], false);
    let ngl = r["best_offload"]["ngl"].as_u64().unwrap();
    assert!(ngl > 0 && ngl < 33, "{ngl}");
    assert!(r["best_offload"]["vram"]["total"].as_u64().unwrap() <= 8 << 30);
    let max_ctx = r["max_ctx"].as_u64().unwrap();
    assert!(max_ctx.is_multiple_of(256) && max_ctx > 8192 && max_ctx < 32768, "{max_ctx}");

    // Host bandwidth for the CPU layers: the split bound is slower than all-GPU and faster than all-CPU.
    let args = [&cfg, "-t", "Q4_K_M", "--ctx", "8192", "--bandwidth", "1000GB/s", "--ram-bandwidth", "50GB/s"];
    let split = estimate_json(&[&args[..], &["--vram", "3GiB"]].concat());
    let gpu = estimate_json(&[&args[..], &["--vram", "24GiB"]].concat());
    let tps = |j: &Value| result(j, "Q4_K_M", 8192)["decode"]["tokens_per_s"].as_f64().unwrap();
    let cpu = estimate_json(&[&cfg, "-t", "Q4_K_M", "--ctx", "8192", "--bandwidth", "50GB/s"]);
    assert!(tps(&cpu) < tps(&split) && tps(&split) < tps(&gpu), "{} {} {}", tps(&cpu), tps(&split), tps(&gpu));
}

#[test]
fn human_output_prints_llama_cpp_style_kv_line() {
    let cfg = config("smollm2-135m-instruct.json");
    let out = qf(["estimate", &cfg, "--ctx", "8192", "--device", "m2"]).ok();
    assert!(
        out.contains(
            "llama_kv_cache: size = 180.00 MiB (8192 cells, 30 layers, 1/1 seqs), K (f16): 90.00 MiB, V (f16): 90.00 MiB"
        ),
        "{out}"
    );
    for ty in ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"] {
        assert!(out.contains(ty), "{out}");
    }
    assert!(out.contains("tok/s"), "{out}");
}

#[test]
fn hf_directory_and_its_config_agree() {
    let dir = fixture("stories260K");
    // Rows of 172 fit no quantized block, as in llama.cpp: only float types can be planned.
    let a = estimate_json(&[dir.to_str().unwrap(), "-t", "F32,F16", "--ctx", "512"]);
    let b = estimate_json(&[dir.join("config.json").to_str().unwrap(), "-t", "F32,F16", "--ctx", "512"]);
    for ty in ["F32", "F16"] {
        assert_eq!(result(&a, ty, 512)["weights"], result(&b, ty, 512)["weights"], "{ty}");
        assert_eq!(result(&a, ty, 512)["kv"], result(&b, ty, 512)["kv"], "{ty}");
    }
    // 5 layers x 2 x 4 KV heads x 8 dims x 2 bytes x 512 cells.
    assert_eq!(result(&a, "F16", 512)["kv"]["bytes"], 5 * 2 * 4 * 8 * 2 * 512);
    // F32: every one of the 260,032 parameters in 4 bytes (tied embeddings, no rope_freqs).
    assert_eq!(result(&a, "F32", 512)["weights"]["bytes"], 260_032 * 4);
    let err = qf(["estimate", dir.to_str().unwrap(), "-t", "Q8_0"]).fails();
    assert!(err.contains("cannot plan Q8_0") && err.contains("row length 172"), "{err}");
}

#[test]
fn plan_ranks_types_that_fit() {
    let cfg = config("llama-3.1-8b-instruct.json");
    // At 32k a 10 GiB card holds Q4_K_M (8.6 GiB with 4 GiB of cache) and Q5_K_M, not Q8_0 or F16.
    let j = qf(["plan", &cfg, "--vram", "10GiB", "--ctx", "32768", "--json"]).json();
    assert_eq!(j["plan"]["ranked_by"], "bits per weight");
    let types: Vec<&str> = j["results"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"Q4_K_M") && types.contains(&"Q5_K_M"), "{types:?}");
    assert!(!types.contains(&"Q8_0") && !types.contains(&"F16"), "{types:?}");
    let bpw: Vec<f64> =
        j["results"].as_array().unwrap().iter().map(|r| r["weights"]["bits_per_weight"].as_f64().unwrap()).collect();
    assert!(bpw.windows(2).all(|w| w[0] >= w[1]), "{bpw:?}");
    assert!(j["results"].as_array().unwrap().iter().all(|r| r["fits_in_vram"] == true));
    assert!(j["plan"]["does_not_fit"].as_array().unwrap().iter().any(|t| t == "Q8_0"));

    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("quality.json");
    std::fs::write(
        &q,
        r#"{"types": {"Q4_K_M": {"ppl": 7.1, "kld": 0.03}, "Q3_K_M": {"ppl": 7.6, "kld": 0.09},
                                      "Q4_0": {"ppl": 7.3, "kld": 0.05}, "Q5_K_M": {"ppl": 7.0, "kld": 0.01}}}"#,
    )
    .unwrap();
    let j = qf([
        "plan".as_ref(),
        cfg.as_ref(),
        "--vram".as_ref(),
        "10GiB".as_ref(),
        "--ctx".as_ref(),
        "32768".as_ref(),
        "--json".as_ref(),
        "--quality".as_ref(),
        q.as_os_str(),
    ])
    .json();
    assert_eq!(j["plan"]["ranked_by"], "KL divergence (measured)");
    let types: Vec<&str> = j["results"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types[..4], ["Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M"], "{types:?}");
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let cfg = config("smollm2-135m-instruct.json");
    let cases: &[(&[&str], &str)] = &[
        (&["estimate", "no/such/model.gguf"], "no such file"),
        (&["estimate", &cfg, "--kv-type", "q3_k"], "unknown KV cache type"),
        (&["estimate", &cfg, "--type", "Q4_K_X"], "unknown quantization type"),
        (&["estimate", &cfg, "--ctx", "0"], "context must be at least 1"),
        (&["estimate", &cfg, "--vram", "lots"], "invalid size"),
        (&["estimate", &cfg, "--bandwidth", "fast"], "invalid bandwidth"),
        (&["estimate", &cfg, "--device", "abacus"], "unknown device"),
        (&["estimate", &cfg, "--no-flash-attn", "--kv-type", "q8_0"], "requires flash attention"),
        (&["plan", &cfg, "--ctx", "4096"], "needs a memory budget"),
    ];
    for (args, msg) in cases {
        let err = qf(*args).fails();
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad_cfg = dir.path().join("config.json");
    std::fs::write(&bad_cfg, r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}"#).unwrap();
    let err = qf(["estimate".as_ref(), bad_cfg.as_os_str()]).fails();
    assert!(err.contains("num_attention_heads"), "{err}");
    std::fs::write(&bad_cfg, r#"{"architectures": ["GPT2LMHeadModel"], "n_head": 4, "n_embd": 64, "n_layer": 2, "n_inner": 9, "vocab_size": 9}"#).unwrap();
    let err = qf(["estimate".as_ref(), bad_cfg.as_os_str()]).fails();
    assert!(err.contains("GPT2LMHeadModel"), "{err}");
    let q = dir.path().join("q.json");
    std::fs::write(&q, r#"{"types": {"Q4_K_M": {"ppl": "low"}}}"#).unwrap();
    let err = qf(["plan".as_ref(), cfg.as_ref(), "--ram".as_ref(), "8G".as_ref(), "--quality".as_ref(), q.as_os_str()])
        .fails();
    assert!(err.contains("ppl must be a non-negative number"), "{err}");
    let not_gguf = dir.path().join("x.gguf");
    std::fs::write(&not_gguf, b"not a gguf file at all").unwrap();
    qf(["estimate".as_ref(), not_gguf.as_os_str()]).fails();
}

#[test]
#[ignore = "slow: needs the cached SmolLM2 GGUF (scripts/fetch-models.sh)"]
fn smollm2_gguf_matches_its_config() {
    let gguf = smollm2_q4_1();
    let cfg = config("smollm2-135m-instruct.json");
    let types = "Q4_0,Q8_0,Q4_K_M,Q6_K,F16";
    let a = estimate_json(&[gguf.to_str().unwrap(), "-t", types, "--ctx", "8192"]);
    let b = estimate_json(&[&cfg, "-t", types, "--ctx", "8192"]);
    for ty in types.split(',') {
        let (wa, wb) = (&result(&a, ty, 8192)["weights"], &result(&b, ty, 8192)["weights"]);
        assert_eq!(wa["bytes"], wb["bytes"], "{ty}");
        assert_eq!(result(&a, ty, 8192)["kv"]["bytes"], 180 * MIB, "{ty}");
    }
    // The file as it is: its own tensor bytes.
    let j = estimate_json(&[gguf.to_str().unwrap(), "--ctx", "8192"]);
    let file = GgufFile::open(Path::new(&gguf)).unwrap();
    assert_eq!(result(&j, "as-is", 8192)["weights"]["bytes"], file.tensor_bytes());
}
