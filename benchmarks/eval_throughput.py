"""Evaluation throughput on CPU: medchat's eval path vs the original project's loop, side by side.

A flan-t5-base-shaped model (random weights: cost does not depend on their values) answers N test
questions with exactly 64 new tokens each (min_new_tokens = max_new_tokens = 64, so an early EOS
from random weights cannot flatter either side):

- original: one question at a time, fp32, `model.generate(input_ids, max_new_tokens=64,
  min_new_tokens=64)`, as the original evaluation loop did;
- medchat: `generate_answers` (batched, sorted by length, KV cache), fp32, the same outputs up to
  padding rounding (agreement is printed);
- medchat int8 (--int8): the same path on a dynamically int8-quantised copy (nn.Linear weights);
  numerics change, so its agreement with the fp32 answers is printed too.

    python benchmarks/eval_throughput.py --data .dev/data/medquad --threads 1 --loop-threads 1,2 \
        --loop-n 16 --int8 --agreement-run RUN

--loop-threads times the loop once per thread count: the same count as medchat's path isolates
batching; torch's default (2 here) is how the original ran. The loop's rate per example does not
depend on how many examples it is timed on, so --loop-n 16 saves minutes.

Other people's processes share the CPU: the load average is printed before and after; rerun when
it is high.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from _shared import base_shaped_model_dir, read_rows

from medchat.eval.evaluate import select_examples
from medchat.infer.backends import quantize_int8
from medchat.infer.generate import GenerationSettings, generate_answers
from medchat.models.modeling import load_model_spec
from medchat.prompts import format_prompt

NEW_TOKENS = 64


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> dict[str, float]:
    """Wall seconds, and CPU seconds of this process (all threads): the CPU figure is what a
    shared machine cannot inflate much, so both are printed."""
    return {
        "seconds": time.perf_counter() - start[0],
        "cpu_seconds": time.process_time() - start[1],
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@torch.inference_mode()
def original_loop(lm, questions: list[str]) -> tuple[float, list[str]]:
    """The original's evaluation: one example at a time, no batching."""
    answers = []
    start = _clock()
    for q in questions:
        input_ids = lm.tokenizer(
            format_prompt(q, lm.prompt_template), return_tensors="pt"
        ).input_ids
        out = lm.model.generate(input_ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
        answers.append(lm.tokenizer.decode(out[0], skip_special_tokens=True).strip())
    return _since(start), answers


def medchat_path(lm, questions: list[str], batch_size: int) -> tuple[float, list[str]]:
    """medchat eval's path: generate_answers, batched and sorted, KV cache on."""
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, batch_size=batch_size)
    start = _clock()
    answers = generate_answers(lm, questions, settings, progress=False)
    return _since(start), answers


def agreement(a: list[str], b: list[str]) -> dict[str, float]:
    """Exact-match rate of two answer lists, and the mean share of leading words they share."""
    exact = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    shares = []
    for x, y in zip(a, b, strict=True):
        wx, wy = x.split(), y.split()
        same = next(
            (i for i, (p, q) in enumerate(zip(wx, wy, strict=False)) if p != q),
            min(len(wx), len(wy)),
        )
        shares.append(same / max(len(wx), len(wy), 1))
    return {"exact_match": exact, "shared_prefix": sum(shares) / len(shares)}


def quantised(lm):
    """A copy of `lm` quantised the way `medchat eval --cpu-int8` does it."""
    import copy
    import dataclasses

    return quantize_int8(dataclasses.replace(lm, model=copy.deepcopy(lm.model)))


