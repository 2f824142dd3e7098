//! The i-quants (`IQ1_S`..`IQ4_XS`), the ternary `TQ1_0`/`TQ2_0` and the 4-bit floats `MXFP4`/`NVFP4`.
//!
//! Only IQ4_NL and IQ4_XS have quantizers here; the others are decoded only, and their structs name the
//! bytes the kernels read.

use zerocopy::byteorder::little_endian::{U16, U32};

use super::{block, Half};

block!(
    /// `block_iq4_nl` (18 B): `w = d·kvalues_iq4nl[q]`; nibbles ordered as Q4_0's.
    BlockIq4Nl = IQ4_NL {
        /// Scale.
        d: Half,
        /// Nibble indices into the codebook.
        qs: [u8; 16],
    }
);

block!(
    /// `block_iq4_xs` (136 B): 8 sub-blocks of 32 with 6-bit scales `ls`, `w = d·(ls - 32)·kvalues_iq4nl[q]`.
    BlockIq4Xs = IQ4_XS {
        /// Super-block scale.
        d: Half,
        /// High 2 bits of the 8 sub-block scales (bits `2ib..2ib + 2`).
        scales_h: U16,
        /// Low 4 bits of the 8 sub-block scales (nibble `ib % 2` of byte `ib / 2`).
        scales_l: [u8; 4],
        /// Nibble indices: byte `16ib + j` holds elements `32ib + j` (low) and `32ib + 16 + j` (high).
        qs: [u8; 128],
    }
);

impl BlockIq4Xs {
    /// The 6-bit scale `ls` of sub-block `ib`.
    #[inline(always)]
    pub fn scale(&self, ib: usize) -> u8 {
        let low = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf;
        low | ((((self.scales_h.get() >> (2 * ib)) & 3) as u8) << 4)
    }

    /// Store the 6-bit scale `ls` of sub-block `ib` into scales that start zeroed.
    #[inline]
    pub fn put_scale(&mut self, ib: usize, ls: u8) {
        self.scales_l[ib / 2] |= (ls & 0xF) << (4 * (ib % 2));
        self.scales_h = U16::new(self.scales_h.get() | (u16::from(ls >> 4) << (2 * ib)));
    }
}

block!(
    /// `block_iq2_xxs` (66 B): per 32 values 8 bytes (C: `uint16_t qs[32]`): four 8-bit grid indices,
    /// then a little-endian `u32` of four 7-bit sign indices and a 4-bit scale in the top bits.
    BlockIq2Xxs = IQ2_XXS {
        /// Scale.
        d: Half,
        /// Grid indices and sign/scale words, 8 bytes per 32 values.
        qs: [[u8; 8]; 8],
    }
);

block!(
    /// `block_iq2_xs` (74 B): each `u16` holds a 9-bit grid index and a 7-bit sign index; two 4-bit
    /// scales per 32 values.
    BlockIq2Xs = IQ2_XS {
        /// Scale.
        d: Half,
        /// Grid and sign indices, one per 8 values.
        qs: [U16; 32],
        /// Sub-block scales.
        scales: [u8; 8],
    }
);

block!(
    /// `block_iq2_s` (82 B): 10-bit grid indices (8 bits in `qs`, 2 in `qh`), explicit sign bytes.
    BlockIq2S = IQ2_S {
        /// Scale.
        d: Half,
        /// Low 8 bits of the grid indices (first half of C's `qs[64]`).
        qs: [u8; 32],
        /// Sign bits, one byte per 8 values (second half of C's `qs[64]`).
        signs: [u8; 32],
        /// High 2 bits of the grid indices.
        qh: [u8; 8],
        /// Sub-block scales.
        scales: [u8; 8],
    }
);

block!(
    /// `block_iq3_xxs` (98 B): 8-bit indices into a 4-value grid; per 32 values one `u32` of four 7-bit
    /// sign indices and a 4-bit scale.
    BlockIq3Xxs = IQ3_XXS {
        /// Scale.
        d: Half,
        /// Grid indices (first 64 bytes of C's `qs[96]`).
        qs: [u8; 64],
        /// Sign/scale words (last 32 bytes of C's `qs[96]`).
        scales_and_signs: [U32; 8],
    }
);

block!(
    /// `block_iq3_s` (110 B): 9-bit grid indices, explicit signs, `db = d·(1 + 2s)`.
    BlockIq3S = IQ3_S {
        /// Scale.
        d: Half,
        /// Low 8 bits of the grid indices.
        qs: [u8; 64],
        /// 9th bits of the grid indices.
        qh: [u8; 8],
        /// Sign bits, one byte per 8 values.
        signs: [u8; 32],
        /// 4-bit sub-block scales.
        scales: [u8; 4],
    }
);

block!(
    /// `block_iq1_s` (50 B): per 32 values a `u16` of four 3-bit index extensions, a 3-bit scale and the
    /// delta sign in bit 15.
    BlockIq1S = IQ1_S {
        /// Scale.
        d: Half,
        /// Low 8 bits of the grid indices.
        qs: [u8; 32],
        /// Index extensions, scale and delta sign.
        qh: [U16; 8],
    }
);

block!(
    /// `block_iq1_m` (56 B): the fp16 scale is spread over the top nibbles of the four `u16` scale words.
    BlockIq1M = IQ1_M {
        /// Low 8 bits of the grid indices.
        qs: [u8; 32],
        /// Index extensions and delta signs, one nibble per 8 values.
        qh: [u8; 16],
        /// 3-bit sub-scales and the nibbles of `d` (C: `uint8_t scales[8]`, read as `u16`).
        scales: [U16; 4],
    }
);

block!(
    /// `block_tq1_0` (54 B): 5 trits per byte in `qs`, 4 per byte in `qh`; `w = d·t`, `t ∈ {-1, 0, 1}`.
    BlockTq1_0 = TQ1_0 {
        /// Trits of values 0..240.
        qs: [u8; 48],
        /// Trits of values 240..256.
        qh: [u8; 4],
        /// Scale.
        d: Half,
    }
);

block!(
    /// `block_tq2_0` (66 B): 2-bit `t + 1`; `w = d·t`.
    BlockTq2_0 = TQ2_0 {
        /// 2-bit quants.
        qs: [u8; 64],
        /// Scale.
        d: Half,
    }
);

block!(
    /// `block_mxfp4` (17 B): E8M0 scale, E2M1 nibbles ordered as Q4_0's.
    BlockMxfp4 = MXFP4 {
        /// Shared exponent.
        e: u8,
        /// Nibble indices into `kvalues_mxfp4`.
        qs: [u8; 16],
    }
);

block!(
    /// `block_nvfp4` (36 B, 64 values): four UE4M3 scales, one per 16 values.
    BlockNvfp4 = NVFP4 {
        /// Sub-block scales.
        d: [u8; 4],
        /// Nibbles: byte `8s + j` holds elements `16s + j` (low) and `16s + 8 + j` (high).
        qs: [u8; 32],
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn iq4_xs_scales_round_trip() {
        let mut b = BlockIq4Xs::new_zeroed();
        let ls: [u8; 8] = [0, 63, 32, 17, 48, 5, 60, 33];
        for (ib, &l) in ls.iter().enumerate() {
            b.put_scale(ib, l);
        }
        for (ib, &l) in ls.iter().enumerate() {
            assert_eq!(b.scale(ib), l, "sub-block {ib}");
        }
    }
}
