//! The pipeline file: a TOML document read into typed structs that refuse unknown keys, then checked as a whole.
//!
//! Invariant: a [`Pipeline`] that [`parse`] returns names a source, at least one output, unique output names,
//! known file types, and an `[eval]` section wherever a gate needs an evaluation figure. Every error names the
//! file, and the line, column and key where the document says it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use quantforge_quant::policy::FileType;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The whole pipeline file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub source: Source,
    #[serde(default)]
    pub card: Card,
    pub imatrix: Option<ImatrixSpec>,
    pub eval: Option<EvalSpec>,
    #[serde(rename = "output")]
    pub outputs: Vec<OutputSpec>,
}

/// Where the model comes from.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// A hub repo id `org/name[@revision]`, or a path (relative to the pipeline file) to a Hugging Face model
    /// directory or a GGUF.
    pub model: String,
    /// Precision a Hugging Face directory is converted to before quantizing: f32, f16, bf16 or auto.
    #[serde(default = "auto")]
    pub outtype: String,
    /// Prefix of the artifact names (default: the repo's or directory's name).
    pub name: Option<String>,
}

fn auto() -> String {
    "auto".into()
}

/// What the model card and the Modelfiles say.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// `base_model` of the card (default: the source's repo id).
    pub base_model: Option<String>,
    /// SPDX id or the hub's licence name (default: the source GGUF's `general.license`, if any).
    pub license: Option<String>,
    /// `quantized_by` of the card.
    pub quantized_by: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `pipeline_tag` of the card (default text-generation).
    pub pipeline_tag: Option<String>,
    /// `PARAMETER num_ctx` of the Modelfiles (default: the model's context length).
    pub num_ctx: Option<u64>,
}

/// The importance matrix: collected once on the source (converted to F16), used by outputs with `imatrix = true`.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImatrixSpec {
    /// Calibration text, relative to the pipeline file.
    pub text: PathBuf,
    #[serde(default = "ctx512")]
    pub ctx: usize,
    pub chunks: Option<usize>,
}

/// The evaluation of every output against the source on one text (perplexity, KL divergence, same-top).
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Evaluation text, relative to the pipeline file.
    pub text: PathBuf,
    #[serde(default = "ctx512")]
    pub ctx: usize,
    pub chunks: Option<usize>,
    /// MMLU accuracy of the source and of every output (as `eval mmlu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmlu: Option<MmluSpec>,
}

/// The MMLU questions asked, with the options of `eval mmlu`.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MmluSpec {
    /// Data directory in the original layout (`test/<subject>_test.csv`, `dev/<subject>_dev.csv`).
    pub data: PathBuf,
    #[serde(default)]
    pub subjects: Vec<String>,
    /// quick10, stem, humanities, social_sciences, other or all.
    pub subset: Option<String>,
    #[serde(default = "five")]
    pub shots: usize,
    /// At most this many questions per subject.
    pub limit: Option<usize>,
    #[serde(default = "tokens2048")]
    pub max_tokens: usize,
    pub chat_template: Option<String>,
}

fn five() -> usize {
    5
}

fn tokens2048() -> usize {
    2048
}

fn ctx512() -> usize {
    512
}

/// One GGUF to publish.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// File name without `.gguf` (default `<source name>-<TYPE>`).
    pub name: Option<String>,
    /// llama.cpp file type, case-insensitive (F16, Q8_0, Q4_K_M, ...); without it, `method` writes a Hugging
    /// Face integer checkpoint directory.
    #[serde(rename = "type")]
    pub ftype: Option<Spanned<String>>,
    /// Use the pipeline's importance matrix.
    #[serde(default)]
    pub imatrix: bool,
    /// PEFT LoRA adapters merged first, in order.
    #[serde(default)]
    pub lora: Vec<LoraSpec>,
    #[serde(default)]
    pub pure: bool,
    #[serde(default)]
    pub leave_output_tensor: bool,
    pub output_tensor_type: Option<String>,
    pub token_embedding_type: Option<String>,
    /// `PATTERN=TYPE` entries, first match wins.
    #[serde(default)]
    pub tensor_type: Vec<String>,
    /// `gptq` with a `type`: the type's decoder-block linear layers coded by GPTQ over a calibration text (as
    /// `quantize --type T --method gptq`); `gptq`, `awq` or `rtn` without one: an integer checkpoint directory
    /// (as `quantize --method M`).
    pub method: Option<OutputMethod>,
    /// Checkpoint layout: compressed-tensors (default), gptq, gptq_v2 or awq.
    pub format: Option<String>,
    /// Checkpoint bits per weight: 2, 3, 4 (default) or 8.
    pub bits: Option<u8>,
    /// Checkpoint input columns per group: 32, 64, 128 (default) or -1.
    pub group_size: Option<i64>,
    /// Calibration text of `method`, relative to the pipeline file (default: the bundled text).
    pub calib: Option<PathBuf>,
    /// Calibration windows of `method` (default 128).
    pub nsamples: Option<usize>,
    /// Tokens per calibration window (default 2048).
    pub seqlen: Option<usize>,
    /// Seed of the window positions (default 0).
    pub seed: Option<u64>,
    /// GPTQ damping, a fraction of the mean Hessian diagonal in [0, 1) (default 0.01).
    pub damp: Option<f32>,
    #[serde(default)]
    pub gates: Gates,
}

