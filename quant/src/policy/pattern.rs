//! `--tensor-type PATTERN=TYPE` overrides.
//!
//! llama-quantize lower-cases PATTERN, compiles it as a `std::regex` (ECMAScript) and applies the first
//! override whose pattern `regex_search`es the tensor name (`parse_tensor_type` in
//! `tools/quantize/quantize.cpp`, `llama_tensor_get_type` in `src/llama-quant.cpp`). Patterns here are
//! compiled with the `regex` crate, whose syntax agrees with ECMAScript for everything tensor patterns use
//! (literals, `.`, escapes, anchors, classes, groups, alternation, quantifiers); look-around and
//! back-references, which ECMAScript has and `regex` does not, are refused with a clear error.

use std::fmt;
use std::sync::Arc;

use quantforge_formats::GgmlType;

use super::PolicyError;

/// Decides whether a tensor name matches a pattern (`std::regex_search` semantics: anywhere in the name).
pub trait NameMatcher: Send + Sync {
    fn is_match(&self, name: &str) -> bool;
}

impl<F: Fn(&str) -> bool + Send + Sync> NameMatcher for F {
    fn is_match(&self, name: &str) -> bool {
        self(name)
    }
}

/// One compiled `--tensor-type` pattern.
#[derive(Clone)]
pub struct TensorPattern {
    source: String,
    matcher: Arc<dyn NameMatcher>,
}

impl fmt::Debug for TensorPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TensorPattern").field(&self.source).finish()
    }
}

impl TensorPattern {
    /// A pattern matched by `matcher` (e.g. a compiled `regex::Regex`); `source` is kept for messages.
    /// The caller lower-cases the source before compiling it, as llama-quantize does.
    pub fn with_matcher(source: impl Into<String>, matcher: impl NameMatcher + 'static) -> TensorPattern {
        TensorPattern { source: source.into(), matcher: Arc::new(matcher) }
    }

    /// Lower-case `source` and compile it as a regular expression.
    pub fn parse(source: &str) -> Result<TensorPattern, PolicyError> {
        let source = source.to_ascii_lowercase();
        let re = regex::Regex::new(&source)
            .map_err(|e| PolicyError::UnsupportedPattern { pattern: source.clone(), reason: e.to_string() })?;
        Ok(TensorPattern::with_matcher(source, move |name: &str| re.is_match(name)))
    }

    /// The pattern text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the pattern is found in `name`.
    pub fn is_match(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

/// `parse_tensor_type` of llama-quantize: split `NAME=TYPE` at the first `=`, lower-case NAME, parse TYPE
/// case-insensitively.
pub fn parse_tensor_type_option(arg: &str) -> Result<(String, GgmlType), PolicyError> {
    let (name, ty) = arg.split_once('=').ok_or_else(|| PolicyError::MalformedTensorType { arg: arg.to_string() })?;
    if name.is_empty() || ty.is_empty() {
        return Err(PolicyError::MalformedTensorType { arg: arg.to_string() });
    }
    Ok((name.to_ascii_lowercase(), parse_ggml_type(ty)?))
}

/// `parse_ggml_type` of llama-quantize: a ggml type name, any case (`q8_0`, `Q4_K`).
pub fn parse_ggml_type(s: &str) -> Result<GgmlType, PolicyError> {
    s.parse().map_err(|_| PolicyError::UnknownType { name: s.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, name: &str) -> bool {
        TensorPattern::parse(p).unwrap().is_match(name)
    }

    #[test]
    fn patterns_search_like_a_regex() {
        assert!(m("attn_v", "blk.3.attn_v.weight"));
        assert!(m("ATTN_V", "blk.3.attn_v.weight"), "pattern is lower-cased");
        assert!(m("blk.1.attn", "blk.1.attn_q.weight"));
        assert!(!m("blk.1.attn", "blk.10.attn_q.weight"));
        assert!(m("blk.1.", "blk.10.attn_q.weight"), "'.' matches any character");
        assert!(!m(r"blk\.1\.", "blk.10.attn_q.weight"));
        assert!(m(r"blk\.1\.", "blk.1.attn_q.weight"));
        assert!(m("^output", "output.weight"));
        assert!(!m("^weight", "output.weight"));
        assert!(m("weight$", "output.weight"));
        assert!(!m("output$", "output.weight"));
        assert!(m("", "anything"));
    }

    #[test]
    fn full_regular_expressions() {
        assert!(m(r"blk\.[0-3]\.ffn_(up|gate)", "blk.2.ffn_gate.weight"));
        assert!(!m(r"blk\.[0-3]\.ffn_(up|gate)", "blk.4.ffn_up.weight"));
        assert!(m(r"^blk\.\d+\.attn_v", "blk.17.attn_v.weight"));
        for p in ["ffn_(up", "(?=x)", r"(a)\1"] {
            assert!(matches!(TensorPattern::parse(p), Err(PolicyError::UnsupportedPattern { .. })), "{p}");
        }
    }

    #[test]
    fn tensor_type_options() {
        assert_eq!(parse_tensor_type_option("ATTN_V=Q8_0").unwrap(), ("attn_v".to_string(), GgmlType::Q8_0));
        assert_eq!(parse_tensor_type_option("a=b=q4_k").unwrap_err().to_string(), "unknown ggml type 'b=q4_k'");
        assert!(matches!(parse_tensor_type_option("attn_v"), Err(PolicyError::MalformedTensorType { .. })));
        assert!(matches!(parse_tensor_type_option("=q8_0"), Err(PolicyError::MalformedTensorType { .. })));
        assert!(matches!(parse_tensor_type_option("attn_v="), Err(PolicyError::MalformedTensorType { .. })));
        assert!(matches!(parse_ggml_type("q4_k_m"), Err(PolicyError::UnknownType { .. })));
    }
}
