//! MMLU scoring against a stand-in model whose log-probabilities are known: the prompts it is sent must be
//! the original format exactly, and the chosen letters and their log-probabilities must be the ones that
//! follow from its logits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use quantforge_eval::mmlu::{self, prompt, Dataset, LogitModel, MmluOptions};
use quantforge_eval::{EvalError, Tokenizer};
use quantforge_quant::progress::Silent;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel)
}

/// High logit given to the tokens of the letter the toy intends for a prompt.
const HIGH: f32 = 8.0;

/// Gives, at every position after a known prompt, logit `HIGH` to the tokens of that prompt's intended
/// letter continuation and 0 to every other token. An unknown prompt is an error.
struct Toy {
    n_vocab: usize,
    intended: HashMap<Vec<u32>, Vec<u32>>,
}

impl LogitModel for Toy {
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    fn n_ctx_train(&self) -> usize {
        4096
    }
    fn logits(&self, seqs: &[&[u32]], logits_from: usize) -> quantforge_eval::Result<Vec<f32>> {
        let mut out = Vec::new();
        for s in seqs {
            let favoured = (1..=s.len())
                .rev()
                .find_map(|n| self.intended.get(&s[..n]))
                .ok_or_else(|| EvalError::BadOption { message: format!("unexpected prompt {s:?}") })?;
            for _ in logits_from.min(s.len())..s.len() {
                let mut row = vec![0.0f32; self.n_vocab];
                for &t in favoured {
                    row[t as usize] = HIGH;
                }
                out.extend(row);
            }
        }
        Ok(out)
    }
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_hf_dir(&fixture("stories260K")).unwrap()
}

/// Continuation tokens of " A".." D" after "Answer:".
fn letters(tok: &Tokenizer) -> Vec<Vec<u32>> {
    let base = tok.encode("Answer:", false).unwrap();
    ["A", "B", "C", "D"]
        .iter()
        .map(|l| tok.encode(&format!("Answer: {l}"), false).unwrap()[base.len()..].to_vec())
        .collect()
}

/// The toy for the toy_facts subject with `shots` examples, intending `intended[i]` for question i.
fn toy(tok: &Tokenizer, shots: usize, intended: &[usize]) -> Toy {
    let data = Dataset::open(&fixture("mmlu-toy")).unwrap();
    let dev = data.dev("toy_facts").unwrap();
    let conts = letters(tok);
    let mut map = HashMap::new();
    for (q, &l) in data.test("toy_facts").unwrap().iter().zip(intended) {
        let ids = tok.encode(&prompt::prompt("toy_facts", &dev, shots, q), true).unwrap();
        map.insert(ids, conts[l].clone());
    }
    Toy { n_vocab: tok.n_vocab(), intended: map }
}

#[test]
fn scoring_picks_the_letter_with_the_highest_log_probability() {
    let tok = tokenizer();
    let conts = letters(&tok);
    // This vocabulary has no "▁A": " A" is two tokens, " B" one, so both scoring paths run.
    assert_eq!(conts[0].len(), 2);
    assert_eq!(conts[1].len(), 1);
    // Answers are B, C, D, A; the toy is right on the first three and says B on the last.
    let intended = [1, 2, 3, 1];
    let model = toy(&tok, 2, &intended);
    let data = Dataset::open(&fixture("mmlu-toy")).unwrap();
    for n_batch in [1, 4096] {
        let opts = MmluOptions { shots: 2, n_batch, ..Default::default() };
        let r = mmlu::evaluate(&model, &tok, &data, &["toy_facts".to_string()], &opts, &Silent).unwrap();
        assert_eq!(r.overall.n, 4);
        assert_eq!(r.overall.correct, 3);
        assert_eq!(r.subjects[0].score.correct, 3);
        assert_eq!(r.subjects[0].min_shots, 2);
        let predicted: Vec<usize> = r.answers.iter().map(|a| a.predicted).collect();
        assert_eq!(predicted, intended);
        // Every row of the toy has `HIGH` on the favoured letter's distinct tokens and 0 elsewhere.
        for (a, &want) in r.answers.iter().zip(&intended) {
            let mut favoured = conts[want].clone();
            favoured.sort();
            favoured.dedup();
            let k = favoured.len() as f64;
            let lse = (k * f64::from(HIGH).exp() + (tok.n_vocab() as f64 - k)).ln();
            for (l, c) in conts.iter().enumerate() {
                let expect: f64 =
                    c.iter().map(|t| if favoured.contains(t) { f64::from(HIGH) } else { 0.0 } - lse).sum();
                assert!((a.log_probs[l] - expect).abs() < 1e-4, "{l}: {} vs {expect}", a.log_probs[l]);
            }
        }
        assert!((r.overall.accuracy() - 0.75).abs() < 1e-12);
        assert!((r.overall.stderr() - 0.25).abs() < 1e-12);
    }
}

