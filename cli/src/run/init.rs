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
    let body = starter(source, &text_path);
    super::schema::parse(output, &body)?;
    write_atomic(output, body.as_bytes())?;
    eprintln!("wrote {}; run it with `quantforge run {}`", output.display(), output.display());
    Ok(())
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
pub fn starter(source: &str, text: &str) -> String {
    let (source, text) = (toml_string(source), toml_string(text));
    format!(
        r#"# quantforge pipeline: `quantforge run THIS_FILE [--out DIR]`.
# Paths are relative to this file. Steps whose inputs are unchanged are not redone; --force redoes them.
# Reference: docs/run.md.

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
gates = {{ max_kld = 0.01, max_delta_ppl = 0.05 }}

[[output]]
type = "Q8_0"
gates = {{ max_kld = 0.02, max_delta_ppl = 0.1 }}

[[output]]
type = "Q4_K_M"
imatrix = true
# Small models lose more to 4 bits: tighten these for models of a billion parameters and up.
gates = {{ max_kld = 1.0, max_delta_ppl = 5.0 }}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_parses() {
        let p = super::super::schema::parse(Path::new("p.toml"), &starter("org/name", "t \"x\".txt")).unwrap();
        assert_eq!(p.outputs.len(), 3);
        assert!(p.outputs[2].imatrix);
        assert_eq!(p.imatrix.unwrap().text, Path::new("t \"x\".txt"));
    }
}
