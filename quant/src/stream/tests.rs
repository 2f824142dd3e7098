//! The driver's guarantees, on hand-built sources and sinks.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use quantforge_formats::gguf::{GgufFile, TensorSpec};
use quantforge_formats::GgmlType;

use super::sink::GgufSink;
use super::*;
use crate::progress::Silent;
use crate::solver::CodecSolver;

/// Two tensors: `a` solved from values to Q8_0, `b` copied as f32 bytes. `short` makes `b` one byte short.
struct Toy {
    tensors: Vec<StreamTensor>,
    short: bool,
}

impl Toy {
    fn new(short: bool) -> Toy {
        let a = StreamTensor::solved("a", vec![32, 2], GgmlType::Q8_0, "-> Q8_0").unwrap();
        let b = StreamTensor::solved("b", vec![4], GgmlType::F32, "copy").unwrap();
        Toy { tensors: vec![a, b], short }
    }

    fn specs(&self) -> Vec<TensorSpec> {
        self.tensors
            .iter()
            .map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.ty.unwrap(), ne: t.ne.clone() })
            .collect()
    }
}

impl Source for Toy {
    type Error = StreamError;

    fn tensors(&self) -> &[StreamTensor] {
        &self.tensors
    }

    fn input_paths(&self) -> Vec<&Path> {
        Vec::new()
    }

    fn read<'s>(&'s self, index: usize, values: &mut Vec<f32>) -> Result<TensorData<'s>, StreamError> {
        if index == 0 {
            *values = (0..64).map(|i| i as f32 / 8.0).collect();
            return Ok(TensorData::Values);
        }
        let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let n = if self.short { bytes.len() - 1 } else { bytes.len() };
        Ok(TensorData::Bytes(Cow::Owned(bytes[..n].to_vec())))
    }
}

#[test]
fn writes_exactly_the_planned_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("toy.gguf");
    let toy = Toy::new(false);
    let sink = GgufSink::single(&out, Vec::new(), toy.specs());
    let s = run(&toy, &CodecSolver, sink, RunOptions::new(&Silent)).unwrap();
    assert_eq!(s.tensors, 2);
    assert_eq!(s.bytes, toy.tensors.iter().map(|t| t.size).sum::<u64>());
    let g = GgufFile::open(&out).unwrap();
    assert_eq!(g.tensors().len(), 2);
    assert_eq!(g.tensor_data(&g.tensors()[1]), [1.0f32, 2.0, 3.0, 4.0].map(f32::to_le_bytes).concat());
}

