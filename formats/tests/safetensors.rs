//! safetensors reader/writer round trips, sharded checkpoints and rejection of bad headers.

use quantforge_formats::hf::HfModel;
use quantforge_formats::safetensors::{Dtype, SafetensorsFile, SafetensorsWriter, StTensorSpec};
use quantforge_formats::FormatError;

fn spec(name: &str, dtype: Dtype, shape: &[u64]) -> StTensorSpec {
    StTensorSpec { name: name.into(), dtype, shape: shape.to_vec() }
}

#[test]
fn writer_output_reads_back_with_all_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let dtypes = [
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F64,
        Dtype::I8,
        Dtype::U8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::F8_E4M3,
        Dtype::F8_E5M2,
        Dtype::BOOL,
    ];
    let specs: Vec<_> = dtypes.iter().enumerate().map(|(i, &d)| spec(&format!("t{i}"), d, &[2, 3])).collect();
    let meta = vec![("format".to_string(), "pt".to_string())];
    let mut w = SafetensorsWriter::create(&p, &meta, &specs).unwrap();
    let mut expected = Vec::new();
    for s in &specs {
        let n = 6 * s.dtype.bitsize() / 8;
        let data: Vec<u8> = (0..n).map(|i| (i * 7 % 2) as u8).collect();
        w.write_tensor_data(&data).unwrap();
        expected.push(data);
    }
    w.finish().unwrap();
    let f = SafetensorsFile::open(&p).unwrap();
    assert_eq!(f.metadata(), &meta[..]);
    assert_eq!(f.tensors().len(), dtypes.len());
    for (s, data) in specs.iter().zip(&expected) {
        let t = f.tensor(&s.name).unwrap();
        assert_eq!(t.dtype, s.dtype);
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(f.data(t), &data[..]);
        assert_eq!(f.to_f32(t).unwrap().len(), 6);
    }
}

#[test]
fn stories260k_reads() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/stories260K");
    let m = HfModel::open(dir).unwrap();
    assert_eq!(m.config()["hidden_size"], 64);
    let n: u64 = m.tensors().map(|(_, t)| t.n_elements()).sum();
    assert_eq!(n, 260_032); // tied embeddings: no lm_head tensor
    let (file, emb) = m.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(emb.shape, vec![512, 64]);
    assert_eq!(file.to_f32(emb).unwrap().len(), 512 * 64);
    // Converter order: names in string order.
    let names: Vec<&str> = m.tensors().map(|(_, t)| t.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn sharded_checkpoint_is_checked_against_its_index() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    for (file, names) in
        [("model-00001-of-00002.safetensors", ["b", "a"]), ("model-00002-of-00002.safetensors", ["d", "c"])]
    {
        let specs: Vec<_> = names.iter().map(|n| spec(n, Dtype::F32, &[2])).collect();
        let mut w = SafetensorsWriter::create(dir.path().join(file), &[], &specs).unwrap();
        w.write_tensor_data(&[0; 16]).unwrap();
        w.finish().unwrap();
    }
    let index = |extra: &str| {
        format!(
            r#"{{"metadata":{{}},"weight_map":{{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors","d":"model-00002-of-00002.safetensors"{extra}}}}}"#
        )
    };
    std::fs::write(dir.path().join("model.safetensors.index.json"), index("")).unwrap();
    let m = HfModel::open(dir.path()).unwrap();
    let names: Vec<&str> = m.tensors().map(|(_, t)| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index(r#","e":"model-00002-of-00002.safetensors""#),
    )
    .unwrap();
    assert!(matches!(HfModel::open(dir.path()), Err(FormatError::MissingShardTensor { .. })));
    std::fs::write(dir.path().join("model.safetensors.index.json"), index(r#","e":"../evil.safetensors""#)).unwrap();
    assert!(matches!(HfModel::open(dir.path()), Err(FormatError::NotAModel { .. })));
}

#[test]
fn bad_headers_are_rejected_with_the_path() {
    let cases: Vec<Vec<u8>> = vec![
        vec![1, 2, 3],
        u64::MAX.to_le_bytes().to_vec(),
        [&8u64.to_le_bytes()[..], b"not json"].concat(),
        [&40u64.to_le_bytes()[..], br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#].concat(),
        [&56u64.to_le_bytes()[..], br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}  "#, &[0u8; 8][..]]
            .concat(),
    ];
    for bytes in cases {
        let e = SafetensorsFile::from_bytes("bad.safetensors", bytes).err().expect("accepted");
        assert!(matches!(e, FormatError::Safetensors { .. }));
        assert!(e.to_string().contains("bad.safetensors"));
    }
}
