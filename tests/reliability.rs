//! Outputs and signals: inputs are never overwritten, odd files are refused with their kind, temporaries of dead
//! processes are cleaned, long names work, and signals are reported as what happened on disk.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{fixture, qf};

/// A copy of the stories260K HF directory (tests may try to destroy it).
fn model_copy(root: &Path) -> PathBuf {
    copy_dir(&fixture("stories260K"), &root.join("model"))
}

fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to.to_path_buf()
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", p.display());
}

/// Run quantforge, killing it if it has not finished within `limit` (a run that blocks fails the test).
fn qf_within(args: &[&std::ffi::OsStr], limit: Duration) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quantforge"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quantforge {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Entries of `dir` whose names end in `.tmp` (temporaries).
fn temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn no_file_a_command_reads_can_be_its_output() {
    let d = tempfile::tempdir().unwrap();
    let model = model_copy(d.path());
    let adapter = copy_dir(&fixture("stories260K-lora-kjv-r4"), &d.path().join("adapter"));
    let alias = d.path().join("alias");
    symlink(&model, &alias).unwrap();
    let text = d.path().join("text.txt");
    fs::write(&text, "Once upon a time there was a little dog. ".repeat(20)).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> =
        fs::read_dir(&model).unwrap().map(|e| e.unwrap().path()).map(|p| (p.clone(), fs::read(&p).unwrap())).collect();
    let m = model.to_str().unwrap();
    let cases: Vec<(Vec<String>, PathBuf)> = vec![
        (vec!["convert".into(), m.into(), "-o".into(), format!("{m}/tokenizer.model")], model.join("tokenizer.model")),
        (vec!["convert".into(), m.into(), "-o".into(), format!("{m}/config.json")], model.join("config.json")),
        (
            vec!["convert".into(), m.into(), "-o".into(), format!("{}/tokenizer.json", alias.display())],
            model.join("tokenizer.json"),
        ),
        (
            vec!["convert".into(), m.into(), "-o".into(), format!("{m}/../model/tokenizer_config.json")],
            model.join("tokenizer_config.json"),
        ),
        (
            vec!["convert".into(), m.into(), "-o".into(), format!("{m}/generation_config.json")],
            model.join("generation_config.json"),
        ),
        (
            vec!["quantize".into(), m.into(), format!("{m}/tokenizer.json"), "--type".into(), "q8_0".into()],
            model.join("tokenizer.json"),
        ),
        (
            vec![
                "eval".into(),
                "perplexity".into(),
                m.into(),
                "--text".into(),
                text.display().to_string(),
                "--save-logits".into(),
                format!("{m}/tokenizer.json"),
            ],
            model.join("tokenizer.json"),
        ),
        (
            vec![
                "eval".into(),
                "perplexity".into(),
                m.into(),
                "--text".into(),
                text.display().to_string(),
                "--save-logits".into(),
                text.display().to_string(),
            ],
            text.clone(),
        ),
        (
            vec![
                "convert".into(),
                adapter.display().to_string(),
                "--lora-base".into(),
                m.into(),
                "-o".into(),
                format!("{m}/config.json"),
            ],
            model.join("config.json"),
        ),
        (
            vec![
                "convert".into(),
                adapter.display().to_string(),
                "--lora-base".into(),
                m.into(),
                "-o".into(),
                format!("{}/adapter_config.json", adapter.display()),
            ],
            adapter.join("adapter_config.json"),
        ),
    ];
    for (args, input) in cases {
        let err = qf(&args).fails();
        assert!(err.contains("refusing to overwrite the input"), "{args:?}: {err}");
        let shown = input.file_name().unwrap().to_string_lossy().into_owned();
        assert!(err.contains(&shown), "{args:?}: the message names the input: {err}");
    }
    for (p, bytes) in before {
        assert_eq!(fs::read(&p).unwrap(), bytes, "{} was changed", p.display());
    }
    assert!(temporaries(&model).is_empty());
    // Writing a new file into the model directory stays allowed (quantize's default output lives there).
    qf(["quantize", m, "--type", "f16", "--quiet"]).ok();
    assert!(model.join("ggml-model-F16.gguf").is_file());
}

#[test]
fn outputs_that_are_not_regular_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let model = model_copy(d.path());
    let fifo = d.path().join("out.gguf");
    mkfifo(&fifo);
    let m = model.to_str().unwrap();
    let (code, err) =
        qf_within(&["convert".as_ref(), m.as_ref(), "-o".as_ref(), fifo.as_os_str()], Duration::from_secs(60));
    assert_ne!(code, 0);
    assert!(err.contains("pipe (FIFO)") && err.contains("out.gguf"), "{err}");
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    let err = qf(["convert", m, "-o", d.path().to_str().unwrap()]).fails();
    assert!(err.contains("is a directory, not a regular file"), "{err}");
    let run = Command::new(env!("CARGO_BIN_EXE_quantforge"))
        .args(["convert", m, "-o", "."])
        .current_dir(d.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("a directory") && !err.contains("misuse"), "{err}");
}

