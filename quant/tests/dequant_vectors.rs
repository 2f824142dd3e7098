//! `dequantize_row` against an independent oracle: vectors of pseudo-random blocks dequantized by PyPI's
//! `gguf` 0.19.0 (`fixtures/dequant/make_vectors.py`). Every value must match bit for bit.

use quantforge_quant::dequant::dequantize_row;
use quantforge_quant::GgmlType;
use sha2::{Digest, Sha256};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/dequant");

/// Every type the oracle can dequantize; a missing file is a failure, not a skip.
const TYPES: &[&str] = &[
    "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0",
    "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS", "MXFP4", "NVFP4",
];

struct Vector {
    ty: GgmlType,
    raw: Vec<u8>,
    values: Vec<f32>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn load(name: &str) -> Vector {
    let path = format!("{DIR}/{name}.bin");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(&data[..4], b"QFDQ", "{path}: magic");
    assert_eq!(u32_at(&data, 4), 1, "{path}: version");
    let ty = GgmlType::from_id(u32_at(&data, 8)).expect("known type id");
    assert_eq!(ty, name.parse().unwrap(), "{path}: type");
    let blocks = u32_at(&data, 12) as usize;
    let raw_len = blocks * ty.type_size() as usize;
    let n = blocks * ty.block_size() as usize;
    assert_eq!(data.len(), 16 + raw_len + 4 * n, "{path}: size");
    let raw = data[16..16 + raw_len].to_vec();
    let values = data[16 + raw_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    Vector { ty, raw, values }
}

#[test]
fn fixtures_match_their_checksums() {
    let sums = std::fs::read_to_string(format!("{DIR}/SHA256SUMS")).unwrap();
    let mut listed = 0;
    for line in sums.lines() {
        let (hash, name) = line.split_once("  ").expect("sha256sum format");
        let data = std::fs::read(format!("{DIR}/{name}")).unwrap();
        let got: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, hash, "{name}");
        listed += 1;
    }
    assert_eq!(listed, TYPES.len());
}

#[test]
fn matches_gguf_py_bit_for_bit() {
    for name in TYPES {
        let v = load(name);
        let mut got = vec![f32::NAN; v.values.len()];
        dequantize_row(v.ty, &v.raw, &mut got).unwrap();
        let block = v.ty.block_size() as usize;
        for (i, (g, w)) in got.iter().zip(&v.values).enumerate() {
            assert!(
                g.to_bits() == w.to_bits(),
                "{name}: value {i} (block {}, element {}): got {g:e} ({:#010x}), gguf-py {w:e} ({:#010x})",
                i / block,
                i % block,
                g.to_bits(),
                w.to_bits()
            );
        }
    }
}

/// Dequantizing a row in pieces (block by block) gives the same values as in one call.
#[test]
fn blocks_are_independent() {
    for name in TYPES {
        let v = load(name);
        let (bytes, block) = (v.ty.type_size() as usize, v.ty.block_size() as usize);
        let mut got = vec![0f32; v.values.len()];
        for (s, d) in v.raw.chunks_exact(bytes).zip(got.chunks_exact_mut(block)) {
            dequantize_row(v.ty, s, d).unwrap();
        }
        assert!(got.iter().zip(&v.values).all(|(g, w)| g.to_bits() == w.to_bits()), "{name}");
    }
}
