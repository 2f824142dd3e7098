//! The Llama Q/K RoPE row permutation, written once for both directions and any element size.
//!
//! llama.cpp `conversion/llama.py` `LlamaModel.permute` (at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! `W.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(W.shape)`, i.e. within each head
//! of `hd` rows, output row `2*i + j` is input row `j*(hd/2) + i` (HF rotate-half -> llama.cpp adjacent pairs).
//! Applies to rows only; a 1-D bias is a tensor of one-element rows.

/// Permute `data` (`n_rows` rows of `row_len` elements) from HF to GGUF layout, grouping rows into `n_head`
/// heads. `n_rows` must be a multiple of `2 * n_head`.
pub fn rope_permute<T: Copy + Default>(data: &[T], n_rows: usize, n_head: usize, row_len: usize) -> Vec<T> {
    permute_impl(data, n_rows, n_head, row_len, false)
}

/// The inverse of [`rope_permute`] (GGUF -> HF).
pub fn rope_unpermute<T: Copy + Default>(data: &[T], n_rows: usize, n_head: usize, row_len: usize) -> Vec<T> {
    permute_impl(data, n_rows, n_head, row_len, true)
}

fn permute_impl<T: Copy + Default>(
    data: &[T],
    n_rows: usize,
    n_head: usize,
    row_bytes: usize,
    inverse: bool,
) -> Vec<T> {
    assert_eq!(data.len(), n_rows * row_bytes, "permute: buffer is not n_rows rows");
    assert!(
        n_head > 0 && n_rows.is_multiple_of(2 * n_head),
        "permute: {n_rows} rows do not split into {n_head} heads of pairs"
    );
    let hd = n_rows / n_head;
    let half = hd / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let gguf_row = h * hd + 2 * i + j;
                let hf_row = h * hd + j * half + i;
                let (dst, src) = if inverse { (hf_row, gguf_row) } else { (gguf_row, hf_row) };
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn matches_the_numpy_reshape_swapaxes() {
        // 2 heads of 4 rows, one byte per row: per head [0,1,2,3] -> [0,2,1,3].
        let rows: Vec<u8> = (0..8).collect();
        assert_eq!(rope_permute(&rows, 8, 2, 1), [0, 2, 1, 3, 4, 6, 5, 7]);
        // 1 head of 6 rows: [0..6] -> [0,3,1,4,2,5].
        let rows: Vec<u8> = (0..6).collect();
        assert_eq!(rope_permute(&rows, 6, 1, 1), [0, 3, 1, 4, 2, 5]);
    }

    proptest! {
        #[test]
        fn unpermute_inverts_permute(n_head in 1usize..5, half in 1usize..5, row_bytes in 1usize..9, seed in any::<u64>()) {
            let n_rows = n_head * half * 2;
            let data: Vec<u8> = (0..n_rows * row_bytes).map(|i| (i as u64).wrapping_mul(seed | 1) as u8).collect();
            let p = rope_permute(&data, n_rows, n_head, row_bytes);
            prop_assert_eq!(rope_unpermute(&p, n_rows, n_head, row_bytes), data);
        }
    }
}
