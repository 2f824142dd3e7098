//! MMLU (Hendrycks et al., "Measuring Massive Multitask Language Understanding") scored the standard way:
//! the original prompt format ([`prompt`]), `k` dev-split examples before each test question, and the answer
//! whose continuation (" A", " B", " C", " D" after "Answer:") has the highest log-probability under the model.
//! A continuation of several tokens (a vocabulary without " A" as one token) is scored as the sum of its
//! tokens' log-probabilities. When a prompt is longer than the context limit, examples are dropped one at a
//! time as the original does; a prompt still too long with none keeps its last tokens.
//!
//! Accuracy is reported per subject, per category and over all questions (micro-averaged, as the original's
//! "average accuracy"), each with the standard error of a mean of 0/1 outcomes, `sqrt(p(1-p)/(n-1))`.

pub mod csv;
pub mod prompt;
pub mod subjects;

mod dataset;
mod score;

use std::time::Instant;

use quantforge_quant::progress::Progress;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

pub use csv::{read_questions, Question};
pub use dataset::Dataset;
pub use prompt::ChatTemplate;
pub use score::Score;
pub use subjects::{Category, SUBSETS};

use crate::error::{EvalError, Result};
use crate::model::LlamaModel;
use crate::tokenizer::Tokenizer;
use prompt::{Piece, LETTERS};

/// A model that gives next-token logits: [`LlamaModel`], or a stand-in with known log-probabilities.
pub trait LogitModel: Sync {
    /// Vocabulary size (logits per position).
    fn n_vocab(&self) -> usize;
    /// Longest sequence the model accepts.
    fn n_ctx_train(&self) -> usize;
    /// As [`LlamaModel::forward`]: logits of positions `logits_from..len` of every sequence, in order.
    fn logits(&self, seqs: &[&[u32]], logits_from: usize) -> Result<Vec<f32>>;
}

impl LogitModel for LlamaModel {
    fn n_vocab(&self) -> usize {
        self.config().n_vocab
    }
    fn n_ctx_train(&self) -> usize {
        self.config().n_ctx_train
    }
    fn logits(&self, seqs: &[&[u32]], logits_from: usize) -> Result<Vec<f32>> {
        self.forward(seqs, logits_from)
    }
}

/// How to run MMLU.
#[derive(Clone, Debug)]
pub struct MmluOptions {
    /// Dev examples before each question (0..=5).
    pub shots: usize,
    /// At most this many test questions per subject (the first ones).
    pub limit: Option<usize>,
    /// Longest prompt in tokens (the original used 2048); capped by the model's training context.
    pub max_tokens: usize,
    /// Tokens per forward pass; prompts are packed into passes of about this size.
    pub n_batch: usize,
    /// Wrap each prompt in this chat template.
    pub chat: Option<ChatTemplate>,
}

impl Default for MmluOptions {
    fn default() -> Self {
        MmluOptions { shots: 5, limit: None, max_tokens: 2048, n_batch: 2048, chat: None }
    }
}

/// The figures of one subject (serialized as its score's fields, then the others).
#[derive(Clone, Debug, Serialize)]
pub struct SubjectScore {
    #[serde(flatten)]
    pub score: Score,
    pub subject: String,
    pub category: Category,
    /// Fewest dev examples any of its prompts kept (below the asked shots when prompts were too long).
    pub min_shots: usize,
    /// Prompts cut to the context limit even with no examples.
    pub truncated: usize,
}

/// The model's choice on one question.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Index into [`MmluReport::subjects`].
    pub subject: usize,
    /// Row of the question in its test file (0-based).
    pub row: usize,
    pub answer: usize,
    pub predicted: usize,
    /// Log-probability of each letter's continuation.
    pub log_probs: [f64; 4],
}

/// The result of an MMLU run. Serialized as `shots`, `chat_template`, `overall`, `categories` (a map from
/// name to score), `subjects`, `n_tokens`, `seconds`, `tokens_per_second`; the answers are not serialized.
#[derive(Clone, Debug)]
pub struct MmluReport {
    pub subjects: Vec<SubjectScore>,
    /// Per category, for the categories present.
    pub categories: Vec<(Category, Score)>,
    /// Over all questions.
    pub overall: Score,
    pub answers: Vec<Answer>,
    pub shots: usize,
    pub chat_template: Option<ChatTemplate>,
    /// Tokens run through the model.
    pub n_tokens: usize,
    pub seconds: f64,
}

impl MmluReport {
    /// Tokens run through the model per second.
    pub fn tokens_per_second(&self) -> f64 {
        self.n_tokens as f64 / self.seconds.max(1e-9)
    }
}

