//! The scalar encodings ggml uses for block fields and float rows: fp16 (`ggml_half`), bf16, and the
//! `nearest_int` rounding of the quantizers. Ported from llama.cpp b9928
//! (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62): `GGML_FP32_TO_FP16` / `ggml_compute_fp32_to_fp16`,
//! `ggml_compute_fp32_to_bf16` and `GGML_BF16_TO_FP32` in
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-impl.h>,
//! `nearest_int` in `ggml/src/ggml-quants.c`.
//!
//! Invariant: fp16 is IEEE round-to-nearest-even (subnormals, overflow to ±inf) and every NaN becomes
//! `sign | 0x7E00`, as ggml's portable converter does; widening is exact. bf16 rounds to nearest even on
//! the top 16 bits and quiets NaNs by setting bit 6 (`(bits >> 16) | 64`). Stored values are little-endian.

use half::f16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A `ggml_half` field: an fp16 stored little-endian.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
pub struct Half([u8; 2]);

impl Half {
    /// +0.
    pub const ZERO: Half = Half([0; 2]);

    /// The field holding the fp16 bit pattern `bits`.
    #[inline(always)]
    pub fn from_bits(bits: u16) -> Half {
        Half(bits.to_le_bytes())
    }

    /// The fp16 bit pattern.
    #[inline(always)]
    pub fn bits(self) -> u16 {
        u16::from_le_bytes(self.0)
    }

    /// `GGML_FP16_TO_FP32` (exact; NaN stays NaN).
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        fp16_to_fp32(self.bits())
    }

    /// `GGML_FP32_TO_FP16`.
    #[inline]
    pub fn from_f32(x: f32) -> Half {
        Half::from_bits(fp32_to_fp16(x))
    }
}

/// `GGML_FP32_TO_FP16`: the fp16 bit pattern of `x`.
#[inline]
pub fn fp32_to_fp16(x: f32) -> u16 {
    if x.is_nan() {
        // ggml's converter maps every NaN to the canonical quiet NaN (half keeps payload bits).
        ((x.to_bits() >> 16) as u16 & 0x8000) | 0x7E00
    } else {
        f16::from_f32(x).to_bits()
    }
}

/// `GGML_FP16_TO_FP32`: exact widening.
#[inline(always)]
pub fn fp16_to_fp32(h: u16) -> f32 {
    f16::from_bits(h).to_f32()
}

/// `ggml_compute_fp32_to_bf16`: the bf16 bit pattern of `x`.
#[inline]
pub fn fp32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        // NaN: truncate and force quiet.
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// `GGML_BF16_TO_FP32`: exact widening (`bits << 16`).
#[inline(always)]
pub fn bf16_to_fp32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `ggml_e8m0_to_fp32_half`: half the E8M0 scale, 2^(x - 128), with ggml's two subnormal cases spelled out.
#[inline(always)]
pub fn e8m0_to_fp32_half(x: u8) -> f32 {
    let bits = if x < 2 { 0x0020_0000u32 << x } else { ((x - 1) as u32) << 23 };
    f32::from_bits(bits)
}

