//! The value grid of one GGML block whose codes stand for values one at a time: element `j` of a block is a
//! code `l` and stands for `d_s · level(l) − m_s`, with `(d_s, m_s)` the factors of its sub-block `s` as
//! the block's header stores them (after the fp16 and 6-bit packing). GPTQ over GGML types
//! ([`super::ggml`]) lets the type's own quantizer choose a block's header, then codes the block's elements one
//! by one against that grid while it feeds each element's error forward.
//!
//! Invariant: [`Grid::nearest`] is the code the type's quantizer itself gives a value once its header is fixed
//! (the K-quants recompute every code from the packed scales exactly so), so when no error is fed forward the
//! bytes are the quantizer's own. Sub-blocks whose scale is zero keep the quantizer's code.

use crate::blocks::kvalues::KVALUES_IQ4NL;
use crate::blocks::scalar::{nearest_int, Half};
use crate::blocks::{get_scale_min_k4, unpack_q3_k_scales, K_SCALE_SIZE};
use crate::codecs::best_index_int8;
use crate::GgmlType;

/// How codes map to levels.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Levels {
    /// `level(l) = l + offset`, `l` in `0..=max`.
    Uniform { offset: i32, max: i32 },
    /// Signed 8-bit codes: `level(l) = l as i8`.
    Signed,
    /// `level(l) = KVALUES_IQ4NL[l]`.
    Iq4,
}

/// The grid layout of one type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    ty: GgmlType,
    /// Values per block and bytes per block.
    pub block: usize,
    pub bytes: usize,
    /// Values per sub-block sharing `(d, m)`.
    pub sub: usize,
    levels: Levels,
}