impl Serialize for MmluReport {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        struct Categories<'a>(&'a [(Category, Score)]);
        impl Serialize for Categories<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(c, score)| (c.name(), score)))
            }
        }
        let mut o = s.serialize_struct("MmluReport", 8)?;
        o.serialize_field("shots", &self.shots)?;
        o.serialize_field("chat_template", &self.chat_template)?;
        o.serialize_field("overall", &self.overall)?;
        o.serialize_field("categories", &Categories(&self.categories))?;
        o.serialize_field("subjects", &self.subjects)?;
        o.serialize_field("n_tokens", &self.n_tokens)?;
        o.serialize_field("seconds", &self.seconds)?;
        o.serialize_field("tokens_per_second", &self.tokens_per_second())?;
        o.end()
    }
}

/// One forward sequence: a prompt followed by `path` (a proper prefix of some continuations).
struct Request {
    question: usize,
    path: usize,
    tokens: Vec<u32>,
    prompt_len: usize,
}

/// The continuation tokens of the four letters and the distinct sequences that score them.
struct Continuations {
    letters: [Vec<u32>; 4],
    /// Maximal proper prefixes of the continuations: one forward sequence each.
    paths: Vec<Vec<u32>>,
}

impl Continuations {
    /// What `" X"` adds to `context` for each letter X.
    fn new(tok: &Tokenizer, context: &str) -> Result<Continuations> {
        let base = tok.encode(context, false)?;
        let mut letters: [Vec<u32>; 4] = Default::default();
        for (slot, l) in letters.iter_mut().zip(LETTERS) {
            let with = tok.encode(&format!("{context} {l}"), false)?;
            if !with.starts_with(&base) || with.len() == base.len() {
                return Err(EvalError::BadOption {
                    message: format!("the tokenizer merges ' {l}' into the text before it ('{context}')"),
                });
            }
            *slot = with[base.len()..].to_vec();
        }
        let mut paths: Vec<Vec<u32>> = letters.iter().map(|c| c[..c.len() - 1].to_vec()).collect();
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let mut kept: Vec<Vec<u32>> = Vec::new();
        for p in paths {
            if !kept.iter().any(|k| k.starts_with(&p)) {
                kept.push(p);
            }
        }
        Ok(Continuations { letters, paths: kept })
    }

    /// The path that scores `letter`.
    fn path_of(&self, letter: usize) -> usize {
        let c = &self.letters[letter];
        self.paths.iter().position(|p| p.starts_with(&c[..c.len() - 1])).unwrap_or(0)
    }
}

/// Encode a (possibly templated) prompt, BOS first when the model adds it.
fn encode_prompt(tok: &Tokenizer, text: &str, chat: Option<ChatTemplate>) -> Result<Vec<u32>> {
    let mut ids: Vec<u32> = tok.bos_if_added().into_iter().collect();
    match chat {
        None => ids.extend(tok.encode(text, false)?),
        Some(t) => {
            for piece in t.wrap(text) {
                match piece {
                    Piece::Text(s) => ids.extend(tok.encode(&s, false)?),
                    Piece::Marker(m) => match tok.token_id(m) {
                        Some(id) => ids.push(id),
                        None => ids.extend(tok.encode(m, false)?),
                    },
                }
            }
        }
    }
    Ok(ids)
}

/// The text a letter continuation follows, for measuring how " X" tokenizes there.
fn continuation_context(chat: Option<ChatTemplate>) -> String {
    match chat.map(|t| t.wrap("Answer:")).and_then(|p| p.last().cloned()) {
        Some(Piece::Text(s)) => s,
        Some(Piece::Marker(m)) => m.to_string(),
        None => "Answer:".to_string(),
    }
}

