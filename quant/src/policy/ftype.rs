//! File types (`llama_ftype`) and the names `llama-quantize` accepts for them (`QUANT_OPTIONS`).
//!
//! One table row per CLI name, in `QUANT_OPTIONS` order, because the order is observable: a numeric
//! argument picks the first row with that id, so `15` is reported as `Q4_K` (the alias listed before
//! `Q4_K_M`) and `0` as `F32` (listed before `COPY`). Ids from `include/llama.h`, default tensor types from
//! `llama_ftype_get_default_type` (`src/llama-quant.cpp` l.793-837), both at llama.cpp commit
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62 (b9928).

use std::fmt;
use std::str::FromStr;

use quantforge_formats::GgmlType;

use super::PolicyError;

/// A llama.cpp model file type (`enum llama_ftype`): what `general.file_type` records and what selects the
/// per-tensor mix. `Copy` is `llama-quantize`'s `COPY` option (copy every tensor unchanged), not an ftype
/// of its own: llama.cpp passes `LLAMA_FTYPE_ALL_F32` with `only_copy` and then writes the input file's
/// ftype.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ2_XXS,
    IQ2_XS,
    Q2_K_S,
    IQ3_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ3_M,
    IQ2_S,
    IQ2_M,
    IQ4_XS,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4_MOE,
    Q1_0,
    Q2_0,
    Copy,
}

/// Static facts about one [`FileType`].
#[derive(Clone, Copy, Debug)]
struct Facts {
    ftype: FileType,
    /// llama.cpp's spelling (the canonical `QUANT_OPTIONS` name).
    name: &'static str,
    /// `llama_ftype` value.
    id: u32,
    /// `llama_ftype_get_default_type`.
    default: GgmlType,
    /// Whether quantforge's encoders implement every type this mix can choose.
    supported: bool,
}

const fn facts(ftype: FileType, name: &'static str, id: u32, default: GgmlType, supported: bool) -> Facts {
    Facts { ftype, name, id, default, supported }
}

use FileType as F;
use GgmlType as G;

/// Every file type, in `llama_ftype` id order (`Copy` last).
const FACTS: &[Facts] = &[
    facts(F::F32, "F32", 0, G::F32, true),
    facts(F::F16, "F16", 1, G::F16, true),
    facts(F::Q4_0, "Q4_0", 2, G::Q4_0, true),
    facts(F::Q4_1, "Q4_1", 3, G::Q4_1, true),
    facts(F::Q8_0, "Q8_0", 7, G::Q8_0, true),
    facts(F::Q5_0, "Q5_0", 8, G::Q5_0, true),
    facts(F::Q5_1, "Q5_1", 9, G::Q5_1, true),
    facts(F::Q2_K, "Q2_K", 10, G::Q2_K, true),
    facts(F::Q3_K_S, "Q3_K_S", 11, G::Q3_K, true),
    facts(F::Q3_K_M, "Q3_K_M", 12, G::Q3_K, true),
    facts(F::Q3_K_L, "Q3_K_L", 13, G::Q3_K, true),
    facts(F::Q4_K_S, "Q4_K_S", 14, G::Q4_K, true),
    facts(F::Q4_K_M, "Q4_K_M", 15, G::Q4_K, true),
    facts(F::Q5_K_S, "Q5_K_S", 16, G::Q5_K, true),
    facts(F::Q5_K_M, "Q5_K_M", 17, G::Q5_K, true),
    facts(F::Q6_K, "Q6_K", 18, G::Q6_K, true),
    facts(F::IQ2_XXS, "IQ2_XXS", 19, G::IQ2_XXS, true),
    facts(F::IQ2_XS, "IQ2_XS", 20, G::IQ2_XS, true),
    facts(F::Q2_K_S, "Q2_K_S", 21, G::Q2_K, true),
    facts(F::IQ3_XS, "IQ3_XS", 22, G::IQ3_S, true),
    facts(F::IQ3_XXS, "IQ3_XXS", 23, G::IQ3_XXS, true),
    facts(F::IQ1_S, "IQ1_S", 24, G::IQ1_S, true),
    facts(F::IQ4_NL, "IQ4_NL", 25, G::IQ4_NL, true),
    facts(F::IQ3_S, "IQ3_S", 26, G::IQ3_S, true),
    facts(F::IQ3_M, "IQ3_M", 27, G::IQ3_S, true),
    // IQ2_S's default really is IQ2_XS and IQ2_M's is IQ2_S (llama.cpp's naming, not a typo here).
    facts(F::IQ2_S, "IQ2_S", 28, G::IQ2_XS, true),
    facts(F::IQ2_M, "IQ2_M", 29, G::IQ2_S, true),
    facts(F::IQ4_XS, "IQ4_XS", 30, G::IQ4_XS, true),
    facts(F::IQ1_M, "IQ1_M", 31, G::IQ1_M, true),
    facts(F::BF16, "BF16", 32, G::BF16, true),
    facts(F::TQ1_0, "TQ1_0", 36, G::TQ1_0, true),
    facts(F::TQ2_0, "TQ2_0", 37, G::TQ2_0, true),
    facts(F::MXFP4_MOE, "MXFP4_MOE", 38, G::MXFP4, true),
    facts(F::Q1_0, "Q1_0", 40, G::Q1_0, false),
    facts(F::Q2_0, "Q2_0", 41, G::Q2_0, false),
    facts(F::Copy, "COPY", 0, G::F32, true),
];

