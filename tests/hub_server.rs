//! A hub served from loopback for end-to-end tests: two listeners (the hub, and a "CDN" on another port that LFS
//! files redirect to), the resolve and file-list endpoints with the huggingface_hub headers, refusals with
//! `X-Error-Code`, a connection cut mid-file, busy answers and a corrupt blob. Included by the test binaries that
//! need it (`#[path]`), next to `mod util;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::util::{fixture, Run};

/// The commit every test repo is at.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The token gated repos accept.
pub const TOKEN: &str = "hf_test_token";

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A repo file as the server holds it.
pub struct RepoFile {
    pub path: String,
    pub bytes: Vec<u8>,
    /// LFS files are redirected to the CDN and carry `X-Linked-Etag` (their sha256).
    pub lfs: bool,
    /// The etag announced (for LFS: the sha256 the bytes should have).
    pub etag: String,
}

struct Repo {
    id: &'static str,
    files: Vec<RepoFile>,
    gated: bool,
}

pub fn file(path: &str, bytes: Vec<u8>) -> RepoFile {
    let lfs = path.ends_with(".safetensors") || path.ends_with(".bin");
    // Non-LFS etags are git blob hashes on the hub: 40 hex digits; any stable value serves here.
    let etag = if lfs { sha256_hex(&bytes) } else { sha256_hex(&bytes)[..40].to_string() };
    RepoFile { path: path.into(), bytes, lfs, etag }
}

pub fn stories_files() -> Vec<RepoFile> {
    let dir = fixture("stories260K");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names.into_iter().map(|n| file(&n, std::fs::read(dir.join(&n)).unwrap())).collect()
}

fn repos() -> Vec<Repo> {
    let mut corrupt = stories_files();
    for f in corrupt.iter_mut().filter(|f| f.lfs) {
        f.etag = sha256_hex(b"not these bytes");
    }
    let config = std::fs::read(fixture("stories260K/config.json")).unwrap();
    vec![
        Repo { id: "test/stories260K", files: stories_files(), gated: false },
        Repo { id: "test/gated", files: stories_files(), gated: true },
        Repo { id: "test/corrupt", files: corrupt, gated: false },
        Repo {
            id: "test/pickle",
            files: vec![file("config.json", config), file("pytorch_model.bin", vec![0x80, 2, 0x7d])],
            gated: false,
        },
        Repo { id: "test/empty", files: vec![file("README.md", b"# empty\n".to_vec())], gated: false },
        Repo {
            id: "test/sharded",
            files: vec![
                file(
                    "model-00001-of-00002.safetensors",
                    std::fs::read(fixture("stories260K/model.safetensors")).unwrap(),
                ),
                file(
                    "model-00002-of-00002.safetensors",
                    std::fs::read(fixture("stories260K-lora-kjv-r4/adapter_model.safetensors")).unwrap(),
                ),
                file("model.safetensors.index.json", b"{}".to_vec()),
            ],
            gated: false,
        },
    ]
}

/// One request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub cdn: bool,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

pub struct Server {
    pub hub: String,
    log: Arc<Mutex<Vec<Seen>>>,
    /// Cut the next full GET of an LFS file halfway.
    pub cut_next: Arc<AtomicBool>,
    /// Answer this many hub requests with 503 first.
    pub busy: Arc<AtomicUsize>,
    /// The most CDN answers in flight at once.
    pub peak: Arc<AtomicUsize>,
}

struct Shared {
    repos: Vec<Repo>,
    cdn_port: u16,
    log: Arc<Mutex<Vec<Seen>>>,
    cut_next: Arc<AtomicBool>,
    busy: Arc<AtomicUsize>,
    active: AtomicUsize,
    peak: Arc<AtomicUsize>,
}

impl Server {
    pub fn start() -> Server {
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let cut_next = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            repos: repos(),
            cdn_port: cdn.local_addr().unwrap().port(),
            log: log.clone(),
            cut_next: cut_next.clone(),
            busy: busy.clone(),
            active: AtomicUsize::new(0),
            peak: peak.clone(),
        });
        let hub_url = format!("http://127.0.0.1:{}", hub.local_addr().unwrap().port());
        for (listener, is_cdn) in [(hub, false), (cdn, true)] {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let shared = shared.clone();
                    std::thread::spawn(move || serve(conn, is_cdn, &shared));
                }
            });
        }
        Server { hub: hub_url, log, cut_next, busy, peak }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

