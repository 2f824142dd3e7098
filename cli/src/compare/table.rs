//! The comparison as a terminal table, a Markdown table and JSON.

use serde_json::{json, Value};

use super::row::Row;
use crate::{outln, report};

/// What every figure was measured on.
pub struct Setup {
    pub text: String,
    pub ctx: usize,
    pub chunks: Option<u64>,
    /// The MMLU selection, when MMLU ran.
    pub mmlu: Option<String>,
}

impl Setup {
    /// One sentence for under a table.
    pub fn sentence(&self, base: &str) -> String {
        let chunks = self.chunks.map_or(String::new(), |c| format!("{c} chunks of "));
        let mut s = format!(
            "PPL and KLD on {}, {chunks}{} tokens (second half of each chunk scored); KLD and same-top against {base}.",
            self.text, self.ctx
        );
        if let Some(m) = &self.mmlu {
            s.push_str(&format!(" MMLU: {m}."));
        }
        s
    }
}

/// The cells of one row, formatted.
fn cells(r: &Row, base: &Row, mmlu: bool) -> Vec<String> {
    let dash = || "-".to_string();
    let mut c = vec![
        r.label.clone(),
        report::bytes(r.file_bytes),
        format!("{:.2}", r.bpw()),
        r.ppl.map_or_else(dash, |(p, u)| format!("{p:.4} ± {u:.4}")),
        if r.is_base { "base".into() } else { r.delta_ppl(base).map_or_else(dash, |d| format!("{d:+.2}%")) },
        r.kld.map_or_else(dash, |(k, u)| format!("{k:.6} ± {u:.6}")),
        r.same_top.map_or_else(dash, |(s, u)| format!("{:.2} ± {:.2}%", 100.0 * s, 100.0 * u)),
    ];
    if mmlu {
        c.push(r.mmlu_accuracy().map_or_else(dash, |(a, e)| format!("{:.2} ± {:.2}%", 100.0 * a, 100.0 * e)));
    }
    c.push(r.tokens_per_second.map_or_else(dash, |t| format!("{t:.0}")));
    c
}

fn headers(mmlu: bool) -> Vec<&'static str> {
    let mut h = vec!["model", "size", "BPW", "PPL", "ΔPPL", "mean KLD", "same top"];
    if mmlu {
        h.push("MMLU");
    }
    h.push("tokens/s");
    h
}

fn has_mmlu(rows: &[Row]) -> bool {
    rows.iter().any(|r| r.mmlu.is_some())
}

/// Aligned columns for a terminal.
pub fn text(rows: &[Row], setup: &Setup) -> String {
    let mmlu = has_mmlu(rows);
    let h = headers(mmlu);
    let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r, &rows[0], mmlu)).collect();
    let widths: Vec<usize> = (0..h.len())
        .map(|i| body.iter().map(|c| c[i].chars().count()).chain([h[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |c: &[String]| -> String {
        let parts: Vec<String> = c
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let pad = widths[i] - v.chars().count();
                if i == 0 {
                    format!("{v}{}", " ".repeat(pad))
                } else {
                    format!("{}{v}", " ".repeat(pad))
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut o = String::new();
    outln!(o, "{}", line(&h.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    for c in &body {
        outln!(o, "{}", line(c));
    }
    outln!(o, "{}", setup.sentence(&rows[0].label));
    o
}

/// A GitHub-flavoured Markdown table and the setup sentence.
pub fn markdown(rows: &[Row], setup: &Setup) -> String {
    let mmlu = has_mmlu(rows);
    let h = headers(mmlu);
    let mut o = String::new();
    outln!(o, "| {} |", h.join(" | "));
    let align: Vec<&str> = (0..h.len()).map(|i| if i == 0 { "---" } else { "---:" }).collect();
    outln!(o, "| {} |", align.join(" | "));
    for r in rows {
        let c: Vec<String> = cells(r, &rows[0], mmlu).iter().map(|v| v.replace('|', "\\|")).collect();
        outln!(o, "| {} |", c.join(" | "));
    }
    outln!(o);
    outln!(o, "{}", setup.sentence(&format!("`{}`", rows[0].label)));
    o
}

/// Every figure.
pub fn to_json(rows: &[Row], setup: &Setup) -> Value {
    let pair = |e: Option<(f64, f64)>| e.map(|(v, u)| json!({"value": v, "uncertainty": u}));
    let models: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "label": r.label,
                "path": r.path,
                "base": r.is_base,
                "file_bytes": r.file_bytes,
                "params": r.params,
                "weight_bytes": r.weight_bytes,
                "bits_per_weight": r.bpw(),
                "ppl": pair(r.ppl),
                "delta_ppl_percent": if r.is_base { Some(0.0) } else { r.delta_ppl(&rows[0]) },
                "ln_ppl_ratio": pair(r.ln_ppl_ratio),
                "kld": pair(r.kld),
                "kld_p99": r.kld_p99,
                "same_top": pair(r.same_top),
                "mmlu": r.mmlu,
                "tokens_per_second": r.tokens_per_second,
            })
        })
        .collect();
    json!({
        "text": setup.text,
        "ctx": setup.ctx,
        "chunks": setup.chunks,
        "mmlu": setup.mmlu,
        "threads": rayon::current_num_threads(),
        "models": models,
    })
}
