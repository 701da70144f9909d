#!/usr/bin/env python3
"""Reference for `cargo xtask bench knockout`: the attention-knockout sweep written the way the
paper's notebook does it — one prompt, one variant per forward pass, the intervention applied by a
hook inside attention — on Hugging Face transformers (PyTorch CPU), same GGUF and prompts as
`dissect bench knockout`.

usage: python3 bench/hf_knockout.py --gguf PATH --prompts data/known_1000.json
           [--limit 20] [--window 9] [--threads 2] [--all-logits]

Per prompt: one clean forward (the target is its top-1 token, p_base its probability), then for
every layer l and every set (subject, non_subject, last) one forward in which, at the layers
[max(0, l - w//2), min(L, l + w - w//2)), the scores from the last position to the set's
positions get torch.finfo(float32).min added before the softmax (the other keys renormalise),
and pct_change = 100 * (p_new - p_base) / p_base.

The hook is a custom attention function registered with transformers' AttentionInterface (the
eager computation plus the blocking), with the eager mask registered for it in
AttentionMaskInterface. By default only the last position's logits are computed
(`logits_to_keep=1`), which is cheaper than the notebook (it unembeds every position); pass
--all-logits for the notebook's behaviour. Logs to stderr, one JSON object to stdout.
"""
import argparse
import time

from _common import emit, load_model, load_prompts, log, torch, versions
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask
from transformers.models.gemma3.modeling_gemma3 import repeat_kv

# What the current forward pass blocks: layer indices, and the key positions whose edges from the
# last query position are cut. None: a clean run.
BLOCK = {"layers": None, "keys": None}


def knockout_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                       softcap=None, **kwargs):
    """transformers' eager attention (modeling_gemma3.eager_attention_forward) with the
    knockout: finfo.min added to the blocked scores of the last query row, before the softmax."""
    if scaling is None:
        scaling = module.head_dim ** -0.5
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    w = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if softcap is not None:
        w = torch.tanh(w / softcap) * softcap
    if attention_mask is not None:
        w = w + attention_mask
    if BLOCK["layers"] is not None and module.layer_idx in BLOCK["layers"]:
        w[:, :, -1, BLOCK["keys"]] += torch.finfo(w.dtype).min
    w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(w, value_states).transpose(1, 2).contiguous()
    return out, w


def token_span(offsets, start, end):
    """Tokens whose (non-empty) character range overlaps [start, end): the rule of
    dissect_data::span::token_span (Python offsets are characters, Rust's bytes;
    both index the same text)."""
    hit = [i for i, (s, e) in enumerate(offsets) if s < e and s < end and start < e]
    return (hit[0], hit[-1] + 1) if hit else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--window", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--all-logits", action="store_true")
    a = ap.parse_args()

    AttentionInterface.register("knockout_eager", knockout_attention)
    AttentionMaskInterface.register("knockout_eager", eager_mask)
    tok, model = load_model(a.gguf, a.threads)
    model.set_attn_implementation("knockout_eager")
    n_layers = model.config.num_hidden_layers
    keep = 0 if a.all_logits else 1

    inputs, skipped = [], []
    for r in load_prompts(a.prompts, a.limit):
        subj = r.get("subject")
        why = None
        if subj is None:
            why = "no subject field"
        elif r["prompt"].find(subj) < 0:
            why = "subject not in prompt"
        else:
            enc = tok(r["prompt"], return_offsets_mapping=True)
            start = r["prompt"].find(subj)
            span = token_span(enc["offset_mapping"], start, start + len(subj))
            if span is None:
                why = "subject covers no token"
            elif span[1] >= len(enc["input_ids"]):
                why = "subject ends at the last token"
        if why:
            log(f"skipping record {r['known_id']}: {why}")
            skipped.append({"known_id": r["known_id"], "reason": why})
        else:
            inputs.append((r, enc["input_ids"], span))

    def probs(ids):
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits[0, -1]
        return torch.softmax(logits, dim=-1)

    def sweep(ids, span):
        s = len(ids)
        last = s - 1
        t = torch.tensor([ids])
        BLOCK["layers"] = None
        base = probs(t)
        target = int(base.argmax())
        p_base = float(base[target])
        sets = {"subject": list(range(*span)),
                "non_subject": [p for p in range(last) if not span[0] <= p < span[1]],
                "last": [last]}
        rows = []
        half = a.window // 2
        for layer in range(n_layers):
            for name, keys in sets.items():
                if not keys:
                    continue
                BLOCK["layers"] = set(range(max(0, layer - half), min(n_layers, layer + a.window - half)))
                BLOCK["keys"] = keys
                p_new = float(probs(t)[target])
                rows.append({"layer": layer, "block": name, "p_new": p_new,
                             "pct_change": 100.0 * (p_new - p_base) / p_base})
        BLOCK["layers"] = None
        return target, p_base, rows

    results = []
    with torch.inference_mode():
        # Warm-up: a clean and a blocked forward (PyTorch has nothing to compile; this pages the
        # weights in and sizes the allocator, like the Rust side's warm-up sweep).
        _, ids0, span0 = inputs[0]
        t0 = time.perf_counter()
        BLOCK.update(layers={0}, keys=list(range(*span0)))
        probs(torch.tensor([ids0]))
        BLOCK["layers"] = None
        probs(torch.tensor([ids0]))
        warm = time.perf_counter() - t0
        t_all = time.perf_counter()
        for r, ids, span in inputs:
            t = time.perf_counter()
            target, p_base, rows = sweep(ids, span)
            s = time.perf_counter() - t
            log(f"record {r['known_id']}: {len(ids)} tokens, {len(rows) + 1} forwards in {s:.2f}s")
            results.append({"known_id": r["known_id"], "prompt": r["prompt"], "subject": r["subject"],
                            "input_ids": ids, "subject_tokens": list(span), "target_id": target,
                            "p_base": p_base, "seconds": s, "rows": rows})
        total = time.perf_counter() - t_all
    log(f"knockout: {len(results)} prompts in {total:.2f}s")
    emit({"bench": "knockout", "impl": "hf", **versions(), "window": a.window, "layers": n_layers,
          "logits": "all" if a.all_logits else "last", "warmup_s": warm, "times_s": [total],
          "best_s": total, "skipped": skipped, "prompts": results})


if __name__ == "__main__":
    main()
