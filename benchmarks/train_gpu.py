"""Full vs LoRA vs QLoRA on a CUDA GPU: examples/s and peak memory, flan-t5-base-shaped model.

Runs medchat's real training path (`medchat.train.train.train()`) for a fixed number of steps per method,
bf16 where supported, on the same prepared MedQuAD data, and prints one table with ratios.

    python benchmarks/train_gpu.py --data runs/data/medquad --steps 60
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from _shared import BENCH_CACHE, base_shaped_model_dir

from medchat.config import load_config
from medchat.train.train import train


def run_method(method: str, base: Path, data: Path, steps: int, batch: int, work: Path) -> dict:
    cfg = load_config(
        None,
        [
            f"model.name={base}",
            f"train.method={method}",
            f"train.max_steps={steps}",
            f"train.batch_size={batch}",
            "train.eval_strategy=no",
            "train.logging_steps=10",
            "train.learning_rate=1e-4",
            "data.max_target_length=256",
        ],
    )
    run_dir = work / method
    torch.cuda.empty_cache()
    train(cfg, data, run_dir, overwrite=True)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="a `medchat data prepare` folder")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--methods", default="full,lora,qlora")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit(
            "train_gpu.py needs a CUDA GPU (use benchmarks/train_throughput.py on CPU)"
        )

    base = base_shaped_model_dir(args.data)
    work = BENCH_CACHE / "gpu-runs"
    rows = {}
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        s = run_method(method, base, args.data, args.steps, args.batch_size, work)
        rows[method] = s
        print(
            f"{method}: {s['examples_per_s']:.1f} ex/s, peak {s['peak_memory_bytes'] / 2**30:.2f} GiB, "
            f"trainable {s['trainable_params']:,}/{s['total_params']:,} ({time.perf_counter() - t0:.0f} s incl. load)",
            flush=True,
        )

    print(
        f"\nGPU: {torch.cuda.get_device_name(0)}; {args.steps} steps x batch {args.batch_size}, "
        f"max target 256 tokens, precision {next(iter(rows.values()))['precision']}"
    )
    print(
        f"{'method':8} {'ex/s':>8} {'tgt tok/s':>10} {'peak GiB':>9} {'trainable':>12} {'%':>7} {'vs full ex/s':>13} {'vs full mem':>12}"
    )
    full = rows.get("full")
    for m, s in rows.items():
        rel_speed = s["examples_per_s"] / full["examples_per_s"] if full else float("nan")
        rel_mem = s["peak_memory_bytes"] / full["peak_memory_bytes"] if full else float("nan")
        print(
            f"{m:8} {s['examples_per_s']:8.1f} {s['target_tokens_per_s']:10.0f} {s['peak_memory_bytes'] / 2**30:9.2f} "
            f"{s['trainable_params']:12,} {s['trainable_pct']:7.3f} {rel_speed:13.2f} {rel_mem:12.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