#[test]
fn odd_inputs_are_refused_with_a_clear_message_instead_of_blocking() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("model.gguf");
    mkfifo(&fifo);
    let (code, err) = qf_within(&["inspect".as_ref(), fifo.as_os_str()], Duration::from_secs(60));
    assert!(code != 0 && err.contains("pipe (FIFO)") && err.contains("model.gguf"), "{err}");
    let model = model_copy(d.path());
    let text_fifo = d.path().join("text.txt");
    mkfifo(&text_fifo);
    let (code, err) = qf_within(
        &["eval".as_ref(), "perplexity".as_ref(), model.as_os_str(), "--text".as_ref(), text_fifo.as_os_str()],
        Duration::from_secs(60),
    );
    assert!(code != 0 && err.contains("pipe (FIFO)") && err.contains("text.txt"), "{err}");
    // A directory without config.json is neither a model nor a GGUF.
    let plain = d.path().join("plain");
    fs::create_dir(&plain).unwrap();
    let out = d.path().join("out.gguf");
    let err = qf(["quantize".as_ref(), plain.as_os_str(), out.as_os_str(), "--type".as_ref(), "q8_0".as_ref()]).fails();
    assert!(err.contains("plain") && err.contains("directory without config.json"), "{err}");
    assert!(!err.contains("os error 19"), "{err}");
}

#[test]
fn safetensors_header_errors_name_the_tensor_and_the_file() {
    let d = tempfile::tempdir().unwrap();
    let header = br#"{"ok.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"bad.weight":{"dtype":"F32","shape":[3],"data_offsets":[8,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 16]);
    let file = d.path().join("weights.safetensors");
    fs::write(&file, &bytes).unwrap();
    let err = qf(["inspect".as_ref(), file.as_os_str()]).fails();
    assert!(
        err.contains("weights.safetensors") && err.contains("'bad.weight'") && err.contains("needs 12 bytes"),
        "{err}"
    );
}

#[test]
fn a_nan_in_the_base_model_is_not_blamed_on_the_adapter() {
    let d = tempfile::tempdir().unwrap();
    let model = model_copy(d.path());
    let st = model.join("model.safetensors");
    let mut bytes = fs::read(&st).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let name = "model.layers.0.mlp.down_proj.weight";
    assert_eq!(header[name]["dtype"], "F32");
    let start = 8 + header_len + header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start + 4 * 5..start + 4 * 6].copy_from_slice(&f32::NAN.to_le_bytes());
    fs::write(&st, &bytes).unwrap();
    let out = d.path().join("merged");
    let adapter = fixture("stories260K-lora-kjv-r4");
    let err =
        qf(["merge-lora".as_ref(), model.as_os_str(), adapter.as_os_str(), "-o".as_ref(), out.as_os_str()]).fails();
    assert!(err.contains("base model") && err.contains(name) && err.contains("element 5"), "{err}");
    assert!(!err.contains("adapter seems to be broken"), "{err}");
    assert!(!out.exists());
}

/// The stories260K model as an F32 GGUF with metadata `key` overridden by `value` (`TYPE:VALUE`).
fn gguf_with(dir: &Path, key: &str, value: &str) -> PathBuf {
    let model = fixture("stories260K");
    let base = dir.join("base.gguf");
    if !base.exists() {
        qf([
            "convert".as_ref(),
            model.as_os_str(),
            "-o".as_ref(),
            base.as_os_str(),
            "--outtype".as_ref(),
            "f32".as_ref(),
            "--quiet".as_ref(),
        ])
        .ok();
    }
    let out = dir.join(format!("{}.gguf", key.replace('.', "_")));
    let kv = format!("{key}={value}");
    qf([
        "quantize".as_ref(),
        base.as_os_str(),
        out.as_os_str(),
        "--type".as_ref(),
        "f32".as_ref(),
        "--override-kv".as_ref(),
        kv.as_ref(),
        "--quiet".as_ref(),
    ])
    .ok();
    out
}

#[test]
fn bad_hyperparameters_are_refused_not_computed_with() {
    let d = tempfile::tempdir().unwrap();
    let text = d.path().join("text.txt");
    fs::write(&text, "Once upon a time there was a little dog. ".repeat(40)).unwrap();
    for (key, value, expect) in [
        ("llama.attention.layer_norm_rms_epsilon", "float:nan", "RMSNorm epsilon NaN"),
        ("llama.attention.layer_norm_rms_epsilon", "float:-1", "RMSNorm epsilon -1"),
        ("llama.rope.freq_base", "str:ten thousand", "'llama.rope.freq_base' is of type String"),
        ("llama.rope.dimension_count", "str:8", "'llama.rope.dimension_count' is of type String"),
    ] {
        let model = gguf_with(d.path(), key, value);
        let err = qf([
            "eval".as_ref(),
            "perplexity".as_ref(),
            model.as_os_str(),
            "--text".as_ref(),
            text.as_os_str(),
            "--ctx".as_ref(),
            "64".as_ref(),
        ])
        .fails();
        assert!(err.contains(expect) && err.contains(model.file_name().unwrap().to_str().unwrap()), "{key}: {err}");
        fs::remove_file(&model).unwrap();
    }
}

