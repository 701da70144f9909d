#!/usr/bin/env python3
"""A random-weight GPT-2 with GPT-2 XL's shape (the paper's model), made by Hugging Face
transformers, for measuring the pipeline at the paper's scale on any machine.

Writes to OUT (default ~/.cache/dissect/models/gpt2-xl-shaped):
  config.json, model.safetensors   GPT2LMHeadModel(n_layer 48, n_embd 1600, n_head 25, n_inner
                                   6400, n_positions 1024, vocab 50257), HF's own initialisation
                                   under torch.manual_seed(SEED), float32, tied embeddings
                                   (6.2 GB)
  tokenizer.json                   GPT-2's byte-level BPE (50,257 tokens), converted from the
                                   `gpt2.tiktoken` ranks that the openai-whisper source
                                   distribution on PyPI ships (no Hugging Face hub needed)
  facts.json                       NFACTS records of data/known_1000.json in its format, each
                                   attribute replaced by the model's own greedy next token (a
                                   random model knows no facts, so the filter would keep none);
                                   records whose greedy token is not a word after a space are
                                   passed over
  reference.json                   Hugging Face's top-5 next tokens and probabilities for three
                                   of those prompts, for parity at 48 layers' depth

Run (CPU; about 5 minutes and 14 GB of memory; needs
`pip install torch transformers safetensors tiktoken`, and pip's access to PyPI for the
tokenizer's source):

    python3 bench/make_gpt2_xl_shaped.py [--out DIR] [--facts 24]

Versions used: torch 2.15.0, transformers 5.25.0, tiktoken 0.14.0.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
# GPT-2's pre-tokenizer pattern (tiktoken's "gpt2" encoding).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_tiktoken(work: Path) -> Path:
    """GPT-2's BPE ranks from the openai-whisper sdist on PyPI."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "openai-whisper==20250625", "--no-deps", "--no-binary", ":all:", "-d", str(work)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (sdist,) = work.glob("openai_whisper-*.tar.gz")
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken"))
        member.name = "gpt2.tiktoken"
        tar.extract(member, work, filter="data")
    return work / "gpt2.tiktoken"


def tokenizer_json(ranks_file: Path, out: Path):
    from transformers.convert_slow_tokenizer import TikTokenConverter

    n = sum(1 for _ in ranks_file.open())
    assert n == 50256, f"{ranks_file}: {n} ranks, expected 50256"
    tok = TikTokenConverter(vocab_file=str(ranks_file), pattern=GPT2_PATTERN, extra_special_tokens=["<|endoftext|>"]).converted()
    # GPT-2 adds no BOS.
    tok.post_processor = None
    tok.save(str(out))
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(out))
    # GPT-2's own ids for these strings (tiktoken's gpt2 encoding).
    assert t.encode("Hello world").ids == [15496, 995], t.encode("Hello world").ids
    assert t.get_vocab_size() == 50257, t.get_vocab_size()
    # Every rank maps back to its bytes.
    first = base64.b64decode(ranks_file.open().readline().split()[0])
    assert t.decode([0]).encode() == first
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache/dissect/models/gpt2-xl-shaped")
    ap.add_argument("--facts", type=int, default=24)
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as work:
        tok = tokenizer_json(gpt2_tiktoken(Path(work)), out / "tokenizer.json")
    print("tokenizer: 50257 tokens, GPT-2's ids", file=sys.stderr)

    config = GPT2Config(
        vocab_size=50257,
        n_positions=1024,
        n_embd=1600,
        n_layer=48,
        n_head=25,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=50256,
        eos_token_id=50256,
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters in {out}", file=sys.stderr)

    facts = json.loads((ROOT / "data/known_1000.json").read_text())
    kept, reference = [], []
    with torch.no_grad():
        for fact in facts:
            ids = tok.encode(fact["prompt"]).ids
            logits = model(torch.tensor([ids])).logits[0, -1]
            top = int(torch.argmax(logits))
            text = tok.decode([top])
            word = text.strip()
            # The filter compares the first token of " " + attribute with the prediction.
            if not (text.startswith(" ") and word and tok.encode(" " + word).ids[0] == top):
                continue
            kept.append({**fact, "attribute": word, "prediction": text})
            if len(reference) < 3:
                probs = torch.softmax(logits.double(), -1)
                p, i = torch.topk(probs, 5)
                reference.append({"prompt": fact["prompt"], "input_ids": ids, "top_ids": i.tolist(), "top_probs": p.tolist()})
            if len(kept) == args.facts:
                break
    assert len(kept) == args.facts, f"only {len(kept)} facts usable"
    (out / "facts.json").write_text(json.dumps(kept, indent=1))
    (out / "reference.json").write_text(json.dumps(reference, indent=1))
    print(f"facts: {len(kept)} records with the model's own next token as attribute", file=sys.stderr)


if __name__ == "__main__":
    main()
