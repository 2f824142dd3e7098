//! `run --explain`: the steps a pipeline takes, in words, from the file alone (nothing is fetched or read).

use std::path::Path;

use quantforge_quant::policy::FileType;

use super::schema::{output_name, Pipeline};
use crate::outln;

/// The steps of `p`, numbered as `--plan` numbers its units.
pub fn explain(p: &Pipeline, file: &Path) -> String {
    let mut o = String::new();
    outln!(o, "{}: source {}", file.display(), p.source.model);
    let mut n = 0;
    if let (Some(s), true) = (&p.imatrix, p.outputs.iter().any(|o| o.imatrix)) {
        outln!(
            o,
            "{n}. imatrix: convert the source to F16, collect the importance matrix on {} ({} tokens per chunk, {}) \
             -> imatrix.gguf",
            s.text.display(),
            s.ctx,
            chunks(s.chunks)
        );
        n += 1;
    }
    if let Some(e) = &p.eval {
        outln!(
            o,
            "{n}. reference: perplexity of the source on {} ({} tokens per chunk, {}), its log-probabilities kept",
            e.text.display(),
            e.ctx,
            chunks(e.chunks)
        );
        if let Some(m) = &e.mmlu {
            outln!(o, "   and its MMLU accuracy ({}-shot) on {}", m.shots, m.data.display());
        }
        n += 1;
    }
    for (i, out) in p.outputs.iter().enumerate() {
        let ftype = match &out.ftype {
            Some(t) => match t.get_ref().parse::<FileType>() {
                Ok(f) => Some(f),
                Err(_) => continue,
            },
            None => None,
        };
        let name = output_name(p, i, ftype);
        let mut how = vec![match (ftype, out.method) {
            (Some(t), Some(m)) => format!("quantize to {} with {}", t.name(), m.name().to_uppercase()),
            (Some(t), None) => format!("quantize to {}", t.name()),
            (None, m) => format!(
                "{} checkpoint directory ({}, {}-bit, group {})",
                m.map_or("integer", |m| m.name()).to_uppercase(),
                out.format.as_deref().unwrap_or("compressed-tensors"),
                out.bits.unwrap_or(4),
                out.group_size.unwrap_or(128)
            ),
        }];
        for l in &out.lora {
            how.push(format!("LoRA {} (scale {})", l.path, l.scale));
        }
        if out.imatrix {
            how.push("with the imatrix".into());
        }
        if let Some(e) = &p.eval {
            how.push(
                if e.mmlu.is_some() {
                    "KLD, PPL and MMLU against the reference"
                } else {
                    "KLD and PPL against the reference"
                }
                .into(),
            );
        }
        let g = &out.gates;
        let mut gates = Vec::new();
        let figures = [
            ("max_delta_ppl", g.max_delta_ppl),
            ("max_kld", g.max_kld),
            ("min_same_top", g.min_same_top),
            ("min_mmlu", g.min_mmlu),
            ("max_delta_mmlu", g.max_delta_mmlu),
        ];
        gates.extend(figures.iter().filter_map(|(k, v)| v.map(|v| format!("{k} {v}"))));
        if let Some(s) = &g.max_size {
            gates.push(format!("max_size {}", s.bytes().unwrap_or(0)));
        }
        let gates = if gates.is_empty() { String::new() } else { format!("; gates: {}", gates.join(", ")) };
        let artifact = if ftype.is_some() { format!("{name}.gguf") } else { format!("{name}/") };
        outln!(o, "{n}. {name}: {} -> {artifact}{gates}", how.join(", "));
        n += 1;
    }
    outln!(o, "then: manifest.json, README.md (model card) and a Modelfile per published GGUF");
    o
}

fn chunks(c: Option<usize>) -> String {
    c.map_or("all chunks".into(), |c| format!("at most {c} chunks"))
}
