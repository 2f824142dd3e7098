//! `quantforge eval`: perplexity end to end on the committed stories260K model, bad input, and (slow) the
//! SmolLM2 figures of llama.cpp's `llama-perplexity`.

use crate::util::{fixture, qf, smollm2_q4_1};

fn stories() -> String {
    fixture("stories260K").display().to_string()
}

fn text() -> String {
    fixture("text/tinystories-valid-sample.txt").display().to_string()
}

#[test]
fn perplexity_json_reports_llama_cpp_counts() {
    let j = qf(["eval", "perplexity", &stories(), "--text", &text(), "--ctx", "128", "--chunks", "6", "--json"]).json();
    assert_eq!(j["n_ctx"], 128);
    assert_eq!(j["n_chunks"], 6);
    // n_ctx - 1 - n_ctx/2 scored tokens per chunk.
    assert_eq!(j["n_scored"], 6 * 63);
    let ppl = j["ppl"].as_f64().unwrap();
    // In-domain text for this model: low perplexity, far below the 512-token vocabulary.
    assert!(ppl > 1.5 && ppl < 12.0, "ppl {ppl}");
    let running = j["running_ppl"].as_array().unwrap();
    assert_eq!(running.len(), 6);
    assert!((running[5].as_f64().unwrap() - ppl).abs() < 1e-12);
    assert!(j["ppl_uncertainty"].as_f64().unwrap() > 0.0);
}

#[test]
fn perplexity_does_not_depend_on_batch_or_threads() {
    let run = |batch: &str, threads: &str| {
        qf([
            "eval",
            "perplexity",
            &stories(),
            "--text",
            &text(),
            "-c",
            "128",
            "--chunks",
            "5",
            "-b",
            batch,
            "-t",
            threads,
            "--json",
        ])
        .json()["ppl"]
            .as_f64()
            .unwrap()
    };
    let a = run("128", "1");
    assert_eq!(a, run("640", "2"));
}

#[test]
fn perplexity_text_output_has_final_estimate() {
    let out = qf(["eval", "perplexity", &stories(), "--text", &text(), "--ctx", "256", "--chunks", "2", "-q"]).ok();
    assert!(out.starts_with("[1]"), "{out}");
    assert!(out.contains("Final estimate: PPL = "), "{out}");
}

#[test]
fn perplexity_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Once upon a time there was a cat.").unwrap();
    let short = short.display().to_string();
    let err = qf(["eval", "perplexity", &stories(), "--text", &short]).fails();
    assert!(err.contains("at least 2*ctx"), "{err}");
    let err = qf(["eval", "perplexity", &stories(), "--text", &text(), "--ctx", "1024"]).fails();
    assert!(err.contains("training context of 512"), "{err}");
    let err = qf(["eval", "perplexity", &text(), "--text", &text()]).fails();
    assert!(err.contains("not a GGUF file"), "{err}");
    let missing = dir.path().join("none.txt").display().to_string();
    let err = qf(["eval", "perplexity", &stories(), "--text", &missing]).fails();
    assert!(err.contains("none.txt"), "{err}");
}

fn smollm2_ppl(model: &std::path::Path) -> f64 {
    let wiki = fixture("text/wiki.test.raw").display().to_string();
    let m = model.display().to_string();
    qf(["eval", "perplexity", &m, "--text", &wiki, "--chunks", "16", "--json"]).json()["ppl"].as_f64().unwrap()
}

#[test]
#[ignore = "slow: SmolLM2 perplexity on 16 chunks of wiki.test.raw, F32, Q8_0 and Q4_K_M"]
fn smollm2_perplexity_matches_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let f32 = dir.path().join("f32.gguf");
    let src = smollm2_q4_1().display().to_string();
    qf(["quantize", "--allow-requantize", &src, &f32.display().to_string(), "--type", "F32", "-q"]).ok();
    let ppl = smollm2_ppl(&f32);
    assert!((ppl / 28.4849 - 1.0).abs() < 0.001, "F32 ppl {ppl}, llama.cpp 28.4849");
    for (ty, want) in [("Q8_0", 28.6547), ("Q4_K_M", 30.0869)] {
        let out = dir.path().join(format!("{ty}.gguf"));
        qf(["quantize", &f32.display().to_string(), &out.display().to_string(), "--type", ty, "-q"]).ok();
        let ppl = smollm2_ppl(&out);
        // llama.cpp multiplies against 8-bit activations, we in f32: within 1%.
        assert!((ppl / want - 1.0).abs() < 0.01, "{ty} ppl {ppl}, llama.cpp {want}");
    }
}

#[test]
fn kld_of_a_model_against_itself_is_zero() {
    let j = qf(["eval", "kld", &stories(), &stories(), "--text", &text(), "--ctx", "128", "--chunks", "4", "--json"])
        .json();
    assert_eq!(j["n_scored"], 4 * 63);
    assert!(j["kld"]["value"].as_f64().unwrap().abs() < 1e-4, "{j}");
    assert_eq!(j["same_top"]["value"].as_f64().unwrap(), 1.0);
    // The base's PPL comes from 16-bit log-probabilities, as llama.cpp reads them back: equal to 1e-3.
    let (p, b) = (j["ppl"]["value"].as_f64().unwrap(), j["ppl_base"]["value"].as_f64().unwrap());
    assert!((p / b - 1.0).abs() < 1e-3, "{p} vs {b}");
    assert!(j["kld_percentiles"]["Median"].is_number());
}