#[test]
fn refuses_a_sink_that_expects_other_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("toy.gguf");
    let toy = Toy::new(false);
    // The sink expects only the first tensor.
    let sink = GgufSink::single(&out, Vec::new(), toy.specs()[..1].to_vec());
    let err = run(&toy, &CodecSolver, sink, RunOptions::new(&Silent)).unwrap_err();
    assert!(matches!(err, StreamError::SinkMismatch { .. }), "{err}");
    // Another tensor order.
    let mut specs = toy.specs();
    specs.reverse();
    let err = run(&toy, &CodecSolver, GgufSink::single(&out, Vec::new(), specs), RunOptions::new(&Silent)).unwrap_err();
    assert!(matches!(err, StreamError::SinkMismatch { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn refuses_a_tensor_of_the_wrong_size_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("toy.gguf");
    let toy = Toy::new(true);
    let sink = GgufSink::single(&out, Vec::new(), toy.specs());
    let err = run(&toy, &CodecSolver, sink, RunOptions::new(&Silent)).unwrap_err();
    assert!(matches!(err, StreamError::Size { expected: 16, got: 15, .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_sink_finished_early_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let toy = Toy::new(false);
    let mut sink = GgufSink::single(&dir.path().join("toy.gguf"), Vec::new(), toy.specs());
    sink.open(&[]).unwrap();
    sink.write(0, &vec![0u8; toy.tensors[0].size as usize]).unwrap();
    assert!(sink.finish().is_err());
    drop(sink);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn cancellation_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("toy.gguf");
    let toy = Toy::new(false);
    let cancel = AtomicBool::new(true);
    let opts = RunOptions { cancel: Some(&cancel), ..RunOptions::new(&Silent) };
    let err = run(&toy, &CodecSolver, GgufSink::single(&out, Vec::new(), toy.specs()), opts).unwrap_err();
    assert!(matches!(err, StreamError::Interrupted), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn non_finite_values_are_refused_when_asked() {
    struct Nan(Vec<StreamTensor>);
    impl Source for Nan {
        type Error = StreamError;
        fn tensors(&self) -> &[StreamTensor] {
            &self.0
        }
        fn input_paths(&self) -> Vec<&Path> {
            Vec::new()
        }
        fn read<'s>(&'s self, _: usize, values: &mut Vec<f32>) -> Result<TensorData<'s>, StreamError> {
            *values = vec![0.0; 32];
            values[5] = f32::NAN;
            Ok(TensorData::Values)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nan.gguf");
    let src = Nan(vec![StreamTensor::solved("n", vec![32], GgmlType::F16, "").unwrap()]);
    let specs = vec![TensorSpec { name: "n".into(), ggml_type: GgmlType::F16, ne: vec![32] }];
    let opts = RunOptions { reject_non_finite: true, ..RunOptions::new(&Silent) };
    let err = run(&src, &CodecSolver, GgufSink::single(&out, Vec::new(), specs.clone()), opts).unwrap_err();
    assert!(matches!(err, StreamError::NonFinite { index: 5, .. }), "{err}");
    assert!(!out.exists());
    run(&src, &CodecSolver, GgufSink::single(&out, Vec::new(), specs), RunOptions::new(&Silent)).unwrap();
    assert!(out.is_file());
}

#[test]
fn refuses_to_overwrite_an_input() {
    struct Reads<'p>(&'p Path, Vec<StreamTensor>);
    impl Source for Reads<'_> {
        type Error = StreamError;
        fn tensors(&self) -> &[StreamTensor] {
            &self.1
        }
        fn input_paths(&self) -> Vec<&Path> {
            vec![self.0]
        }
        fn read<'s>(&'s self, _: usize, _: &mut Vec<f32>) -> Result<TensorData<'s>, StreamError> {
            unreachable!("nothing is read before the output check")
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.gguf");
    std::fs::write(&input, b"model").unwrap();
    let src = Reads(&input, Vec::new());
    let err = run(&src, &CodecSolver, GgufSink::single(&input, Vec::new(), Vec::new()), RunOptions::new(&Silent))
        .unwrap_err();
    assert!(matches!(err, StreamError::Format(_)), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), b"model");
}

#[test]
fn finds_the_first_non_finite_value() {
    let mut v = vec![0.5f32; 300_000];
    assert_eq!(first_non_finite(&v), None);
    v[200_001] = f32::INFINITY;
    v[250_000] = f32::NAN;
    assert_eq!(first_non_finite(&v), Some(200_001));
    v[3] = -f32::NAN;
    assert_eq!(first_non_finite(&v), Some(3));
}

/// [`Toy`] reading an input model of `count` tensors.
struct Counted(Toy, TensorCount);

impl Source for Counted {
    type Error = StreamError;

    fn tensors(&self) -> &[StreamTensor] {
        self.0.tensors()
    }

    fn input_paths(&self) -> Vec<&Path> {
        Vec::new()
    }

    fn read<'s>(&'s self, index: usize, values: &mut Vec<f32>) -> Result<TensorData<'s>, StreamError> {
        self.0.read(index, values)
    }

    fn tensor_count(&self) -> Option<TensorCount> {
        Some(self.1)
    }
}

#[test]
fn a_plan_short_of_the_input_model_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("toy.gguf");
    // The two planned tensors are only part of a three-tensor model (one split of it, say).
    let src = Counted(Toy::new(false), TensorCount::all(3));
    let err = run(&src, &CodecSolver, GgufSink::single(&out, Vec::new(), src.0.specs()), RunOptions::new(&Silent))
        .unwrap_err();
    assert!(matches!(err, StreamError::TensorCount { planned: 2, input: 3, dropped: 0 }), "{err}");
    assert!(err.to_string().contains("partial model"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // More planned than the input has is as wrong.
    let src = Counted(Toy::new(false), TensorCount::all(1));
    let err = run(&src, &CodecSolver, GgufSink::single(&out, Vec::new(), src.0.specs()), RunOptions::new(&Silent))
        .unwrap_err();
    assert!(matches!(err, StreamError::TensorCount { planned: 2, input: 1, .. }), "{err}");
    // A tensor dropped on purpose is accounted for.
    let src = Counted(Toy::new(false), TensorCount { input: 3, dropped: 1 });
    run(&src, &CodecSolver, GgufSink::single(&out, Vec::new(), src.0.specs()), RunOptions::new(&Silent)).unwrap();
    assert_eq!(GgufFile::open(&out).unwrap().tensors().len(), 2);
    assert!(check_count(0, TensorCount { input: 1, dropped: 2 }).is_err());
    assert!(check_count(3, TensorCount::all(3)).is_ok());
}

/// Stored F16 tensors handed over as [`TensorData::Encoded`]: a 2-D one of several pieces, a 3-D one of two
/// experts (pieces stop at the expert boundary) with a diagonal importance vector per expert, and a copy.
struct Encoded {
    tensors: Vec<StreamTensor>,
    bytes: Vec<Vec<u8>>,
    imatrix: Vec<f32>,
}

impl Encoded {
    fn new(nan_at: Option<usize>) -> Encoded {
        let shapes: [(&str, Vec<u64>, GgmlType); 3] = [
            ("a", vec![512, 2100], GgmlType::Q8_0),
            ("experts", vec![256, 4500, 2], GgmlType::Q4_K),
            ("b", vec![8], GgmlType::F32),
        ];
        let mut tensors = Vec::new();
        let mut bytes = Vec::new();
        for (k, (name, ne, ty)) in shapes.into_iter().enumerate() {
            let n: u64 = ne.iter().product();
            let mut values: Vec<f32> = (0..n).map(|i| (((i * 7919 + k as u64) % 1013) as f32 - 506.0) / 97.0).collect();
            if let (Some(at), 0) = (nan_at, k) {
                values[at] = f32::NAN;
            }
            let stored: Vec<u8> = if k == 2 {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            } else {
                values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()
            };
            tensors.push(StreamTensor::solved(name, ne, ty, "").unwrap());
            bytes.push(stored);
        }
        let imatrix = (0..512).map(|i| 1.0 + (i % 13) as f32).collect();
        Encoded { tensors, bytes, imatrix }
    }

    /// The expected bytes of tensor `k`: decoded whole, solved whole.
    fn expected(&self, k: usize) -> Vec<u8> {
        let t = &self.tensors[k];
        if k == 2 {
            return self.bytes[2].clone();
        }
        let mut values = vec![0f32; t.ne.iter().product::<u64>() as usize];
        crate::dequant::dequantize_row_par(GgmlType::F16, &self.bytes[k], &mut values).unwrap();
        let stats = if k == 1 { TensorStats::Diagonal(&self.imatrix) } else { TensorStats::None };
        let job = crate::solver::SolveJob { name: &t.name, ne: &t.ne, ty: t.ty.unwrap(), stats };
        crate::solver::solve_to_vec(&CodecSolver, &job, &values).unwrap()
    }

    fn specs(&self) -> Vec<TensorSpec> {
        self.tensors
            .iter()
            .map(|t| TensorSpec { name: t.name.clone(), ggml_type: t.ty.unwrap(), ne: t.ne.clone() })
            .collect()
    }
}

impl Source for Encoded {
    type Error = StreamError;

    fn tensors(&self) -> &[StreamTensor] {
        &self.tensors
    }

    fn input_paths(&self) -> Vec<&Path> {
        Vec::new()
    }

    fn read<'s>(&'s self, index: usize, _: &mut Vec<f32>) -> Result<TensorData<'s>, StreamError> {
        let bytes = Cow::Borrowed(&self.bytes[index][..]);
        Ok(if index == 2 { TensorData::Bytes(bytes) } else { TensorData::Encoded { ty: GgmlType::F16, bytes } })
    }

    fn stats(&self, index: usize) -> Result<TensorStats<'_>, StreamError> {
        Ok(if index == 1 { TensorStats::Diagonal(&self.imatrix) } else { TensorStats::None })
    }
}

