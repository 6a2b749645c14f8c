"""The data summary: counts from the manifest, length percentiles and the truncated share."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from medchat.console import console
from medchat.data.split import SPLITS

log = logging.getLogger(__name__)

# The model the project fine-tunes by default; its tokenizer is used when it is cached locally.
DEFAULT_TOKENIZER = "google/flan-t5-base"
PERCENTILES = (50, 90, 99)

LengthFn = Callable[[list[str]], list[int]]


@dataclass
class Lengths:
    """Length percentiles of questions and answers, in tokens of `tokenizer` or in words."""

    tokenizer: str | None
    note: str | None
    question: dict[str, int]
    answer: dict[str, int]
    over_target: float


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def describe(lengths: list[int]) -> dict[str, int]:
    """p50/p90/p99 and max of a list of lengths."""
    ordered = sorted(lengths)
    stats = {f"p{p}": percentile(ordered, p) for p in PERCENTILES}
    stats["max"] = ordered[-1] if ordered else 0
    return stats


def word_lengths(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def length_function(name: str | None) -> tuple[LengthFn, str | None, str | None]:
    """A text-length function, the tokenizer it uses (None: words) and a note on any fallback."""
    name = name or DEFAULT_TOKENIZER
    if name == "words":
        return word_lengths, None, None
    fallback = f"{name} is not available offline, so lengths are whitespace words, not tokens"
    if not _cached(name):
        return word_lengths, None, fallback
    try:
        from transformers import AutoTokenizer

        # Never download here: stats must work offline and must not stall on the network.
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as e:  # incomplete cache, bad folder: both mean "fall back"
        log.info("tokenizer %s unavailable offline: %s", name, e)
        return word_lengths, None, fallback

    def token_lengths(texts: list[str]) -> list[int]:
        # Lengths include the end-of-sequence token, as training sees them.
        return [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]

    return token_lengths, name, None


def _cached(name: str) -> bool:
    """Whether `name` is a local folder or a hub id already in the local cache.

    Checked with huggingface_hub before importing transformers, which alone costs seconds.
    """
    if Path(name).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "tokenizer_config.json"), str)
    except Exception:  # an invalid repo id is simply not cached
        return False


def measure(rows: list[dict[str, Any]], tokenizer: str | None, max_target_length: int) -> Lengths:
    """Question/answer length percentiles and the share of answers over `max_target_length`."""
    lengths_of, used, note = length_function(tokenizer)
    questions = lengths_of([r["question"] for r in rows])
    answers = lengths_of([r["answer"] for r in rows])
    over = sum(n > max_target_length for n in answers) / len(answers) if answers else 0.0
    return Lengths(used, note, describe(questions), describe(answers), over)


def print_summary(
    manifest: dict[str, Any],
    splits: dict[str, list[dict[str, Any]]],
    tokenizer: str | None,
    max_target_length: int,
) -> None:
    """Print the counts table and the lengths table through the shared console."""
    rows = [r for split_rows in splits.values() for r in split_rows]
    lengths = measure(rows, tokenizer, max_target_length)
    unit = "tokens" if lengths.tokenizer else "whitespace words"
    console.print(counts_table(manifest))
    console.print(lengths_table(lengths, unit))
    # These lines carry paths and numbers people copy: never wrapped, never read as markup.
    if lengths.tokenizer:
        console.print(f"tokenizer: {lengths.tokenizer}", soft_wrap=True, markup=False)
    if lengths.note:
        console.print(f"note: {lengths.note}", soft_wrap=True, markup=False)
    console.print(
        f"answers longer than {max_target_length} {unit}: {lengths.over_target:.1%} "
        "(truncated in training at this --max-target-length)",
        soft_wrap=True,
    )
    empty = [name for name, split_rows in splits.items() if not split_rows]
    if manifest.get("options", {}).get("eval_only"):
        console.print("eval-only: every row is in test.jsonl, for `medchat eval` (no training)")
    elif empty:
        console.print(f"[yellow]warning:[/] empty split(s): {', '.join(empty)}", markup=True)


def counts_table(manifest: dict[str, Any]) -> Table:
    """Rows at each step, from the manifest."""
    counts = manifest["counts"]
    source = manifest.get("source", {}).get("path", "?")
    table = Table(title=Text(f"{source} ({manifest['format']})"))
    table.add_column("step")
    table.add_column("rows", justify="right")
    table.add_row("rows in source", f"{counts['rows_in_source']:,}")
    for reason, value in counts.get("skipped_at_load", {}).items():
        for label, n in _flatten(f"skipped at load: {reason}", value):
            table.add_row(label, f"{n:,}")
    table.add_row("read", f"{counts['read']:,}")
    for reason, n in sorted(counts["dropped"].items(), key=lambda kv: -kv[1]):
        table.add_row(f"dropped: {reason}", f"{n:,}")
    table.add_row("merged split answers", f"{counts['merged_split_answers']:,}")
    table.add_row("duplicates removed", f"{counts['duplicates_removed']:,}")
    table.add_row("kept (deduplicated)", f"{counts['deduplicated']:,}")
    total = max(1, counts["deduplicated"])
    for name in SPLITS:
        n = counts["splits"].get(name, 0)
        table.add_row(f"split: {name}", f"{n:,} ({n / total:.1%})")
    return table


def _flatten(label: str, value: int | dict[str, int]) -> list[tuple[str, int]]:
    """A count, or a total followed by a per-subset breakdown."""
    if isinstance(value, int):
        return [(label, value)]
    return [(label, sum(value.values()))] + [(f"  {k}", n) for k, n in value.items()]


def lengths_table(lengths: Lengths, unit: str) -> Table:
    """p50/p90/p99/max of question and answer lengths."""
    table = Table(title=f"lengths in {unit}")
    table.add_column("")
    for col in (*(f"p{p}" for p in PERCENTILES), "max"):
        table.add_column(col, justify="right")
    for name, stats in (("question", lengths.question), ("answer", lengths.answer)):
        table.add_row(name, *(f"{v:,}" for v in stats.values()))
    return table
