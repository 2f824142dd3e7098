//! `run --init SOURCE -o PIPELINE.toml`: a commented starter pipeline (F16, Q8_0, Q4_K_M with an imatrix,
//! perplexity and KL-divergence gates) that runs as written.
//!
//! Invariant: the file written parses with [`super::schema::parse`]; without `--text` its calibration text is
//! written beside it (only when no file of that name is there), so the pipeline runs as is.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::execute::write_atomic;

/// A TinyStories sample (CDLA-Sharing-1.0, see fixtures/README.md): a calibration text that always exists.
const BUNDLED_TEXT: &str = include_str!("../../../fixtures/text/tinystories-valid-sample.txt");
const BUNDLED_NAME: &str = "calibration.txt";

/// Write the starter for `source` to `output`.
pub fn write(source: &str, output: &Path, text: Option<&Path>) -> Result<()> {
    if output.exists() {
        bail!("{}: already exists; the starter is never written over a file", output.display());
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let text_path = match text {
        Some(t) => relative_to(t, &dir),
        None => {
            let bundled = dir.join(BUNDLED_NAME);
            if !bundled.exists() {
                write_atomic(&bundled, BUNDLED_TEXT.as_bytes())?;
            }
            BUNDLED_NAME.to_string()
        }
    };
    let q8_f16 = rows_q8_0_cannot_hold(source)?;
    // A local source is named from the pipeline's folder, as every path in it is.
    let named = if Path::new(source).exists() { relative_to(Path::new(source), &dir) } else { source.to_string() };
    let body = starter(&named, &text_path, &q8_f16);
    super::schema::parse(output, &body)?;
    write_atomic(output, body.as_bytes())?;
    eprintln!("wrote {}; run it with `quantforge run {}`", output.display(), output.display());
    Ok(())
}

/// Tensor roles (`ffn_down`, ...) whose rows are no multiple of Q8_0's 32-value block: Q8_0 has no fallback
/// type for them (as in llama.cpp), so the starter keeps them F16.
fn rows_q8_0_cannot_hold(source: &str) -> Result<Vec<String>> {
    let resolved = super::plan::resolve_source(source, false)?;
    let model = crate::quantize::open_model(&resolved.path, "auto", &[])?;
    let mut roles = Vec::new();
    for i in 0..model.len() {
        let (name, ne, _) = model.tensor(i);
        if ne.len() >= 2 && ne[0] % 32 != 0 {
            let role = name.strip_suffix(".weight").unwrap_or(name);
            let role = match role.strip_prefix("blk.") {
                Some(rest) => rest.split_once('.').map_or(rest, |(_, r)| r),
                None => role,
            };
            if !roles.iter().any(|r| r == role) {
                roles.push(role.to_string());
            }
        }
    }
    Ok(roles)
}

/// `t` as the pipeline in `dir` should name it: relative when `t` is inside `dir`, else absolute.
fn relative_to(t: &Path, dir: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (t_abs, d_abs) = (abs(t), abs(dir));
    t_abs.strip_prefix(&d_abs).unwrap_or(&t_abs).to_string_lossy().into_owned()
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The starter's text.
pub fn starter(source: &str, text: &str, q8_f16: &[String]) -> String {
    let (source, text) = (toml_string(source), toml_string(text));
    let q8_keep = if q8_f16.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = q8_f16.iter().map(|r| toml_string(&format!("{r}=f16"))).collect();
        format!(
            "# These tensors' rows are no multiple of Q8_0's 32-value blocks (Q8_0 has no fallback type): kept F16.\n\
             tensor_type = [{}]\n",
            list.join(", ")
        )
    };
    format!(
        r#"# quantforge pipeline: `quantforge run THIS_FILE [--out DIR]`.
# Paths are relative to this file. Steps whose inputs are unchanged are not redone; --force redoes them.
# Reference: the "Using quantforge in CI" section of the quantforge README.

[source]
# A hub repo id, org/name or org/name@revision (branch, tag or commit), or a local model folder or GGUF.
model = {source}
# Precision a Hugging Face folder is converted to before quantizing: auto (bf16 for bf16 checkpoints, else
# f16), f32, f16 or bf16.
outtype = "auto"

[card]
# Front matter of the model card (README.md). Set the licence of the source model.
# license = "apache-2.0"
quantized_by = "quantforge"
tags = []
# Modelfile `PARAMETER num_ctx` (default: the model's context length).
# num_ctx = 4096

[imatrix]
# The importance matrix used by outputs with `imatrix = true`. Use text from the model's own domain.
text = {text}
ctx = 128
chunks = 16

[eval]
# Every output is measured against the source on this text: PPL, KL divergence, same-top share.
# Use a text the model was not calibrated on.
text = {text}
ctx = 128
chunks = 16

[[output]]
type = "F16"
# A gate fails the run (exit code 1) and keeps the artifact out of the output folder.
gates = {{ max_kld = 0.001, max_delta_ppl = 0.05 }}

[[output]]
type = "Q8_0"
{q8_keep}gates = {{ max_kld = 0.01, max_delta_ppl = 0.1 }}

[[output]]
type = "Q4_K_M"
imatrix = true
# Loose enough for small models; models of a billion parameters and up do better at 4 bits.
gates = {{ max_kld = 0.1, max_delta_ppl = 1.0 }}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_parses() {
        let p =
            super::super::schema::parse(Path::new("p.toml"), &starter("org/name", "t \"x\".txt", &["ffn_down".into()]))
                .unwrap();
        assert_eq!(p.outputs.len(), 3);
        assert!(p.outputs[2].imatrix);
        assert_eq!(p.outputs[1].tensor_type, ["ffn_down=f16"]);
        assert_eq!(p.imatrix.unwrap().text, Path::new("t \"x\".txt"));
    }
}
