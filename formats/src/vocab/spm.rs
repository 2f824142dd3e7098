//! SentencePiece `tokenizer.model` -> `tokenizer.ggml.model = "llama"` (llama.cpp `conversion/base.py`
//! `_create_vocab_sentencepiece` at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62). The model file is a protobuf
//! `ModelProto`; only its `pieces` (field 1: piece, score, type) are needed, so this reads the wire format
//! directly instead of depending on a protobuf library.

use std::path::Path;

use super::{TokenType, Vocab};
use crate::error::{FormatError, Result};

/// Largest `tokenizer.model` read.
use crate::bounded::MAX_TOKENIZER_MODEL_BYTES as MAX_MODEL_BYTES;

/// One piece of the SentencePiece model.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    /// `SentencePiece.Type`: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.
    pub kind: u32,
}

/// Parse the pieces of a serialized `ModelProto`.
pub fn parse_pieces(path: &Path, data: &[u8]) -> Result<Vec<Piece>> {
    let bad =
        |m: &str| FormatError::Tokenizer { path: path.into(), message: format!("invalid SentencePiece model: {m}") };
    let mut pieces = Vec::new();
    let mut r = Reader { data, pos: 0 };
    while !r.done() {
        let (field, wire) = r.key().ok_or_else(|| bad("truncated field key"))?;
        let body = r.skip(wire).ok_or_else(|| bad("truncated field"))?;
        if field == 1 && wire == 2 {
            let mut p = Piece { piece: String::new(), score: 0.0, kind: 1 };
            let mut s = Reader { data: body, pos: 0 };
            while !s.done() {
                let (f, w) = s.key().ok_or_else(|| bad("truncated piece"))?;
                let v = s.skip(w).ok_or_else(|| bad("truncated piece field"))?;
                match (f, w) {
                    (1, 2) => p.piece = String::from_utf8(v.to_vec()).map_err(|_| bad("piece is not UTF-8"))?,
                    (2, 5) => p.score = f32::from_le_bytes(v.try_into().map_err(|_| bad("bad score"))?),
                    (3, 0) => p.kind = Reader { data: v, pos: 0 }.varint().ok_or_else(|| bad("bad type"))? as u32,
                    _ => {}
                }
            }
            pieces.push(p);
        }
    }
    if pieces.is_empty() {
        return Err(bad("no pieces"));
    }
    Ok(pieces)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn key(&mut self) -> Option<(u64, u64)> {
        let k = self.varint()?;
        Some((k >> 3, k & 7))
    }

    /// The bytes of a field's value (for varints: the varint's own bytes).
    fn skip(&mut self, wire: u64) -> Option<&'a [u8]> {
        let start = self.pos;
        let len = match wire {
            0 => {
                self.varint()?;
                return Some(&self.data[start..self.pos]);
            }
            1 => 8,
            2 => usize::try_from(self.varint()?).ok()?,
            5 => 4,
            _ => return None,
        };
        let start = self.pos;
        let end = start.checked_add(len).filter(|&e| e <= self.data.len())?;
        self.pos = end;
        Some(&self.data[start..end])
    }
}

/// Tokens, scores and types as `_create_vocab_sentencepiece` builds them for a `vocab_size` model.
pub fn sentencepiece_vocab(dir: &Path, vocab_size: u32) -> Result<Vocab> {
    let mut v = pieces_and_added_tokens(dir, vocab_size)?;
    let n = v.tokens.len();
    let tc = dir.join("tokenizer_config.json");
    if tc.is_file() {
        let cfg = crate::hf::read_json(&tc)?;
        if let Some(dec) = cfg.get("added_tokens_decoder").and_then(serde_json::Value::as_object) {
            let scores = v.scores.as_mut().expect("set by pieces_and_added_tokens");
            for (id, data) in dec {
                let (Ok(id), Some(content)) = (id.parse::<usize>(), data.get("content").and_then(|c| c.as_str()))
                else {
                    continue;
                };
                if id >= n {
                    continue;
                }
                let special = data.get("special").and_then(serde_json::Value::as_bool).unwrap_or(false);
                if special || super::looks_special(content) {
                    v.types[id] = TokenType::Control;
                    v.tokens[id] = content.to_string();
                } else {
                    v.types[id] = TokenType::UserDefined;
                    v.tokens[id] = content.replace('\u{2581}', " ");
                }
                scores[id] = -1000.0;
            }
        }
    }
    Ok(v)
}

