//! The 1- and 2-bit linear blocks `Q1_0` (128 values) and `Q2_0` (64 values).
//!
//! Ports of `dequantize_row_q1_0` / `dequantize_row_q2_0` in `ggml/src/ggml-quants.c`: element `j` is bit
//! `j % 8` of `qs[j / 8]` (Q1_0: set → `d`, clear → `-d`), or bits `2*(j % 4)..` of `qs[j / 4]` (Q2_0:
//! `(q - 1) * d`, q ∈ 0..=3).

use super::for_blocks;
use crate::blocks::{BlockQ1_0, BlockQ2_0};

/// `block_q1_0`.
pub(super) fn q1_0(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ1_0, y: &mut [f32; 128]| {
        let d = b.d.to_f32();
        let neg_d = -d;
        for (j, v) in y.iter_mut().enumerate() {
            let bit = (b.qs[j / 8] >> (j % 8)) & 1;
            *v = if bit != 0 { d } else { neg_d };
        }
    });
}

/// `block_q2_0`.
pub(super) fn q2_0(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockQ2_0, y: &mut [f32; 64]| {
        let d = b.d.to_f32();
        for (j, v) in y.iter_mut().enumerate() {
            let q = (b.qs[j / 4] >> ((j % 4) * 2)) & 3;
            *v = (q as i32 - 1) as f32 * d;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q1_0_signs() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&[0x00, 0x40]); // 2.0
        b[2] = 0b0000_0101;
        b[17] = 0x80;
        let mut y = [0f32; 128];
        q1_0(&b, &mut y);
        assert_eq!((y[0], y[1], y[2], y[8], y[127]), (2.0, -2.0, 2.0, -2.0, 2.0));
    }

    #[test]
    fn q2_0_levels() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&[0x00, 0x38]); // 0.5
        b[2] = 0b11_10_01_00;
        b[17] = 0b10_00_00_00;
        let mut y = [0f32; 64];
        q2_0(&b, &mut y);
        assert_eq!(&y[..4], &[-0.5, 0.0, 0.5, 1.0]);
        assert_eq!((y[62], y[63]), (-0.5, 0.5));
    }
}
