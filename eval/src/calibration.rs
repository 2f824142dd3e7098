//! The evaluator's side of the calibration seam: [`BlockCalibrator`] implements
//! [`quantforge_quant::calibrate::CalibrationSource`] over a model file opened without its weights
//! ([`ModelFile`]). It keeps the hidden states of every calibration token, loads one decoder block at a time
//! from the memory-mapped file, runs it (in batches of sequences, so the intermediate buffers stay at a
//! batch's size) to show each linear layer's input, takes the block's new weights back and advances the
//! hidden states through them before the block is dropped. Resident memory is therefore one block, the
//! hidden states, one batch's intermediate buffers and the inputs of one batch, whatever the model's size.
//!
//! The block runs through [`run_block`], the same function the full forward pass uses, so calibration sees
//! exactly the activations evaluation computes.

use std::sync::Mutex;

use quantforge_quant::calibrate::{
    expert_slice_name, split_expert_slice, CalibrationSource, LinearInput, LinearWeight, SourceError,
};

use crate::blocks::{run_block, run_block_stages, stage_of, Activations, Block, ModelFile};
use crate::device::Device;
use crate::error::Result;

/// Runs a model block by block over a fixed set of calibration sequences.
pub struct BlockCalibrator<'a> {
    model: &'a ModelFile,
    device: Device,
    /// Hidden states at the input of the next block, one entry per batch of sequences.
    batches: Vec<Activations>,
    /// The block whose weights were last handed out, kept until it is committed.
    current: Option<Block>,
    /// Runs of the current block stopped after a stage, one per batch, resumed by the next true-sequential pass.
    partial: Option<Partial>,
    /// Bytes the stopped runs may keep (`None`: the larger of [`PARTIAL_BYTES`] and the hidden states' size).
    resume_budget: Option<usize>,
}

/// Every batch's run of block `block` stopped after stage `stage`, trimmed to what resuming it needs.
struct Partial {
    block: usize,
    stage: usize,
    runs: Vec<Activations>,
}

/// Bytes of stopped runs kept for resuming, at least: beyond the larger of this and the hidden states' own size, a
/// pass is recomputed from the block's input instead.
const PARTIAL_BYTES: usize = 1 << 30;

impl std::fmt::Debug for BlockCalibrator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCalibrator").field("batches", &self.batches.len()).finish_non_exhaustive()
    }
}

impl<'a> BlockCalibrator<'a> {
    /// Embed `seqs` (token ids, each run from position 0) in batches of `batch_seqs` sequences. A fused tensor
    /// (Phi-3's Q/K/V, its gate/up) is one layer, as the files store it; each expert of a mixture of experts is
    /// its own layer ([`expert_slice_name`]), shown the rows routed to it.
    pub fn new(model: &'a ModelFile, seqs: &[Vec<u32>], batch_seqs: usize, device: Device) -> Result<Self> {
        let device = device.check()?;
        let batches = seqs
            .chunks(batch_seqs.max(1))
            .map(|chunk| {
                let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                model.embed(&refs)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BlockCalibrator { model, device, batches, current: None, partial: None, resume_budget: None })
    }

    /// The hidden states at the input of the next block to run, batch after batch.
    pub fn hidden(&self) -> impl Iterator<Item = &[f32]> {
        self.batches.iter().map(Activations::hidden)
    }

    /// Block `index`, loaded from the file unless it is the one already held.
    fn block(&mut self, index: usize) -> Result<&mut Block> {
        if self.current.as_ref().is_none_or(|b| b.index() != index) {
            self.current = None;
            self.partial = None;
            self.current = Some(self.model.load_block(index)?);
        }
        Ok(self.current.as_mut().expect("loaded above"))
    }

    /// Keep at most `bytes` of stopped runs for the next pass to resume (0: every pass starts from the block's
    /// input). The statistics do not depend on it, only the time.
    pub fn with_resume_budget(mut self, bytes: usize) -> Self {
        self.resume_budget = Some(bytes);
        self
    }

    /// Bytes the stopped runs may keep.
    fn partial_budget(&self) -> usize {
        let hidden: usize = self.batches.iter().map(|b| b.hidden().len() * 4).sum();
        self.resume_budget.unwrap_or(hidden.max(PARTIAL_BYTES))
    }
}

/// One observed input: the layers that read it and a copy of its rows.
struct Seen {
    layers: Vec<String>,
    rows: Vec<f32>,
    cols: usize,
    /// Address and length of the observed slice: consecutive layers fed the same buffer share one entry.
    key: (usize, usize),
}

/// The layers of `all` (a block's linear names, in forward order) that no input of `seen` reached (experts no
/// token of the batch was routed to), grouped as a run that reached them would show them: by stage and
/// expert, so that an expert's gate and up share one input.
fn unreached(all: &[String], seen: &[Seen]) -> Vec<Vec<String>> {
    let mut groups: Vec<(usize, Option<usize>, Vec<String>)> = Vec::new();
    for name in all.iter().filter(|n| !seen.iter().any(|s| s.layers.contains(n))) {
        let key = (stage_of(name), split_expert_slice(name).1);
        match groups.iter_mut().find(|g| (g.0, g.1) == key) {
            Some(g) => g.2.push(name.clone()),
            None => groups.push((key.0, key.1, vec![name.clone()])),
        }
    }
    groups.into_iter().map(|g| g.2).collect()
}

impl CalibrationSource for BlockCalibrator<'_> {
    fn n_blocks(&self) -> usize {
        self.model.config().n_layer
    }

