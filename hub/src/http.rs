//! The hub's HTTP protocol as huggingface_hub speaks it (`file_download.py`, `utils/_http.py`):
//! `HEAD {endpoint}/{repo}/resolve/{revision}/{path}` for a file's metadata (`X-Repo-Commit`,
//! `X-Linked-Etag` else `ETag`, `X-Linked-Size` else `Content-Length`, `Location`), `GET` with `Range` for its
//! bytes, `GET {endpoint}/api/models/{repo}/revision/{revision}` for the file list, and `X-Error-Code` on
//! refusals.
//!
//! Invariant: the token goes only to the endpoint's own origin (scheme, host and port). A redirect to another
//! origin (the CDN holding LFS files) is followed without `Authorization`. Every request goes through
//! [`Client::send`], which does the retries.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ureq::http::{Response, Uri};
use ureq::Body;

use crate::env::HubConfig;
use crate::error::{HubError, Result};
use crate::repo::{quote, RepoRef};

/// Redirects followed per request at most.
const MAX_REDIRECTS: usize = 10;
/// Bytes of an error body kept for the message.
const ERROR_BODY_LIMIT: u64 = 4096;
/// The file-list answer is small; this caps what is read of it.
const INFO_LIMIT: u64 = 64 << 20;

/// A file's metadata, from the HEAD of its resolve URL.
#[derive(Clone, Debug)]
pub struct FileMeta {
    /// The commit the revision resolved to.
    pub commit: String,
    /// The normalized etag: the sha256 of an LFS file, the git blob hash of another.
    pub etag: String,
    /// The file's size, when announced.
    pub size: Option<u64>,
    /// Where its bytes are (the resolve URL, or the CDN URL it redirects to).
    pub location: String,
}

/// The repo at one revision, from the file-list API.
#[derive(Clone, Debug)]
pub struct RepoInfo {
    /// The commit hash.
    pub sha: String,
    /// Paths of the files in the repo.
    pub files: Vec<String>,
}

/// What a request is about, for error messages.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub repo: &'a RepoRef,
    pub file: Option<&'a str>,
}

/// A blocking hub client.
pub struct Client {
    agent: ureq::Agent,
    cfg: HubConfig,
    origin: Option<String>,
    requests: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Head,
    Get,
}

/// One failed attempt: worth another try, or final.
enum Failure {
    Retry(String),
    Fatal(HubError),
}

impl Client {
    /// A client for `cfg.endpoint`.
    pub fn new(cfg: &HubConfig) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("quantforge/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Client { agent, cfg: cfg.clone(), origin: origin(&cfg.endpoint), requests: AtomicU64::new(0) }
    }

    /// Requests sent so far (each attempt and each redirect counts).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The resolve URL of a file.
    pub fn resolve_url(&self, repo: &RepoRef, revision: &str, file: &str) -> String {
        format!("{}/{}/resolve/{}/{}", self.cfg.endpoint, repo.id, quote(revision, ""), quote(file, "/"))
    }

