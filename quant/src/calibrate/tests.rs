use super::*;

#[test]
fn accumulated_xtx_equals_the_direct_product_in_any_batching() {
    let (m, n) = (37, 9);
    let x: Vec<f32> = (0..m * n).map(|i| ((i * 7919 % 101) as f32 - 50.0) / 17.0).collect();
    let mut want = vec![0.0f64; n * n];
    for r in 0..m {
        for i in 0..n {
            for j in 0..n {
                want[i * n + j] += f64::from(x[r * n + i]) * f64::from(x[r * n + j]);
            }
        }
    }
    for batch in [1, 5, 37] {
        let mut acc = StatsAccumulator::new(n, StatsKind::Covariance);
        for rows in x.chunks(batch * n) {
            acc.add(rows);
        }
        let s = acc.finish();
        assert_eq!(s.n_rows, m as u64);
        let cov = s.covariance.unwrap();
        for (k, (&got, &w)) in cov.iter().zip(&want).enumerate() {
            assert!((f64::from(got) - w).abs() <= 1e-4 * w.abs().max(1.0), "batch {batch} [{k}]: {got} vs {w}");
        }
        for i in 0..n {
            assert!((f64::from(s.diagonal[i]) - want[i * n + i]).abs() <= 1e-4 * want[i * n + i].max(1.0));
        }
    }
    let d = StatsAccumulator::new(n, StatsKind::Diagonal);
    assert!(d.finish().covariance.is_none());
}

/// A source of two "blocks", each a single 2x2 linear layer y = W x applied to fixed hidden states; it
/// records the order of calls.
struct Toy {
    hidden: Vec<f32>,
    weights: Vec<Vec<f32>>,
    log: Vec<String>,
}

