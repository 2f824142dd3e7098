//! An SVG chart of file size against quality (mean KLD or PPL): one point per model, the models no other
//! model beats on both axes joined by a line (the size/quality frontier). Plain SVG 1.1, no scripts or
//! external resources, so it opens in any browser and embeds in a README.

use std::path::Path;

use anyhow::Result;
use quantforge_formats::AtomicFile;

use super::row::Row;
use super::table::Setup;
use super::Metric;

const W: f64 = 900.0;
const H: f64 = 560.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 80.0;
const BOTTOM: f64 = 70.0;

/// Write the chart to `path` (whole or not at all).
pub fn write(path: &Path, rows: &[Row], metric: Metric, setup: &Setup) -> Result<()> {
    let svg = render(rows, metric, setup);
    let mut f = AtomicFile::create(path)?;
    f.write_all(svg.as_bytes())?;
    f.commit()?;
    Ok(())
}

/// The quality value of a row on the chart's axis (the base's KLD against itself is 0).
fn quality(r: &Row, metric: Metric) -> Option<f64> {
    match metric {
        Metric::Kld if r.is_base => Some(0.0),
        Metric::Kld => r.kld.map(|k| k.0),
        Metric::Ppl => r.ppl.map(|p| p.0),
    }
}

/// Tick positions: 4-8 round values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 7.0).unwrap_or(10.0 * mag);
    let first = (lo / step).floor() * step;
    let mut t = Vec::new();
    let mut v = first;
    while v <= hi + step * 1e-9 {
        t.push(v);
        v += step;
    }
    if t.last().is_some_and(|&l| l < hi) {
        t.push(v);
    }
    t
}