#[test]
fn stale_temporaries_of_dead_processes_are_removed_live_ones_kept() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.gguf");
    // 4194305 is above Linux's largest pid; pid 1 is always alive.
    let dead = d.path().join(".out.gguf.4194305-0.tmp");
    let live = d.path().join(".out.gguf.1-0.tmp");
    fs::write(&dead, vec![0u8; 4096]).unwrap();
    fs::write(&live, b"x").unwrap();
    let input = fixture("golden/synth-tiny-f32.gguf");
    qf([
        "quantize".as_ref(),
        input.as_os_str(),
        out.as_os_str(),
        "--type".as_ref(),
        "q8_0".as_ref(),
        "--quiet".as_ref(),
    ])
    .ok();
    assert!(out.is_file());
    assert!(!dead.exists(), "the dead process's temporary is left");
    assert!(live.exists(), "a live process's temporary was removed");
}

#[test]
fn output_names_up_to_the_file_system_limit_work() {
    let d = tempfile::tempdir().unwrap();
    let input = fixture("golden/synth-tiny-f32.gguf");
    for len in [243, 255] {
        let name = format!("{}.gguf", "n".repeat(len - 5));
        let out = d.path().join(&name);
        qf([
            "quantize".as_ref(),
            input.as_os_str(),
            out.as_os_str(),
            "--type".as_ref(),
            "q8_0".as_ref(),
            "--quiet".as_ref(),
        ])
        .ok();
        assert!(out.is_file(), "{len}-byte name");
        assert!(temporaries(d.path()).is_empty());
    }
}

/// A pipe whose buffer is full, so that the child's first write to it blocks until the test reads.
fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    use std::os::fd::AsRawFd;
    let (r, mut w) = std::io::pipe().unwrap();
    let fd = w.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        while w.write(&[0u8; 4096]).is_ok() {}
        while w.write(&[0u8; 1]).is_ok() {}
        libc::fcntl(fd, libc::F_SETFL, flags);
    }
    (r, w)
}

/// Wait until `ready` holds (the child is where the test wants it), failing after a minute.
fn wait_for(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(child.try_wait().unwrap().is_none(), "quantforge exited before {what}");
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

#[test]
fn sigterm_after_the_output_was_renamed_reports_it_as_completed() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.gguf");
    let input = fixture("golden/synth-tiny-f32.gguf");
    // The summary is printed to stdout after the rename: with stdout full, the run stops right there.
    let (stdout_r, stdout_w) = full_pipe();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quantforge"))
        .args([
            "quantize".as_ref(),
            input.as_os_str(),
            out.as_os_str(),
            "--type".as_ref(),
            "q8_0".as_ref(),
            "--quiet".as_ref(),
        ])
        .stdout(stdout_w)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut child, "the output was renamed", || out.is_file() && temporaries(d.path()).is_empty());
    // SAFETY: signalling the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    // The handler exits while the run is still blocked on stdout: stdout is read only afterwards, so the run
    // cannot finish normally first.
    let err = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            drop(drain(stdout_r));
            panic!("SIGTERM did not end the run");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    drop(stdout_r);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted after") && err.contains("out.gguf was completed"), "{err}");
    assert!(!err.contains("no output was written"), "{err}");
    // The output is the complete file: the same bytes as an uninterrupted run.
    let again = d.path().join("again.gguf");
    qf([
        "quantize".as_ref(),
        input.as_os_str(),
        again.as_os_str(),
        "--type".as_ref(),
        "q8_0".as_ref(),
        "--quiet".as_ref(),
    ])
    .ok();
    assert!(fs::read(&out).unwrap() == fs::read(&again).unwrap());
}

#[test]
fn an_input_truncated_while_mapped_is_an_error_report_not_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.gguf");
    fs::copy(fixture("golden/synth-tiny-f32.gguf"), &input).unwrap();
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.gguf");
    // Progress lines go to stderr before each tensor is read: with stderr full, the run stops after mapping the
    // input and creating its temporary, before reading any tensor data.
    let (stderr_r, stderr_w) = full_pipe();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quantforge"))
        .args(["quantize".as_ref(), input.as_os_str(), out.as_os_str(), "--type".as_ref(), "q8_0".as_ref()])
        .stdout(Stdio::null())
        .stderr(stderr_w)
        .spawn()
        .unwrap();
    wait_for(&mut child, "the temporary output exists", || !temporaries(&out_dir).is_empty());
    fs::OpenOptions::new().write(true).open(&input).unwrap().set_len(0).unwrap();
    let err = drain(stderr_r);
    let status = child.wait().unwrap();
    let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("in.gguf") && err.contains("truncated"), "{err}");
    assert!(err.contains("no output was written"), "{err}");
    assert!(temporaries(&out_dir).is_empty(), "a temporary was left: {:?}", temporaries(&out_dir));
    assert!(!out.exists());
}