/// How an output's weights are coded beyond the plain quantizer.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputMethod {
    Gptq,
    Awq,
    Rtn,
}

impl OutputMethod {
    pub fn name(self) -> &'static str {
        match self {
            OutputMethod::Gptq => "gptq",
            OutputMethod::Awq => "awq",
            OutputMethod::Rtn => "rtn",
        }
    }
}

/// A LoRA adapter to merge.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Adapter directory (relative to the pipeline file) or hub repo id.
    pub path: String,
    #[serde(default = "one")]
    pub scale: f32,
}

fn one() -> f32 {
    1.0
}

/// Limits an output must meet to be published.
#[derive(Debug, Default, Deserialize, Serialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// PPL(output) - PPL(source) at most this.
    pub max_delta_ppl: Option<f64>,
    /// Mean KL divergence against the source at most this.
    pub max_kld: Option<f64>,
    /// Share of tokens whose most likely next token is the source's, at least this (0-1).
    pub min_same_top: Option<f64>,
    /// File size at most this: bytes, or a text such as "90M" or "1.5GiB".
    pub max_size: Option<Size>,
    /// MMLU accuracy at least this (0-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_mmlu: Option<f64>,
    /// MMLU accuracy of the source minus the output's at most this (0-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delta_mmlu: Option<f64>,
}

/// A size given as a number of bytes or as a text with a unit.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    /// The size in bytes.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => crate::quantize::parse_size(s),
        }
    }
}

