//! The outer per-tensor decision (`llama_tensor_get_type`, `src/llama-quant.cpp` l.662-704 at
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62) plus the imatrix and shape checks llama-quantize makes before
//! writing anything.

use std::collections::BTreeSet;

use super::mix::{MixParams, MixState};
use super::order::{compare_weight_names, output_order};
use super::tensor::{self, Fallback};
use super::{Decision, ModelInfo, PolicyError, PolicyOptions, TensorCategory, TensorDesc};

/// Chooses the type of every tensor of one model, in output order.
///
/// Build it from the complete tensor list (the counters and "are embeddings tied" depend on all names),
/// then call [`Planner::plan`] once per tensor in [`output_order`]: the mix advances counters as it goes,
/// exactly as llama.cpp's main loop does. [`plan_all`] does both.
#[derive(Debug)]
pub struct Planner {
    model: ModelInfo,
    options: PolicyOptions,
    names: BTreeSet<String>,
    state: MixState,
    n_fallback: usize,
}

impl Planner {
    /// A planner for `model` whose file holds the tensors `names` (after any layer pruning).
    pub fn new<S: AsRef<str>>(model: ModelInfo, options: PolicyOptions, names: &[S]) -> Result<Planner, PolicyError> {
        let mut set = BTreeSet::new();
        for n in names {
            if !set.insert(n.as_ref().to_string()) {
                return Err(PolicyError::DuplicateTensor { tensor: n.as_ref().to_string() });
            }
        }
        let state = MixState::new(&model, set.iter().map(String::as_str));
        Ok(Planner { model, options, names: set, state, n_fallback: 0 })
    }

    /// How many tensors needed a shape fallback so far (llama.cpp's `n_fallback`).
    pub fn n_fallback(&self) -> usize {
        self.n_fallback
    }

    /// Whether the model has no `output.weight`, so `token_embd` is treated as the output.
    pub fn has_tied_embeddings(&self) -> bool {
        self.state.has_tied_embeddings
    }

    /// The model this planner was built for.
    pub fn model(&self) -> &ModelInfo {
        &self.model
    }

    /// Decide the type of the next tensor.
    pub fn plan(&mut self, t: &TensorDesc<'_>) -> Result<Decision, PolicyError> {
        if !self.names.contains(t.name) {
            return Err(PolicyError::UnknownTensor { tensor: t.name.to_string() });
        }
        let opts = &self.options;
        let ftype = opts.ftype;
        let category = TensorCategory::of(t.name);
        let allows = tensor::allows_quantization(ftype, opts.leave_output_tensor, t.name, t.ne);
        let ne0 = t.ne.first().copied().unwrap_or(1);

        let mut fallback_from = None;
        let ty = if !allows {
            t.src_type
        } else if let (Some(ty), TensorCategory::TokenEmbd) = (opts.token_embedding_type, category) {
            ty
        } else if let (Some(ty), TensorCategory::Output) = (opts.output_tensor_type, category) {
            ty
        } else {
            let default = ftype.default_type();
            let mut ty = default;
            if default.is_quantized() {
                // First matching --tensor-type wins and skips the mix; it applies under --pure as well.
                let manual = opts.tensor_types.iter().find(|(p, _)| p.is_match(t.name));
                if let Some(&(_, forced)) = manual {
                    ty = forced;
                } else if !opts.pure {
                    let params = MixParams {
                        model: &self.model,
                        ftype,
                        has_imatrix: opts.has_imatrix,
                        output_tensor_type: opts.output_tensor_type,
                        token_embedding_type: opts.token_embedding_type,
                    };
                    ty = self.state.choose(&params, t.name, t.ne, category, ty)?;
                }
                match tensor::fallback(ty, ne0) {
                    Fallback::Fits => {}
                    Fallback::Use(to) => {
                        self.n_fallback += 1;
                        fallback_from = Some(ty);
                        ty = to;
                    }
                    Fallback::Impossible => {
                        return Err(PolicyError::NoFallback { tensor: t.name.to_string(), ty, ne0 });
                    }
                }
            }
            ty
        };

        let requires_imatrix = tensor::requires_imatrix(t.name, ty, ftype);
        if allows && requires_imatrix && !opts.has_imatrix && !opts.dry_run {
            return Err(PolicyError::ImatrixRequired { tensor: t.name.to_string(), ty });
        }
        let quantize = ty != t.src_type;
        // Overrides are not shape-checked by llama.cpp, which then fails inside ggml; say so up front.
        if quantize && !tensor::whole_blocks(ty, ne0) {
            return Err(PolicyError::ShapeIncompatible { tensor: t.name.to_string(), ty, ne0, block: ty.block_size() });
        }
        Ok(Decision { ty, quantize, fallback_from, requires_imatrix, category })
    }
}

/// One tensor with its decision.
#[derive(Clone, Debug)]
pub struct Planned<'a> {
    pub tensor: TensorDesc<'a>,
    pub decision: Decision,
}

/// Plan every tensor of a model; the result is in llama-quantize's output order.
pub fn plan_all<'a>(
    model: ModelInfo,
    options: PolicyOptions,
    tensors: &[TensorDesc<'a>],
) -> Result<Vec<Planned<'a>>, PolicyError> {
    let names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
    let mut planner = Planner::new(model, options, &names)?;
    let order = output_order(&names);
    debug_assert!(order.windows(2).all(|w| compare_weight_names(names[w[0]], names[w[1]]).is_lt()));
    order.into_iter().map(|i| Ok(Planned { tensor: tensors[i], decision: planner.plan(&tensors[i])? })).collect()
}

/// Total bytes of the planned tensors (without padding) and bits per weight over all of them, the figure
/// llama-quantize prints as `quant size = ... (x.xx BPW)`.
pub fn planned_size(planned: &[Planned<'_>]) -> (u64, f64) {
    let mut bytes = 0u64;
    let mut params = 0u64;
    for p in planned {
        bytes += p.decision.ty.tensor_size(p.tensor.ne).unwrap_or(0);
        params += p.tensor.ne.iter().product::<u64>();
    }
    (bytes, quantforge_formats::ggml_type::bits_per_weight(bytes, params))
}
