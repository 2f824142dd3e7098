//! The 4-bit float types `MXFP4` (32 values, E8M0 scale) and `NVFP4` (64 values, four UE4M3 scales).
//!
//! Ports of `dequantize_row_{mxfp4,nvfp4}` in `ggml/src/ggml-quants.c` and of `ggml_e8m0_to_fp32_half` /
//! `ggml_ue4m3_to_fp32` in `ggml/src/ggml-impl.h`. Nibbles index `kvalues_fp4` (E2M1 values doubled, so
//! both scale decoders return half the scale); the low nibble of `qs[j]` is element `j`, the high nibble
//! element `j + 16` (MXFP4) or `j + 8` within a 16-value sub-block (NVFP4).

use super::for_blocks;
use super::tables::KVALUES_FP4;
use crate::blocks::scalar::e8m0_to_fp32_half;
use crate::blocks::{BlockMxfp4, BlockNvfp4, QK32};

/// `ggml_ue4m3_to_fp32`: unsigned E4M3 (bias 7, bit 7 ignored) times 0.5; 0 and 0x7F decode to 0.
#[inline(always)]
fn ue4m3_to_fp32(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = ((x >> 3) & 0xF) as i32;
    let man = (x & 0x7) as f32;
    // ldexpf is exact here: the results lie between 2^-9 and 2^9.
    let raw = if exp == 0 { man * pow2(-9) } else { (1.0 + man / 8.0) * pow2(exp - 7) };
    raw * 0.5
}

/// 2^e for -126 <= e <= 127.
#[inline(always)]
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// `block_mxfp4`.
pub(super) fn mxfp4(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockMxfp4, y: &mut [f32; QK32]| {
        let d = e8m0_to_fp32_half(b.e);
        for j in 0..16 {
            let q = b.qs[j];
            y[j] = KVALUES_FP4[(q & 0x0F) as usize] as f32 * d;
            y[j + 16] = KVALUES_FP4[(q >> 4) as usize] as f32 * d;
        }
    });
}

/// `block_nvfp4`.
pub(super) fn nvfp4(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockNvfp4, y: &mut [f32; 64]| {
        for (s, y) in y.chunks_exact_mut(16).enumerate() {
            let d = ue4m3_to_fp32(b.d[s]);
            let qs = &b.qs[8 * s..8 * s + 8];
            let (lo, hi) = y.split_at_mut(8);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(qs) {
                *lo = KVALUES_FP4[(q & 0x0F) as usize] as f32 * d;
                *hi = KVALUES_FP4[(q >> 4) as usize] as f32 * d;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_half_is_two_to_the_x_minus_128() {
        for x in 0..=254u8 {
            assert_eq!(e8m0_to_fp32_half(x) as f64, 2f64.powi(x as i32 - 128), "{x}");
        }
    }

    #[test]
    fn ue4m3_decoding() {
        assert_eq!(ue4m3_to_fp32(0x00), 0.0);
        assert_eq!(ue4m3_to_fp32(0x7F), 0.0);
        assert_eq!(ue4m3_to_fp32(0x01), 0.5 / 512.0); // subnormal: 1 * 2^-9
        assert_eq!(ue4m3_to_fp32(0x38), 0.5); // exp 7, man 0: 1.0
        assert_eq!(ue4m3_to_fp32(0x7E), 0.5 * 448.0); // exp 15, man 6: 1.75 * 256
        assert_eq!(ue4m3_to_fp32(0xB8), 0.5); // bit 7 is ignored
        assert_eq!(ue4m3_to_fp32(0xFF), 0.5 * 480.0); // only 0x7F is the zeroed NaN code
    }

    #[test]
    fn nvfp4_sub_block_layout() {
        let mut b = [0u8; 36];
        b[..4].copy_from_slice(&[0x38, 0x40, 0, 0]); // d = 0.5, 1.0, 0, 0
        b[4] = 0xF7; // sub-block 0: element 0 = 12, element 8 = -12
        b[12] = 0x01; // sub-block 1: element 16 = 1
        let mut y = [0f32; 64];
        nvfp4(&b, &mut y);
        assert_eq!((y[0], y[8], y[16], y[24]), (6.0, -6.0, 1.0, 0.0));
    }
}
