//! Outputs never replace inputs, never replace anything but a regular file, and inputs are regular files.
//!
//! Invariant: [`check_output_file`] accepts an output path only when (1) nothing exists there or a regular file
//! does, and (2) the path, resolved as the file system will resolve it when the output is renamed into place
//! (existing ancestors canonicalized, symbolic links followed, `..` applied), is none of the files the command
//! reads. An input given as a directory stands for every file of it that some command reads
//! ([`is_read_from_model_dir`]): the configuration, tokenizer, chat template, generation config, adapter and
//! safetensors files. Other files in an input directory (an earlier `ggml-model-Q4_K_M.gguf`) may be replaced.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::{FormatError, Result};

/// Side files read from a model or adapter directory, besides `*.safetensors` and `tokenizer*`.
const READ_NAMES: [&str; 14] = [
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "adapter_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "quantize_config.json",
    "quant_config.json",
    "preprocessor_config.json",
];

/// Whether a file called `name` in a model or adapter directory is read by some command.
pub fn is_read_from_model_dir(name: &str) -> bool {
    READ_NAMES.contains(&name) || name.starts_with("tokenizer") || name.ends_with(".safetensors")
}

/// The files of directory `dir` that commands read (see [`is_read_from_model_dir`]).
pub fn files_read_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| is_read_from_model_dir(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// `path` as the file system resolves it: canonical when it exists; otherwise its longest existing ancestor
/// canonicalized and the remaining components applied (`..` removing one), so that a path that does not exist
/// yet, through a symbolic link or with `..` in it, still compares equal to the file it would name.
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(c) = fs::canonicalize(path) {
        return c;
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path))
    };
    let parts: Vec<Component> = abs.components().collect();
    for split in (0..parts.len()).rev() {
        let head: PathBuf = parts[..split].iter().collect();
        let Ok(mut out) = fs::canonicalize(&head) else { continue };
        for c in &parts[split..] {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(n) => out.push(n),
                _ => {}
            }
        }
        return out;
    }
    abs
}

/// What a non-regular file is, in words.
fn kind_of(t: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Refuse an output file path that exists and is not a regular file (a directory, pipe, device or socket):
/// renaming over it would replace that node (`/dev/null` itself) rather than write to it.
pub fn check_output_kind(output: &Path) -> Result<()> {
    if output.as_os_str().is_empty() {
        return Err(FormatError::NotRegularOutput { path: output.into(), kind: "an empty path" });
    }
    // A name ending in `.` or `..` (`-o .`) is a directory even if nothing resolves there yet.
    if matches!(output.components().next_back(), Some(Component::CurDir | Component::ParentDir) | None) {
        return Err(FormatError::NotRegularOutput { path: output.into(), kind: "a directory" });
    }
    match fs::metadata(output) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) => Err(FormatError::NotRegularOutput { path: output.into(), kind: kind_of(m.file_type()) }),
        Err(_) => Ok(()),
    }
}

/// Refuse an input that exists and is not a regular file (a pipe, device or socket): it cannot be mapped,
/// its size is unknown, and a pipe with no writer would block forever. Directories are refused too: callers
/// that accept a model directory decide that before asking for a file.
pub fn check_input_file(input: &Path) -> Result<()> {
    match fs::metadata(input) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => Err(FormatError::NotAModel {
            path: input.into(),
            message: "is a directory without config.json; expected a GGUF file, a safetensors file or a \
                      Hugging Face model directory"
                .into(),
        }),
        Ok(m) => Err(FormatError::NotRegularInput { path: input.into(), kind: kind_of(m.file_type()) }),
        Err(e) => Err(FormatError::io(input, e)),
    }
}

/// Refuse `output` when it is not a place for a regular file ([`check_output_kind`]) or when it resolves to a
/// file the command reads: one of `inputs`, or a file read from an input directory ([`files_read_in`]).
pub fn check_output_file(output: &Path, inputs: &[&Path]) -> Result<()> {
    check_output_kind(output)?;
    check_not_read(output, inputs)
}

