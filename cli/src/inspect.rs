//! `quantforge inspect`: metadata, tensor table and totals of GGUF, safetensors and HF model directories. A split
//! GGUF model is shown whole (metadata of its first file, the tensors of all), from any of its files, unless
//! `--single-file` asks for the one file named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use quantforge_formats::gguf::GgufFile;
use quantforge_formats::hf::HfModel;
use quantforge_formats::safetensors::SafetensorsFile;
use serde_json::{json, Value};

use crate::outln;
use crate::report;

/// Arguments of `inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A .gguf file, a .safetensors file, or a Hugging Face model directory.
    pub path: PathBuf,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Array elements shown before an array is summarized.
    #[arg(long, default_value_t = 8)]
    pub max_array: usize,
    /// Omit the per-tensor table.
    #[arg(long)]
    pub no_tensors: bool,
    /// With one file of a split GGUF model, show that file alone (its own metadata and tensors) instead of the
    /// whole model.
    #[arg(long)]
    pub single_file: bool,
}

/// One row of the tensor table, whatever the format.
struct Row {
    name: String,
    ty: String,
    /// Shape in the format's own order (ggml `ne` for GGUF, torch order for safetensors).
    shape: Vec<u64>,
    elements: u64,
    bytes: u64,
}

/// One file of a split GGUF model.
struct SplitFile {
    path: PathBuf,
    tensors: usize,
    size: u64,
}

/// What every format reports.
struct Summary {
    format: &'static str,
    /// Bytes of all the model's files.
    file_size: u64,
    metadata: Vec<(String, Value, String)>,
    rows: Vec<Row>,
    extra: Vec<(&'static str, Value)>,
    /// The files of a split GGUF model (empty otherwise).
    files: Vec<SplitFile>,
}

pub fn run(args: &Args) -> Result<()> {
    crate::outputs::inspect(&args.path)?;
    let summary = load(&args.path, args.max_array, args.single_file)?;
    if args.json {
        report::emit(&(serde_json::to_string_pretty(&to_json(&summary, args.no_tensors))? + "\n"))?;
    } else {
        report::emit(&print_human(&args.path, &summary, args.no_tensors))?;
    }
    Ok(())
}

fn load(path: &Path, max_array: usize, single_file: bool) -> Result<Summary> {
    if path.is_dir() {
        return load_hf(path);
    }
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let _ = f.read(&mut magic).with_context(|| format!("cannot read {}", path.display()))?;
    }
    if &magic == b"GGUF" || path.extension().is_some_and(|e| e == "gguf") {
        // Not GGUF magic but a .gguf name: let the GGUF reader produce its precise error.
        load_gguf(path, max_array, single_file)
    } else {
        load_safetensors(path)
    }
}

fn load_gguf(path: &Path, max_array: usize, single_file: bool) -> Result<Summary> {
    let f = if single_file { GgufFile::open_single_file(path)? } else { GgufFile::open(path)? };
    let metadata =
        f.metadata().iter().map(|(k, v)| (k.clone(), gguf_json(v, max_array), v.display(max_array))).collect();
    let rows = f
        .tensors()
        .iter()
        .map(|t| Row {
            name: t.name.clone(),
            ty: t.ggml_type.name().into(),
            shape: t.ne.clone(),
            elements: t.n_elements(),
            bytes: t.size,
        })
        .collect();
    Ok(Summary {
        format: "gguf",
        file_size: f.file_size(),
        metadata,
        rows,
        extra: vec![
            ("version", json!(f.version())),
            ("alignment", json!(f.alignment())),
            ("data_offset", json!(f.data_offset())),
        ],
        files: split_files(&f),
    })
}

/// The files of a split model, in order (empty for a single file).
fn split_files(f: &GgufFile) -> Vec<SplitFile> {
    if f.files().len() < 2 {
        return Vec::new();
    }
    let files = f.files().into_iter().zip(f.tensors_per_file()).zip(f.file_sizes());
    files.map(|((path, tensors), size)| SplitFile { path: path.to_path_buf(), tensors, size }).collect()
}

fn gguf_json(v: &quantforge_formats::gguf::GgufValue, max_array: usize) -> Value {
    use quantforge_formats::gguf::GgufValue as G;
    match v {
        G::Array(a) => json!({
            "type": "array",
            "element_type": a.elem_type().name(),
            "length": a.len(),
            "head": a.iter().take(max_array).map(|x| gguf_json(&x, max_array)).collect::<Vec<_>>(),
        }),
        G::String(s) => json!(s),
        G::Bool(b) => json!(b),
        G::F32(x) => json!(x),
        G::F64(x) => json!(x),
        other => other.as_u64().map(|u| json!(u)).or_else(|| other.as_f64().map(|x| json!(x))).unwrap_or(Value::Null),
    }
}

