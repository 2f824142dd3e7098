//! Block layouts of the quantized types, as in `ggml/src/ggml-common.h` of llama.cpp b9928
//! (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-common.h>
//!
//! Each struct is `#[repr(C)]` with the C field order, and a compile-time assertion pins its size to
//! the C `static_assert`. Quantizers fill a struct on the stack and [`Block::store`] writes it into
//! the (unaligned) output bytes field by field, `ggml_half`/`uint16_t` little-endian, so no unsafe
//! casts are needed.

use std::mem::size_of;

/// Values per super-block of the k-quants and IQ4_XS (`QK_K`).
pub(crate) const QK_K: usize = 256;
/// Values per block of the legacy quants and IQ4_NL (`QK4_0` = `QK8_0` = `QK4_NL` = 32).
pub(crate) const QK32: usize = 32;
/// Bytes of the packed 6-bit scales of Q3_K/Q4_K/Q5_K (`K_SCALE_SIZE`).
pub(crate) const K_SCALE_SIZE: usize = 12;

/// A quantized block that can be written into its on-disk bytes.
pub(crate) trait Block {
    /// Values per block.
    const QK: usize;
    /// Bytes per block (`sizeof(block_*)`).
    const BYTES: usize;
    /// Write the block into `out`, which is exactly [`Block::BYTES`] long.
    fn store(&self, out: &mut [u8]);
}

/// Copies fields into consecutive byte ranges of `out`.
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Writer { out, pos: 0 }
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn i8s(&mut self, v: &[i8]) -> &mut Self {
        for (o, &x) in self.out[self.pos..self.pos + v.len()].iter_mut().zip(v) {
            *o = x as u8;
        }
        self.pos += v.len();
        self
    }
    fn done(&self) {
        debug_assert_eq!(self.pos, self.out.len());
    }
}

/// Types with an all-zero constant, for building [`Block`] structs field by field.
trait Zero {
    const ZERO: Self;
}

impl Zero for u16 {
    const ZERO: Self = 0;
}

impl<const N: usize> Zero for [u8; N] {
    const ZERO: Self = [0; N];
}

impl<const N: usize> Zero for [i8; N] {
    const ZERO: Self = [0; N];
}

