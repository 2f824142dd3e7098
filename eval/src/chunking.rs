//! How a tokenized text is cut into the chunks that perplexity, KL divergence and the importance matrix
//! evaluate, which positions of a chunk are scored, and the negative log-likelihood of one position, as
//! llama.cpp's `llama-perplexity` defines them (`tools/perplexity/perplexity.cpp` at commit
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62). One definition shared by every evaluation, so their chunks and
//! scored positions agree token for token.

use crate::error::{EvalError, Result};
use crate::model::LlamaModel;

/// The chunks of `tokens` that perplexity (and KL divergence) evaluate, with BOS substituted.
pub(crate) fn chunks(
    tokens: &[u32],
    bos: Option<u32>,
    n_ctx: usize,
    max_chunks: Option<usize>,
) -> Result<Vec<Vec<u32>>> {
    if n_ctx < 4 {
        return Err(EvalError::BadOption { message: format!("ctx {n_ctx} is too small (at least 4)") });
    }
    if tokens.len() < 2 * n_ctx {
        return Err(EvalError::TextTooShort { n_tokens: tokens.len(), needed: 2 * n_ctx });
    }
    let n = (tokens.len() / n_ctx).min(check_chunk_limit(max_chunks)?);
    Ok(split_chunks(&tokens[..n * n_ctx], bos, n_ctx))
}

/// The chunk limit of `--chunks`, refusing 0 (nothing to evaluate).
pub(crate) fn check_chunk_limit(max_chunks: Option<usize>) -> Result<usize> {
    match max_chunks {
        Some(0) => Err(EvalError::BadOption { message: "--chunks 0: nothing to evaluate".into() }),
        limit => Ok(limit.unwrap_or(usize::MAX)),
    }
}

/// `tokens` (a whole number of chunks) cut into chunks of `n_ctx`, the first token of each replaced by `bos`.
pub(crate) fn split_chunks(tokens: &[u32], bos: Option<u32>, n_ctx: usize) -> Vec<Vec<u32>> {
    tokens
        .chunks_exact(n_ctx)
        .map(|c| {
            let mut c = c.to_vec();
            if let Some(b) = bos {
                c[0] = b;
            }
            c
        })
        .collect()
}

/// `(first, rows)`: a chunk of `n_ctx` is scored from position `first = n_ctx/2` on, `rows = n_ctx - 1 - first`
/// positions (each predicting the token after it).
pub(crate) fn scored_rows(n_ctx: usize) -> (usize, usize) {
    let first = n_ctx / 2;
    (first, n_ctx - 1 - first)
}

/// Checks `n_ctx` against the model.
pub(crate) fn check_ctx(model: &LlamaModel, n_ctx: usize) -> Result<()> {
    let train = model.config().n_ctx_train;
    if n_ctx > train {
        return Err(EvalError::ContextTooLong { n_ctx, n_ctx_train: train });
    }
    Ok(())
}

/// Negative log-likelihood of `target` under `logits`, as llama.cpp's `log_softmax`.
pub(crate) fn nll(logits: &[f32], target: u32) -> f64 {
    let max = crate::vexp::max(logits);
    let sum_exp = crate::vexp::exp_sum(logits, max);
    -(f64::from(logits[target as usize] - max) - sum_exp.ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_replace_first_token_with_bos() {
        let toks: Vec<u32> = (10..30).collect();
        let c = chunks(&toks, Some(1), 8, None).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], vec![1, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(c[1][0], 1);
        assert_eq!(c[1][1], 19);
        assert_eq!(chunks(&toks, None, 8, Some(1)).unwrap()[0][0], 10);
        assert!(matches!(chunks(&toks, None, 11, None), Err(EvalError::TextTooShort { .. })));
        assert!(matches!(chunks(&toks, None, 8, Some(0)), Err(EvalError::BadOption { .. })));
        assert_eq!(scored_rows(8), (4, 3));
        assert_eq!(scored_rows(7), (3, 3));
    }

    #[test]
    fn nll_of_uniform_logits_is_ln_vocab() {
        let l = vec![0.5f32; 8];
        assert!((nll(&l, 3) - 8f64.ln()).abs() < 1e-12);
    }
}
