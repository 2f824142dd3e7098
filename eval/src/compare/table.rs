//! The comparison as a terminal table and as a Markdown table (for a model card): pure functions of a
//! [`Comparison`], each returning the whole text.

use std::fmt::Write;

use super::row::Row;
use super::Comparison;

/// `writeln!` into a `String` (infallible).
macro_rules! line {
    ($o:expr) => { $o.push('\n') };
    ($o:expr, $($arg:tt)*) => {{
        let _ = writeln!($o, $($arg)*);
    }};
}

/// Bytes in binary units, as llama.cpp prints model sizes (MiB/GiB).
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    } else if f >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", f / (1024.0 * 1024.0))
    } else if f >= 1024.0 {
        format!("{:.2} KiB", f / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// The cells of one row, formatted.
fn cells(r: &Row, mmlu: bool) -> Vec<String> {
    let dash = || "-".to_string();
    let mut c = vec![
        r.label.clone(),
        bytes(r.file_bytes),
        format!("{:.2}", r.bits_per_weight),
        r.ppl.map_or_else(dash, |p| format!("{:.4} ± {:.4}", p.value, p.uncertainty)),
        if r.is_base { "base".into() } else { r.delta_ppl_percent.map_or_else(dash, |d| format!("{d:+.2}%")) },
        r.kld.map_or_else(dash, |k| format!("{:.6} ± {:.6}", k.value, k.uncertainty)),
        r.same_top.map_or_else(dash, |s| format!("{:.2} ± {:.2}%", 100.0 * s.value, 100.0 * s.uncertainty)),
    ];
    if mmlu {
        c.push(r.mmlu.map_or_else(dash, |m| format!("{:.2} ± {:.2}%", 100.0 * m.accuracy(), 100.0 * m.stderr())));
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

/// The base's label, or nothing when there are no rows.
fn base_label(c: &Comparison) -> &str {
    c.models.first().map_or("", |r| r.label.as_str())
}

/// Aligned columns for a terminal, then the setup sentence.
pub fn text(c: &Comparison) -> String {
    let rows = &c.models;
    let mmlu = has_mmlu(rows);
    let h = headers(mmlu);
    let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r, mmlu)).collect();
    let widths: Vec<usize> = (0..h.len())
        .map(|i| body.iter().map(|c| c[i].chars().count()).chain([h[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let format_line = |c: &[String]| -> String {
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
    line!(o, "{}", format_line(&h.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    for c in &body {
        line!(o, "{}", format_line(c));
    }
    line!(o, "{}", c.sentence(base_label(c)));
    o
}

/// A GitHub-flavoured Markdown table and the setup sentence.
pub fn markdown(c: &Comparison) -> String {
    let rows = &c.models;
    let mmlu = has_mmlu(rows);
    let h = headers(mmlu);
    let mut o = String::new();
    line!(o, "| {} |", h.join(" | "));
    let align: Vec<&str> = (0..h.len()).map(|i| if i == 0 { "---" } else { "---:" }).collect();
    line!(o, "| {} |", align.join(" | "));
    for r in rows {
        let cells: Vec<String> = cells(r, mmlu).iter().map(|v| v.replace('|', "\\|")).collect();
        line!(o, "| {} |", cells.join(" | "));
    }
    line!(o);
    line!(o, "{}", c.sentence(&format!("`{}`", base_label(c))));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kld::Estimate;

    #[test]
    fn tables_show_every_row_and_the_setup() {
        let base = Row {
            label: "f32.gguf".into(),
            is_base: true,
            file_bytes: 1054624,
            bits_per_weight: 32.0,
            ppl: Some(Estimate { value: 4.4, uncertainty: 0.5 }),
            delta_ppl_percent: Some(0.0),
            tokens_per_second: Some(1000.0),
            ..Default::default()
        };
        let q = Row {
            label: "q|4.gguf".into(),
            file_bytes: 512,
            kld: Some(Estimate { value: 0.0268, uncertainty: 0.0053 }),
            delta_ppl_percent: Some(1.38),
            ..Default::default()
        };
        let c = Comparison {
            text: "t.txt".into(),
            ctx: 128,
            chunks: Some(4),
            mmlu: None,
            threads: 1,
            models: vec![base, q],
        };
        let t = text(&c);
        assert!(t.starts_with("model     "), "{t}");
        assert!(t.contains("1.01 MiB") && t.contains("+1.38%") && t.contains("0.026800 ± 0.005300"), "{t}");
        assert!(t.ends_with(
            "4 chunks of 128 tokens (second half of each chunk scored); KLD and same-top against f32.gguf.\n"
        ));
        let md = markdown(&c);
        assert!(md.contains("| q\\|4.gguf | 512 B |"), "{md}");
        assert!(md.contains("against `f32.gguf`."), "{md}");
        assert_eq!(bytes(98_362_432), "93.81 MiB");
    }
}
