//! A pipeline resolved against the disk and the hub: its source and every input file with its sha256, and the
//! work units with their content keys.
//!
//! Invariant: a unit's key is the sha256 of everything its result depends on (the tool version, the hashes of
//! the files it reads, its options, and the keys of the units it needs), and of nothing else: not the time, not
//! absolute paths, not the gates (a gate changes which artifacts are published, not their bytes).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use quantforge_formats::output_guard::files_read_in;
use quantforge_hub::RepoRef;
use quantforge_quant::policy::FileType;
use serde::Serialize;
use serde_json::{json, Value};

use super::hash::{key_of, sha256_file};
use super::schema::{output_name, Pipeline};
use crate::pull::{looks_like_repo, model_snapshot, resolve_model, Need};
use crate::quantize_int::{DEFAULT_CALIB_BATCH, DEFAULT_DAMP, DEFAULT_NSAMPLES, DEFAULT_SEQLEN};

/// The version written into manifests and keys.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One input file as the manifest lists it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct InputFile {
    /// Path as the pipeline names it, or the file's name inside a model folder.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// The source model, local or from the hub.
#[derive(Debug, Serialize)]
pub struct ResolvedSource {
    /// As the pipeline says it.
    pub model: String,
    pub repo: Option<String>,
    pub revision: Option<String>,
    pub commit: Option<String>,
    pub files: Vec<InputFile>,
    /// Where it is read from (a hub snapshot, or the path): not written anywhere.
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    pub is_gguf: bool,
}

/// What a unit does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Collect the importance matrix of the source.
    Imatrix,
    /// Perplexity of the source on the evaluation text; its log-probabilities kept for KL divergence.
    Reference,
    /// Quantize output `i` and evaluate it against the reference.
    Output(usize),
}

/// One independent piece of work.
#[derive(Clone, Debug)]
pub struct Unit {
    pub kind: Kind,
    /// `imatrix`, `reference` or the output's name.
    pub name: String,
    pub key: String,
    /// Indices of the units whose results this one reads.
    pub needs: Vec<usize>,
    /// The output's file type (outputs only).
    pub ftype: Option<FileType>,
}

/// A LoRA adapter of an output, resolved.
#[derive(Debug)]
pub struct ResolvedLora {
    pub spec: String,
    pub path: PathBuf,
    pub scale: f32,
    pub files: Vec<InputFile>,
}

/// Everything a run needs to know before doing any work.
pub struct Context {
    /// The pipeline file's name (no folder) and hash.
    pub file_name: String,
    pub file_sha256: String,
    /// The pipeline file as written (the card quotes it).
    pub text: String,
    pub p: Pipeline,
    /// The output folder (absolute).
    pub out: PathBuf,
    pub source: ResolvedSource,
    pub imatrix_text: Option<InputFile>,
    pub eval_text: Option<InputFile>,
    /// The MMLU data's files (`dev/...`, `test/...`), sorted.
    pub mmlu_data: Option<Vec<InputFile>>,
    /// Per output, its adapters.
    pub loras: Vec<Vec<ResolvedLora>>,
    /// Per output, its calibration text (outputs with a `method` and a `calib`).
    pub calib_texts: Vec<Option<InputFile>>,
    pub units: Vec<Unit>,
    /// Units this process has already run or found unchanged (each is reported once, redone once by --force).
    pub seen: std::cell::RefCell<Vec<bool>>,
}

