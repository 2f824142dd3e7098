//! Where the hub and its cache are, read from the environment the way huggingface_hub reads it
//! (`huggingface_hub/constants.py`): `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_TOKEN_PATH`,
//! `$HF_HOME/token`, `HF_HUB_OFFLINE`. Nothing else in the crate reads the environment.

use std::path::PathBuf;
use std::time::Duration;

/// The default hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Everything a download needs to know about its surroundings.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Base URL, no trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache folder holding `models--org--name` (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Bearer token (`HF_TOKEN`, else the file at `HF_TOKEN_PATH`, else `$HF_HOME/token`).
    pub token: Option<String>,
    /// Make no request at all; answer from the cache (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Attempts per request on 5xx, 429, timeouts and cut connections (at least 1).
    pub attempts: u32,
    /// First pause between attempts; doubled each time.
    pub backoff: Duration,
    /// Files downloaded at once by a snapshot.
    pub parallel: usize,
}

impl HubConfig {
    /// Read the environment.
    pub fn from_env() -> HubConfig {
        HubConfig::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// The same rules over any lookup (tests pass a map).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> HubConfig {
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let xdg = var("XDG_CACHE_HOME").map(PathBuf::from);
            let cache = xdg.unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache"));
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                let path = var("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| home.join("token"));
                std::fs::read_to_string(path).ok().map(|t| t.trim().to_string())
            })
            .filter(|t| !t.is_empty());
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()).trim_end_matches('/').to_string();
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v));
        HubConfig { endpoint, cache_dir, token, offline, attempts: 5, backoff: Duration::from_millis(500), parallel: 4 }
    }

    /// How a user passes a token, for refusals.
    pub fn token_hint(&self) -> String {
        if self.token.is_some() {
            "the token sent has no access to it: accept its licence on the hub or use another token".into()
        } else {
            "set HF_TOKEN, or write the token to $HF_HOME/token (as `hf auth login` does) or to the file named by \
             HF_TOKEN_PATH"
                .into()
        }
    }
}

/// huggingface_hub's `_is_true`: 1, ON, YES, TRUE in any case.
fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HubConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_home() {
        let c = cfg(&[("HOME", "/h")]);
        assert_eq!(c.cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(c.endpoint, "https://huggingface.co");
        assert!(!c.offline);
        let c = cfg(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(c.cache_dir, PathBuf::from("/x/huggingface/hub"));
    }

    #[test]
    fn overrides() {
        let c = cfg(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/cache"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", " tok \n"),
            ("HF_HUB_OFFLINE", "yes"),
        ]);
        assert_eq!(c.cache_dir, PathBuf::from("/cache"));
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.token.as_deref(), Some("tok"));
        assert!(c.offline);
        assert!(!cfg(&[("HF_HUB_OFFLINE", "0")]).offline);
        assert_eq!(cfg(&[("HF_HOME", "/hf")]).cache_dir, PathBuf::from("/hf/hub"));
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-home\n").unwrap();
        let home = dir.path().to_str().unwrap();
        assert_eq!(cfg(&[("HF_HOME", home)]).token.as_deref(), Some("from-home"));
        let other = dir.path().join("other");
        std::fs::write(&other, "from-path").unwrap();
        let c = cfg(&[("HF_HOME", home), ("HF_TOKEN_PATH", other.to_str().unwrap())]);
        assert_eq!(c.token.as_deref(), Some("from-path"));
        let c = cfg(&[("HF_HOME", home), ("HF_TOKEN", "env")]);
        assert_eq!(c.token.as_deref(), Some("env"));
    }
}
