//! Plain element types: `F32`, `F16`, `BF16`, `F64` and the integers `I8`..`I64`, all little-endian.
//!
//! `F16` is `GGML_FP16_TO_FP32` (exact), `BF16` is `GGML_BF16_TO_FP32` (`bits << 16`, exact). `F64` and the
//! integers have no ggml `to_float`; they convert to the nearest `f32` like a C cast, as `ggml_get_f32_1d`.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::blocks::scalar::bf16_to_fp32;

pub(super) fn f32_row(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

pub(super) fn f16_row(src: &[u8], dst: &mut [f32]) {
    // Staged through a stack buffer so that `half` can use its run-time-detected F16C path (exact, like
    // the software conversion) on an unaligned byte source.
    const STAGE: usize = 256;
    let mut stage = [f16::ZERO; STAGE];
    for (d, s) in dst.chunks_mut(STAGE).zip(src.chunks(2 * STAGE)) {
        let stage = &mut stage[..d.len()];
        for (h, b) in stage.iter_mut().zip(s.chunks_exact(2)) {
            *h = f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
        }
        stage.convert_to_f32_slice(d);
    }
}

pub(super) fn bf16_row(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16_to_fp32(u16::from_le_bytes([s[0], s[1]]));
    }
}

pub(super) fn f64_row(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(8)) {
        let Ok(bytes) = <[u8; 8]>::try_from(s) else { unreachable!("chunks_exact(8)") };
        *d = f64::from_le_bytes(bytes) as f32;
    }
}

pub(super) fn i8_row(src: &[u8], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s as i8 as f32;
    }
}

pub(super) fn i16_row(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = i16::from_le_bytes([s[0], s[1]]) as f32;
    }
}

pub(super) fn i32_row(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32;
    }
}

pub(super) fn i64_row(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(8)) {
        let Ok(bytes) = <[u8; 8]>::try_from(s) else { unreachable!("chunks_exact(8)") };
        *d = i64::from_le_bytes(bytes) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_matches_scalar_conversion_for_every_bit_pattern() {
        let src: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let mut dst = vec![0f32; 1 << 16];
        f16_row(&src, &mut dst);
        for (h, &v) in (0..=u16::MAX).zip(&dst) {
            let want = f16::from_bits(h).to_f32_const();
            if want.is_nan() {
                assert!(v.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(v.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
        assert_eq!(dst[0x3c00], 1.0);
        assert_eq!(dst[0x0001], 2f32.powi(-24)); // smallest subnormal
        assert_eq!(dst[0xfc00], f32::NEG_INFINITY);
    }

    #[test]
    fn integers_and_wide_floats_convert_to_nearest() {
        let mut d = [0f32; 2];
        i64_row(&[(1i64 << 40) + 1, -3].map(i64::to_le_bytes).concat(), &mut d);
        assert_eq!(d, [(1u64 << 40) as f32, -3.0]);
        i32_row(&[16_777_217i32, i32::MIN].map(i32::to_le_bytes).concat(), &mut d);
        assert_eq!(d, [16_777_216.0, -2_147_483_648.0]);
        i16_row(&[-32768i16, 7].map(i16::to_le_bytes).concat(), &mut d);
        assert_eq!(d, [-32768.0, 7.0]);
        i8_row(&[0x80, 0x7f], &mut d);
        assert_eq!(d, [-128.0, 127.0]);
        f64_row(&[0.1f64, 1e300].map(f64::to_le_bytes).concat(), &mut d);
        assert_eq!(d, [0.1f32, f32::INFINITY]);
        bf16_row(&[0x3f80u16, 0xc049].map(u16::to_le_bytes).concat(), &mut d);
        assert_eq!(d, [1.0, f32::from_bits(0xc049_0000)]);
    }
}
