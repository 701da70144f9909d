# Redraws the attention-knockout figure from the experiment tables of a finished run.
# pip install polars matplotlib; then: python3 examples/knockout_figure.py [OUT_DIR]
import sys
import matplotlib.pyplot as plt
import polars as pl

out = sys.argv[1] if len(sys.argv) > 1 else "out/gemma3-270m"
knockout = pl.read_parquet(f"{out}/experiments/knockout/shard=*/part-*.parquet")
curve = knockout.group_by("layer", "positions").agg(pl.col("pct_change").mean()).sort("layer")
for positions, rows in curve.group_by("positions", maintain_order=True):
    plt.plot(rows["layer"] + 1, rows["pct_change"], marker="o", label=positions[0])
plt.xlabel("centre layer of the knockout window (1-based)")
plt.ylabel("% change of p(target), mean over facts")
plt.legend()
plt.savefig(f"{out}/knockout_redrawn.png", dpi=150)
print(f"wrote {out}/knockout_redrawn.png")
