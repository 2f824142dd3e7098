//! The k-quant super-blocks `Q2_K`..`Q6_K` and the activation type `Q8_K` (256 values), with the packing
//! of their 6-bit sub-block scales, which the quantizers write and the dequantizers read.

use zerocopy::byteorder::little_endian::{F32, I16};

use super::{block, Half};

/// Values per super-block of the k-quants and IQ4_XS (`QK_K`).
pub const QK_K: usize = 256;
/// Bytes of the packed 6-bit scales of Q3_K/Q4_K/Q5_K (`K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

block!(
    /// `block_q2_K` (84 B): 16 sub-blocks of 16; `w = d·(sc&15)·q - dmin·(sc>>4)`.
    BlockQ2K = Q2_K {
        /// Low nibble: scale, high nibble: min, per sub-block.
        scales: [u8; 16],
        /// 2-bit quants: byte `32h + l` holds elements `128h + l + 32k` at bit `2k`.
        qs: [u8; 64],
        /// Super-block scale of the scales.
        d: Half,
        /// Super-block scale of the mins.
        dmin: Half,
    }
);

block!(
    /// `block_q3_K` (110 B): 16 sub-blocks of 16; `w = d·(sc-32)·(q2 - (hmask bit ? 0 : 4))`.
    BlockQ3K = Q3_K {
        /// High bit of each quant: element `j` is bit `j / 32` of `hmask[j % 32]`.
        hmask: [u8; 32],
        /// Low 2 bits of each quant (packed as Q2_K's).
        qs: [u8; 64],
        /// 16 packed 6-bit scales ([`put_q3_k_scale`], [`unpack_q3_k_scales`]).
        scales: [u8; K_SCALE_SIZE],
        /// Super-block scale.
        d: Half,
    }
);

block!(
    /// `block_q4_K` (144 B): 8 sub-blocks of 32; `w = d·sc·q - dmin·m`.
    BlockQ4K = Q4_K {
        /// Super-block scale of the scales.
        d: Half,
        /// Super-block scale of the mins.
        dmin: Half,
        /// 8 packed 6-bit scales and 8 packed 6-bit mins ([`put_scale_min_k4`], [`get_scale_min_k4`]).
        scales: [u8; K_SCALE_SIZE],
        /// Nibbles: byte `32p + l` holds elements `64p + l` (low) and `64p + 32 + l` (high).
        qs: [u8; 128],
    }
);

block!(
    /// `block_q5_K` (176 B): as Q4_K plus a 5th bit per quant.
    BlockQ5K = Q5_K {
        /// Super-block scale of the scales.
        d: Half,
        /// Super-block scale of the mins.
        dmin: Half,
        /// 8 packed 6-bit scales and 8 packed 6-bit mins.
        scales: [u8; K_SCALE_SIZE],
        /// 5th bits: bit `2p` (`2p + 1`) of `qh[l]` for the low (high) nibble of `qs[32p + l]`.
        qh: [u8; 32],
        /// Low nibbles (packed as Q4_K's).
        qs: [u8; 128],
    }
);

block!(
    /// `block_q6_K` (210 B): 16 sub-blocks of 16; `w = d·scales[k]·(q - 32)`.
    BlockQ6K = Q6_K {
        /// Low 4 bits.
        ql: [u8; 128],
        /// High 2 bits.
        qh: [u8; 64],
        /// Signed 8-bit sub-block scales.
        scales: [i8; 16],
        /// Super-block scale.
        d: Half,
    }
);

block!(
    /// `block_q8_K` (292 B): `w = d·qs[i]` with an `f32` scale.
    BlockQ8K = Q8_K {
        /// Scale.
        d: F32,
        /// Signed quants.
        qs: [i8; 256],
        /// Sums of groups of 16 quants (only used by dot products).
        bsums: [I16; 16],
    }
);

/// `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Store the 6-bit scale `ls` and min `lm` of sub-block `j` (the packing [`get_scale_min_k4`] reads) into
/// scales that start zeroed.
#[inline]
pub fn put_scale_min_k4(q: &mut [u8; K_SCALE_SIZE], j: usize, ls: u8, lm: u8) {
    if j < 4 {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        q[j - 4] |= (ls >> 4) << 6;
        q[j] |= (lm >> 4) << 6;
    }
}

/// Store the 6-bit value `l ∈ [0, 63]` of Q3_K sub-block `j` into scales that start zeroed: low nibble in
/// byte `j % 8` (high half for `j >= 8`), high 2 bits in byte `8 + j % 4` at bit `2·(j / 4)`.
#[inline]
pub fn put_q3_k_scale(scales: &mut [u8; K_SCALE_SIZE], j: usize, l: u8) {
    if j < 8 {
        scales[j] = l & 0xF;
    } else {
        scales[j - 8] |= (l & 0xF) << 4;
    }
    scales[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
}

/// The 16 6-bit values of Q3_K's packed scales (the stored scale is `value - 32`), unpacked four at a time
/// through `u32` masks as ggml's `dequantize_row_q3_K` does.
#[inline(always)]
pub fn unpack_q3_k_scales(scales: &[u8; K_SCALE_SIZE]) -> [u8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let word = |i: usize| u32::from_le_bytes([scales[i], scales[i + 1], scales[i + 2], scales[i + 3]]);
    let (a0, a1, tmp) = (word(0), word(4), word(8));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0u8; 16];
    for (s, a) in out.chunks_exact_mut(4).zip(aux) {
        s.copy_from_slice(&a.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_k4_packing_round_trips() {
        let ls: [u8; 8] = [1, 17, 33, 63, 5, 40, 50, 63];
        let lm: [u8; 8] = [62, 0, 48, 31, 63, 16, 2, 35];
        let mut q = [0u8; K_SCALE_SIZE];
        for j in 0..8 {
            put_scale_min_k4(&mut q, j, ls[j], lm[j]);
        }
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &q), (ls[j], lm[j]), "sub-block {j}");
        }
    }

    #[test]
    fn q3_k_scale_packing_round_trips() {
        let l: [u8; 16] = [0, 1, 2, 31, 32, 33, 63, 62, 10, 20, 30, 40, 50, 60, 5, 15];
        let mut s = [0u8; K_SCALE_SIZE];
        for (j, &v) in l.iter().enumerate() {
            put_q3_k_scale(&mut s, j, v);
        }
        assert_eq!(unpack_q3_k_scales(&s), l);
    }
}