fn fmt_tick(v: f64, step: f64) -> String {
    // The fewest decimals that show the step exactly (0.25 -> 2, 0.02 -> 2, 100 -> 0).
    let decimals = (0..6).find(|&d| ((step * 10f64.powi(d)).round() - step * 10f64.powi(d)).abs() < 1e-6).unwrap_or(6);
    let decimals = decimals as usize;
    format!("{v:.decimals$}")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The SVG document.
pub fn render(rows: &[Row], metric: Metric, setup: &Setup) -> String {
    let pts: Vec<(&Row, f64, f64)> =
        rows.iter().filter_map(|r| Some((r, r.file_bytes as f64 / (1024.0 * 1024.0), quality(r, metric)?))).collect();
    let (name, unit) = match metric {
        Metric::Kld => ("mean KL divergence vs base", "KLD"),
        Metric::Ppl => ("perplexity", "PPL"),
    };
    let xmax = pts.iter().map(|p| p.1).fold(0.0, f64::max);
    let (ymin, ymax) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.2), b.max(p.2)));
    let xt = ticks(0.0, if xmax > 0.0 { xmax } else { 1.0 });
    let ylo = if metric == Metric::Kld || !ymin.is_finite() { 0.0 } else { ymin - 0.05 * (ymax - ymin).max(0.1) };
    let yhi = if ymax.is_finite() && ymax > ylo { ymax } else { ylo + 1.0 };
    let yt = ticks(ylo, yhi);
    let (x0, x1) = (xt[0], *xt.last().unwrap_or(&1.0));
    let (y0, y1) = (yt[0], *yt.last().unwrap_or(&1.0));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |v: f64| LEFT + (v - x0) / (x1 - x0).max(f64::MIN_POSITIVE) * pw;
    let sy = |v: f64| TOP + ph - (v - y0) / (y1 - y0).max(f64::MIN_POSITIVE) * ph;

    let mut s = String::new();
    s.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"Helvetica, Arial, sans-serif\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\n"
    ));
    s.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"32\" font-size=\"20\" font-weight=\"bold\" fill=\"#222\">File size vs {}</text>\n",
        esc(name)
    ));
    s.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"54\" font-size=\"12\" fill=\"#555\">{}</text>\n",
        esc(&setup.sentence(&rows[0].label))
    ));
    let xstep = xt.get(1).map_or(1.0, |b| b - xt[0]);
    for &v in &xt {
        let x = sx(v);
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#e4e4e4\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" fill=\"#444\">{}</text>\n",
            TOP + ph,
            TOP + ph + 18.0,
            fmt_tick(v, xstep)
        ));
    }
    let ystep = yt.get(1).map_or(1.0, |b| b - yt[0]);
    for &v in &yt {
        let y = sy(v);
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"#444\">{}</text>\n",
            LEFT + pw,
            LEFT - 8.0,
            y + 4.0,
            fmt_tick(v, ystep)
        ));
    }
    s.push_str(&format!(
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"14\" text-anchor=\"middle\" fill=\"#222\">file size (MiB)</text>\n\
         <text transform=\"translate(24 {:.1}) rotate(-90)\" font-size=\"14\" text-anchor=\"middle\" \
         fill=\"#222\">{}</text>\n",
        LEFT + pw / 2.0,
        H - 22.0,
        TOP + ph / 2.0,
        esc(name)
    ));
    let frontier = frontier(&pts);
    if frontier.len() > 1 {
        let line: Vec<String> = frontier.iter().map(|&i| format!("{:.1},{:.1}", sx(pts[i].1), sy(pts[i].2))).collect();
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#4a7ebb\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/>\n",
            line.join(" ")
        ));
    }
    for (r, x, y) in &pts {
        let (cx, cy) = (sx(*x), sy(*y));
        let fill = if r.is_base { "#333333" } else { "#d9534f" };
        s.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"6\" fill=\"{fill}\"><title>{}: {:.1} MiB, {:.2} BPW, {unit} {}</title></circle>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" fill=\"#222\">{}</text>\n",
            esc(&r.label),
            x,
            r.bpw(),
            fmt_value(*y, metric),
            cx + 9.0,
            cy - 8.0,
            esc(&format!("{} ({} {})", r.label, unit, fmt_value(*y, metric)))
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_value(v: f64, metric: Metric) -> String {
    match metric {
        Metric::Kld => format!("{v:.4}"),
        Metric::Ppl => format!("{v:.3}"),
    }
}

/// Indices of the points no other point beats on both size and quality, by size.
fn frontier(pts: &[(&Row, f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..pts.len()).collect();
    idx.sort_by(|&a, &b| pts[a].1.total_cmp(&pts[b].1).then(pts[a].2.total_cmp(&pts[b].2)));
    let mut best = f64::INFINITY;
    idx.into_iter()
        .filter(|&i| {
            let keep = pts[i].2 < best;
            best = best.min(pts[i].2);
            keep
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, mib: f64, kld: Option<f64>, base: bool) -> Row {
        Row {
            label: label.into(),
            file_bytes: (mib * 1048576.0) as u64,
            kld: kld.map(|k| (k, 0.0)),
            ppl: Some((10.0 + kld.unwrap_or(0.0), 0.1)),
            is_base: base,
            ..Default::default()
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 514.8), [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0]);
        let t = ticks(0.0, 0.0591);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().unwrap() >= 0.0591 && t.len() <= 8, "{t:?}");
        assert_eq!(fmt_tick(0.025, 0.025), "0.025");
        assert_eq!(fmt_tick(0.02, 0.01), "0.02");
        assert_eq!(fmt_tick(300.0, 100.0), "300");
    }

    #[test]
    fn chart_has_a_point_per_model_and_the_frontier() {
        let rows = [
            row("F32 & co", 515.0, None, true),
            row("Q8_0", 138.0, Some(0.004), false),
            row("Q4_0", 100.0, Some(0.1), false),
        ];
        let rows_big = [rows[0].clone(), rows[1].clone(), rows[2].clone(), row("bad", 200.0, Some(0.2), false)];
        let setup = Setup { text: "t.txt".into(), ctx: 512, chunks: Some(16), mmlu: None };
        let svg = render(&rows_big, Metric::Kld, &setup);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("F32 &amp; co"));
        // Q4_0, Q8_0 and the base are the frontier; "bad" is beaten by Q8_0 on both axes.
        let pts: Vec<(&Row, f64, f64)> =
            rows_big.iter().map(|r| (r, r.file_bytes as f64, quality(r, Metric::Kld).unwrap())).collect();
        assert_eq!(frontier(&pts), [2, 1, 0]);
        assert_eq!(render(&rows, Metric::Ppl, &setup).matches("<circle").count(), 3);
    }
}
