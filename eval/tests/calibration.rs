//! The calibration seam on the committed stories260K model: statistics handed to a solver through
//! `BlockCalibrator` equal `XᵀX` computed directly from the full forward pass's activations, and block `i`'s
//! inputs are computed through the weights committed for block `i - 1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use quantforge_eval::calibration::BlockCalibrator;
use quantforge_eval::{Device, LlamaModel, ModelFile};
use quantforge_quant::calibrate::{calibrate, InputStats, LayerSolver, LinearWeight, StatsKind};
use quantforge_quant::progress::Silent;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel)
}

/// Deterministic token sequences of stories260K's 512-token vocabulary.
fn sequences() -> Vec<Vec<u32>> {
    (0..5u32).map(|s| (0..48u32).map(|i| (s * 131 + i * 37 + i * i) % 512).collect()).collect()
}

/// Records every layer's statistics; scales block `perturb`'s weights by `factor`, keeps the others.
struct Recorder {
    stats: Mutex<BTreeMap<String, InputStats>>,
    perturb: Option<(usize, f32)>,
}

impl Recorder {
    fn new(perturb: Option<(usize, f32)>) -> Recorder {
        Recorder { stats: Mutex::new(BTreeMap::new()), perturb }
    }
}

impl LayerSolver for Recorder {
    fn stats_kind(&self) -> StatsKind {
        StatsKind::Covariance
    }

    fn solve(&self, block: usize, weight: &LinearWeight, stats: &InputStats) -> Result<Vec<f32>, String> {
        self.stats.lock().unwrap().insert(weight.name.clone(), stats.clone());
        Ok(match self.perturb {
            Some((b, f)) if b == block => weight.values.iter().map(|v| v * f).collect(),
            _ => weight.values.clone(),
        })
    }
}

fn run(path: &Path, perturb: Option<(usize, f32)>) -> BTreeMap<String, InputStats> {
    let model = ModelFile::open(path).unwrap();
    let seqs = sequences();
    let mut source = BlockCalibrator::new(&model, &seqs, 2, Device::Cpu).unwrap();
    let solver = Recorder::new(perturb);
    let report = calibrate(&mut source, &solver, &Silent).unwrap();
    assert_eq!(report.blocks.len(), model.config().n_layer);
    assert!(report.blocks.iter().all(|b| b.tokens == 5 * 48), "{report:?}");
    solver.stats.into_inner().unwrap()
}

/// Per weight name: input columns, rows seen and row-major `XᵀX` in f64.
type DirectXtx = BTreeMap<String, (usize, u64, Vec<f64>)>;

/// `XᵀX` (f64) of every block matrix's input, from the full model's forward pass.
fn direct_xtx(path: &Path) -> DirectXtx {
    let model = LlamaModel::load(path).unwrap();
    let acc: Mutex<DirectXtx> = Mutex::new(BTreeMap::new());
    let observe = |name: &str, _: Option<usize>, rows: &[f32], cols: usize| {
        let mut acc = acc.lock().unwrap();
        let e = acc.entry(name.to_string()).or_insert_with(|| (cols, 0, vec![0.0; cols * cols]));
        for row in rows.chunks_exact(cols) {
            e.1 += 1;
            for i in 0..cols {
                for j in 0..cols {
                    e.2[i * cols + j] += f64::from(row[i]) * f64::from(row[j]);
                }
            }
        }
    };
    let seqs = sequences();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    model.forward_observed(&refs, 0, Some(&observe)).unwrap();
    acc.into_inner().unwrap()
}

#[test]
fn covariance_through_the_seam_equals_xtx_of_the_forward_pass() {
    let path = fixture("stories260K");
    let got = run(&path, None);
    let want = direct_xtx(&path);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    // 5 blocks x (q, k, v, output, gate, up, down).
    assert_eq!(got.len(), 5 * 7);
    for (name, (cols, n, xtx)) in &want {
        let s = &got[name];
        assert_eq!((s.cols, s.n_rows), (*cols, *n), "{name}");
        let cov = s.covariance.as_ref().unwrap();
        let scale = xtx.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (k, (&g, &w)) in cov.iter().zip(xtx).enumerate() {
            assert!((f64::from(g) - w).abs() <= 1e-5 * scale, "{name}[{k}]: {g} vs {w}");
        }
        for i in 0..*cols {
            assert!((f64::from(s.diagonal[i]) - xtx[i * cols + i]).abs() <= 1e-5 * scale, "{name} diag {i}");
        }
    }
}

