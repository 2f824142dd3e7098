//! Malformed GGUF files built byte by byte: each is rejected with its own error, never a panic; random
//! mutations of a valid file never panic the reader.

use proptest::prelude::*;
use quantforge_formats::gguf::GgufFile;
use quantforge_formats::FormatError;

/// Builds GGUF bytes field by field so tests can corrupt any of them.
#[derive(Clone)]
struct Builder {
    version: u32,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<Vec<u8>>,
    n_tensors: Option<i64>,
    n_kv: Option<i64>,
    data: Vec<u8>,
}

fn s(out: &mut Vec<u8>, x: &str) {
    out.extend_from_slice(&(x.len() as u64).to_le_bytes());
    out.extend_from_slice(x.as_bytes());
}

impl Builder {
    fn new() -> Builder {
        Builder { version: 3, kvs: vec![], tensors: vec![], n_tensors: None, n_kv: None, data: vec![] }
    }

    fn kv_raw(mut self, key: &str, type_id: u32, payload: &[u8]) -> Builder {
        let mut b = Vec::new();
        s(&mut b, key);
        b.extend_from_slice(&type_id.to_le_bytes());
        b.extend_from_slice(payload);
        self.kvs.push(b);
        self
    }

    fn kv_u32(self, key: &str, v: u32) -> Builder {
        self.kv_raw(key, 4, &v.to_le_bytes())
    }

    fn kv_str(self, key: &str, v: &str) -> Builder {
        let mut p = Vec::new();
        s(&mut p, v);
        self.kv_raw(key, 8, &p)
    }

    fn tensor(mut self, name: &str, ne: &[i64], ty: u32, offset: u64) -> Builder {
        let mut b = Vec::new();
        s(&mut b, name);
        b.extend_from_slice(&(ne.len() as u32).to_le_bytes());
        for d in ne {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        self.tensors.push(b);
        self
    }

    fn data(mut self, n: usize) -> Builder {
        self.data = (0..n).map(|i| i as u8).collect();
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.n_tensors.unwrap_or(self.tensors.len() as i64).to_le_bytes());
        out.extend_from_slice(&self.n_kv.unwrap_or(self.kvs.len() as i64).to_le_bytes());
        for k in &self.kvs {
            out.extend_from_slice(k);
        }
        for t in &self.tensors {
            out.extend_from_slice(t);
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend_from_slice(&self.data);
        out
    }

    fn parse(&self) -> Result<GgufFile, FormatError> {
        GgufFile::from_bytes("test.gguf", self.bytes())
    }
}

/// A small valid file: two KVs (one an array), two F32 tensors.
fn valid() -> Builder {
    let mut arr = Vec::new();
    arr.extend_from_slice(&8u32.to_le_bytes());
    arr.extend_from_slice(&2u64.to_le_bytes());
    s(&mut arr, "a");
    s(&mut arr, "bc");
    Builder::new()
        .kv_str("general.architecture", "llama")
        .kv_raw("tokenizer.ggml.tokens", 9, &arr)
        .tensor("a.weight", &[4, 2], 0, 0)
        .tensor("b.weight", &[8], 0, 32)
        .data(64)
}

macro_rules! rejects {
    ($builder:expr, $pat:pat) => {{
        let r = $builder.parse();
        assert!(matches!(r, Err($pat)), "got {:?}", r.map(|_| ()));
        // The message names the file.
        assert!(r.err().unwrap().to_string().contains("test.gguf"));
    }};
}

#[test]
fn valid_file_parses() {
    let f = valid().parse().unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.tensor("b.weight").unwrap().offset, 32);
    assert_eq!(f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap().len(), 2);
    assert_eq!(f.tensor_data(f.tensor("a.weight").unwrap()).len(), 32);
}

#[test]
fn every_truncation_is_rejected() {
    let bytes = valid().bytes();
    for cut in 0..bytes.len() {
        let r = GgufFile::from_bytes("test.gguf", bytes[..cut].to_vec());
        assert!(r.is_err(), "truncated at {cut} accepted");
    }
}

