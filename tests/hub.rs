//! `quantforge pull` and repo ids against a hub served from loopback by the test itself: two listeners (the hub,
//! and a "CDN" on another port that LFS files redirect to), the resolve and file-list endpoints with the
//! huggingface_hub headers, refusals with `X-Error-Code`, a connection cut mid-file and a corrupt blob. Every
//! test has its own server and its own HF_HOME. Unix only: the cache layout is made of symlinks.

#![cfg(unix)]

mod util;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use util::{fixture, Run};

/// The commit every test repo is at.
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The token gated repos accept.
const TOKEN: &str = "hf_test_token";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A repo file as the server holds it.
struct RepoFile {
    path: String,
    bytes: Vec<u8>,
    /// LFS files are redirected to the CDN and carry `X-Linked-Etag` (their sha256).
    lfs: bool,
    /// The etag announced (for LFS: the sha256 the bytes should have).
    etag: String,
}

struct Repo {
    id: &'static str,
    files: Vec<RepoFile>,
    gated: bool,
}

fn file(path: &str, bytes: Vec<u8>) -> RepoFile {
    let lfs = path.ends_with(".safetensors") || path.ends_with(".bin");
    // Non-LFS etags are git blob hashes on the hub: 40 hex digits; any stable value serves here.
    let etag = if lfs { sha256_hex(&bytes) } else { sha256_hex(&bytes)[..40].to_string() };
    RepoFile { path: path.into(), bytes, lfs, etag }
}

