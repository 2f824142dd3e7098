//! Small value tables from llama.cpp `ggml/src/ggml-common.h`: `kvalues_iq4nl`, `kvalues_fp4` (alias
//! `kvalues_mxfp4`, the E2M1 values doubled, shared by MXFP4 and NVFP4), `kmask_iq2xs`, and the
//! `IQ1S_DELTA` / `IQ1M_DELTA` constants (both `0.125f`). The codebook `kvalues_iq4nl` is read by
//! both the IQ4 quantizer and dequantizer.

/// `kvalues_iq4nl`: the 16 non-linear levels of IQ4_NL and IQ4_XS (a `const`, so that the quantizer's
/// search can fold it; the dequantizer reads a `static` copy of it).
pub(crate) const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// `kvalues_fp4`: E2M1 values times two (the halving lives in the scale decoders).
pub(crate) static KVALUES_FP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `kmask_iq2xs`: bit `j` selects the sign of element `j` of an 8-value group.
pub(crate) static KMASK_IQ2XS: [u8; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// `IQ1S_DELTA` (IQ1_M uses `IQ1M_DELTA`, the same value).
pub(crate) const IQ1S_DELTA: f32 = 0.125;
