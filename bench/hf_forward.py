#!/usr/bin/env python3
"""Reference for `cargo xtask bench forward`: Hugging Face transformers (PyTorch CPU) running the
same GGUF on the same prompts as `dissect bench forward`, timed the same way.

usage: python3 bench/hf_forward.py --gguf PATH --prompts data/known_1000.json
           [--limit 64] [--batch 16 --batch 1] [--repeat 3] [--threads 2]

Work timed per prompt: the full forward pass, the logits at the last real position, the softmax
over the vocabulary, and the probabilities copied out (what `dissect_model::predict::
last_position_probs` does). Two ways, both fair to HF:
  batch > 1: right-padded rows with an attention mask; the last real position of each row is
             gathered from the final hidden states and only those go through the unembedding;
  batch = 1: one prompt per call, no padding, `logits_to_keep=1`.
One untimed warm-up pass over all prompts, then `--repeat` timed passes. Tokens/s counts real
(unpadded) tokens. Logs to stderr, one JSON object to stdout.
"""
import argparse
import time

from _common import emit, load_model, load_prompts, log, torch, versions


def run_batched(model, tok, rows, batch):
    """Top-1 ids of every row; `rows` are token id lists."""
    top1 = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        if batch == 1:
            logits = model(input_ids=torch.tensor(chunk), use_cache=False, logits_to_keep=1).logits[:, -1]
        else:
            s = max(map(len, chunk))
            ids = torch.tensor([r + [pad] * (s - len(r)) for r in chunk])
            mask = torch.tensor([[1] * len(r) + [0] * (s - len(r)) for r in chunk])
            h = model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            last = torch.tensor([len(r) - 1 for r in chunk])
            logits = model.lm_head(h[torch.arange(len(chunk)), last])
            cap = model.config.final_logit_softcapping
            if cap is not None:
                logits = torch.tanh(logits / cap) * cap
        probs = torch.softmax(logits, dim=-1).numpy()
        top1.extend(int(x) for x in probs.argmax(-1))
    return top1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    batches = a.batch or [16, 1]

    tok, model = load_model(a.gguf, a.threads)
    recs = load_prompts(a.prompts, a.limit)
    rows = [tok(r["prompt"])["input_ids"] for r in recs]
    tokens = sum(map(len, rows))
    runs = []
    with torch.inference_mode():
        for b in batches:
            t0 = time.perf_counter()
            top1 = run_batched(model, tok, rows, b)
            warm = time.perf_counter() - t0
            times = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                run_batched(model, tok, rows, b)
                times.append(time.perf_counter() - t0)
            best = min(times)
            log(f"batch {b}: warm-up {warm:.2f}s, timed {', '.join(f'{t:.2f}' for t in times)}s, "
                f"{tokens / best:.0f} tokens/s (best)")
            runs.append({"batch": b, "warmup_s": warm, "times_s": times, "best_s": best,
                         "tokens_per_s": tokens / best, "top1": top1})
    emit({"bench": "forward", "impl": "hf", **versions(), "prompts": len(rows), "tokens": tokens,
          "input_ids": rows, "runs": runs})


if __name__ == "__main__":
    main()
