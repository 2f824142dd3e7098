//! Repo ids (`org/name[@revision]`) as huggingface_hub validates them (`validate_repo_id`), their cache folder
//! name (`models--org--name`) and the URL quoting of revisions and file paths.

use crate::error::{HubError, Result};

/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// A model repo on the hub and the revision (branch, tag or commit hash) asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    /// `org/name`.
    pub id: String,
    /// Branch, tag or 40-hex commit hash.
    pub revision: String,
}

impl RepoRef {
    /// Parse `org/name` or `org/name@revision`.
    pub fn parse(text: &str) -> Result<RepoRef> {
        let bad = |reason| HubError::BadRepoId { text: text.to_string(), reason };
        let (id, revision) = match text.split_once('@') {
            Some((id, rev)) => (id, rev),
            None => (text, DEFAULT_REVISION),
        };
        if revision.is_empty() || revision.contains("..") || revision.starts_with('/') || revision.ends_with('/') {
            return Err(bad("the revision after '@' must be a branch, tag or commit hash"));
        }
        if revision.chars().any(|c| c.is_control() || c == '\\') {
            return Err(bad("the revision holds a control character or a backslash"));
        }
        let Some((org, name)) = id.split_once('/') else {
            return Err(bad("expected org/name"));
        };
        if id.len() > 96 {
            return Err(bad("longer than 96 characters"));
        }
        for part in [org, name] {
            let ok_chars = part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            let ok_ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if part.is_empty() || !ok_chars || !ok_ends(part.chars().next()) || !ok_ends(part.chars().last()) {
                return Err(bad("org and name are letters, digits, '-', '_' and '.', starting and ending with a \
                                letter, digit or '_'"));
            }
        }
        if id.contains("--") || id.contains("..") {
            return Err(bad("'--' and '..' are not allowed"));
        }
        Ok(RepoRef { id: id.to_string(), revision: revision.to_string() })
    }

    /// The cache folder of the repo: `models--org--name`.
    pub fn folder_name(&self) -> String {
        format!("models--{}", self.id.replace('/', "--"))
    }

    /// `org/name@revision`, or `org/name` on the default revision.
    pub fn display(&self) -> String {
        if self.revision == DEFAULT_REVISION {
            self.id.clone()
        } else {
            format!("{}@{}", self.id, self.revision)
        }
    }
}

/// A full commit hash: 40 lowercase hex digits (huggingface_hub's `REGEX_COMMIT_HASH`).
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Python's `urllib.parse.quote(s, safe)`: every byte but letters, digits, `_.-~` and `safe` percent-encoded.
pub fn quote(s: &str, safe: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || safe.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_revisions() {
        let r = RepoRef::parse("HuggingFaceTB/SmolLM2-135M").unwrap();
        assert_eq!((r.id.as_str(), r.revision.as_str()), ("HuggingFaceTB/SmolLM2-135M", "main"));
        assert_eq!(r.folder_name(), "models--HuggingFaceTB--SmolLM2-135M");
        let r = RepoRef::parse("a/b.c@refs/pr/1").unwrap();
        assert_eq!(r.revision, "refs/pr/1");
        for bad in ["gpt2", "a/b/c", "/abs/path", "./x", "a/-b", "a--b/c", "a/b..c", "a/b@", "a/b@../x", "", "a/"] {
            assert!(RepoRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting_matches_python() {
        assert_eq!(quote("refs/pr/1", ""), "refs%2Fpr%2F1");
        assert_eq!(quote("sub dir/a+b.json", "/"), "sub%20dir/a%2Bb.json");
        assert!(is_commit_hash("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit_hash("0123456789ABCDEF0123456789abcdef01234567"));
    }
}
