"""Perplexity of a checkpoint as transformers loads and runs it (a loader check, not part of the tests or CI).

    python transformers_ppl.py MODEL_DIR TEXT CHUNKS [CTX]

Tokenizes TEXT without special tokens, cuts CHUNKS chunks of CTX tokens (default 512) and scores the second half
of each chunk, as `quantforge eval perplexity MODEL_DIR --text TEXT --chunks CHUNKS` does (llama.cpp's
definition), in float32 on the CPU. A compressed-tensors, GPTQ or AWQ checkpoint goes through transformers' own
quantization loader, so the figure says whether transformers reads the checkpoint as quantforge wrote it.
"""

import math
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def main():
    model_dir, text_path, chunks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = int(sys.argv[4]) if len(sys.argv) > 4 else 512
    torch.set_num_threads(2)
    # The tokenizer.json as written (transformers 5's AutoTokenizer rebuilds SmolLM2's without its Digits
    # pre-tokenizer, which gives other ids), on the text as stored (newline="": CRLF line ends stay, as quantforge
    # reads them).
    with open(text_path, encoding="utf-8", newline="") as f:
        ids = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json")).encode(f.read(), add_special_tokens=False).ids
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    first = ctx // 2
    nll, count = 0.0, 0
    with torch.no_grad():
        for c in range(chunks):
            x = torch.tensor([ids[c * ctx : (c + 1) * ctx]])
            logp = torch.log_softmax(model(x).logits[0].double(), dim=-1)
            for j in range(first, ctx - 1):
                nll -= logp[j, x[0, j + 1]].item()
                count += 1
    print(f"{type(model).__name__}: {len(ids)} tokens, {chunks} chunks of {ctx}, PPL = {math.exp(nll / count):.4f}")


if __name__ == "__main__":
    main()
