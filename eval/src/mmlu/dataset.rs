//! An MMLU data directory in the original layout: `test/<subject>_test.csv` and `dev/<subject>_dev.csv`.

use std::path::{Path, PathBuf};

use super::csv::{read_questions, Question};
use super::subjects;
use crate::error::{EvalError, Result};

/// Most subject files listed from one directory.
const MAX_SUBJECTS: usize = 10_000;

/// The subjects found in a data directory.
#[derive(Clone, Debug)]
pub struct Dataset {
    dir: PathBuf,
    subjects: Vec<String>,
}

impl Dataset {
    /// List `DIR/test/*_test.csv`.
    pub fn open(dir: &Path) -> Result<Dataset> {
        let test = dir.join("test");
        let err = |message: String| EvalError::Mmlu { path: test.clone(), message };
        let entries = std::fs::read_dir(&test)
            .map_err(|e| err(format!("{e} (expected the MMLU layout DIR/test/<subject>_test.csv)")))?;
        let mut subjects = Vec::new();
        for e in entries {
            let name = e.map_err(|e| err(e.to_string()))?.file_name();
            if let Some(s) = name.to_str().and_then(|n| n.strip_suffix("_test.csv")) {
                subjects.push(s.to_string());
                if subjects.len() > MAX_SUBJECTS {
                    return Err(err(format!("more than {MAX_SUBJECTS} subject files")));
                }
            }
        }
        if subjects.is_empty() {
            return Err(err("no <subject>_test.csv files".into()));
        }
        subjects.sort();
        Ok(Dataset { dir: dir.to_path_buf(), subjects })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every subject present, sorted.
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// The subjects to run: the named ones, or a named subset (see [`subjects::SUBSETS`]), or all.
    /// Unknown names are an error listing what is available.
    pub fn select(&self, names: &[String], subset: Option<&str>) -> Result<Vec<String>> {
        let err = |message: String| EvalError::Mmlu { path: self.dir.clone(), message };
        let wanted: Vec<String> = match (names.is_empty(), subset) {
            (false, Some(_)) => return Err(err("give --subjects or --subset, not both".into())),
            (false, None) => names.to_vec(),
            (true, None | Some("all")) => return Ok(self.subjects.clone()),
            (true, Some(name)) => subjects::subset(name)
                .ok_or_else(|| {
                    let known: Vec<&str> = subjects::SUBSETS.iter().map(|(n, _)| *n).collect();
                    err(format!("unknown subset '{name}' (known: {})", known.join(", ")))
                })?
                .into_iter()
                .map(str::to_string)
                .collect(),
        };
        for s in &wanted {
            if !self.subjects.contains(s) {
                return Err(err(format!(
                    "unknown subject '{s}': no test/{s}_test.csv (subjects here: {})",
                    preview(&self.subjects)
                )));
            }
        }
        Ok(wanted)
    }

    /// The test questions of `subject`.
    pub fn test(&self, subject: &str) -> Result<Vec<Question>> {
        read_questions(&self.dir.join("test").join(format!("{subject}_test.csv")))
    }

    /// The dev (few-shot) examples of `subject`.
    pub fn dev(&self, subject: &str) -> Result<Vec<Question>> {
        let path = self.dir.join("dev").join(format!("{subject}_dev.csv"));
        if !path.is_file() {
            return Err(EvalError::Mmlu {
                path,
                message: "missing: few-shot prompts need the dev split (or use --shots 0)".into(),
            });
        }
        read_questions(&path)
    }
}

/// The first few names and a count.
fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(6).map(String::as_str).collect();
    if names.len() > shown.len() {
        format!("{}, ... {} in all", shown.join(", "), names.len())
    } else {
        shown.join(", ")
    }
}