    /// The commit and the file list of a repo at its revision.
    pub fn repo_info(&self, repo: &RepoRef) -> Result<RepoInfo> {
        let url = format!("{}/api/models/{}/revision/{}", self.cfg.endpoint, repo.id, quote(&repo.revision, ""));
        let ctx = Ctx { repo, file: None };
        let (mut resp, _) = self.send_following(Method::Get, &url, ctx, true)?;
        let text = resp.body_mut().with_config().limit(INFO_LIMIT).read_to_string();
        let text = text.map_err(|e| HubError::Network { url: url.clone(), message: e.to_string(), attempts: 1 })?;
        let bad = |m: &str| HubError::Protocol { url: url.clone(), message: m.to_string() };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&format!("bad JSON: {e}")))?;
        let sha = v.get("sha").and_then(|s| s.as_str()).ok_or_else(|| bad("no 'sha' in the answer"))?;
        let siblings =
            v.get("siblings").and_then(|s| s.as_array()).ok_or_else(|| bad("no 'siblings' in the answer"))?;
        let files = siblings.iter().filter_map(|s| s.get("rfilename")?.as_str().map(str::to_string)).collect();
        Ok(RepoInfo { sha: sha.to_string(), files })
    }

    /// HEAD a file's resolve URL; same-origin redirects (renamed repos) are followed, a redirect elsewhere ends
    /// the walk and becomes the file's location.
    pub fn file_meta(&self, repo: &RepoRef, revision: &str, file: &str) -> Result<FileMeta> {
        let url = self.resolve_url(repo, revision, file);
        let ctx = Ctx { repo, file: Some(file) };
        let (resp, final_url) = self.send_following(Method::Head, &url, ctx, false)?;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bad = |m: &str| HubError::Protocol { url: final_url.clone(), message: m.to_string() };
        let commit = header("x-repo-commit").ok_or_else(|| bad("no X-Repo-Commit header"))?;
        let etag = header("x-linked-etag").or_else(|| header("etag")).ok_or_else(|| bad("no ETag header"))?;
        let etag = normalize_etag(&etag);
        if !crate::repo::is_commit_hash(&commit) {
            return Err(bad("X-Repo-Commit is not a commit hash"));
        }
        if etag.is_empty() || etag.len() > 128 || !etag.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(bad("the ETag is not a plain hash"));
        }
        let size = header("x-linked-size").or_else(|| header("content-length")).and_then(|s| s.trim().parse().ok());
        let location = match header("location") {
            Some(loc) => join(&final_url, &loc),
            None => final_url.clone(),
        };
        Ok(FileMeta { commit, etag, size, location })
    }

    /// Download `url` into `part`, resuming from its current length with `Range`; `on_pos` hears of every
    /// chunk written with the file's length so far. A cut connection resumes at once, a failure that made no progress waits and retries.
    pub fn download(&self, url: &str, part: &Path, size: Option<u64>, ctx: Ctx, on_pos: &dyn Fn(u64)) -> Result<()> {
        let mut failures = 0u32;
        loop {
            let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
            if size == Some(have) && have > 0 {
                return Ok(());
            }
            match self.fetch_into(url, part, have, size, ctx, on_pos) {
                Ok(()) => return Ok(()),
                Err((Failure::Fatal(e), _)) => return Err(e),
                Err((Failure::Retry(message), progressed)) => {
                    if progressed {
                        continue;
                    }
                    failures += 1;
                    if failures >= self.cfg.attempts.max(1) {
                        return Err(HubError::Network { url: url.to_string(), message, attempts: failures });
                    }
                    std::thread::sleep(self.cfg.backoff * 2u32.saturating_pow(failures - 1));
                }
            }
        }
    }

    /// One GET from byte `have` on, appended to `part`. The flag says whether any byte was written.
    fn fetch_into(
        &self,
        url: &str,
        part: &Path,
        have: u64,
        size: Option<u64>,
        ctx: Ctx,
        on_pos: &dyn Fn(u64),
    ) -> std::result::Result<(), (Failure, bool)> {
        let range = (have > 0).then_some(have);
        let (mut resp, final_url) = match self.attempt_following(Method::Get, url, range, true) {
            Ok(r) => r,
            Err(f) => return Err((f, false)),
        };
        let status = resp.status().as_u16();
        let io = |e| Failure::Fatal(HubError::io(part, e));
        let mut start = have;
        match status {
            206 => {
                let from = content_range_start(&resp);
                if from != Some(have) {
                    start = 0;
                }
            }
            200 => start = 0,
            416 if size.is_none_or(|s| s == have) => return Ok(()),
            416 => start = 0,
            _ => return Err((Failure::Fatal(status_error(&mut resp, &final_url, status, ctx, &self.cfg)), false)),
        }
        if status == 416 || (status == 206 && start != have) {
            // The server will not continue where the file stops: start over.
            File::create(part).map_err(|e| (io(e), false))?;
            return Err((Failure::Retry("the server refused to resume".into()), true));
        }
        let file = if start == 0 { File::create(part) } else { File::options().append(true).open(part) };
        let mut file = file.map_err(|e| (io(e), false))?;
        let mut pos = start;
        on_pos(pos);
        let mut reader = resp.body_mut().with_config().reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut progressed = false;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err((Failure::Retry(format!("connection cut: {e}")), progressed)),
            };
            pos += n as u64;
            if let Some(limit) = size.filter(|&s| pos > s) {
                // More bytes than announced: stop before the disk fills.
                let message = format!("more than the {limit} bytes announced");
                let e = HubError::Protocol { url: final_url.clone(), message };
                return Err((Failure::Fatal(e), progressed));
            }
            file.write_all(&buf[..n]).map_err(|e| (io(e), progressed))?;
            progressed = true;
            on_pos(pos);
        }
        file.sync_all().map_err(|e| (io(e), progressed))?;
        Ok(())
    }

    /// [`Client::attempt_following`] with retries, for requests that read no body into a file.
    fn send_following(
        &self,
        method: Method,
        url: &str,
        ctx: Ctx,
        cross_origin: bool,
    ) -> Result<(Response<Body>, String)> {
        let mut failures = 0u32;
        loop {
            match self.attempt_following(method, url, None, cross_origin) {
                Ok((mut resp, final_url)) => {
                    let status = resp.status().as_u16();
                    if status >= 400 {
                        return Err(status_error(&mut resp, &final_url, status, ctx, &self.cfg));
                    }
                    return Ok((resp, final_url));
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(message)) => {
                    failures += 1;
                    if failures >= self.cfg.attempts.max(1) {
                        return Err(HubError::Network { url: url.to_string(), message, attempts: failures });
                    }
                    std::thread::sleep(self.cfg.backoff * 2u32.saturating_pow(failures - 1));
                }
            }
        }
    }

    /// One request and its redirects: same-origin ones always, others when `cross_origin`. Retryable statuses
    /// (429, 5xx) and transport errors come back as [`Failure::Retry`].
    fn attempt_following(
        &self,
        method: Method,
        url: &str,
        range: Option<u64>,
        cross_origin: bool,
    ) -> std::result::Result<(Response<Body>, String), Failure> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.attempt(method, &url, range)?;
            let status = resp.status().as_u16();
            if matches!(status, 429 | 500 | 502 | 503 | 504) {
                return Err(Failure::Retry(format!("HTTP {status}")));
            }
            if !(300..400).contains(&status) || status == 304 {
                return Ok((resp, url));
            }
            let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) else {
                return Ok((resp, url));
            };
            let next = join(&url, loc);
            if !cross_origin && origin(&next) != origin(&url) {
                return Ok((resp, url));
            }
            url = next;
        }
        Err(Failure::Fatal(HubError::Protocol { url, message: format!("more than {MAX_REDIRECTS} redirects") }))
    }

    /// One request. `Authorization` only to the endpoint's origin.
    fn attempt(&self, method: Method, url: &str, range: Option<u64>) -> std::result::Result<Response<Body>, Failure> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let same_origin = self.origin.is_some() && origin(url) == self.origin;
        let mut req = match method {
            Method::Head => self.agent.head(url),
            Method::Get => self.agent.get(url),
        }
        .header("Accept-Encoding", "identity");
        if let (true, Some(token)) = (same_origin, &self.cfg.token) {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(from) = range {
            req = req.header("Range", format!("bytes={from}-"));
        }
        match req.call() {
            Ok(r) => Ok(r),
            Err(
                e @ (ureq::Error::Io(_)
                | ureq::Error::Timeout(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::Protocol(_)),
            ) => Err(Failure::Retry(e.to_string())),
            Err(e) => Err(Failure::Fatal(HubError::Network { url: url.into(), message: e.to_string(), attempts: 1 })),
        }
    }
}

