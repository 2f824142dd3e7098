//! The 2-bit lattice i-quants `IQ2_XXS`, `IQ2_XS`, `IQ2_S` (256 values, groups of 8 from a grid).
//!
//! Ports of `dequantize_row_iq2_{xxs,xs,s}` in `ggml/src/ggml-quants.c`. Each group of 8 values is
//! `db * grid[j] * (±1)`, with `db = d * (0.5 + s) * 0.25` for a 4-bit sub-scale `s`, the grid entry chosen
//! by an index and the signs by a 7-bit index into `ksigns_iq2xs` (IQ2_XXS, IQ2_XS) or stored directly
//! (IQ2_S); layouts in [`crate::blocks`].

use super::tables::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, KMASK_IQ2XS, KSIGNS_IQ2XS};
use super::{for_blocks, sign};
use crate::blocks::{BlockIq2S, BlockIq2Xs, BlockIq2Xxs, QK_K};

/// One group of 8: `y[j] = db * grid[j] * (signs bit j ? -1 : 1)`.
#[inline(always)]
fn group8(y: &mut [f32], db: f32, grid: u64, signs: u8) {
    for ((v, g), m) in y.iter_mut().zip(grid.to_le_bytes()).zip(KMASK_IQ2XS) {
        *v = db * g as f32 * sign(signs & m != 0);
    }
}

/// The scales `d * (0.5 + s) * 0.25` of the two 16-value halves of a 32-value sub-block of IQ2_XS/IQ2_S,
/// from the nibbles of `sc`.
#[inline(always)]
fn sub_scales(d: f32, sc: u8) -> [f32; 2] {
    [d * (0.5 + (sc & 0xf) as f32) * 0.25, d * (0.5 + (sc >> 4) as f32) * 0.25]
}

/// `block_iq2_xxs`: per 32 values two `u32`: four 8-bit grid indices, then four 7-bit sign indices and a
/// 4-bit scale in the top bits.
pub(super) fn iq2_xxs(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockIq2Xxs, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        for (y, g) in y.chunks_exact_mut(32).zip(&b.qs) {
            let aux1 = u32::from_le_bytes([g[4], g[5], g[6], g[7]]);
            let db = d * (0.5 + (aux1 >> 28) as f32) * 0.25;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let grid = IQ2XXS_GRID[g[l] as usize];
                let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                group8(y, db, grid, signs);
            }
        }
    });
}

/// `block_iq2_xs`: each `u16` holds a 9-bit grid index and a 7-bit sign index; two 4-bit scales per 32.
pub(super) fn iq2_xs(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockIq2Xs, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let db = sub_scales(d, b.scales[ib32]);
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let q = b.qs[4 * ib32 + l].get();
                let grid = IQ2XS_GRID[(q & 511) as usize];
                let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
                group8(y, db[l / 2], grid, signs);
            }
        }
    });
}

/// `block_iq2_s`: 10-bit grid indices (8 bits in `qs`, 2 in `qh`), explicit sign bytes.
pub(super) fn iq2_s(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockIq2S, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        for (ib32, y) in y.chunks_exact_mut(32).enumerate() {
            let db = sub_scales(d, b.scales[ib32]);
            let h = b.qh[ib32] as usize;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let idx = b.qs[4 * ib32 + l] as usize | ((h << (8 - 2 * l)) & 0x300);
                group8(y, db[l / 2], IQ2S_GRID[idx], b.signs[4 * ib32 + l]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iq2_xxs_first_group() {
        // d = 1, grid index 1 (0x080808080808082b: 8,8,...,43), sign index 1 (ksigns 129: elements 0
        // and 7 negative), scale nibble 3 → db = (0.5 + 3) * 0.25 = 0.875.
        let mut b = [0u8; 66];
        b[..2].copy_from_slice(&[0x00, 0x3c]);
        b[2] = 1;
        b[6..10].copy_from_slice(&(1u32 | 3 << 28).to_le_bytes());
        let mut y = [0f32; 256];
        iq2_xxs(&b, &mut y);
        assert_eq!(y[0], -0.875 * 43.0);
        assert_eq!(y[1], 0.875 * 8.0);
        assert_eq!(y[7], -0.875 * 8.0);
        assert_eq!(y[8], 0.875 * 8.0); // group 1: index 0, sign index 0
    }

    #[test]
    fn iq2_s_high_index_bits() {
        // Group l = 3 of the first 32 takes bits 6..7 of qh[0] as index bits 8..9.
        let mut b = [0u8; 82];
        b[..2].copy_from_slice(&[0x00, 0x3c]);
        b[2 + 3] = 0xff;
        b[66] = 0b1100_0000;
        b[74] = 0x10; // db for l >= 2: (0.5 + 1) * 0.25
        let mut y = [0f32; 256];
        iq2_s(&b, &mut y);
        let g = IQ2S_GRID[1023].to_le_bytes();
        for j in 0..8 {
            assert_eq!(y[24 + j], 0.375 * g[j] as f32);
        }
    }
}
