//! The non-linear 4-bit i-quants `IQ4_NL` (32 values) and `IQ4_XS` (256 values).
//!
//! Ports of `dequantize_row_iq4_{nl,xs}` in `ggml/src/ggml-quants.c`: each nibble selects one of the 16
//! levels of `kvalues_iq4nl`; low nibble of `qs[j]` = element `j`, high nibble = element `j + 16`.
//! IQ4_XS has 6-bit sub-scales `ls` ([`crate::blocks::BlockIq4Xs::scale`]), `dl = d * (ls - 32)`.

use super::for_blocks;
use super::tables::KVALUES_IQ4NL;
use crate::blocks::{BlockIq4Nl, BlockIq4Xs, QK32, QK_K};

/// `block_iq4_nl`: value = `d * kvalues[q]`.
pub(super) fn iq4_nl(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockIq4Nl, y: &mut [f32; QK32]| {
        let d = b.d.to_f32();
        for j in 0..16 {
            let q = b.qs[j];
            y[j] = d * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
            y[j + 16] = d * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
        }
    });
}

/// `block_iq4_xs`: value = `d * (ls - 32) * kvalues[q]` per 32-value sub-block.
pub(super) fn iq4_xs(src: &[u8], dst: &mut [f32]) {
    for_blocks(src, dst, |b: &BlockIq4Xs, y: &mut [f32; QK_K]| {
        let d = b.d.to_f32();
        for (ib, (y, qs)) in y.chunks_exact_mut(32).zip(b.qs.chunks_exact(16)).enumerate() {
            let dl = d * (b.scale(ib) as i32 - 32) as f32;
            let (lo, hi) = y.split_at_mut(16);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(qs) {
                *lo = dl * KVALUES_IQ4NL[(q & 0xf) as usize] as f32;
                *hi = dl * KVALUES_IQ4NL[(q >> 4) as usize] as f32;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iq4_xs_sub_scales() {
        let mut b = [0u8; 136];
        b[..2].copy_from_slice(&[0x00, 0x3c]);
        b[2..4].copy_from_slice(&(0b10u16 << 14).to_le_bytes()); // sub-block 7: high bits 2
        b[4 + 3] = 0x50; // sub-block 7: low bits 5 → ls = 37 → dl = 5
        b[8 + 16 * 7] = 0xf0; // element 224 → level 0 (-127), element 240 → level 15 (113)
        let mut y = [0f32; 256];
        iq4_xs(&b, &mut y);
        assert_eq!((y[224], y[240]), (5.0 * -127.0, 5.0 * 113.0));
        assert_eq!(y[0], -32.0 * -127.0);
    }
}
