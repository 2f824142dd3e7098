//! GPTQ (AutoGPTQ / GPTQModel `QuantLinear`, vLLM `gptq.py`): per module `qweight` I32 `[in·b/32, out]`
//! packed along the input dimension, `qzeros` I32 `[groups, out·b/32]` packed along the output dimension,
//! `scales` F16 `[groups, out]`, `g_idx` I32 `[in]`.
//!
//! Invariant: v1 (`checkpoint_format: "gptq"`) zero fields hold `z − 1` and are read back as
//! `(field & mask) + 1`; v2 fields hold `z`. Packing is the bit stream of [`super::pack`], so 3-bit needs
//! `in` and `out` to be multiples of 32, 2/4/8-bit multiples of `32/b`.

use super::config::ParsedConfig;
use super::pack::{gptq_v1_field, gptq_v1_zero, pack_bits, unpack_bits};
use super::reader::{groups, natural_g_idx, Tensors, UnpackedLinear};
use super::{transpose, CheckpointError, CheckpointFormat, PackedTensor};
use crate::intquant::QuantizedLinear;

/// Whether `n` values of `bits` bits fill whole 32-bit words.
fn whole_words(n: usize, bits: u8) -> bool {
    (n * bits as usize).is_multiple_of(32)
}

fn shape_err(module: &str, what: &str, n: usize, bits: u8) -> CheckpointError {
    let unit = if bits == 3 { 32 } else { 32 / bits as usize };
    CheckpointError::LayerShape {
        module: module.into(),
        message: format!("{what} {n} is not a multiple of {unit}, as {bits}-bit GPTQ packing needs"),
    }
}

/// The tensors of one quantized module.
pub(super) fn encode(
    module: &str,
    layer: &QuantizedLinear,
    format: CheckpointFormat,
) -> Result<Vec<PackedTensor>, CheckpointError> {
    let (rows, cols, bits) = (layer.rows, layer.cols, layer.scheme.bits);
    if !whole_words(cols, bits) {
        return Err(shape_err(module, "in_features", cols, bits));
    }
    if !whole_words(rows, bits) {
        return Err(shape_err(module, "out_features", rows, bits));
    }
    let ng = layer.n_groups();
    let v1 = format == CheckpointFormat::Gptq;
    if v1 && layer.zeros.contains(&0) {
        return Err(CheckpointError::Unsupported {
            format: format.name(),
            what: format!("a zero point of 0 in module '{module}'"),
            reason: "v1 stores z − 1, which loaders read back as 2^bits; use gptq_v2".into(),
        });
    }
    let word_rows = cols * bits as usize / 32;
    let mut qweight = vec![0u32; word_rows * rows];
    for n in 0..rows {
        for (r, w) in pack_bits(&layer.q[n * cols..(n + 1) * cols], bits).into_iter().enumerate() {
            qweight[r * rows + n] = w;
        }
    }
    let mut qzeros = Vec::with_capacity(ng * rows * bits as usize / 32);
    for g in 0..ng {
        let fields: Vec<u8> = (0..rows)
            .map(|n| {
                let z = layer.zeros[n * ng + g];
                if v1 {
                    gptq_v1_field(z, bits)
                } else {
                    z
                }
            })
            .collect();
        qzeros.extend(pack_bits(&fields, bits));
    }
    let g_idx: Vec<u32> = (0..cols).map(|k| layer.group_of(k) as u32).collect();
    Ok(vec![
        PackedTensor::i32(format!("{module}.qweight"), &[word_rows, rows], &qweight),
        PackedTensor::i32(format!("{module}.qzeros"), &[ng, rows * bits as usize / 32], &qzeros),
        PackedTensor::scales(
            format!("{module}.scales"),
            &[ng, rows],
            &transpose(&layer.scales, rows, ng),
            layer.scheme.scale_dtype,
        ),
        PackedTensor::i32(format!("{module}.g_idx"), &[cols], &g_idx),
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
    let bits = cfg.bits;
    let shape = src.shape(&name)?;
    let [word_rows, rows] = shape[..] else {
        return Err(src.err(&name, format!("shape {shape:?} is not 2-D")));
    };
    if !(word_rows * 32).is_multiple_of(bits as usize) || !whole_words(rows, bits) {
        return Err(src.err(&name, format!("shape {shape:?} does not hold whole {bits}-bit fields")));
    }
    let cols = word_rows * 32 / bits as usize;
    let (ng, _) = groups(cfg, cols);
    let words = src.words(&name, &[word_rows, rows])?;
    let mut q = Vec::with_capacity(rows * cols);
    let mut column = vec![0u32; word_rows];
    for n in 0..rows {
        for (r, c) in column.iter_mut().enumerate() {
            *c = words[r * rows + n];
        }
        q.extend(unpack_bits(&column, bits, cols));
    }
    let zname = format!("{module}.qzeros");
    let zwords_per_row = rows * bits as usize / 32;
    let zwords = src.words(&zname, &[ng, zwords_per_row])?;
    let fields: Vec<u8> =
        zwords.chunks_exact(zwords_per_row.max(1)).flat_map(|row| unpack_bits(row, bits, rows)).collect();
    let half = 1u8 << (bits - 1);
    let (v1, note) = match (cfg.sym, fields.iter().all(|&f| f == half - 1), fields.iter().all(|&f| f == half)) {
        (true, true, _) if cfg.format != CheckpointFormat::Gptq => {
            (true, Some(format!("zero fields are {} (v1) although the config says gptq_v2; read as v1", half - 1)))
        }
        (true, _, true) if cfg.format == CheckpointFormat::Gptq => {
            (false, Some(format!("zero fields are {half} (v2) although the config says gptq; read as v2")))
        }
        _ => (cfg.format == CheckpointFormat::Gptq, None),
    };
    let mut zeros = vec![0i32; rows * ng];
    for g in 0..ng {
        for n in 0..rows {
            let f = fields[g * rows + n];
            zeros[n * ng + g] = if v1 { i32::from(gptq_v1_zero(f, bits)) } else { i32::from(f) };
        }
    }
    let scales = src.floats(&format!("{module}.scales"), &[ng, rows])?;
    let gname = format!("{module}.g_idx");
    let g_idx = if src.has(&gname) { src.g_idx(&gname, cols, ng)? } else { natural_g_idx(cols, groups(cfg, cols).1) };
    Ok(Some(UnpackedLinear { rows, cols, n_groups: ng, q, scales: transpose(&scales, ng, rows), zeros, g_idx, note }))
}