/// huggingface_hub's `_normalize_etag`: drop a weak `W/` prefix and the quotes.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

/// `scheme://host:port` of an absolute URL.
fn origin(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some(format!("{scheme}://{host}:{port}"))
}

/// A `Location` resolved against the URL it came from (absolute, or absolute path on the same origin).
fn join(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let Ok(uri) = base.parse::<Uri>() else { return location.to_string() };
    let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) else { return location.to_string() };
    if location.starts_with('/') {
        format!("{scheme}://{auth}{location}")
    } else {
        let path = uri.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{auth}{dir}{location}")
    }
}

/// The first byte of a 206 answer's `Content-Range: bytes A-B/N`.
fn content_range_start(resp: &Response<Body>) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    v.trim().strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// The refusal an error status stands for (huggingface_hub's `hf_raise_for_status`).
fn status_error(resp: &mut Response<Body>, url: &str, status: u16, ctx: Ctx, cfg: &HubConfig) -> HubError {
    let code = resp.headers().get("x-error-code").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let message = resp.headers().get("x-error-message").and_then(|v| v.to_str().ok()).map(str::to_string);
    let repo = ctx.repo.id.clone();
    let revision = ctx.repo.revision.clone();
    match (code.as_str(), status) {
        ("RepoNotFound", _) => {
            HubError::RepoNotFound { repo, endpoint: cfg.endpoint.clone(), token_hint: cfg.token_hint() }
        }
        ("RevisionNotFound", _) => HubError::RevisionNotFound { repo, revision },
        ("EntryNotFound", _) => {
            let commit = resp.headers().get("x-repo-commit").and_then(|v| v.to_str().ok()).map(str::to_string);
            HubError::EntryNotFound { repo, revision, file: ctx.file.unwrap_or("").into(), commit }
        }
        ("GatedRepo", _) | (_, 401 | 403) => HubError::Unauthorized { repo, token_hint: cfg.token_hint() },
        _ => {
            let body = if message.is_none() && resp.status().as_u16() != 204 {
                resp.body_mut().with_config().limit(ERROR_BODY_LIMIT).read_to_string().ok()
            } else {
                None
            };
            let detail = message.or(body).map(|m| format!(": {}", m.trim())).unwrap_or_default();
            HubError::Status { url: url.to_string(), status, detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_joins() {
        assert_eq!(origin("https://huggingface.co/a/b").as_deref(), Some("https://huggingface.co:443"));
        assert_eq!(origin("http://127.0.0.1:8080/x").as_deref(), Some("http://127.0.0.1:8080"));
        assert_ne!(origin("http://127.0.0.1:8080/x"), origin("http://127.0.0.1:8081/x"));
        assert_eq!(join("http://h:1/a/b/c", "/x/y"), "http://h:1/x/y");
        assert_eq!(join("http://h:1/a/b/c", "d"), "http://h:1/a/b/d");
        assert_eq!(join("http://h:1/a", "https://cdn/z"), "https://cdn/z");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
    }
}