/// Resolve the source (downloading it when it is a hub repo not yet cached), hash every input, key the units.
/// Paths in `p` are relative to the current folder, which is the pipeline file's.
pub fn resolve(p: Pipeline, file_name: String, text: String, out: PathBuf, quiet: bool) -> Result<Context> {
    let file_sha256 = super::hash::sha256_hex(text.as_bytes());
    let source = resolve_source(&p.source.model, quiet)?;
    let side = |path: &Path| -> Result<InputFile> {
        let (size, sha256) = sha256_file(path)?;
        Ok(InputFile { path: path.to_string_lossy().into_owned(), size, sha256 })
    };
    let imatrix_text = p.imatrix.as_ref().map(|s| side(&s.text)).transpose()?;
    let eval_text = p.eval.as_ref().map(|s| side(&s.text)).transpose()?;
    let mmlu_data = p.eval.as_ref().and_then(|e| e.mmlu.as_ref()).map(|m| hash_mmlu_data(&m.data)).transpose()?;
    let mut loras = Vec::new();
    for o in &p.outputs {
        let mut list = Vec::new();
        for l in &o.lora {
            let path = resolve_model(Path::new(&l.path), Need::Model)?;
            let files = hash_model_files(&path)?;
            list.push(ResolvedLora { spec: l.path.clone(), path, scale: l.scale, files });
        }
        loras.push(list);
    }
    let calib_texts = p
        .outputs
        .iter()
        .map(|o| o.calib.as_deref().filter(|_| o.method.is_some()).map(side).transpose())
        .collect::<Result<_>>()?;
    let mut ctx = Context {
        file_name,
        file_sha256,
        text,
        p,
        out,
        source,
        imatrix_text,
        eval_text,
        mmlu_data,
        loras,
        calib_texts,
        units: Vec::new(),
        seen: Default::default(),
    };
    ctx.units = units(&ctx)?;
    ctx.seen = std::cell::RefCell::new(vec![false; ctx.units.len()]);
    Ok(ctx)
}

pub fn resolve_source(model: &str, quiet: bool) -> Result<ResolvedSource> {
    let path = Path::new(model);
    if !path.exists() && looks_like_repo(model) {
        let repo = RepoRef::parse(model)?;
        let snap = model_snapshot(&repo, quiet)?;
        let files = hash_model_files(&snap.dir)?;
        return Ok(ResolvedSource {
            model: model.into(),
            repo: Some(repo.id),
            revision: Some(repo.revision),
            commit: Some(snap.commit),
            files,
            path: snap.dir,
            is_gguf: false,
        });
    }
    let is_gguf = path.is_file();
    let files = if is_gguf {
        let (size, sha256) = sha256_file(path)?;
        vec![InputFile { path: model.into(), size, sha256 }]
    } else {
        hash_model_files(path)?
    };
    if files.is_empty() {
        anyhow::bail!("{model}: no model files there (expected a Hugging Face model folder, a GGUF or a hub repo id)");
    }
    Ok(ResolvedSource {
        model: model.into(),
        repo: None,
        revision: None,
        commit: None,
        files,
        path: path.into(),
        is_gguf,
    })
}

/// The files of a model or adapter folder that are read, by name, with their hashes.
fn hash_model_files(dir: &Path) -> Result<Vec<InputFile>> {
    let mut out = Vec::new();
    for f in files_read_in(dir) {
        let (size, sha256) = sha256_file(&f).with_context(|| format!("{}", f.display()))?;
        let path = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.push(InputFile { path, size, sha256 });
    }
    Ok(out)
}

/// Every file of an MMLU data directory's `dev/` and `test/`, as `dev/NAME`, sorted.
fn hash_mmlu_data(data: &Path) -> Result<Vec<InputFile>> {
    let mut out = Vec::new();
    for sub in ["dev", "test"] {
        let dir = data.join(sub);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("{}: cannot list the MMLU data", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let (size, sha256) = sha256_file(&dir.join(&n))?;
            out.push(InputFile { path: format!("{sub}/{n}"), size, sha256 });
        }
    }
    Ok(out)
}