#[test]
fn encoded_tensors_in_pieces_give_the_whole_tensor_bytes_at_any_thread_count() {
    let src = Encoded::new(None);
    assert!(pieces::piece_rows(2100, 2100, 512).len() > 1, "the test tensor must take several pieces");
    let dir = tempfile::tempdir().unwrap();
    for threads in [1, 2, 3] {
        let out = dir.path().join(format!("enc-{threads}.gguf"));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let sink = GgufSink::single(&out, Vec::new(), src.specs());
        // Inside the pool (the driver runs pool work while it waits) and from outside it.
        let s = if threads == 2 {
            run(&src, &CodecSolver, sink, RunOptions::new(&Silent)).unwrap()
        } else {
            pool.install(|| run(&src, &CodecSolver, sink, RunOptions::new(&Silent))).unwrap()
        };
        assert_eq!(s.bytes, src.tensors.iter().map(|t| t.size).sum::<u64>());
        let g = GgufFile::open(&out).unwrap();
        for k in 0..3 {
            assert!(g.tensor_data(&g.tensors()[k]) == src.expected(k), "tensor {k}, {threads} threads");
        }
    }
}

#[test]
fn a_non_finite_value_in_a_later_piece_is_reported_at_its_tensor_index() {
    let at = 2050 * 512 + 17;
    let src = Encoded::new(Some(at));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nan.gguf");
    let opts = RunOptions { reject_non_finite: true, ..RunOptions::new(&Silent) };
    let err = run(&src, &CodecSolver, GgufSink::single(&out, Vec::new(), src.specs()), opts).unwrap_err();
    assert!(matches!(err, StreamError::NonFinite { index, .. } if index == at), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
