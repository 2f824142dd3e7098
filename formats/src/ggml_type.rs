//! The ggml tensor type table: every type id llama.cpp defines, with its block size and bytes per block,
//! so that tensor sizes and bits per weight are exact.
//!
//! Source: `ggml/include/ggml.h` (`enum ggml_type`) and the `static_assert`s of `ggml/src/ggml-common.h`
//! at llama.cpp commit 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62. Ids 4, 5, 31-33 and 36-38 were removed
//! upstream and are rejected with their old names.

use std::fmt;
use std::str::FromStr;

macro_rules! ggml_types {
    ($( $variant:ident = $id:literal, $name:literal, $block:literal, $bytes:literal; )*) => {
        /// A ggml tensor element type (`enum ggml_type`).
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum GgmlType {
            $( $variant = $id, )*
        }

        impl GgmlType {
            /// Every type, in id order.
            pub const ALL: &'static [GgmlType] = &[$( GgmlType::$variant, )*];

            /// The type with this id, if ggml still defines it.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $( $id => Some(GgmlType::$variant), )*
                    _ => None,
                }
            }

            /// ggml's lower-case name (`ggml_type_name`), e.g. `q4_K`.
            pub fn name(self) -> &'static str {
                match self { $( GgmlType::$variant => $name, )* }
            }

            /// Elements per block (`ggml_blck_size`).
            pub const fn block_size(self) -> u64 {
                match self { $( GgmlType::$variant => $block, )* }
            }

            /// Bytes per block (`ggml_type_size`).
            pub const fn type_size(self) -> u64 {
                match self { $( GgmlType::$variant => $bytes, )* }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "f32", 1, 4;
    F16 = 1, "f16", 1, 2;
    Q4_0 = 2, "q4_0", 32, 18;
    Q4_1 = 3, "q4_1", 32, 20;
    Q5_0 = 6, "q5_0", 32, 22;
    Q5_1 = 7, "q5_1", 32, 24;
    Q8_0 = 8, "q8_0", 32, 34;
    Q8_1 = 9, "q8_1", 32, 36;
    Q2_K = 10, "q2_K", 256, 84;
    Q3_K = 11, "q3_K", 256, 110;
    Q4_K = 12, "q4_K", 256, 144;
    Q5_K = 13, "q5_K", 256, 176;
    Q6_K = 14, "q6_K", 256, 210;
    Q8_K = 15, "q8_K", 256, 292;
    IQ2_XXS = 16, "iq2_xxs", 256, 66;
    IQ2_XS = 17, "iq2_xs", 256, 74;
    IQ3_XXS = 18, "iq3_xxs", 256, 98;
    IQ1_S = 19, "iq1_s", 256, 50;
    IQ4_NL = 20, "iq4_nl", 32, 18;
    IQ3_S = 21, "iq3_s", 256, 110;
    IQ2_S = 22, "iq2_s", 256, 82;
    IQ4_XS = 23, "iq4_xs", 256, 136;
    I8 = 24, "i8", 1, 1;
    I16 = 25, "i16", 1, 2;
    I32 = 26, "i32", 1, 4;
    I64 = 27, "i64", 1, 8;
    F64 = 28, "f64", 1, 8;
    IQ1_M = 29, "iq1_m", 256, 56;
    BF16 = 30, "bf16", 1, 2;
    TQ1_0 = 34, "tq1_0", 256, 54;
    TQ2_0 = 35, "tq2_0", 256, 66;
    MXFP4 = 39, "mxfp4", 32, 17;
    NVFP4 = 40, "nvfp4", 64, 36;
    Q1_0 = 41, "q1_0", 128, 18;
    Q2_0 = 42, "q2_0", 64, 18;
}

/// One past the largest type id (`GGML_TYPE_COUNT`).
pub const GGML_TYPE_COUNT: u32 = 43;

/// The name of a type id that ggml once defined and has since removed, if `id` is one.
pub fn removed_type_name(id: u32) -> Option<&'static str> {
    match id {
        4 => Some("q4_2"),
        5 => Some("q4_3"),
        31 => Some("q4_0_4_4"),
        32 => Some("q4_0_4_8"),
        33 => Some("q4_0_8_8"),
        36 => Some("iq4_nl_4_4"),
        37 => Some("iq4_nl_4_8"),
        38 => Some("iq4_nl_8_8"),
        _ => None,
    }
}

impl GgmlType {
    /// The numeric id stored in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Whether the type is block-quantized (`ggml_is_quantized`): everything except plain floats and ints.
    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::F64
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
        )
    }

    /// Bits per weight of the type itself (`8 * bytes / block`).
    pub fn bits_per_weight(self) -> f64 {
        bits_per_weight(self.type_size(), self.block_size())
    }

    /// Bytes of one row of `n` elements (`ggml_row_size`), or `None` when `n` is not a whole number of
    /// blocks or the size overflows.
    pub fn row_size(self, n: u64) -> Option<u64> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// Bytes of a tensor with dimensions `ne` (ggml order, `ne[0]` innermost), or `None` when `ne[0]` is
    /// not a whole number of blocks or the size overflows.
    pub fn tensor_size(self, ne: &[u64]) -> Option<u64> {
        let (first, rest) = match ne.split_first() {
            Some(x) => x,
            None => return Some(self.type_size()),
        };
        let mut size = self.row_size(*first)?;
        for &d in rest {
            size = size.checked_mul(d)?;
        }
        Some(size)
    }
}

/// Bits per weight of `bytes` holding `elements` weights, as llama.cpp reports it (`8 * bytes / elements`);
/// 0 when there are no elements. The one definition every size report uses.
pub fn bits_per_weight(bytes: u64, elements: u64) -> f64 {
    if elements == 0 {
        0.0
    } else {
        8.0 * bytes as f64 / elements as f64
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of parsing a type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownGgmlType(pub String);

impl fmt::Display for UnknownGgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown ggml type '{}'", self.0)
    }
}

impl std::error::Error for UnknownGgmlType {}

impl FromStr for GgmlType {
    type Err = UnknownGgmlType;

    /// Case-insensitive: `q4_k`, `Q4_K` and `q4_K` all name [`GgmlType::Q4_K`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownGgmlType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_are_unique() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(t.name().parse::<GgmlType>().unwrap(), t);
            assert_eq!(t.name().to_uppercase().parse::<GgmlType>().unwrap(), t);
            assert!(t.id() < GGML_TYPE_COUNT);
            assert!(removed_type_name(t.id()).is_none());
        }
        let mut names: Vec<_> = GgmlType::ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), GgmlType::ALL.len());
        // Every id below the count is either defined or a known removed one.
        for id in 0..GGML_TYPE_COUNT {
            assert!(GgmlType::from_id(id).is_some() ^ removed_type_name(id).is_some(), "id {id}");
        }
    }

    #[test]
    fn sizes_match_ggml_common() {
        assert_eq!(GgmlType::Q4_K.bits_per_weight(), 4.5);
        assert_eq!(GgmlType::Q6_K.bits_per_weight(), 6.5625);
        assert_eq!(GgmlType::IQ4_XS.bits_per_weight(), 4.25);
        assert_eq!(bits_per_weight(34, 32), 8.5);
        assert_eq!(bits_per_weight(10, 0), 0.0);
        assert_eq!(GgmlType::Q8_0.tensor_size(&[64, 3]), Some(2 * 34 * 3));
        assert_eq!(GgmlType::Q4_K.row_size(576), None);
        assert_eq!(GgmlType::F32.tensor_size(&[u64::MAX, 2]), None);
    }
}
