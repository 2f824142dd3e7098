//! Writer -> files -> reader round trips and the writer's refusals.

use std::fs;
use std::path::{Path, PathBuf};

use quantforge_formats::hf::HfModel;
use quantforge_formats::safetensors::Dtype;

use super::pack::le_bytes_to_words;
use super::*;
use crate::intquant::QuantizedLinear;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn src_dir(root: &Path) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("config.json"), r#"{"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}"#)
        .unwrap();
    fs::write(src.join("tokenizer.json"), "{}").unwrap();
    fs::write(src.join("generation_config.json"), "{}").unwrap();
    fs::write(src.join("README.md"), "float model").unwrap();
    src
}

/// A random layer of `scheme`, with an act-order `g_idx` when `act_order`.
fn random_layer(rng: &mut Rng, rows: usize, cols: usize, scheme: IntScheme, act_order: bool) -> QuantizedLinear {
    let ng = scheme.n_groups(cols);
    let maxq = scheme.maxq() as u64;
    let q = (0..rows * cols).map(|_| rng.below(maxq + 1) as u8).collect();
    let zeros =
        (0..rows * ng).map(|_| if scheme.sym { scheme.sym_zero() } else { rng.below(maxq + 1) as u8 }).collect();
    let scales = (0..rows * ng).map(|_| scheme.round_scale((rng.below(1 << 20) as f32 + 1.0) * 1e-7)).collect();
    let g_idx = act_order.then(|| {
        let mut perm: Vec<usize> = (0..cols).collect();
        for i in (1..cols).rev() {
            perm.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let glen = scheme.group_len(cols);
        let mut g = vec![0u32; cols];
        for (pos, &k) in perm.iter().enumerate() {
            g[k] = (pos / glen) as u32;
        }
        g
    });
    QuantizedLinear { rows, cols, scheme, q, scales, zeros, g_idx }
}

fn info(act_order: bool) -> QuantInfo {
    let mut i = QuantInfo::new("gptq");
    i.act_order = act_order;
    i
}

const MODULES: [&str; 2] = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"];

/// Write `layers` (plus an unquantized norm) in `format`, read them back and compare exactly.
fn round_trip(root: &Path, format: CheckpointFormat, layers: &[QuantizedLinear], act_order: bool) -> HfModel {
    let src = src_dir(root);
    let out = root.join(format!("out-{}", format.name()));
    let mut w = CheckpointWriter::create(&out, &src, format, layers[0].scheme, info(act_order)).unwrap();
    for (m, l) in MODULES.iter().zip(layers) {
        w.add_quantized(m, l).unwrap();
    }
    let norm: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    w.add_tensor("model.norm.weight", Dtype::F32, &[2], &norm).unwrap();
    let summary = w.finish().unwrap();
    assert!(summary.files.contains(&"tokenizer.json".to_string()));
    assert!(!summary.files.contains(&"README.md".to_string()));
    assert_eq!(summary.quantized_modules, layers.len());
    let ckpt = QuantizedCheckpoint::detect(&out).unwrap().expect("a quantized checkpoint");
    assert_eq!(ckpt.format(), format);
    let model = HfModel::open(&out).unwrap();
    for (m, l) in MODULES.iter().zip(layers) {
        let (shape, values) = ckpt.dequantize(&model, &format!("{m}.weight")).unwrap().expect("quantized");
        assert_eq!(shape, [l.rows, l.cols]);
        let want = l.dequantize();
        assert!(values.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{format} {m} {:?}", l.scheme);
        let u = ckpt.unpack(&model, m).unwrap().unwrap();
        assert_eq!(u.q, l.q);
        assert!(u.note.is_none());
    }
    assert_eq!(ckpt.dequantize(&model, "model.norm.weight").unwrap(), None);
    model
}

#[test]
fn every_format_bit_width_group_and_act_order_round_trips_exactly() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut cases = 0;
    for format in CheckpointFormat::ALL {
        for bits in [2u8, 3, 4, 8] {
            for group in [None, Some(32), Some(64), Some(128)] {
                for sym in [true, false] {
                    for act_order in [false, true] {
                        let sd = format.scale_dtype(Some(if bits == 8 { "float32" } else { "bfloat16" }));
                        let scheme = IntScheme::new(bits, group, sym, sd).unwrap();
                        if format.check(&scheme, act_order).is_err() {
                            continue;
                        }
                        let root = tempfile::tempdir().unwrap();
                        let (rows, cols) =
                            if format == CheckpointFormat::CompressedTensors { (40, 256) } else { (64, 256) };
                        let layers = [
                            random_layer(&mut rng, rows, cols, scheme, act_order),
                            random_layer(&mut rng, 32, 128, scheme, act_order),
                        ];
                        round_trip(root.path(), format, &layers, act_order);
                        cases += 1;
                    }
                }
            }
        }
    }
    // gptq: 4 bits x 4 groups x sym x 2; gptq_v2: x 2 sym; awq: 3 groups x 2 sym; ct: 2 bits x 4 x 2 x 2.
    assert_eq!(cases, 32 + 64 + 6 + 32);
}

fn words(model: &HfModel, name: &str) -> Vec<u32> {
    let (file, t) = model.tensor(name).unwrap();
    assert_eq!(t.dtype, Dtype::I32, "{name}");
    le_bytes_to_words(file.data(t))
}

#[test]
fn files_hold_the_spec_words_and_shapes() {
    let mut rng = Rng(7);
    let sch = |bits, sym, sd| IntScheme::new(bits, Some(32), sym, sd).unwrap();
    // GPTQ 4-bit symmetric: every v1 zero word 0x77777777, v2 0x88888888; 8-bit 0x7F7F7F7F / 0x80808080.
    for (format, bits, word) in [
        (CheckpointFormat::Gptq, 4, 0x7777_7777u32),
        (CheckpointFormat::GptqV2, 4, 0x8888_8888),
        (CheckpointFormat::Gptq, 8, 0x7F7F_7F7F),
        (CheckpointFormat::GptqV2, 8, 0x8080_8080),
        (CheckpointFormat::Gptq, 2, 0x5555_5555),
    ] {
        let root = tempfile::tempdir().unwrap();
        let layers = [random_layer(&mut rng, 32, 64, sch(bits, true, ScaleDtype::F16), false)];
        let model = round_trip(root.path(), format, &layers, false);
        let z = words(&model, &format!("{}.qzeros", MODULES[0]));
        assert_eq!(z.len(), 2 * 32 * bits as usize / 32);
        assert!(z.iter().all(|&w| w == word), "{format} {bits}: {z:x?}");
        let (_, t) = model.tensor(&format!("{}.qweight", MODULES[0])).unwrap();
        assert_eq!(t.shape, [64 * bits as u64 / 32, 32]);
        let (_, s) = model.tensor(&format!("{}.scales", MODULES[0])).unwrap();
        assert_eq!((s.dtype, s.shape.clone()), (Dtype::F16, vec![2, 32]));
        let g = words(&model, &format!("{}.g_idx", MODULES[0]));
        assert_eq!(g, (0..64).map(|k| k / 32).collect::<Vec<u32>>());
    }
    // AWQ: output column n holding code n packs to 0x75316420; shapes [in, out/8].
    let root = tempfile::tempdir().unwrap();
    let mut l = random_layer(&mut rng, 8, 32, sch(4, false, ScaleDtype::F16), false);
    for n in 0..8 {
        for k in 0..32 {
            l.q[n * 32 + k] = n as u8;
        }
    }
    let model = round_trip(root.path(), CheckpointFormat::Awq, &[l], false);
    let qw = words(&model, &format!("{}.qweight", MODULES[0]));
    assert_eq!(qw, vec![0x7531_6420; 32]);
    assert_eq!(model.tensor(&format!("{}.qzeros", MODULES[0])).unwrap().1.shape, [1, 1]);
    // compressed-tensors: codes 8 (signed 0) pack to 0x88888888, weight_shape is I64 [out, in], no zero
    // point when symmetric; scales in the model's dtype.
    let root = tempfile::tempdir().unwrap();
    let mut l = random_layer(&mut rng, 12, 64, sch(4, true, ScaleDtype::BF16), false);
    l.q.iter_mut().for_each(|q| *q = 8);
    let model = round_trip(root.path(), CheckpointFormat::CompressedTensors, &[l], false);
    assert_eq!(words(&model, &format!("{}.weight_packed", MODULES[0])), vec![0x8888_8888; 12 * 8]);
    let (file, t) = model.tensor(&format!("{}.weight_shape", MODULES[0])).unwrap();
    assert_eq!((t.dtype, t.shape.clone()), (Dtype::I64, vec![2]));
    assert_eq!(file.data(t), [12i64, 64].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    assert!(model.tensor(&format!("{}.weight_zero_point", MODULES[0])).is_none());
    assert_eq!(model.tensor(&format!("{}.weight_scale", MODULES[0])).unwrap().1.dtype, Dtype::BF16);
}

#[test]
fn compressed_tensors_asymmetric_zero_points_pack_along_the_output_dimension() {
    let mut rng = Rng(11);
    let scheme = IntScheme::new(4, Some(32), false, ScaleDtype::F32).unwrap();
    let mut l = random_layer(&mut rng, 9, 64, scheme, false);
    // Group 0 zero points of rows 0..8 are (7n+3)%16, row 8 is 5: word 0 packs rows 0..8 of group 0, word 1
    // (index 2, after group 1's word 0) row 8 alone.
    for n in 0..9 {
        l.zeros[n * 2] = if n < 8 { ((7 * n + 3) % 16) as u8 } else { 5 };
    }
    let root = tempfile::tempdir().unwrap();
    let model = round_trip(root.path(), CheckpointFormat::CompressedTensors, &[l], false);
    let zp = words(&model, &format!("{}.weight_zero_point", MODULES[0]));
    assert_eq!(model.tensor(&format!("{}.weight_zero_point", MODULES[0])).unwrap().1.shape, [2, 2]);
    // Codes 3, 10, 1, 8, 15, 6, 13, 4 in sequential nibbles (no interleave, unlike AWQ).
    assert_eq!(zp[0], 0x4D6F_81A3);
    assert_eq!(zp[2], 5);
}

#[test]
fn mislabelled_symmetric_gptq_is_read_by_its_data() {
    let mut rng = Rng(3);
    let scheme = IntScheme::new(4, Some(32), true, ScaleDtype::F16).unwrap();
    let l = random_layer(&mut rng, 32, 64, scheme, false);
    let root = tempfile::tempdir().unwrap();
    round_trip(root.path(), CheckpointFormat::GptqV2, std::slice::from_ref(&l), false);
    let out = root.path().join("out-gptq_v2");
    let cfg = fs::read_to_string(out.join("config.json")).unwrap().replace("\"gptq_v2\"", "\"gptq\"");
    fs::write(out.join("config.json"), cfg).unwrap();
    let ckpt = QuantizedCheckpoint::detect(&out).unwrap().unwrap();
    assert_eq!(ckpt.format(), CheckpointFormat::Gptq);
    let model = HfModel::open(&out).unwrap();
    let u = ckpt.unpack(&model, MODULES[0]).unwrap().unwrap();
    assert!(u.note.as_deref().unwrap_or("").contains("read as v2"));
    assert_eq!(u.dequantize(), l.dequantize());
}

#[test]
fn format_refusals_name_the_reason() {
    let s = |bits, group, sym, sd| IntScheme::new(bits, group, sym, sd).unwrap();
    let f16 = ScaleDtype::F16;
    let refused = [
        (CheckpointFormat::Gptq, s(4, Some(128), false, f16), false, "asymmetric"),
        (CheckpointFormat::Awq, s(8, Some(128), false, f16), false, "8-bit"),
        (CheckpointFormat::Awq, s(4, Some(128), false, f16), true, "act-order"),
        (CheckpointFormat::Awq, s(4, None, false, f16), false, "group size -1"),
        (CheckpointFormat::CompressedTensors, s(3, Some(128), true, f16), false, "3-bit"),
        (CheckpointFormat::GptqV2, s(4, Some(256), true, f16), false, "group size 256"),
        (CheckpointFormat::Gptq, s(4, Some(128), true, ScaleDtype::BF16), false, "BF16 scales"),
    ];
    for (format, scheme, act, what) in refused {
        let e = format.check(&scheme, act).unwrap_err().to_string();
        assert!(e.contains(what) && e.contains(format.name()), "{e}");
    }
    assert!(CheckpointFormat::GptqV2.check(&s(3, None, false, f16), true).is_ok());
    assert_eq!("compressed-tensors".parse::<CheckpointFormat>().unwrap(), CheckpointFormat::CompressedTensors);
    assert_eq!("GPTQ_v2".parse::<CheckpointFormat>().unwrap(), CheckpointFormat::GptqV2);
    assert!(matches!("exl2".parse::<CheckpointFormat>(), Err(CheckpointError::UnknownFormat(_))));
    assert_eq!(CheckpointFormat::Awq.scale_dtype(Some("bfloat16")), ScaleDtype::F16);
    assert_eq!(CheckpointFormat::CompressedTensors.scale_dtype(Some("bfloat16")), ScaleDtype::BF16);
    assert_eq!(CheckpointFormat::CompressedTensors.scale_dtype(None), ScaleDtype::F32);
}

#[test]
fn writer_refuses_bad_layers_and_leaves_nothing() {
    let mut rng = Rng(5);
    let root = tempfile::tempdir().unwrap();
    let src = src_dir(root.path());
    let out = root.path().join("out");
    let scheme = IntScheme::new(4, Some(32), true, ScaleDtype::F16).unwrap();
    let mut w = CheckpointWriter::create(&out, &src, CheckpointFormat::Gptq, scheme, info(false)).unwrap();
    let good = random_layer(&mut rng, 32, 64, scheme, false);
    let other = IntScheme::new(4, Some(64), true, ScaleDtype::F16).unwrap();
    let e = w.add_quantized("m", &random_layer(&mut rng, 32, 64, other, false));
    assert!(matches!(e, Err(CheckpointError::SchemeMismatch { .. })));
    let mut bad = good.clone();
    bad.scales[3] = 0.1 + 1e-9;
    assert!(matches!(w.add_quantized("m", &bad), Err(CheckpointError::ScaleNotRepresentable { .. })));
    let act = random_layer(&mut rng, 32, 64, scheme, true);
    assert!(matches!(w.add_quantized("m", &act), Err(CheckpointError::GroupIndex { .. })));
    let odd = random_layer(&mut rng, 32, 36 - 4 + 8, IntScheme::new(4, None, true, ScaleDtype::F16).unwrap(), false);
    assert!(w.add_quantized("m", &odd).is_err());
    let mut short = good.clone();
    short.q.pop();
    assert!(matches!(w.add_quantized("m", &short), Err(CheckpointError::Layer { .. })));
    w.add_quantized("m", &good).unwrap();
    assert!(matches!(w.add_quantized("m", &good), Err(CheckpointError::Duplicate { .. })));
    assert!(matches!(w.add_tensor("m.weight", Dtype::F32, &[1], &[0; 4]), Err(CheckpointError::Duplicate { .. })));
    assert!(matches!(w.add_tensor("x", Dtype::F32, &[2], &[0; 4]), Err(CheckpointError::TensorSize { .. })));
    drop(w);
    assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1, "only the source is left");
    // 3-bit GPTQ needs multiples of 32; AWQ needs out % 8 == 0.
    let s3 = IntScheme::new(3, None, true, ScaleDtype::F16).unwrap();
    let mut w = CheckpointWriter::create(&out, &src, CheckpointFormat::Gptq, s3, info(false)).unwrap();
    assert!(matches!(
        w.add_quantized("m", &random_layer(&mut rng, 32, 48, s3, false)),
        Err(CheckpointError::LayerShape { .. })
    ));
    drop(w);
    let s4 = IntScheme::new(4, Some(32), false, ScaleDtype::F16).unwrap();
    let mut w = CheckpointWriter::create(&out, &src, CheckpointFormat::Awq, s4, info(false)).unwrap();
    assert!(matches!(
        w.add_quantized("m", &random_layer(&mut rng, 12, 32, s4, false)),
        Err(CheckpointError::LayerShape { .. })
    ));
}

#[test]
fn output_directory_rules() {
    let mut rng = Rng(9);
    let root = tempfile::tempdir().unwrap();
    let src = src_dir(root.path());
    let scheme = IntScheme::new(4, Some(32), true, ScaleDtype::F16).unwrap();
    let create = |out: &Path| CheckpointWriter::create(out, &src, CheckpointFormat::GptqV2, scheme, info(false));
    assert!(create(&src).is_err());
    assert!(create(&src.join("q")).is_err());
    let busy = root.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("notes.txt"), "mine").unwrap();
    assert!(matches!(create(&busy), Err(CheckpointError::OutputDir { .. })));
    // A previous output is replaced as a whole, and only once the new one is complete.
    let out = root.path().join("out");
    let l = random_layer(&mut rng, 32, 64, scheme, false);
    let mut w = create(&out).unwrap();
    w.add_quantized("a", &l).unwrap();
    w.finish().unwrap();
    let mut w = create(&out).unwrap();
    w.add_quantized("b", &l).unwrap();
    drop(w);
    assert!(HfModel::open(&out).unwrap().tensor("a.qweight").is_some(), "an abandoned rewrite keeps the old output");
    let mut w = create(&out).unwrap().with_max_shard_bytes(1000);
    w.add_quantized("b", &l).unwrap();
    w.add_quantized("c", &l).unwrap();
    let summary = w.finish().unwrap();
    assert!(summary.files.contains(&"model.safetensors.index.json".to_string()), "{:?}", summary.files);
    let model = HfModel::open(&out).unwrap();
    assert!(model.tensor("a.qweight").is_none() && model.shards().len() > 1);
    let ckpt = QuantizedCheckpoint::detect(&out).unwrap().unwrap();
    assert_eq!(ckpt.dequantize(&model, "c.weight").unwrap().unwrap().1, l.dequantize());
    assert_eq!(fs::read_dir(root.path()).unwrap().count(), 3, "no temporaries left: src, busy, out");
    // An already quantized source is refused.
    let e = CheckpointWriter::create(&root.path().join("again"), &out, CheckpointFormat::Gptq, scheme, info(false));
    assert!(matches!(e, Err(CheckpointError::Source { .. })));
}