fn units(ctx: &Context) -> Result<Vec<Unit>> {
    let p = &ctx.p;
    let source = json!({"tool": TOOL_VERSION, "source": ctx.source.files, "outtype": p.source.outtype});
    let mut units = Vec::new();
    let mut imatrix = None;
    if let (Some(spec), true) = (&p.imatrix, p.outputs.iter().any(|o| o.imatrix)) {
        let key = key_of(&json!({"unit": "imatrix", "source": source, "spec": spec, "text": ctx.imatrix_text}));
        imatrix = Some(units.len());
        units.push(Unit { kind: Kind::Imatrix, name: "imatrix".into(), key, needs: vec![], ftype: None });
    }
    let mut reference = None;
    if let Some(spec) = &p.eval {
        let mut desc = json!({"unit": "reference", "source": source, "spec": spec, "text": ctx.eval_text});
        if let Some(files) = &ctx.mmlu_data {
            desc["mmlu_data"] = json!(files);
        }
        let key = key_of(&desc);
        reference = Some(units.len());
        units.push(Unit { kind: Kind::Reference, name: "reference".into(), key, needs: vec![], ftype: None });
    }
    for (i, o) in p.outputs.iter().enumerate() {
        let ftype: Option<FileType> = o.ftype.as_ref().map(|t| t.get_ref().parse()).transpose()?;
        if ftype.is_none() && ctx.source.is_gguf {
            anyhow::bail!(
                "output {}: a checkpoint directory (a `method` without `type`) needs a Hugging Face source, not a GGUF",
                i + 1
            );
        }
        let name = output_name(p, i, ftype);
        let uses_imatrix = if o.imatrix { imatrix } else { None };
        let needs: Vec<usize> = uses_imatrix.into_iter().chain(reference).collect();
        let loras: Vec<Value> =
            ctx.loras[i].iter().map(|l| json!({"files": l.files, "scale": l.scale.to_bits()})).collect();
        let options = json!({
            "type": ftype.map(|t| t.name()), "pure": o.pure, "leave_output_tensor": o.leave_output_tensor,
            "output_tensor_type": o.output_tensor_type, "token_embedding_type": o.token_embedding_type,
            "tensor_type": o.tensor_type,
        });
        let mut options = options;
        if let Some(method) = o.method {
            // Defaults are spelled out, so a changed default is a changed key.
            options["method"] = json!(method);
            if ftype.is_none() {
                options["checkpoint"] = json!({"format": o.format, "bits": o.bits, "group_size": o.group_size});
            }
            options["calibration"] = json!({
                "text": ctx.calib_texts[i], "nsamples": o.nsamples.unwrap_or(DEFAULT_NSAMPLES),
                "seqlen": o.seqlen.unwrap_or(DEFAULT_SEQLEN), "seed": o.seed.unwrap_or(0),
                "damp": o.damp.unwrap_or(DEFAULT_DAMP).to_bits(), "batch": DEFAULT_CALIB_BATCH,
            });
        }
        let key = key_of(&json!({
            "unit": "output", "name": name, "source": source, "options": options, "lora": loras,
            "imatrix": uses_imatrix.map(|u| &units[u].key),
            "reference": reference.map(|u: usize| &units[u].key),
        }));
        units.push(Unit { kind: Kind::Output(i), name, key, needs, ftype });
    }
    Ok(units)
}

impl Context {
    /// `OUT/.quantforge`: unit records, the reference's log-probabilities, rejected artifacts.
    pub fn work_dir(&self) -> PathBuf {
        self.out.join(".quantforge")
    }

    /// Where the reference's log-probabilities are kept.
    pub fn reference_logits(&self) -> PathBuf {
        self.work_dir().join("reference.logits")
    }

    /// The imatrix artifact's file name.
    pub fn imatrix_file(&self) -> &'static str {
        "imatrix.gguf"
    }

    /// Every path a run reads: the source, adapters and texts.
    pub fn inputs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = vec![&self.source.path];
        v.extend(self.loras.iter().flatten().map(|l| l.path.as_path()));
        v.extend(self.p.imatrix.iter().map(|s| s.text.as_path()));
        v.extend(self.p.eval.iter().map(|s| s.text.as_path()));
        v.extend(self.p.eval.iter().filter_map(|s| s.mmlu.as_ref()).map(|m| m.data.as_path()));
        v.extend(self.p.outputs.iter().filter(|o| o.method.is_some()).filter_map(|o| o.calib.as_deref()));
        v
    }

    /// The longest chain of needs before a unit: 0 for units that need nothing.
    pub fn stage(&self, i: usize) -> usize {
        self.units[i].needs.iter().map(|&n| self.stage(n) + 1).max().unwrap_or(0)
    }
}
