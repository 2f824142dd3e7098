//! The 32-value legacy blocks: `Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`, `Q8_1`.
//!
//! Ports of `dequantize_row_q{4_0,4_1,5_0,5_1,8_0}` in `ggml/src/ggml-quants.c`. Element `j` of a block is
//! the low nibble of `qs[j]`, element `j + 16` the high nibble; for Q5 the fifth bit of element `j` is bit
//! `j` of the little-endian `u32` `qh` (layouts in [`crate::blocks`]). ggml has no `dequantize_row_q8_1`;
//! Q8_1 uses Q8_0's formula.

use super::for_blocks;
use crate::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// `block_q4_0` → `(q - 8) * d`.
pub(super) fn q4_0(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ4_0, y: &mut [f32; 32]| {
        let d = b.d.to_f32();
        for j in 0..16 {
            let q = b.qs[j];
            y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    });
}

/// `block_q4_1` → `q * d + m`.
pub(super) fn q4_1(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ4_1, y: &mut [f32; 32]| {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        for j in 0..16 {
            let q = b.qs[j];
            y[j] = (q & 0x0F) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    });
}

/// The 5-bit quants of elements `j` and `j + 16` of a Q5 block: the nibbles of `qs[j]` and bits `j`,
/// `j + 16` of `qh`.
#[inline(always)]
fn q5_pair(q: u8, qh: u32, j: usize) -> (u32, u32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    ((q & 0x0F) as u32 | h0, (q >> 4) as u32 | h1)
}

/// `block_q5_0` → `(q - 16) * d`.
pub(super) fn q5_0(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ5_0, y: &mut [f32; 32]| {
        let d = b.d.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..16 {
            let (q0, q1) = q5_pair(b.qs[j], qh, j);
            y[j] = (q0 as i32 - 16) as f32 * d;
            y[j + 16] = (q1 as i32 - 16) as f32 * d;
        }
    });
}

/// `block_q5_1` → `q * d + m`.
pub(super) fn q5_1(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ5_1, y: &mut [f32; 32]| {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..16 {
            let (q0, q1) = q5_pair(b.qs[j], qh, j);
            y[j] = q0 as f32 * d + m;
            y[j + 16] = q1 as f32 * d + m;
        }
    });
}

/// `block_q8_0` → `qs * d`.
pub(super) fn q8_0(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ8_0, y: &mut [f32; 32]| {
        let d = b.d.to_f32();
        for (v, &q) in y.iter_mut().zip(&b.qs) {
            *v = q as f32 * d;
        }
    });
}

/// `block_q8_1` → `qs * d` (`s = d * sum(qs)` is not needed).
pub(super) fn q8_1(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ8_1, y: &mut [f32; 32]| {
        let d = b.d.to_f32();
        for (v, &q) in y.iter_mut().zip(&b.qs) {
            *v = q as f32 * d;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: [u8; 2] = [0x00, 0x3c]; // f16 1.0
    const HALF: [u8; 2] = [0x00, 0x38]; // f16 0.5

    #[test]
    fn q4_0_nibble_order() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&HALF);
        b[2] = 0xF0; // element 0 = 0 → -8, element 16 = 15 → 7
        let mut y = [0f32; 32];
        q4_0(&b, &mut y);
        assert_eq!((y[0], y[16], y[1]), (-4.0, 3.5, -4.0));
    }

    #[test]
    fn q5_fifth_bits() {
        let mut b = [0u8; 22];
        b[..2].copy_from_slice(&ONE);
        b[2..6].copy_from_slice(&((1u32 << 3) | (1 << 20)).to_le_bytes()); // element 3 and element 20
        let mut y = [0f32; 32];
        q5_0(&b, &mut y);
        assert_eq!((y[3], y[20], y[0]), (0.0, 0.0, -16.0));

        let mut b = [0u8; 24];
        b[..2].copy_from_slice(&ONE);
        b[2..4].copy_from_slice(&HALF);
        b[4..8].copy_from_slice(&(1u32 << 31).to_le_bytes());
        b[8 + 15] = 0xF0;
        q5_1(&b, &mut y);
        assert_eq!((y[31], y[15], y[0]), (31.5, 0.5, 0.5));
    }

    #[test]
    fn q8_1_ignores_the_sum() {
        let mut b = [0u8; 36];
        b[..2].copy_from_slice(&HALF);
        b[2..4].copy_from_slice(&[0xff, 0x7b]); // s = 65504, unused
        b[4] = 0x81; // -127
        let mut y = [0f32; 32];
        q8_1(&b, &mut y);
        assert_eq!((y[0], y[1]), (-63.5, 0.0));
    }
}
