//! The k-quants: `Q2_K`, `Q3_K`, `Q4_K`, `Q5_K`, `Q6_K` and the activation type `Q8_K` (256 values).
//!
//! Ports of `dequantize_row_q{2,3,4,5,6,8}_K` in `ggml/src/ggml-quants.c`, including the operation order
//! (`dl * q - ml`, `(d * sc) * q`), which decides the last bit. The block layouts and the 6-bit scale
//! packing are those of [`crate::blocks`], shared with the quantizers.

use super::for_blocks;
use crate::blocks::{
    get_scale_min_k4, unpack_q3_k_scales, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K,
};

/// `block_q2_K`: value = `d * (sc & 15) * q - dmin * (sc >> 4)` per 16-value sub-block.
pub(super) fn q2_k(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ2K, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (half, (q, y)) in b.qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
            for (j, y) in y.chunks_exact_mut(32).enumerate() {
                let shift = 2 * j;
                let is = 8 * half + 2 * j;
                for (part, y) in y.chunks_exact_mut(16).enumerate() {
                    let sc = b.scales[is + part];
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    let q = &q[16 * part..16 * part + 16];
                    for (v, &q) in y.iter_mut().zip(q) {
                        *v = dl * ((q >> shift) & 3) as f32 - ml;
                    }
                }
            }
        }
    });
}

/// `block_q3_K`: value = `d * (sc - 32) * (q2 - (hmask bit ? 0 : 4))`, 16 signed 6-bit scales.
pub(super) fn q3_k(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ3K, y: &mut [f32; QK_K]| {
        let hm: &[u8] = &b.hmask;
        let d_all = b.d.to_f32();
        let scales = unpack_q3_k_scales(&b.scales);
        let mut m = 1u8;
        for (half, (q, y)) in b.qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
            for (j, y) in y.chunks_exact_mut(32).enumerate() {
                let shift = 2 * j;
                let is = 8 * half + 2 * j;
                for (part, y) in y.chunks_exact_mut(16).enumerate() {
                    let dl = d_all * (scales[is + part] as i8 as i32 - 32) as f32;
                    let off = 16 * part;
                    for (l, v) in y.iter_mut().enumerate() {
                        let low = ((q[off + l] >> shift) & 3) as i32;
                        let high = if hm[off + l] & m != 0 { 0 } else { 4 };
                        *v = dl * (low - high) as f32;
                    }
                }
                m <<= 1;
            }
        }
    });
}

/// `block_q4_K`: value = `d * sc * q - dmin * m` per 32-value sub-block.
pub(super) fn q4_k(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ4K, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (p, (q, y)) in b.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (d1, m1, d2, m2) = pair_scales(d, min, &b.scales, p);
            let (lo, hi) = y.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                *lo = d1 * (q & 0xF) as f32 - m1;
                *hi = d2 * (q >> 4) as f32 - m2;
            }
        }
    });
}

/// The effective scales and mins `(d·sc, dmin·m)` of the sub-block pair `p` (sub-blocks `2p`, `2p + 1`)
/// of a Q4_K/Q5_K block.
#[inline(always)]
fn pair_scales(d: f32, min: f32, scales: &[u8; 12], p: usize) -> (f32, f32, f32, f32) {
    let (sc1, m1) = get_scale_min_k4(2 * p, scales);
    let (sc2, m2) = get_scale_min_k4(2 * p + 1, scales);
    (d * sc1 as f32, min * m1 as f32, d * sc2 as f32, min * m2 as f32)
}

/// `block_q5_K`: as Q4_K with a fifth bit from `qh` (bit `2p` / `2p + 1` for the pair `p`).
pub(super) fn q5_k(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ5K, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        let min = b.dmin.to_f32();
        for (p, (ql, y)) in b.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (d1, m1, d2, m2) = pair_scales(d, min, &b.scales, p);
            let u1 = 1u8 << (2 * p);
            let u2 = 2u8 << (2 * p);
            let (lo, hi) = y.split_at_mut(32);
            for (((lo, hi), &q), &h) in lo.iter_mut().zip(hi).zip(ql).zip(&b.qh) {
                let h1 = if h & u1 != 0 { 16 } else { 0 };
                let h2 = if h & u2 != 0 { 16 } else { 0 };
                *lo = d1 * ((q & 0xF) + h1) as f32 - m1;
                *hi = d2 * ((q >> 4) + h2) as f32 - m2;
            }
        }
    });
}

/// `block_q6_K`: value = `d * scales[k] * (q - 32)`, q = 4 low bits from `ql`, 2 high bits from `qh`.
pub(super) fn q6_k(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ6K, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        for (n, y) in y.chunks_exact_mut(128).enumerate() {
            let ql = &b.ql[64 * n..64 * n + 64];
            let qh = &b.qh[32 * n..32 * n + 32];
            let sc = &b.scales[8 * n..8 * n + 8];
            for l in 0..32 {
                let is = l / 16;
                let h = qh[l];
                let q1 = ((ql[l] & 0xF) | ((h & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    });
}

/// `block_q8_K`: value = `d * qs` with an `f32` d; `bsums` are not needed.
pub(super) fn q8_k(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ8K, y: &mut [f32; QK_K]| {
        let d = b.d.get();
        for (v, &q) in y.iter_mut().zip(&b.qs) {
            *v = d * q as f32;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q3_k_scale_unpacking_matches_the_reference_packing() {
        // 16 6-bit scales packed as quantize_row_q3_K_ref packs them; with d = 1 and all q = 0 and
        // hmask = 0 every value is (l - 32) * -4.
        let l: [u8; 16] = [0, 1, 2, 31, 32, 33, 63, 62, 10, 20, 30, 40, 50, 60, 5, 15];
        let mut b = [0u8; 110];
        for j in 0..16 {
            if j < 8 {
                b[96 + j] = l[j] & 0xF;
            } else {
                b[96 + j - 8] |= (l[j] & 0xF) << 4;
            }
            b[96 + 8 + j % 4] |= (l[j] >> 4) << (2 * (j / 4));
        }
        b[108..110].copy_from_slice(&[0x00, 0x3c]);
        let mut y = [0f32; 256];
        q3_k(&b, &mut y);
        for j in 0..16 {
            assert_eq!(y[16 * j], (l[j] as f32 - 32.0) * -4.0, "sub-block {j}");
        }
    }

    #[test]
    fn q8_k_uses_f32_scale() {
        let mut b = [0u8; 292];
        b[..4].copy_from_slice(&0.1f32.to_le_bytes());
        b[4] = 0xff;
        b[259] = 127;
        let mut y = [0f32; 256];
        q8_k(&b, &mut y);
        assert_eq!((y[0], y[1], y[255]), (-0.1, 0.0, 0.1f32 * 127.0));
    }
}