fn st_rows(f: &SafetensorsFile) -> Vec<Row> {
    f.tensors()
        .iter()
        .map(|t| Row {
            name: t.name.clone(),
            ty: t.dtype.to_string(),
            shape: t.shape.clone(),
            elements: t.n_elements(),
            bytes: t.size(),
        })
        .collect()
}

fn load_safetensors(path: &Path) -> Result<Summary> {
    let f = SafetensorsFile::open(path)?;
    let metadata = f.metadata().iter().map(|(k, v)| (k.clone(), json!(v), format!("{v:?}"))).collect();
    Ok(Summary {
        format: "safetensors",
        file_size: f.file_size(),
        metadata,
        rows: st_rows(&f),
        extra: vec![],
        files: Vec::new(),
    })
}

fn load_hf(dir: &Path) -> Result<Summary> {
    let m = HfModel::open(dir)?;
    let cfg = m.config();
    let keys = [
        "architectures",
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "max_position_embeddings",
        "rope_theta",
        "rope_scaling",
        "tie_word_embeddings",
        "torch_dtype",
    ];
    let metadata =
        keys.iter().filter_map(|k| cfg.get(*k).map(|v| (format!("config.{k}"), v.clone(), v.to_string()))).collect();
    let rows = m
        .tensors()
        .map(|(_, t)| Row {
            name: t.name.clone(),
            ty: t.dtype.to_string(),
            shape: t.shape.clone(),
            elements: t.n_elements(),
            bytes: t.size(),
        })
        .collect();
    Ok(Summary {
        format: "hf",
        file_size: m.file_size(),
        metadata,
        rows,
        extra: vec![("shards", json!(m.shards().len()))],
        files: Vec::new(),
    })
}

fn totals(rows: &[Row]) -> (u64, u64, f64) {
    let params: u64 = rows.iter().map(|r| r.elements).sum();
    let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
    let bpw = quantforge_formats::ggml_type::bits_per_weight(bytes, params);
    (params, bytes, bpw)
}

fn type_counts(rows: &[Row]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.ty.as_str()).or_insert(0) += 1;
    }
    m
}

fn to_json(s: &Summary, no_tensors: bool) -> Value {
    let (params, bytes, bpw) = totals(&s.rows);
    let mut out = json!({
        "format": s.format,
        "file_size": s.file_size,
        "metadata": s.metadata.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
        "totals": {
            "tensors": s.rows.len(),
            "parameters": params,
            "tensor_bytes": bytes,
            "bits_per_weight": bpw,
            "types": type_counts(&s.rows),
        },
    });
    for (k, v) in &s.extra {
        out[*k] = v.clone();
    }
    if !s.files.is_empty() {
        out["splits"] =
            s.files.iter().map(|f| json!({"path": f.path, "tensors": f.tensors, "file_size": f.size})).collect();
    }
    if !no_tensors {
        out["tensors"] = s
            .rows
            .iter()
            .map(|r| json!({"name": r.name, "type": r.ty, "shape": r.shape, "elements": r.elements, "bytes": r.bytes}))
            .collect();
    }
    out
}

fn print_human(path: &Path, s: &Summary, no_tensors: bool) -> String {
    let mut o = String::new();
    outln!(o, "{} ({}, {})", path.display(), s.format, report::bytes(s.file_size));
    for (k, v) in &s.extra {
        outln!(o, "  {k}: {v}");
    }
    if !s.files.is_empty() {
        outln!(o, "  splits: {} files", s.files.len());
        for f in &s.files {
            outln!(o, "    {}  {} tensors  {}", f.path.display(), f.tensors, report::bytes(f.size));
        }
    }
    if !s.metadata.is_empty() {
        outln!(o, "\nmetadata ({} keys):", s.metadata.len());
        let w = s.metadata.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
        for (k, _, shown) in &s.metadata {
            outln!(o, "  {k:<w$}  {shown}");
        }
    }
    if !no_tensors {
        let w = s.rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
        let order = if s.format == "gguf" { "ne" } else { "shape" };
        outln!(o, "\ntensors ({}):", s.rows.len());
        outln!(o, "  {:<w$}  {:<8}  {:<24}  {:>12}", "name", "type", order, "bytes");
        for r in &s.rows {
            outln!(o, "  {:<w$}  {:<8}  {:<24}  {:>12}", r.name, r.ty, report::shape(&r.shape), r.bytes);
        }
    }
    let (params, bytes, bpw) = totals(&s.rows);
    outln!(o, "\ntotals:");
    outln!(o, "  tensors      {}", s.rows.len());
    let types: Vec<String> = type_counts(&s.rows).iter().map(|(t, n)| format!("{t}: {n}")).collect();
    outln!(o, "  types        {}", types.join(", "));
    outln!(o, "  parameters   {} ({params})", report::si(params));
    outln!(o, "  tensor data  {} ({bytes} bytes)", report::bytes(bytes));
    outln!(o, "  file size    {} ({} bytes)", report::bytes(s.file_size), s.file_size);
    outln!(o, "  BPW          {bpw:.2}");
    o
}
