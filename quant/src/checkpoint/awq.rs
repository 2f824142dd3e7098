//! AWQ, AutoAWQ's GEMM layout (`WQLinear_GEMM`; vLLM `awq.py`): per module `qweight` I32 `[in, out/8]`
//! packed along the output dimension with the [`super::pack::AWQ_ORDER`] interleave, `qzeros` I32
//! `[groups, out/8]` in the same order, `scales` F16 `[groups, out]`. No `g_idx`: the group of input `k` is
//! `k / group`.
//!
//! Invariant: zero fields hold `z` itself (no − 1); codes are 4-bit.

use super::config::ParsedConfig;
use super::pack::{pack_awq, unpack_awq};
use super::reader::{groups, natural_g_idx, Tensors, UnpackedLinear};
use super::{transpose, CheckpointError, PackedTensor};
use crate::intquant::QuantizedLinear;

/// The tensors of one quantized module.
pub(super) fn encode(module: &str, layer: &QuantizedLinear) -> Result<Vec<PackedTensor>, CheckpointError> {
    let (rows, cols) = (layer.rows, layer.cols);
    if !rows.is_multiple_of(8) {
        return Err(CheckpointError::LayerShape {
            module: module.into(),
            message: format!("out_features {rows} is not a multiple of 8, as AWQ packing needs"),
        });
    }
    let glen = layer.scheme.group_len(cols);
    if (0..cols).any(|k| layer.group_of(k) != k / glen) {
        return Err(CheckpointError::GroupIndex {
            module: module.into(),
            message: "AWQ has no g_idx, but this layer's groups are not k / group_size (act-order)".into(),
        });
    }
    let ng = layer.n_groups();
    let mut qweight = Vec::with_capacity(cols * rows / 8);
    let mut column = vec![0u8; rows];
    for k in 0..cols {
        for (n, c) in column.iter_mut().enumerate() {
            *c = layer.q[n * cols + k];
        }
        qweight.extend(pack_awq(&column));
    }
    let mut qzeros = Vec::with_capacity(ng * rows / 8);
    for g in 0..ng {
        let z: Vec<u8> = (0..rows).map(|n| layer.zeros[n * ng + g]).collect();
        qzeros.extend(pack_awq(&z));
    }
    Ok(vec![
        PackedTensor::i32(format!("{module}.qweight"), &[cols, rows / 8], &qweight),
        PackedTensor::i32(format!("{module}.qzeros"), &[ng, rows / 8], &qzeros),
        PackedTensor::scales(
            format!("{module}.scales"),
            &[ng, rows],
            &transpose(&layer.scales, rows, ng),
            layer.scheme.scale_dtype,
        ),
    ])
}

/// Module `module` read back; `None` when it has no `qweight`.
pub(super) fn decode(
    src: &Tensors,
    module: &str,
    cfg: &ParsedConfig,
) -> Result<Option<UnpackedLinear>, CheckpointError> {
    let name = format!("{module}.qweight");
    if !src.has(&name) {
        return Ok(None);
    }
    let shape = src.shape(&name)?;
    let [cols, packed] = shape[..] else {
        return Err(src.err(&name, format!("shape {shape:?} is not 2-D")));
    };
    let rows = packed * 8;
    let (ng, glen) = groups(cfg, cols);
    if !cols.is_multiple_of(glen) {
        return Err(src.err(&name, format!("{cols} inputs are not a multiple of the group size {glen}")));
    }
    let words = src.words(&name, &[cols, packed])?;
    let mut q = vec![0u8; rows * cols];
    for (k, row) in words.chunks_exact(packed.max(1)).enumerate().take(cols) {
        for (n, v) in unpack_awq(row, rows).into_iter().enumerate() {
            q[n * cols + k] = v;
        }
    }
    let zname = format!("{module}.qzeros");
    let zeros_t: Vec<i32> = if src.has(&zname) || !cfg.sym {
        let zw = src.words(&zname, &[ng, packed])?;
        zw.chunks_exact(packed.max(1)).flat_map(|row| unpack_awq(row, rows)).map(i32::from).collect()
    } else {
        vec![1 << (cfg.bits - 1); ng * rows]
    };
    let scales = src.floats(&format!("{module}.scales"), &[ng, rows])?;
    let zeros = (0..rows * ng).map(|i| zeros_t[(i % ng) * rows + i / ng]).collect();
    Ok(Some(UnpackedLinear {
        rows,
        cols,
        n_groups: ng,
        q,
        scales: transpose(&scales, ng, rows),
        zeros,
        g_idx: natural_g_idx(cols, glen),
        note: None,
    }))
}