fn half(b: &[u8], at: usize) -> f32 {
    Half::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

fn k4_scales(b: &[u8]) -> &[u8; K_SCALE_SIZE] {
    b[4..16].try_into().expect("12 scale bytes")
}

/// Nibble `j` of a 32-value nibble array at `at` (element `j < 16` low nibble of byte `j`, else the high one).
fn nib32(b: &[u8], at: usize, j: usize) -> u8 {
    (b[at + j % 16] >> (4 * (j / 16))) & 0xF
}

fn set_nib32(b: &mut [u8], at: usize, j: usize, v: u8) {
    let (i, sh) = (at + j % 16, 4 * (j / 16));
    b[i] = (b[i] & !(0xF << sh)) | ((v & 0xF) << sh);
}

/// 2-bit field of element `j` in a Q2_K/Q3_K `qs` array at `at` (byte `32h + l` holds `128h + l + 32k`).
fn two_bit_pos(at: usize, j: usize) -> (usize, u32) {
    let (h, r) = (j / 128, j % 128);
    (at + 32 * h + r % 32, 2 * (r / 32) as u32)
}

/// Q4_K/Q5_K nibble of element `j` in `qs` at `at` (byte `32p + l` holds `64p + l` low, `64p + 32 + l` high).
fn k_nib_pos(at: usize, j: usize) -> (usize, u32) {
    let (p, r) = (j / 64, j % 64);
    (at + 32 * p + r % 32, 4 * (r / 32) as u32)
}

/// Q6_K: element `j` as (ql byte, its shift, qh byte, its shift).
fn q6_pos(j: usize) -> (usize, u32, usize, u32) {
    let (h, r) = (j / 128, j % 128);
    let (k, i) = (r / 32, r % 32);
    (64 * h + i + 32 * (k % 2), 4 * (k / 2) as u32, 128 + 32 * h + i, 2 * k as u32)
}

fn get_bits(b: &[u8], (at, sh): (usize, u32), mask: u8) -> u8 {
    (b[at] >> sh) & mask
}

fn set_bits(b: &mut [u8], (at, sh): (usize, u32), mask: u8, v: u8) {
    b[at] = (b[at] & !(mask << sh)) | ((v & mask) << sh);
}

/// Q5_0/Q5_1 fifth bit of element `j`: bit `j` of the little-endian `qh` word at `at`.
fn qh_bit(b: &[u8], at: usize, j: usize) -> u8 {
    (b[at + j / 8] >> (j % 8)) & 1
}

fn set_qh_bit(b: &mut [u8], at: usize, j: usize, v: u8) {
    let (i, sh) = (at + j / 8, j % 8);
    b[i] = (b[i] & !(1 << sh)) | ((v & 1) << sh);
}

impl Grid {
    /// The grid of `ty`, when its codes stand for values one at a time.
    pub fn of(ty: GgmlType) -> Option<Grid> {
        use GgmlType as T;
        let (sub, levels) = match ty {
            T::Q4_0 => (32, Levels::Uniform { offset: -8, max: 15 }),
            T::Q4_1 => (32, Levels::Uniform { offset: 0, max: 15 }),
            T::Q5_0 => (32, Levels::Uniform { offset: -16, max: 31 }),
            T::Q5_1 => (32, Levels::Uniform { offset: 0, max: 31 }),
            T::Q8_0 => (32, Levels::Signed),
            T::IQ4_NL | T::IQ4_XS => (32, Levels::Iq4),
            T::Q2_K => (16, Levels::Uniform { offset: 0, max: 3 }),
            T::Q3_K => (16, Levels::Uniform { offset: -4, max: 7 }),
            T::Q4_K => (32, Levels::Uniform { offset: 0, max: 15 }),
            T::Q5_K => (32, Levels::Uniform { offset: 0, max: 31 }),
            T::Q6_K => (16, Levels::Uniform { offset: -32, max: 63 }),
            _ => return None,
        };
        Some(Grid { ty, block: ty.block_size() as usize, bytes: ty.type_size() as usize, sub, levels })
    }

    /// The value code `l` stands for, before the sub-block factors.
    pub fn level(&self, l: u8) -> f32 {
        match self.levels {
            Levels::Uniform { offset, .. } => (i32::from(l) + offset) as f32,
            Levels::Signed => f32::from(l as i8),
            Levels::Iq4 => f32::from(KVALUES_IQ4NL[usize::from(l & 0xF)]),
        }
    }

    /// `(d, m)` of the sub-block holding element `j`: element value `d · level(l) − m`.
    pub fn factors(&self, b: &[u8], j: usize) -> (f32, f32) {
        use GgmlType as T;
        let s = j / self.sub;
        match self.ty {
            T::Q4_0 | T::Q5_0 | T::Q8_0 | T::IQ4_NL => (half(b, 0), 0.0),
            T::Q4_1 | T::Q5_1 => (half(b, 0), -half(b, 2)),
            T::IQ4_XS => {
                let (lo, hi) = (b[4 + s / 2] >> (4 * (s % 2)), (u16::from_le_bytes([b[2], b[3]]) >> (2 * s)) & 3);
                let ls = i32::from(lo & 0xF) | (i32::from(hi) << 4);
                (half(b, 0) * (ls - 32) as f32, 0.0)
            }
            T::Q2_K => (half(b, 80) * f32::from(b[s] & 0xF), half(b, 82) * f32::from(b[s] >> 4)),
            T::Q3_K => {
                let sc = unpack_q3_k_scales(b[96..108].try_into().expect("12 scale bytes"));
                (half(b, 108) * f32::from(sc[s] as i8 - 32), 0.0)
            }
            T::Q4_K | T::Q5_K => {
                let (sc, m) = get_scale_min_k4(s, k4_scales(b));
                (half(b, 0) * f32::from(sc), half(b, 2) * f32::from(m))
            }
            T::Q6_K => (half(b, 208) * f32::from(b[192 + s] as i8), 0.0),
            _ => unreachable!("no grid for {:?}", self.ty),
        }
    }

    /// The code stored for element `j`.
    pub fn code(&self, b: &[u8], j: usize) -> u8 {
        use GgmlType as T;
        match self.ty {
            T::Q4_0 | T::IQ4_NL => nib32(b, 2, j),
            T::Q4_1 => nib32(b, 4, j),
            T::Q5_0 => nib32(b, 6, j) | (qh_bit(b, 2, j) << 4),
            T::Q5_1 => nib32(b, 8, j) | (qh_bit(b, 4, j) << 4),
            T::Q8_0 => b[2 + j],
            T::IQ4_XS => nib32(b, 8 + 16 * (j / 32), j % 32),
            T::Q2_K => get_bits(b, two_bit_pos(16, j), 3),
            T::Q3_K => get_bits(b, two_bit_pos(32, j), 3) | (((b[j % 32] >> (j / 32)) & 1) << 2),
            T::Q4_K => get_bits(b, k_nib_pos(16, j), 0xF),
            T::Q5_K => {
                let (at, sh) = k_nib_pos(48, j);
                get_bits(b, (at, sh), 0xF) | (((b[16 + j % 32] >> (2 * (j / 64) + (j % 64) / 32)) & 1) << 4)
            }
            T::Q6_K => {
                let (l, ls, h, hs) = q6_pos(j);
                get_bits(b, (l, ls), 0xF) | (get_bits(b, (h, hs), 3) << 4)
            }
            _ => unreachable!("no grid for {:?}", self.ty),
        }
    }

    /// Store code `l` for element `j`.
    pub fn set_code(&self, b: &mut [u8], j: usize, l: u8) {
        use GgmlType as T;
        match self.ty {
            T::Q4_0 | T::IQ4_NL => set_nib32(b, 2, j, l),
            T::Q4_1 => set_nib32(b, 4, j, l),
            T::Q5_0 => {
                set_nib32(b, 6, j, l);
                set_qh_bit(b, 2, j, l >> 4);
            }
            T::Q5_1 => {
                set_nib32(b, 8, j, l);
                set_qh_bit(b, 4, j, l >> 4);
            }
            T::Q8_0 => b[2 + j] = l,
            T::IQ4_XS => set_nib32(b, 8 + 16 * (j / 32), j % 32, l),
            T::Q2_K => set_bits(b, two_bit_pos(16, j), 3, l),
            T::Q3_K => {
                set_bits(b, two_bit_pos(32, j), 3, l & 3);
                set_bits(b, (j % 32, (j / 32) as u32), 1, l >> 2);
            }
            T::Q4_K => set_bits(b, k_nib_pos(16, j), 0xF, l),
            T::Q5_K => {
                set_bits(b, k_nib_pos(48, j), 0xF, l);
                set_bits(b, (16 + j % 32, (2 * (j / 64) + (j % 64) / 32) as u32), 1, l >> 4);
            }
            T::Q6_K => {
                let (lo, ls, h, hs) = q6_pos(j);
                set_bits(b, (lo, ls), 0xF, l);
                set_bits(b, (h, hs), 3, l >> 4);
            }
            _ => unreachable!("no grid for {:?}", self.ty),
        }
    }

    /// The code of value `x` on a sub-block with factors `(d, m)`, as the type's quantizer rounds once its
    /// header is fixed; `None` when `d` is zero (every code stands for `−m`).
    pub fn nearest(&self, d: f32, m: f32, x: f32) -> Option<u8> {
        if d == 0.0 {
            return None;
        }
        Some(match self.levels {
            Levels::Uniform { offset, max } => (nearest_int((x + m) / d) - offset).clamp(0, max) as u8,
            Levels::Signed => nearest_int(x / d).clamp(-128, 127) as i8 as u8,
            Levels::Iq4 => best_index_int8(&KVALUES_IQ4NL, x / d) as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::quantize_rows;
    use crate::dequant::dequantize_row;

    const TYPES: [GgmlType; 11] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
    ];

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.45
            })
            .collect()
    }

    /// `factors`, `level` and `code` reproduce the type's own dequantization, for every element.
    #[test]
    fn factors_and_codes_reproduce_dequantization() {
        for ty in TYPES.into_iter().chain([GgmlType::Q6_K]) {
            let g = Grid::of(ty).unwrap();
            let x = values(2 * 256, 7);
            let mut bytes = vec![0u8; ty.row_size(x.len() as u64).unwrap() as usize];
            quantize_rows(ty, &x, x.len(), None, &mut bytes).unwrap();
            let mut deq = vec![0.0f32; x.len()];
            dequantize_row(ty, &bytes, &mut deq).unwrap();
            for (i, want) in deq.iter().enumerate() {
                let blk = &bytes[(i / g.block) * g.bytes..][..g.bytes];
                let j = i % g.block;
                let (d, m) = g.factors(blk, j);
                let got = d * g.level(g.code(blk, j)) - m;
                assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "{ty:?} element {i}: {got} vs {want}");
            }
        }
    }

    /// `set_code` writes exactly the field `code` reads, leaving every other bit alone.
    #[test]
    fn set_code_writes_one_field() {
        for ty in TYPES.into_iter().chain([GgmlType::Q6_K]) {
            let g = Grid::of(ty).unwrap();
            let x = values(256, 3);
            let mut bytes = vec![0u8; ty.row_size(256).unwrap() as usize];
            quantize_rows(ty, &x, 256, None, &mut bytes).unwrap();
            let blk = &mut bytes[..g.bytes];
            for j in 0..g.block {
                let before = blk.to_vec();
                let old = g.code(blk, j);
                let new = old ^ 1;
                g.set_code(blk, j, new);
                assert_eq!(g.code(blk, j), new, "{ty:?} {j}");
                g.set_code(blk, j, old);
                assert_eq!(blk.to_vec(), before, "{ty:?} {j}");
            }
        }
    }

    /// For the K-quants, re-coding every element with `nearest` gives back the quantizer's own bytes.
    #[test]
    fn k_quant_codes_are_the_quantizers_own() {
        for ty in [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
            let g = Grid::of(ty).unwrap();
            let x = values(4 * 256, 11);
            let imatrix: Vec<f32> = values(256, 5).iter().map(|v| v * v + 0.1).collect();
            for qw in [None, Some(&imatrix[..])] {
                let mut bytes = vec![0u8; ty.row_size(256).unwrap() as usize];
                for row in x.chunks(256) {
                    quantize_rows(ty, row, 256, qw, &mut bytes).unwrap();
                    let mut recoded = bytes.clone();
                    for (j, &v) in row.iter().enumerate() {
                        let (d, m) = g.factors(&recoded, j);
                        if let Some(l) = g.nearest(d, m, v) {
                            g.set_code(&mut recoded, j, l);
                        }
                    }
                    assert_eq!(recoded, bytes, "{ty:?} imatrix {}", qw.is_some());
                }
            }
        }
    }
}