/// A pipeline file that cannot be used, with where it says so.
#[derive(Debug)]
pub struct SchemaError {
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the document.
    pub at: Option<(usize, usize)>,
    /// The key at that place, when one can be read there.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SchemaError {}

impl SchemaError {
    fn at(file: &Path, text: &str, span: Option<Range<usize>>, message: String) -> SchemaError {
        let at = span.as_ref().map(|s| line_col(text, s.start));
        let key = span.and_then(|s| key_at(text, s.start));
        SchemaError { file: file.into(), at, key, message }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The key of the `key = value` line holding byte `offset`, or the table name of a `[table]` line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset.min(text.len()))?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?.trim();
    let key = match line.split_once('=') {
        Some((k, _)) => k.trim(),
        None => line.trim_matches(|c| c == '[' || c == ']').trim(),
    };
    (!key.is_empty() && !key.contains(char::is_whitespace)).then(|| key.trim_matches('"').to_string())
}

/// Read and check a pipeline file.
pub fn parse(file: &Path, text: &str) -> Result<Pipeline, SchemaError> {
    let p: Pipeline = toml::from_str(text).map_err(|e| SchemaError::at(file, text, e.span(), message(&e)))?;
    check(file, text, &p)?;
    Ok(p)
}

/// toml's message without its own rendering of the document.
fn message(e: &toml::de::Error) -> String {
    e.message().trim().to_string()
}

fn check(file: &Path, text: &str, p: &Pipeline) -> Result<(), SchemaError> {
    let plain = |message: String| SchemaError { file: file.into(), at: None, key: None, message };
    if p.outputs.is_empty() {
        return Err(plain("no [[output]]: name at least one GGUF to write".into()));
    }
    if p.source.model.trim().is_empty() {
        return Err(plain("[source] model is empty".into()));
    }
    let mut names = Vec::new();
    for (i, o) in p.outputs.iter().enumerate() {
        let ftype = match &o.ftype {
            Some(t) => Some(
                t.get_ref()
                    .parse::<FileType>()
                    .map_err(|e| SchemaError::at(file, text, Some(t.span()), e.to_string()))?,
            ),
            None => None,
        };
        if ftype.is_none() && o.method.is_none() {
            return Err(plain(format!(
                "output {}: give a GGUF `type`, or a `method` for a checkpoint directory",
                i + 1
            )));
        }
        let name = output_name(p, i, ftype);
        let bad = name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) || name.contains('\0');
        if bad {
            return Err(plain(format!("output {}: name '{name}' is not a plain file name", i + 1)));
        }
        if name.eq_ignore_ascii_case("imatrix") {
            return Err(plain(format!("output {}: the name 'imatrix' is the importance matrix's file", i + 1)));
        }
        if names.contains(&name) {
            return Err(plain(format!("two outputs are named '{name}': give each a distinct `name`")));
        }
        names.push(name.clone());
        if o.imatrix && p.imatrix.is_none() {
            return Err(plain(format!("output '{name}' asks for an imatrix but the pipeline has no [imatrix]")));
        }
        let g = &o.gates;
        let needs_eval = g.max_delta_ppl.is_some() || g.max_kld.is_some() || g.min_same_top.is_some();
        if needs_eval && p.eval.is_none() {
            return Err(plain(format!("output '{name}' has quality gates but the pipeline has no [eval]")));
        }
        let needs_mmlu = g.min_mmlu.is_some() || g.max_delta_mmlu.is_some();
        if needs_mmlu && p.eval.as_ref().and_then(|e| e.mmlu.as_ref()).is_none() {
            return Err(plain(format!("output '{name}' has an MMLU gate but [eval] has no mmlu")));
        }
        if let Some(size) = &g.max_size {
            size.bytes().map_err(|e| plain(format!("output '{name}': max_size: {e}")))?;
        }
        check_gate_ranges(g).map_err(|e| plain(format!("output '{name}': {e}")))?;
        check_method(o).map_err(|e| plain(format!("output '{name}': {e}")))?;
        if o.lora.iter().any(|l| !l.scale.is_finite()) {
            return Err(plain(format!("output '{name}': a LoRA scale must be a finite number")));
        }
    }
    for (what, ctx) in [("imatrix", p.imatrix.as_ref().map(|s| s.ctx)), ("eval", p.eval.as_ref().map(|s| s.ctx))] {
        if ctx == Some(0) {
            return Err(plain(format!("[{what}] ctx must be at least 1")));
        }
    }
    Ok(())
}

/// Fractions (same-top, MMLU accuracy) lie in 0..=1; the other limits are finite, a KLD limit not negative.
fn check_gate_ranges(g: &Gates) -> Result<(), String> {
    let fractions = [("min_same_top", g.min_same_top), ("min_mmlu", g.min_mmlu), ("max_delta_mmlu", g.max_delta_mmlu)];
    for (key, v) in fractions {
        if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
            return Err(format!("gate {key} = {v}: a fraction of 1, between 0 and 1"));
        }
    }
    if let Some(v) = g.max_kld.filter(|v| !v.is_finite() || *v < 0.0) {
        return Err(format!("gate max_kld = {v}: must be a finite number, not negative"));
    }
    if let Some(v) = g.max_delta_ppl.filter(|v| !v.is_finite()) {
        return Err(format!("gate max_delta_ppl = {v}: must be a finite number"));
    }
    Ok(())
}

