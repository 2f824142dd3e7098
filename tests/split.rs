//! Split GGUF inputs (`<name>-00001-of-0000N.gguf`, the layout `quantize --split-max-size` and llama.cpp's
//! `gguf-split` write): every command reads the whole model from any of its files, and refuses a set with a
//! missing, foreign or mismatched split, naming the file.

use std::path::{Path, PathBuf};

use crate::util::{fixture, qf};

/// Paths as arguments.
fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `quantize INPUT OUT -t TYPE --split-max-size MAX`: the split files written, in order.
fn split(input: &Path, out: &Path, ty: &str, max: &str) -> Vec<PathBuf> {
    let j = qf(["quantize", "--json", "--allow-requantize", &s(input), &s(out), "--type", ty, "--split-max-size", max])
        .json();
    j["outputs"].as_array().unwrap().iter().map(|p| PathBuf::from(p.as_str().unwrap())).collect()
}

fn quantize(input: &Path, out: &Path, ty: &str) {
    qf(["quantize", "-q", "--allow-requantize", &s(input), &s(out), "--type", ty]).ok();
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Set the `split.count` (u16) stored in the GGUF file at `path` to `count`, by hand: the key's bytes, its
/// type id 2 (u16), then the value.
fn patch_split_count(path: &Path, count: u16) {
    let mut bytes = read(path);
    let key = b"split.count";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("split.count in the file") + key.len();
    assert_eq!(bytes[at..at + 4], 2u32.to_le_bytes(), "split.count is a u16");
    bytes[at + 4..at + 6].copy_from_slice(&count.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn quantize_from_a_split_input_gives_the_unsplit_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let f32 = fixture("golden/synth-tiny-f32.gguf");
    let parts = split(&f32, &p("s.gguf"), "COPY", "2M");
    assert!(parts.len() >= 3, "{parts:?}");
    // From the first split and from a later one: llama-quantize's bytes, as from the unsplit file.
    let golden = read(&fixture("golden/llama-quantize/synth-tiny-Q4_K_M.gguf"));
    quantize(&f32, &p("whole.gguf"), "Q4_K_M");
    assert!(read(&p("whole.gguf")) == golden);
    for (i, part) in [&parts[0], &parts[1]].into_iter().enumerate() {
        let out = p(&format!("from-split-{i}.gguf"));
        quantize(part, &out, "Q4_K_M");
        assert!(read(&out) == golden, "quantized from {} differs", part.display());
    }
    // Requantizing a split Q8_0 model gives what requantizing the unsplit one gives.
    quantize(&f32, &p("q8.gguf"), "Q8_0");
    let q8_parts = split(&f32, &p("q8s.gguf"), "Q8_0", "1M");
    assert!(q8_parts.len() >= 2, "{q8_parts:?}");
    quantize(&p("q8.gguf"), &p("q4-whole.gguf"), "Q4_0");
    quantize(&q8_parts[0], &p("q4-split.gguf"), "Q4_0");
    assert!(read(&p("q4-whole.gguf")) == read(&p("q4-split.gguf")));
    let whole = qf(["inspect", "--json", "--no-tensors", &s(&p("q4-split.gguf"))]).json();
    assert_eq!(whole["totals"]["tensors"], 21);
}

#[test]
fn eval_reads_the_whole_split_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let text = s(&fixture("text/tinystories-valid-sample.txt"));
    qf(["convert", &s(&fixture("stories260K")), "-o", &s(&p("m.gguf")), "--outtype", "f32", "-q"]).ok();
    let parts = split(&p("m.gguf"), &p("ms.gguf"), "COPY", "200K");
    assert!(parts.len() >= 3, "{parts:?}");
    let ppl = |model: &Path| {
        let args = ["eval", "perplexity", &s(model), "--text", &text, "--ctx", "128", "--chunks", "3", "--json"];
        qf(args).json()["ppl"].as_f64().unwrap()
    };
    let whole = ppl(&p("m.gguf"));
    assert!(whole.is_finite() && whole > 1.0, "{whole}");
    assert_eq!(ppl(&parts[0]), whole);
    assert_eq!(ppl(&parts[parts.len() - 1]), whole);
    // Against the unsplit model as base, the split one diverges exactly as the unsplit one does from itself.
    let kld = |model: &Path| {
        let args = ["eval", "kld", &s(&p("m.gguf")), &s(model), "--text", &text, "--ctx", "128", "--chunks", "2"];
        let mut j = qf(args.into_iter().chain(["--json"])).json();
        for volatile in ["model", "seconds", "forward_seconds", "tokens_per_second"] {
            j[volatile] = serde_json::Value::Null;
        }
        j
    };
    let itself = kld(&p("m.gguf"));
    assert!(itself["kld"]["value"].as_f64().unwrap().abs() < 1e-4, "{itself}");
    assert_eq!(kld(&parts[1]), itself);
    // The importance matrix collected over the split model is the unsplit one's, byte for byte.
    for (model, out) in [(p("m.gguf"), p("i-whole.gguf")), (parts[1].clone(), p("i-split.gguf"))] {
        let args = ["eval", "imatrix", &s(&model), "--text", &text, "--ctx", "128", "--chunks", "2", "-q"];
        qf(args.into_iter().map(String::from).chain(["-o".into(), s(&out)])).ok();
    }
    assert!(read(&p("i-whole.gguf")) == read(&p("i-split.gguf")));
}

#[test]
fn inspect_shows_the_whole_model_or_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let f32 = fixture("golden/synth-tiny-f32.gguf");
    let parts = split(&f32, &dir.path().join("s.gguf"), "COPY", "2M");
    let whole = qf(["inspect", "--json", &s(&f32)]).json();
    let names = |j: &serde_json::Value| -> Vec<String> {
        j["tensors"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let joined = names(&qf(["inspect", "--json", &s(&parts[0])]).json());
    assert_eq!(sorted(joined.clone()), sorted(names(&whole)));
    let mut per_file = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let j = qf(["inspect", "--json", &s(part)]).json();
        assert_eq!(j["totals"]["tensors"], 21);
        assert_eq!(j["totals"]["parameters"], whole["totals"]["parameters"]);
        assert_eq!(names(&j), joined);
        assert_eq!(j["metadata"]["general.architecture"], "llama");
        assert_eq!(j["metadata"]["split.count"], parts.len());
        let sizes: u64 = parts.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
        assert_eq!(j["file_size"], sizes);
        let files = j["splits"].as_array().unwrap();
        assert_eq!(files.len(), parts.len());
        assert_eq!(files[i]["path"], s(part));
        // --single-file: that file alone.
        let one = qf(["inspect", "--json", "--single-file", &s(part)]).json();
        assert_eq!(one["metadata"]["split.no"], i);
        assert_eq!(one["totals"]["tensors"], files[i]["tensors"]);
        assert!(one.get("splits").is_none());
        per_file.extend(names(&one));
    }
    // The whole model lists the files' tensors in split order.
    assert_eq!(per_file, joined);
    let text = qf(["inspect", &s(&parts[1])]).ok();
    assert!(text.contains(&format!("splits: {} files", parts.len())), "{text}");
    assert!(text.contains("tensors      21"), "{text}");
    // An unsplit file shows no split list.
    assert!(whole.get("splits").is_none());
}

/// Every command that reads a GGUF model refuses the set, naming `file` and saying `what`.
fn every_command_refuses(model: &Path, dir: &Path, file: &str, what: &str) {
    let text = s(&fixture("text/tinystories-valid-sample.txt"));
    let m = s(model);
    let out = |n: &str| s(&dir.join(n));
    let runs: Vec<Vec<String>> = [
        vec!["inspect", &m],
        vec!["quantize", &m, &out("never.gguf"), "--type", "Q4_0"],
        vec!["quantize", "--dry-run", &m, &out("never.gguf"), "--type", "Q4_0"],
        vec!["convert", &m, "--to", "hf", "-o", &out("never-hf")],
        vec!["eval", "perplexity", &m, "--text", &text],
        vec!["estimate", &m],
        vec!["plan", &m, "--vram", "1GiB"],
    ]
    .iter()
    .map(|r| r.iter().map(|a| a.to_string()).collect())
    .collect();
    for args in runs {
        let err = qf(&args).fails();
        assert!(err.contains(file) && err.contains(what), "{args:?}: {err}");
    }
    assert!(!dir.join("never.gguf").exists() && !dir.join("never-hf").exists());
}

#[test]
fn a_missing_second_split_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parts = split(&fixture("golden/synth-tiny-f32.gguf"), &dir.path().join("s.gguf"), "COPY", "2M");
    std::fs::remove_file(&parts[1]).unwrap();
    every_command_refuses(&parts[0], dir.path(), "s-00002-of-", "is missing");
    // Asked from the last split, the missing one is still named.
    every_command_refuses(&parts[parts.len() - 1], dir.path(), "s-00002-of-", "is missing");
}

