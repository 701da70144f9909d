#!/usr/bin/env bash
# CUDA check on a GPU machine, run in one go: the CUDA tests, benchmarks and a timing on CUDA.
# That machine has no network and no cargo: it runs a binary built here, on the real Gemma GGUF.
#
# Here (no GPU needed), in the repo root:
#   export CARGO_TARGET_DIR=$HOME/.cache/dissect/target
#   CUDARC_CUDA_VERSION=13000 cargo build --release -p dissect-cli --features cuda
#     (13000: CUDA 13.0, the H100/H200 driver 580's version; with no nvcc here cudarc would
#      otherwise bind CUDA 13.4. Cold: 26.6 min wall / 14 min CPU on the 2 shared cores.)
#   mkdir -p .gpu && { grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >> .git/info/exclude; }
#   strip -o .gpu/dissect $CARGO_TARGET_DIR/release/dissect && xz -9 .gpu/dissect   # 63 -> 50 -> 9 MB
#   split -b 50M ~/.cache/dissect/models/gemma-3-270m-q4_k_m.gguf .gpu/gguf.
#     (253 MB, over the 64 MiB a call carries with the ~12 MB tree: pieces .gpu/gguf.aa .. .ae)
# On the device: one `run` per piece, back to back (a machine stays warm only 30 s after a call;
# files outside the checkout survive while it is warm; .gpu/ must be ignored or all of it travels):
#   run(carry=[".gpu/gguf.aa"], command="mkdir -p ~/m && cp .gpu/gguf.* ~/m/", timeout_s=60)
#   ... the same for .gpu/gguf.ab, .ac, .ad; then, with the last piece and the binary:
#   run(carry=[".gpu/gguf.ae", ".gpu/dissect.xz"], command="mkdir -p ~/m && cp .gpu/gguf.* ~/m/ && bash scripts/gpu-check.sh", timeout_s=480)
# Results (summary.txt, JSON, logs) come back from $OUT. Not covered: the GPT-2 XL-shaped
# random-weights model (make it there with python3 + transformers, GPT2Config(n_layer=48,
# n_embd=1600, n_head=25), save_pretrained + a tokenizer.json) and `bench`, which is CPU-only.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
S=$OUT/summary.txt
BIN=/tmp/dissect
MODEL=$HOME/m/gemma-3-270m-q4_k_m.gguf
PROMPT="The Eiffel Tower is located in the city of"
log() { echo "== $*" >> "$S"; }
# timed NAME CMD...: runs CMD, logs its exit status and wall time (no /usr/bin/time needed).
timed() {
    local name=$1 s rc; shift; s=$(date +%s.%N)
    "$@"; rc=$?
    log "$name: rc=$rc, $(awk -v s="$s" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
}

# ---- environment: driver, NVRTC and the CUDA headers cubecl-cuda compiles kernels with ----
nvidia-smi -L >> "$S" 2>&1
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
for d in $(find /usr/local/cuda*/ /opt -name 'libnvrtc.so*' -printf '%h\n' 2>/dev/null | sort -u); do
    LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
log "CUDA_PATH=$CUDA_PATH LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
[ -f "$MODEL" ] || { cat "$HOME"/m/gguf.* > "$MODEL" && rm "$HOME"/m/gguf.*; }
echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $MODEL" | sha256sum -c - >> "$S" 2>&1 || { cat "$S"; exit 1; }
python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open('.gpu/dissect.xz'), open(sys.argv[1],'wb'))" "$BIN" && chmod +x "$BIN"

# ---- 1. predict and 2. knockout on one prompt, CPU vs CUDA (TF32 is on: expect ~1e-3) ----
# The first CUDA call also compiles (NVRTC) and autotunes its kernels: its time includes that.
for be in cpu cuda; do
    timed "predict $be" timeout 180 "$BIN" predict --backend $be --model "$MODEL" --prompt "$PROMPT" --top-k 5 --json > "$OUT/predict_$be.json" 2> "$OUT/predict_$be.err"
    timed "knockout $be" timeout 180 "$BIN" knockout --backend $be --model "$MODEL" --prompt "$PROMPT" --subject "The Eiffel Tower" --json > "$OUT/knockout_$be.json" 2> "$OUT/knockout_$be.err"
done
python3 - "$OUT" >> "$S" 2>&1 <<'EOF'
import json, sys
o = sys.argv[1]
def nums(x):
    if isinstance(x, bool): return []
    if isinstance(x, (int, float)): return [float(x)]
    if isinstance(x, dict): return [v for k in sorted(x) for v in nums(x[k])]
    if isinstance(x, list): return [v for e in x for v in nums(e)]
    return []
for what in ("predict", "knockout"):
    try:
        a, b = (nums(json.load(open(f"{o}/{what}_{be}.json"))) for be in ("cpu", "cuda"))
        print(f"{what} (probs; knockout: % changes): {len(a)} numbers, max |cpu - cuda| = {max(abs(x - y) for x, y in zip(a, b)):.3e}" if len(a) == len(b) else f"{what}: shapes differ")
    except Exception as e:
        print(f"{what}: no comparison ({e})")
EOF

# ---- 3. filter (60 facts, ~30 kept) and the knockout experiment on 20 of them, on CUDA ----
timed "filter cuda --limit 60" timeout 240 "$BIN" filter --backend cuda --model "$MODEL" --dataset data/known_1000.json --limit 60 --out /tmp/f > "$OUT/filter.log" 2>&1
timed "experiments knockout cuda --limit 20" timeout 300 "$BIN" experiments knockout --backend cuda --model "$MODEL" --input /tmp/f/filtered.parquet --out /tmp/e --limit 20 > "$OUT/experiment.log" 2>&1
tail -n 3 "$OUT"/*.err "$OUT"/*.log
cat "$S"
