//! `quantforge run`: pipelines on stories260K served by the loopback hub (tests/hub_server.rs). Artifacts are
//! checked against what `convert` and `quantize` write for the same choices, the manifest's hashes against
//! sha256 computed here, and the bytes of two runs against each other.

#![cfg(unix)]

#[path = "hub_server.rs"]
mod hub_server;
mod util;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use hub_server::{qf_hub, sha256_hex, stories_files, Server, COMMIT};
use serde_json::Value;
use util::{fixture, qf, Run};

/// A pipeline folder: eval and calibration texts, the LoRA adapter, its own HF_HOME.
struct Setup {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    server: Server,
}

const TEXT_BYTES: usize = 4000;

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("text/tinystories-valid-sample.txt")).unwrap();
    let cut = |from: usize| {
        let s: String = text.chars().skip(from).take(TEXT_BYTES).collect();
        s
    };
    std::fs::write(dir.path().join("calib.txt"), cut(0)).unwrap();
    std::fs::write(dir.path().join("eval.txt"), cut(20_000)).unwrap();
    let adapter = dir.path().join("adapter");
    std::fs::create_dir(&adapter).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture("stories260K-lora-kjv-r4").join(f), adapter.join(f)).unwrap();
    }
    Setup { dir, home: tempfile::tempdir().unwrap(), server: Server::start() }
}

/// F16, Q8_0 and a LoRA-merged Q8_0 of the hub's stories260K, with perplexity gates (`extra` appended).
fn pipeline(extra: &str) -> String {
    format!(
        r#"[source]
model = "test/stories260K"

[card]
license = "mit"

[eval]
text = "eval.txt"
ctx = 128
chunks = 3

[[output]]
type = "F16"
gates = {{ max_delta_ppl = 0.01, max_kld = 0.0001, min_same_top = 0.99 }}

# stories260K's ffn_down rows (172) are no multiple of Q8_0's blocks.
[[output]]
type = "Q8_0"
tensor_type = ["ffn_down=f16"]
gates = {{ max_delta_ppl = 0.1 }}

[[output]]
name = "stories260K-kjv-Q8_0"
type = "Q8_0"
tensor_type = ["ffn_down=f16"]
lora = [{{ path = "adapter", scale = 1.0 }}]
gates = {{ max_delta_ppl = 50.0 }}
{extra}"#
    )
}

impl Setup {
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn qf<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        qf_hub(self.home.path(), &self.server.hub, &[], args)
    }

    fn run(&self, file: &Path, out: &Path, more: &[&str]) -> Run {
        let mut args: Vec<&OsStr> = vec![OsStr::new("run"), file.as_os_str(), OsStr::new("--out"), out.as_os_str()];
        args.extend(more.iter().map(OsStr::new));
        self.qf(args)
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON event per line")).collect()
}

const PUBLISHED: [&str; 9] = [
    "manifest.json",
    "README.md",
    "chart.svg",
    "stories260K-F16.gguf",
    "stories260K-Q8_0.gguf",
    "stories260K-kjv-Q8_0.gguf",
    "stories260K-F16.Modelfile",
    "stories260K-Q8_0.Modelfile",
    "stories260K-kjv-Q8_0.Modelfile",
];

