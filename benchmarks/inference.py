"""CPU inference speed of the serving backends, side by side, on a flan-t5-base-shaped model.

Same prompt, exactly 64 new tokens (min = max = 64), greedy, for every backend: latency p50/p95 at
batch 1 and tokens/s at batch 16, with ratios against transformers fp32 (the `torch` backend).
`auto` is `--backend auto` choosing afresh on this machine (its own timing of torch-int8 against a
ct2 int8 export), then timed like the others: the row says which it chose.
Random weights stand in for google/flan-t5-base (cost does not depend on weight values).

With --agreement-run RUN (a tiny run dir, e.g. from `medchat train --config configs/tiny-full.yaml`)
it also measures how often each backend's greedy answers equal the fp32 reference's.

    python benchmarks/inference.py --data .dev/data/medquad --threads 2

Other people's processes share the CPU: the load average is printed before and after each
backend; rerun when it is high.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _shared import BENCH_CACHE, base_shaped_model_dir, read_rows

from medchat.infer.backends import CHOICES_ENV, load_backend
from medchat.infer.export import export_ct2
from medchat.infer.generate import GenerationSettings
from medchat.prompts import format_prompt

QUESTION = (
    "What are the symptoms of type 2 diabetes, how is it diagnosed, and which treatments "
    "and lifestyle changes help most adults keep their blood sugar under control?"
)
NEW_TOKENS = 64


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def time_backend(
    backend, prompt: str, batch_prompts: list[str], runs: int, batch_runs: int
) -> dict:
    """Batch-1 latencies and batch-16 throughput, exactly NEW_TOKENS new tokens each."""
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, batch_size=len(batch_prompts))
    backend.generate([prompt], settings, min_new_tokens=NEW_TOKENS)  # warm-up
    latencies, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        gen = backend.generate([prompt], settings, min_new_tokens=NEW_TOKENS)[0]
        latencies.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        assert gen.tokens == NEW_TOKENS, f"{backend.kind}: {gen.tokens} tokens, not {NEW_TOKENS}"
    rates = []
    for _ in range(batch_runs):
        start = time.perf_counter()
        gens = backend.generate(batch_prompts, settings, min_new_tokens=NEW_TOKENS)
        rates.append(sum(g.tokens for g in gens) / (time.perf_counter() - start))
    return {
        "prompt_tokens": gen.prompt_tokens,
        "batch1_p50_s": round(statistics.median(latencies), 4),
        "batch1_p95_s": round(percentile(latencies, 95), 4),
        "batch1_min_s": round(min(latencies), 4),
        # CPU seconds of this process per answer: on a shared machine, wall time includes waiting
        # for a core; CPU time does not (at 1 thread it is the work itself).
        "batch1_cpu_s": round(statistics.median(cpu), 4),
        f"batch{len(batch_prompts)}_tokens_per_s": round(statistics.median(rates), 1),
    }


def ct2_dir_for(model_dir: Path, quantization: str) -> Path:
    out = BENCH_CACHE / f"{model_dir.name}-ct2-{quantization}"
    if not (out / "model.bin").is_file():
        export_ct2(str(model_dir), out, quantization, overwrite=True)
    return out


def speed(args: argparse.Namespace) -> dict:
    model_dir = base_shaped_model_dir(args.data)
    rows = read_rows(args.data, "test")
    batch_questions = [r["question"] for r in rows[: args.batch]]
    results: dict[str, dict] = {}
    for kind in args.backends:
        spec = str(ct2_dir_for(model_dir, "int8")) if kind == "ct2" else str(model_dir)
        if kind == "auto":  # choose afresh in this run: a choices file of its own
            os.environ[CHOICES_ENV] = str(Path(tempfile.mkdtemp()) / "choices.json")
        backend = load_backend(spec, kind, threads=args.threads)
        prompt = format_prompt(QUESTION, backend.prompt_template)
        batch = [format_prompt(q, backend.prompt_template) for q in batch_questions]
        load_before = os.getloadavg()[0]
        results[kind] = time_backend(backend, prompt, batch, args.runs, args.batch_runs)
        results[kind]["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        if kind == "auto":
            results[kind]["chose"] = backend.kind
            results[kind]["choice"] = backend.choice
        print(kind, json.dumps(results[kind]), flush=True)
        del backend
        gc.collect()
    return results


def agreement(run: str, data: Path, n: int, threads: int) -> dict:
    """Share of greedy answers (and of answer tokens before the first difference) equal to fp32."""
    questions = [r["question"] for r in read_rows(data, "test")[:n]]
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, batch_size=16)
    ref = load_backend(run, "torch", threads=threads)
    prompts = [format_prompt(q, ref.prompt_template) for q in questions]
    expected = [g.text for g in ref.generate(prompts, settings)]
    tok = ref.tokenizer
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ct2_dir = export_ct2(run, Path(tmp) / "ct2", "int8")
        for kind, spec in (("torch-int8", run), ("ct2", str(ct2_dir))):
            got = [
                g.text
                for g in load_backend(spec, kind, threads=threads).generate(prompts, settings)
            ]
            prefix = []
            for a, b in zip(expected, got, strict=True):
                ia, ib = tok(a)["input_ids"], tok(b)["input_ids"]
                same = next(
                    (i for i, (x, y) in enumerate(zip(ia, ib, strict=False)) if x != y),
                    min(len(ia), len(ib)),
                )
                prefix.append(same / max(len(ia), 1))
            out[kind] = {
                "answers_equal": sum(a == b for a, b in zip(expected, got, strict=True)),
                "answers": len(expected),
                "mean_prefix_agreement": round(statistics.mean(prefix), 3),
            }
            print("agreement", kind, json.dumps(out[kind]), flush=True)
    return out


def table(results: dict, batch: int) -> str:
    ref = results.get("torch")
    key = f"batch{batch}_tokens_per_s"
    lines = [
        f"{'backend':<12}{'p50 s':>9}{'p95 s':>9}{'cpu s':>9}{'tok/s b' + str(batch):>12}"
        f"{'speedup b1':>12}{'cpu ratio':>11}{'speedup b' + str(batch):>12}"
    ]
    for kind, r in results.items():
        s1 = ref["batch1_p50_s"] / r["batch1_p50_s"] if ref else float("nan")
        sc = ref["batch1_cpu_s"] / r["batch1_cpu_s"] if ref else float("nan")
        sb = r[key] / ref[key] if ref else float("nan")
        label = f"auto={r['chose']}" if kind == "auto" else kind
        lines.append(
            f"{label:<12}{r['batch1_p50_s']:>9.3f}{r['batch1_p95_s']:>9.3f}{r['batch1_cpu_s']:>9.3f}"
            f"{r[key]:>12.1f}{s1:>11.2f}x{sc:>10.2f}x{sb:>11.2f}x"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", type=Path, default=Path(".dev/data/medquad"), help="prepared data folder"
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every backend")
    p.add_argument("--runs", type=int, default=7, help="batch-1 timed runs per backend")
    p.add_argument("--batch", type=int, default=16, help="batch size for throughput")
    p.add_argument("--batch-runs", type=int, default=2, help="timed batch runs per backend")
    p.add_argument("--backends", default="torch,torch-int8,ct2,auto", type=lambda s: s.split(","))
    p.add_argument("--agreement-run", default=None, help="tiny run dir to measure answer agreement")
    p.add_argument("--agreement-n", type=int, default=64, help="questions for --agreement-run")
    p.add_argument(
        "--agreement-only", action="store_true", help="skip the speed runs (with --agreement-run)"
    )
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args()

    report: dict = {"threads": args.threads, "new_tokens": NEW_TOKENS, "cpu_count": os.cpu_count()}
    if not args.agreement_only:
        report["speed"] = speed(args)
        print(table(report["speed"], args.batch))
    if args.agreement_run:
        report["agreement"] = agreement(
            args.agreement_run, args.data, args.agreement_n, args.threads
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
