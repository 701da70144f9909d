"""Times the vocabulary projection `h · Eᵀ` (f32, [rows × 640] · [640 × 262144]) with torch.matmul
(MKL on the CPU) and prints GFLOP/s as JSON (both output layouts, and `gflops` the better): the reference for
examples/proj_kernels.rs.

    python3 bench/proj_mkl.py [--threads 2] [--rows 1,8,64,256] [--reps N]

Same shapes, thread count and timing rule as the Rust example (one warm-up call, then the mean of
`reps` calls, output preallocated), so the two can be run back to back and compared as ratios.
"""

import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="1,8,64,256")
    ap.add_argument("--vocab", type=int, default=262144)
    ap.add_argument("--hidden", type=int, default=640)
    ap.add_argument("--reps", type=int, default=0, help="calls timed per shape (0: about 1 s of work, at least 3)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    v, d = args.vocab, args.hidden
    e = torch.randn(v, d, generator=gen, dtype=torch.float32)
    out = {
        "impl": "torch.matmul",
        "torch": torch.__version__,
        "mkl": torch.backends.mkl.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg()[0],
        "vocab": v,
        "hidden": d,
        "results": [],
    }
    for n in [int(r) for r in args.rows.split(",")]:
        h = torch.randn(n, d, generator=gen, dtype=torch.float32)
        c = torch.empty(n, v, dtype=torch.float32)
        ct = torch.empty(v, n, dtype=torch.float32)
        gflop = 2.0 * n * d * v / 1e9
        reps = args.reps or max(3, min(50, int(1.0 / max(gflop / 150.0, 1e-3))))
        row = {"rows": n, "reps": reps}
        # `h @ e.t()` writes the logits [rows × vocab] (the projection API's layout); `e @ h.t()`
        # writes them transposed, MKL's faster layout on this shape.
        for key, f in [("h_et", lambda: torch.matmul(h, e.t(), out=c)), ("e_ht", lambda: torch.matmul(e, h.t(), out=ct))]:
            f()
            t = time.perf_counter()
            for _ in range(reps):
                f()
            s = (time.perf_counter() - t) / reps
            row[f"{key}_gflops"] = gflop / s
        row["gflops"] = max(row["h_et_gflops"], row["e_ht_gflops"])
        out["results"].append(row)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
