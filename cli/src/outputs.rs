//! Per command, every path it reads and every path it writes, checked before any work starts.
//!
//! Invariant: a command runs only when none of its outputs resolves (through symbolic links and `..`) to a file
//! it reads; an input given as a model or adapter directory stands for every file of it that is read (config,
//! tokenizer, chat template, generation config, adapter, safetensors shards; see
//! [`quantforge_formats::output_guard`]). A file output must be absent or a regular file; side inputs (texts,
//! imatrix, tensor-type files, base logits) must be regular files, so that a pipe with no writer cannot block.
//! The libraries check again where they open files; this is the one place that knows a command's whole list.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use quantforge_formats::output_guard::{check_input_file, check_not_read, check_output_file};

/// What one command reads and writes.
#[derive(Default)]
struct Paths<'a> {
    /// Models, adapters and directories (files read from a directory are derived from it).
    inputs: Vec<&'a Path>,
    /// Side files read whole (texts, imatrix, tensor-type files, base logits): regular files only.
    side: Vec<&'a Path>,
    /// Files written.
    files: Vec<&'a Path>,
    /// Directories written.
    dirs: Vec<&'a Path>,
}

impl Paths<'_> {
    fn check(&self) -> Result<()> {
        for side in &self.side {
            check_side(side)?;
        }
        let all: Vec<&Path> = self.inputs.iter().chain(&self.side).copied().collect();
        for out in &self.files {
            check_output_file(out, &all)?;
        }
        for out in &self.dirs {
            check_not_read(out, &all)?;
        }
        Ok(())
    }
}

/// A side file must be a regular file; a missing one is left to its reader, which names it in its own words.
fn check_side(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => bail!("{}: is a directory; expected a file", path.display()),
        Ok(_) => Ok(check_input_file(path)?),
        Err(_) => Ok(()),
    }
}

fn lora_dirs(lora: &[(PathBuf, f32)]) -> impl Iterator<Item = &Path> {
    lora.iter().map(|(p, _)| p.as_path())
}

/// `convert`: the model (or GGUF), merged adapters, the LoRA base; a GGUF file or an HF directory written.
pub fn convert(args: &crate::convert::Args, to_hf: bool) -> Result<()> {
    let mut p = Paths { inputs: vec![&args.input], ..Paths::default() };
    p.inputs.extend(lora_dirs(&args.lora));
    p.inputs.extend(args.lora_base.as_deref());
    if to_hf {
        p.dirs.push(&args.output);
    } else {
        p.files.push(&args.output);
    }
    p.check()
}

/// `quantize`: the model, merged adapters, the imatrix, tensor-type file and calibration texts; the output
/// when given (the default one, `ggml-model-<TYPE>.gguf` or a new checkpoint directory, is never an input).
pub fn quantize(args: &crate::quantize::Args) -> Result<()> {
    let mut p = Paths { inputs: vec![&args.input], ..Paths::default() };
    p.inputs.extend(lora_dirs(&args.lora));
    p.side.extend(args.imatrix.as_deref());
    p.side.extend(args.tensor_type_file.as_deref());
    p.side.extend(args.int.calib.iter().map(PathBuf::as_path));
    // A checkpoint directory with --method alone; a GGUF file with --type (GPTQ into GGUF types included).
    match (args.output.as_deref(), args.int.method.is_some() && args.ftype.is_none()) {
        (Some(out), true) => p.dirs.push(out),
        (Some(out), false) => p.files.push(out),
        (None, _) => {}
    }
    p.files.extend(args.int.save_imatrix.as_deref());
    p.check()
}

/// `inspect`: a GGUF or safetensors file (refused before it is opened when it is a pipe or device), or a
/// directory.
pub fn inspect(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    check_side(path)
}

/// `merge-lora`: the base and the adapter; an HF directory written.
pub fn merge_lora(args: &crate::merge_lora::Args) -> Result<()> {
    Paths { inputs: vec![&args.base, &args.adapter], dirs: vec![&args.output], ..Paths::default() }.check()
}

/// `eval perplexity`: the model and the text; the saved log-probabilities.
pub fn perplexity(args: &crate::eval::PerplexityArgs) -> Result<()> {
    let files = args.save_logits.iter().map(PathBuf::as_path).collect();
    Paths { inputs: vec![&args.model], side: vec![&args.common.text], files, ..Paths::default() }.check()
}

/// `eval kld`: base and model (or the base logits), the text; the saved base log-probabilities.
pub fn kld(args: &crate::eval::KldArgs) -> Result<()> {
    let mut p = Paths { inputs: args.models.iter().map(PathBuf::as_path).collect(), ..Paths::default() };
    p.side.extend(args.text.as_deref());
    p.side.extend(args.base_logits.as_deref());
    p.files.extend(args.save_base.as_deref());
    p.check()
}

/// `eval imatrix`: the model and the text; the matrix.
pub fn imatrix(args: &crate::eval::ImatrixArgs) -> Result<()> {
    Paths { inputs: vec![&args.model], side: vec![&args.common.text], files: vec![&args.output], ..Paths::default() }
        .check()
}

/// `eval compare`: the models, the text and the MMLU data; the chart.
pub fn compare(args: &crate::compare::CompareArgs) -> Result<()> {
    let mut p = Paths { inputs: args.models.iter().map(PathBuf::as_path).collect(), ..Paths::default() };
    p.inputs.extend(args.mmlu.as_deref());
    p.side.push(&args.common.text);
    p.files.extend(args.svg.as_deref());
    p.check()
}

/// `run`: the pipeline file must be a regular file.
pub fn pipeline_file(path: &Path) -> Result<()> {
    check_side(path)
}

/// `run`: the source, adapters and texts; the output folder and every file and checkpoint directory written in it.
pub fn pipeline(inputs: &[&Path], out_dir: &Path, files: &[PathBuf], dirs: &[PathBuf]) -> Result<()> {
    let mut p = Paths { inputs: inputs.to_vec(), dirs: vec![out_dir], ..Paths::default() };
    p.files.extend(files.iter().map(PathBuf::as_path));
    p.dirs.extend(dirs.iter().map(PathBuf::as_path));
    p.check()
}
