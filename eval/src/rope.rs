//! Rotary position embeddings as llama.cpp applies them: the parameters its context derives from the model's
//! hyperparameters (`llama_context::llama_context` in `src/llama-context.cpp`) and the cos/sin table of
//! ggml's CPU kernel (`ggml_rope_cache_init`, `rope_yarn`, `rope_yarn_ramp` in `ggml/src/ggml-cpu/ops.cpp`,
//! `ggml_rope_yarn_corr_dims` in `ggml/src/ggml.c`), written from their definitions in `f32` the way ggml
//! evaluates them: angles by repeated multiplication, YaRN's ramp between interpolated and extrapolated
//! angles, and the magnitude scale folded into the table.
//!
//! Choices that follow llama.cpp rather than transformers (documented here because they change numbers):
//! - Llama, Mistral, Qwen2 and Qwen3 GGUFs are loaded without reading `rope.scaling.yarn_ext_factor`,
//!   `yarn_attn_factor`, `yarn_beta_fast` or `yarn_beta_slow` (llama.cpp reads them only for a few other
//!   architectures), so YaRN always runs with `ext_factor = 1`, `beta_fast = 32`, `beta_slow = 1` and the
//!   magnitude `1 + 0.1 ln(factor)` (times `rope.scaling.attn_factor`, default 1), whatever config.json's
//!   `attention_factor`/`beta_*` said.
//! - YaRN and linear scaling apply at every position, not only beyond the original context.

use std::f32::consts::PI;

/// How the rotated dimensions of a head pair up: the architecture registry's RoPE fact.
pub use quantforge_formats::arch::RopeStyle as RopeMode;

/// The RoPE scaling type of the model (`{arch}.rope.scaling.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeScalingType {
    /// `none`: positions are never scaled, whatever the factor.
    None,
    /// `linear` (also llama.cpp's default when the key is absent): positions divided by the factor.
    Linear,
    /// `yarn`: NTK-by-parts interpolation with a magnitude correction.
    Yarn,
}

/// The RoPE scaling types the forward pass implements, for error messages.
pub const SUPPORTED_ROPE_SCALING: &str = "none, linear, yarn (and llama3 through rope_freqs.weight)";

/// Everything that determines the rotation, resolved as llama.cpp's context resolves it.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeParams {
    /// Pairing of the rotated dimensions.
    pub mode: RopeMode,
    /// Rotated dimensions of each head (even, at most the head size).
    pub n_rot: usize,
    /// Base frequency (`rope.freq_base`).
    pub freq_base: f32,
    /// Scaling type the model was trained with.
    pub scaling: RopeScalingType,
    /// `1 / factor` (1 when unscaled).
    pub freq_scale: f32,
    /// YaRN extrapolation mix: 1 for YaRN, 0 otherwise.
    pub ext_factor: f32,
    /// Magnitude factor handed to the kernel (`cparams.yarn_attn_factor`).
    pub attn_factor: f32,
    /// YaRN low correction rotation count.
    pub beta_fast: f32,
    /// YaRN high correction rotation count.
    pub beta_slow: f32,
    /// Context the YaRN correction dimensions are computed for (`rope.scaling.original_context_length`, else
    /// the training context).
    pub n_ctx_orig: usize,
}

impl RopeParams {
    /// Resolve the kernel parameters from the model's hyperparameters as `llama_context` does with default
    /// context parameters. `factor` is `rope.scaling.factor` (`None` or 0: unscaled); `rope_attn_factor` is
    /// `rope.scaling.attn_factor` (default 1).
    pub fn new(
        mode: RopeMode,
        n_rot: usize,
        freq_base: f32,
        scaling: RopeScalingType,
        factor: Option<f32>,
        n_ctx_orig: usize,
        rope_attn_factor: f32,
    ) -> RopeParams {
        let freq_scale_train = match factor {
            Some(f) if f != 0.0 => 1.0 / f,
            _ => 1.0,
        };
        let freq_scale = if scaling == RopeScalingType::None { 1.0 } else { freq_scale_train };
        let ext_factor = if scaling == RopeScalingType::Yarn { 1.0f32 } else { 0.0 };
        let mut attn_factor = 1.0f32;
        if ext_factor != 0.0 {
            // llama.cpp sets the magnitude to get_mscale(factor) and divides out the 1 + 0.1 ln(factor) the
            // kernel multiplies back in, so the product is get_mscale(factor) for factors above 1.
            let factor = 1.0 / freq_scale;
            attn_factor = if factor <= 1.0 { 1.0 } else { 0.1 * factor.ln() + 1.0 };
            attn_factor *= 1.0 / (1.0 + 0.1 * factor.ln());
        }
        attn_factor *= rope_attn_factor;
        RopeParams {
            mode,
            n_rot,
            freq_base,
            scaling,
            freq_scale,
            ext_factor,
            attn_factor,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig,
        }
    }

