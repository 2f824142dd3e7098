//! The k-quants: `Q2_K`, `Q3_K`, `Q4_K`, `Q5_K`, `Q6_K` and the activation type `Q8_K` (256 values).
//!
//! Ports of `dequantize_row_q{2,3,4,5,6,8}_K` in `ggml/src/ggml-quants.c`, including the operation order
//! (`dl * q - ml`, `(d * sc) * q`), which decides the last bit. Block layouts (`ggml-common.h`):
//! Q2_K `u8 scales[16]; u8 qs[64]; f16 d; f16 dmin` · Q3_K `u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d` ·
//! Q4_K `f16 d; f16 dmin; u8 scales[12]; u8 qs[128]` · Q5_K `… u8 scales[12]; u8 qh[32]; u8 qs[128]` ·
//! Q6_K `u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d` · Q8_K `f32 d; i8 qs[256]; i16 bsums[16]`.

use super::{f16_at, for_blocks, u32_at};

/// `block_q2_K`: value = `d * (sc & 15) * q - dmin * (sc >> 4)` per 16-value sub-block.
pub(super) fn q2_k(src: &[u8], dst: &mut [f32]) {
    for_blocks::<84, 256>(src, dst, |b, y| {
        let (scales, rest) = b.split_at(16);
        let qs = &rest[..64];
        let d = f16_at(b, 80);
        let min = f16_at(b, 82);
        for (half, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
            for (j, y) in y.chunks_exact_mut(32).enumerate() {
                let shift = 2 * j;
                let is = 8 * half + 2 * j;
                for (part, y) in y.chunks_exact_mut(16).enumerate() {
                    let sc = scales[is + part];
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
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    for_blocks::<110, 256>(src, dst, |b, y| {
        let hm = &b[..32];
        let qs = &b[32..96];
        let d_all = f16_at(b, 108);

        // Unpack the 12 scale bytes into 16 6-bit values exactly as ggml does with `aux`.
        let a0 = u32_at(b, 96);
        let a1 = u32_at(b, 100);
        let tmp = u32_at(b, 104);
        let aux = [
            (a0 & KMASK2) | ((tmp & KMASK1) << 4),
            (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
            ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
            ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
        ];
        let mut scales = [0u8; 16];
        for (s, a) in scales.chunks_exact_mut(4).zip(aux) {
            s.copy_from_slice(&a.to_le_bytes());
        }

        let mut m = 1u8;
        for (half, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
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

/// `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `block_q4_K`: value = `d * sc * q - dmin * m` per 32-value sub-block.
pub(super) fn q4_k(src: &[u8], dst: &mut [f32]) {
    for_blocks::<144, 256>(src, dst, |b, y| {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for (p, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * p, scales);
            let (sc2, m2) = scale_min_k4(2 * p + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (lo, hi) = y.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                *lo = d1 * (q & 0xF) as f32 - m1;
                *hi = d2 * (q >> 4) as f32 - m2;
            }
        }
    });
}

/// `block_q5_K`: as Q4_K with a fifth bit from `qh` (bit `2p` / `2p + 1` for the pair `p`).
pub(super) fn q5_k(src: &[u8], dst: &mut [f32]) {
    for_blocks::<176, 256>(src, dst, |b, y| {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        for (p, (ql, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * p, scales);
            let (sc2, m2) = scale_min_k4(2 * p + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let u1 = 1u8 << (2 * p);
            let u2 = 2u8 << (2 * p);
            let (lo, hi) = y.split_at_mut(32);
            for (((lo, hi), &q), &h) in lo.iter_mut().zip(hi).zip(ql).zip(qh) {
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
    for_blocks::<210, 256>(src, dst, |b, y| {
        let d = f16_at(b, 208);
        for (n, y) in y.chunks_exact_mut(128).enumerate() {
            let ql = &b[64 * n..64 * n + 64];
            let qh = &b[128 + 32 * n..128 + 32 * n + 32];
            let sc = &b[192 + 8 * n..192 + 8 * n + 8];
            for l in 0..32 {
                let is = l / 16;
                let h = qh[l];
                let q1 = ((ql[l] & 0xF) | ((h & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
                y[l] = d * sc[is] as i8 as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
            }
        }
    });
}

/// `block_q8_K`: value = `d * qs` with an `f32` d; `bsums` are not needed.
pub(super) fn q8_k(src: &[u8], dst: &mut [f32]) {
    for_blocks::<292, 256>(src, dst, |b, y| {
        let d = f32::from_bits(u32_at(b, 0));
        for (v, &q) in y.iter_mut().zip(&b[4..260]) {
            *v = d * q as i8 as f32;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_k4_round_trips_the_packing() {
        // Pack (ls, lm) = (j + 1, 62 - j) ... with high bits, as quantize_row_q4_K_ref does.
        let ls: [u8; 8] = [1, 17, 33, 63, 5, 40, 50, 63];
        let lm: [u8; 8] = [62, 0, 48, 31, 63, 16, 2, 35];
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = ls[j];
                s[j + 4] = lm[j];
            } else {
                s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
                s[j - 4] |= (ls[j] >> 4) << 6;
                s[j] |= (lm[j] >> 4) << 6;
            }
        }
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &s), (ls[j], lm[j]), "sub-block {j}");
        }
    }

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