/// The calibration keys go with a `method`; GPTQ collects its own statistics and reads the source unmerged.
fn check_method(o: &OutputSpec) -> Result<(), String> {
    let checkpoint_keys = o.format.is_some() || o.bits.is_some() || o.group_size.is_some();
    if o.ftype.is_some() && checkpoint_keys {
        return Err("format, bits and group_size are for checkpoint outputs (a `method` and no `type`)".into());
    }
    if o.ftype.is_none() {
        if matches!(o.method, Some(OutputMethod::Awq | OutputMethod::Rtn)) && o.damp.is_some() {
            return Err("damp is GPTQ's".into());
        }
        let gguf_keys = o.pure
            || o.leave_output_tensor
            || o.output_tensor_type.is_some()
            || o.token_embedding_type.is_some()
            || !o.tensor_type.is_empty();
        if gguf_keys {
            return Err("pure, leave_output_tensor, output_tensor_type, token_embedding_type and tensor_type are \
                        for GGUF outputs (a `type`)"
                .into());
        }
    } else if matches!(o.method, Some(OutputMethod::Awq | OutputMethod::Rtn)) {
        return Err("awq and rtn write checkpoint directories: drop `type` (GGUF types take method = \"gptq\")".into());
    }
    let calibration =
        o.calib.is_some() || o.nsamples.is_some() || o.seqlen.is_some() || o.seed.is_some() || o.damp.is_some();
    match o.method {
        None if calibration => Err("calib, nsamples, seqlen, seed and damp need method = \"gptq\"".into()),
        None => Ok(()),
        Some(m) => {
            if o.imatrix {
                return Err(format!("method = \"{}\" collects its own statistics: drop imatrix = true", m.name()));
            }
            if !o.lora.is_empty() {
                return Err(format!(
                    "method = \"{}\" does not merge LoRA adapters: merge them into the source first",
                    m.name()
                ));
            }
            if o.damp.is_some_and(|d| !(0.0..1.0).contains(&d)) {
                return Err("damp must be a fraction in [0, 1)".into());
            }
            if o.nsamples == Some(0) || o.seqlen == Some(0) {
                return Err("nsamples and seqlen must be at least 1".into());
            }
            Ok(())
        }
    }
}

/// The artifact name of output `i` (without `.gguf`): `<source>-<TYPE>` for a GGUF, `<source>-<method>-w<bits>g<group>`
/// for a checkpoint directory.
pub fn output_name(p: &Pipeline, i: usize, ftype: Option<FileType>) -> String {
    let o = &p.outputs[i];
    match (&o.name, ftype) {
        (Some(n), _) => n.clone(),
        (None, Some(t)) => format!("{}-{}", source_name(p), t.name()),
        (None, None) => format!(
            "{}-{}-w{}g{}",
            source_name(p),
            o.method.map_or("int", |m| m.name()),
            o.bits.unwrap_or(4),
            o.group_size.unwrap_or(128)
        ),
    }
}