/// ggml's `nearest_int`: round to nearest, ties to even, by adding 1.5·2²³ and reading the low
/// mantissa bits. Exact for |f| ≤ 4194303; outside that range it returns the same garbage as the C code.
#[inline]
pub fn nearest_int(f: f32) -> i32 {
    let val = f + 12_582_912.0;
    let bits = val.to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's portable `ggml_compute_fp32_to_fp16` (from the FP16 library), written out as an
    /// independent oracle for [`fp32_to_fp16`].
    fn ggml_fp32_to_fp16_oracle(f: f32) -> u16 {
        let scale_to_inf = f32::from_bits(0x7780_0000); // 0x1.0p+112f
        let scale_to_zero = f32::from_bits(0x0880_0000); // 0x1.0p-110f
        let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
        let w = f.to_bits();
        let shl1_w = w.wrapping_add(w);
        let sign = w & 0x8000_0000;
        let mut bias = shl1_w & 0xFF00_0000;
        if bias < 0x7100_0000 {
            bias = 0x7100_0000;
        }
        base += f32::from_bits((bias >> 1) + 0x0780_0000); // IEEE addition commutes exactly
        let bits = base.to_bits();
        let exp_bits = (bits >> 13) & 0x0000_7C00;
        let mantissa_bits = bits & 0x0000_0FFF;
        let nonsign = exp_bits + mantissa_bits;
        ((sign >> 16) | if shl1_w > 0xFF00_0000 { 0x7E00 } else { nonsign }) as u16
    }

    #[test]
    fn fp16_edge_cases() {
        assert_eq!(fp32_to_fp16(0.0), 0x0000);
        assert_eq!(fp32_to_fp16(-0.0), 0x8000);
        assert_eq!(fp32_to_fp16(1.0), 0x3C00);
        assert_eq!(fp32_to_fp16(65504.0), 0x7BFF);
        // 65520 is the midpoint between 65504 and 65536 (= inf): ties to even ⇒ inf.
        assert_eq!(fp32_to_fp16(65520.0), 0x7C00);
        assert_eq!(fp32_to_fp16(65519.996), 0x7BFF);
        assert_eq!(fp32_to_fp16(f32::INFINITY), 0x7C00);
        assert_eq!(fp32_to_fp16(f32::NEG_INFINITY), 0xFC00);
        assert_eq!(fp32_to_fp16(f32::NAN), 0x7E00);
        assert_eq!(fp32_to_fp16(f32::from_bits(0xFFC0_0001)), 0xFE00);
        // Smallest subnormal 2^-24, and half of it (tie ⇒ even ⇒ 0), and just above half.
        assert_eq!(fp32_to_fp16(5.960_464_5e-8), 0x0001);
        assert_eq!(fp32_to_fp16(2.980_232_2e-8), 0x0000);
        assert_eq!(fp32_to_fp16(f32::from_bits(0x3300_0001)), 0x0001);
        // 1 + 2^-11 is a tie between 1 and 1 + 2^-10 ⇒ even (1); 1 + 3·2^-11 ⇒ up.
        assert_eq!(fp32_to_fp16(1.0 + 1.0 / 2048.0), 0x3C00);
        assert_eq!(fp32_to_fp16(1.0 + 3.0 / 2048.0), 0x3C02);
    }

    #[test]
    fn fp16_matches_ggml_converter() {
        // A strided sweep over all f32 bit patterns plus the neighbourhood of every fp16 boundary.
        let mut bits: u32 = 0;
        loop {
            let f = f32::from_bits(bits);
            assert_eq!(fp32_to_fp16(f), ggml_fp32_to_fp16_oracle(f), "bits {bits:#010x}");
            match bits.checked_add(4099) {
                Some(b) => bits = b,
                None => break,
            }
        }
        for h in 0u16..=0xFFFF {
            let f = fp16_to_fp32(h);
            if f.is_nan() {
                continue;
            }
            let b = f.to_bits();
            for d in [0u32, 1, 0x0FFF, 0x1000, 0x1001] {
                for c in [b.wrapping_add(d), b.wrapping_sub(d)] {
                    let f = f32::from_bits(c);
                    assert_eq!(fp32_to_fp16(f), ggml_fp32_to_fp16_oracle(f), "bits {c:#010x}");
                }
            }
        }
    }

    #[test]
    fn bf16_rounding_and_nan() {
        assert_eq!(fp32_to_bf16(1.0), 0x3F80);
        // 1 + 2^-8 is a tie ⇒ even (1.0); 1 + 3·2^-8 ⇒ up to 1 + 2^-6.
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(fp32_to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(fp32_to_bf16(f32::INFINITY), 0x7F80);
        // Largest finite f32 rounds up to inf, like ggml.
        assert_eq!(fp32_to_bf16(f32::MAX), 0x7F80);
        // Signalling NaN with a low payload only: quieted, not turned into inf.
        assert_eq!(fp32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0);
        assert_eq!(fp32_to_bf16(f32::from_bits(0xFF80_0001)), 0xFFC0);
        assert_eq!(fp32_to_bf16(-0.0), 0x8000);
    }

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(0.49999997), 0);
        assert_eq!(nearest_int(0.50000006), 1);
        assert_eq!(nearest_int(-7.6), -8);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
        assert_eq!(nearest_int(0.0), 0);
        assert_eq!(nearest_int(-0.0), 0);
    }

    #[test]
    fn nearest_int_matches_round_ties_even() {
        let mut v = -1000.0f32;
        while v < 1000.0 {
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
            v += 0.125;
        }
    }
}
