"""Shared helpers of the Hugging Face reference benchmarks (bench/hf_*.py).

The model is loaded exactly as crates/dissect-model/tests/fixtures/make_gemma_reference.py does:
the GGUF symlinked into a temp dir, `gguf_file=`, float32, eager attention — the same weights
(dequantized to f32) that dissect runs, so timings and outputs compare like for like.
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Offline, and no tokenizer thread pool competing with torch's threads for the 2 cores.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as e:  # the xtask turns exit code 3 into a hint
    print(f"error: {e}\nhint: pip install torch transformers gguf accelerate", file=sys.stderr)
    sys.exit(3)


def log(msg):
    print(f"[hf] {msg}", file=sys.stderr, flush=True)


def load_prompts(path, limit):
    """Records `{"prompt", "subject"?, "known_id"?}` from a JSON array or a JSONL file (same rules
    as `dissect bench`: plain strings are prompts without a subject)."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    items = json.loads(text) if stripped.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    out = []
    for i, it in enumerate(items):
        rec = {"prompt": it} if isinstance(it, str) else dict(it)
        rec.setdefault("known_id", i)
        out.append(rec)
    return out[:limit] if limit else out


def load_model(gguf_path, threads):
    torch.set_num_threads(threads)
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        sys.exit(f"error: GGUF not found: {gguf_path}\nhint: cargo xtask fetch-model gemma3-270m")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as td:
        name = "model.gguf"
        os.symlink(gguf_path, Path(td) / name)
        tok = AutoTokenizer.from_pretrained(td, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(td, gguf_file=name, dtype=torch.float32,
                                                     attn_implementation="eager")
    model.eval()
    log(f"loaded {gguf_path.name} in {time.perf_counter() - t0:.1f}s "
        f"(torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads)")
    return tok, model


def versions():
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads()}


def emit(doc):
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
