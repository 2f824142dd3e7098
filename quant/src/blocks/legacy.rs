//! The linear blocks with one scale: `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`, `Q8_1` (32 values) and the
//! low-bit `Q1_0` (128 values), `Q2_0` (64 values).
//!
//! Nibble order of the 32-value types: byte `j` of `qs` holds element `j` (low nibble) and `j + 16` (high);
//! for Q5 the fifth bit of element `j` is bit `j` of the little-endian `u32` `qh`.

use super::{block, Half};

/// Values per block of the legacy quants and IQ4_NL (`QK4_0` = `QK8_0` = `QK4_NL` = 32).
pub const QK32: usize = 32;

block!(
    /// `block_q4_0` (18 B): `w = d·(q - 8)`.
    BlockQ4_0 = Q4_0 {
        /// Scale.
        d: Half,
        /// Nibbles.
        qs: [u8; 16],
    }
);

block!(
    /// `block_q4_1` (20 B): `w = d·q + m`.
    BlockQ4_1 = Q4_1 {
        /// Scale.
        d: Half,
        /// Offset.
        m: Half,
        /// Nibbles.
        qs: [u8; 16],
    }
);

block!(
    /// `block_q5_0` (22 B): `w = d·(q - 16)`.
    BlockQ5_0 = Q5_0 {
        /// Scale.
        d: Half,
        /// High bits (a little-endian `u32`).
        qh: [u8; 4],
        /// Low nibbles.
        qs: [u8; 16],
    }
);

block!(
    /// `block_q5_1` (24 B): `w = d·q + m`.
    BlockQ5_1 = Q5_1 {
        /// Scale.
        d: Half,
        /// Offset.
        m: Half,
        /// High bits (a little-endian `u32`).
        qh: [u8; 4],
        /// Low nibbles.
        qs: [u8; 16],
    }
);

block!(
    /// `block_q8_0` (34 B): `w = d·qs[i]`.
    BlockQ8_0 = Q8_0 {
        /// Scale.
        d: Half,
        /// Signed quants.
        qs: [i8; 32],
    }
);

block!(
    /// `block_q8_1` (36 B): `w = d·qs[i]`; `s = d·Σqs` is only used by dot products.
    BlockQ8_1 = Q8_1 {
        /// Scale.
        d: Half,
        /// `d` times the sum of the quants.
        s: Half,
        /// Signed quants.
        qs: [i8; 32],
    }
);

block!(
    /// `block_q1_0` (18 B, 128 values): element `j` is bit `j % 8` of `qs[j / 8]`, set → `d`, clear → `-d`.
    BlockQ1_0 = Q1_0 {
        /// Scale.
        d: Half,
        /// Sign bits.
        qs: [u8; 16],
    }
);

block!(
    /// `block_q2_0` (18 B, 64 values): element `j` is bits `2·(j % 4)..` of `qs[j / 4]`, `w = d·(q - 1)`.
    BlockQ2_0 = Q2_0 {
        /// Scale.
        d: Half,
        /// 2-bit quants.
        qs: [u8; 16],
    }
);