fn stories_files() -> Vec<RepoFile> {
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
struct Seen {
    cdn: bool,
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
}

struct Server {
    hub: String,
    log: Arc<Mutex<Vec<Seen>>>,
    /// Cut the next full GET of an LFS file halfway.
    cut_next: Arc<AtomicBool>,
    /// Answer this many hub requests with 503 first.
    busy: Arc<AtomicUsize>,
    /// The most CDN answers in flight at once.
    peak: Arc<AtomicUsize>,
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
    fn start() -> Server {
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

    fn seen(&self) -> Vec<Seen> {
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
fn qf_hub<I, S>(home: &Path, hub: &str, env: &[(&str, &str)], args: I) -> Run
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

fn repo_dir(home: &Path, id: &str) -> PathBuf {
    home.join("hub").join(format!("models--{}", id.replace('/', "--")))
}

fn convert_args<'a>(input: &'a OsStr, out: &'a Path) -> Vec<&'a OsStr> {
    vec![OsStr::new("convert"), input, OsStr::new("-o"), out.as_os_str(), OsStr::new("-q")]
}

#[test]
fn pull_lays_out_the_cache_and_converts_like_the_local_folder() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let stdout = qf_hub(h, &server.hub, &[("HF_TOKEN", TOKEN)], ["pull", "test/stories260K"]).ok();
    let repo = repo_dir(h, "test/stories260K");
    let snap = repo.join("snapshots").join(COMMIT);
    assert_eq!(stdout.trim(), snap.display().to_string());
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
    for f in stories_files() {
        let link = snap.join(&f.path);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../../blobs").join(&f.etag), "{}", f.path);
        assert_eq!(std::fs::read(&link).unwrap(), f.bytes, "{}", f.path);
    }
    assert!(h.join("hub/.locks/models--test--stories260K").is_dir());
    let seen = server.seen();
    // The token goes to the hub, never to the CDN the LFS file redirects to.
    assert!(seen
        .iter()
        .filter(|r| !r.cdn)
        .all(|r| r.headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"))));
    let cdn: Vec<&Seen> = seen.iter().filter(|r| r.cdn).collect();
    assert!(!cdn.is_empty(), "the LFS file came through the redirect");
    assert!(cdn.iter().all(|r| !r.headers.contains_key("authorization")), "{cdn:?}");
    assert!(seen
        .iter()
        .any(|r| r.method == "HEAD" && r.path == format!("/test/stories260K/resolve/{COMMIT}/config.json")));

    // Convert by repo id (from the cache now) = convert the fixture folder.
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("hub.gguf"), out.path().join("local.gguf"));
    qf_hub(h, &server.hub, &[], convert_args(OsStr::new("test/stories260K"), &a)).ok();
    qf_hub(h, &server.hub, &[], convert_args(fixture("stories260K").as_os_str(), &b)).ok();
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "convert by repo id differs from the folder");
}

#[test]
fn offline_converts_a_pulled_repo_with_zero_requests() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    qf_hub(h, &server.hub, &[], ["pull", "test/stories260K", "-q"]).ok();
    let before = server.seen().len();
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("off.gguf"), out.path().join("local.gguf"));
    let offline = [("HF_HUB_OFFLINE", "1")];
    qf_hub(h, &server.hub, &offline, convert_args(OsStr::new("test/stories260K"), &a)).ok();
    qf_hub(h, &server.hub, &offline, ["pull", "test/stories260K", "-q"]).ok();
    qf_hub(h, &server.hub, &offline, convert_args(OsStr::new(&format!("test/stories260K@{COMMIT}")), &b)).ok();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // Not in the cache: refused, still without a request.
    let err = qf_hub(h, &server.hub, &offline, ["pull", "test/corrupt"]).fails();
    assert!(err.contains("HF_HUB_OFFLINE") && err.contains("test/corrupt"), "{err}");
    assert_eq!(server.seen().len(), before, "offline runs sent requests: {:?}", &server.seen()[before..]);
}

#[test]
fn a_cut_connection_resumes_with_range() {
    let server = Server::start();
    server.cut_next.store(true, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    qf_hub(h, &server.hub, &[], ["pull", "test/stories260K", "--include", "*.safetensors", "-q"]).ok();
    let st = std::fs::read(fixture("stories260K/model.safetensors")).unwrap();
    let snap = repo_dir(h, "test/stories260K").join("snapshots").join(COMMIT);
    assert_eq!(std::fs::read(snap.join("model.safetensors")).unwrap(), st);
    assert!(!snap.join("config.json").exists(), "--include took only the weights");
    let gets: Vec<Seen> = server.seen().into_iter().filter(|r| r.cdn && r.method == "GET").collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let range = gets[1].headers.get("range").expect("the second GET resumes");
    assert_eq!(range, &format!("bytes={}-", st.len() / 2));
}

#[test]
fn a_blob_that_fails_its_sha256_is_not_linked() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let err = qf_hub(h, &server.hub, &[], ["pull", "test/corrupt", "-q"]).fails();
    assert!(err.contains("sha256") && err.contains("model.safetensors") && err.contains("test/corrupt"), "{err}");
    let repo = repo_dir(h, "test/corrupt");
    assert!(!repo.join("snapshots").join(COMMIT).join("model.safetensors").exists());
    let blobs: Vec<String> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let bad = sha256_hex(b"not these bytes");
    assert!(!blobs.iter().any(|b| b.starts_with(&bad)), "{blobs:?}");
}

#[test]
fn refusals_name_the_repo_and_the_cause() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let err = qf_hub(h, &server.hub, &[], ["pull", "test/gated"]).fails();
    assert!(err.contains("test/gated") && err.contains("HF_TOKEN"), "{err}");
    qf_hub(h, &server.hub, &[("HF_TOKEN", TOKEN)], ["pull", "test/gated", "-q"]).ok();
    // A token in $HF_HOME/token (where `hf auth login` writes it) works too.
    let home2 = tempfile::tempdir().unwrap();
    std::fs::write(home2.path().join("token"), format!("{TOKEN}\n")).unwrap();
    qf_hub(home2.path(), &server.hub, &[], ["pull", "test/gated", "-q"]).ok();

    let err = qf_hub(h, &server.hub, &[], ["pull", "test/missing"]).fails();
    assert!(err.contains("test/missing") && err.contains("not found"), "{err}");
    let err = qf_hub(h, &server.hub, &[], ["pull", "test/stories260K@no-such-branch"]).fails();
    assert!(err.contains("revision 'no-such-branch' not found"), "{err}");

    let err = qf_hub(h, &server.hub, &[], ["pull", "test/pickle"]).fails();
    assert!(err.contains("pickle") && err.contains("pytorch_model.bin"), "{err}");
    assert!(!server.seen().iter().any(|r| r.path.contains("pytorch_model.bin")), "a pickle file was requested");

    // A missing file: refused, remembered in .no_exist, and known offline.
    let err = qf_hub(h, &server.hub, &[], ["estimate", "test/empty"]).fails();
    assert!(err.contains("config.json") && err.contains("test/empty"), "{err}");
    assert!(repo_dir(h, "test/empty").join(".no_exist").join(COMMIT).join("config.json").is_file());
    let n = server.seen().len();
    let err = qf_hub(h, &server.hub, &[("HF_HUB_OFFLINE", "1")], ["estimate", "test/empty"]).fails();
    assert!(err.contains("not found"), "{err}");
    assert_eq!(server.seen().len(), n);

    // A path that is not a repo id keeps its old error.
    let err = qf_hub(h, &server.hub, &[], ["inspect", "no/such/dir"]).fails();
    assert!(err.contains("no/such/dir"), "{err}");
    assert_eq!(server.seen().len(), n);
}

