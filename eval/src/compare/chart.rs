//! An SVG chart of file size against quality (mean KLD or PPL): one point per model, the models no other
//! model beats on both axes joined by a line (the size/quality frontier). Plain SVG 1.1, no scripts or
//! external resources, so it opens in any browser and embeds in a README. [`svg`] is a pure function of the
//! comparison: the same figures give the same bytes.

use super::axis::Axis;
use super::row::Row;
use super::Comparison;

/// The chart's quality axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Mean KL divergence against the base (log scale; the base itself is not drawn).
    Kld,
    /// Perplexity (linear scale).
    Ppl,
}

impl Metric {
    /// `kld` or `ppl`.
    pub fn from_name(name: &str) -> Option<Metric> {
        match name {
            "kld" => Some(Metric::Kld),
            "ppl" => Some(Metric::Ppl),
            _ => None,
        }
    }
}

const W: f64 = 900.0;
const H: f64 = 560.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 100.0;
const BOTTOM: f64 = 70.0;

/// The quality value of a row on the chart's axis (the base's KLD against itself is 0).
fn quality(r: &Row, metric: Metric) -> Option<f64> {
    match metric {
        Metric::Kld if r.is_base => Some(0.0),
        Metric::Kld => r.kld.map(|k| k.value),
        Metric::Ppl => r.ppl.map(|p| p.value),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Approximate width in pixels of `text` at `size` px in a sans-serif font.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.56
}

/// Break `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// A placed label: its box.
struct Placed {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Placed {
    fn overlaps(&self, o: &Placed) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
}

/// Where to put a label for the point at `(cx, cy)`: beside it, right or left, moved up or down in 15 px steps
/// until it overlaps no label placed before and no other point or line sample; `(x, baseline, anchored left)`.
fn place(label: &str, cx: f64, cy: f64, placed: &[Placed], points: &[(f64, f64)], right_edge: f64) -> (f64, f64, bool) {
    let w = text_width(label, 13.0);
    let fits_right = cx + 10.0 + w <= right_edge;
    let fits_left = cx - 10.0 - w >= 4.0;
    for step in 0..12 {
        for dy in [step as f64 * 15.0, -(step as f64) * 15.0].into_iter().take(if step == 0 { 1 } else { 2 }) {
            for left in [false, true] {
                if (left && !fits_left) || (!left && !fits_right) {
                    continue;
                }
                let base = cy - 8.0 + dy;
                let x0 = if left { cx - 10.0 - w } else { cx + 10.0 };
                let b = Placed { x0, y0: base - 11.0, x1: x0 + w, y1: base + 3.0 };
                let hits =
                    |&(px, py): &(f64, f64)| px > b.x0 - 5.0 && px < b.x1 + 5.0 && py > b.y0 - 5.0 && py < b.y1 + 5.0;
                if !placed.iter().any(|p| p.overlaps(&b)) && !points.iter().any(hits) {
                    return (if left { b.x1 } else { b.x0 }, base, left);
                }
            }
        }
    }
    if fits_right {
        (cx + 10.0, cy - 8.0, false)
    } else {
        (cx - 10.0, cy - 8.0, true)
    }
}

/// The SVG document of the comparison's rows on the `metric` axis.
pub fn svg(c: &Comparison, metric: Metric) -> String {
    let rows = &c.models;
    let mib = |r: &Row| r.file_bytes as f64 / (1024.0 * 1024.0);
    // KLD is drawn on a log scale: the base (KLD 0 against itself) is named in a note instead of drawn.
    let pts: Vec<(&Row, f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r, mib(r), quality(r, metric)?)))
        .filter(|p| p.1 > 0.0 && (metric == Metric::Ppl || p.2 > 0.0))
        .collect();
    let (name, axis_name, unit) = match metric {
        Metric::Kld => ("mean KL divergence against the base", "mean KLD (log scale)", "KLD"),
        Metric::Ppl => ("perplexity", "perplexity", "PPL"),
    };
    let range = |f: &dyn Fn(&(&Row, f64, f64)) -> f64| {
        pts.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
    };
    let (xlo, xhi) = range(&|p| p.1);
    let (ylo, yhi) = range(&|p| p.2);
    let finite = xlo.is_finite();
    let xa = if finite { Axis::log(xlo, xhi) } else { Axis::log(1.0, 10.0) };
    let ya = match (metric, finite) {
        (_, false) => Axis::linear(0.0, 1.0),
        (Metric::Kld, true) => Axis::log(ylo, yhi),
        (Metric::Ppl, true) => Axis::linear(ylo - 0.05 * (yhi - ylo).max(0.1), yhi + 0.05 * (yhi - ylo).max(0.1)),
    };
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |v: f64| LEFT + xa.frac(v) * pw;
    let sy = |v: f64| TOP + ph - ya.frac(v) * ph;

    let mut s = String::new();
    s.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"Helvetica, Arial, sans-serif\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\n"
    ));
    s.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"30\" font-size=\"20\" font-weight=\"bold\" fill=\"#222\">File size vs {}</text>\n",
        esc(name)
    ));
    let mut note = c.sentence(rows.first().map_or("", |r| r.label.as_str()));
    if metric == Metric::Kld {
        if let Some(b) = rows.iter().find(|r| r.is_base) {
            note.push_str(&format!(" Base {} ({:.1} MiB) not drawn: its KLD is 0.", b.label, mib(b)));
        }
    }
    for (i, line) in wrap(&note, 125).iter().enumerate() {
        s.push_str(&format!(
            "<text x=\"{LEFT}\" y=\"{}\" font-size=\"12\" fill=\"#555\">{}</text>\n",
            50.0 + 15.0 * i as f64,
            esc(line)
        ));
    }
    for &v in &xa.ticks {
        let x = sx(v);
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#e4e4e4\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" fill=\"#444\">{}</text>\n",
            TOP + ph,
            TOP + ph + 18.0,
            xa.label(v)
        ));
    }
    for &v in &ya.ticks {
        let y = sy(v);
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"#444\">{}</text>\n",
            LEFT + pw,
            LEFT - 8.0,
            y + 4.0,
            ya.label(v)
        ));
    }
    s.push_str(&format!(
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"14\" text-anchor=\"middle\" fill=\"#222\">file size (MiB, log scale)</text>\n\
         <text transform=\"translate(22 {:.1}) rotate(-90)\" font-size=\"14\" text-anchor=\"middle\" \
         fill=\"#222\">{}</text>\n",
        LEFT + pw / 2.0,
        H - 22.0,
        TOP + ph / 2.0,
        esc(axis_name)
    ));
    let frontier = frontier(&pts);
    if frontier.len() > 1 {
        let line: Vec<String> = frontier.iter().map(|&i| format!("{:.1},{:.1}", sx(pts[i].1), sy(pts[i].2))).collect();
        s.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#4a7ebb\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/>\n",
            line.join(" ")
        ));
    }
    let centres: Vec<(f64, f64)> = pts.iter().map(|p| (sx(p.1), sy(p.2))).collect();
    // Points along the frontier line, so labels avoid crossing it.
    let mut line_samples = Vec::new();
    for w in frontier.windows(2) {
        let ((ax, ay), (bx, by)) = (centres[w[0]], centres[w[1]]);
        let n = ((bx - ax).hypot(by - ay) / 6.0).ceil().max(1.0) as usize;
        line_samples
            .extend((1..n).map(|k| (ax + (bx - ax) * k as f64 / n as f64, ay + (by - ay) * k as f64 / n as f64)));
    }
    let mut placed: Vec<Placed> = Vec::new();
    let mut order: Vec<usize> = (0..pts.len()).collect();
    order.sort_by(|&a, &b| centres[a].1.total_cmp(&centres[b].1));
    for i in order {
        let (r, x, y) = pts[i];
        let (cx, cy) = centres[i];
        let fill = if r.is_base { "#333333" } else { "#d9534f" };
        let label = format!("{} ({unit} {})", r.label, fmt_value(y, metric));
        let mut others: Vec<(f64, f64)> =
            centres.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &c)| c).collect();
        others.extend(&line_samples);
        let (lx, ly, left) = place(&label, cx, cy, &placed, &others, W - 10.0);
        let w = text_width(&label, 13.0);
        let x0 = if left { lx - w } else { lx };
        placed.push(Placed { x0, y0: ly - 11.0, x1: x0 + w, y1: ly + 3.0 });
        s.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"6\" fill=\"{fill}\"><title>{}: {:.1} MiB, {:.2} BPW, {unit} {}</title></circle>\n\
             <text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"13\" fill=\"#222\"{}>{}</text>\n",
            esc(&r.label),
            x,
            r.bits_per_weight,
            fmt_value(y, metric),
            if left { " text-anchor=\"end\"" } else { "" },
            esc(&label)
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
    use crate::kld::Estimate;

    fn row(label: &str, mib: f64, kld: Option<f64>, base: bool) -> Row {
        Row {
            label: label.into(),
            file_bytes: (mib * 1048576.0) as u64,
            kld: kld.map(|k| Estimate { value: k, uncertainty: 0.0 }),
            ppl: Some(Estimate { value: 10.0 + kld.unwrap_or(0.0), uncertainty: 0.1 }),
            is_base: base,
            ..Default::default()
        }
    }

    #[test]
    fn subtitles_wrap_at_spaces() {
        assert_eq!(wrap("aa bb cc dd", 5), ["aa bb", "cc dd"]);
        assert_eq!(wrap("averylongword x", 5), ["averylongword", "x"]);
    }

    #[test]
    fn chart_has_a_point_per_model_and_the_frontier() {
        let rows = [
            row("F32 & co", 515.0, None, true),
            row("Q8_0", 138.0, Some(0.004), false),
            row("Q4_0", 100.0, Some(0.1), false),
        ];
        let rows_big = [rows[0].clone(), rows[1].clone(), rows[2].clone(), row("bad", 200.0, Some(0.2), false)];
        let setup = |rows: &[Row]| Comparison {
            text: "t.txt".into(),
            ctx: 512,
            chunks: Some(16),
            mmlu: None,
            threads: 1,
            models: rows.to_vec(),
        };
        let svg = svg(&setup(&rows_big), Metric::Kld);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        // The base's KLD is 0: on the log scale it is named, not drawn.
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("not drawn"));
        assert!(svg.contains("F32 &amp; co"));
        // Q4_0, Q8_0 and the base are the frontier; "bad" is beaten by Q8_0 on both axes.
        let pts: Vec<(&Row, f64, f64)> =
            rows_big.iter().map(|r| (r, r.file_bytes as f64, quality(r, Metric::Kld).unwrap())).collect();
        assert_eq!(frontier(&pts), [2, 1, 0]);
        assert_eq!(super::svg(&setup(&rows), Metric::Ppl).matches("<circle").count(), 3);
        assert_eq!(Metric::from_name("ppl"), Some(Metric::Ppl));
        assert_eq!(Metric::from_name("mmlu"), None);
    }
}