/// Refuse `output` (a file or a directory) when it resolves to one of `inputs` or to a file read from an input
/// directory ([`files_read_in`]).
pub fn check_not_read(output: &Path, inputs: &[&Path]) -> Result<()> {
    let out = resolve(output);
    for input in inputs {
        let read: Vec<PathBuf> = if input.is_dir() { files_read_in(input) } else { vec![input.to_path_buf()] };
        for file in read {
            if resolve(&file) == out {
                return Err(FormatError::WouldOverwriteInput { path: output.into(), input: file });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir(root: &Path) -> PathBuf {
        let dir = root.join("model");
        fs::create_dir(&dir).unwrap();
        for f in ["config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "model.safetensors"] {
            fs::write(dir.join(f), b"x").unwrap();
        }
        fs::write(dir.join("ggml-model-Q4_K_M.gguf"), b"old output").unwrap();
        dir
    }

    #[test]
    fn files_of_an_input_directory_are_refused_by_any_spelling() {
        let d = tempfile::tempdir().unwrap();
        let dir = model_dir(d.path());
        let refused = |out: &Path| match check_output_file(out, &[&dir]) {
            Err(FormatError::WouldOverwriteInput { input, .. }) => input,
            other => panic!("{}: {other:?}", out.display()),
        };
        assert_eq!(refused(&dir.join("tokenizer.model")), dir.join("tokenizer.model"));
        assert_eq!(refused(&dir.join("config.json")), dir.join("config.json"));
        assert_eq!(refused(&dir.join("..").join("model").join("tokenizer.json")), dir.join("tokenizer.json"));
        assert_eq!(refused(&dir.join("sub-that-does-not-exist/../config.json")), dir.join("config.json"));
        #[cfg(unix)]
        {
            // A directory link to the model, and a file link to one of its files.
            let link = d.path().join("alias");
            std::os::unix::fs::symlink(&dir, &link).unwrap();
            assert_eq!(refused(&link.join("tokenizer_config.json")), dir.join("tokenizer_config.json"));
            let flink = d.path().join("cfg-link.json");
            std::os::unix::fs::symlink(dir.join("config.json"), &flink).unwrap();
            assert_eq!(refused(&flink), dir.join("config.json"));
        }
        // Not read by any command: may be replaced; a new name in the directory is fine.
        assert!(check_output_file(&dir.join("ggml-model-Q4_K_M.gguf"), &[&dir]).is_ok());
        assert!(check_output_file(&dir.join("new.gguf"), &[&dir]).is_ok());
        // A file input is compared as itself.
        let text = d.path().join("wiki.txt");
        fs::write(&text, b"t").unwrap();
        assert!(check_output_file(&d.path().join("./wiki.txt"), &[&text]).is_err());
        assert!(check_output_file(&d.path().join("wiki2.txt"), &[&text]).is_ok());
    }

    #[test]
    fn resolve_applies_dot_dot_after_the_existing_part() {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        assert_eq!(resolve(&d.path().join("a/b/../c")), root.join("a/c"));
        assert_eq!(resolve(&d.path().join("x")), root.join("x"));
    }

    #[cfg(unix)]
    #[test]
    fn non_regular_outputs_and_inputs_are_refused_with_their_kind() {
        let d = tempfile::tempdir().unwrap();
        let e = check_output_kind(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("/dev/null") && e.contains("character device"), "{e}");
        let e = check_output_kind(Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let e = check_output_kind(d.path()).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let e = check_input_file(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("character device"), "{e}");
        let e = check_input_file(d.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let f = d.path().join("f");
        fs::write(&f, b"x").unwrap();
        assert!(check_output_kind(&f).is_ok() && check_input_file(&f).is_ok());
        assert!(check_output_kind(&d.path().join("new")).is_ok());
    }
}
