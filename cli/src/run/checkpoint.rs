//! Checkpoint-directory outputs: a Hugging Face integer checkpoint (GPTQ, AWQ, RTN) written by the code of
//! `quantize --method`, and measured like a GGUF (the evaluator dequantizes its packed layers).
//!
//! Invariant: the directory is written whole (the checkpoint writer renames it into place when complete), and its
//! record's size and sha256 cover every file in it (see [`sha256_artifact`]).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

use super::execute::{OutputResult, UnitResult};
use super::hash::sha256_artifact;
use super::plan::Context;
use super::schema::OutputMethod;
use crate::progress::Reporter;
use crate::quantize_int::{
    write_checkpoint, IntArgs, MethodArg, DEFAULT_CALIB_BATCH, DEFAULT_DAMP, DEFAULT_NSAMPLES, DEFAULT_SEQLEN,
};

impl Context {
    /// A Hugging Face integer checkpoint directory, written as `quantize --method` writes it, and evaluated
    /// like a GGUF (the evaluator dequantizes its linear layers).
    pub(super) fn run_checkpoint(&self, i: usize, o: usize, reporter: &Reporter) -> Result<UnitResult> {
        let spec = &self.p.outputs[o];
        let method = match spec.method.context("a checkpoint output without a method")? {
            OutputMethod::Gptq => MethodArg::Gptq,
            OutputMethod::Awq => MethodArg::Awq,
            OutputMethod::Rtn => MethodArg::Rtn,
        };
        let args = IntArgs {
            method: Some(method),
            format: spec.format.clone().unwrap_or_else(|| "compressed-tensors".into()),
            bits: spec.bits.unwrap_or(4),
            group_size: spec.group_size.unwrap_or(128),
            sym: false,
            asym: false,
            act_order: false,
            static_groups: false,
            mse: false,
            damp: spec.damp.unwrap_or(DEFAULT_DAMP),
            no_true_sequential: false,
            calib: spec.calib.iter().cloned().collect(),
            nsamples: spec.nsamples.unwrap_or(DEFAULT_NSAMPLES),
            seqlen: spec.seqlen.unwrap_or(DEFAULT_SEQLEN),
            seed: spec.seed.unwrap_or(0),
            calib_batch: DEFAULT_CALIB_BATCH,
            save_imatrix: None,
        };
        let file = self.units[i].name.clone();
        let dest = self.out.join(&file);
        let _ = std::fs::remove_dir_all(self.rejected_dir().join(&file));
        let ck = write_checkpoint(&self.source.path, Some(&dest), &args, method, true)?;
        let eval = match &self.p.eval {
            Some(e) => Some(self.measure(&dest, e.chunks, reporter)?),
            None => None,
        };
        let (size, sha256, files) = sha256_artifact(&dest)?;
        let s = &ck.report.scheme;
        let mut type_mix = BTreeMap::new();
        type_mix.insert(format!("int{}", s.bits), ck.summary.quantized_modules);
        type_mix.insert("float".into(), ck.summary.tensors.saturating_sub(ck.summary.quantized_modules));
        let params = self.source_parameters()?;
        Ok(UnitResult::Output(OutputResult {
            file,
            ftype: format!(
                "{}-w{}g{} ({})",
                method_name(method),
                s.bits,
                s.group_size.map_or("-1".into(), |g| g.to_string()),
                ck.format
            ),
            size,
            sha256,
            bits_per_weight: if params > 0 { ck.summary.tensor_bytes as f64 * 8.0 / params as f64 } else { 0.0 },
            type_mix,
            eval,
            files,
        }))
    }

    /// Parameters of the source (elements of every tensor).
    fn source_parameters(&self) -> Result<u64> {
        let model = quantforge_formats::hf::HfModel::open(&self.source.path)?;
        Ok(model.tensors().map(|(_, t)| t.shape.iter().product::<u64>()).sum())
    }
}

fn method_name(m: MethodArg) -> &'static str {
    match m {
        MethodArg::Gptq => "GPTQ",
        MethodArg::Awq => "AWQ",
        MethodArg::Rtn => "RTN",
    }
}