    /// YaRN's correction range `[low, high]` of rotated pairs (`ggml_rope_yarn_corr_dims`).
    pub fn yarn_corr_dims(&self) -> [f32; 2] {
        let n_dims = self.n_rot as f32;
        let corr_dim = |n_rotations: f32| {
            n_dims * (self.n_ctx_orig as f32 / (n_rotations * 2.0 * PI)).ln() / (2.0 * self.freq_base.ln())
        };
        let start = corr_dim(self.beta_fast).floor();
        let end = corr_dim(self.beta_slow).ceil();
        [start.max(0.0), end.min(n_dims - 1.0)]
    }
}

/// Cos/sin of the RoPE angles of positions `0..n_pos` for the `n_rot / 2` rotated pairs, magnitude included.
#[derive(Clone)]
pub struct RopeCache {
    mode: RopeMode,
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeCache {
    /// The table for `n_pos` positions. `freq_factors` (Llama 3's `rope_freqs.weight`, `n_rot / 2` values)
    /// divide each pair's base angle.
    pub fn new(n_pos: usize, p: &RopeParams, freq_factors: Option<&[f32]>) -> RopeCache {
        let half = p.n_rot / 2;
        let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
        let corr = p.yarn_corr_dims();
        let mut cos = Vec::with_capacity(n_pos * half);
        let mut sin = Vec::with_capacity(n_pos * half);
        for pos in 0..n_pos {
            let mut theta = pos as f32;
            for i in 0..half {
                let ff = freq_factors.and_then(|f| f.get(i).copied()).unwrap_or(1.0);
                let (c, s) = rope_yarn(theta / ff, i, p, corr);
                cos.push(c);
                sin.push(s);
                theta *= theta_scale;
            }
        }
        RopeCache { mode: p.mode, half, cos, sin }
    }

    /// Rotate every head of `row` (a token at position `pos`, heads of `head_dim` values) in place.
    pub fn apply(&self, row: &mut [f32], head_dim: usize, pos: usize) {
        match self.mode {
            RopeMode::Norm => self.apply_norm(row, head_dim, pos),
            RopeMode::Neox => self.apply_neox(row, head_dim, pos),
        }
    }

    /// Rotate adjacent pairs (llama.cpp's NORM mode) of every head of `row`.
    pub fn apply_norm(&self, row: &mut [f32], head_dim: usize, pos: usize) {
        let cos = &self.cos[pos * self.half..(pos + 1) * self.half];
        let sin = &self.sin[pos * self.half..(pos + 1) * self.half];
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..self.half {
                let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = x0 * cos[i] - x1 * sin[i];
                head[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }

    /// Rotate dimension `i` with `i + n_rot / 2` (llama.cpp's NEOX mode) of every head of `row`.
    pub fn apply_neox(&self, row: &mut [f32], head_dim: usize, pos: usize) {
        let cos = &self.cos[pos * self.half..(pos + 1) * self.half];
        let sin = &self.sin[pos * self.half..(pos + 1) * self.half];
        for head in row.chunks_exact_mut(head_dim) {
            let (lo, hi) = head[..2 * self.half].split_at_mut(self.half);
            for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
                let (x0, x1) = (*a, *b);
                *a = x0 * c - x1 * s;
                *b = x0 * s + x1 * c;
            }
        }
    }
}

/// One pair's cos/sin (`rope_yarn`): the interpolated angle `freq_scale * theta_extrap`, blended towards the
/// extrapolated one by YaRN's ramp over the correction range, and scaled by the magnitude.
fn rope_yarn(theta_extrap: f32, pair: usize, p: &RopeParams, corr: [f32; 2]) -> (f32, f32) {
    let theta_interp = p.freq_scale * theta_extrap;
    let mut theta = theta_interp;
    let mut mscale = p.attn_factor;
    if p.ext_factor != 0.0 {
        let y = (pair as f32 - corr[0]) / 0.001f32.max(corr[1] - corr[0]);
        let ramp_mix = (1.0 - y.clamp(0.0, 1.0)) * p.ext_factor;
        theta = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
        mscale *= 1.0 + 0.1 * (1.0 / p.freq_scale).ln();
    }
    (theta.cos() * mscale, theta.sin() * mscale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: RopeMode, scaling: RopeScalingType, factor: Option<f32>) -> RopeParams {
        RopeParams::new(mode, 16, 10000.0, scaling, factor, 64, 1.0)
    }

    #[test]
    fn position_zero_is_identity_and_one_rotates() {
        let cache =
            RopeCache::new(2, &RopeParams { n_rot: 4, ..params(RopeMode::Norm, RopeScalingType::None, None) }, None);
        let mut row = vec![1.0, 2.0, 3.0, 4.0];
        cache.apply(&mut row, 4, 0);
        assert_eq!(row, vec![1.0, 2.0, 3.0, 4.0]);
        cache.apply(&mut row, 4, 1);
        assert!((row[0] - (1f32.cos() - 2.0 * 1f32.sin())).abs() < 1e-6);
    }

    #[test]
    fn neox_is_norm_on_rotate_half_rows() {
        // NEOX on a head equals NORM on the same head with its halves interleaved.
        let norm = RopeCache::new(8, &params(RopeMode::Norm, RopeScalingType::None, None), None);
        let neox = RopeCache::new(8, &params(RopeMode::Neox, RopeScalingType::None, None), None);
        let mut a: Vec<f32> = (0..32).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut b: Vec<f32> = (0..32).map(|j| a[(j / 16) * 16 + (j % 2) * 8 + (j % 16) / 2]).collect();
        neox.apply(&mut a, 16, 5);
        norm.apply(&mut b, 16, 5);
        for j in 0..32 {
            assert_eq!(b[j], a[(j / 16) * 16 + (j % 2) * 8 + (j % 16) / 2]);
        }
    }

    #[test]
    fn yarn_resolves_like_llama_cpp() {
        let p = params(RopeMode::Neox, RopeScalingType::Yarn, Some(4.0));
        assert_eq!((p.freq_scale, p.ext_factor, p.beta_fast, p.beta_slow), (0.25, 1.0, 32.0, 1.0));
        // 16 * ln(64 / (beta * 2 pi)) / (2 ln 10000): -0.99 -> floor -1 -> 0, 2.02 -> ceil 3.
        assert_eq!(p.yarn_corr_dims(), [0.0, 3.0]);
        // Net magnitude 1 + 0.1 ln 4.
        let net = p.attn_factor * (1.0 + 0.1 * 4f32.ln());
        assert!((net - (1.0 + 0.1 * 4f32.ln())).abs() < 1e-6);
        let cache = RopeCache::new(2, &p, None);
        assert!((cache.cos[0] - net).abs() < 1e-6 && cache.sin[0] == 0.0);
        // Pair 0 (inside the fully extrapolated end of the ramp) keeps the unscaled angle; pair 7 is interpolated.
        assert!((cache.sin[8] / net - 1f32.sin()).abs() < 1e-6);
        let theta7 = 10000f32.powf(-14.0 / 16.0) * 0.25;
        assert!((cache.sin[15] / net - theta7.sin()).abs() < 1e-6);
        // `none` ignores the factor; linear divides positions and keeps the magnitude at 1.
        assert_eq!(params(RopeMode::Norm, RopeScalingType::None, Some(4.0)).freq_scale, 1.0);
        let lin = params(RopeMode::Norm, RopeScalingType::Linear, Some(4.0));
        assert_eq!((lin.freq_scale, lin.ext_factor, lin.attn_factor), (0.25, 0.0, 1.0));
    }
}
