//! `quantforge pull` and repo ids against a hub served from loopback by the test itself (tests/hub_server.rs): two
//! listeners (the hub, and a "CDN" on another port that LFS files redirect to), the resolve and file-list endpoints
//! with the huggingface_hub headers, refusals with `X-Error-Code`, a connection cut mid-file and a corrupt blob.
//! Every test has its own server and its own HF_HOME. Unix only: the cache layout is made of symlinks.

#![cfg(unix)]

#[path = "hub_server.rs"]
mod hub_server;
mod util;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::Ordering;

use hub_server::{qf_hub, repo_dir, sha256_hex, stories_files, Seen, Server, COMMIT, TOKEN};
use util::fixture;

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