/// Run MMLU on `subjects` of `data`.
pub fn evaluate(
    model: &dyn LogitModel,
    tok: &Tokenizer,
    data: &Dataset,
    subjects: &[String],
    opts: &MmluOptions,
    progress: &dyn Progress,
) -> Result<MmluReport> {
    if opts.shots > 5 {
        return Err(EvalError::BadOption { message: format!("--shots {}: MMLU has 5 dev examples", opts.shots) });
    }
    if tok.n_vocab() != model.n_vocab() {
        return Err(EvalError::Mismatch {
            message: format!("the tokenizer has {} tokens, the model {}", tok.n_vocab(), model.n_vocab()),
        });
    }
    let t0 = Instant::now();
    let max_tokens = opts.max_tokens.min(model.n_ctx_train());
    let cont = Continuations::new(tok, &continuation_context(opts.chat))?;
    let longest_path = cont.paths.iter().map(Vec::len).max().unwrap_or(0);
    if max_tokens < 2 + longest_path {
        return Err(EvalError::BadOption { message: format!("a prompt limit of {max_tokens} tokens is too small") });
    }
    let mut scores = Vec::new();
    let mut questions: Vec<(usize, usize, usize)> = Vec::new(); // (subject, row, answer)
    let mut requests = Vec::new();
    for (si, subject) in subjects.iter().enumerate() {
        let test = data.test(subject)?;
        let dev = if opts.shots > 0 { data.dev(subject)? } else { Vec::new() };
        let mut s = SubjectScore {
            subject: subject.clone(),
            category: subjects::category(subject),
            score: Score::default(),
            min_shots: opts.shots,
            truncated: 0,
        };
        for (row, q) in test.iter().enumerate().take(opts.limit.unwrap_or(usize::MAX)) {
            let mut k = opts.shots.min(dev.len());
            let mut ids = encode_prompt(tok, &prompt::prompt(subject, &dev, k, q), opts.chat)?;
            while k > 0 && ids.len() + longest_path > max_tokens {
                k -= 1;
                ids = encode_prompt(tok, &prompt::prompt(subject, &dev, k, q), opts.chat)?;
            }
            s.min_shots = s.min_shots.min(k);
            let room = max_tokens - longest_path;
            if ids.len() > room {
                s.truncated += 1;
                let keep_bos = usize::from(tok.bos_if_added().is_some());
                ids.drain(keep_bos..ids.len() - (room - keep_bos));
            }
            let question = questions.len();
            questions.push((si, row, q.answer));
            for (path, p) in cont.paths.iter().enumerate() {
                let mut tokens = ids.clone();
                tokens.extend_from_slice(p);
                requests.push(Request { question, path, tokens, prompt_len: ids.len() });
            }
        }
        scores.push(s);
    }
    let mut log_probs = vec![[0.0f64; 4]; questions.len()];
    let n_tokens = run_requests(model, &mut requests, opts.n_batch, &cont, &mut log_probs, progress)?;
    let mut answers = Vec::with_capacity(questions.len());
    for (&(subject, row, answer), &log_probs) in questions.iter().zip(&log_probs) {
        let predicted = (1..4).fold(0, |best, l| if log_probs[l] > log_probs[best] { l } else { best });
        scores[subject].score.add(predicted == answer);
        answers.push(Answer { subject, row, answer, predicted, log_probs });
    }
    let overall = scores.iter().fold(Score::default(), |acc, s| acc.merged(&s.score));
    let mut categories: Vec<(Category, Score)> = Vec::new();
    for s in &scores {
        match categories.iter_mut().find(|(c, _)| *c == s.category) {
            Some((_, sc)) => *sc = sc.merged(&s.score),
            None => categories.push((s.category, s.score)),
        }
    }
    categories.sort_by_key(|(c, _)| *c);
    Ok(MmluReport {
        subjects: scores,
        categories,
        overall,
        answers,
        shots: opts.shots,
        chat_template: opts.chat,
        n_tokens,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Rows whose distance from a pass's first wanted row exceeds this go to the next pass (each extra row is
/// a full vocabulary of logits).
const MAX_ROW_SPREAD: usize = 16;

/// Run every request, packing prompts of similar length into passes, and add each letter's continuation
/// log-probabilities to `log_probs[question]`.
fn run_requests(
    model: &dyn LogitModel,
    requests: &mut [Request],
    n_batch: usize,
    cont: &Continuations,
    log_probs: &mut [[f64; 4]],
    progress: &dyn Progress,
) -> Result<usize> {
    requests.sort_by_key(|r| (r.prompt_len, r.tokens.len()));
    let n_vocab = model.n_vocab();
    progress.start(requests.len(), 0);
    let mut n_tokens = 0;
    let mut start = 0;
    while start < requests.len() {
        let from = requests[start].prompt_len - 1;
        let mut end = start;
        let mut total = 0;
        while end < requests.len()
            && (end == start
                || (total + requests[end].tokens.len() <= n_batch
                    && requests[end].prompt_len - 1 - from <= MAX_ROW_SPREAD))
        {
            total += requests[end].tokens.len();
            end += 1;
        }
        let group = &requests[start..end];
        progress.item(start, "questions", &format!("{} sequences, {total} tokens", group.len()));
        let seqs: Vec<&[u32]> = group.iter().map(|r| r.tokens.as_slice()).collect();
        let logits = model.logits(&seqs, from)?;
        let mut off = 0;
        for (i, r) in group.iter().enumerate() {
            let n_rows = r.tokens.len() - from;
            if (off + n_rows) * n_vocab > logits.len() {
                return Err(EvalError::Mismatch {
                    message: format!("the model returned {} logits for a pass needing more", logits.len()),
                });
            }
            let first = off + r.prompt_len - 1 - from;
            for l in (0..4).filter(|&l| cont.path_of(l) == r.path) {
                log_probs[r.question][l] = cont.letters[l]
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| log_prob(&logits[(first + i) * n_vocab..(first + i + 1) * n_vocab], t))
                    .sum();
            }
            off += n_rows;
            progress.item_done(start + i, 0);
        }
        if off * n_vocab != logits.len() {
            return Err(EvalError::Mismatch {
                message: format!("the model returned {} logits for {off} rows", logits.len()),
            });
        }
        n_tokens += total;
        start = end;
    }
    progress.finish();
    Ok(n_tokens)
}

/// `log p(token)` under `logits` (max-shifted, the sum of exponentials in f64).
fn log_prob(logits: &[f32], token: u32) -> f64 {
    -crate::chunking::nll(logits, token)
}