/// `Phi3MiniModel.set_vocab` for a SentencePiece model (llama.cpp `conversion/phi.py` at 0c1e57098): the pieces
/// and added_tokens.json as [`sentencepiece_vocab`], then every token of tokenizer_config.json's
/// `added_tokens_decoder` and of tokenizer.json's `added_tokens` written as is with score -1000, CONTROL if
/// `special`, else USER_DEFINED.
pub fn phi3_vocab(dir: &Path, vocab_size: u32) -> Result<Vocab> {
    let mut v = pieces_and_added_tokens(dir, vocab_size)?;
    let n = v.tokens.len();
    let mut apply = |id: usize, data: &serde_json::Value| {
        let Some(content) = data.get("content").and_then(serde_json::Value::as_str) else { return };
        if id >= n {
            return;
        }
        v.tokens[id] = content.to_string();
        v.scores.as_mut().expect("set by pieces_and_added_tokens")[id] = -1000.0;
        let special = data.get("special").and_then(serde_json::Value::as_bool).unwrap_or(false);
        v.types[id] = if special { TokenType::Control } else { TokenType::UserDefined };
    };
    let tc = dir.join("tokenizer_config.json");
    if tc.is_file() {
        let cfg = crate::hf::read_json(&tc)?;
        for (id, data) in cfg.get("added_tokens_decoder").and_then(serde_json::Value::as_object).into_iter().flatten() {
            if let Ok(id) = id.parse::<usize>() {
                apply(id, data);
            }
        }
    }
    let tj = dir.join("tokenizer.json");
    if tj.is_file() {
        let json = crate::hf::read_json(&tj)?;
        for data in json.get("added_tokens").and_then(serde_json::Value::as_array).into_iter().flatten() {
            if let Some(id) = data.get("id").and_then(serde_json::Value::as_u64) {
                apply(id as usize, data);
            }
        }
    }
    Ok(v)
}

/// The pieces of tokenizer.model (at most `vocab_size`), padded to `vocab_size` with `[PADi]`, then
/// added_tokens.json.
fn pieces_and_added_tokens(dir: &Path, vocab_size: u32) -> Result<Vocab> {
    let path = dir.join("tokenizer.model");
    let data = crate::bounded::read_capped(&path, MAX_MODEL_BYTES, "tokenizer.model")?;
    let pieces = parse_pieces(&path, &data)?;
    let n = vocab_size as usize;
    let mut v = Vocab {
        tokens: (0..n).map(|i| format!("[PAD{i}]")).collect(),
        scores: Some(vec![-10000.0; n]),
        types: vec![TokenType::Unused; n],
    };
    let scores = v.scores.as_mut().expect("set above");
    for (i, p) in pieces.iter().enumerate().take(n) {
        v.tokens[i] = p.piece.clone();
        scores[i] = p.score;
        // USER_DEFINED pieces stay NORMAL: the converter asks only IsUnknown/IsControl/IsUnused/IsByte.
        v.types[i] = match p.kind {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        };
    }
    let added = dir.join("added_tokens.json");
    if added.is_file() {
        if let serde_json::Value::Object(m) = crate::hf::read_json(&added)? {
            for (text, id) in m {
                if let Some(id) = id.as_u64().map(|i| i as usize).filter(|&i| i < n) {
                    v.tokens[id] = text;
                    scores[id] = -1000.0;
                    v.types[id] = TokenType::UserDefined;
                }
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(text: &str, score: f32, kind: u8) -> Vec<u8> {
        let mut p = vec![0x0A, text.len() as u8];
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        if kind != 1 {
            p.extend_from_slice(&[0x18, kind]);
        }
        let mut out = vec![0x0A, p.len() as u8];
        out.extend(p);
        out
    }

    #[test]
    fn parses_pieces_and_skips_other_fields() {
        let mut data = piece("<unk>", 0.0, 2);
        data.extend(piece("\u{2581}a", -1.5, 1));
        data.extend([0x12, 0x02, 0x08, 0x01]); // trainer_spec, skipped
        let p = parse_pieces(Path::new("t.model"), &data).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].kind, p[1].piece.as_str(), p[1].score, p[1].kind), (2, "\u{2581}a", -1.5, 1));
        assert!(parse_pieces(Path::new("t.model"), &data[..5]).is_err());
    }
}
