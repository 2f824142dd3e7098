//! Running work units: each through the same library calls the `convert`, `eval` and `quantize` commands make,
//! each leaving a record of its key and figures under `OUT/.quantforge/units/`.
//!
//! Invariant: a record is written only after its unit's files are complete (they are written atomically), so a
//! unit with a record whose key matches and whose files are there is done; anything else is (re)done. An output
//! artifact is found in the output folder or, when a gate rejected it, in `.quantforge/rejected/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use quantforge_eval::intquant::WindowOptions;
use quantforge_eval::run::{
    self as eval_run, ImatrixFormat, ImatrixJob, KldBase, KldJob, MmluJob, MmluSelection, PerplexityJob,
};
use quantforge_eval::{Device, PerplexityOptions};
use quantforge_formats::AtomicFile;
use quantforge_quant::convert::{ConvertedModel, OutType};
use quantforge_quant::imatrix::Imatrix;
use quantforge_quant::pipeline::{self, ImatrixInput};
use serde::{Deserialize, Serialize};

use super::events::Events;
use super::hash::sha256_file;
use super::plan::{Context, InputFile, Kind};
use super::schema::OutputMethod;
use crate::progress::Reporter;
use crate::quantize::{open_model, type_options, TypeChoices};
use crate::quantize_gptq_gguf::{write_gptq_gguf, GptqSettings};
use crate::quantize_int::{
    read_calibration, Lines, DEFAULT_CALIB_BATCH, DEFAULT_DAMP, DEFAULT_NSAMPLES, DEFAULT_SEQLEN,
};

/// Tokens per forward pass of the evaluations (results do not depend on it).
const BATCH: usize = 2048;

/// What a finished unit left.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub unit: String,
    pub key: String,
    pub result: UnitResult,
}

/// A unit's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnitResult {
    Imatrix {
        file: String,
        size: u64,
        sha256: String,
        entries: usize,
        chunks: u32,
        chunk_size: u32,
    },
    Reference {
        ppl: f64,
        ppl_uncertainty: Option<f64>,
        tokens: usize,
        chunks: usize,
        ctx: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mmlu: Option<Mmlu>,
    },
    Output(OutputResult),
}

/// A quantized artifact and its evaluation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutputResult {
    pub file: String,
    #[serde(rename = "type")]
    pub ftype: String,
    pub size: u64,
    pub sha256: String,
    pub bits_per_weight: f64,
    /// Tensors per stored type.
    pub type_mix: BTreeMap<String, usize>,
    pub eval: Option<Figures>,
    /// A checkpoint directory's files, sorted by name; `sha256` is then that of their `sha256sum` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<InputFile>>,
}

/// An output measured against the source.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    pub ppl: f64,
    pub ppl_uncertainty: Option<f64>,
    pub delta_ppl: f64,
    pub kld: f64,
    pub kld_uncertainty: Option<f64>,
    pub same_top: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmlu: Option<Mmlu>,
    /// MMLU accuracy of the source minus the output's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_mmlu: Option<f64>,
}

/// MMLU accuracy over the questions asked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Mmlu {
    pub accuracy: f64,
    pub stderr: f64,
    pub questions: usize,
    pub correct: usize,
}

impl Context {
    fn record_path(&self, i: usize) -> PathBuf {
        let u = &self.units[i];
        let stem = match u.kind {
            Kind::Output(_) => format!("output-{}", u.name),
            _ => u.name.clone(),
        };
        self.work_dir().join("units").join(format!("{stem}.json"))
    }

    /// The record of unit `i` when it is done with the current key and its files are in place.
    pub fn done(&self, i: usize) -> Option<Record> {
        let text = std::fs::read_to_string(self.record_path(i)).ok()?;
        let r: Record = serde_json::from_str(&text).ok()?;
        if r.key != self.units[i].key {
            return None;
        }
        let present = match &r.result {
            UnitResult::Imatrix { file, size, .. } => file_size(&self.out.join(file)) == Some(*size),
            UnitResult::Reference { .. } => self.reference_logits().is_file(),
            UnitResult::Output(o) => self.artifact_path(&o.file).is_some_and(|p| artifact_size(&p) == Some(o.size)),
        };
        present.then_some(r)
    }

    /// Where an output artifact is now: published, or rejected by a gate.
    pub fn artifact_path(&self, file: &str) -> Option<PathBuf> {
        [self.out.join(file), self.rejected_dir().join(file)].into_iter().find(|p| p.exists())
    }

    pub fn rejected_dir(&self) -> PathBuf {
        self.work_dir().join("rejected")
    }

