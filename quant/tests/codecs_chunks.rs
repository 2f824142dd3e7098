//! Rows are independent: quantizing a tensor in row chunks (sequentially or across threads) gives the
//! same bytes as quantizing it in one call, for every supported type, with and without an importance
//! matrix. This is what lets the pipeline split work by rows without changing its output.

use proptest::prelude::*;
use quantforge_quant::codecs::{can_quantize, quantize_rows, requires_imatrix};
use quantforge_quant::GgmlType;
use rayon::prelude::*;

/// A small deterministic generator (xorshift64*), so the test needs no fixture.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

const N_PER_ROW: usize = 512;
const N_ROWS: usize = 9;

fn supported() -> Vec<GgmlType> {
    GgmlType::ALL.iter().copied().filter(|&t| can_quantize(t)).collect()
}

/// Rows with different shapes: gaussian-ish, a zero row, a constant row, all-positive, outliers.
fn test_tensor() -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut x = Vec::with_capacity(N_ROWS * N_PER_ROW);
    for row in 0..N_ROWS {
        for col in 0..N_PER_ROW {
            let g = (rng.next_f32() + rng.next_f32() + rng.next_f32()) * 0.02;
            x.push(match row {
                1 => 0.0,
                2 => -0.125,
                3 => g.abs() + 0.01,
                4 if col % 97 == 0 => g * 300.0,
                5 if col < 64 => 0.0,
                _ => g,
            });
        }
    }
    let imatrix = (0..N_PER_ROW).map(|_| rng.next_f32().abs() * 3.0 + 0.01).collect();
    (x, imatrix)
}

fn whole(ty: GgmlType, x: &[f32], imatrix: Option<&[f32]>) -> Vec<u8> {
    let row_bytes = ty.row_size(N_PER_ROW as u64).unwrap() as usize;
    let mut out = vec![0u8; row_bytes * (x.len() / N_PER_ROW)];
    quantize_rows(ty, x, N_PER_ROW, imatrix, &mut out).unwrap();
    out
}

#[test]
fn chunked_rows_give_identical_bytes() {
    let (x, w) = test_tensor();
    for ty in supported() {
        let row_bytes = ty.row_size(N_PER_ROW as u64).unwrap() as usize;
        for imatrix in [None, Some(w.as_slice())] {
            if imatrix.is_none() && requires_imatrix(ty) {
                continue;
            }
            let expected = whole(ty, &x, imatrix);
            // Uneven sequential chunks: 1, 2, 4, 2 rows.
            let mut got = vec![0u8; expected.len()];
            let mut row = 0;
            for n in [1usize, 2, 4, 2] {
                quantize_rows(
                    ty,
                    &x[row * N_PER_ROW..(row + n) * N_PER_ROW],
                    N_PER_ROW,
                    imatrix,
                    &mut got[row * row_bytes..(row + n) * row_bytes],
                )
                .unwrap();
                row += n;
            }
            assert_eq!(row, N_ROWS);
            assert_eq!(got, expected, "{ty:?} imatrix={}", imatrix.is_some());
            // One row per rayon task.
            let mut par = vec![0u8; expected.len()];
            par.par_chunks_mut(row_bytes).zip(x.par_chunks(N_PER_ROW)).for_each(|(out, src)| {
                quantize_rows(ty, src, N_PER_ROW, imatrix, out).unwrap();
            });
            assert_eq!(par, expected, "{ty:?} imatrix={} (parallel)", imatrix.is_some());
        }
    }
}

#[test]
fn imatrix_is_used_exactly_where_upstream_uses_it() {
    let (x, w) = test_tensor();
    for ty in supported() {
        if requires_imatrix(ty) {
            let mut out = vec![0u8; ty.row_size(N_PER_ROW as u64).unwrap() as usize * N_ROWS];
            assert!(quantize_rows(ty, &x, N_PER_ROW, None, &mut out).is_err(), "{ty:?}");
            continue;
        }
        let same = whole(ty, &x, None) == whole(ty, &x, Some(&w));
        let ignores = matches!(
            ty,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q8_0
                | GgmlType::TQ1_0
                | GgmlType::TQ2_0
                | GgmlType::MXFP4
        );
        assert_eq!(same, ignores, "{ty:?}");
    }
}

/// Non-finite and extreme inputs give some bytes, never a panic, for every type.
#[test]
fn extreme_values_do_not_panic() {
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX, 1e-45, -0.0, 0.0];
    let (x, w) = test_tensor();
    for ty in supported() {
        for (i, &v) in specials.iter().enumerate() {
            // One special value among normal ones, then a row made only of it.
            let mut row = x[..N_PER_ROW].to_vec();
            row[(i * 37) % N_PER_ROW] = v;
            row.extend(std::iter::repeat_n(v, N_PER_ROW));
            let mut out = vec![0u8; 2 * ty.row_size(N_PER_ROW as u64).unwrap() as usize];
            quantize_rows(ty, &row, N_PER_ROW, Some(&w), &mut out).unwrap();
            if !requires_imatrix(ty) {
                quantize_rows(ty, &row, N_PER_ROW, None, &mut out).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any finite input quantizes, and a two-way split at any row gives the same bytes.
    #[test]
    fn split_anywhere(values in prop::collection::vec(-1e4f32..1e4f32, 3 * 256),
                      scale in prop::sample::select(vec![1e-6f32, 1e-2, 1.0, 30.0]),
                      split in 0usize..=3,
                      weights in prop::collection::vec(0f32..10.0, 256),
                      use_imatrix in any::<bool>()) {
        let x: Vec<f32> = values.iter().map(|v| v * scale).collect();
        let imatrix = use_imatrix.then_some(weights.as_slice());
        for ty in supported() {
            if imatrix.is_none() && requires_imatrix(ty) {
                continue;
            }
            let row_bytes = ty.row_size(256).unwrap() as usize;
            let mut a = vec![0u8; 3 * row_bytes];
            quantize_rows(ty, &x, 256, imatrix, &mut a).unwrap();
            let mut b = vec![0u8; 3 * row_bytes];
            let (b1, b2) = b.split_at_mut(split * row_bytes);
            quantize_rows(ty, &x[..split * 256], 256, imatrix, b1).unwrap();
            quantize_rows(ty, &x[split * 256..], 256, imatrix, b2).unwrap();
            prop_assert_eq!(a, b, "{:?}", ty);
        }
    }
}
