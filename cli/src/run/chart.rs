//! The card's chart: file size against mean KLD of the source and every published artifact, drawn by the same
//! function as `eval compare --svg` from the figures the steps measured (nothing is evaluated again).
//!
//! Invariant: labels are file names and the text is named as the pipeline names it, so the SVG holds no
//! absolute path and is the same bytes whenever the manifest is.

use anyhow::Result;
use quantforge_eval::compare::chart::{svg, Metric};
use quantforge_eval::compare::{Comparison, Row};
use quantforge_eval::kld::Estimate;

use super::execute::UnitResult;
use super::manifest::Manifest;
use super::plan::Context;

/// The chart's SVG, when the pipeline evaluates its outputs and at least one was published.
pub fn chart(ctx: &Context, m: &Manifest) -> Result<Option<String>> {
    let (Some(eval), Some(UnitResult::Reference { ppl, ppl_uncertainty, .. })) = (&ctx.p.eval, m.reference) else {
        return Ok(None);
    };
    let estimate = |value: f64, u: Option<f64>| Estimate { value, uncertainty: u.unwrap_or(0.0) };
    let mut base = Row::describe(&ctx.source.path)?;
    base.label = super::schema::source_name(&ctx.p);
    base.path = ctx.source.model.clone();
    base.is_base = true;
    base.ppl = Some(estimate(*ppl, *ppl_uncertainty));
    let mut models = vec![base];
    for a in m.artifacts.iter().filter(|a| a.passed) {
        let Some(e) = &a.result.eval else { continue };
        let mut row = Row::describe(&ctx.out.join(&a.result.file))?;
        row.label = a.result.file.clone();
        row.path = a.result.file.clone();
        row.ppl = Some(estimate(e.ppl, e.ppl_uncertainty));
        row.kld = Some(estimate(e.kld, e.kld_uncertainty));
        row.delta_ppl_percent = Some(100.0 * e.delta_ppl / ppl);
        models.push(row);
    }
    if models.len() < 2 {
        return Ok(None);
    }
    let c = Comparison {
        text: eval.text.display().to_string(),
        ctx: eval.ctx,
        chunks: eval.chunks.map(|c| c as u64),
        mmlu: None,
        threads: 1,
        models,
    };
    Ok(Some(svg(&c, Metric::Kld)))
}