#[test]
fn the_prompt_sent_is_the_original_format() {
    let tok = tokenizer();
    let literal = "The following are multiple choice questions (with answers) about  toy facts.\n\n\
                   What do bees make?\nA. Milk\nB. Honey\nC. Silk\nD. Wool\nAnswer: B\n\n\
                   What is 2 + 2?\nA. 4\nB. 3\nC. 5\nD. 22\nAnswer:";
    {
        let d = Dataset::open(&fixture("mmlu-toy")).unwrap();
        let (t, dv) = (d.test("toy_facts").unwrap(), d.dev("toy_facts").unwrap());
        assert_eq!(prompt::prompt("toy_facts", &dv, 1, &t[3]), literal);
    }
    // The toy knows questions 0-2 by the prompt builder's text and question 3 only by the literal above.
    let mut model = toy(&tok, 1, &[1, 2, 3]);
    model.intended.insert(tok.encode(literal, true).unwrap(), letters(&tok)[0].clone());
    let data = Dataset::open(&fixture("mmlu-toy")).unwrap();
    let opts = MmluOptions { shots: 1, ..Default::default() };
    let r = mmlu::evaluate(&model, &tok, &data, &["toy_facts".to_string()], &opts, &Silent).unwrap();
    assert_eq!(r.overall.correct, 4);
}

#[test]
fn long_prompts_drop_examples_first() {
    let tok = tokenizer();
    let data = Dataset::open(&fixture("mmlu-toy")).unwrap();
    let zero_shot = |q| tok.encode(&prompt::prompt("toy_facts", &[], 0, q), true).unwrap().len();
    let full = data.test("toy_facts").unwrap().iter().map(zero_shot).max().unwrap();
    // Room for the longest bare question (plus a continuation token) but not for any example.
    let model = toy(&tok, 0, &[1, 2, 3, 0]);
    let opts = MmluOptions { shots: 5, max_tokens: full + 1, ..Default::default() };
    let r = mmlu::evaluate(&model, &tok, &data, &["toy_facts".to_string()], &opts, &Silent).unwrap();
    assert_eq!(r.subjects[0].min_shots, 0);
    assert_eq!(r.overall.correct, 4);
}

#[test]
fn selection_errors_name_the_subject_and_the_directory() {
    let data = Dataset::open(&fixture("mmlu-toy")).unwrap();
    let e = data.select(&["astronomy".to_string()], None).unwrap_err().to_string();
    assert!(e.contains("unknown subject 'astronomy'") && e.contains("toy_facts"), "{e}");
    let e = data.select(&[], Some("nope")).unwrap_err().to_string();
    assert!(e.contains("unknown subset 'nope'") && e.contains("quick10"), "{e}");
    assert_eq!(data.select(&[], None).unwrap(), ["toy_facts"]);
    let e = Dataset::open(&fixture("text")).unwrap_err().to_string();
    assert!(e.contains("test"), "{e}");
}
