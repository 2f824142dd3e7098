//! Bit packing of integer codes into 32-bit words, as every format here stores them.
//!
//! Invariant: a run of `b`-bit fields is one continuous little-endian bit stream: field `i` occupies stream
//! bits `[b·i, b·i + b)`, word `w` holds stream bits `[32·w, 32·w + 32)`, and the tail of the last word is
//! zero. For 2, 4 and 8 bits this is "field `j` of word `w` is value `w·(32/b) + j` at bit `b·j`"; for 3 bits
//! it is AutoGPTQ's 10 + 1 + 10 + 1 + 10 split of 32 values over 3 words. AWQ's GEMM layout permutes each
//! run of 8 values by [`AWQ_ORDER`] before packing; GPTQ v1 stores `z − 1` in zero fields; compressed-tensors
//! stores signed values offset by `2^(b−1)`, which is the unsigned code itself.
//! Sources: AutoGPTQ `qlinear_cuda_old.py` `pack`, AutoAWQ `packing_utils.py`, compressed-tensors
//! `pack_quantized.py` `pack_to_int32`.

/// AWQ GEMM: field `i` of a word holds logical column `8c + AWQ_ORDER[i]`.
pub const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// Words needed for `n` fields of `bits` bits.
pub fn n_words(n: usize, bits: u8) -> usize {
    (n * bits as usize).div_ceil(32)
}

/// `values` (each below `2^bits`) packed as one bit stream into `n_words(values.len(), bits)` words.
pub fn pack_bits(values: &[u8], bits: u8) -> Vec<u32> {
    let b = bits as usize;
    let mask = field_mask(bits);
    let mut words = vec![0u32; n_words(values.len(), bits)];
    for (i, &v) in values.iter().enumerate() {
        let (bit, v) = (i * b, u64::from(u32::from(v) & mask));
        let (w, off) = (bit / 32, bit % 32);
        let wide = v << off;
        words[w] |= wide as u32;
        if off + b > 32 {
            words[w + 1] |= (wide >> 32) as u32;
        }
    }
    words
}

/// The first `n` fields of `bits` bits of a packed stream (missing words read as zero).
pub fn unpack_bits(words: &[u32], bits: u8, n: usize) -> Vec<u8> {
    let b = bits as usize;
    let mask = u64::from(field_mask(bits));
    (0..n)
        .map(|i| {
            let (w, off) = ((i * b) / 32, (i * b) % 32);
            let lo = u64::from(words.get(w).copied().unwrap_or(0));
            let hi = u64::from(words.get(w + 1).copied().unwrap_or(0));
            (((lo | (hi << 32)) >> off) & mask) as u8
        })
        .collect()
}

/// `2^bits − 1`.
pub fn field_mask(bits: u8) -> u32 {
    (1u32 << bits) - 1
}

/// AWQ GEMM packing of one run of 4-bit values (a multiple of 8 long): each 8 are interleaved by
/// [`AWQ_ORDER`], then packed.
pub fn pack_awq(values: &[u8]) -> Vec<u32> {
    let mut order = Vec::with_capacity(values.len());
    for chunk in values.chunks(8) {
        order.extend(AWQ_ORDER.iter().map(|&j| chunk.get(j).copied().unwrap_or(0)));
    }
    pack_bits(&order, 4)
}

/// The inverse of [`pack_awq`]: `n` logical values.
pub fn unpack_awq(words: &[u32], n: usize) -> Vec<u8> {
    let stored = unpack_bits(words, 4, words.len() * 8);
    let mut out = vec![0u8; words.len() * 8];
    for (c, chunk) in stored.chunks_exact(8).enumerate() {
        for (i, &v) in chunk.iter().enumerate() {
            out[8 * c + AWQ_ORDER[i]] = v;
        }
    }
    out.truncate(n);
    out
}

/// The field GPTQ v1 stores for zero point `z`: `(z − 1) mod 2^bits` (`z = 0` wraps to all ones, which
/// readers take back as `2^bits`, so a v1 writer must never be given `z = 0`).
pub fn gptq_v1_field(z: u8, bits: u8) -> u8 {
    (u32::from(z).wrapping_sub(1) & field_mask(bits)) as u8
}

