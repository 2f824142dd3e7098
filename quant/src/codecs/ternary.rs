//! TQ1_0 and TQ2_0: ternary quantization (`w = d·t`, `t ∈ {-1, 0, 1}`, `d = max|x|` per 256 values).
//! Ports `quantize_row_tq1_0_ref` and `quantize_row_tq2_0_ref` of `ggml/src/ggml-quants.c` in llama.cpp
//! b9928 (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: both types ignore the importance matrix (upstream's `quantize_tq*_0` always call the ref
//! code). A trit is `lroundf(x/d) + 1` (halves round away from zero, as Rust's `f32::round`). TQ1_0 packs
//! five trits per byte as a base-3 fraction `ceil(q·256/243)` so the decoder can extract trit `n` with
//! `(q·3ⁿ mod 256)·3 >> 8`; the last 16 bytes' 4 trits per byte are shifted one trit up first.

use super::for_each_block;
use crate::blocks::{BlockTq1_0, BlockTq2_0, Half};

/// The block scale `d = max|x|` (C's `MAX(amax, fabsf(v))`) and its inverse (0 for an all-zero block).
fn ternary_scale(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
    (amax, id)
}

/// `lroundf(x·id) + 1` stored in a C `int`: the trit `-1, 0, 1` as `0, 1, 2`. Only non-finite or huge
/// products (a block of subnormals, whose inverse scale is infinite) leave that range; for them
/// x86-64's `lroundf` returns `LONG_MIN`, which this reproduces, and the `long` is truncated to `int`.
#[inline]
fn trit(x: f32, id: f32) -> i32 {
    let v = x * id;
    let l = if v.abs() < 2f32.powi(63) { v.round() as i64 } else { i64::MIN };
    l.wrapping_add(1) as i32
}

/// Base-3 digits `q` (most significant first) → the byte `ceil(q·256/243)`.
#[inline]
fn pack_base3(q: u8) -> u8 {
    (u16::from(q) * 256).div_ceil(243) as u8
}

/// `quantize_row_tq1_0_ref` for one block.
fn tq1_0_block(x: &[f32]) -> BlockTq1_0 {
    let (d, id) = ternary_scale(x);
    let mut b = BlockTq1_0 { qs: [0; 48], qh: [0; 4], d: Half::from_f32(d) };
    // Bytes 0..32 take values 0..160 (5 per byte, stride 32); bytes 32..48 take 160..240 (stride 16).
    let mut base = 0usize;
    for (bytes, stride) in [(0..32usize, 32usize), (32..48, 16)] {
        for (m, j) in bytes.enumerate() {
            let mut q = 0u8;
            for n in 0..5 {
                q = (i32::from(q) * 3).wrapping_add(trit(x[base + m + n * stride], id)) as u8;
            }
            b.qs[j] = pack_base3(q);
        }
        base += 5 * stride;
    }
    // Values 240..256: 4 per byte (stride 4), shifted up by one trit.
    for j in 0..4 {
        let mut q = 0u8;
        for m in 0..4 {
            q = (i32::from(q) * 3).wrapping_add(trit(x[base + j + m * 4], id)) as u8;
        }
        q = (i32::from(q) * 3) as u8;
        b.qh[j] = pack_base3(q);
    }
    b
}

/// `quantize_row_tq2_0_ref` for one block: 2-bit `t + 1`, byte `32k + m` holds values `128k + m + 32n`
/// in bits `2n..2n + 2`.
fn tq2_0_block(x: &[f32]) -> BlockTq2_0 {
    let (d, id) = ternary_scale(x);
    let mut b = BlockTq2_0 { qs: [0; 64], d: Half::from_f32(d) };
    for (k, chunk) in x.chunks_exact(128).enumerate() {
        for m in 0..32 {
            let mut q = 0u8;
            for n in 0..4 {
                q = q.wrapping_add((((trit(chunk[m + n * 32], id)) & 3) << (2 * n)) as u8);
            }
            b.qs[32 * k + m] = q;
        }
    }
    b
}

/// TQ1_0 rows (the importance matrix is ignored).
pub(crate) fn quantize_row_tq1_0(src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, None, dst, |x, _| tq1_0_block(x));
}

/// TQ2_0 rows (the importance matrix is ignored).
pub(crate) fn quantize_row_tq2_0(src: &[f32], _imatrix: Option<&[f32]>, dst: &mut [u8]) {
    for_each_block(src, None, dst, |x, _| tq2_0_block(x));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::QK_K;
    use zerocopy::IntoBytes;

    /// A block whose values are `amax·t` decodes to exactly those trits (trit extraction written out as
    /// the format defines it, independently of the dequantizer).
    #[test]
    fn tq1_0_trits_round_trip() {
        let mut x = [0f32; QK_K];
        for (i, v) in x.iter_mut().enumerate() {
            *v = [(-1.0f32), 0.0, 1.0][(i * 7 + i / 5) % 3] * 0.5;
        }
        let b = tq1_0_block(&x);
        let bytes = b.as_bytes();
        let digit = |q: u8, n: u32| -> f32 { (((u16::from(q.wrapping_mul(3u8.pow(n))) * 3) >> 8) as f32) - 1.0 };
        let mut y = Vec::new();
        for (range, stride) in [(0..32usize, 32usize), (32..48, 16)] {
            for n in 0..5 {
                for j in range.clone().take(stride) {
                    y.push(digit(bytes[j], n));
                }
            }
        }
        for n in 0..4 {
            for j in 48..52 {
                y.push(digit(bytes[j], n));
            }
        }
        let want: Vec<f32> = x.iter().map(|v| v / 0.5).collect();
        assert_eq!(y, want);
        assert_eq!(b.d.to_f32(), 0.5);
    }

    #[test]
    fn tq2_0_packs_two_bits() {
        let mut x = [0f32; QK_K];
        x[0] = -2.0;
        x[32] = 2.0;
        x[129] = 1.5;
        let b = tq2_0_block(&x);
        assert_eq!(b.d.to_f32(), 2.0);
        assert_eq!(b.qs[0], 0b01_01_10_00);
        assert_eq!(b.qs[1], 0b01_01_01_01);
        assert_eq!(b.qs[33], 0b01_01_01_10);
    }
}