    fn block_weights(&mut self, index: usize) -> std::result::Result<Vec<LinearWeight>, SourceError> {
        let block = self.block(index)?;
        let names: Vec<String> = block.linear_names().into_iter().map(str::to_string).collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let (rows, cols, values) = block.weight_f32(&name)?;
            out.push(LinearWeight { name, rows, cols, values });
        }
        Ok(out)
    }

    fn block_inputs(
        &mut self,
        index: usize,
        visit: &mut dyn FnMut(LinearInput<'_>),
    ) -> std::result::Result<(), SourceError> {
        self.block_inputs_until(index, usize::MAX, visit)
    }

    fn block_inputs_until(
        &mut self,
        index: usize,
        last: usize,
        visit: &mut dyn FnMut(LinearInput<'_>),
    ) -> std::result::Result<(), SourceError> {
        self.block(index)?;
        let budget = self.partial_budget();
        let (model, device) = (self.model, self.device);
        let cfg = model.config();
        // A pass right after the one that stopped at the previous stage resumes its runs; any other starts over.
        let resumed = match self.partial.take() {
            Some(p) if p.block == index && last != usize::MAX && p.stage + 1 == last => Some(p.runs),
            _ => None,
        };
        let first = if resumed.is_some() { last } else { 0 };
        let mut resumed = resumed.map(Vec::into_iter);
        let block = self.current.as_ref().expect("loaded above");
        let names: Vec<String> = block.linear_names().into_iter().map(str::to_string).collect();
        // Runs are kept for the next pass while they fit the budget (a run to the block's end is not resumable).
        let mut kept = (last < 4).then(Vec::new);
        let mut kept_bytes = 0;
        for acts in &self.batches {
            let seen: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
            let observe = |name: &str, expert: Option<usize>, rows: &[f32], cols: usize| {
                let name = match expert {
                    Some(e) => expert_slice_name(name, e),
                    None => name.to_string(),
                };
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let key = (rows.as_ptr() as usize, rows.len());
                match seen.last_mut() {
                    Some(last) if last.key == key => last.layers.push(name),
                    _ => seen.push(Seen { layers: vec![name], rows: rows.to_vec(), cols, key }),
                }
            };
            let mut run = match resumed.as_mut().and_then(Iterator::next) {
                Some(run) => run,
                None => acts.clone(),
            };
            run_block_stages(cfg, block, &mut run, device, Some(&observe), first, last)?;
            if let Some(k) = &mut kept {
                kept_bytes += run.trim(last);
                if kept_bytes <= budget {
                    k.push(run);
                } else {
                    kept = None;
                }
            }
            let seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
            for s in &seen {
                let layers: Vec<&str> = s.layers.iter().map(String::as_str).collect();
                let stage = stage_of(&s.layers[0]);
                visit(LinearInput { layers: &layers, rows: &s.rows, cols: s.cols, stage });
            }
            // Experts this batch routed no token to are shown an empty input, so that every layer has one.
            for group in unreached(&names, &seen) {
                let stage = stage_of(&group[0]);
                if stage > last {
                    continue;
                }
                let cols = block.weight_cols(&group[0])?;
                let layers: Vec<&str> = group.iter().map(String::as_str).collect();
                visit(LinearInput { layers: &layers, rows: &[], cols, stage });
            }
        }
        self.partial = kept.map(|runs| Partial { block: index, stage: last, runs });
        Ok(())
    }

    fn update_weights(&mut self, index: usize, weights: Vec<LinearWeight>) -> std::result::Result<(), SourceError> {
        self.block(index)?;
        let block = self.current.as_mut().expect("loaded above");
        for w in weights {
            // Stopped runs computed with a different weight of a stage they passed cannot be resumed.
            let passed = self.partial.as_ref().is_some_and(|p| stage_of(&w.name) < p.stage);
            if passed && !block.holds(&w.name, &w.values)? {
                self.partial = None;
            }
            block.replace_weight(&w.name, w.values)?;
        }
        Ok(())
    }

    fn scale_vector(
        &mut self,
        index: usize,
        name: &str,
        divisor: &[f32],
    ) -> std::result::Result<Vec<f32>, SourceError> {
        self.partial = None;
        Ok(self.block(index)?.scale_norm(name, divisor)?)
    }

    fn n_tokens(&self) -> u64 {
        self.batches.iter().map(|b| b.n_tokens() as u64).sum()
    }

    fn commit_block(&mut self, index: usize, weights: Vec<LinearWeight>) -> std::result::Result<(), SourceError> {
        let (model, device) = (self.model, self.device);
        let cfg = model.config();
        self.update_weights(index, weights)?;
        let block = self.current.take().expect("loaded above");
        // Runs stopped at the down projections' input finish the block from there.
        let partial = self.partial.take().filter(|p| p.block == index && p.stage == 3);
        let mut runs = partial.map(|p| p.runs.into_iter());
        for acts in &mut self.batches {
            match runs.as_mut().and_then(Iterator::next) {
                Some(mut run) => {
                    run_block_stages(cfg, &block, &mut run, device, None, 4, usize::MAX)?;
                    run.release_buffers();
                    *acts = run;
                }
                None => run_block(cfg, &block, acts, device, None)?,
            }
            // Only one batch's intermediate buffers are alive at a time.
            acts.release_buffers();
        }
        Ok(())
    }
}