/// The zero point a GPTQ v1 reader takes from a field, `(field & mask) + 1` (vLLM, ExLlamaV2, AutoGPTQ's
/// CUDA kernels).
pub fn gptq_v1_zero(field: u8, bits: u8) -> u16 {
    (u32::from(field) & field_mask(bits)) as u16 + 1
}

/// The stored (offset) field of a signed compressed-tensors value `v ∈ [−2^(b−1), 2^(b−1))`.
pub fn ct_field(v: i8, bits: u8) -> u8 {
    (i16::from(v) + (1i16 << (bits - 1))) as u8
}

/// Words as little-endian bytes (safetensors I32 data).
pub fn words_to_le_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Little-endian 4-byte words (the data of an I32 tensor); a trailing partial word is ignored.
pub fn le_bytes_to_words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym_zero_words(bits: u8, z: u8, v1: bool, n: usize) -> Vec<u32> {
        let field = if v1 { gptq_v1_field(z, bits) } else { z };
        pack_bits(&vec![field; n], bits)
    }

    #[test]
    fn symmetric_zero_words_v1_and_v2() {
        assert_eq!(sym_zero_words(2, 2, true, 16), [0x5555_5555]);
        assert_eq!(sym_zero_words(2, 2, false, 16), [0xAAAA_AAAA]);
        assert_eq!(sym_zero_words(4, 8, true, 8), [0x7777_7777]);
        assert_eq!(0x7777_7777u32 as i32, 2004318071);
        assert_eq!(sym_zero_words(4, 8, false, 8), [0x8888_8888]);
        assert_eq!(0x8888_8888u32 as i32, -2004318072);
        assert_eq!(sym_zero_words(8, 128, true, 4), [0x7F7F_7F7F]);
        assert_eq!(sym_zero_words(8, 128, false, 4), [0x8080_8080]);
        assert_eq!(sym_zero_words(3, 4, true, 32), [0xDB6D_B6DB, 0xB6DB_6DB6, 0x6DB6_DB6D]);
        assert_eq!(sym_zero_words(3, 4, false, 32), [0x2492_4924, 0x4924_9249, 0x9249_2492]);
    }

    #[test]
    fn four_bit_qweight_words() {
        // q[k][n] = (3k + 5n) % 16, in = 16, out = 8: qweight[r][n] packs inputs 8r..8r+8 of column n.
        let words = |r: usize| -> Vec<u32> {
            (0..8)
                .map(|n| pack_bits(&(0..8).map(|j| ((3 * (8 * r + j) + 5 * n) % 16) as u8).collect::<Vec<_>>(), 4)[0])
                .collect()
        };
        assert_eq!(
            words(0),
            [0x52FC9630, 0xA741EB85, 0xFC9630DA, 0x41EB852F, 0x9630DA74, 0xEB852FC9, 0x30DA741E, 0x852FC963]
        );
        assert_eq!(
            words(1),
            [0xDA741EB8, 0x2FC9630D, 0x741EB852, 0xC9630DA7, 0x1EB852FC, 0x630DA741, 0xB852FC96, 0x0DA741EB]
        );
    }

    #[test]
    fn eight_two_and_three_bit_qweight_words() {
        // q = (17k + 100n) % 256, in = 8, out = 2: rows are words of 4 inputs, columns outputs.
        let q = |k: usize, n: usize| ((17 * k + 100 * n) % 256) as u8;
        let w = |r: usize, n: usize| pack_bits(&(0..4).map(|j| q(4 * r + j, n)).collect::<Vec<_>>(), 8)[0];
        assert_eq!([w(0, 0), w(0, 1)], [0x33221100, 0x97867564]);
        assert_eq!([w(1, 0), w(1, 1)], [0x77665544, 0xDBCAB9A8]);
        let two: Vec<u8> = (0..16).map(|k| (k % 4) as u8).collect();
        assert_eq!(pack_bits(&two, 2), [0xE4E4E4E4]);
        let three: Vec<u8> = (0..32).map(|k| (k % 8) as u8).collect();
        assert_eq!(pack_bits(&three, 3), [0x88FAC688, 0xC688FAC6, 0xFAC688FA]);
    }

    #[test]
    fn asymmetric_zero_row_and_the_v1_hazard() {
        let z = [0u8, 1, 2, 3, 13, 14, 15, 8];
        assert_eq!(pack_bits(&z, 4), [0x8FED3210]);
        let v1: Vec<u8> = z.iter().map(|&z| gptq_v1_field(z, 4)).collect();
        assert_eq!(pack_bits(&v1, 4), [0x7EDC210F]);
        // Mask-then-add-one reads z = 0 back as 16; the rest survive.
        let back: Vec<u16> = unpack_bits(&[0x7EDC210F], 4, 8).iter().map(|&f| gptq_v1_zero(f, 4)).collect();
        assert_eq!(back, [16, 1, 2, 3, 13, 14, 15, 8]);
        // Subtracting 0x11111111 from the whole v2 word borrows across fields.
        assert_eq!(0x8FED3210u32.wrapping_sub(0x11111111), 0x7EDC20FF);
        let gm: Vec<u16> = unpack_bits(&[0x7EDC20FF], 4, 8).iter().map(|&f| gptq_v1_zero(f, 4)).collect();
        assert_eq!(&gm[..4], [16, 16, 1, 3]);
    }

    #[test]
    fn awq_interleave_goldens() {
        let seq: Vec<u8> = (0..8).collect();
        assert_eq!(pack_awq(&seq), [0x75316420]);
        assert_eq!(pack_bits(&seq, 4), [0x76543210]);
        let v: Vec<u8> = (0..16).map(|n| ((7 * n + 3) % 16) as u8).collect();
        assert_eq!(pack_awq(&v), [0x468ADF13, 0xCE02579B]);
        assert_eq!(unpack_awq(&[0x468ADF13, 0xCE02579B], 16), v);
        // The reader's view: logical j comes from nibble [0,4,1,5,2,6,3,7][j].
        let reverse = [0usize, 4, 1, 5, 2, 6, 3, 7];
        let nibbles = unpack_bits(&[0x75316420], 4, 8);
        assert_eq!((0..8).map(|j| nibbles[reverse[j]]).collect::<Vec<_>>(), seq);
    }

    #[test]
    fn compressed_tensors_offset_goldens() {
        let signed = [-8i8, -6, -4, -2, 0, 2, 4, 7];
        let fields: Vec<u8> = signed.iter().map(|&v| ct_field(v, 4)).collect();
        assert_eq!(pack_bits(&fields, 4), [0xFCA86420]);
        assert_eq!(pack_bits(&[ct_field(0, 4); 8], 4), [0x88888888]);
        assert_eq!(pack_bits(&[ct_field(1, 8), ct_field(2, 8)], 8), [33409]);
    }

    #[test]
    fn round_trips_for_every_width_and_length() {
        for bits in [2u8, 3, 4, 8] {
            for n in [0usize, 1, 7, 10, 11, 31, 32, 33, 96, 100] {
                let v: Vec<u8> = (0..n).map(|i| ((i * 2654435761usize) >> 7) as u8 & field_mask(bits) as u8).collect();
                let words = pack_bits(&v, bits);
                assert_eq!(words.len(), n_words(n, bits));
                assert_eq!(unpack_bits(&words, bits, n), v, "bits {bits} n {n}");
                assert_eq!(le_bytes_to_words(&words_to_le_bytes(&words)), words);
            }
        }
        let v: Vec<u8> = (0..24).map(|i| (i * 5 % 16) as u8).collect();
        assert_eq!(unpack_awq(&pack_awq(&v), 24), v);
        for z in 1..=15u8 {
            assert_eq!(gptq_v1_zero(gptq_v1_field(z, 4), 4), u16::from(z));
        }
        assert_eq!(gptq_v1_zero(gptq_v1_field(0, 4), 4), 16);
    }

    proptest::proptest! {
        #[test]
        fn any_codes_round_trip(bits in proptest::sample::select(vec![2u8, 3, 4, 8]), raw in proptest::collection::vec(0u8..=255, 0..300)) {
            let v: Vec<u8> = raw.iter().map(|&x| x & field_mask(bits) as u8).collect();
            let words = pack_bits(&v, bits);
            proptest::prop_assert_eq!(words.len(), n_words(v.len(), bits));
            proptest::prop_assert_eq!(unpack_bits(&words, bits, v.len()), v.clone());
            let nib: Vec<u8> = v.iter().map(|&x| x & 15).collect();
            proptest::prop_assert_eq!(unpack_awq(&pack_awq(&nib), nib.len()), nib);
        }
    }
}