    /// Run unit `i` unless it is done (and, first, any unit it needs that is not); `force` redoes each unit once
    /// in this process.
    pub fn ensure(&self, i: usize, force: bool, events: &Events) -> Result<Record> {
        if self.seen.borrow()[i] {
            if let Some(r) = self.done(i) {
                return Ok(r);
            }
        }
        for &n in &self.units[i].needs {
            self.ensure(n, force, events)?;
        }
        if !force {
            if let Some(r) = self.done(i) {
                self.seen.borrow_mut()[i] = true;
                events.step(self, i, "unchanged", 0.0);
                return Ok(r);
            }
        }
        let started = Instant::now();
        let result = self.execute(i, events).with_context(|| format!("step {}", self.units[i].name))?;
        let record = Record { unit: self.units[i].name.clone(), key: self.units[i].key.clone(), result };
        write_atomic(&self.record_path(i), (serde_json::to_string_pretty(&record)? + "\n").as_bytes())?;
        self.seen.borrow_mut()[i] = true;
        events.step(self, i, "done", started.elapsed().as_secs_f64());
        Ok(record)
    }

    fn execute(&self, i: usize, events: &Events) -> Result<UnitResult> {
        std::fs::create_dir_all(self.work_dir().join("units"))?;
        let reporter = events.reporter();
        match self.units[i].kind {
            Kind::Imatrix => self.run_imatrix(&reporter),
            Kind::Reference => self.run_reference(&reporter),
            Kind::Output(o) => self.run_output(i, o, &reporter),
        }
    }

    fn run_imatrix(&self, reporter: &Reporter) -> Result<UnitResult> {
        let spec = self.p.imatrix.as_ref().context("no [imatrix]")?;
        // The matrix is keyed by GGUF tensor names: a Hugging Face source is converted to F16 first, as
        // `convert` does, into a scratch file removed afterwards.
        let scratch = self.work_dir().join("source-f16.gguf");
        let model: &Path = if self.source.is_gguf {
            &self.source.path
        } else {
            ConvertedModel::open(&self.source.path, OutType::F16)?.write_gguf(&scratch, reporter, None)?;
            &scratch
        };
        let file = self.imatrix_file();
        let output = self.out.join(file);
        let job = ImatrixJob {
            model,
            text: &spec.text,
            output: &output,
            format: ImatrixFormat::Gguf,
            n_ctx: spec.ctx,
            n_chunks: spec.chunks,
            device: Device::Cpu,
        };
        let run = eval_run::imatrix(&job, reporter);
        if !self.source.is_gguf {
            let _ = std::fs::remove_file(&scratch);
        }
        let run = run?;
        let (size, sha256) = sha256_file(&output)?;
        Ok(UnitResult::Imatrix {
            file: file.into(),
            size,
            sha256,
            entries: run.entries,
            chunks: run.chunks,
            chunk_size: run.chunk_size,
        })
    }

    fn run_reference(&self, reporter: &Reporter) -> Result<UnitResult> {
        let spec = self.p.eval.as_ref().context("no [eval]")?;
        let logits = self.reference_logits();
        let job = PerplexityJob {
            model: &self.source.path,
            text: &spec.text,
            opts: PerplexityOptions { n_ctx: spec.ctx, n_chunks: spec.chunks, n_batch: BATCH },
            save_logits: Some(&logits),
            device: Device::Cpu,
        };
        let r = eval_run::perplexity(&job, reporter)?.report;
        Ok(UnitResult::Reference {
            ppl: r.ppl,
            ppl_uncertainty: finite(r.ppl_uncertainty),
            tokens: r.n_tokens,
            chunks: r.n_chunks,
            ctx: r.n_ctx,
            mmlu: self.mmlu(&self.source.path, reporter)?,
        })
    }