/// One entry of `llama-quantize`'s `QUANT_OPTIONS`: a name the CLI accepts, the file type it selects and
/// the description the tool prints in its usage text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantOption {
    /// The name as llama.cpp spells it (also used in the default output file name `ggml-model-<NAME>.gguf`).
    pub name: &'static str,
    /// The file type selected.
    pub ftype: FileType,
    /// llama.cpp's one-line description.
    pub description: &'static str,
}

const fn opt(name: &'static str, ftype: FileType, description: &'static str) -> QuantOption {
    QuantOption { name, ftype, description }
}

/// `QUANT_OPTIONS` of `tools/quantize/quantize.cpp`, in its order.
pub const QUANT_OPTIONS: &[QuantOption] = &[
    opt("Q1_0", F::Q1_0, " 1.125 bpw quantization"),
    opt("Q2_0", F::Q2_0, " 2.25 bpw quantization (group 64)"),
    opt("Q4_0", F::Q4_0, " 4.34G, +0.4685 ppl @ Llama-3-8B"),
    opt("Q4_1", F::Q4_1, " 4.78G, +0.4511 ppl @ Llama-3-8B"),
    opt("MXFP4_MOE", F::MXFP4_MOE, " MXFP4 MoE"),
    opt("Q5_0", F::Q5_0, " 5.21G, +0.1316 ppl @ Llama-3-8B"),
    opt("Q5_1", F::Q5_1, " 5.65G, +0.1062 ppl @ Llama-3-8B"),
    opt("IQ2_XXS", F::IQ2_XXS, " 2.06 bpw quantization"),
    opt("IQ2_XS", F::IQ2_XS, " 2.31 bpw quantization"),
    opt("IQ2_S", F::IQ2_S, " 2.5  bpw quantization"),
    opt("IQ2_M", F::IQ2_M, " 2.7  bpw quantization"),
    opt("IQ1_S", F::IQ1_S, " 1.56 bpw quantization"),
    opt("IQ1_M", F::IQ1_M, " 1.75 bpw quantization"),
    opt("TQ1_0", F::TQ1_0, " 1.69 bpw ternarization"),
    opt("TQ2_0", F::TQ2_0, " 2.06 bpw ternarization"),
    opt("Q2_K", F::Q2_K, " 2.96G, +3.5199 ppl @ Llama-3-8B"),
    opt("Q2_K_S", F::Q2_K_S, " 2.96G, +3.1836 ppl @ Llama-3-8B"),
    opt("IQ3_XXS", F::IQ3_XXS, " 3.06 bpw quantization"),
    opt("IQ3_S", F::IQ3_S, " 3.44 bpw quantization"),
    opt("IQ3_M", F::IQ3_M, " 3.66 bpw quantization mix"),
    opt("Q3_K", F::Q3_K_M, "alias for Q3_K_M"),
    opt("IQ3_XS", F::IQ3_XS, " 3.3 bpw quantization"),
    opt("Q3_K_S", F::Q3_K_S, " 3.41G, +1.6321 ppl @ Llama-3-8B"),
    opt("Q3_K_M", F::Q3_K_M, " 3.74G, +0.6569 ppl @ Llama-3-8B"),
    opt("Q3_K_L", F::Q3_K_L, " 4.03G, +0.5562 ppl @ Llama-3-8B"),
    opt("IQ4_NL", F::IQ4_NL, " 4.50 bpw non-linear quantization"),
    opt("IQ4_XS", F::IQ4_XS, " 4.25 bpw non-linear quantization"),
    opt("Q4_K", F::Q4_K_M, "alias for Q4_K_M"),
    opt("Q4_K_S", F::Q4_K_S, " 4.37G, +0.2689 ppl @ Llama-3-8B"),
    opt("Q4_K_M", F::Q4_K_M, " 4.58G, +0.1754 ppl @ Llama-3-8B"),
    opt("Q5_K", F::Q5_K_M, "alias for Q5_K_M"),
    opt("Q5_K_S", F::Q5_K_S, " 5.21G, +0.1049 ppl @ Llama-3-8B"),
    opt("Q5_K_M", F::Q5_K_M, " 5.33G, +0.0569 ppl @ Llama-3-8B"),
    opt("Q6_K", F::Q6_K, " 6.14G, +0.0217 ppl @ Llama-3-8B"),
    opt("Q8_0", F::Q8_0, " 7.96G, +0.0026 ppl @ Llama-3-8B"),
    opt("F16", F::F16, "14.00G, +0.0020 ppl @ Mistral-7B"),
    opt("BF16", F::BF16, "14.00G, -0.0050 ppl @ Mistral-7B"),
    opt("F32", F::F32, "26.00G              @ 7B"),
    // Must stay after F32 so that the numeric argument 0 selects F32.
    opt("COPY", F::Copy, "only copy tensors, no quantizing"),
];

