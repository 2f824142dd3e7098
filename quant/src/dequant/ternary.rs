//! The ternary types `TQ1_0` (1.6875 bpw) and `TQ2_0` (2.0625 bpw), 256 values in {-1, 0, 1} times `d`.
//!
//! Ports of `dequantize_row_tq{1,2}_0` in `ggml/src/ggml-quants.c`. TQ1_0 packs 5 trits per byte as a base-3 fixed-point fraction: trit `n` of byte `q` is
//! `((q * 3^n mod 256) * 3) >> 8`; the first 32 bytes hold values 0..160 (`n` major), the next 16 bytes
//! values 160..240, `qh` the last 16 (4 trits each). TQ2_0 holds 2-bit `q + 1`.

use super::for_blocks;
use crate::blocks::{BlockTq1_0, BlockTq2_0, QK_K};

const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];

/// Trit `n` (0 = most significant) of a TQ1_0 byte, as -1, 0 or 1.
#[inline(always)]
fn trit(q: u8, n: usize) -> i32 {
    let q = q.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as i32 - 1
}

/// `block_tq1_0`.
pub(super) fn tq1_0(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockTq1_0, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        let (head, rest) = y.split_at_mut(160);
        let (mid, tail) = rest.split_at_mut(80);
        for (n, y) in head.chunks_exact_mut(32).enumerate() {
            for (v, &q) in y.iter_mut().zip(&b.qs[..32]) {
                *v = trit(q, n) as f32 * d;
            }
        }
        for (n, y) in mid.chunks_exact_mut(16).enumerate() {
            for (v, &q) in y.iter_mut().zip(&b.qs[32..48]) {
                *v = trit(q, n) as f32 * d;
            }
        }
        for (n, y) in tail.chunks_exact_mut(4).enumerate() {
            for (v, &q) in y.iter_mut().zip(&b.qh) {
                *v = trit(q, n) as f32 * d;
            }
        }
    });
}

/// `block_tq2_0`.
pub(super) fn tq2_0(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockTq2_0, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        for (j, y) in y.chunks_exact_mut(128).enumerate() {
            let qs = &b.qs[32 * j..32 * j + 32];
            for (l, y) in y.chunks_exact_mut(32).enumerate() {
                for (v, &q) in y.iter_mut().zip(qs) {
                    *v = (((q >> (2 * l)) & 3) as i32 - 1) as f32 * d;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TQ1_0 bytes as quantize_row_tq1_0_ref writes them: 5 trits t0..t4 (0..=2), base 3 with t0 most
    /// significant, scaled to 256/243 with a ceiling division.
    fn pack5(t: [u8; 5]) -> u8 {
        let q = t.iter().fold(0u16, |acc, &x| acc * 3 + x as u16);
        (q * 256).div_ceil(243) as u8
    }

    #[test]
    fn tq1_0_decodes_what_the_reference_packs() {
        for code in 0..243u16 {
            let t = [
                (code / 81 % 3) as u8,
                (code / 27 % 3) as u8,
                (code / 9 % 3) as u8,
                (code / 3 % 3) as u8,
                (code % 3) as u8,
            ];
            let q = pack5(t);
            for (n, &tn) in t.iter().enumerate() {
                assert_eq!(trit(q, n), tn as i32 - 1, "code {code} trit {n}");
            }
        }
    }

    #[test]
    fn tq2_0_layout() {
        let mut b = [0u8; 66];
        b[64..66].copy_from_slice(&[0x00, 0x40]); // 2.0
        b[0] = 0b00_01_10_11;
        b[32] = 0b10_00_00_00;
        let mut y = [0f32; 256];
        tq2_0(&b, &mut y);
        assert_eq!((y[0], y[32], y[64], y[96]), (4.0, 2.0, 0.0, -2.0));
        assert_eq!((y[128], y[224]), (-2.0, 2.0));
    }
}
