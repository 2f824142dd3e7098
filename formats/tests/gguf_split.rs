//! Split GGUF models (`<name>-NNNNN-of-MMMMM.gguf`, keys `split.no`/`split.count`/`split.tensors.count`): opened
//! from any split they read as one model; a missing, extra or foreign split is refused naming the file.

use std::path::{Path, PathBuf};

use quantforge_formats::gguf::split::{parse_split_file_name, split_file_name};
use quantforge_formats::gguf::{GgufFile, GgufValue, GgufWriter, SplitError, TensorSpec};
use quantforge_formats::{FormatError, GgmlType};

/// A tensor's values: distinct for every tensor and element, so data read from the wrong file or offset shows.
fn values(tensor: usize, n: usize) -> Vec<u8> {
    (0..n).flat_map(|j| ((tensor * 1000 + j) as f32).to_le_bytes()).collect()
}

fn name(t: usize) -> String {
    format!("blk.{t}.ffn_up.weight")
}

/// Write one file holding tensors `range` (f32, 8 + t values each) with `metadata`.
fn write(path: &Path, metadata: Vec<(String, GgufValue)>, range: std::ops::Range<usize>) {
    let specs = range.clone().map(|t| TensorSpec { name: name(t), ggml_type: GgmlType::F32, ne: vec![8 + t as u64] });
    let mut w = GgufWriter::create(path, &metadata, specs.collect()).unwrap();
    for t in range {
        w.write_tensor(&name(t), &values(t, 8 + t)).unwrap();
    }
    w.finish().unwrap();
}

fn split_kv(no: u16, count: u16, tensors: i32) -> Vec<(String, GgufValue)> {
    vec![
        ("split.no".into(), GgufValue::U16(no)),
        ("split.count".into(), GgufValue::U16(count)),
        ("split.tensors.count".into(), GgufValue::I32(tensors)),
    ]
}

/// Write `prefix` split at `bounds` (tensor index where each file starts, plus the end); returns the paths.
fn write_set(dir: &Path, prefix: &str, bounds: &[usize]) -> Vec<PathBuf> {
    let count = bounds.len() - 1;
    let total = bounds[count] as i32;
    (0..count)
        .map(|i| {
            let path = dir.join(format!("{prefix}-{:05}-of-{count:05}.gguf", i + 1));
            let mut kv =
                if i == 0 { vec![("general.architecture".into(), GgufValue::String("llama".into()))] } else { vec![] };
            kv.extend(split_kv(i as u16, count as u16, total));
            write(&path, kv, bounds[i]..bounds[i + 1]);
            path
        })
        .collect()
}

fn split_error(r: Result<GgufFile, FormatError>) -> SplitError {
    match r {
        Err(FormatError::Split(e)) => e,
        Err(e) => panic!("expected a split error, got {e}"),
        Ok(f) => panic!("expected a split error, opened {f:?}"),
    }
}

#[test]
fn any_split_opens_the_whole_model() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), "m", &[0, 3, 5, 9]);
    for p in &paths {
        let f = GgufFile::open(p).unwrap();
        assert_eq!(f.path(), p.as_path());
        assert_eq!(f.files(), paths.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        assert_eq!(f.tensors_per_file(), [3, 2, 4]);
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, (0..9).map(name).collect::<Vec<_>>());
        for (t, info) in f.tensors().iter().enumerate() {
            assert_eq!(f.tensor_data(info), values(t, 8 + t), "{}", info.name);
            assert_eq!(f.tensor_data_prefetched(info), values(t, 8 + t));
            f.release(info);
            // A copy of the info (not one of the file's own) finds its file by name.
            assert_eq!(f.tensor_data(&info.clone()), values(t, 8 + t));
        }
        // Metadata is the first file's.
        assert_eq!(f.get("general.architecture").and_then(|v| v.as_str()), Some("llama"));
        assert_eq!(f.get("split.no").and_then(|v| v.as_u64()), Some(0));
        let sizes: u64 = paths.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
        assert_eq!(f.file_size(), sizes);
        assert_eq!(f.file_sizes().iter().sum::<u64>(), sizes);
        assert!(f.is_complete());
        assert_eq!(f.model_tensor_count(), 9);
    }
}