#[test]
fn a_pipeline_publishes_the_same_bytes_every_time_and_redoes_nothing_unchanged() {
    let s = setup();
    let file = s.write("pipeline.toml", &pipeline(""));
    let (out, out2) = (s.dir.path().join("out"), s.dir.path().join("out2"));
    let events = json_lines(&s.run(&file, &out, &["--json"]).ok());
    let done: Vec<&str> =
        events.iter().filter(|e| e["event"] == "step").map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(done, ["done"; 4], "{events:?}");

    // The artifacts are what the commands write for the same choices.
    let cmp = tempfile::tempdir().unwrap();
    let c = cmp.path();
    let st = fixture("stories260K");
    let adapter = s.dir.path().join("adapter");
    let f16 = c.join("f16.gguf");
    qf(["quantize".as_ref(), st.as_os_str(), "-t".as_ref(), "f16".as_ref(), "-q".as_ref(), f16.as_os_str()]).ok();
    let q8 = |out: &str, lora: Option<&Path>| {
        let mut a: Vec<&OsStr> = vec!["quantize".as_ref(), st.as_os_str(), "-t".as_ref(), "q8_0".as_ref()];
        a.extend(["--tensor-type", "ffn_down=f16", "-q"].map(OsStr::new));
        if let Some(l) = lora {
            a.extend(["--lora".as_ref(), l.as_os_str()]);
        }
        let path = c.join(out);
        a.push(path.as_os_str());
        qf(a).ok();
    };
    q8("q8.gguf", None);
    q8("kjv.gguf", Some(&adapter));
    assert!(read(&out.join("stories260K-F16.gguf")) == read(&c.join("f16.gguf")), "F16 differs from quantize");
    assert!(read(&out.join("stories260K-Q8_0.gguf")) == read(&c.join("q8.gguf")), "Q8_0 differs from quantize");
    assert!(read(&out.join("stories260K-kjv-Q8_0.gguf")) == read(&c.join("kjv.gguf")), "LoRA Q8_0 differs");

    // The manifest: the source's commit and file hashes, each artifact's hash and size, the gates.
    let m: Value = serde_json::from_slice(&read(&out.join("manifest.json"))).unwrap();
    assert_eq!(m["source"]["repo"], "test/stories260K");
    assert_eq!(m["source"]["revision"], "main");
    assert_eq!(m["source"]["commit"], COMMIT);
    let files = m["source"]["files"].as_array().unwrap();
    let expected: Vec<(String, String)> =
        stories_files().iter().map(|f| (f.path.clone(), sha256_hex(&f.bytes))).collect();
    let listed: Vec<(String, String)> = files
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["sha256"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(m["pipeline"]["sha256"], sha256_hex(&read(&file)));
    let eval_text = m["inputs"].as_array().unwrap().iter().find(|i| i["role"] == "eval_text").unwrap();
    assert_eq!(eval_text["sha256"], sha256_hex(&read(&s.dir.path().join("eval.txt"))));
    for a in m["artifacts"].as_array().unwrap() {
        let bytes = read(&out.join(a["file"].as_str().unwrap()));
        assert_eq!(a["sha256"], sha256_hex(&bytes), "{}", a["file"]);
        assert_eq!(a["size"], bytes.len() as u64);
        assert_eq!(a["passed"], true, "{a}");
        assert!(a["gates"].as_array().unwrap().iter().all(|g| g["passed"] == true));
    }
    let f16 = &m["artifacts"][0];
    assert_eq!(f16["type_mix"]["f16"].as_u64().unwrap() + f16["type_mix"]["f32"].as_u64().unwrap(), 47);
    assert!(f16["eval"]["kld"].as_f64().unwrap() < 1e-4, "{f16}");
    // The adapter moves the model away from the source: its KLD is far above the plain Q8_0's.
    let (plain, kjv) = (&m["artifacts"][1]["eval"]["kld"], &m["artifacts"][2]["eval"]["kld"]);
    assert!(kjv.as_f64().unwrap() > 10.0 * plain.as_f64().unwrap(), "{plain} {kjv}");

    // The card and the Modelfiles.
    let card = String::from_utf8(read(&out.join("README.md"))).unwrap();
    for needle in [
        "base_model: test/stories260K\nbase_model_relation: quantized\n",
        "license: mit\n",
        "pipeline_tag: text-generation\n",
        "| [stories260K-Q8_0.gguf](stories260K-Q8_0.gguf) | Q8_0 |",
        "![File size against mean KL divergence from the source](chart.svg)",
        f16["sha256"].as_str().unwrap(),
    ] {
        assert!(card.contains(needle), "{needle} missing from:\n{card}");
    }
    let modelfile = String::from_utf8(read(&out.join("stories260K-Q8_0.Modelfile"))).unwrap();
    assert_eq!(
        modelfile,
        "FROM ./stories260K-Q8_0.gguf\nPARAMETER num_ctx 512\nPARAMETER stop \"</s>\"\nLICENSE \"\"\"mit\"\"\"\n"
    );
    let text = String::from_utf8(read(&out.join("manifest.json"))).unwrap();
    assert!(!text.contains(s.dir.path().to_str().unwrap()), "an absolute path in the manifest");

    // Again: nothing redone, nothing changed.
    let before: Vec<Vec<u8>> = PUBLISHED.iter().map(|f| read(&out.join(f))).collect();
    let events = json_lines(&s.run(&file, &out, &["--json"]).ok());
    let steps: Vec<&Value> = events.iter().filter(|e| e["event"] == "step").collect();
    assert!(steps.iter().all(|e| e["status"] == "unchanged"), "{events:?}");
    let after: Vec<Vec<u8>> = PUBLISHED.iter().map(|f| read(&out.join(f))).collect();
    assert!(before == after, "a second run changed the outputs");

    // A fresh folder, one thread: the same bytes; a line per step on stderr (not a terminal).
    let r = s.run(&file, &out2, &["--threads", "1"]);
    assert!(
        r.stderr.contains("[1/4] reference: done in ") && r.stderr.contains("[4/4] stories260K-kjv-Q8_0: done in ")
    );
    assert!(r.stderr.contains("manifest.json: 3 of 3 artifacts published"), "{}", r.stderr);
    r.ok();
    for (f, b) in PUBLISHED.iter().zip(&before) {
        assert!(&read(&out2.join(f)) == b, "{f} differs between runs");
    }

    // --force redoes every step.
    let events = json_lines(&s.run(&file, &out2, &["--json", "--force"]).ok());
    assert_eq!(events.iter().filter(|e| e["status"] == "done").count(), 4, "{events:?}");
    // A step whose inputs changed is redone, the others kept.
    let changed = pipeline("").replace("max_delta_ppl = 0.1 }", "max_delta_ppl = 0.1 }\npure = true");
    std::fs::write(&file, changed).unwrap();
    let events = json_lines(&s.run(&file, &out2, &["--json"]).ok());
    let redone: Vec<&str> =
        events.iter().filter(|e| e["status"] == "done").map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(redone, ["stories260K-Q8_0"], "{events:?}");

    // Interrupted inside a step (its artifact written, its record not yet): that step alone is redone.
    std::fs::remove_file(out2.join(".quantforge/units/output-stories260K-F16.json")).unwrap();
    let events = json_lines(&s.run(&file, &out2, &["--json"]).ok());
    let redone: Vec<&str> =
        events.iter().filter(|e| e["status"] == "done").map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(redone, ["stories260K-F16"], "{events:?}");

    // An artifact changed after its step (same size) is not published under its old hash.
    let f16 = out2.join("stories260K-F16.gguf");
    let mut bytes = read(&f16);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&f16, bytes).unwrap();
    let err = s.run(&file, &out2, &[]).fails();
    assert!(err.contains("stories260K-F16.gguf") && err.contains("changed since"), "{err}");
}

