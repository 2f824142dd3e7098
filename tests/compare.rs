//! `quantforge eval compare`: figures equal to the single-model commands, the cache that makes runs
//! resumable, the Markdown and SVG outputs, and bad input.

use std::path::Path;

use crate::util::{fixture, qf};

fn text() -> String {
    fixture("text/tinystories-valid-sample.txt").display().to_string()
}

/// stories260K as an F32 GGUF and a Q4_K_M quantization of it, in `dir`.
fn models(dir: &Path) -> (String, String) {
    let f32 = dir.join("f32.gguf").display().to_string();
    let q = dir.join("q4km.gguf").display().to_string();
    qf(["convert", &fixture("stories260K").display().to_string(), "-o", &f32, "--outtype", "f32", "-q"]).ok();
    qf(["quantize", &f32, &q, "--type", "q4_k_m", "-q"]).ok();
    (f32, q)
}

fn compare(models: &[&str], cache: &Path, extra: &[&str]) -> crate::util::Run {
    let cache = cache.display().to_string();
    let text = text();
    let mut args = vec!["eval", "compare"];
    args.extend_from_slice(models);
    args.extend(["--text", &text, "--ctx", "128", "--chunks", "4", "--cache", &cache]);
    args.extend_from_slice(extra);
    qf(args)
}

#[test]
fn compare_reports_the_figures_of_the_single_model_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (f32, q) = models(dir.path());
    let hf = fixture("stories260K").display().to_string();
    let toy = fixture("mmlu-toy").display().to_string();
    let extra = ["--mmlu", &toy, "--shots", "1", "--json", "-q"];
    let j = compare(&[&f32, &q, &hf], &dir.path().join("cache"), &extra).json();
    let rows = j["models"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["base"], true);
    assert_eq!(rows[0]["delta_ppl_percent"], 0.0);
    assert_eq!(rows[0]["file_bytes"], std::fs::metadata(&f32).unwrap().len());
    assert!((rows[0]["bits_per_weight"].as_f64().unwrap() - 32.0).abs() < 1e-9);
    assert!(rows[1]["bits_per_weight"].as_f64().unwrap() < 9.0);
    assert_eq!(rows[2]["label"], "stories260K");

    let ppl = qf(["eval", "perplexity", &f32, "--text", &text(), "-c", "128", "--chunks", "4", "--json"]).json();
    assert_eq!(rows[0]["ppl"]["value"], ppl["ppl"]);
    let kld = qf(["eval", "kld", &f32, &q, "--text", &text(), "-c", "128", "--chunks", "4", "--json"]).json();
    assert_eq!(rows[1]["kld"], kld["kld"]);
    assert_eq!(rows[1]["same_top"], kld["same_top"]);
    assert_eq!(rows[1]["ppl"], kld["ppl"]);
    let dppl = rows[1]["delta_ppl_percent"].as_f64().unwrap();
    let want = 100.0 * (kld["ppl"]["value"].as_f64().unwrap() / ppl["ppl"].as_f64().unwrap() - 1.0);
    assert!((dppl - want).abs() < 1e-9);
    // The HF directory holds the same weights as the F32 GGUF.
    assert!(rows[2]["kld"]["value"].as_f64().unwrap() < 1e-4);

    let mmlu = qf(["eval", "mmlu", &q, "--data", &toy, "--shots", "1", "--json"]).json();
    assert_eq!(rows[1]["mmlu"], mmlu["overall"]);
}

#[test]
fn finished_models_are_not_measured_again() {
    let dir = tempfile::tempdir().unwrap();
    let (f32, q) = models(dir.path());
    let hf = fixture("stories260K").display().to_string();
    let cache = dir.path().join("cache");
    let first = compare(&[&f32, &q], &cache, &[]);
    let first_err = first.stderr.clone();
    let first_out = first.ok();
    assert!(first_err.contains("perplexity (base"), "{first_err}");
    // A second run with one more model measures only that one; the table is the same for the others.
    let second = compare(&[&f32, &q, &hf], &cache, &[]);
    let err = second.stderr.clone();
    let out = second.ok();
    assert!(!err.contains("perplexity (base") && err.matches("KL divergence against the base").count() == 1, "{err}");
    assert!(err.contains("stories260K: perplexity and KL divergence"), "{err}");
    let lines =
        |s: &str| s.lines().take(3).map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>();
    let (a, b) = (lines(&first_out), lines(&out));
    assert_eq!(a[..3], b[..3]);
    // --no-cache measures everything again.
    let text = text();
    let again = qf(["eval", "compare", &f32, &q, "--text", &text, "-c", "128", "--chunks", "4", "--no-cache"]);
    let err = again.stderr.clone();
    again.ok();
    assert!(err.contains("perplexity (base"), "{err}");
}

