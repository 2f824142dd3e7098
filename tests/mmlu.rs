//! `quantforge eval mmlu`: the hand-made subject end to end on stories260K, bad input naming the row or
//! subject, and (slow) the real quick10 subjects on SmolLM2.

use crate::util::{fixture, qf, smollm2_q4_1};

fn stories() -> String {
    fixture("stories260K").display().to_string()
}

fn toy_data() -> String {
    fixture("mmlu-toy").display().to_string()
}

#[test]
fn mmlu_json_counts_every_question() {
    let j = qf(["eval", "mmlu", &stories(), "--data", &toy_data(), "--shots", "2", "--json", "-t", "1"]).json();
    assert_eq!(j["overall"]["n"], 4);
    assert_eq!(j["shots"], 2);
    let s = &j["subjects"][0];
    assert_eq!(s["subject"], "toy_facts");
    assert_eq!(s["category"], "other");
    assert_eq!(s["min_shots"], 2);
    assert_eq!(s["correct"], j["overall"]["correct"]);
    let acc = j["overall"]["accuracy"].as_f64().unwrap();
    let correct = j["overall"]["correct"].as_f64().unwrap();
    assert_eq!(acc, correct / 4.0);
    // The same answers whatever the threads and the packing of prompts into passes.
    let again = qf(["eval", "mmlu", &stories(), "--data", &toy_data(), "--shots", "2", "--json", "-b", "64"]).json();
    assert_eq!(again["overall"], j["overall"]);
}

#[test]
fn mmlu_text_output_has_an_overall_line() {
    let out = qf(["eval", "mmlu", &stories(), "--data", &toy_data(), "--shots", "0", "-q"]).ok();
    assert!(out.lines().any(|l| l.starts_with("overall") && l.contains('%')), "{out}");
    assert!(out.contains("toy_facts"), "{out}");
}

#[test]
fn malformed_csv_rows_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("test")).unwrap();
    let csv = dir.path().join("test/broken_test.csv");
    std::fs::write(&csv, "q1,a,b,c,d,A\nq2,a,b,c,D\n").unwrap();
    let d = dir.path().display().to_string();
    let err = qf(["eval", "mmlu", &stories(), "--data", &d, "--shots", "0"]).fails();
    assert!(err.contains("broken_test.csv") && err.contains("row 2") && err.contains("found 5"), "{err}");
    std::fs::write(&csv, "q1,a,b,c,d,A\nq2,a,b,c,d,F\n").unwrap();
    let err = qf(["eval", "mmlu", &stories(), "--data", &d, "--shots", "0"]).fails();
    assert!(err.contains("row 2: answer 'F'"), "{err}");
    // Few-shot prompts need the dev file.
    std::fs::write(&csv, "q1,a,b,c,d,A\n").unwrap();
    let err = qf(["eval", "mmlu", &stories(), "--data", &d, "--shots", "1"]).fails();
    assert!(err.contains("broken_dev.csv") && err.contains("--shots 0"), "{err}");
}

#[test]
fn unknown_subjects_and_bad_options_are_refused() {
    let err = qf(["eval", "mmlu", &stories(), "--data", &toy_data(), "--subjects", "astronomy"]).fails();
    assert!(err.contains("unknown subject 'astronomy'"), "{err}");
    let err = qf(["eval", "mmlu", &stories(), "--data", &toy_data(), "--subset", "quick10"]).fails();
    assert!(err.contains("unknown subject 'abstract_algebra'"), "{err}");
    let err = qf(["eval", "mmlu", &stories(), "--data", &toy_data(), "--subset", "best"]).fails();
    assert!(err.contains("unknown subset 'best'"), "{err}");
    let err = qf(["eval", "mmlu", &stories(), "--data", &toy_data(), "--shots", "6"]).fails();
    assert!(err.contains("--shots 6"), "{err}");
    let err = qf(["eval", "mmlu", &stories(), "--data", &toy_data(), "--chat-template", "auto"]).fails();
    assert!(err.contains("chat template"), "{err}");
    let err = qf(["eval", "mmlu", &stories(), "--data", &fixture("text").display().to_string()]).fails();
    assert!(err.contains("test"), "{err}");
}

#[test]
fn a_model_without_a_tokenizer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("stories260K").join(f), dir.path().join(f)).unwrap();
    }
    let model = dir.path().display().to_string();
    let err = qf(["eval", "mmlu", &model, "--data", &toy_data(), "--shots", "0"]).fails();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
#[ignore = "slow: SmolLM2 on the first question of each quick10 subject, 5-shot, plain and chat-templated"]
fn smollm2_quick10_five_shot() {
    let model = smollm2_q4_1().display().to_string();
    let data = fixture("mmlu").display().to_string();
    let args = ["eval", "mmlu", &model, "--data", &data, "--subset", "quick10", "--limit", "1", "--json", "-q"];
    let j = qf(args).json();
    assert_eq!(j["overall"]["n"], 10);
    assert_eq!(j["subjects"].as_array().unwrap().len(), 10);
    assert!(j["subjects"].as_array().unwrap().iter().all(|s| s["min_shots"] == 5));
    // Five examples of a few hundred tokens each come before every question.
    assert!(j["n_tokens"].as_u64().unwrap() > 10 * 300, "{}", j["n_tokens"]);
    let categories = j["categories"].as_object().unwrap();
    let n: u64 = categories.values().map(|c| c["n"].as_u64().unwrap()).sum();
    assert_eq!(n, 10);
    // SmolLM2-Instruct ships a ChatML template; `auto` finds it.
    let chat = qf(args.iter().copied().chain(["--chat-template", "auto"])).json();
    assert_eq!(chat["chat_template"], "chatml");
    assert_eq!(chat["overall"]["n"], 10);
    assert!(chat["n_tokens"].as_u64() > j["n_tokens"].as_u64());
}