#[test]
fn header_errors() {
    let mut b = valid();
    b.version = 1;
    rejects!(b, FormatError::GgufV1 { .. });
    b.version = 4;
    rejects!(b, FormatError::UnsupportedVersion { version: 4, .. });
    b.version = 0x0300_0000;
    let e = b.parse().unwrap_err().to_string();
    assert!(e.contains("big-endian"), "{e}");
    let mut bytes = valid().bytes();
    bytes[0] = b'X';
    assert!(matches!(GgufFile::from_bytes("test.gguf", bytes), Err(FormatError::BadMagic { .. })));
    let mut b = valid();
    b.n_tensors = Some(-1);
    rejects!(b, FormatError::Negative { .. });
    let mut b = valid();
    b.n_kv = Some(i64::MAX);
    rejects!(b, FormatError::TooLarge { .. });
}

#[test]
fn metadata_errors() {
    rejects!(valid().kv_raw("x", 8, &u64::MAX.to_le_bytes()), FormatError::TooLarge { .. });
    rejects!(valid().kv_raw("x", 8, &1000u64.to_le_bytes()), FormatError::Truncated { .. });
    let mut huge = 8u32.to_le_bytes().to_vec();
    huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
    rejects!(valid().kv_raw("x", 9, &huge), FormatError::TooLarge { .. });
    let mut big = 4u32.to_le_bytes().to_vec();
    big.extend_from_slice(&(1u64 << 20).to_le_bytes());
    rejects!(valid().kv_raw("x", 9, &big), FormatError::Truncated { .. });
    rejects!(valid().kv_raw("x", 13, &[0; 8]), FormatError::InvalidValueType { type_id: 13, .. });
    let mut nested = 9u32.to_le_bytes().to_vec();
    nested.extend_from_slice(&0u64.to_le_bytes());
    rejects!(valid().kv_raw("x", 9, &nested), FormatError::NestedArray { .. });
    rejects!(valid().kv_u32("general.architecture", 1), FormatError::DuplicateKey { .. });
    rejects!(valid().kv_u32("general.alignment", 48), FormatError::BadAlignment { .. });
    rejects!(valid().kv_str("general.alignment", "32"), FormatError::BadAlignment { .. });
    let mut bad_utf8 = 2u64.to_le_bytes().to_vec();
    bad_utf8.extend_from_slice(&[0xC3, 0x28]);
    rejects!(valid().kv_raw("x", 8, &bad_utf8), FormatError::InvalidUtf8 { .. });
}

#[test]
fn tensor_errors() {
    rejects!(valid().tensor("a.weight", &[4], 0, 64), FormatError::DuplicateTensor { .. });
    rejects!(valid().tensor(&"n".repeat(64), &[4], 0, 64), FormatError::NameTooLong { .. });
    rejects!(valid().tensor("c", &[1, 1, 1, 1, 1], 0, 64), FormatError::TooManyDims { .. });
    rejects!(valid().tensor("c", &[-4], 0, 64), FormatError::Negative { .. });
    rejects!(valid().tensor("c", &[4], 99, 64), FormatError::UnknownTensorType { type_id: 99, .. });
    rejects!(valid().tensor("c", &[32], 4, 64), FormatError::RemovedTensorType { type_id: 4, .. });
    rejects!(valid().tensor("c", &[33], 2, 64), FormatError::RowNotDivisible { .. });
    rejects!(valid().tensor("c", &[1 << 40, 1 << 40], 0, 64), FormatError::SizeOverflow { .. });
    rejects!(valid().tensor("c", &[4], 0, 36), FormatError::MisalignedTensor { .. });
    rejects!(valid().tensor("c", &[16], 0, 0), FormatError::OverlappingTensors { .. });
    rejects!(valid().tensor("c", &[4], 0, 1 << 20), FormatError::TensorOutOfBounds { .. });
    rejects!(valid().tensor("c", &[4], 0, u64::MAX - 31), FormatError::TensorOutOfBounds { .. });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random byte edits of a valid file either parse or give an error; they never panic, and whatever
    /// parses has all its tensor data inside the file.
    #[test]
    fn mutations_never_panic(edits in prop::collection::vec((0usize..200, any::<u8>()), 1..8), cut in 0usize..300) {
        let mut bytes = valid().bytes();
        for (pos, val) in edits {
            let i = pos % bytes.len();
            bytes[i] = val;
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        if let Ok(f) = GgufFile::from_bytes("fuzz.gguf", bytes) {
            for t in f.tensors() {
                prop_assert_eq!(f.tensor_data(t).len() as u64, t.size);
            }
        }
    }
}

#[test]
fn version_2_is_read() {
    let mut b = valid();
    b.version = 2;
    let f = b.parse().unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors().len(), 2);
}
