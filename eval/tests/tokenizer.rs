//! The SentencePiece rebuild (merges derived from scores, as from GGUF metadata) against the model's own
//! `tokenizer.json`, on the committed stories260K vocabulary.

use std::path::{Path, PathBuf};

use quantforge_eval::Tokenizer;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel)
}

#[test]
fn sentencepiece_from_scores_matches_tokenizer_json() {
    let hf = Tokenizer::from_hf_dir(&fixture("stories260K")).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("stories260K/tokenizer.json")).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (piece, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = piece.clone();
    }
    // llama2.c's tok512 is a BPE-trained SentencePiece model: score = -id for ordinary pieces (what
    // llama.cpp's converter stores), byte pieces and control tokens typed as llama.cpp types them.
    let types: Vec<i64> = tokens
        .iter()
        .map(|t| match t.as_str() {
            "<unk>" => 2,
            "<s>" | "</s>" => 3,
            t if t.starts_with("<0x") && t.len() == 6 => 6,
            _ => 1,
        })
        .collect();
    let scores: Vec<f64> = (0..tokens.len()).map(|i| -(i as f64)).collect();
    let spm = Tokenizer::from_sentencepiece(&tokens, &scores, &types, 0, true, Some(1)).unwrap();

    assert_eq!(hf.bos_if_added(), Some(1));
    let text = std::fs::read_to_string(fixture("text/tinystories-valid-sample.txt")).unwrap();
    let mut checked = 0;
    for line in text.split(['\n', '.']).filter(|l| !l.trim().is_empty()).take(300) {
        let want = hf.encode(line, true).unwrap();
        assert_eq!(spm.encode(line, true).unwrap(), want, "line: {line}");
        assert_eq!(want[0], 1);
        checked += 1;
    }
    assert!(checked > 50);
    // Characters outside the 512-piece vocabulary fall back to bytes and decode back.
    let odd = "naïve 日本 ✓";
    let ids = spm.encode(odd, false).unwrap();
    assert!(ids.iter().any(|&i| types[i as usize] == 6));
    assert_eq!(spm.decode(&ids).unwrap(), odd);
}
