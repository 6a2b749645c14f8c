"""Safety screen latency: p50/p95 per question, embedding included, and batch throughput.

    python benchmarks/safety_latency.py --threads 2

Every question of the shipped sets (original + the seven held-out sets, about 2,630) is
screened one at a time with `medchat.ground.safety.check` (rules + MiniLM + the networks), on `--threads`
CPU threads, after a warm-up; then all of them again in `check_many` batches of 64 (what
`medchat safety check --file` does). The rules alone are timed beside it. Target (issue 12):
p95 <= 20 ms per question on 2 cores. Results go to stdout and
benchmarks/results/safety_latency_<label>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from medchat.ground import safety
from medchat.ground.safety import sets
from medchat.ground.safety.rules import rule_check
from medchat.ground.safety.screen import load_screen


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--label", default="cpu_2threads", help="results file suffix")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    texts = [
        r["text"]
        for name in sets.SHIPPED_SETS
        if name != "corpus"
        for r in sets.load_set(name=name)
    ]
    load_at_start = os.getloadavg()
    screen, why = load_screen()
    if screen is None:
        sys.exit(f"the learned screen is unavailable: {why}")
    for t in texts[:20]:  # warm-up: first calls pay for lazy setup
        safety.check(t)

    single = []
    for t in texts:
        start = time.perf_counter()
        safety.check(t)
        single.append((time.perf_counter() - start) * 1000)

    rules = []
    for t in texts:
        start = time.perf_counter()
        rule_check(t)
        rules.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    for i in range(0, len(texts), 64):
        safety.check_many(texts[i : i + 64])
    batch_s = time.perf_counter() - start

    words = [len(t.split()) for t in texts]
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores_visible": len(os.sched_getaffinity(0)),
            "load_avg_at_start": load_at_start,
        },
        "threads": args.threads,
        "questions": len(texts),
        "words_median": statistics.median(words),
        "words_max": max(words),
        "check_ms": {
            "p50": round(pct(single, 50), 2),
            "p95": round(pct(single, 95), 2),
            "max": round(max(single), 2),
        },
        "rules_only_ms": {"p50": round(pct(rules, 50), 3), "p95": round(pct(rules, 95), 3)},
        "batch64_questions_per_s": round(len(texts) / batch_s, 1),
        "target_p95_ms": 20,
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / f"safety_latency_{args.label}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