#[test]
fn a_split_of_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let tiny = split(&fixture("golden/synth-tiny-f32.gguf"), &dir.path().join("m.gguf"), "COPY", "3M");
    let tied = split(&fixture("golden/synth-tied-f32.gguf"), &other.path().join("m.gguf"), "COPY", "16M");
    assert_eq!((tiny.len(), tied.len()), (2, 2), "{tiny:?} {tied:?}");
    // Same name, same count: only the tensor count tells the tied model's second half from the tiny one's.
    std::fs::copy(&tied[1], &tiny[1]).unwrap();
    every_command_refuses(&tiny[0], dir.path(), "m-00002-of-00002.gguf", "split.tensors.count");
}

#[test]
fn a_wrong_split_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parts = split(&fixture("golden/synth-tiny-f32.gguf"), &dir.path().join("s.gguf"), "COPY", "3M");
    assert_eq!(parts.len(), 2);
    patch_split_count(&parts[1], 3);
    // From the first file: the second one disagrees with it.
    every_command_refuses(&parts[0], dir.path(), "s-00002-of-00002.gguf", "split.count is 3");
    // From the second file: its name says 2 files, its keys 3.
    every_command_refuses(&parts[1], dir.path(), "s-00002-of-00002.gguf", "-00002-of-00003.gguf");
}

