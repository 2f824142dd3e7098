//! Quantizing a split GGUF: joined from any of its files it gives llama-quantize's bytes; one split opened on
//! its own is refused before anything is written, instead of becoming a partial model.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::GgufFile;
use quantforge_quant::pipeline::{self, PipelineError, QuantizeOptions};
use quantforge_quant::policy::QuantOption;
use quantforge_quant::progress::Silent;
use quantforge_quant::stream::StreamError;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden").join(rel)
}

fn options(ftype: &str) -> QuantizeOptions {
    QuantizeOptions::new(QuantOption::parse(ftype).unwrap().ftype)
}

/// synth-tiny-f32 copied into split files of at most 2 MB of tensor data.
fn split_copy(dir: &Path) -> Vec<PathBuf> {
    let input = GgufFile::open(fixture("synth-tiny-f32.gguf")).unwrap();
    let mut o = options("COPY");
    o.split_max_size = Some(2_000_000);
    let plan = pipeline::plan(&input, &o).unwrap();
    let paths = pipeline::execute(&input, &plan, &o, &dir.join("split.gguf"), &Silent).unwrap();
    assert!(paths.len() >= 3, "{paths:?}");
    paths
}

#[test]
fn a_split_input_quantizes_to_llama_quantize_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let paths = split_copy(dir.path());
    let golden = std::fs::read(fixture("llama-quantize/synth-tiny-Q8_0.gguf")).unwrap();
    for (i, p) in paths.iter().enumerate() {
        let input = GgufFile::open(p).unwrap();
        assert_eq!(input.files().len(), paths.len());
        let o = options("Q8_0");
        let plan = pipeline::plan(&input, &o).unwrap();
        assert_eq!(plan.tensors.len(), 21);
        let out = dir.path().join(format!("q8-{i}.gguf"));
        pipeline::execute(&input, &plan, &o, &out, &Silent).unwrap();
        assert!(std::fs::read(&out).unwrap() == golden, "quantized from {} differs from llama-quantize", p.display());
    }
}

#[test]
fn one_split_alone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = split_copy(dir.path());
    let part = GgufFile::open_single_file(&paths[0]).unwrap();
    assert!(part.tensors().len() < 21);
    let err = pipeline::plan(&part, &options("Q8_0")).unwrap_err();
    match &err {
        PipelineError::Stream(e) => {
            assert!(matches!(**e, StreamError::TensorCount { input: 21, dropped: 0, .. }), "{err}")
        }
        e => panic!("expected a tensor count error, got {e}"),
    }
    // The plan of the whole model, run with the part as input, is refused too.
    let whole = GgufFile::open(&paths[0]).unwrap();
    let o = options("Q8_0");
    let plan = pipeline::plan(&whole, &o).unwrap();
    let out = dir.path().join("never.gguf");
    let err = pipeline::execute(&part, &plan, &o, &out, &Silent).unwrap_err();
    assert!(matches!(err, PipelineError::PlanForOtherInput { .. }), "{err}");
    assert!(!out.exists());
}

#[test]
fn an_output_may_not_overwrite_any_split_of_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let paths = split_copy(dir.path());
    let before = std::fs::read(&paths[1]).unwrap();
    let input = GgufFile::open(&paths[0]).unwrap();
    let o = options("Q8_0");
    let plan = pipeline::plan(&input, &o).unwrap();
    assert!(pipeline::execute(&input, &plan, &o, &paths[1], &Silent).is_err());
    assert_eq!(std::fs::read(&paths[1]).unwrap(), before);
}
