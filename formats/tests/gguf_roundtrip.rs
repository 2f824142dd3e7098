//! Every golden GGUF read and written back with the writer gives a byte-identical file.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::{GgufFile, GgufWriter, TensorSpec};

fn golden_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("llama-quantize")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "gguf") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn rewrite(src: &GgufFile, dest: &Path, chunk: usize) {
    let specs = src
        .tensors()
        .iter()
        .map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.ggml_type, ne: t.ne.clone() })
        .collect();
    let mut w = GgufWriter::create(dest, src.metadata(), specs).unwrap();
    for t in src.tensors() {
        // Stream in pieces to exercise partial writes.
        for piece in src.tensor_data(t).chunks(chunk) {
            w.write_tensor_data(piece).unwrap();
        }
    }
    w.finish().unwrap();
}

#[test]
fn golden_files_round_trip_byte_for_byte() {
    let files = golden_files();
    assert!(files.len() >= 35, "expected the golden corpus, found {} files", files.len());
    let dir = tempfile::tempdir().unwrap();
    for (i, path) in files.iter().enumerate() {
        let src = GgufFile::open(path).unwrap();
        assert_eq!(src.version(), 3);
        let out = dir.path().join("out.gguf");
        rewrite(&src, &out, 4096 + i * 977);
        let a = std::fs::read(path).unwrap();
        let b = std::fs::read(&out).unwrap();
        assert_eq!(a.len(), b.len(), "{}: size differs", path.display());
        assert!(a == b, "{}: bytes differ", path.display());
    }
}

#[test]
fn golden_reader_agrees_with_llama_cpp_counts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden");
    let f = GgufFile::open(root.join("synth-tiny-f32.gguf")).unwrap();
    // 2 layers x 9 tensors + token_embd, output_norm, output.
    assert_eq!(f.tensors().len(), 21);
    assert_eq!(f.get("general.architecture").and_then(|v| v.as_str()), Some("llama"));
    assert!((f.bits_per_weight() - 32.0).abs() < 1e-9);
    let q = GgufFile::open(root.join("llama-quantize/synth-tiny-Q8_0.gguf")).unwrap();
    assert_eq!(q.tensors().len(), 21);
    assert_eq!(q.get("general.file_type").and_then(|v| v.as_u64()), Some(7));
    let last_two: Vec<&str> = q.metadata().iter().rev().take(2).map(|(k, _)| k.as_str()).collect();
    assert_eq!(last_two, ["general.file_type", "general.quantization_version"]);
}

#[test]
fn writer_rejects_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.gguf");
    let spec = |n: &str| TensorSpec { name: n.into(), ggml_type: quantforge_formats::GgmlType::F32, ne: vec![4] };
    assert!(GgufWriter::create(&p, &[], vec![spec("a"), spec("a")]).is_err());
    let mut w = GgufWriter::create(&p, &[], vec![spec("a"), spec("b")]).unwrap();
    assert!(w.write_tensor("b", &[0; 16]).is_err());
    w.write_tensor("a", &[0; 16]).unwrap();
    assert!(w.write_tensor("b", &[0; 15]).is_err());
    // Finishing early fails and leaves nothing behind.
    assert!(w.finish().is_err());
    assert!(!p.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
