"""What generation metrics during training cost: a preset trained with and without them.

Pairs of runs, side by side in one process order (off, on, off, on, ...), the same preset, data
and seed; only `train.generation_eval_examples` (and, for the second variant, semantic similarity)
differs. Reports each run's wall time, the probe's own seconds as the run measured them, and the
medians. The added cost is probe seconds / the same run's training time without them.

    python benchmarks/train_probe_cost.py --data .dev/data/medquad --pairs 3 \
        --out benchmarks/results/train_probe_cost_tiny_2cores.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medchat.config import load_config
from medchat.console import quiet_libraries
from medchat.train.train import train

VARIANTS = {
    "off": ["train.generation_eval_examples=0"],
    "preset": [],  # the preset's own defaults (tiny: 64 examples, no semantic similarity)
    "with semantic": ["train.generation_eval_semantic=true"],
}


def one_run(config: str, data: Path, extra: list[str], out: Path) -> dict:
    cfg = load_config(config, extra)
    run = train(cfg, data, out, overwrite=True)
    s = json.loads((run / "train_summary.json").read_text())
    probe = s.get("generation_eval") or {}
    return {
        "wall_s": s["wall_time_s"],
        "probe_s": probe.get("seconds", 0.0),
        "evaluations": probe.get("evaluations", 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/tiny-full.yaml")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    quiet_libraries()
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for name, extra in VARIANTS.items():
                r = one_run(args.config, args.data, extra, Path(tmp) / f"{name}-{i}")
                runs[name].append(r)
                print(f"pair {i + 1} {name:>13}: {json.dumps(r)}", flush=True)
    off = statistics.median(r["wall_s"] for r in runs["off"])
    summary = {}
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        probe = statistics.median(r["probe_s"] for r in rs)
        summary[name] = {
            "median_wall_s": wall,
            "median_probe_s": probe,
            "probe_share_of_training_without_it": round(probe / off, 4),
            "wall_vs_off": round(wall / off, 4),
        }
        print(f"{name:>13}: wall {wall:.1f} s ({wall / off:.2f}x off), probe {probe:.1f} s "
              f"= {100 * probe / off:.1f}% of training without it")  # fmt: skip
    result = {
        "config": args.config,
        "data": str(args.data),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "runs": runs,
        "summary": summary,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
