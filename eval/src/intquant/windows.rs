//! Calibration windows: token sequences of a fixed length drawn from calibration text, as the reference
//! GPTQ tools draw them (independent uniformly random start positions, which may overlap when the text is
//! short), from a seeded generator so the same seed always gives the same windows.
//!
//! The built-in text is the second half of the bundled WikiText-2 test file (from the first line start after
//! its midpoint): the evaluation figures use its first chunks, so calibration never sees evaluated text.

use crate::error::{EvalError, Result};

/// The bundled WikiText-2 test split.
const WIKITEXT: &str = include_str!("../../../fixtures/text/wiki.test.raw");

/// The built-in calibration text: the bundled WikiText-2 test file from the first line start after its
/// midpoint to its end.
pub fn default_text() -> &'static str {
    let mid = WIKITEXT.len() / 2;
    let start = WIKITEXT[mid..].find('\n').map_or(mid, |i| mid + i + 1);
    &WIKITEXT[start..]
}

/// How many windows of how many tokens, from which seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WindowOptions {
    pub nsamples: usize,
    pub seqlen: usize,
    pub seed: u64,
}

/// `nsamples` windows of `seqlen` consecutive tokens of `tokens`, each starting at a position drawn
/// uniformly from the seeded generator. Fails when the text is shorter than one window.
pub fn sample_windows(tokens: &[u32], opts: &WindowOptions) -> Result<Vec<Vec<u32>>> {
    if opts.nsamples == 0 || opts.seqlen == 0 {
        return Err(EvalError::Calibration(format!(
            "--nsamples ({}) and --seqlen ({}) must be positive",
            opts.nsamples, opts.seqlen
        )));
    }
    if tokens.len() < opts.seqlen {
        return Err(EvalError::Calibration(format!(
            "the calibration text has {} tokens, fewer than one window of --seqlen {}",
            tokens.len(),
            opts.seqlen
        )));
    }
    let starts = (tokens.len() - opts.seqlen + 1) as u64;
    let mut state = opts.seed;
    Ok((0..opts.nsamples)
        .map(|_| {
            let s = (splitmix64(&mut state) % starts) as usize;
            tokens[s..s + opts.seqlen].to_vec()
        })
        .collect())
}

/// The SplitMix64 generator step.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_seeded_slices_of_the_text() {
        let tokens: Vec<u32> = (0..1000).collect();
        let o = WindowOptions { nsamples: 5, seqlen: 64, seed: 7 };
        let a = sample_windows(&tokens, &o).unwrap();
        assert_eq!(a, sample_windows(&tokens, &o).unwrap());
        assert_ne!(a, sample_windows(&tokens, &WindowOptions { seed: 8, ..o }).unwrap());
        for w in &a {
            assert_eq!(w.len(), 64);
            assert!(w.windows(2).all(|p| p[1] == p[0] + 1));
        }
        // Exactly one window fits: it is the whole text.
        let one = sample_windows(&tokens[..64], &o).unwrap();
        assert!(one.iter().all(|w| w == &tokens[..64]));
        let e = sample_windows(&tokens[..63], &o).unwrap_err().to_string();
        assert!(e.contains("63 tokens") && e.contains("--seqlen 64"), "{e}");
    }

    #[test]
    fn the_default_text_is_the_second_half_of_wikitext() {
        let t = default_text();
        assert!(t.len() > 600_000 && t.len() < WIKITEXT.len() / 2 + 1);
        assert!(WIKITEXT.ends_with(t));
        // It starts at a line start.
        let start = WIKITEXT.len() - t.len();
        assert_eq!(&WIKITEXT[start - 1..start], "\n");
        assert!(!WIKITEXT[..WIKITEXT.len() / 2].contains(&t[..200]));
    }
}