#[test]
fn an_output_over_a_split_of_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parts = split(&fixture("golden/synth-tiny-f32.gguf"), &dir.path().join("s.gguf"), "COPY", "2M");
    let before = read(&parts[1]);
    let err = qf(["quantize", &s(&parts[0]), &s(&parts[1]), "--type", "Q8_0"]).fails();
    assert!(err.contains("overwrite"), "{err}");
    assert!(read(&parts[1]) == before);
}

#[test]
fn estimate_and_plan_see_the_whole_split_model() {
    let dir = tempfile::tempdir().unwrap();
    let f32 = fixture("golden/synth-tiny-f32.gguf");
    let parts = split(&f32, &dir.path().join("s.gguf"), "COPY", "2M");
    quantize(&f32, &dir.path().join("whole.gguf"), "COPY");
    let whole = dir.path().join("whole.gguf");
    for cmd in [vec!["estimate", "--json"], vec!["plan", "--vram", "1GiB", "--json"]] {
        let run = |model: &Path| {
            let mut j = qf(cmd.iter().map(|a| a.to_string()).chain([s(model)])).json();
            assert_eq!(j["model"]["path"], s(model));
            j["model"]["path"] = serde_json::Value::Null;
            j
        };
        let expected = run(&whole);
        assert_eq!(expected["model"]["parameters"], 1443072);
        for part in &parts {
            assert_eq!(run(part), expected, "{cmd:?} {}", part.display());
        }
    }
}

