use super::*;
use crate::LlamaModel;

fn stories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/stories260K")
}

const A: &[u32] = &[1, 403, 260, 19, 7, 511, 88, 300, 2, 45, 46, 47];
const B: &[u32] = &[1, 5, 9, 400, 33];

/// Every block of `file` run in turn on `seqs`.
fn run_all(file: &ModelFile, seqs: &[&[u32]]) -> Activations {
    let mut acts = file.embed(seqs).unwrap();
    for i in 0..file.config().n_layer {
        let block = file.load_block(i).unwrap();
        assert_eq!(block.index(), i);
        run_block(file.config(), &block, &mut acts, Device::Cpu, None).unwrap();
    }
    acts
}

#[test]
fn blocks_run_one_at_a_time_give_the_forward_pass_bit_for_bit() {
    let model = LlamaModel::load(&stories()).unwrap();
    let file = ModelFile::open(&stories()).unwrap();
    let seqs = [A, B];
    assert_eq!(file.embed(&seqs).unwrap().hidden(), model.embed(&seqs).unwrap().hidden());
    let acts = run_all(&file, &seqs);
    assert_eq!((acts.n_tokens(), acts.width(), acts.seq_lens()), (A.len() + B.len(), 64, &[A.len(), B.len()][..]));
    let logits = model.head(&acts, &seqs, 0).unwrap();
    let want = model.forward(&seqs, 0).unwrap();
    assert_eq!(logits.len(), want.len());
    assert!(logits.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "logits differ");
    // The observer sees the block's matrices in the order of `linear_names`.
    let seen = std::sync::Mutex::new(Vec::new());
    let observe = |name: &str, _: Option<usize>, _: &[f32], _: usize| seen.lock().unwrap().push(name.to_string());
    let block = file.load_block(3).unwrap();
    let mut acts = file.embed(&seqs).unwrap();
    run_block(file.config(), &block, &mut acts, Device::Cpu, Some(&observe)).unwrap();
    assert_eq!(*seen.lock().unwrap(), block.linear_names());
    assert_eq!(block.linear_names()[0], "blk.3.attn_q.weight");
    assert_eq!(block.linear_names()[6], "blk.3.ffn_down.weight");
}

#[test]
fn a_block_run_until_an_input_shows_the_whole_runs_inputs_up_to_it() {
    let file = ModelFile::open(&stories()).unwrap();
    let block = file.load_block(2).unwrap();
    let record = |last: usize| {
        let seen = std::sync::Mutex::new(Vec::new());
        let observe = |name: &str, _: Option<usize>, rows: &[f32], _: usize| {
            seen.lock().unwrap().push((name.to_string(), rows.to_vec()))
        };
        let mut acts = file.embed(&[A, B]).unwrap();
        run_block_until(file.config(), &block, &mut acts, Device::Cpu, Some(&observe), last).unwrap();
        seen.into_inner().unwrap()
    };
    let whole = record(usize::MAX);
    assert_eq!(whole.len(), 7);
    // Q/K/V share an input, then O, gate/up (sharing one) and down.
    for (last, shown) in [(0, 3), (1, 4), (2, 6), (3, 7)] {
        assert!(record(last) == whole[..shown], "stopping after input {last}");
    }
}

#[test]
fn replaced_weights_change_the_block_output() {
    let file = ModelFile::open(&stories()).unwrap();
    let cfg = file.config();
    let run = |block: &Block| {
        let mut acts = file.embed(&[A]).unwrap();
        run_block(cfg, block, &mut acts, Device::Cpu, None).unwrap();
        acts.hidden().to_vec()
    };
    let mut block = file.load_block(1).unwrap();
    let base = run(&block);
    let name = "blk.1.ffn_down.weight";
    let (rows, cols, w) = block.weight_f32(name).unwrap();
    assert_eq!((rows, cols, w.len()), (cfg.n_embd, cfg.n_ff, cfg.n_embd * cfg.n_ff));
    let bytes = block.weight_bytes();
    block.replace_weight(name, w.clone()).unwrap();
    assert_eq!((run(&block), block.weight_bytes()), (base.clone(), bytes));
    block.replace_weight(name, w.iter().map(|v| v * 0.5).collect()).unwrap();
    assert_ne!(run(&block), base);
    let e = block.replace_weight("blk.2.ffn_down.weight", w.clone()).unwrap_err();
    assert!(matches!(e, EvalError::UnknownWeight { block: 1, .. }), "{e}");
    let e = block.replace_weight(name, vec![0.0; 3]).unwrap_err();
    assert!(matches!(e, EvalError::BadWeightLength { found: 3, .. }), "{e}");
    assert!(block.weight_f32("blk.1.attn_norm.weight").is_err());
}

#[test]
fn a_block_is_loaded_from_its_own_tensors_only() {
    // A copy of stories260K without block 1's tensors: the other blocks still load.
    let dir = std::env::temp_dir().join(format!("quantforge-blocks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"] {
        std::fs::copy(stories().join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(stories().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| !n.starts_with("model.layers.1.")).collect();
    safetensors::serialize_to_file(kept, None, &dir.join("model.safetensors")).unwrap();

    let file = ModelFile::open(&dir).unwrap();
    assert_eq!(file.path(), dir);
    for i in [0, 2, 3, 4] {
        assert_eq!(file.load_block(i).unwrap().index(), i);
    }
    let e = file.load_block(1).unwrap_err().to_string();
    assert!(e.contains("model.layers.1."), "{e}");
    let e = file.load_block(5).unwrap_err();
    assert!(matches!(e, EvalError::BlockOutOfRange { index: 5, n_layer: 5, .. }), "{e}");
    assert!(file.embed(&[A]).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}
