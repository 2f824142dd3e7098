//! `dequantize_row` rejects malformed buffers with typed errors and never panics.

use proptest::prelude::*;
use quantforge_quant::dequant::{can_dequantize, dequantize_row, dequantize_row_par};
use quantforge_quant::{GgmlType, QuantError};

#[test]
fn destination_not_a_whole_number_of_blocks() {
    let mut dst = [0f32; 33];
    let err = dequantize_row(GgmlType::Q4_0, &[0u8; 36], &mut dst).unwrap_err();
    assert!(matches!(err, QuantError::RowLength { ty: GgmlType::Q4_0, n: 33, block: 32 }), "{err:?}");
}

#[test]
fn source_of_the_wrong_size() {
    let mut dst = [0f32; 256];
    for len in [0, 143, 145, 288] {
        let err = dequantize_row(GgmlType::Q4_K, &vec![0u8; len], &mut dst).unwrap_err();
        assert!(matches!(err, QuantError::BufferSize { expected: 144, got, .. } if got == len), "{len}: {err:?}");
    }
    let err = dequantize_row_par(GgmlType::F16, &[0u8; 3], &mut [0f32; 2]).unwrap_err();
    assert!(matches!(err, QuantError::BufferSize { expected: 4, got: 3, .. }), "{err:?}");
}

#[test]
fn empty_row_is_fine() {
    for &ty in GgmlType::ALL {
        dequantize_row(ty, &[], &mut []).unwrap();
    }
}

#[test]
fn unsupported_is_typed() {
    // Every type ggml defines is supported today; the error path is exercised through the contract that
    // `can_dequantize` and `dequantize_row` agree.
    for &ty in GgmlType::ALL {
        let block = ty.block_size() as usize;
        let bytes = ty.type_size() as usize;
        let res = dequantize_row(ty, &vec![0u8; bytes], &mut vec![0f32; block]);
        assert_eq!(res.is_ok(), can_dequantize(ty), "{ty}");
        if let Err(e) = res {
            assert!(matches!(e, QuantError::Unsupported { .. }), "{ty}: {e:?}");
        }
    }
}

proptest! {
    /// Arbitrary bytes and lengths: either Ok (when the lengths fit) or a typed error; never a panic.
    #[test]
    fn arbitrary_buffers_never_panic(type_index in 0usize..GgmlType::ALL.len(), src in proptest::collection::vec(any::<u8>(), 0..700), n in 0usize..600) {
        let ty = GgmlType::ALL[type_index];
        let mut dst = vec![0f32; n];
        let fits = (n as u64).is_multiple_of(ty.block_size()) && (n as u64 / ty.block_size()) * ty.type_size() == src.len() as u64;
        let res = dequantize_row(ty, &src, &mut dst);
        prop_assert_eq!(res.is_ok(), fits);
        if fits {
            let mut par = vec![0f32; n];
            dequantize_row_par(ty, &src, &mut par).unwrap();
            prop_assert!(dst.iter().zip(&par).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
