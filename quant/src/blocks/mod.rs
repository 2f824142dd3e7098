//! The block layouts of the quantized ggml types, one definition per type, used by both the quantizers
//! ([`crate::codecs`]) and the dequantizers ([`crate::dequant`]). Ported from `ggml/src/ggml-common.h`
//! of llama.cpp b9928 (commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-common.h>
//!
//! Invariants:
//! - Each block is a `#[repr(C)]` struct with the C field order whose fields are all byte arrays or
//!   little-endian wrappers of them (alignment 1, no padding, every bit pattern valid). `zerocopy`'s
//!   derives check this at compile time, so a row of bytes is viewed as `&[Block]` and a block is
//!   written out as its bytes without copies or `unsafe`.
//! - Sizes come from one place, the type table of `quantforge_formats::GgmlType`: every struct carries a
//!   compile-time assertion that its size is the table's `type_size`, and [`Block::QK`] is the table's
//!   `block_size`.
//! - Where C declares a `uint16_t`/`uint32_t` array that the kernels only read byte-wise (or the reverse),
//!   the struct splits or groups the bytes as the kernels use them; the doc comment names the C field.
//!
//! The packing helpers that both directions need (the 6-bit scales of Q3_K/Q4_K/Q5_K and IQ4_XS) live
//! next to their block, and the scalar encodings of block fields (fp16, bf16, `nearest_int`) in
//! [`scalar`].

mod iquants;
mod kquants;
pub(crate) mod kvalues;
mod legacy;
pub mod scalar;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::GgmlType;

pub use iquants::{
    BlockIq1M, BlockIq1S, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockIq4Nl, BlockIq4Xs,
    BlockMxfp4, BlockNvfp4, BlockTq1_0, BlockTq2_0,
};
pub use kquants::{
    get_scale_min_k4, put_q3_k_scale, put_scale_min_k4, unpack_q3_k_scales, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K,
    BlockQ6K, BlockQ8K, K_SCALE_SIZE, QK_K,
};
pub use legacy::{BlockQ1_0, BlockQ2_0, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK32};
pub use scalar::Half;

/// One quantized block of a ggml type, as it lies in a tensor's bytes.
pub trait Block: FromBytes + IntoBytes + Immutable + KnownLayout + Unaligned + Copy {
    /// The ggml type whose block this is.
    const TYPE: GgmlType;
    /// Values per block (`ggml_blck_size`, from the type table).
    const QK: usize = Self::TYPE.block_size() as usize;
    /// Bytes per block (`ggml_type_size`, from the type table; equal to `size_of::<Self>()`).
    const BYTES: usize = Self::TYPE.type_size() as usize;
}

/// `bytes` as blocks, or `None` when it is not a whole number of blocks.
#[inline(always)]
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    <[B]>::ref_from_bytes(bytes).ok()
}

/// `bytes` as mutable blocks, or `None` when it is not a whole number of blocks.
#[inline(always)]
pub fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> Option<&mut [B]> {
    <[B]>::mut_from_bytes(bytes).ok()
}

/// Defines a block struct from its C fields and ties its size to the type table.
macro_rules! block {
    ($(#[$doc:meta])* $name:ident = $ty:ident {
        $($(#[$fdoc:meta])* $field:ident : $fty:ty),* $(,)?
    }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq,
            zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout, zerocopy::Unaligned,
        )]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $fty,)*
        }

        impl $crate::blocks::Block for $name {
            const TYPE: $crate::GgmlType = $crate::GgmlType::$ty;
        }

        const _: () = assert!(std::mem::size_of::<$name>() as u64 == $crate::GgmlType::$ty.type_size());
    };
}
pub(crate) use block;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every quantized type of the table has exactly one layout here, of the table's size.
    #[test]
    fn every_quantized_type_has_one_layout() {
        fn entry<B: Block>() -> (GgmlType, usize, usize) {
            (B::TYPE, B::BYTES, std::mem::size_of::<B>())
        }
        let layouts = [
            entry::<BlockQ4_0>(),
            entry::<BlockQ4_1>(),
            entry::<BlockQ5_0>(),
            entry::<BlockQ5_1>(),
            entry::<BlockQ8_0>(),
            entry::<BlockQ8_1>(),
            entry::<BlockQ1_0>(),
            entry::<BlockQ2_0>(),
            entry::<BlockQ2K>(),
            entry::<BlockQ3K>(),
            entry::<BlockQ4K>(),
            entry::<BlockQ5K>(),
            entry::<BlockQ6K>(),
            entry::<BlockQ8K>(),
            entry::<BlockIq2Xxs>(),
            entry::<BlockIq2Xs>(),
            entry::<BlockIq2S>(),
            entry::<BlockIq3Xxs>(),
            entry::<BlockIq3S>(),
            entry::<BlockIq1S>(),
            entry::<BlockIq1M>(),
            entry::<BlockIq4Nl>(),
            entry::<BlockIq4Xs>(),
            entry::<BlockTq1_0>(),
            entry::<BlockTq2_0>(),
            entry::<BlockMxfp4>(),
            entry::<BlockNvfp4>(),
        ];
        for (ty, bytes, size) in layouts {
            assert_eq!(bytes, size, "{ty}");
        }
        let mut covered: Vec<GgmlType> = layouts.iter().map(|l| l.0).collect();
        covered.sort();
        let mut quantized: Vec<GgmlType> = GgmlType::ALL.iter().copied().filter(|t| t.is_quantized()).collect();
        quantized.sort();
        assert_eq!(covered, quantized);
    }

    #[test]
    fn fields_lie_at_their_c_offsets_little_endian() {
        let b = BlockQ2K { scales: [1; 16], qs: [2; 64], d: Half::from_bits(0x1234), dmin: Half::from_bits(0xABCD) };
        let out = b.as_bytes();
        assert_eq!(&out[..16], &[1; 16]);
        assert_eq!(&out[16..80], &[2; 64]);
        assert_eq!(&out[80..], &[0x34, 0x12, 0xCD, 0xAB]);

        let b = BlockQ6K { ql: [0; 128], qh: [0; 64], scales: [-1; 16], d: Half::from_bits(0x3C00) };
        let out = b.as_bytes();
        assert_eq!(&out[192..208], &[0xFF; 16]);
        assert_eq!(&out[208..], &[0x00, 0x3C]);
    }

    #[test]
    fn rows_view_as_blocks_only_when_whole() {
        let bytes = [0u8; 3 * 18];
        assert_eq!(as_blocks::<BlockQ4_0>(&bytes).map(<[_]>::len), Some(3));
        assert!(as_blocks::<BlockQ4_0>(&bytes[..17]).is_none());
        assert_eq!(as_blocks::<BlockQ4_0>(&[]).map(<[_]>::len), Some(0));
    }
}
