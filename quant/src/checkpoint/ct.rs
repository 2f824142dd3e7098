//! compressed-tensors `pack-quantized` (compressed-tensors `pack_quantized.py`, vLLM
//! `compressed_tensors_wNa16.py`): per module `weight_packed` I32 `[out, ceil(in/pf)]` packed along the input
//! dimension (zero-padded), `weight_scale` `[out, groups]` in the model's dtype, `weight_zero_point` I32
//! `[ceil(out/pf), groups]` packed along the output dimension (asymmetric only), `weight_g_idx` I32 `[in]`
//! (act-order `group` only) and `weight_shape` I64 `[2]` = `[out, in]` (`torch.tensor(shape)`), with
//! `pf = 32/b`.
//!
//! Invariant: values are signed, `v ∈ [−2^(b−1), 2^(b−1))`, stored offset by `2^(b−1)`; the offset value is
//! exactly the unsigned code `q` (and the offset zero point the unsigned `z`), so `s · (v − zp) = s · (q − z)`.
//! A symmetric scheme has `zp = 0`, i.e. `z = 2^(b−1)`, and stores no zero point.

use quantforge_formats::safetensors::Dtype;

use super::config::ParsedConfig;
use super::pack::{n_words, pack_bits, unpack_bits};
use super::reader::{dim, groups, natural_g_idx, Tensors, UnpackedLinear};
use super::{dims, CheckpointError, PackedTensor};
use crate::intquant::QuantizedLinear;

/// The tensors of one quantized module; `write_g_idx` for act-order `group`.
pub(super) fn encode(module: &str, layer: &QuantizedLinear, write_g_idx: bool) -> Vec<PackedTensor> {
    let (rows, cols, bits) = (layer.rows, layer.cols, layer.scheme.bits);
    let ng = layer.n_groups();
    let per_row = n_words(cols, bits);
    let mut packed = Vec::with_capacity(rows * per_row);
    for n in 0..rows {
        packed.extend(pack_bits(&layer.q[n * cols..(n + 1) * cols], bits));
    }
    let mut out = vec![
        PackedTensor::i32(format!("{module}.weight_packed"), &[rows, per_row], &packed),
        PackedTensor::scales(format!("{module}.weight_scale"), &[rows, ng], &layer.scales, layer.scheme.scale_dtype),
    ];
    if !layer.scheme.sym {
        let zrows = n_words(rows, bits);
        let mut zp = vec![0u32; zrows * ng];
        for g in 0..ng {
            let column: Vec<u8> = (0..rows).map(|n| layer.zeros[n * ng + g]).collect();
            for (c, w) in pack_bits(&column, bits).into_iter().enumerate() {
                zp[c * ng + g] = w;
            }
        }
        out.push(PackedTensor::i32(format!("{module}.weight_zero_point"), &[zrows, ng], &zp));
    }
    if write_g_idx {
        let g: Vec<u32> = (0..cols).map(|k| layer.group_of(k) as u32).collect();
        out.push(PackedTensor::i32(format!("{module}.weight_g_idx"), &[cols], &g));
    }
    out.push(PackedTensor {
        name: format!("{module}.weight_shape"),
        dtype: Dtype::I64,
        shape: dims(&[2]),
        data: [rows as i64, cols as i64].iter().flat_map(|v| v.to_le_bytes()).collect(),
    });
    out
}

/// Module `module` read back; `None` when it has no `weight_packed`.
pub(super) fn decode(
    src: &Tensors,
    module: &str,
    cfg: &ParsedConfig,
) -> Result<Option<UnpackedLinear>, CheckpointError> {
    let name = format!("{module}.weight_packed");
    if !src.has(&name) {
        return Ok(None);
    }
    let bits = cfg.bits;
    let sname = format!("{module}.weight_shape");
    let shape = src.ints(&sname, &[2])?;
    let dim = |v: i64| {
        u64::try_from(v).ok().and_then(dim).ok_or_else(|| src.err(&sname, format!("dimension {v} is out of range")))
    };
    let (rows, cols) = (dim(shape[0])?, dim(shape[1])?);
    let per_row = n_words(cols, bits);
    let words = src.words(&name, &[rows, per_row])?;
    let q: Vec<u8> = words.chunks_exact(per_row.max(1)).take(rows).flat_map(|w| unpack_bits(w, bits, cols)).collect();
    let (ng, glen) = groups(cfg, cols);
    let scales = src.floats(&format!("{module}.weight_scale"), &[rows, ng])?;
    let half = 1i32 << (bits - 1);
    let zname = format!("{module}.weight_zero_point");
    let zeros = if !src.has(&zname) {
        if !cfg.sym {
            return Err(src.err(&zname, "missing for an asymmetric scheme".into()));
        }
        vec![half; rows * ng]
    } else if src.shape(&zname)? == [rows, ng] {
        // Unpacked signed zero points (kept by some writers for symmetric schemes).
        src.ints(&zname, &[rows, ng])?.iter().map(|&v| v as i32 + half).collect()
    } else {
        let zrows = n_words(rows, bits);
        let zw = src.words(&zname, &[zrows, ng])?;
        let mut z = vec![0i32; rows * ng];
        let mut column = vec![0u32; zrows];
        for g in 0..ng {
            for (c, w) in column.iter_mut().enumerate() {
                *w = zw[c * ng + g];
            }
            for (n, v) in unpack_bits(&column, bits, rows).into_iter().enumerate() {
                z[n * ng + g] = i32::from(v);
            }
        }
        z
    };
    let gname = format!("{module}.weight_g_idx");
    let g_idx = if src.has(&gname) { src.g_idx(&gname, cols, ng)? } else { natural_g_idx(cols, glen) };
    Ok(Some(UnpackedLinear { rows, cols, n_groups: ng, q, scales, zeros, g_idx, note: None }))
}