#[test]
fn estimate_reads_config_json_alone() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let by_repo = qf_hub(h, &server.hub, &[], ["estimate", "test/stories260K", "-t", "f16", "--json"]).json();
    assert!(server.seen().iter().all(|r| !r.path.ends_with(".safetensors") && !r.cdn), "{:?}", server.seen());
    // A local folder holding only config.json is estimated like the config.json itself.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("stories260K/config.json"), dir.path().join("config.json")).unwrap();
    let by_dir = qf_hub(
        h,
        &server.hub,
        &[],
        [OsStr::new("estimate"), dir.path().as_os_str(), OsStr::new("-t"), OsStr::new("f16"), OsStr::new("--json")],
    )
    .json();
    let config = fixture("stories260K/config.json");
    let by_file = qf_hub(
        h,
        &server.hub,
        &[],
        [OsStr::new("estimate"), config.as_os_str(), OsStr::new("-t"), OsStr::new("f16"), OsStr::new("--json")],
    )
    .json();
    let strip = |mut v: serde_json::Value| {
        strip_paths(&mut v);
        v
    };
    assert_eq!(strip(by_dir), strip(by_file.clone()));
    assert_eq!(strip(by_repo), strip(by_file));
}

/// Drop string values that are paths, so results from different places compare.
fn strip_paths(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.as_str().is_some_and(|s| s.contains('/')));
            m.values_mut().for_each(strip_paths);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_paths),
        _ => {}
    }
}