#[test]
fn a_failed_gate_exits_1_and_keeps_the_passing_artifacts() {
    let s = setup();
    let strict = pipeline("").replace("max_delta_ppl = 50.0", "max_kld = 0.001");
    let file = s.write("pipeline.toml", &strict);
    let out = s.dir.path().join("out");
    let r = s.run(&file, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let err = r.fails();
    assert!(err.contains("stories260K-kjv-Q8_0") && err.contains("max_kld"), "{err}");
    for f in ["stories260K-F16.gguf", "stories260K-Q8_0.gguf", "stories260K-Q8_0.Modelfile", "manifest.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(!out.join("stories260K-kjv-Q8_0.gguf").exists() && !out.join("stories260K-kjv-Q8_0.Modelfile").exists());
    let m: Value = serde_json::from_slice(&read(&out.join("manifest.json"))).unwrap();
    assert_eq!(m["passed"], false);
    let kjv = &m["artifacts"][2];
    assert_eq!(
        (&kjv["passed"], &kjv["gates"][0]["gate"], &kjv["gates"][0]["passed"]),
        (&false.into(), &"max_kld".into(), &false.into())
    );
    let card = String::from_utf8(read(&out.join("README.md"))).unwrap();
    assert!(!card.contains("[stories260K-kjv-Q8_0.gguf]") && card.contains("fail (not published)"), "{card}");

    // Loosening the gate publishes it without quantizing again.
    std::fs::write(&file, pipeline("")).unwrap();
    let events = json_lines(&s.run(&file, &out, &["--json"]).ok());
    assert!(events.iter().filter(|e| e["event"] == "step").all(|e| e["status"] == "unchanged"), "{events:?}");
    assert!(out.join("stories260K-kjv-Q8_0.gguf").is_file());
}

#[test]
fn schema_errors_name_the_file_line_column_and_key() {
    let s = setup();
    let out = s.dir.path().join("out");
    let file = s.write("bad.toml", &pipeline("").replace("chunks = 3", "chunks = 3\nchunk_size = 2"));
    let err = s.run(&file, &out, &[]).fails();
    assert!(err.contains("bad.toml:11:1") && err.contains("chunk_size"), "{err}");
    let file = s.write("bad.toml", &pipeline("").replace("ctx = 128", "ctx = \"128\""));
    let err = s.run(&file, &out, &[]).fails();
    assert!(err.contains("bad.toml:9:7") && err.contains("key `ctx`"), "{err}");
    let file = s.write("bad.toml", &pipeline("").replace("type = \"F16\"", "type = \"Q9_X\""));
    let err = s.run(&file, &out, &[]).fails();
    assert!(err.contains("bad.toml:13:8") && err.contains("Q9_X"), "{err}");
    assert!(!out.exists(), "nothing is written for a bad pipeline");
}

#[test]
fn an_output_that_would_overwrite_an_input_is_refused() {
    let s = setup();
    // The evaluation text is README.md in the folder the card would be written to.
    let text = read(&s.dir.path().join("eval.txt"));
    std::fs::write(s.dir.path().join("README.md"), &text).unwrap();
    let file = s.write("pipeline.toml", &pipeline("").replace("eval.txt", "README.md"));
    let err = s.run(&file, s.dir.path(), &[]).fails();
    assert!(err.contains("README.md"), "{err}");
    assert!(read(&s.dir.path().join("README.md")) == text);
    assert!(!s.dir.path().join(".quantforge").exists(), "work started before the check");
    // The pipeline file itself is the card's name in the output folder.
    let file = s.write("README.md", &pipeline(""));
    let before = read(&file);
    let err = s.run(&file, s.dir.path(), &[]).fails();
    assert!(err.contains("README.md"), "{err}");
    assert!(read(&file) == before && !s.dir.path().join(".quantforge").exists());
}

#[test]
fn plan_unit_and_gather_in_separate_processes_give_the_manifest_of_one_run() {
    let s = setup();
    let file = s.write("pipeline.toml", &pipeline("\n[imatrix]\ntext = \"calib.txt\"\nctx = 128\nchunks = 2\n\n[[output]]\ntype = \"Q4_K_M\"\nimatrix = true\n"));
    let (one, split) = (s.dir.path().join("one"), s.dir.path().join("split"));
    let plan = s.run(&file, &split, &["--plan"]).json();
    let units = plan["units"].as_array().unwrap();
    let names: Vec<&str> = units.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["imatrix", "reference", "stories260K-F16", "stories260K-Q8_0", "stories260K-kjv-Q8_0", "stories260K-Q4_K_M"]
    );
    assert_eq!(units[5]["needs"], serde_json::json!([0, 1]));
    assert_eq!(units[5]["stage"], 1);
    // Gathering before the units ran is refused.
    let err = s.run(&file, &split, &["--gather"]).fails();
    assert!(err.contains("--unit 0"), "{err}");
    // Output units first, in reverse: each computes what it needs when it is not there yet.
    for u in units.iter().rev() {
        s.run(&file, &split, &["--unit", &u["index"].to_string(), "-q"]).ok();
    }
    s.run(&file, &split, &["--gather", "-q"]).ok();
    s.run(&file, &one, &["-q"]).ok();
    for f in [
        "manifest.json",
        "README.md",
        "chart.svg",
        "stories260K-Q4_K_M.gguf",
        "imatrix.gguf",
        "stories260K-Q4_K_M.Modelfile",
    ] {
        assert!(read(&one.join(f)) == read(&split.join(f)), "{f} differs");
    }
}

#[test]
fn the_starter_pipeline_runs_as_is_on_stories260k() {
    let s = setup();
    let file = s.dir.path().join("starter/pipeline.toml");
    std::fs::create_dir(s.dir.path().join("starter")).unwrap();
    s.qf(["run".as_ref(), "--init".as_ref(), "test/stories260K".as_ref(), "-o".as_ref(), file.as_os_str()]).ok();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("model = \"test/stories260K\"") && text.contains("type = \"Q4_K_M\""), "{text}");
    let explained = s.qf(["run".as_ref(), file.as_os_str(), "--explain".as_ref()]).ok();
    assert!(explained.contains("stories260K-Q4_K_M: quantize to Q4_K_M"), "{explained}");
    let out = s.dir.path().join("starter-out");
    s.run(&file, &out, &["-q"]).ok();
    let m: Value = serde_json::from_slice(&read(&out.join("manifest.json"))).unwrap();
    let types: Vec<&str> = m["artifacts"].as_array().unwrap().iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["F16", "Q8_0", "Q4_K_M"]);
    assert_eq!(m["passed"], true);
    // Never written over an existing file.
    let err =
        s.qf(["run".as_ref(), "--init".as_ref(), "test/stories260K".as_ref(), "-o".as_ref(), file.as_os_str()]).fails();
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn the_smollm2_example_parses() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/smollm2-pipeline.toml");
    let out = qf(["run".as_ref(), example.as_os_str(), "--explain".as_ref()]).ok();
    for t in ["F16", "Q8_0", "Q6_K", "Q4_K_M"] {
        assert!(out.contains(&format!("quantize to {t}")), "{t} missing:\n{out}");
    }
    assert!(out.contains("imatrix"), "{out}");
}