def trained_agreement(run: Path, questions: list[str], batch_size: int) -> dict[str, dict]:
    """On a trained run (random weights have near-tied logits, which flatters no one): greedy
    answers of fp32 batched vs the loop, and of int8 batched vs fp32 batched, real EOS."""
    lm = load_model_spec(str(run), device="cpu")
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, batch_size=batch_size)
    fp32 = generate_answers(lm, questions, settings, progress=False)
    loop = []
    with torch.inference_mode():
        for q in questions:
            ids = lm.tokenizer(format_prompt(q, lm.prompt_template), return_tensors="pt").input_ids
            out = lm.model.generate(ids, max_new_tokens=NEW_TOKENS)
            loop.append(lm.tokenizer.decode(out[0], skip_special_tokens=True).strip())
    int8 = generate_answers(quantised(lm), questions, settings, progress=False)
    return {"fp32_batched_vs_loop": agreement(fp32, loop), "int8_vs_fp32": agreement(int8, fp32)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="a `medchat data prepare` folder")
    ap.add_argument("--n", type=int, default=64, help="test questions (default 64)")
    ap.add_argument(
        "--loop-n",
        type=int,
        default=None,
        help="time the original loop on the first K of them only (default all)",
    )
    ap.add_argument("--batch-size", type=int, default=64, help="medchat batch size (default 64)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--loop-threads",
        default=None,
        help="comma-separated torch thread counts to time the loop with (default: --threads)",
    )
    ap.add_argument("--int8", action="store_true", help="also time dynamic int8 quantisation")
    ap.add_argument(
        "--agreement-run",
        type=Path,
        default=None,
        help="a trained run folder: measure fp32/int8 answer agreement on it (real EOS)",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    threads = args.threads or default_threads
    loop_threads = (
        [int(t) for t in args.loop_threads.split(",")] if args.loop_threads else [threads]
    )

    base = base_shaped_model_dir(args.data)
    lm = load_model_spec(str(base), name="flan-t5-base-shaped", device="cpu")
    # Forces exactly NEW_TOKENS on medchat's path too (generate_batch passes max_new_tokens).
    lm.model.generation_config.min_new_tokens = NEW_TOKENS
    rows = select_examples(read_rows(args.data, "test"), args.n, seed=0)
    questions = [r["question"] for r in rows]
    loop_q = questions[: args.loop_n or len(questions)]
    print(f"{len(questions)} questions, {NEW_TOKENS} new tokens each; torch default threads "
          f"{default_threads}; load {load_average()}", flush=True)  # fmt: skip

    torch.set_num_threads(threads)
    medchat_path(lm, questions[:2], 2)  # warm-up (allocator, kernels)
    figures: dict[str, dict] = {}
    t, ours = medchat_path(lm, questions, args.batch_size)
    fp32 = f"medchat fp32 ({threads}t)"
    figures[fp32] = record(f"{fp32}, batch {args.batch_size}", t, len(questions))
    if args.int8:
        qlm = quantised(lm)
        medchat_path(qlm, questions[:2], 2)
        t, q8 = medchat_path(qlm, questions, args.batch_size)
        name = f"medchat int8 ({threads}t)"
        figures[name] = record(f"{name}, batch {args.batch_size}", t, len(questions))
        figures[name]["agreement"] = {"vs": fp32, **agreement(q8, ours)}
    for n_threads in loop_threads:
        torch.set_num_threads(n_threads)
        t, loop = original_loop(lm, loop_q)
        name = f"original loop ({n_threads}t)"
        figures[name] = record(name, t, len(loop_q))
        figures[name]["agreement"] = {"vs": fp32, **agreement(loop, ours[: len(loop)])}
    torch.set_num_threads(threads)
    summarise(figures)
    if args.agreement_run:
        agree = trained_agreement(args.agreement_run, questions, args.batch_size)
        figures["trained_agreement"] = {"run": str(args.agreement_run), **agree}
        for name, a in agree.items():
            print(f"{args.agreement_run.name} ({len(questions)} answers), {name}: exact_match "
                  f"{a['exact_match']:.2f}, shared_prefix {a['shared_prefix']:.2f}")  # fmt: skip
    if args.out:
        meta = {"n": len(questions), "new_tokens": NEW_TOKENS, "batch_size": args.batch_size}
        args.out.write_text(json.dumps({**meta, "figures": figures}, indent=2))


def record(label: str, t: dict[str, float], n: int) -> dict:
    wall, cpu = n / t["seconds"], n / t["cpu_seconds"]
    print(f"{label}: {n} examples, {wall:.3f} ex/s wall, {cpu:.3f} ex per CPU-s; "
          f"load {load_average()}", flush=True)  # fmt: skip
    return {**t, "examples": n, "examples_per_s": wall, "examples_per_cpu_s": cpu}


def summarise(figures: dict[str, dict]) -> None:
    """One table, then every medchat path's speed-up over every loop variant."""
    print(f"\n{'path':24} {'ex/s':>8} {'ex/CPU-s':>9}  agreement")
    for name, f in figures.items():
        a = f.get("agreement")
        note = (
            f"exact {a['exact_match']:.2f}, prefix {a['shared_prefix']:.2f} vs {a['vs']}"
            if a
            else ""
        )
        print(f"{name:24} {f['examples_per_s']:8.3f} {f['examples_per_cpu_s']:9.3f}  {note}")
    loops = [n for n in figures if n.startswith("original")]
    for name in (n for n in figures if n.startswith("medchat")):
        for loop in loops:
            wall = figures[name]["examples_per_s"] / figures[loop]["examples_per_s"]
            cpu = figures[name]["examples_per_cpu_s"] / figures[loop]["examples_per_cpu_s"]
            figures[name][f"x {loop}"] = {"wall": wall, "cpu": cpu}
            print(f"{name} / {loop}: {wall:.1f}x wall, {cpu:.1f}x per CPU-second")


if __name__ == "__main__":
    main()