#[test]
fn a_cache_filled_by_huggingface_hub_is_used_as_is() {
    // The layout huggingface_hub writes: blobs named by etag, relative symlinks, refs/main with the commit.
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let repo = repo_dir(h, "someone/stories260K");
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for f in stories_files() {
        std::fs::write(repo.join("blobs").join(&f.etag), &f.bytes).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&f.etag), snap.join(&f.path)).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let (a, b, c) = (out.path().join("a.gguf"), out.path().join("b.gguf"), out.path().join("c.gguf"));
    qf_hub(h, &server.hub, &[("HF_HUB_OFFLINE", "1")], convert_args(OsStr::new("someone/stories260K"), &a)).ok();
    qf_hub(h, &server.hub, &[], convert_args(OsStr::new(&format!("someone/stories260K@{COMMIT}")), &b)).ok();
    qf_hub(h, &server.hub, &[], convert_args(fixture("stories260K").as_os_str(), &c)).ok();
    let local = std::fs::read(&c).unwrap();
    assert!(std::fs::read(&a).unwrap() == local && std::fs::read(&b).unwrap() == local);
    // The commit-hash revision is answered by the cache: no request.
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    // HF_HUB_CACHE moves the cache away from $HF_HOME/hub.
    let elsewhere = tempfile::tempdir().unwrap();
    let err = qf_hub(
        h,
        &server.hub,
        &[("HF_HUB_OFFLINE", "1"), ("HF_HUB_CACHE", elsewhere.path().to_str().unwrap())],
        ["inspect", "someone/stories260K"],
    )
    .fails();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn busy_answers_are_retried_and_json_reports_the_snapshot() {
    let server = Server::start();
    server.busy.store(2, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let token_file = h.join("elsewhere-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let env = [("HF_TOKEN_PATH", token_file.to_str().unwrap())];
    let v = qf_hub(h, &server.hub, &env, ["pull", "test/gated", "--exclude", "tokenizer*", "--json"]).json();
    assert_eq!(v["commit"], COMMIT);
    assert_eq!(v["snapshot"], repo_dir(h, "test/gated").join("snapshots").join(COMMIT).to_str().unwrap());
    let files: Vec<&str> = v["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(files, ["config.json", "generation_config.json", "model.safetensors"]);
    let seen = server.seen();
    assert_eq!(seen.iter().filter(|r| r.path.starts_with("/api/")).count(), 3, "two 503s, then the answer");
}

#[test]
fn a_partial_blob_left_by_an_interrupted_run_is_continued() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let st = std::fs::read(fixture("stories260K/model.safetensors")).unwrap();
    let blobs = repo_dir(h, "test/stories260K").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let part = blobs.join(format!("{}.incomplete", sha256_hex(&st)));
    std::fs::write(&part, &st[..1000]).unwrap();
    qf_hub(h, &server.hub, &[], ["pull", "test/stories260K", "-q"]).ok();
    let gets: Vec<Seen> = server.seen().into_iter().filter(|r| r.cdn && r.method == "GET").collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].headers.get("range").map(String::as_str), Some("bytes=1000-"));
    assert!(!part.exists());
    assert_eq!(std::fs::read(blobs.join(sha256_hex(&st))).unwrap(), st);

    // A partial blob whose bytes are wrong fails the sha256 check once, is discarded, and the next run succeeds.
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let blobs = repo_dir(h, "test/stories260K").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let part = blobs.join(format!("{}.incomplete", sha256_hex(&st)));
    std::fs::write(&part, vec![0u8; 1000]).unwrap();
    let err = qf_hub(h, &server.hub, &[], ["pull", "test/stories260K", "-q"]).fails();
    assert!(err.contains("sha256"), "{err}");
    assert!(!part.exists());
    qf_hub(h, &server.hub, &[], ["pull", "test/stories260K", "-q"]).ok();
    let snap = repo_dir(h, "test/stories260K").join("snapshots").join(COMMIT);
    assert_eq!(std::fs::read(snap.join("model.safetensors")).unwrap(), st);
}

#[test]
fn a_renamed_repo_is_followed_with_the_token() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    qf_hub(h, &server.hub, &[("HF_TOKEN", TOKEN)], ["pull", "test/renamed", "-q"]).ok();
    // Cached under the name asked for, as huggingface_hub does.
    let snap = repo_dir(h, "test/renamed").join("snapshots").join(COMMIT);
    let st = std::fs::read(fixture("stories260K/model.safetensors")).unwrap();
    assert_eq!(std::fs::read(snap.join("model.safetensors")).unwrap(), st);
    let seen = server.seen();
    assert!(seen.iter().any(|r| r.path.starts_with("/test/stories260K/resolve/")), "the redirect was followed");
    let bearer = format!("Bearer {TOKEN}");
    assert!(seen.iter().filter(|r| !r.cdn).all(|r| r.headers.get("authorization") == Some(&bearer)));
}

#[test]
fn shards_download_in_parallel() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    qf_hub(h, &server.hub, &[], ["pull", "test/sharded", "-q"]).ok();
    let snap = repo_dir(h, "test/sharded").join("snapshots").join(COMMIT);
    let one = std::fs::read(fixture("stories260K/model.safetensors")).unwrap();
    let two = std::fs::read(fixture("stories260K-lora-kjv-r4/adapter_model.safetensors")).unwrap();
    assert_eq!(std::fs::read(snap.join("model-00001-of-00002.safetensors")).unwrap(), one);
    assert_eq!(std::fs::read(snap.join("model-00002-of-00002.safetensors")).unwrap(), two);
    assert!(snap.join("model.safetensors.index.json").is_file());
    assert!(server.peak.load(Ordering::SeqCst) >= 2, "the two shards never downloaded at the same time");
}
