//! quantforge-eval: the forward pass, perplexity, KL divergence and calibration.
