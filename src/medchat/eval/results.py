"""An eval folder's results, torch-free: the metric table, how values are shown, and reading
metrics.json + predictions.jsonl back (for the report and compare, which must not import torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medchat.errors import MedchatError
from medchat.fileio import read_json, read_jsonl

# (key in metrics.json, key in compute_metrics' per_example, label). Means over examples, except
# `bleu` (corpus BLEU, bootstrapped from n-gram statistics). The original_* rows use the original
# project's definitions: for comparison with its numbers, not for conclusions.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("rouge1", "rouge1", "ROUGE-1 F1"),
    ("rouge2", "rouge2", "ROUGE-2 F1"),
    ("rougeL", "rougeL", "ROUGE-L F1"),
    ("rougeLsum", "rougeLsum", "ROUGE-Lsum F1"),
    ("bleu", "", "BLEU (corpus, sacrebleu)"),
    # Length sits right under BLEU: the brevity penalty and ROUGE recall both move with it.
    ("answer_words", "answer_words", "Answer length (words)"),
    ("semantic_similarity", "semantic_similarity", "Semantic similarity (MiniLM cos x100)"),
    ("distinct1", "distinct1", "distinct-1"),
    ("distinct2", "distinct2", "distinct-2"),
    ("repeat3_rate", "repeat3", "Repeated 3-gram rate"),
    ("empty_rate", "empty", "Empty-answer rate"),
    ("sentence_bleu", "sentence_bleu", "mean sentence BLEU (sacrebleu)"),
    ("original_rouge1", "rouge1", "original: ROUGE-1"),
    ("original_rouge2", "rouge2", "original: ROUGE-2"),
    ("original_rougeL", "rougeL", "original: ROUGE-L"),
    ("original_bleu", "original_bleu", "original: mean sentence BLEU (nltk)"),
)
# original_rouge* equal rouge* (metrics.py), so pairing them again would only repeat the tests.
COMPARED = tuple(k for k, _, _ in METRICS if not k.startswith("original_rouge"))
HEADLINE = ("rouge1", "rougeL", "bleu", "semantic_similarity")
NOT_READ_ALONE = (
    "No single metric can be read alone: echoing the question scores high on semantic "
    "similarity, templated answers inflate ROUGE (and retrieval of a similar answer scores "
    "well on it), and length moves both ROUGE and BLEU (see the length row)."
)


def decimals(key: str) -> int:
    """Digits shown for a metric: rates and distinct-n on 0-1 get 3, words 1, 0-100 scores 2."""
    if key.endswith("_rate") or key.startswith("distinct"):
        return 3
    return 1 if key == "answer_words" else 2


def fmt_value(key: str, value: float | None, sign: bool = False) -> str:
    """A metric value as the tables show it ("-" when undefined)."""
    if value is None:
        return "-"
    return f"{value:{'+' if sign else ''}.{decimals(key)}f}"


def fmt_ci(key: str, entry: Mapping[str, Any] | None) -> str:
    """`value [low, high]` for a metrics.json entry."""
    if not entry or entry.get("value") is None:
        return "-"
    low, high = fmt_value(key, entry["ci_low"]), fmt_value(key, entry["ci_high"])
    return f"{fmt_value(key, entry['value'])} [{low}, {high}]"


def load_eval(eval_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """metrics.json and predictions.jsonl of an eval folder; MedchatError when missing."""
    eval_dir = Path(eval_dir)
    paths = [eval_dir / "metrics.json", eval_dir / "predictions.jsonl"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise MedchatError(
            f"{eval_dir}: no {', '.join(missing)}; run `medchat eval ... --out {eval_dir}` first"
        )
    return read_json(paths[0]), read_jsonl(paths[1])


def print_tables(result: Mapping[str, Any]) -> None:
    """Metrics per system with 95% intervals, then the paired comparisons, on the console."""
    from rich.table import Table

    from medchat.console import console

    systems = {**result["metrics"], **{f"{k} (floor)": v for k, v in result["floors"].items()}}
    table = Table(
        title=f"{result['data']['split']} split, n={result['data']['n']} (95% bootstrap CI)"
    )
    table.add_column("metric")
    for name in systems:
        table.add_column(name, justify="right")
    labels = {k: label for k, _, label in METRICS}
    for key in labels:
        cells = [systems[s].get(key) for s in systems]
        if all(c is None for c in cells):
            continue
        table.add_row(labels[key], *(fmt_ci(key, c) for c in cells))
    console.print(table)
    for comp in result["comparisons"]:
        line = ", ".join(
            f"{k} {fmt_value(k, v['diff'], sign=True)} "
            f"[{fmt_value(k, v['ci_low'], sign=True)}, {fmt_value(k, v['ci_high'], sign=True)}] "
            f"p={v['p_value']:.2g}"
            for k, v in comp["metrics"].items()
            if k in HEADLINE and v["diff"] is not None
        )
        console.print(f"[bold]{comp['a']} - {comp['b']}[/]: {line}")
    console.print(NOT_READ_ALONE)
    retrieval = result.get("retrieval") or {}
    if retrieval.get("answer_rate") is not None:
        console.print(
            f"answer rate (rag, retrieve, extract): {retrieval['answer_rate']:.1%} of the "
            f"questions had a passage past the relevance gate (min_relevance "
            f"{retrieval['min_relevance']}); the rest were answered without a source"
        )
    for protocol, r in (retrieval.get("recall") or {}).items():
        if isinstance(r, dict) and "recall@1" in r:
            console.print(
                f"gold-document recall ({retrieval['recall']['method']}, {protocol}, n={r['n']}): "
                f"R@1 {r['recall@1']:.3f}, R@5 {r['recall@5']:.3f}, MRR@10 {r['mrr']:.3f}"
            )
