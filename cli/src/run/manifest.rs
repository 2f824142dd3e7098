//! Gathering: the units' records checked against the pipeline's gates, merged into `manifest.json`, the model
//! card and the Modelfiles.
//!
//! Invariant: the manifest, card and Modelfiles are functions of the pipeline file, the input hashes and the
//! unit records only (no time, no absolute path), so gathering the same records gives the same bytes whether the
//! units ran in one process or in many. An artifact that fails a gate is moved to `.quantforge/rejected/`;
//! one that passes is in the output folder.

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::json;

use super::events::Events;
use super::execute::{write_atomic, Figures, OutputResult, Record, UnitResult};
use super::plan::{Context, InputFile, Kind, ResolvedSource, TOOL_VERSION};
use super::schema::{Gates, OutputMethod};

/// `manifest.json`.
#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    pub tool: Tool,
    pub pipeline: InputFile,
    pub source: &'a ResolvedSource,
    /// Every other input: texts and adapters.
    pub inputs: Vec<Input>,
    pub imatrix: Option<&'a UnitResult>,
    pub reference: Option<&'a UnitResult>,
    pub artifacts: Vec<Artifact>,
    /// Every gate of every artifact passed.
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

/// A side input and what it is for.
#[derive(Debug, Serialize)]
pub struct Input {
    pub role: String,
    #[serde(flatten)]
    pub file: InputFile,
}

