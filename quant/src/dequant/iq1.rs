//! The 1-bit-ish lattice i-quants `IQ1_S` and `IQ1_M` (256 values, groups of 8 from `iq1s_grid`).
//!
//! Ports of `dequantize_row_iq1_{s,m}` in `ggml/src/ggml-quants.c`: each value is
//! `dl * (grid[j] + delta)` with grid values in {-1, 0, 1}, `delta = ±IQ1S_DELTA` and `dl = d * (2s + 1)`
//! for a 3-bit sub-scale `s` (layouts in [`crate::blocks`]).

use super::for_blocks;
use super::tables::{IQ1S_DELTA, IQ1S_GRID};
use crate::blocks::{BlockIq1M, BlockIq1S, Half, QK_K};

/// `y[j] = dl * (grid[j] + delta)`; grid bytes are `int8_t`.
#[inline(always)]
fn group8(y: &mut [f32], dl: f32, grid: u64, delta: f32) {
    for (v, g) in y.iter_mut().zip(grid.to_le_bytes()) {
        *v = dl * (g as i8 as f32 + delta);
    }
}

/// `block_iq1_s`.
pub(super) fn iq1_s(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockIq1S, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        let qs: &[u8] = &b.qs;
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let qh = b.qh[ib].get() as usize;
            let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
            let delta = if qh & 0x8000 != 0 { -IQ1S_DELTA } else { IQ1S_DELTA };
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let idx = qs[4 * ib + l] as usize | (((qh >> (3 * l)) & 7) << 8);
                group8(y, dl, IQ1S_GRID[idx], delta);
            }
        }
    });
}

/// `block_iq1_m`.
pub(super) fn iq1_m(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockIq1M, y: &mut [f32; QK_K]| {
        let sc = b.scales.map(|s| s.get());
        let d_bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = Half::from_bits(d_bits).to_f32();
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let s = sc[ib / 2] as usize;
            let shift = 6 * (ib % 2);
            let dl1 = d * (2 * ((s >> shift) & 0x7) + 1) as f32;
            let dl2 = d * (2 * ((s >> (shift + 3)) & 0x7) + 1) as f32;
            let q = &b.qs[4 * ib..4 * ib + 4];
            let (h0, h1) = (b.qh[2 * ib] as usize, b.qh[2 * ib + 1] as usize);
            let idx = [
                q[0] as usize | ((h0 << 8) & 0x700),
                q[1] as usize | ((h0 << 4) & 0x700),
                q[2] as usize | ((h1 << 8) & 0x700),
                q[3] as usize | ((h1 << 4) & 0x700),
            ];
            let delta = |h: usize, bit: usize| if h & bit != 0 { -IQ1S_DELTA } else { IQ1S_DELTA };
            let deltas = [delta(h0, 0x08), delta(h0, 0x80), delta(h1, 0x08), delta(h1, 0x80)];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let dl = if l < 2 { dl1 } else { dl2 };
                group8(y, dl, IQ1S_GRID[idx[l]], deltas[l]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iq1_m_reassembles_the_scale() {
        // d = 1.0 = 0x3c00: nibbles 0,0,c,3 go to the top of scale words 0..3.
        let mut b = [0u8; 56];
        let words: [u16; 4] = [0x0000, 0x0000, 0xc000, 0x3000 | 0b001_010];
        for (i, w) in words.iter().enumerate() {
            b[48 + 2 * i..50 + 2 * i].copy_from_slice(&w.to_le_bytes());
        }
        b[32 + 12] = 0x08; // sub-block 6, group 0: negative delta
        let mut y = [0f32; 256];
        iq1_m(&b, &mut y);
        // Sub-block 6 = word 3, low 6 bits: dl1 = 2*2+1 = 5, dl2 = 2*1+1 = 3; grid[0] is all -1.
        assert_eq!(y[6 * 32], 5.0 * (-1.0 - 0.125));
        assert_eq!(y[6 * 32 + 16], 3.0 * (-1.0 + 0.125));
        assert_eq!(y[0], -1.0 + 0.125);
    }
}