#[test]
fn one_split_alone_is_marked_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), "m", &[0, 3, 5]);
    let f = GgufFile::open_single_file(&paths[1]).unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.tensor_data(&f.tensors()[0]), values(3, 11));
    assert_eq!(f.model_tensor_count(), 5);
    assert!(!f.is_complete());
    // An ordinary file is complete, opened either way.
    let plain = dir.path().join("plain.gguf");
    write(&plain, vec![], 0..2);
    for f in [GgufFile::open(&plain).unwrap(), GgufFile::open_single_file(&plain).unwrap()] {
        assert!(f.is_complete());
        assert_eq!(f.files(), [plain.as_path()]);
        assert_eq!(f.tensors_per_file(), [2]);
    }
}

#[test]
fn an_empty_first_split_and_a_set_of_one_open() {
    let dir = tempfile::tempdir().unwrap();
    // gguf-split --no-tensor-in-metadata: the first file holds only metadata.
    let paths = write_set(dir.path(), "meta", &[0, 0, 4]);
    let f = GgufFile::open(&paths[1]).unwrap();
    assert_eq!(f.tensors().len(), 4);
    assert_eq!(f.tensor_data(&f.tensors()[3]), values(3, 11));
    // split.count 1: the file is the set, whatever its name.
    let one = dir.path().join("renamed.gguf");
    write(&one, split_kv(0, 1, 2), 0..2);
    assert_eq!(GgufFile::open(&one).unwrap().tensors().len(), 2);
}

#[test]
fn a_missing_split_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), "m", &[0, 3, 5, 9]);
    std::fs::remove_file(&paths[2]).unwrap();
    for p in &paths[..2] {
        match split_error(GgufFile::open(p)) {
            SplitError::Missing { path, no, count, from } => {
                assert_eq!((path, no, count, &from), (paths[2].clone(), 3, 3, p));
            }
            e => panic!("{e}"),
        }
    }
    let msg = split_error(GgufFile::open(&paths[0])).to_string();
    assert!(msg.contains("m-00003-of-00003.gguf") && msg.contains("missing"), "{msg}");
}

#[test]
fn a_split_of_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_set(dir.path(), "m", &[0, 3, 5]);
    // Another model's second split (7 tensors in all) put in place of this one's.
    let other = tempfile::tempdir().unwrap();
    let b = write_set(other.path(), "m", &[0, 4, 7]);
    std::fs::copy(&b[1], &a[1]).unwrap();
    match split_error(GgufFile::open(&a[0])) {
        SplitError::Mismatch { path, key, found, expected, reference } => {
            assert_eq!(
                (path, key, found, expected, reference),
                (a[1].clone(), "split.tensors.count", 7, 5, a[0].clone())
            );
        }
        e => panic!("{e}"),
    }
    // Same counts, but the files share a tensor (the other set was split elsewhere).
    let c = write_set(other.path(), "n", &[0, 2, 5]);
    std::fs::copy(&c[1], &a[1]).unwrap();
    match split_error(GgufFile::open(&a[0])) {
        SplitError::DuplicateTensor { path, name: t, other } => {
            assert_eq!((path, t, other), (a[1].clone(), name(2), a[0].clone()));
        }
        e => panic!("{e}"),
    }
}

#[test]
fn a_wrong_split_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), "m", &[0, 3, 5]);
    // The second file claims a set of three.
    write(&paths[1], split_kv(1, 3, 5), 3..5);
    match split_error(GgufFile::open(&paths[0])) {
        SplitError::Mismatch { path, key, found, expected, .. } => {
            assert_eq!((path, key, found, expected), (paths[1].clone(), "split.count", 3, 2));
        }
        e => panic!("{e}"),
    }
    // Opened from that file, its own name contradicts its keys.
    match split_error(GgufFile::open(&paths[1])) {
        SplitError::BadName { path, no, count } => assert_eq!((path, no, count), (paths[1].clone(), 2, 3)),
        e => panic!("{e}"),
    }
    // A file named as the second split that says it is the first.
    write(&paths[1], split_kv(0, 2, 5), 3..5);
    assert!(matches!(split_error(GgufFile::open(&paths[0])), SplitError::BadName { path, .. } if path == paths[1]));
}

