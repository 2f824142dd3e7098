//! The model card, `README.md` in the hub's convention: YAML front matter (`base_model`,
//! `base_model_relation: quantized`, `quantized_by`, `license`, `tags`, `pipeline_tag`), a table of the published
//! files with their figures against the source, the size/KLD chart, the gates, and the recipe.
//!
//! Invariant: built from the manifest and the pipeline text alone, so it is byte-identical whenever they are.

use super::execute::UnitResult;
use super::manifest::Manifest;
use super::plan::Context;
use crate::outln;
use crate::report::bytes;

/// The card's text.
pub fn card(ctx: &Context, m: &Manifest, chart: bool) -> String {
    let card = &ctx.p.card;
    let base_model = card.base_model.clone().or_else(|| m.source.repo.clone());
    let license = card.license.clone().or_else(|| gguf_license(ctx, m));
    // GGUF wording, tag and the Ollama section only where GGUF files are published.
    let published = || m.artifacts.iter().filter(|a| a.passed);
    let any_gguf = published().any(|a| a.result.files.is_none());
    let all_gguf = published().all(|a| a.result.files.is_none());
    let mut o = String::new();
    outln!(o, "---");
    if let Some(b) = &base_model {
        outln!(o, "base_model: {}", yaml(b));
        outln!(o, "base_model_relation: quantized");
    }
    outln!(o, "quantized_by: {}", yaml(card.quantized_by.as_deref().unwrap_or("quantforge")));
    if let Some(l) = &license {
        outln!(o, "license: {}", yaml(l));
    }
    outln!(o, "tags:");
    let ours: &[&str] = if any_gguf { &["gguf", "quantized", "quantforge"] } else { &["quantized", "quantforge"] };
    let mut tags = ours.to_vec();
    tags.extend(card.tags.iter().map(String::as_str).filter(|t| !ours.contains(t)));
    for t in tags {
        outln!(o, "- {}", yaml(t));
    }
    outln!(o, "pipeline_tag: {}", yaml(card.pipeline_tag.as_deref().unwrap_or("text-generation")));
    outln!(o, "---");
    outln!(o);
    let title = super::schema::source_name(&ctx.p);
    outln!(o, "# {title} {}", if all_gguf { "GGUF" } else { "quantized" });
    outln!(o);
    let from = match (&m.source.repo, &m.source.commit) {
        (Some(repo), Some(commit)) => format!("[{repo}](https://huggingface.co/{repo}) at commit `{commit}`"),
        _ => format!("`{}`", m.source.model),
    };
    let what = if all_gguf { "GGUF quantizations" } else { "Quantizations" };
    outln!(o, "{what} of {from}, made with quantforge {} from `{}`.", m.tool.version, ctx.file_name);
    outln!(o, "Every figure below is in `manifest.json`, with the sha256 of every input file.");
    outln!(o);
    // The MMLU column only where the pipeline measures it, so cards without it keep their layout.
    let mmlu = ctx.p.eval.as_ref().is_some_and(|e| e.mmlu.is_some());
    if mmlu {
        outln!(o, "| File | Type | Size | BPW | PPL | ΔPPL | KLD | Same top | MMLU | sha256 |");
        outln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    } else {
        outln!(o, "| File | Type | Size | BPW | PPL | ΔPPL | KLD | Same top | sha256 |");
        outln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    }
    for a in published() {
        let r = &a.result;
        let (ppl, dppl, kld, top) = match &r.eval {
            Some(e) => (
                format!("{:.4}", e.ppl),
                format!("{:+.4}", e.delta_ppl),
                format!("{:.6}", e.kld),
                format!("{:.2}%", 100.0 * e.same_top),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let top = match r.eval.as_ref().and_then(|e| e.mmlu.as_ref()) {
            Some(m) => format!("{top} | {:.2}%", 100.0 * m.accuracy),
            None if mmlu => format!("{top} | -"),
            None => top,
        };
        outln!(
            o,
            "| [{f}]({f}) | {}{} | {} | {:.2} | {ppl} | {dppl} | {kld} | {top} | `{}` |",
            r.ftype,
            match a.method.filter(|_| r.files.is_none()) {
                Some(method) => format!(" ({})", method.name().to_uppercase()),
                None => String::new(),
            },
            bytes(r.size),
            r.bits_per_weight,
            r.sha256,
            f = r.file
        );
    }
    if let Some(e) = &ctx.p.eval {
        outln!(o);
        let chunks = e.chunks.map_or("all chunks".to_string(), |c| format!("at most {c} chunks"));
        outln!(o, "Measured against the source on `{}` ({} tokens per chunk, {chunks}).", e.text.display(), e.ctx);
        if let (Some(spec), Some(UnitResult::Reference { mmlu: Some(r), .. })) = (&e.mmlu, m.reference) {
            outln!(
                o,
                "MMLU: {}-shot, {} questions; the source scores {:.2}% ± {:.2}.",
                spec.shots,
                r.questions,
                100.0 * r.accuracy,
                100.0 * r.stderr
            );
        }
    }
    if chart {
        outln!(o);
        outln!(o, "![File size against mean KL divergence from the source](chart.svg)");
    }
    gates_section(&mut o, m);
    if any_gguf {
        outln!(o);
        outln!(o, "## Use with Ollama");
        outln!(o);
        outln!(o, "Each GGUF has a Modelfile beside it: `ollama create NAME -f FILE.Modelfile`.");
    }
    outln!(o);
    outln!(o, "## Recipe");
    outln!(o);
    outln!(o, "Reproduce with `quantforge run {}` (same inputs, same bytes):", ctx.file_name);
    outln!(o);
    outln!(o, "```toml");
    o.push_str(ctx.text.trim_end());
    outln!(o);
    outln!(o, "```");
    o
}

fn gates_section(o: &mut String, m: &Manifest) {
    let gated: Vec<_> = m.artifacts.iter().filter(|a| !a.gates.is_empty()).collect();
    if gated.is_empty() {
        return;
    }
    outln!(o);
    outln!(o, "## Quality gates");
    outln!(o);
    outln!(o, "| Output | Gate | Limit | Value | Result |");
    outln!(o, "|---|---|---:|---:|---|");
    for a in gated {
        for g in &a.gates {
            let verdict = if g.passed { "pass" } else { "fail (not published)" };
            outln!(o, "| {} | {} | {} | {:.6} | {verdict} |", a.name, g.gate, g.limit, g.value);
        }
    }
}

/// The source GGUF's licence, when the source is a GGUF that states one.
fn gguf_license(ctx: &Context, _m: &Manifest) -> Option<String> {
    if !ctx.source.is_gguf {
        return None;
    }
    let gguf = quantforge_formats::gguf::GgufFile::open(&ctx.source.path).ok()?;
    super::modelfile::license(ctx, &gguf)
}

/// A YAML scalar: plain when safe, else double-quoted.
fn yaml(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !s.starts_with(['-', '.'])
        && !["true", "false", "null", "yes", "no", "on", "off"].contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::yaml;

    #[test]
    fn yaml_scalars_are_quoted_when_needed() {
        assert_eq!(yaml("HuggingFaceTB/SmolLM2-135M"), "HuggingFaceTB/SmolLM2-135M");
        assert_eq!(yaml("apache-2.0"), "apache-2.0");
        assert_eq!(yaml("yes"), "\"yes\"");
        assert_eq!(yaml("a: b"), "\"a: b\"");
    }
}