/// The name artifacts are prefixed with: `[source] name`, else the repo's or folder's last component.
pub fn source_name(p: &Pipeline) -> String {
    if let Some(n) = &p.source.name {
        return n.clone();
    }
    let model = p.source.model.split('@').next().unwrap_or(&p.source.model);
    let last = model.trim_end_matches('/').rsplit('/').next().unwrap_or(model);
    last.strip_suffix(".gguf").unwrap_or(last).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "[source]\nmodel = \"org/m\"\n\n[[output]]\ntype = \"q8_0\"\n";

    #[test]
    fn a_minimal_pipeline_parses() {
        let p = parse(Path::new("p.toml"), OK).unwrap();
        assert_eq!(output_name(&p, 0, Some(FileType::Q8_0)), "m-Q8_0");
        assert_eq!(p.source.outtype, "auto");
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_line_and_column() {
        let e = parse(Path::new("p.toml"), &format!("{OK}colour = 1\n")).unwrap_err();
        assert_eq!(e.at, Some((6, 1)), "{e}");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = parse(Path::new("p.toml"), "[source]\nmodel = 3\n[[output]]\ntype = \"q8_0\"\n").unwrap_err();
        assert_eq!(e.at, Some((2, 9)), "{e}");
        assert_eq!(e.key.as_deref(), Some("model"));
        let e = parse(Path::new("p.toml"), "[source]\nmodel = \"a/b\"\n[[output]]\ntype = \"q9\"\n").unwrap_err();
        assert_eq!(e.at, Some((4, 8)), "{e}");
    }

    #[test]
    fn gates_need_an_eval_and_names_are_unique() {
        let e = parse(Path::new("p.toml"), &format!("{OK}gates = {{ max_kld = 0.1 }}\n")).unwrap_err();
        assert!(e.message.contains("[eval]"), "{e}");
        let two = format!("{OK}[[output]]\ntype = \"Q8_0\"\n");
        assert!(parse(Path::new("p.toml"), &two).unwrap_err().message.contains("m-Q8_0"));
        let reserved = format!("{OK}name = \"imatrix\"\n");
        assert!(parse(Path::new("p.toml"), &reserved).unwrap_err().message.contains("importance matrix"));
        let path = format!("{OK}name = \"../x\"\n");
        assert!(parse(Path::new("p.toml"), &path).unwrap_err().message.contains("plain file name"));
    }

    #[test]
    fn calibration_keys_need_a_method_and_gptq_refuses_what_it_cannot_use() {
        let gptq = format!("{OK}method = \"gptq\"\ncalib = \"c.txt\"\nnsamples = 16\nseqlen = 64\n");
        let p = parse(Path::new("p.toml"), &gptq).unwrap();
        assert_eq!(p.outputs[0].method, Some(OutputMethod::Gptq));
        assert_eq!((p.outputs[0].nsamples, p.outputs[0].seqlen), (Some(16), Some(64)));
        let e = parse(Path::new("p.toml"), &format!("{OK}nsamples = 16\n")).unwrap_err();
        assert!(e.message.contains("need method"), "{e}");
        let e =
            parse(Path::new("p.toml"), &format!("{OK}method = \"gptq\"\nimatrix = true\n[imatrix]\ntext = \"t\"\n"))
                .unwrap_err();
        assert!(e.message.contains("drop imatrix"), "{e}");
        let e = parse(Path::new("p.toml"), &format!("{OK}method = \"gptq\"\ndamp = 1.5\n")).unwrap_err();
        assert!(e.message.contains("damp"), "{e}");
        let e = parse(Path::new("p.toml"), &format!("{OK}method = \"gptx\"\n")).unwrap_err();
        assert_eq!(e.at, Some((6, 10)), "{e}");
    }

    #[test]
    fn a_checkpoint_output_has_a_method_and_no_gguf_keys() {
        let ck = "[source]\nmodel = \"org/m\"\n\n[[output]]\nmethod = \"awq\"\nbits = 4\ngroup_size = 64\n";
        let p = parse(Path::new("p.toml"), ck).unwrap();
        assert_eq!(output_name(&p, 0, None), "m-awq-w4g64");
        let e = parse(Path::new("p.toml"), "[source]\nmodel = \"org/m\"\n[[output]]\nname = \"x\"\n").unwrap_err();
        assert!(e.message.contains("give a GGUF `type`"), "{e}");
        let e = parse(Path::new("p.toml"), &format!("{ck}pure = true\n")).unwrap_err();
        assert!(e.message.contains("for GGUF outputs"), "{e}");
        let e = parse(Path::new("p.toml"), &format!("{OK}method = \"awq\"\n")).unwrap_err();
        assert!(e.message.contains("drop `type`"), "{e}");
        let e = parse(Path::new("p.toml"), &format!("{OK}bits = 4\n")).unwrap_err();
        assert!(e.message.contains("checkpoint outputs"), "{e}");
    }

    #[test]
    fn mmlu_gates_need_an_mmlu_evaluation() {
        let eval = "[eval]\ntext = \"t\"\n";
        let gate = format!("{OK}gates = {{ min_mmlu = 0.3 }}\n");
        let e = parse(Path::new("p.toml"), &format!("{gate}{eval}")).unwrap_err();
        assert!(e.message.contains("no mmlu"), "{e}");
        let mmlu = format!("{gate}{eval}mmlu = {{ data = \"d\", subset = \"quick10\", limit = 1 }}\n");
        let p = parse(Path::new("p.toml"), &mmlu).unwrap();
        let m = p.eval.unwrap().mmlu.unwrap();
        assert_eq!((m.shots, m.limit, m.max_tokens), (5, Some(1), 2048));
        let e = parse(Path::new("p.toml"), &format!("{gate}{eval}mmlu = {{ data = \"d\", shot = 1 }}\n")).unwrap_err();
        assert!(e.to_string().contains("shot"), "{e}");
    }

    #[test]
    fn gate_limits_are_checked_for_range() {
        let eval = "[eval]\ntext = \"t\"\n";
        for (gate, key) in [
            ("min_same_top = 95", "min_same_top"),
            ("max_kld = -0.1", "max_kld"),
            ("max_delta_ppl = nan", "max_delta_ppl"),
        ] {
            let e = parse(Path::new("p.toml"), &format!("{OK}gates = {{ {gate} }}\n{eval}")).unwrap_err();
            assert!(e.message.contains(key), "{gate}: {e}");
        }
        let ok = format!("{OK}gates = {{ min_same_top = 0.95, max_kld = 0.1, max_delta_ppl = 0.5 }}\n{eval}");
        parse(Path::new("p.toml"), &ok).unwrap();
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(key_at("[source]\n  model = 3\n", 17).as_deref(), Some("model"));
    }
}