/// One output in the manifest.
#[derive(Debug, Serialize)]
pub struct Artifact {
    pub name: String,
    #[serde(flatten)]
    pub result: OutputResult,
    /// `.gguf` file's Ollama Modelfile (published artifacts only).
    pub modelfile: Option<String>,
    pub imatrix: bool,
    /// How the weights were coded beyond the plain quantizer (`gptq`); absent for the plain quantizer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<OutputMethod>,
    pub lora: Vec<LoraUse>,
    pub gates: Vec<GateResult>,
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct LoraUse {
    pub adapter: String,
    pub scale: f32,
}

/// One gate checked.
#[derive(Debug, Serialize, Clone)]
pub struct GateResult {
    pub gate: &'static str,
    pub limit: f64,
    pub value: f64,
    pub passed: bool,
}

/// Check the gates of one artifact.
pub fn check_gates(gates: &Gates, size: u64, eval: Option<&Figures>) -> Vec<GateResult> {
    let mut out = Vec::new();
    let mut at_most = |gate, limit: Option<f64>, value: Option<f64>| {
        if let (Some(limit), Some(value)) = (limit, value) {
            out.push(GateResult { gate, limit, value, passed: value <= limit });
        }
    };
    at_most("max_delta_ppl", gates.max_delta_ppl, eval.map(|e| e.delta_ppl));
    at_most("max_kld", gates.max_kld, eval.map(|e| e.kld));
    let max_size = gates.max_size.as_ref().and_then(|s| s.bytes().ok()).map(|b| b as f64);
    at_most("max_size", max_size, Some(size as f64));
    at_most("max_delta_mmlu", gates.max_delta_mmlu, eval.and_then(|e| e.delta_mmlu));
    if let (Some(limit), Some(e)) = (gates.min_same_top, eval) {
        out.push(GateResult { gate: "min_same_top", limit, value: e.same_top, passed: e.same_top >= limit });
    }
    if let (Some(limit), Some(m)) = (gates.min_mmlu, eval.and_then(|e| e.mmlu.as_ref())) {
        out.push(GateResult { gate: "min_mmlu", limit, value: m.accuracy, passed: m.accuracy >= limit });
    }
    out
}

/// Merge the records into the manifest, card and Modelfiles; an error naming every failed gate when any failed.
pub fn gather(ctx: &Context, events: &Events) -> Result<()> {
    let mut records: Vec<Record> = Vec::new();
    for (i, u) in ctx.units.iter().enumerate() {
        match ctx.done(i) {
            Some(r) => records.push(r),
            None => bail!(
                "unit {i} ({}) has not run with the current inputs: run `quantforge run {} --unit {i}` first",
                u.name,
                ctx.file_name
            ),
        }
    }
    let of_kind = |k: Kind| ctx.units.iter().position(|u| u.kind == k).map(|i| &records[i].result);
    let mut artifacts = Vec::new();
    let mut failures = Vec::new();
    for (i, u) in ctx.units.iter().enumerate() {
        let (Kind::Output(o), UnitResult::Output(result)) = (u.kind, &records[i].result) else { continue };
        verify(ctx, &result.file, &result.sha256)?;
        let spec = &ctx.p.outputs[o];
        let gates = check_gates(&spec.gates, result.size, result.eval.as_ref());
        let passed = gates.iter().all(|g| g.passed);
        for g in gates.iter().filter(|g| !g.passed) {
            failures.push(format!("{}: {} {} against the limit {}", u.name, g.gate, g.value, g.limit));
        }
        place(ctx, &result.file, passed)?;
        let modelfile = format!("{}.Modelfile", u.name);
        let gguf = u.ftype.is_some();
        if passed && gguf {
            let text = super::modelfile::modelfile(ctx, &ctx.out.join(&result.file))?;
            write_atomic(&ctx.out.join(&modelfile), text.as_bytes())?;
        } else {
            let _ = std::fs::remove_file(ctx.out.join(&modelfile));
        }
        let lora = ctx.loras[o].iter().map(|l| LoraUse { adapter: l.spec.clone(), scale: l.scale }).collect();
        artifacts.push(Artifact {
            name: u.name.clone(),
            result: result.clone(),
            modelfile: (passed && gguf).then_some(modelfile),
            imatrix: spec.imatrix,
            method: spec.method,
            lora,
            gates,
            passed,
        });
    }
    let mut inputs = Vec::new();
    for f in ctx.mmlu_data.iter().flatten() {
        inputs.push(Input { role: "mmlu_data".into(), file: f.clone() });
    }
    let texts = [("imatrix_text", &ctx.imatrix_text), ("eval_text", &ctx.eval_text)];
    for (role, f) in texts {
        inputs.extend(f.iter().map(|f| Input { role: role.into(), file: f.clone() }));
    }
    for f in ctx.calib_texts.iter().flatten() {
        inputs.push(Input { role: "calibration_text".into(), file: f.clone() });
    }
    for l in ctx.loras.iter().flatten() {
        for f in &l.files {
            let file = InputFile { path: format!("{}/{}", l.spec, f.path), ..f.clone() };
            inputs.push(Input { role: "lora".into(), file });
        }
    }
    inputs.sort_by(|a, b| (&a.role, &a.file.path).cmp(&(&b.role, &b.file.path)));
    inputs.dedup_by(|a, b| a.role == b.role && a.file.path == b.file.path);
    let manifest = Manifest {
        tool: Tool { name: "quantforge", version: TOOL_VERSION },
        pipeline: InputFile {
            path: ctx.file_name.clone(),
            size: ctx.text.len() as u64,
            sha256: ctx.file_sha256.clone(),
        },
        source: &ctx.source,
        inputs,
        imatrix: of_kind(Kind::Imatrix),
        reference: of_kind(Kind::Reference),
        passed: failures.is_empty(),
        artifacts,
    };
    write_atomic(&ctx.out.join("manifest.json"), (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes())?;
    let chart = super::chart::chart(ctx, &manifest)?;
    match &chart {
        Some(svg) => write_atomic(&ctx.out.join("chart.svg"), svg.as_bytes())?,
        None => {
            let _ = std::fs::remove_file(ctx.out.join("chart.svg"));
        }
    }
    write_atomic(&ctx.out.join("README.md"), super::card::card(ctx, &manifest, chart.is_some()).as_bytes())?;
    let published = manifest.artifacts.iter().filter(|a| a.passed).count();
    events.note(
        json!({"event": "finished", "manifest": "manifest.json", "published": published,
               "rejected": manifest.artifacts.len() - published, "failed_gates": failures}),
        &format!("manifest.json: {published} of {} artifacts published", manifest.artifacts.len()),
    );
    if !failures.is_empty() {
        bail!("quality gate failed: {}", failures.join("; "));
    }
    Ok(())
}

/// The artifact's bytes are still those its step recorded: the manifest states their sha256.
fn verify(ctx: &Context, file: &str, sha256: &str) -> Result<()> {
    let Some(path) = ctx.artifact_path(file) else { bail!("{file}: missing from {}", ctx.out.display()) };
    let (_, now, _) = super::hash::sha256_artifact(&path)?;
    if now != sha256 {
        bail!(
            "{}: changed since its step wrote it (sha256 {now}, recorded {sha256}); remove it or rerun with --force",
            path.display()
        );
    }
    Ok(())
}

/// Put an artifact where its gates say: the output folder, or `.quantforge/rejected/`.
fn place(ctx: &Context, file: &str, passed: bool) -> Result<()> {
    let (published, rejected) = (ctx.out.join(file), ctx.rejected_dir().join(file));
    let (from, to) = if passed { (rejected, published) } else { (published, rejected) };
    if from.is_file() || from.is_dir() {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if to.is_dir() {
            std::fs::remove_dir_all(&to)?;
        }
        std::fs::rename(&from, &to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::execute::Mmlu;
    use crate::run::schema::Size;

    #[test]
    fn gates_compare_each_figure_with_its_limit() {
        let fig = Figures {
            ppl: 10.0,
            ppl_uncertainty: None,
            delta_ppl: 0.5,
            kld: 0.02,
            kld_uncertainty: None,
            same_top: 0.9,
            mmlu: Some(Mmlu { accuracy: 0.25, stderr: 0.1, questions: 20, correct: 5 }),
            delta_mmlu: Some(0.05),
        };
        let gates = Gates {
            max_delta_ppl: Some(0.5),
            max_kld: Some(0.01),
            min_same_top: Some(0.95),
            max_size: Some(Size::Text("1K".into())),
            min_mmlu: Some(0.25),
            max_delta_mmlu: Some(0.04),
        };
        let r = check_gates(&gates, 1001, Some(&fig));
        let verdict: Vec<(&str, bool)> = r.iter().map(|g| (g.gate, g.passed)).collect();
        assert_eq!(
            verdict,
            [
                ("max_delta_ppl", true),
                ("max_kld", false),
                ("max_size", false),
                ("max_delta_mmlu", false),
                ("min_same_top", false),
                ("min_mmlu", true)
            ]
        );
        assert!(check_gates(&Gates::default(), 5, None).is_empty());
    }
}