/// Rewrite `dir/model.safetensors`, replacing tensor `name` by `(dtype, shape, data)`.
fn tamper(dir: &Path, name: &str, dtype: Dtype, shape: &[u64], data: Vec<u8>) {
    use quantforge_formats::safetensors::{SafetensorsFile, SafetensorsWriter, StTensorSpec};
    let path = dir.join("model.safetensors");
    let st = SafetensorsFile::from_bytes(&path, fs::read(&path).unwrap()).unwrap();
    let mut specs = Vec::new();
    let mut bytes = Vec::new();
    for t in st.tensors() {
        if t.name == name {
            specs.push(StTensorSpec { name: t.name.clone(), dtype, shape: shape.to_vec() });
            bytes.push(data.clone());
        } else {
            specs.push(StTensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() });
            bytes.push(st.data(t).to_vec());
        }
    }
    drop(st);
    let mut w = SafetensorsWriter::create(&path, &[], &specs).unwrap();
    for b in &bytes {
        w.write_tensor_data(b).unwrap();
    }
    w.finish().unwrap();
}

/// A format, its symmetry, and a tensor replaced by (name, dtype, shape, bytes).
type Tampered = (CheckpointFormat, bool, String, Dtype, Vec<u64>, Vec<u8>);

#[test]
fn malformed_quantized_tensors_are_refused_by_name() {
    let mut rng = Rng(13);
    let m = MODULES[0];
    let cases: [Tampered; 6] = [
        // qweight stored as F32.
        (CheckpointFormat::GptqV2, true, format!("{m}.qweight"), Dtype::F32, vec![8, 32], vec![0; 8 * 32 * 4]),
        // scales with one group too few.
        (CheckpointFormat::GptqV2, true, format!("{m}.scales"), Dtype::F16, vec![1, 32], vec![0; 64]),
        // g_idx naming a group that does not exist.
        (
            CheckpointFormat::GptqV2,
            true,
            format!("{m}.g_idx"),
            Dtype::I32,
            vec![64],
            [7i32; 64].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        // AWQ zero points missing their second row.
        (CheckpointFormat::Awq, false, format!("{m}.qzeros"), Dtype::I32, vec![1, 4], vec![0; 16]),
        // compressed-tensors weight_shape claiming an absurd width.
        (
            CheckpointFormat::CompressedTensors,
            true,
            format!("{m}.weight_shape"),
            Dtype::I64,
            vec![2],
            [32i64, 1 << 60].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        // compressed-tensors weight_shape with a negative dimension.
        (
            CheckpointFormat::CompressedTensors,
            true,
            format!("{m}.weight_shape"),
            Dtype::I64,
            vec![2],
            [-32i64, 64].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ];
    for (format, sym, name, dtype, shape, data) in cases {
        let root = tempfile::tempdir().unwrap();
        let scheme = IntScheme::new(4, Some(32), sym, format.scale_dtype(Some("float16"))).unwrap();
        let layers = [random_layer(&mut rng, 32, 64, scheme, false)];
        round_trip(root.path(), format, &layers, false);
        let out = root.path().join(format!("out-{}", format.name()));
        tamper(&out, &name, dtype, &shape, data);
        let ckpt = QuantizedCheckpoint::detect(&out).unwrap().unwrap();
        let model = HfModel::open(&out).unwrap();
        match ckpt.dequantize(&model, &format!("{m}.weight")) {
            Err(CheckpointError::Tensor { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}