impl QuantOption {
    /// `try_parse_ftype`: a case-insensitive name, else a number read like C++ `std::stoi` (leading
    /// whitespace, optional sign, digits, anything after ignored) matched against the ids in table order.
    pub fn parse(s: &str) -> Option<&'static QuantOption> {
        if let Some(o) = QUANT_OPTIONS.iter().find(|o| o.name.eq_ignore_ascii_case(s)) {
            return Some(o);
        }
        let id = stoi(s)?;
        QUANT_OPTIONS.iter().find(|o| i64::from(o.ftype.id()) == id)
    }
}

/// C++ `std::stoi`: `None` where it would throw (no digits, or out of `int` range).
fn stoi(s: &str) -> Option<i64> {
    // std::isspace in the C locale.
    let s = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let mut v: i64 = 0;
    for b in rest.bytes().take(digits) {
        v = v.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
        if v > i64::from(i32::MAX) + 1 {
            return None;
        }
    }
    let v = if neg { -v } else { v };
    i32::try_from(v).ok().map(i64::from)
}

impl FileType {
    /// Every file type, in id order (`Copy` last).
    pub fn all() -> impl Iterator<Item = FileType> {
        FACTS.iter().map(|f| f.ftype)
    }

    fn facts(self) -> &'static Facts {
        // FACTS is indexed by declaration order; the unit test `facts_follow_declaration_order` keeps it so.
        &FACTS[self as usize]
    }

    /// llama.cpp's spelling, e.g. `Q4_K_M`.
    pub fn name(self) -> &'static str {
        self.facts().name
    }

    /// The `llama_ftype` value written to `general.file_type` (`COPY` reports 0, `LLAMA_FTYPE_ALL_F32`, as in
    /// llama.cpp's table; the written value is then the input file's).
    pub fn id(self) -> u32 {
        self.facts().id
    }

    /// The file type with this `llama_ftype` id (`0` is [`FileType::F32`]).
    pub fn from_id(id: u32) -> Option<FileType> {
        FACTS.iter().find(|f| f.id == id).map(|f| f.ftype)
    }

    /// `llama_ftype_get_default_type`: the type most tensors get before the mix rules apply.
    pub fn default_type(self) -> GgmlType {
        self.facts().default
    }

    /// Whether quantforge can produce this file type now: every type its mix and fallbacks can pick has an
    /// encoder. The others (Q1_0, Q2_0) can be planned (e.g. for a dry run) but
    /// not written.
    pub fn supported_by_encoder(self) -> bool {
        self.facts().supported
    }

    /// `Err` naming the type when [`FileType::supported_by_encoder`] is false.
    pub fn ensure_supported(self) -> Result<(), PolicyError> {
        if self.supported_by_encoder() {
            Ok(())
        } else {
            Err(PolicyError::UnsupportedFileType { ftype: self })
        }
    }

    /// The `COPY` option: every tensor is copied unchanged.
    pub fn is_copy(self) -> bool {
        self == FileType::Copy
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileType {
    type Err = PolicyError;

    /// As `llama-quantize` reads its TYPE argument: see [`QuantOption::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QuantOption::parse(s).map(|o| o.ftype).ok_or_else(|| PolicyError::UnknownFileType { name: s.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_follow_declaration_order() {
        for (i, f) in FACTS.iter().enumerate() {
            assert_eq!(f.ftype as usize, i, "{}", f.name);
        }
    }

    #[test]
    fn every_ftype_has_an_option_and_names_round_trip() {
        for ft in FileType::all() {
            let o = QUANT_OPTIONS.iter().find(|o| o.ftype == ft).expect("listed in QUANT_OPTIONS");
            assert_eq!(o.ftype, ft);
            assert_eq!(ft.name().parse::<FileType>().unwrap(), ft);
            assert_eq!(ft.name().to_lowercase().parse::<FileType>().unwrap(), ft);
        }
        let mut names: Vec<_> = QUANT_OPTIONS.iter().map(|o| o.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), QUANT_OPTIONS.len());
    }

    #[test]
    fn numeric_ids_pick_the_first_option() {
        assert_eq!(QuantOption::parse("15").unwrap().name, "Q4_K");
        assert_eq!(QuantOption::parse("0").unwrap().name, "F32");
        assert_eq!(QuantOption::parse(" +7xyz").unwrap().name, "Q8_0");
        assert_eq!(QuantOption::parse("32").unwrap().ftype, FileType::BF16);
        assert!(QuantOption::parse("4").is_none());
        assert!(QuantOption::parse("99999999999").is_none());
        assert!(QuantOption::parse("x15").is_none());
        assert_eq!(QuantOption::parse("q4_k").unwrap().ftype, FileType::Q4_K_M);
        assert_eq!(QuantOption::parse("copy").unwrap().ftype, FileType::Copy);
    }
}
