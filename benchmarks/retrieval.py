"""Retrieval benchmark: index build time, query latency, and recall of dense, BM25 and hybrid.

    python benchmarks/retrieval.py --data .dev/data/medquad            # full run
    python benchmarks/retrieval.py --data .dev/data/medquad --docs 400 # quick, on 400 documents

1. Build time on `--threads` CPU threads (default 2, the dev machine), on a sample of training
   rows, measured side by side: the baseline (question + focus + whole answer, one MiniLM vector
   per row, fp32, 256 word pieces) against ours (chunked: MiniLM on each row's first chunk at 128
   word pieces, fp32 and int8, plus BM25 over every chunk). Figures for the whole train split are
   extrapolated from the sample's rate, and labelled so.
2. Recall@1/@5 and MRR@10 of the test questions against an index over ALL splits (the test
   documents must be in it to be found; the train-only index that answers eval questions never
   holds them), for dense, BM25 and hybrid, in two protocols: `known-item` (the test row itself is
   indexed) and `leave-row-out` (its own row hidden: the document must be found via its other rows).
3. Query latency p50/p95 of single queries on `--threads` threads.

Results go to stdout and benchmarks/results/retrieval_<label>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import torch
from _shared import read_rows

from medchat.ground import index as I
from medchat.ground import retrieval as R

RESULTS = Path(__file__).resolve().parent / "results"
TRAIN_ROWS_FULL = None  # filled from the data: rows in the train split, for extrapolation
CORES = sorted(os.sched_getaffinity(0))


def pin_cpu(threads: int | None) -> None:
    """Run on `threads` cores (affinity and torch threads); None restores every core."""
    use = CORES[:threads] if threads else CORES
    os.sched_setaffinity(0, set(use))
    torch.set_num_threads(len(use))


# name -> (kind, int8, max_seq_length); "baseline" embeds question + focus + whole answer.
VARIANTS = {
    "baseline: whole answer, fp32, 256 pieces": ("baseline", False, 256),
    "ours: first chunk, fp32, 128 pieces": ("ours", False, 128),
    "ours: first chunk, int8, 128 pieces": ("ours", True, 128),
    "ours: first chunk, int8, 64 pieces": ("ours", True, 64),
}


def whole_answer_texts(rows: list[dict]) -> list[str]:
    return [f"{r['question']} {r['focus']}. {r['answer']}" for r in R.kb_rows(rows)]


def time_builds(sample: list[dict], threads: int, repeats: int) -> dict:
    """Seconds to index `sample` on `threads` CPU threads, each variant, interleaved rounds.

    Ours includes chunking and the BM25 index; the baseline is its embedding alone."""
    pin_cpu(threads)
    encoders = {name: R.load_encoder(msl, q, "cpu") for name, (_, q, msl) in VARIANTS.items()}
    whole = whole_answer_texts(sample)
    for enc in encoders.values():
        R.embed(enc, whole[:8])  # warm up the kernels once
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):  # interleaved, so a neighbour's load hits every variant alike
        for name, (kind, quant, msl) in VARIANTS.items():
            start = time.perf_counter()
            if kind == "baseline":
                R.embed(encoders[name], whole, batch_size=32)
            else:
                settings = R.IndexSettings(max_seq_length=msl, quantize=quant)
                I.build_index(sample, None, settings, progress=False, encoder=encoders[name])
            seconds[name].append(time.perf_counter() - start)
    out = {}
    base = min(seconds[next(iter(VARIANTS))])
    for name, values in seconds.items():
        best = min(values)
        out[name] = {
            "seconds": [round(v, 2) for v in values],
            "rows_per_s": round(len(sample) / best, 1),
            "extrapolated_train_minutes": round(TRAIN_ROWS_FULL / (len(sample) / best) / 60, 2),
            "speedup_vs_baseline": round(base / best, 2),
        }
    pin_cpu(None)
    return out


def with_dense(
    index: R.RetrievalIndex, texts: list[str], quant: bool, msl: int
) -> R.RetrievalIndex:
    """The same chunks and BM25 with the dense part from another encoder set-up."""
    encoder = R.load_encoder(msl, quant)
    dense = R.embed(encoder, texts, 128, progress=True)
    if len(texts) == len(index.rows):  # the baseline: one whole-answer vector per row
        ids = np.array([i for i, c in enumerate(index.chunks) if c["chunk"] == 0], dtype=np.int64)
    else:
        ids = index.dense_ids
    settings = {**index.manifest["settings"], "quantize": quant, "max_seq_length": msl}
    manifest = {**index.manifest, "settings": settings}
    return R.RetrievalIndex(
        None, manifest, index.rows, index.chunks, dense, ids, index.bm25, encoder
    )


def eval_variants(all_rows: list[dict], test: list[dict], report: dict, save) -> R.RetrievalIndex:
    """Recall of each retriever and variant over an index of all splits (written as it goes)."""
    pin_cpu(None)
    recall = report.setdefault("recall", {})
    t0 = time.perf_counter()
    ours = I.build_index(all_rows, None, R.IndexSettings(), progress=True)
    report["eval_index"] = {
        **ours.manifest["counts"],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print("eval index (ours, int8, 128):", report["eval_index"], flush=True)
    head = [R.search_text(ours.chunks[i], ours.rows[ours.chunks[i]["row"]]) for i in ours.dense_ids]
    variants = [("ours int8-128", ours, R.METHODS)]
    for kind, quant, msl in VARIANTS.values():
        if (quant, msl) == (True, 128):
            continue
        texts = whole_answer_texts(ours.rows) if kind == "baseline" else head
        label = (
            "baseline whole-answer"
            if kind == "baseline"
            else f"ours {'int8' if quant else 'fp32'}-{msl}"
        )
        variants.append((label, (texts, quant, msl), ("dense", "hybrid")))
    for label, index, methods in variants:
        if isinstance(index, tuple):
            index = with_dense(ours, *index)
        for protocol, leave_out in (("known-item", False), ("leave-row-out", True)):
            for method in methods:
                r = I.retrieval_recall(index, test, method=method, exclude_own_row=leave_out)
                recall[f"{label} | {protocol} | {method}"] = r
                print(label, protocol, method, r, flush=True)
        save()
    return ours


def latency(index: R.RetrievalIndex, questions: list[str], threads: int) -> dict:
    """p50/p95 milliseconds of one query at a time (query embedding included)."""
    pin_cpu(threads)
    index._encoder = R.load_encoder(128, True)  # the CPU int8 encoder a deployment uses
    out = {}
    for method in R.METHODS:
        index.search(questions[0], 5, method)  # warm-up
        ms = []
        for q in questions:
            start = time.perf_counter()
            index.search(q, 5, method)
            ms.append(1000 * (time.perf_counter() - start))
        qs = statistics.quantiles(ms, n=20)
        out[method] = {"p50_ms": round(statistics.median(ms), 1), "p95_ms": round(qs[18], 1)}
    pin_cpu(None)
    return out


def main() -> None:
    global TRAIN_ROWS_FULL
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=".dev/data/medquad", help="prepared MedQuAD folder")
    p.add_argument("--sample", type=int, default=600, help="train rows for the build timing")
    p.add_argument("--repeats", type=int, default=2, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for timing and latency")
    p.add_argument("--docs", type=int, default=None, help="evaluate on this many documents only")
    p.add_argument("--queries", type=int, default=200, help="queries for the latency figures")
    p.add_argument(
        "--timing-only", action="store_true", help="build timing alone (no recall, no latency)"
    )
    p.add_argument("--label", default="cpu", help="results file suffix")
    p.add_argument("--out-dir", default=str(RESULTS), help="folder for the results JSON")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    rng = random.Random(0)
    splits = {s: read_rows(Path(args.data), s) for s in ("train", "validation", "test")}
    TRAIN_ROWS_FULL = len(splits["train"])
    all_rows = [r for rows in splits.values() for r in rows]
    if args.docs:  # a quick run: whole documents, so recall stays meaningful
        docs = sorted({r["doc_id"] for r in all_rows})
        keep = set(rng.sample(docs, min(args.docs, len(docs))))
        all_rows = [r for r in all_rows if r["doc_id"] in keep]
    test_ids = {r["id"] for r in splits["test"]}
    test = [r for r in all_rows if r["id"] in test_ids]
    sample = rng.sample(splits["train"], min(args.sample, len(splits["train"])))
    report: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores_visible": len(os.sched_getaffinity(0)),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_avg_at_start": os.getloadavg(),
        },
        "args": vars(args),
        "rows": {
            "eval_index": len(all_rows),
            "test_questions": len(test),
            "timing_sample": len(sample),
        },
    }
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    out = Path(args.out_dir) / f"retrieval_{args.label}.json"

    def save() -> None:  # after every stage, so a run cut short still leaves its figures
        out.write_text(json.dumps(report, indent=1) + "\n")

    print(json.dumps(report, indent=1), flush=True)
    report["build_timing"] = time_builds(sample, args.threads, args.repeats)
    print(json.dumps(report["build_timing"], indent=1), flush=True)
    save()
    if args.timing_only:
        print_summary(report)
        return
    index = eval_variants(all_rows, test, report, save)
    questions = [r["question"] for r in rng.sample(test, min(args.queries, len(test)))]
    report["latency"] = latency(index, questions, args.threads)
    report["load_avg_at_end"] = os.getloadavg()
    save()
    print_summary(report)
    print(f"wrote {out}")


def print_summary(report: dict) -> None:
    print(
        "\n== build time on",
        report["args"]["threads"],
        "threads,",
        report["rows"]["timing_sample"],
        "train rows",
    )
    for name, t in report["build_timing"].items():
        print(
            f"  {name:58s} {t['rows_per_s']:7.1f} rows/s  x{t['speedup_vs_baseline']:<5} "
            f"train split ~{t['extrapolated_train_minutes']:.1f} min (extrapolated)"
        )
    if "recall" not in report:
        return
    print(
        "\n== recall of", report["rows"]["test_questions"], "test questions, index over all splits"
    )
    print(f"  {'variant | protocol | method':52s} {'R@1':>6} {'R@5':>6} {'MRR':>6} {'n':>5}")
    for name, r in report["recall"].items():
        print(f"  {name:52s} {r['recall@1']:6.3f} {r['recall@5']:6.3f} {r['mrr']:6.3f} {r['n']:5d}")
    print("\n== query latency (ms), one query at a time,", report["args"]["threads"], "threads")
    for method, q in report["latency"].items():
        print(f"  {method:8s} p50 {q['p50_ms']:6.1f}  p95 {q['p95_ms']:6.1f}")


if __name__ == "__main__":
    main()
