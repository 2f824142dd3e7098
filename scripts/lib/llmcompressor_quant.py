"""GPTQ or AWQ with llm-compressor on the CPU, on the calibration windows quantforge draws (benchmark anchor only).

    python llmcompressor_quant.py MODEL_DIR CALIB_TXT OUT_DIR NSAMPLES SEQLEN SEED GROUP THREADS [gptq|awq]

The windows: the calibration text tokenized without special tokens by the model's own tokenizer.json, then NSAMPLES
windows of SEQLEN tokens at start positions drawn by SplitMix64 from SEED, as quantforge's `sample_windows` draws
them. GPTQ: 4-bit symmetric integer weights in groups of GROUP columns on every Linear but lm_head, 1% damping and
static act-order (llm-compressor's default: columns in descending Hessian-diagonal order, groups fixed beforehand;
quantforge's `--act-order --static-groups`). AWQ: AWQModifier (its default mappings, duo scaling, grid of 20)
followed by round-to-nearest 4-bit asymmetric groups of GROUP (W4A16_ASYM with that group size; quantforge's
`--method awq`). Written as compressed-tensors. Used by scripts/bench-vs-llmcompressor.sh.
"""

import shutil
import sys
from pathlib import Path

import torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
from llmcompressor.modifiers.transform.awq import AWQModifier
from llmcompressor.pipelines.cache import IntermediatesCache
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

MASK = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def windows(ids, nsamples, seqlen, seed):
    starts = len(ids) - seqlen + 1
    out, state = [], seed
    for _ in range(nsamples):
        state, r = splitmix64(state)
        s = r % starts
        out.append(ids[s : s + seqlen])
    return out


def main():
    model_dir, calib, out_dir = sys.argv[1:4]
    nsamples, seqlen, seed, group, threads = map(int, sys.argv[4:9])
    method = sys.argv[9] if len(sys.argv) > 9 else "gptq"
    torch.set_num_threads(threads)
    # The tokenizer.json as written (transformers 5's AutoTokenizer rebuilds SmolLM2's without its Digits
    # pre-tokenizer, which gives other ids), on the text as stored (newline="": CRLF line ends stay, as quantforge
    # reads them).
    with open(calib, encoding="utf-8", newline="") as f:
        ids = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json")).encode(f.read(), add_special_tokens=False).ids
    w = windows(ids, nsamples, seqlen, seed)
    ds = Dataset.from_dict({"input_ids": w, "attention_mask": [[1] * seqlen for _ in w]})
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if method == "gptq":
        weights = QuantizationArgs(
            num_bits=4, type="int", symmetric=True, strategy="group", group_size=group, actorder="static"
        )
        scheme = QuantizationScheme(targets=["Linear"], weights=weights)
        recipe = GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"], dampening_frac=0.01)
    elif method == "awq":
        if not torch.cuda.is_available():
            # AWQModifier pins its activation cache for faster GPU onloading, which fails without a CUDA driver;
            # on the CPU there is nothing to onload, so pinning is skipped.
            IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
        weights = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=group)
        scheme = QuantizationScheme(targets=["Linear"], weights=weights)
        recipe = [
            AWQModifier(duo_scaling=True),
            QuantizationModifier(config_groups={"group_0": scheme}, ignore=["lm_head"]),
        ]
    else:
        sys.exit(f"unknown method {method}: gptq or awq")
    oneshot(model=model, dataset=ds, recipe=recipe, max_seq_length=seqlen, num_calibration_samples=nsamples)
    model.save_pretrained(out_dir, save_compressed=True)
    # The source's own tokenizer files, for the same reason.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(Path(model_dir) / name, Path(out_dir) / name)
    print(f"{len(ids)} calibration tokens, {nsamples} windows of {seqlen}", file=sys.stderr)


if __name__ == "__main__":
    main()