#[test]
fn convert_to_hf_from_a_split_model_gives_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    qf(["convert", &s(&fixture("stories260K")), "-o", &s(&p("m.gguf")), "--outtype", "f32", "-q"]).ok();
    let parts = split(&p("m.gguf"), &p("ms.gguf"), "COPY", "200K");
    assert!(parts.len() >= 3, "{parts:?}");
    // The same copy unsplit (COPY writes llama-quantize's tensor order, which the safetensors file keeps).
    quantize(&p("m.gguf"), &p("whole.gguf"), "COPY");
    qf(["convert", &s(&p("whole.gguf")), "--to", "hf", "-o", &s(&p("hf-whole")), "-q"]).ok();
    qf(["convert", &s(&parts[1]), "--to", "hf", "-o", &s(&p("hf-split")), "-q"]).ok();
    let mut names: Vec<_> =
        std::fs::read_dir(p("hf-whole")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert!(names.contains(&"model.safetensors".to_string()), "{names:?}");
    for name in names {
        assert!(read(&p("hf-whole").join(&name)) == read(&p("hf-split").join(&name)), "{name}");
    }
    assert_eq!(std::fs::read_dir(p("hf-split")).unwrap().count(), std::fs::read_dir(p("hf-whole")).unwrap().count());
}

/// The real SmolLM2 file split in three and evaluated from its last split: llama.cpp's tensor layout (272
/// tensors, q4_1 and q8_0 blocks) read through three mappings gives the unsplit perplexity exactly.
#[test]
#[ignore = "slow: needs scripts/fetch-models.sh"]
fn smollm2_split_perplexity_matches_the_unsplit_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = crate::util::smollm2_q4_1();
    let parts = split(&model, &dir.path().join("smol.gguf"), "COPY", "40M");
    assert_eq!(parts.len(), 3, "{parts:?}");
    let text = s(&fixture("text/tinystories-valid-sample.txt"));
    let ppl = |m: &Path| {
        qf(["eval", "perplexity", &s(m), "--text", &text, "--ctx", "128", "--chunks", "4", "--json"]).json()["ppl"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(ppl(&parts[2]), ppl(&model));
    let j = qf(["inspect", "--json", "--no-tensors", &s(&parts[0])]).json();
    assert_eq!(j["totals"]["tensors"], 272);
}

#[test]
fn eval_compare_and_mmlu_measure_a_split_model_as_the_unsplit_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let text = s(&fixture("text/tinystories-valid-sample.txt"));
    let toy = s(&fixture("mmlu-toy"));
    qf(["convert", &s(&fixture("stories260K")), "-o", &s(&p("m.gguf")), "--outtype", "f32", "-q"]).ok();
    quantize(&p("m.gguf"), &p("q.gguf"), "Q4_K_M");
    let parts = split(&p("m.gguf"), &p("qs.gguf"), "Q4_K_M", "100K");
    assert!(parts.len() >= 2, "{parts:?}");
    let row = |model: &Path, cache: &str| {
        let (base, model, cache) = (s(&p("m.gguf")), s(model), s(&p(cache)));
        let args = ["eval", "compare", &base, &model, "--text", &text, "--ctx", "128", "--chunks", "2"];
        let more = ["--cache", &cache, "--mmlu", &toy, "--shots", "1", "--json", "-q"];
        qf(args.into_iter().chain(more)).json()["models"][1].clone()
    };
    let (whole, split) = (row(&p("q.gguf"), "c1"), row(&parts[0], "c2"));
    for key in ["ppl", "kld", "same_top", "mmlu", "bits_per_weight"] {
        assert!(whole[key].is_object() || whole[key].is_number(), "{key}: {whole}");
        assert_eq!(split[key], whole[key], "{key}");
    }
    let sizes: u64 = parts.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert_eq!(split["file_bytes"], sizes);
    let mmlu =
        |m: &Path| qf(["eval", "mmlu", &s(m), "--data", &toy, "--shots", "1", "--json"]).json()["overall"].clone();
    assert_eq!(mmlu(&parts[1]), mmlu(&p("q.gguf")));
}