#[test]
fn markdown_and_svg_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (f32, q) = models(dir.path());
    let svg = dir.path().join("chart.svg");
    let svg_arg = svg.display().to_string();
    let md = compare(&[&f32, &q], &dir.path().join("cache"), &["--markdown", "--svg", &svg_arg, "-q"]).ok();
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(table.len(), 4, "{md}");
    assert!(table[0].contains("| mean KLD |") && table[1].contains("---:"));
    assert!(table[3].starts_with("| q4km.gguf |"));
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    // KLD is drawn on a log scale: the base (KLD 0) is named in the note, the candidate drawn.
    assert_eq!(chart.matches("<circle").count(), 1);
    assert!(chart.contains("f32.gguf") && chart.contains("not drawn"));
    assert!(chart.contains("q4km.gguf (KLD "));
    let ppl_chart = dir.path().join("ppl.svg");
    compare(
        &[&f32, &q],
        &dir.path().join("cache"),
        &["--svg", &ppl_chart.display().to_string(), "--chart-metric", "ppl", "-q"],
    )
    .ok();
    let ppl_svg = std::fs::read_to_string(&ppl_chart).unwrap();
    assert!(ppl_svg.contains("perplexity") && ppl_svg.matches("<circle").count() == 2);
}

#[test]
fn bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (f32, q) = models(dir.path());
    let cache = dir.path().join("cache");
    let err = compare(&[&f32], &cache, &[]).fails();
    assert!(err.contains("MODEL"), "{err}");
    let err = compare(&[&f32, &q], &cache, &["--chart-metric", "mmlu"]).fails();
    assert!(err.contains("--chart-metric mmlu"), "{err}");
    let err = compare(&[&f32, &q], &cache, &["--svg", &q]).fails();
    assert!(err.contains("q4km.gguf"), "{err}");
    let missing = dir.path().join("nope.gguf").display().to_string();
    let err = compare(&[&f32, &missing], &cache, &[]).fails();
    assert!(err.contains("nope.gguf"), "{err}");
    // A model with another vocabulary cannot be compared with this base.
    let other = fixture("golden/synth-tiny-f32.gguf").display().to_string();
    let err = compare(&[&f32, &other], &cache, &[]).fails();
    assert!(err.contains("synth-tiny-f32.gguf"), "{err}");
    assert!(std::fs::metadata(&q).unwrap().len() > 0, "an input was overwritten");
}

/// `eval compare --json` is the file `plan --quality` reads: each row's type comes from its GGUF, and the
/// types that fit are ranked by the KL divergence measured in the comparison, ahead of the unmeasured ones.
#[test]
fn plan_ranks_by_the_figures_of_a_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let (f32, q4) = models(dir.path());
    let q6 = dir.path().join("q6k.gguf").display().to_string();
    qf(["quantize", &f32, &q6, "--type", "q6_k", "-q"]).ok();
    let out = compare(&[&f32, &q4, &q6], &dir.path().join("cache"), &["--json", "-q"]).ok();
    let measured: serde_json::Value = serde_json::from_str(&out).unwrap();
    let file = dir.path().join("compare.json");
    std::fs::write(&file, &out).unwrap();
    let file = file.display().to_string();
    let j = qf(["plan", &f32, "--ram", "1G", "--ctx", "256", "--json", "--quality", &file]).json();
    assert_eq!(j["plan"]["ranked_by"], "KL divergence (measured)");
    let types: Vec<&str> = j["results"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    // By bits per weight F16 would come first; measured, Q6_K (lower KLD) then Q4_K_M lead.
    assert_eq!(types[..2], ["Q6_K", "Q4_K_M"], "{types:?}");
    assert!(types.contains(&"F16"), "{types:?}");
    let quality = j["plan"]["quality"].as_array().unwrap();
    for (i, row) in [(0, 2), (1, 1)] {
        assert_eq!(quality[i]["kld"], measured["models"][row]["kld"]["value"], "{}", quality[i]);
        assert_eq!(quality[i]["ppl"], measured["models"][row]["ppl"]["value"], "{}", quality[i]);
    }
    assert!(quality[2]["kld"].is_null());
    // The older per-type table is still read.
    let table = dir.path().join("types.json");
    std::fs::write(&table, r#"{"types": {"Q4_K_M": {"kld": 0.001}, "Q6_K": {"kld": 0.01}}}"#).unwrap();
    let table = table.display().to_string();
    let j = qf(["plan", &f32, "--ram", "1G", "--ctx", "256", "--json", "--quality", &table]).json();
    let types: Vec<&str> = j["results"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types[..2], ["Q4_K_M", "Q6_K"], "{types:?}");
}