#[test]
fn tensor_count_must_match_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), "m", &[0, 3, 5]);
    for (i, range) in [(0, 0..3), (1, 3..5)] {
        write(&paths[i], split_kv(i as u16, 2, 6), range);
    }
    match split_error(GgufFile::open(&paths[1])) {
        SplitError::TensorCount { path, declared, files, found } => {
            assert_eq!((path, declared, files, found), (paths[1].clone(), 6, 2, 5));
        }
        e => panic!("{e}"),
    }
}

#[test]
fn an_extra_split_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), "m", &[0, 3, 5]);
    let extra = dir.path().join("m-00003-of-00002.gguf");
    std::fs::copy(&paths[1], &extra).unwrap();
    match split_error(GgufFile::open(&paths[0])) {
        SplitError::Extra { path, no, count } => assert_eq!((path, no, count), (extra.clone(), 3, 2)),
        e => panic!("{e}"),
    }
    // Another set with the same prefix but another count is not in the way.
    std::fs::remove_file(&extra).unwrap();
    write_set(dir.path(), "m", &[0, 1, 2, 5]);
    assert_eq!(GgufFile::open(&paths[0]).unwrap().tensors().len(), 5);
}

#[test]
fn bad_split_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m-00001-of-00002.gguf");
    type Kv = Vec<(String, GgufValue)>;
    let cases: Vec<(Kv, &str, &str)> = vec![
        (vec![("split.count".into(), GgufValue::U16(2))], "split.no", "missing"),
        (split_kv(2, 2, 5), "split.no", "is 2"),
        (split_kv(0, 0, 5), "split.count", "is 0"),
        (split_kv(0, 2, -1), "split.tensors.count", "negative"),
        (
            vec![
                ("split.no".into(), GgufValue::U16(0)),
                ("split.count".into(), GgufValue::String("2".into())),
                ("split.tensors.count".into(), GgufValue::I32(5)),
            ],
            "split.count",
            "type str",
        ),
        (
            vec![
                ("split.no".into(), GgufValue::U16(0)),
                ("split.count".into(), GgufValue::U32(70_000)),
                ("split.tensors.count".into(), GgufValue::I32(5)),
            ],
            "split.count",
            "above the limit",
        ),
    ];
    for (kv, key, says) in cases {
        write(&p, kv, 0..3);
        let e = split_error(GgufFile::open(&p));
        let msg = e.to_string();
        assert!(msg.contains(key) && msg.contains(says) && msg.contains("m-00001-of-00002.gguf"), "{msg}");
        assert!(matches!(e, SplitError::MissingKey { .. } | SplitError::BadKey { .. }), "{msg}");
    }
}

#[test]
fn a_split_with_an_unsplit_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    write(&p, split_kv(0, 2, 5), 0..3);
    let msg = split_error(GgufFile::open(&p)).to_string();
    assert!(msg.contains("model.gguf") && msg.contains("-00001-of-00002.gguf"), "{msg}");
}

#[test]
fn split_file_names() {
    assert_eq!(split_file_name("a/b-q4", 0, 3), "a/b-q4-00001-of-00003.gguf");
    assert_eq!(parse_split_file_name("b-q4-00002-of-00003.gguf"), Some(("b-q4", 2, 3)));
    assert_eq!(parse_split_file_name("x-of-y-00010-of-00012.gguf"), Some(("x-of-y", 10, 12)));
    assert_eq!(parse_split_file_name("b-0002-of-00003.gguf"), None);
    assert_eq!(parse_split_file_name("b-00002-of-00003.bin"), None);
    assert_eq!(parse_split_file_name("b-0000x-of-00003.gguf"), None);
    assert_eq!(parse_split_file_name("00002-of-00003.gguf"), None);
}

proptest::proptest! {
    /// Every name written parses back to its prefix, 1-based number and count.
    #[test]
    fn split_file_names_round_trip(prefix in "[a-zA-Z0-9._-]{0,24}", count in 1usize..=65535, pick in 0usize..65535) {
        let index = pick % count;
        let name = split_file_name(&prefix, index, count);
        proptest::prop_assert_eq!(parse_split_file_name(&name), Some((prefix.as_str(), index + 1, count)));
    }
}
