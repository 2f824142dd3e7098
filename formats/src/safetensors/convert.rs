//! Element decoding for safetensors dtypes.

use half::{bf16, f16};
use safetensors::Dtype;

/// The dtype's name as written in headers (`F32`, `BF16`, `F8_E4M3`…).
pub fn dtype_name(d: Dtype) -> String {
    d.to_string()
}

/// Decode little-endian `data` of dtype `d` into f32, or `None` for dtypes that are not real numbers
/// (complex, sub-byte floats). Integers and bools are converted by value.
pub fn to_f32(d: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        data.chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    Some(match d {
        Dtype::F32 => each::<4>(data, f32::from_le_bytes),
        Dtype::F16 => each::<2>(data, |b| f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => each::<2>(data, |b| bf16::from_le_bytes(b).to_f32()),
        Dtype::F64 => each::<8>(data, |b| f64::from_le_bytes(b) as f32),
        Dtype::F8_E4M3 => data.iter().map(|&b| f8_e4m3(b)).collect(),
        Dtype::F8_E5M2 => data.iter().map(|&b| f16::from_bits(u16::from(b) << 8).to_f32()).collect(),
        Dtype::BOOL | Dtype::U8 => data.iter().map(|&b| f32::from(b)).collect(),
        Dtype::I8 => data.iter().map(|&b| f32::from(b as i8)).collect(),
        Dtype::I16 => each::<2>(data, |b| f32::from(i16::from_le_bytes(b))),
        Dtype::U16 => each::<2>(data, |b| f32::from(u16::from_le_bytes(b))),
        Dtype::I32 => each::<4>(data, |b| i32::from_le_bytes(b) as f32),
        Dtype::U32 => each::<4>(data, |b| u32::from_le_bytes(b) as f32),
        Dtype::I64 => each::<8>(data, |b| i64::from_le_bytes(b) as f32),
        Dtype::U64 => each::<8>(data, |b| u64::from_le_bytes(b) as f32),
        _ => return None,
    })
}

/// OCP FP8 E4M3 (the `float8_e4m3fn` of PyTorch): bias 7, no infinities, 0x7F/0xFF are NaN.
fn f8_e4m3(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((b >> 3) & 0xF);
    let man = f32::from(b & 7);
    if exp == 15 && b & 7 == 7 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_floats_and_ints() {
        assert_eq!(to_f32(Dtype::F32, &1.5f32.to_le_bytes()).unwrap(), vec![1.5]);
        assert_eq!(to_f32(Dtype::BF16, &bf16::from_f32(-2.0).to_le_bytes()).unwrap(), vec![-2.0]);
        assert_eq!(to_f32(Dtype::I8, &[0xFF]).unwrap(), vec![-1.0]);
        // E4M3: 0x38 = 1.0, 0x7E = 448 (the largest), 0x01 = 2^-9 (smallest subnormal).
        assert_eq!(to_f32(Dtype::F8_E4M3, &[0x38, 0x7E, 0x01, 0xB8]).unwrap(), vec![1.0, 448.0, 2f32.powi(-9), -1.0]);
        assert!(to_f32(Dtype::F8_E4M3, &[0x7F]).unwrap()[0].is_nan());
        // E5M2 is the top byte of an f16: 0x3C = 1.0, 0x7B = 57344.
        assert_eq!(to_f32(Dtype::F8_E5M2, &[0x3C, 0x7B]).unwrap(), vec![1.0, 57344.0]);
        assert!(to_f32(Dtype::C64, &[0; 8]).is_none());
    }
}
