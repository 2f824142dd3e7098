//! File filters as huggingface_hub applies `allow_patterns`/`ignore_patterns` (`filter_repo_objects`): Python
//! `fnmatch` globs over the whole repo path, where `*` also crosses `/`, and a pattern ending in `/` means
//! everything under that folder.

use crate::error::{HubError, Result};

/// A compiled `fnmatch` pattern.
#[derive(Clone, Debug)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug)]
enum Token {
    Any,
    One,
    Lit(char),
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Glob {
    /// Compile; an unclosed `[` is an error (Python would match it literally, which is rarely what was meant).
    pub fn new(pattern: &str) -> Result<Glob> {
        let full = if pattern.ends_with('/') { format!("{pattern}*") } else { pattern.to_string() };
        let chars: Vec<char> = full.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => tokens.push(Token::Any),
                '?' => tokens.push(Token::One),
                '[' => {
                    let mut j = i + 1;
                    let negated = chars.get(j) == Some(&'!');
                    if negated {
                        j += 1;
                    }
                    let start = j;
                    let mut ranges = Vec::new();
                    while j < chars.len() && (chars[j] != ']' || j == start) {
                        if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&c| c != ']') {
                            ranges.push((chars[j], chars[j + 2]));
                            j += 3;
                        } else {
                            ranges.push((chars[j], chars[j]));
                            j += 1;
                        }
                    }
                    if j >= chars.len() {
                        return Err(HubError::BadGlob { glob: pattern.into(), reason: "'[' without ']'" });
                    }
                    tokens.push(Token::Class { negated, ranges });
                    i = j;
                }
                c => tokens.push(Token::Lit(c)),
            }
            i += 1;
        }
        Ok(Glob { text: pattern.to_string(), tokens })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the whole of `path` match?
    pub fn matches(&self, path: &str) -> bool {
        let s: Vec<char> = path.chars().collect();
        // Classic two-pointer wildcard match with one backtrack point for the last `*`.
        let (mut p, mut i) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while i < s.len() {
            let step = match self.tokens.get(p) {
                Some(Token::Any) => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                Some(Token::One) => true,
                Some(Token::Lit(c)) => *c == s[i],
                Some(Token::Class { negated, ranges }) => {
                    ranges.iter().any(|&(a, b)| a <= s[i] && s[i] <= b) != *negated
                }
                None => false,
            };
            if step {
                p += 1;
                i += 1;
            } else if let Some((sp, si)) = star {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            } else {
                return false;
            }
        }
        self.tokens[p..].iter().all(|t| matches!(t, Token::Any))
    }
}

/// Keep `path` when it matches one of `include` (or `include` is empty) and none of `exclude`.
pub fn keep(path: &str, include: &[Glob], exclude: &[Glob]) -> bool {
    (include.is_empty() || include.iter().any(|g| g.matches(path))) && !exclude.iter().any(|g| g.matches(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s)
    }

    #[test]
    fn fnmatch_rules() {
        assert!(m("*.safetensors", "model-00001-of-00002.safetensors"));
        assert!(m("*.safetensors", "sub/dir/x.safetensors"), "* crosses / as in fnmatch");
        assert!(!m("*.safetensors", "model.safetensors.index.json"));
        assert!(m("model-0000?-of-*.safetensors", "model-00002-of-00009.safetensors"));
        assert!(m("[!a]*", "b.json") && !m("[!a]*", "a.json"));
        assert!(m("tok[a-z]n*", "token.json"));
        assert!(m("onnx/", "onnx/model.onnx") && !m("onnx/", "model.onnx"));
        assert!(m("*", "") && !m("?", ""));
        assert!(m("a*b*c", "axxbyyc") && !m("a*b*c", "axxbyy"));
        assert!(Glob::new("[abc").is_err());
    }

    #[test]
    fn include_then_exclude() {
        let inc = [Glob::new("*.json").unwrap()];
        let exc = [Glob::new("tokenizer*").unwrap()];
        assert!(keep("config.json", &inc, &exc));
        assert!(!keep("tokenizer.json", &inc, &exc));
        assert!(!keep("model.safetensors", &inc, &exc));
        assert!(keep("model.safetensors", &[], &exc));
    }
}