/// Answer one request (one per connection: `Connection: close`).
fn serve(conn: TcpStream, is_cdn: bool, s: &Shared) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    s.log.lock().unwrap().push(Seen {
        cdn: is_cdn,
        method: method.clone(),
        path: target.clone(),
        headers: headers.clone(),
    });
    let head = method == "HEAD";
    let mut out = conn;
    let respond = |out: &mut TcpStream, status: &str, extra: &[(String, String)], body: &[u8]| {
        let mut text = format!("HTTP/1.1 {status}\r\n");
        for (k, v) in extra {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
        let _ = out.write_all(text.as_bytes());
        if !head {
            let _ = out.write_all(body);
        }
    };
    let error = |out: &mut TcpStream, status: &str, code: &str, commit: bool| {
        let mut h = vec![("X-Error-Code".to_string(), code.to_string())];
        if commit {
            h.push(("X-Repo-Commit".into(), COMMIT.into()));
        }
        respond(out, status, &h, code.as_bytes());
    };

    if is_cdn {
        // /lfs/<repo index>/<file index>
        let ids: Vec<usize> = target.trim_start_matches("/lfs/").split('/').filter_map(|p| p.parse().ok()).collect();
        let Some(f) = ids.first().and_then(|&r| s.repos.get(r)).and_then(|r| r.files.get(*ids.get(1)?)) else {
            return respond(&mut out, "404 Not Found", &[], b"");
        };
        let now = s.active.fetch_add(1, Ordering::SeqCst) + 1;
        s.peak.fetch_max(now, Ordering::SeqCst);
        // Slow enough that parallel downloads overlap.
        std::thread::sleep(std::time::Duration::from_millis(200));
        send_bytes(&mut out, &f.bytes, &headers, head, &[], s.cut_next.as_ref());
        s.active.fetch_sub(1, Ordering::SeqCst);
        return;
    }

    if s.busy.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return respond(&mut out, "503 Service Unavailable", &[], b"busy");
    }
    let path = target.split('?').next().unwrap_or("");
    let (repo_id, rest, api) = if let Some(p) = path.strip_prefix("/api/models/") {
        match p.split_once("/revision/") {
            Some((id, rev)) => (id.to_string(), rev.to_string(), true),
            None => return respond(&mut out, "404 Not Found", &[], b""),
        }
    } else {
        let p = path.trim_start_matches('/');
        match p.split_once("/resolve/") {
            Some((id, rest)) => (id.to_string(), rest.to_string(), false),
            None => return respond(&mut out, "404 Not Found", &[], b""),
        }
    };
    if repo_id == "test/renamed" {
        // A renamed repo: a relative redirect to its new name, as the hub sends.
        let location = target.replacen("test/renamed", "test/stories260K", 1);
        return respond(&mut out, "307 Temporary Redirect", &[("Location".into(), location)], b"");
    }
    let Some((ri, repo)) = s.repos.iter().enumerate().find(|(_, r)| r.id == repo_id) else {
        // The hub answers 401 for unknown repos when the caller may lack access.
        return error(&mut out, "401 Unauthorized", "RepoNotFound", false);
    };
    let (rev, file_path) = rest.split_once('/').unwrap_or((&rest, ""));
    if rev != "main" && rev != COMMIT {
        return error(&mut out, "404 Not Found", "RevisionNotFound", false);
    }
    if api {
        let siblings: Vec<String> = repo.files.iter().map(|f| format!("{{\"rfilename\":\"{}\"}}", f.path)).collect();
        let body = format!("{{\"id\":\"{}\",\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}", repo.id, siblings.join(","));
        return respond(&mut out, "200 OK", &[("Content-Type".into(), "application/json".into())], body.as_bytes());
    }
    if repo.gated && headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
        return error(&mut out, "401 Unauthorized", "GatedRepo", false);
    }
    let Some((fi, f)) = repo.files.iter().enumerate().find(|(_, f)| f.path == file_path) else {
        return error(&mut out, "404 Not Found", "EntryNotFound", true);
    };
    let commit = ("X-Repo-Commit".to_string(), COMMIT.to_string());
    if f.lfs {
        let location = format!("http://127.0.0.1:{}/lfs/{ri}/{fi}", s.cdn_port);
        let h = [
            commit,
            ("Location".into(), location),
            // A different ETag on the redirect itself: X-Linked-Etag must win.
            ("ETag".into(), "\"redirect-etag\"".into()),
            ("X-Linked-Etag".into(), format!("\"{}\"", f.etag)),
            ("X-Linked-Size".into(), f.bytes.len().to_string()),
        ];
        return respond(&mut out, "302 Found", &h, b"");
    }
    let h = [commit, ("ETag".into(), format!("\"{}\"", f.etag))];
    send_bytes(&mut out, &f.bytes, &headers, head, &h, &AtomicBool::new(false));
}

/// 200, or 206 for `Range: bytes=N-`; with `cut` set, send half of a full answer and hang up.
fn send_bytes(
    out: &mut TcpStream,
    bytes: &[u8],
    req: &BTreeMap<String, String>,
    head: bool,
    extra: &[(String, String)],
    cut: &AtomicBool,
) {
    let from: Option<usize> =
        req.get("range").and_then(|r| r.strip_prefix("bytes=")?.trim_end_matches('-').parse().ok());
    let mut text = match from {
        Some(n) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{}\r\n",
            bytes.len().saturating_sub(1),
            bytes.len()
        ),
        None => "HTTP/1.1 200 OK\r\n".to_string(),
    };
    let body = &bytes[from.unwrap_or(0).min(bytes.len())..];
    for (k, v) in extra {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n", body.len()));
    let _ = out.write_all(text.as_bytes());
    if head {
        return;
    }
    if from.is_none() && !head && cut.swap(false, Ordering::SeqCst) {
        let _ = out.write_all(&body[..body.len() / 2]);
        let _ = out.flush();
        let _ = out.shutdown(std::net::Shutdown::Both);
        return;
    }
    let _ = out.write_all(body);
}

/// Run `quantforge` with HF_HOME = `home`, the hub at `hub`, and `env` on top (no HF_* from outside).
pub fn qf_hub<I, S>(home: &Path, hub: &str, env: &[(&str, &str)], args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quantforge"));
    for k in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("HF_HOME", home).env("HF_ENDPOINT", hub).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run quantforge");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn repo_dir(home: &Path, id: &str) -> PathBuf {
    home.join("hub").join(format!("models--{}", id.replace('/', "--")))
}