    fn run_output(&self, i: usize, o: usize, reporter: &Reporter) -> Result<UnitResult> {
        let spec = &self.p.outputs[o];
        let Some(ftype) = self.units[i].ftype else { return self.run_checkpoint(i, o, reporter) };
        let mut opts = type_options(&TypeChoices {
            ftype: ftype.name(),
            pure: spec.pure,
            leave_output_tensor: spec.leave_output_tensor,
            output_tensor_type: spec.output_tensor_type.as_deref(),
            token_embedding_type: spec.token_embedding_type.as_deref(),
            tensor_types: &spec.tensor_type,
        })?;
        if spec.imatrix {
            let file = self.imatrix_file();
            let matrix = Imatrix::load(self.out.join(file))?;
            opts.imatrix = Some(ImatrixInput { matrix, file_arg: file.into() });
        }
        let loras: Vec<(PathBuf, f32)> = self.loras[o].iter().map(|l| (l.path.clone(), l.scale)).collect();
        let input = open_model(&self.source.path, &self.p.source.outtype, &loras)?;
        let file = format!("{}.gguf", self.units[i].name);
        let dest = self.out.join(&file);
        let _ = std::fs::remove_file(self.rejected_dir().join(&file));
        let plan = match spec.method {
            None => {
                let plan = pipeline::plan(input.as_ref(), &opts)?;
                pipeline::execute(input.as_ref(), &plan, &opts, &dest, reporter)?;
                plan
            }
            Some(OutputMethod::Gptq) => {
                let text = read_calibration(spec.calib.as_slice())?;
                let settings = GptqSettings {
                    calib: text.as_deref(),
                    windows: WindowOptions {
                        nsamples: spec.nsamples.unwrap_or(DEFAULT_NSAMPLES),
                        seqlen: spec.seqlen.unwrap_or(DEFAULT_SEQLEN),
                        seed: spec.seed.unwrap_or(0),
                    },
                    damp: spec.damp.unwrap_or(DEFAULT_DAMP),
                    true_sequential: true,
                    batch_seqs: DEFAULT_CALIB_BATCH,
                };
                let lines = Lines { quiet: true, started: Instant::now() };
                let source = &self.source.path;
                write_gptq_gguf(source, input.as_ref(), opts, &settings, &dest, &lines, reporter)?.plan
            }
            Some(m @ (OutputMethod::Awq | OutputMethod::Rtn)) => {
                anyhow::bail!("{} writes checkpoint directories, not GGUF types", m.name())
            }
        };
        drop(input);
        let mut type_mix = BTreeMap::new();
        for t in &plan.tensors {
            *type_mix.entry(t.dst_type.name().to_string()).or_insert(0) += 1;
        }
        let eval = match &self.p.eval {
            Some(e) => Some(self.measure(&dest, e.chunks, reporter)?),
            None => None,
        };
        let (size, sha256) = sha256_file(&dest)?;
        Ok(UnitResult::Output(OutputResult {
            file,
            ftype: ftype.name().into(),
            size,
            sha256,
            bits_per_weight: plan.bits_per_weight(),
            type_mix,
            eval,
            files: None,
        }))
    }

    /// MMLU accuracy of `model` when the pipeline asks for it.
    fn mmlu(&self, model: &Path, reporter: &Reporter) -> Result<Option<Mmlu>> {
        let Some(m) = self.p.eval.as_ref().and_then(|e| e.mmlu.as_ref()) else { return Ok(None) };
        let select = MmluSelection {
            subjects: m.subjects.clone(),
            subset: m.subset.clone(),
            shots: m.shots,
            limit: m.limit,
            max_tokens: m.max_tokens,
            chat_template: m.chat_template.clone(),
        };
        let job = MmluJob { model, data: &m.data, select: &select, n_batch: BATCH, device: Device::Cpu };
        let s = eval_run::mmlu(&job, reporter)?.report.overall;
        Ok(Some(Mmlu { accuracy: s.accuracy(), stderr: s.stderr(), questions: s.n, correct: s.correct }))
    }

    /// KL divergence (and the model's perplexity) against the reference's saved log-probabilities; MMLU.
    pub(super) fn measure(&self, model: &Path, chunks: Option<usize>, reporter: &Reporter) -> Result<Figures> {
        let (base_ppl, base_mmlu) =
            match self.units.iter().position(|u| u.kind == Kind::Reference).and_then(|r| self.done(r)) {
                Some(Record { result: UnitResult::Reference { ppl, mmlu, .. }, .. }) => (ppl, mmlu),
                _ => anyhow::bail!("the reference evaluation has not run"),
            };
        let mmlu = self.mmlu(model, reporter)?;
        let delta_mmlu = match (&base_mmlu, &mmlu) {
            (Some(b), Some(m)) => Some(b.accuracy - m.accuracy),
            _ => None,
        };
        let logits = self.reference_logits();
        let job = KldJob {
            base: KldBase::Logits(&logits),
            model,
            n_ctx: None,
            n_chunks: chunks,
            n_batch: BATCH,
            device: Device::Cpu,
        };
        let r = eval_run::kld(&job, reporter)?.report;
        Ok(Figures {
            ppl: r.ppl.value,
            ppl_uncertainty: finite(r.ppl.uncertainty),
            delta_ppl: r.ppl.value - base_ppl,
            kld: r.kld.value,
            kld_uncertainty: finite(r.kld.uncertainty),
            same_top: r.same_top.value,
            mmlu,
            delta_mmlu,
        })
    }
}

/// An uncertainty, absent when it cannot be estimated (one chunk): JSON has no NaN.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn file_size(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len())
}

/// A file's size, or the sum of a directory's file sizes.
fn artifact_size(p: &Path) -> Option<u64> {
    if !p.is_dir() {
        return file_size(p);
    }
    std::fs::read_dir(p).ok()?.map(|e| e.ok().and_then(|e| file_size(&e.path()))).sum()
}

/// Write a whole file through a temporary file renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()?;
    Ok(())
}