#[test]
fn block_inputs_are_computed_through_the_committed_weights() {
    let path = fixture("stories260K");
    let plain = run(&path, None);
    let perturbed = run(&path, Some((1, 0.5)));
    let cov = |m: &BTreeMap<String, InputStats>, name: &str| m[name].covariance.clone().unwrap();
    // Blocks 0 and 1 see the same inputs (block 1's own new weights only act after it is committed) ...
    for name in ["blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.attn_q.weight"] {
        assert_eq!(cov(&plain, name), cov(&perturbed, name), "{name}");
    }
    // ... and every later block sees inputs changed by block 1's replaced weights.
    for b in 2..5 {
        let name = format!("blk.{b}.attn_q.weight");
        assert_ne!(cov(&plain, &name), cov(&perturbed, &name), "{name}");
    }
    // Within block 1, layers after the first replaced one see the change as soon as the block is committed,
    // not before: its output projection's input is computed with the old Q/K/V.
    assert_eq!(cov(&plain, "blk.1.attn_output.weight"), cov(&perturbed, "blk.1.attn_output.weight"));
}

#[test]
fn the_same_statistics_from_gguf_and_hf_sources() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("m.gguf");
    let model = quantforge_quant::convert::ConvertedModel::open(fixture("stories260K"), {
        quantforge_quant::convert::OutType::F32
    })
    .unwrap();
    model.write_gguf(&gguf, &Silent, None).unwrap();
    let a = run(&fixture("stories260K"), None);
    let b = run(&gguf, None);
    for (name, s) in &a {
        assert_eq!(s, &b[name], "{name}");
    }
}

/// Records every layer's statistics and returns its weights rounded to a coarse grid, as a quantizer would.
struct Coarse(Mutex<BTreeMap<String, InputStats>>);

impl LayerSolver for Coarse {
    fn stats_kind(&self) -> StatsKind {
        StatsKind::Covariance
    }

    fn solve(&self, _: usize, weight: &LinearWeight, stats: &InputStats) -> Result<Vec<f32>, String> {
        self.0.lock().unwrap().insert(weight.name.clone(), stats.clone());
        Ok(weight.values.iter().map(|v| (v * 8.0).round() / 8.0).collect())
    }
}

#[test]
fn resumed_true_sequential_passes_equal_passes_from_the_block_input() {
    use quantforge_quant::calibrate::{calibrate_with, CalibrateOptions};
    // Each true-sequential pass resumes the runs the previous one stopped; with no budget every pass starts
    // over from the block's input. Both must give the same statistics and hidden states, bit for bit, with the
    // solved layers changed between passes (dense, fused Phi-3, sliding-window Gemma 2, experts).
    for name in ["stories260K", "archs/phi3", "archs/gemma2", "archs/qwen2moe"] {
        let model = ModelFile::open(&fixture(name)).unwrap();
        let seqs = sequences();
        let opts = CalibrateOptions { true_sequential: true };
        let run = |budget: Option<usize>| {
            let source = BlockCalibrator::new(&model, &seqs, 2, Device::Cpu).unwrap();
            let mut source = match budget {
                Some(b) => source.with_resume_budget(b),
                None => source,
            };
            let solver = Coarse(Mutex::new(BTreeMap::new()));
            calibrate_with(&mut source, &solver, &Silent, &opts).unwrap();
            let hidden: Vec<Vec<f32>> = source.hidden().map(<[f32]>::to_vec).collect();
            (solver.0.into_inner().unwrap(), hidden)
        };
        let (resumed, over) = (run(None), run(Some(0)));
        assert_eq!(resumed.0.keys().collect::<Vec<_>>(), over.0.keys().collect::<Vec<_>>(), "{name}");
        for (k, a) in &resumed.0 {
            assert!(*a == over.0[k], "{name}: {k} differs");
        }
        assert!(resumed.1 == over.1, "{name}: hidden states differ");
    }
}