impl CalibrationSource for Toy {
    fn n_blocks(&self) -> usize {
        self.weights.len()
    }
    fn block_weights(&mut self, index: usize) -> Result<Vec<LinearWeight>, SourceError> {
        let name = format!("blk.{index}.w");
        Ok(vec![LinearWeight { name, rows: 2, cols: 2, values: self.weights[index].clone() }])
    }
    fn block_inputs(&mut self, index: usize, visit: &mut dyn FnMut(LinearInput<'_>)) -> Result<(), SourceError> {
        self.log.push(format!("inputs {index}"));
        let name = format!("blk.{index}.w");
        visit(LinearInput { layers: &[name.as_str()], rows: &self.hidden, cols: 2, stage: 0 });
        Ok(())
    }
    fn update_weights(&mut self, _: usize, _: Vec<LinearWeight>) -> Result<(), SourceError> {
        Err("a toy block has one layer".into())
    }
    fn scale_vector(&mut self, _: usize, _: &str, _: &[f32]) -> Result<Vec<f32>, SourceError> {
        Err("a toy block has no vectors".into())
    }
    fn n_tokens(&self) -> u64 {
        (self.hidden.len() / 2) as u64
    }
    fn commit_block(&mut self, index: usize, weights: Vec<LinearWeight>) -> Result<(), SourceError> {
        self.log.push(format!("commit {index}"));
        let w = &weights[0].values;
        self.hidden =
            self.hidden.chunks(2).flat_map(|x| [w[0] * x[0] + w[1] * x[1], w[2] * x[0] + w[3] * x[1]]).collect();
        Ok(())
    }
}

struct Halve;

impl LayerSolver for Halve {
    fn stats_kind(&self) -> StatsKind {
        StatsKind::Covariance
    }
    fn solve(&self, _block: usize, w: &LinearWeight, stats: &InputStats) -> Result<Vec<f32>, String> {
        if stats.n_rows == 0 {
            return Err("no rows".into());
        }
        Ok(w.values.iter().map(|v| v * 0.5).collect())
    }
}

#[test]
fn blocks_are_solved_in_order_through_committed_weights() {
    let mut toy = Toy { hidden: vec![1.0, 2.0, 3.0, 4.0], weights: vec![vec![2.0, 0.0, 0.0, 2.0]; 2], log: Vec::new() };
    let r = calibrate(&mut toy, &Halve, &crate::progress::Silent).unwrap();
    assert_eq!(toy.log, ["inputs 0", "commit 0", "inputs 1", "commit 1"]);
    assert_eq!(r.blocks.len(), 2);
    assert_eq!(r.blocks[1].tokens, 2);
    // Each block's solved weight is the identity, so the hidden states are unchanged.
    assert_eq!(toy.hidden, [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn mismatched_inputs_are_errors() {
    /// One block of one layer, shown one input row (`.1`), or no input at all.
    struct Feeds(Toy, Option<&'static [f32]>);
    impl CalibrationSource for Feeds {
        fn n_blocks(&self) -> usize {
            1
        }
        fn block_weights(&mut self, index: usize) -> Result<Vec<LinearWeight>, SourceError> {
            self.0.block_weights(index)
        }
        fn block_inputs(&mut self, _: usize, visit: &mut dyn FnMut(LinearInput<'_>)) -> Result<(), SourceError> {
            if let Some(rows) = self.1 {
                visit(LinearInput { layers: &["blk.0.w"], rows, cols: rows.len(), stage: 0 });
            }
            Ok(())
        }
        fn update_weights(&mut self, _: usize, _: Vec<LinearWeight>) -> Result<(), SourceError> {
            Ok(())
        }
        fn scale_vector(&mut self, _: usize, _: &str, _: &[f32]) -> Result<Vec<f32>, SourceError> {
            Ok(Vec::new())
        }
        fn n_tokens(&self) -> u64 {
            0
        }
        fn commit_block(&mut self, _: usize, _: Vec<LinearWeight>) -> Result<(), SourceError> {
            Ok(())
        }
    }
    let toy = || Toy { hidden: vec![], weights: vec![vec![0.0; 4]], log: Vec::new() };
    let e =
        calibrate(&mut Feeds(toy(), Some(&[1.0, 2.0, 3.0])), &Halve, &crate::progress::Silent).unwrap_err().to_string();
    assert!(e.contains("blk.0.w") && e.contains("takes 2 inputs"), "{e}");
    let e = calibrate(&mut Feeds(toy(), None), &Halve, &crate::progress::Silent).unwrap_err().to_string();
    assert!(e.contains("received no calibration input"), "{e}");
}

/// One block of two 1x1 layers in a chain, `y = b·(a·x)`: layer `b` reads `a`'s output.
struct Chain {
    x: Vec<f32>,
    a: f32,
    b: f32,
    passes: usize,
}

impl CalibrationSource for Chain {
    fn n_blocks(&self) -> usize {
        1
    }
    fn block_weights(&mut self, _: usize) -> Result<Vec<LinearWeight>, SourceError> {
        let lw = |name: &str, v: f32| LinearWeight { name: name.into(), rows: 1, cols: 1, values: vec![v] };
        Ok(vec![lw("a", self.a), lw("b", self.b)])
    }
    fn block_inputs(&mut self, _: usize, visit: &mut dyn FnMut(LinearInput<'_>)) -> Result<(), SourceError> {
        self.passes += 1;
        visit(LinearInput { layers: &["a"], rows: &self.x, cols: 1, stage: 0 });
        let mid: Vec<f32> = self.x.iter().map(|v| v * self.a).collect();
        visit(LinearInput { layers: &["b"], rows: &mid, cols: 1, stage: 1 });
        Ok(())
    }
    fn update_weights(&mut self, _: usize, weights: Vec<LinearWeight>) -> Result<(), SourceError> {
        for w in weights {
            match w.name.as_str() {
                "a" => self.a = w.values[0],
                _ => self.b = w.values[0],
            }
        }
        Ok(())
    }
    fn scale_vector(&mut self, _: usize, _: &str, d: &[f32]) -> Result<Vec<f32>, SourceError> {
        self.x.iter_mut().zip(d).for_each(|(x, d)| *x /= d);
        Ok(self.x.clone())
    }
    fn n_tokens(&self) -> u64 {
        self.x.len() as u64
    }
    fn commit_block(&mut self, i: usize, weights: Vec<LinearWeight>) -> Result<(), SourceError> {
        self.update_weights(i, weights)
    }
}

/// Halves every weight and records the sum of squares of each layer's input.
struct Record(std::sync::Mutex<Vec<(String, f32)>>);

impl LayerSolver for Record {
    fn stats_kind(&self) -> StatsKind {
        StatsKind::Diagonal
    }
    fn solve(&self, _: usize, w: &LinearWeight, stats: &InputStats) -> Result<Vec<f32>, String> {
        self.0.lock().unwrap().push((w.name.clone(), stats.diagonal[0]));
        Ok(w.values.iter().map(|v| v * 0.5).collect())
    }
}

#[test]
fn expert_slice_names_round_trip_and_other_names_pass_through() {
    let n = expert_slice_name("blk.3.ffn_up_exps.weight", 12);
    assert_eq!(n, "blk.3.ffn_up_exps.weight[12]");
    assert_eq!(split_expert_slice(&n), ("blk.3.ffn_up_exps.weight", Some(12)));
    for plain in ["blk.0.attn_q.weight", "x[]", "x[01]", "x[-1]", "x[1a]", "[", "]"] {
        assert_eq!(split_expert_slice(plain), (plain, None), "{plain}");
    }
    assert_eq!(split_expert_slice("x[0]"), ("x", Some(0)));
}

#[test]
fn true_sequential_layers_see_inputs_through_the_layers_already_solved() {
    for (sequential, b_input, passes) in [(false, 16.0, 1), (true, 4.0, 2)] {
        let mut chain = Chain { x: vec![2.0], a: 2.0, b: 3.0, passes: 0 };
        let rec = Record(Default::default());
        let opts = CalibrateOptions { true_sequential: sequential };
        calibrate_with(&mut chain, &rec, &crate::progress::Silent, &opts).unwrap();
        // a sees x = 2 (4); b sees a·x: 4 (16) from the original a, 2 (4) from the halved one.
        assert_eq!(rec.0.into_inner().unwrap(), [("a".to_string(), 4.0), ("b".to_string(), b_input)]);
        assert_eq!(chain.passes, passes);
        assert_eq!((chain.a, chain.b), (1.0, 1.5));
    }
}

/// Doubles layer `a`, asks for the input vector to be divided by 2, and records the sample it saw.
struct Fold(std::sync::Mutex<Vec<Vec<f32>>>);

impl BlockSolver for Fold {
    fn stats_kind(&self) -> StatsKind {
        StatsKind::Diagonal
    }
    fn sample_rows(&self) -> u64 {
        2
    }
    fn solve_block(
        &self,
        _: usize,
        weights: &[LinearWeight],
        inputs: &[(Vec<String>, InputStats)],
    ) -> Result<BlockSolution, String> {
        for (_, s) in inputs {
            self.0.lock().unwrap().push(s.sample.clone().unwrap());
        }
        let weights = weights
            .iter()
            .map(|w| LinearWeight { values: w.values.iter().map(|v| v * 2.0).collect(), ..w.clone() })
            .collect();
        Ok(BlockSolution { weights, vector_scales: vec![("x".into(), vec![2.0; 4])] })
    }
}

#[test]
fn block_solvers_fold_their_vector_scales_and_see_a_strided_sample() {
    let mut chain = Chain { x: vec![1.0, 2.0, 3.0, 4.0], a: 2.0, b: 3.0, passes: 0 };
    let solver = Fold(Default::default());
    let (report, vectors) = calibrate_blocks(&mut chain, &solver, &crate::progress::Silent).unwrap();
    assert_eq!(report.blocks[0].tokens, 4);
    assert_eq!(chain.passes, 1);
    // 4 tokens, 2 sample rows: every second row, from the first.
    assert_eq!(solver.0.into_inner().unwrap(), [vec![1.0, 3.0], vec![2.0, 6.0]]);
    assert_eq!(vectors, [("x".to_string(), vec![0.5, 1.0, 1.5, 2.0])]);
    assert_eq!((chain.a, chain.b), (4.0, 6.0));
}