macro_rules! block {
    ($(#[$doc:meta])* $name:ident, qk = $qk:expr, bytes = $bytes:literal,
     { $($(#[$fdoc:meta])* $field:ident : $fty:ty => $kind:ident),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) struct $name {
            $($(#[$fdoc])* pub $field: $fty,)*
        }

        impl $name {
            /// The all-zero block (what C's `memset(&y, 0, sizeof y)` gives).
            #[allow(dead_code)] // not every quantizer starts from a zeroed block
            pub const ZERO: Self = Self { $($field: <$fty as Zero>::ZERO,)* };
        }

        const _: () = assert!(size_of::<$name>() == $bytes);

        impl Block for $name {
            const QK: usize = $qk;
            const BYTES: usize = $bytes;
            fn store(&self, out: &mut [u8]) {
                let mut w = Writer::new(out);
                $( block!(@put w, self.$field, $kind); )*
                w.done();
            }
        }
    };
    (@put $w:ident, $v:expr, half) => { $w.u16($v); };
    (@put $w:ident, $v:expr, bytes) => { $w.bytes(&$v); };
    (@put $w:ident, $v:expr, i8s) => { $w.i8s(&$v); };
}

block!(
    /// `block_q8_0` (34 B): `w = d·qs[i]`.
    BlockQ8_0, qk = QK32, bytes = 34, {
        /// Scale (fp16 bits).
        d: u16 => half,
        /// Signed quants.
        qs: [i8; 32] => i8s,
    }
);

block!(
    /// `block_q4_0` (18 B): `w = d·(q - 8)`; byte j holds element j (low nibble) and j+16 (high).
    BlockQ4_0, qk = QK32, bytes = 18, {
        /// Scale (fp16 bits).
        d: u16 => half,
        /// Nibbles.
        qs: [u8; 16] => bytes,
    }
);

block!(
    /// `block_q4_1` (20 B): `w = d·q + m`.
    BlockQ4_1, qk = QK32, bytes = 20, {
        /// Scale (fp16 bits).
        d: u16 => half,
        /// Offset (fp16 bits).
        m: u16 => half,
        /// Nibbles.
        qs: [u8; 16] => bytes,
    }
);

block!(
    /// `block_q5_0` (22 B): `w = d·(q - 16)`; bit j of the LE u32 `qh` is the 5th bit of element j.
    BlockQ5_0, qk = QK32, bytes = 22, {
        /// Scale (fp16 bits).
        d: u16 => half,
        /// High bits.
        qh: [u8; 4] => bytes,
        /// Low nibbles.
        qs: [u8; 16] => bytes,
    }
);

block!(
    /// `block_q5_1` (24 B): `w = d·q + m`.
    BlockQ5_1, qk = QK32, bytes = 24, {
        /// Scale (fp16 bits).
        d: u16 => half,
        /// Offset (fp16 bits).
        m: u16 => half,
        /// High bits.
        qh: [u8; 4] => bytes,
        /// Low nibbles.
        qs: [u8; 16] => bytes,
    }
);

block!(
    /// `block_q2_K` (84 B): 16 sub-blocks of 16; `w = d·(sc&15)·q - dmin·(sc>>4)`.
    BlockQ2K, qk = QK_K, bytes = 84, {
        /// Low nibble: scale, high nibble: min, per sub-block.
        scales: [u8; 16] => bytes,
        /// 2-bit quants.
        qs: [u8; 64] => bytes,
        /// Super-block scale of the scales (fp16 bits).
        d: u16 => half,
        /// Super-block scale of the mins (fp16 bits).
        dmin: u16 => half,
    }
);

block!(
    /// `block_q3_K` (110 B): 16 sub-blocks of 16; `w = d·(sc-32)·(q2 - (hmask bit ? 0 : 4))`.
    BlockQ3K, qk = QK_K, bytes = 110, {
        /// High bit of each quant.
        hmask: [u8; 32] => bytes,
        /// Low 2 bits of each quant.
        qs: [u8; 64] => bytes,
        /// 16 packed 6-bit scales.
        scales: [u8; K_SCALE_SIZE] => bytes,
        /// Super-block scale (fp16 bits).
        d: u16 => half,
    }
);

block!(
    /// `block_q4_K` (144 B): 8 sub-blocks of 32; `w = d·sc·q - dmin·m`.
    BlockQ4K, qk = QK_K, bytes = 144, {
        /// Super-block scale of the scales (fp16 bits).
        d: u16 => half,
        /// Super-block scale of the mins (fp16 bits).
        dmin: u16 => half,
        /// 8 packed 6-bit scales and 8 packed 6-bit mins.
        scales: [u8; K_SCALE_SIZE] => bytes,
        /// Nibbles.
        qs: [u8; 128] => bytes,
    }
);

block!(
    /// `block_q5_K` (176 B): as Q4_K plus a 5th bit per quant.
    BlockQ5K, qk = QK_K, bytes = 176, {
        /// Super-block scale of the scales (fp16 bits).
        d: u16 => half,
        /// Super-block scale of the mins (fp16 bits).
        dmin: u16 => half,
        /// 8 packed 6-bit scales and 8 packed 6-bit mins.
        scales: [u8; K_SCALE_SIZE] => bytes,
        /// 5th bits.
        qh: [u8; 32] => bytes,
        /// Low nibbles.
        qs: [u8; 128] => bytes,
    }
);

block!(
    /// `block_q6_K` (210 B): 16 sub-blocks of 16; `w = d·scales[k]·(q - 32)`.
    BlockQ6K, qk = QK_K, bytes = 210, {
        /// Low 4 bits.
        ql: [u8; 128] => bytes,
        /// High 2 bits.
        qh: [u8; 64] => bytes,
        /// Signed 8-bit sub-block scales.
        scales: [i8; 16] => i8s,
        /// Super-block scale (fp16 bits).
        d: u16 => half,
    }
);

block!(
    /// `block_iq4_nl` (18 B): `w = d·kvalues_iq4nl[q]`.
    BlockIq4Nl, qk = QK32, bytes = 18, {
        /// Scale (fp16 bits).
        d: u16 => half,
        /// Nibble indices into the codebook.
        qs: [u8; 16] => bytes,
    }
);

block!(
    /// `block_iq4_xs` (136 B): 8 sub-blocks of 32 with 6-bit scales `ls - 32`.
    BlockIq4Xs, qk = QK_K, bytes = 136, {
        /// Super-block scale (fp16 bits).
        d: u16 => half,
        /// High 2 bits of the 8 sub-block scales.
        scales_h: u16 => half,
        /// Low 4 bits of the 8 sub-block scales.
        scales_l: [u8; 4] => bytes,
        /// Nibble indices into the codebook.
        qs: [u8; 128] => bytes,
    }
);

/// Quantize `src` (a whole number of blocks) block by block into `dst`, passing each block its slice
/// of the importance matrix when there is one.
pub(crate) fn for_each_block<B: Block>(
    src: &[f32],
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
    mut f: impl FnMut(&[f32], Option<&[f32]>) -> B,
) {
    debug_assert_eq!(src.len() / B::QK * B::BYTES, dst.len());
    for (ib, (x, out)) in src.chunks_exact(B::QK).zip(dst.chunks_exact_mut(B::BYTES)).enumerate() {
        let qw = imatrix.map(|w| &w[ib * B::QK..(ib + 1) * B::QK]);
        f(x, qw).store(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GgmlType;

    #[test]
    fn sizes_match_the_type_table() {
        fn check<B: Block>(ty: GgmlType) {
            assert_eq!(B::BYTES as u64, ty.type_size(), "{ty:?}");
            assert_eq!(B::QK as u64, ty.block_size(), "{ty:?}");
        }
        check::<BlockQ8_0>(GgmlType::Q8_0);
        check::<BlockQ4_0>(GgmlType::Q4_0);
        check::<BlockQ4_1>(GgmlType::Q4_1);
        check::<BlockQ5_0>(GgmlType::Q5_0);
        check::<BlockQ5_1>(GgmlType::Q5_1);
        check::<BlockQ2K>(GgmlType::Q2_K);
        check::<BlockQ3K>(GgmlType::Q3_K);
        check::<BlockQ4K>(GgmlType::Q4_K);
        check::<BlockQ5K>(GgmlType::Q5_K);
        check::<BlockQ6K>(GgmlType::Q6_K);
        check::<BlockIq4Nl>(GgmlType::IQ4_NL);
        check::<BlockIq4Xs>(GgmlType::IQ4_XS);
    }

    #[test]
    fn store_writes_fields_in_order_little_endian() {
        let b = BlockQ2K { scales: [1; 16], qs: [2; 64], d: 0x1234, dmin: 0xABCD };
        let mut out = [0u8; 84];
        b.store(&mut out);
        assert_eq!(&out[..16], &[1; 16]);
        assert_eq!(&out[16..80], &[2; 64]);
        assert_eq!(&out[80..], &[0x34, 0x12, 0xCD, 0xAB]);

        let b = BlockQ6K { ql: [0; 128], qh: [0; 64], scales: [-1; 16], d: 0x3C00 };
        let mut out = [0u8; 210];
        b.store(&mut out);
        assert_eq!(&out[192..208], &[0xFF; 16]);
        assert_eq!(&out[208..], &[0x00, 0x3C]);
    }
}
