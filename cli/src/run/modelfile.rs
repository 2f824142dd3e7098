//! An Ollama `Modelfile` per published GGUF: `FROM`, the model's end tokens as `PARAMETER stop`, `num_ctx`,
//! and the licence. The chat template is left to the GGUF's own `tokenizer.chat_template`, which Ollama renders.
//!
//! Invariant: the text depends only on the GGUF's metadata and the pipeline's `[card]`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use quantforge_formats::gguf::{GgufArray, GgufFile};

use super::plan::Context;

/// The token ids that end a turn or the text, as llama.cpp reads them.
const END_TOKEN_KEYS: [&str; 3] =
    ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"];

/// The Modelfile of the GGUF at `path`.
pub fn modelfile(ctx: &Context, path: &Path) -> Result<String> {
    let gguf = GgufFile::open(path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut o = String::new();
    let _ = writeln!(o, "FROM ./{name}");
    let num_ctx = ctx.p.card.num_ctx.or_else(|| context_length(&gguf));
    if let Some(n) = num_ctx {
        let _ = writeln!(o, "PARAMETER num_ctx {n}");
    }
    for stop in end_tokens(&gguf) {
        let _ = writeln!(o, "PARAMETER stop \"{}\"", stop.replace('\\', "\\\\").replace('"', "\\\""));
    }
    if let Some(l) = license(ctx, &gguf) {
        let _ = writeln!(o, "LICENSE \"\"\"{l}\"\"\"");
    }
    Ok(o)
}

/// The licence the card and Modelfiles state: the pipeline's, else the GGUF's `general.license`.
pub fn license(ctx: &Context, gguf: &GgufFile) -> Option<String> {
    ctx.p.card.license.clone().or_else(|| gguf.get("general.license").and_then(|v| v.as_str()).map(String::from))
}

fn context_length(gguf: &GgufFile) -> Option<u64> {
    let arch = gguf.get("general.architecture")?.as_str()?;
    gguf.get(&format!("{arch}.context_length"))?.as_u64()
}

/// The texts of the end tokens, each once, in key order.
fn end_tokens(gguf: &GgufFile) -> Vec<String> {
    let Some(GgufArray::String(tokens)) = gguf.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for key in END_TOKEN_KEYS {
        let token = gguf.get(key).and_then(|v| v.as_u64()).and_then(|id| tokens.get(usize::try_from(id).ok()?));
        if let Some(t) = token {
            if !out.iter().any(|s| s == t) {
                out.push(t.to_string());
            }
        }
    }
    out
}