#[test]
fn a_local_source_is_named_from_the_pipeline_folder_and_out_defaults_beside_it() {
    let s = setup();
    let model = s.dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in std::fs::read_dir(fixture("stories260K")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), model.join(f.file_name())).unwrap();
    }
    let text = "[source]\nmodel = \"model\"\n\n[[output]]\ntype = \"F16\"\ngates = { max_size = \"600K\" }\n";
    let file = s.write("pipeline.toml", text);
    // Started from another folder, without --out.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quantforge"))
        .current_dir(elsewhere.path())
        .args(["run".as_ref(), file.as_os_str(), "-q".as_ref()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = s.dir.path().join("out");
    let m: Value = serde_json::from_slice(&read(&dir.join("manifest.json"))).unwrap();
    assert_eq!(m["source"]["model"], "model");
    assert_eq!(m["source"]["commit"], Value::Null);
    assert_eq!(m["artifacts"][0]["gates"][0]["gate"], "max_size");
    assert_eq!(m["artifacts"][0]["eval"], Value::Null);
    let card = String::from_utf8(read(&dir.join("README.md"))).unwrap();
    assert!(!card.contains("base_model") && card.contains("of `model`"), "{card}");
    assert!(!dir.join("chart.svg").exists(), "no chart without an evaluation");
    let err = s.qf(["run".as_ref(), file.as_os_str(), "--unit".as_ref(), "1".as_ref()]).fails();
    assert!(err.contains("--unit 1: the pipeline's units are numbered 0 to 0"), "{err}");
}

/// A GPTQ-coded Q4_K_M: the bytes of `quantize --type q4_k_m --method gptq` with the same calibration, its
/// calibration text hashed in the manifest and in the step's key.
#[test]
fn a_gptq_output_is_the_quantize_commands_file_and_keys_its_calibration() {
    let s = setup();
    let gptq = |nsamples: usize| {
        format!(
            "[source]\nmodel = \"test/stories260K\"\n\n[eval]\ntext = \"eval.txt\"\nctx = 128\nchunks = 2\n\n\
             [[output]]\ntype = \"Q4_K_M\"\nmethod = \"gptq\"\ncalib = \"calib.txt\"\nnsamples = {nsamples}\n\
             seqlen = 64\ngates = {{ max_kld = 5.0 }}\n"
        )
    };
    let file = s.write("pipeline.toml", &gptq(16));
    let out = s.dir.path().join("out");
    let explain = s.qf(["run".as_ref(), file.as_os_str(), "--explain".as_ref()]).ok();
    assert!(explain.contains("stories260K-Q4_K_M: quantize to Q4_K_M with GPTQ, KLD and PPL"), "{explain}");
    s.run(&file, &out, &["-q"]).ok();

    let cmp = tempfile::tempdir().unwrap();
    let want = cmp.path().join("gptq.gguf");
    let calib = s.dir.path().join("calib.txt");
    let st = fixture("stories260K");
    let mut a: Vec<&OsStr> = vec!["quantize".as_ref(), st.as_os_str(), want.as_os_str()];
    a.extend(["--type", "q4_k_m", "--method", "gptq", "--nsamples", "16", "--seqlen", "64", "-q"].map(OsStr::new));
    a.extend(["--calib".as_ref(), calib.as_os_str()]);
    qf(a).ok();
    let got = read(&out.join("stories260K-Q4_K_M.gguf"));
    assert!(got == read(&want), "the pipeline's GPTQ Q4_K_M differs from quantize --method gptq");

    let m: Value = serde_json::from_slice(&read(&out.join("manifest.json"))).unwrap();
    let art = &m["artifacts"][0];
    assert_eq!((&art["method"], &art["type"], &art["passed"]), (&"gptq".into(), &"Q4_K_M".into(), &true.into()));
    assert_eq!(art["sha256"], sha256_hex(&got));
    assert!(art["eval"]["kld"].as_f64().unwrap() > 0.0, "{art}");
    let text = m["inputs"].as_array().unwrap().iter().find(|i| i["role"] == "calibration_text").unwrap();
    assert_eq!((&text["path"], &text["sha256"]), (&"calib.txt".into(), &sha256_hex(&read(&calib)).into()));
    let card = String::from_utf8(read(&out.join("README.md"))).unwrap();
    assert!(card.contains("| Q4_K_M (GPTQ) |"), "{card}");
    assert!(out.join("stories260K-Q4_K_M.Modelfile").is_file());

    // The calibration options and text are in the key; the reference's key is not touched by them.
    let keys = |f: &Path| -> Vec<Value> {
        let plan = s.run(f, &out, &["--plan"]).json();
        plan["units"].as_array().unwrap().iter().map(|u| u["key"].clone()).collect()
    };
    let before = keys(&file);
    let file2 = s.write("pipeline2.toml", &gptq(8));
    let after = keys(&file2);
    assert_eq!(before[0], after[0]);
    assert_ne!(before[1], after[1]);
    std::fs::write(&calib, "Once upon a time there was a different calibration text.").unwrap();
    assert_ne!(keys(&file)[1], before[1]);
}

/// A GPTQ checkpoint directory: the files of `quantize --method gptq` with the same choices, each hashed in the
/// manifest, evaluated against the source like a GGUF, and no Modelfile.
#[test]
fn a_checkpoint_output_is_the_quantize_commands_directory_with_each_file_hashed() {
    let s = setup();
    let text = "[source]\nmodel = \"test/stories260K\"\n\n[eval]\ntext = \"eval.txt\"\nctx = 128\nchunks = 2\n\n\
                [[output]]\nmethod = \"gptq\"\ngroup_size = -1\ncalib = \"calib.txt\"\nnsamples = 16\nseqlen = 64\n\
                gates = { max_kld = 5.0 }\n";
    let file = s.write("pipeline.toml", text);
    let out = s.dir.path().join("out");
    let explain = s.qf(["run".as_ref(), file.as_os_str(), "--explain".as_ref()]).ok();
    let line = "GPTQ checkpoint directory (compressed-tensors, 4-bit, group -1), KLD and PPL against the reference -> \
                stories260K-gptq-w4g-1/; gates: max_kld 5";
    assert!(explain.contains(line), "{explain}");
    s.run(&file, &out, &["-q"]).ok();

    let cmp = tempfile::tempdir().unwrap();
    let want = cmp.path().join("ck");
    let calib = s.dir.path().join("calib.txt");
    let st = fixture("stories260K");
    let mut a: Vec<&OsStr> = vec!["quantize".as_ref(), st.as_os_str(), want.as_os_str()];
    a.extend(["--method", "gptq", "--group-size", "-1", "--nsamples", "16", "--seqlen", "64", "-q"].map(OsStr::new));
    a.extend(["--calib".as_ref(), calib.as_os_str()]);
    qf(a).ok();
    let dir = out.join("stories260K-gptq-w4g-1");
    let mut names: Vec<String> =
        std::fs::read_dir(&want).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert!(names.contains(&"model.safetensors".to_string()), "{names:?}");
    let mut lines = String::new();
    let mut total = 0;
    for n in &names {
        let bytes = read(&dir.join(n));
        assert!(bytes == read(&want.join(n)), "{n} differs from quantize --method gptq");
        lines += &format!("{}  {n}\n", sha256_hex(&bytes));
        total += bytes.len() as u64;
    }

    let m: Value = serde_json::from_slice(&read(&out.join("manifest.json"))).unwrap();
    let art = &m["artifacts"][0];
    assert_eq!((&art["file"], &art["method"]), (&"stories260K-gptq-w4g-1".into(), &"gptq".into()));
    assert_eq!((&art["sha256"], &art["size"]), (&sha256_hex(lines.as_bytes()).into(), &total.into()));
    let listed: Vec<&str> = art["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(listed, names);
    assert!(art["eval"]["kld"].as_f64().unwrap() > 0.0 && art["passed"] == true, "{art}");
    assert!(art["modelfile"].is_null() && !out.join("stories260K-gptq-w4g-1.Modelfile").exists());
    let card = String::from_utf8(read(&out.join("README.md"))).unwrap();
    assert!(
        card.contains("[stories260K-gptq-w4g-1](stories260K-gptq-w4g-1) | GPTQ-w4g-1 (compressed-tensors) |"),
        "{card}"
    );
    assert!(card.contains("# stories260K quantized") && !card.contains("Ollama") && !card.contains("- gguf"), "{card}");

    // Unchanged on a second run; the same bytes when redone over the previous directory.
    let events = json_lines(&s.run(&file, &out, &["--json"]).ok());
    assert!(events.iter().filter(|e| e["event"] == "step").all(|e| e["status"] == "unchanged"), "{events:?}");
    let manifest = read(&out.join("manifest.json"));
    s.run(&file, &out, &["--force", "-q"]).ok();
    assert!(read(&out.join("manifest.json")) == manifest, "a forced run changed the manifest");
    // A failed gate moves the directory aside; loosening it again publishes it without redoing the step.
    let strict = s.write("strict.toml", &text.replace("max_kld = 5.0", "max_kld = 0.0"));
    let err = s.run(&strict, &out, &[]).fails();
    assert!(err.contains("stories260K-gptq-w4g-1: max_kld"), "{err}");
    assert!(!dir.exists() && out.join(".quantforge/rejected/stories260K-gptq-w4g-1/model.safetensors").is_file());
    let events = json_lines(&s.run(&file, &out, &["--json"]).ok());
    assert!(events.iter().filter(|e| e["event"] == "step").all(|e| e["status"] == "unchanged"), "{events:?}");
    assert!(
        dir.join("model.safetensors").is_file() && !out.join(".quantforge/rejected/stories260K-gptq-w4g-1").exists()
    );
    // A GGUF source is refused for a checkpoint output.
    let gguf = s.dir.path().join("st.gguf");
    qf(["quantize".as_ref(), st.as_os_str(), "-t".as_ref(), "f16".as_ref(), "-q".as_ref(), gguf.as_os_str()]).ok();
    let file = s.write("gguf.toml", &text.replace("test/stories260K", "st.gguf"));
    let err = s.run(&file, &s.dir.path().join("out3"), &[]).fails();
    assert!(err.contains("needs a Hugging Face source"), "{err}");
}

/// MMLU on the reference and each output: the figures of `eval mmlu` with the same selection, in the manifest
/// and the card; `min_mmlu` and `max_delta_mmlu` gate on them.
#[test]
fn mmlu_figures_match_eval_mmlu_and_gate_the_outputs() {
    let s = setup();
    let data = fixture("mmlu");
    let text = format!(
        "[source]\nmodel = \"test/stories260K\"\n\n[eval]\ntext = \"eval.txt\"\nctx = 128\nchunks = 1\n\
         mmlu = {{ data = \"{}\", subjects = [\"abstract_algebra\", \"global_facts\"], limit = 2, shots = 1 }}\n\n\
         [[output]]\ntype = \"F16\"\ngates = {{ min_mmlu = 0.0, max_delta_mmlu = 0.5 }}\n",
        data.display()
    );
    let file = s.write("pipeline.toml", &text);
    let out = s.dir.path().join("out");
    s.run(&file, &out, &["-q"]).ok();

    let st = fixture("stories260K");
    let want = |model: &Path| -> Value {
        let args = [
            "eval".as_ref(),
            "mmlu".as_ref(),
            model.as_os_str(),
            "--data".as_ref(),
            data.as_os_str(),
            "--subjects".as_ref(),
            "abstract_algebra,global_facts".as_ref(),
            "--limit".as_ref(),
            "2".as_ref(),
            "--shots".as_ref(),
            "1".as_ref(),
            "--json".as_ref(),
        ];
        qf::<_, &OsStr>(args).json()["overall"].clone()
    };
    let m: Value = serde_json::from_slice(&read(&out.join("manifest.json"))).unwrap();
    let (base, f16) = (want(&st), want(&out.join("stories260K-F16.gguf")));
    let r = &m["reference"]["mmlu"];
    assert_eq!((&r["questions"], &r["correct"], &r["accuracy"]), (&base["n"], &base["correct"], &base["accuracy"]));
    assert_eq!(r["questions"], 4);
    let a = &m["artifacts"][0];
    assert_eq!((&a["eval"]["mmlu"]["correct"], &a["eval"]["mmlu"]["questions"]), (&f16["correct"], &f16["n"]));
    let delta = base["accuracy"].as_f64().unwrap() - f16["accuracy"].as_f64().unwrap();
    assert_eq!(a["eval"]["delta_mmlu"].as_f64().unwrap(), delta);
    let gates: Vec<&str> = a["gates"].as_array().unwrap().iter().map(|g| g["gate"].as_str().unwrap()).collect();
    assert_eq!(gates, ["max_delta_mmlu", "min_mmlu"]);
    let data_files = m["inputs"].as_array().unwrap().iter().filter(|i| i["role"] == "mmlu_data").count();
    assert_eq!(data_files, 20, "every dev and test file of the data is hashed");
    let card = String::from_utf8(read(&out.join("README.md"))).unwrap();
    let pct = format!("| {:.2}% |", 100.0 * f16["accuracy"].as_f64().unwrap());
    assert!(card.contains("| Same top | MMLU | sha256 |") && card.contains(&pct), "{card}");
    assert!(card.contains("MMLU: 1-shot, 4 questions; the source scores"), "{card}");

    // An accuracy above the output's fails the gate with the figure named; one above 1 is refused as a limit.
    assert!(f16["accuracy"].as_f64().unwrap() < 1.0, "{f16}");
    let file = s.write("strict.toml", &text.replace("min_mmlu = 0.0", "min_mmlu = 1.0"));
    let err = s.run(&file, &out, &[]).fails();
    assert!(err.contains("stories260K-F16: min_mmlu"), "{err}");
    let file = s.write("beyond.toml", &text.replace("min_mmlu = 0.0", "min_mmlu = 1.01"));
    let err = s.run(&file, &out, &[]).fails();
    assert!(err.contains("min_mmlu = 1.01: a fraction of 1"), "{err}");
}
