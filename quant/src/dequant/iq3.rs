//! The 3-bit lattice i-quants `IQ3_XXS` and `IQ3_S` (256 values, groups of 4 from a grid).
//!
//! Ports of `dequantize_row_iq3_{xxs,s}` in `ggml/src/ggml-quants.c` (layouts in [`crate::blocks`]):
//! IQ3_XXS has per 32 values one `u32` of four 7-bit sign indices and a 4-bit scale,
//! `db = d * (0.5 + s) * 0.5`; IQ3_S has 9-bit grid indices, explicit signs and `db = d * (1 + 2 * s)`.

use super::tables::{IQ3S_GRID, IQ3XXS_GRID, KMASK_IQ2XS, KSIGNS_IQ2XS};
use super::{for_blocks, sign};
use crate::blocks::{BlockIq3S, BlockIq3Xxs, QK_K};

/// Eight values from two grid entries: `y[j] = db * grid[j] * (signs bit j ? -1 : 1)`.
#[inline(always)]
fn group4x2(y: &mut [f32], db: f32, grid1: u32, grid2: u32, signs: u8) {
    let (g1, g2) = (grid1.to_le_bytes(), grid2.to_le_bytes());
    for j in 0..4 {
        y[j] = db * g1[j] as f32 * sign(signs & KMASK_IQ2XS[j] != 0);
        y[j + 4] = db * g2[j] as f32 * sign(signs & KMASK_IQ2XS[j + 4] != 0);
    }
}

/// `block_iq3_xxs`.
pub(super) fn iq3_xxs(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockIq3Xxs, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        for ((y, aux32), q) in y.chunks_exact_mut(32).zip(&b.scales_and_signs).zip(b.qs.chunks_exact(8)) {
            let aux32 = aux32.get();
            let db = d * (0.5 + (aux32 >> 28) as f32) * 0.5;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let signs = KSIGNS_IQ2XS[((aux32 >> (7 * l)) & 127) as usize];
                let grid1 = IQ3XXS_GRID[q[2 * l] as usize];
                let grid2 = IQ3XXS_GRID[q[2 * l + 1] as usize];
                group4x2(y, db, grid1, grid2, signs);
            }
        }
    });
}

/// `block_iq3_s`.
pub(super) fn iq3_s(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockIq3S, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        // ggml walks pairs of 32-value sub-blocks; sub-block k uses scale nibble k % 2 of scales[k / 2],
        // qh[k], the 8 index bytes qs[8k..] and the 4 sign bytes signs[4k..].
        for (k, y) in y.chunks_exact_mut(32).enumerate() {
            let sc = b.scales[k / 2];
            let s = if k % 2 == 0 { sc & 0xf } else { sc >> 4 };
            let db = d * (1 + 2 * s as i32) as f32;
            let h = b.qh[k] as usize;
            let q = &b.qs[8 * k..8 * k + 8];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let grid1 = IQ3S_GRID[q[2 * l] as usize | ((h << (8 - 2 * l)) & 256)];
                let grid2 = IQ3S_GRID[q[2 * l + 1] as usize | ((h << (7 - 2 * l)) & 256)];
                group4x2(y, db, grid1, grid2, b.signs[4 * k + l]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iq3_s_second_sub_block_uses_high_nibble_and_next_qh() {
        let mut b = [0u8; 110];
        b[..2].copy_from_slice(&[0x00, 0x3c]);
        b[106] = 0x20; // sub-block 1: s = 2 → db = 5
        b[66 + 1] = 0b0000_0010; // qh[1] bit 1 → high index bit of the second entry of group 0
        b[2 + 8 + 1] = 0xff; // sub-block 1, group 0, second grid index low byte
        b[74 + 4] = 0b1000_0000; // sub-block 1, group 0: element 7 negative
        let mut y = [0f32; 256];
        iq3_s(&b, &mut y);
        let g = IQ3S_GRID[511].to_le_bytes();
        assert_eq!(y[32 + 4], 5.0 * g[0] as f32);
        assert_eq!(y[32 + 7], -5.0 * g[3] as f32);
        assert_eq!(y[0], IQ3S_GRID[0].to_le_bytes()[0] as f32);
    }
}
