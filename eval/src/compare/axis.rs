//! Chart axes: a value range mapped onto pixels, linearly or logarithmically, with round tick values.

/// One axis.
pub struct Axis {
    pub log: bool,
    lo: f64,
    hi: f64,
    pub ticks: Vec<f64>,
}

impl Axis {
    /// A linear axis covering `[lo, hi]`, extended to round ticks.
    pub fn linear(lo: f64, hi: f64) -> Axis {
        let ticks = linear_ticks(lo, hi);
        let (lo, hi) = (ticks[0], *ticks.last().unwrap_or(&hi));
        Axis { log: false, lo, hi, ticks }
    }

    /// A base-10 logarithmic axis covering `[lo, hi]` (both > 0) with a margin, ticks at 1, 2 and 5 × 10^k, or
    /// at finer steps when that gives fewer than four ticks (a range within one decade).
    pub fn log(lo: f64, hi: f64) -> Axis {
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo / 2.0, lo * 2.0) };
        let (lo, hi) = (lo / 1.25, hi * 1.25);
        let steps: [&[f64]; 3] = [
            &[1.0, 2.0, 5.0],
            &[1.0, 2.0, 3.0, 5.0, 7.0],
            &[1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        ];
        let mut ticks = Vec::new();
        for mantissas in steps {
            ticks.clear();
            for d in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
                for m in mantissas {
                    let v = m * 10f64.powi(d);
                    if v >= lo && v <= hi {
                        ticks.push(v);
                    }
                }
            }
            if ticks.len() >= 4 {
                break;
            }
        }
        Axis { log: true, lo, hi, ticks }
    }

    /// Position of `v` in `[0, 1]` along the axis.
    pub fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()).max(f64::MIN_POSITIVE)
        } else {
            (v - self.lo) / (self.hi - self.lo).max(f64::MIN_POSITIVE)
        }
    }

    /// A tick value as text: the fewest decimals that show it exactly (up to 6).
    pub fn label(&self, v: f64) -> String {
        let step = if self.log { v } else { self.ticks.get(1).map_or(1.0, |b| b - self.ticks[0]) };
        let exact = |d: i32| ((v * 10f64.powi(d)).round() - v * 10f64.powi(d)).abs() < 1e-6 * 10f64.powi(d).max(1.0);
        let d = (0..6).find(|&d| exact(d) && (self.log || exact_step(step, d))).unwrap_or(6) as usize;
        format!("{v:.d$}")
    }
}

fn exact_step(step: f64, d: i32) -> bool {
    ((step * 10f64.powi(d)).round() - step * 10f64.powi(d)).abs() < 1e-6
}

/// 4-8 round values covering `[lo, hi]`.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf((span / 5.0).log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 7.0).unwrap_or(10.0 * mag);
    let mut v = (lo / step).floor() * step;
    let mut t = Vec::new();
    while v <= hi + step * 1e-9 {
        t.push(v);
        v += step;
    }
    if t.last().is_none_or(|&l| l < hi) {
        t.push(v);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round_and_cover_the_range() {
        let a = Axis::linear(0.0, 514.8);
        assert_eq!(a.ticks, [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0]);
        assert_eq!(a.label(300.0), "300");
        let a = Axis::linear(28.0, 35.8);
        assert!(a.ticks[0] <= 28.0 && *a.ticks.last().unwrap() >= 35.8 && a.ticks.len() <= 8, "{:?}", a.ticks);
        let a = Axis::linear(0.0, 0.06);
        assert_eq!(a.label(a.ticks[1]), "0.01");
        assert!((a.frac(0.03) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn log_ticks_are_1_2_5_per_decade() {
        let a = Axis::log(0.0012, 0.31);
        assert_eq!(a.ticks, [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]);
        assert_eq!(a.label(0.005), "0.005");
        assert!(a.frac(0.0012) > 0.0 && a.frac(0.31) < 1.0);
        assert!((a.frac(0.01) - a.frac(0.001) - (a.frac(0.1) - a.frac(0.01))).abs() < 1e-9);
        // Within one decade the steps get finer.
        let a = Axis::log(87.5, 138.1);
        assert_eq!(a.ticks, [70.0, 80.0, 90.0, 100.0, 120.0, 150.0]);
        assert_eq!(a.label(120.0), "120");
    }
}
