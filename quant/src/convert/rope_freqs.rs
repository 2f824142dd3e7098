//! The `rope_freqs.weight` tensor llama.cpp's converter generates for Llama 3 RoPE scaling
//! (`conversion/llama.py` `LlamaModel.generate_extra_tensors` at 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62),
//! computed in f32 as torch does. Not verified bit-exact against torch's `pow` (may differ in the last ulp).

use std::f64::consts::PI;

/// One factor per rotary frequency (`head_dim / 2` values).
pub fn llama3_rope_factors(
    base: f64,
    dim: u32,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_context: u32,
) -> Vec<f32> {
    let old = original_context as f32;
    let low_wavelen = old / low_freq_factor as f32;
    let high_wavelen = old / high_freq_factor as f32;
    (0..dim)
        .step_by(2)
        .map(|k| {
            let freq = 1.0f32 / (base as f32).powf(k as f32 / dim as f32);
            let wavelen = (2.0 * PI) as f32 / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor as f32
            } else {
                let smooth = (old / wavelen - low_freq_factor as f32) / (high_freq_factor - low_freq_factor) as f32;
                1.0 / ((1.0 - smooth) / factor as f32 + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama31_shape_of_factors() {
        let f = llama3_rope_factors(500000.0, 128, 8.0, 1.0, 4.0, 8192);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }
}
