"""`medchat data prepare`: load → clean → merge split answers → deduplicate → split → write.

The output folder explains itself: train/validation/test JSONL plus manifest.json with the
source's sha256, the count at every step, the options and seed, and each file's sha256. Same
source, options and seed give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medchat import __version__
from medchat.data.clean import clean_records, deduplicate, merge_split_answers
from medchat.data.load import FORMATS, Loaded, load_source
from medchat.data.split import SPLITS, group_stats, shared_keys, split_records
from medchat.errors import MedchatError
from medchat.fileio import (
    atomic_output_dir,
    read_json,
    read_jsonl,
    sha256_file,
    write_json,
    write_jsonl,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class PrepareOptions:
    """How a source becomes a data folder (every field is recorded in the manifest)."""

    format: str = _opt("auto", "auto | kaggle | medquad | csv | jsonl (hf:org/name is always hf).")
    question_col: str | None = _opt(None, "Question column of a csv/jsonl/hf source.")
    answer_col: str | None = _opt(None, "Answer column of a csv/jsonl/hf source.")
    seed: int = _opt(42, "Seed of the group shuffle that decides the split.")
    val_frac: float = _opt(0.05, "Share of rows for validation (an upper bound: whole groups).")
    test_frac: float = _opt(0.05, "Share of rows for test (an upper bound: whole groups).")
    # 5 characters drops junk like "?" or "help" yet keeps the shortest real questions.
    min_question_chars: int = _opt(5, "Drop rows whose question is shorter than this.")
    min_answer_chars: int = _opt(2, "Drop rows whose answer is shorter than this.")
    eval_only: bool = _opt(
        False, "Every row goes to test (a benchmark evaluated as it is); no train or validation."
    )

    def __post_init__(self) -> None:
        problems = []
        if self.format not in FORMATS:
            problems.append(f"--format: {self.format!r} is not one of {', '.join(FORMATS)}")
        for name in ("val_frac", "test_frac"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')}: must be in [0, 1)")
        if self.val_frac + self.test_frac >= 1 and not self.eval_only:
            problems.append("--val-frac + --test-frac: must leave rows for training (sum < 1)")
        if self.min_question_chars < 0 or self.min_answer_chars < 0:
            problems.append("--min-question-chars/--min-answer-chars: must be >= 0")
        if problems:
            raise MedchatError("invalid data options: " + "; ".join(problems))


def prepare(
    source: str, out: str | Path, options: PrepareOptions | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Turn a Q&A source into a split data folder at `out`; return its manifest."""
    options = options or PrepareOptions()
    out = Path(out)
    _check_out(source, out, overwrite)
    loaded = load_source(source, options.format, options.question_col, options.answer_col)
    cleaned, dropped = clean_records(
        loaded.records, options.min_question_chars, options.min_answer_chars
    )
    merged, folded = merge_split_answers(cleaned)
    unique, duplicates = deduplicate(merged)
    if not unique:
        raise MedchatError(f"{source}: no usable question-answer rows after cleaning")
    if options.eval_only:  # the whole (cleaned, deduplicated) benchmark is the test split
        splits = {"train": [], "validation": [], "test": sorted(unique, key=lambda r: r["id"])}
    else:
        splits = split_records(unique, options.seed, options.val_frac, options.test_frac)
    manifest = _manifest(source, loaded, options, dropped, folded, duplicates, unique, splits)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        manifest["files"] = _write_splits(tmp, splits)
        write_json(tmp / MANIFEST, manifest)
    log.info("wrote %s", out)
    return manifest


def _check_out(source: str, out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an --out that exists, holds the source, or is not ours."""
    if not out.exists():
        return
    if not out.is_dir():
        raise MedchatError(f"{out}: is a file, not a folder; choose another --out")
    if not overwrite:
        raise MedchatError(f"{out}: already exists; pass --overwrite to replace it")
    src = Path(source).resolve()
    if src == out.resolve() or out.resolve() in src.parents:
        raise MedchatError(f"{out}: holds the source {source}; choose another --out")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise MedchatError(
            f"{out}: is not a folder written by `medchat data prepare` (no {MANIFEST}), so "
            "--overwrite will not delete it; choose another --out or remove it yourself"
        )


def _manifest(
    source: str,
    loaded: Loaded,
    options: PrepareOptions,
    dropped: dict[str, int],
    folded: int,
    duplicates: int,
    unique: list[dict[str, Any]],
    splits: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    loader_counts = {**loaded.counts}
    counts = {
        "rows_in_source": loader_counts.pop("rows_in_source", len(loaded.records)),
        "skipped_at_load": loader_counts.pop("skipped_at_load", {}),
        "read": len(loaded.records),
        "dropped": dropped,
        "merged_split_answers": folded,
        "duplicates_removed": duplicates,
        "deduplicated": len(unique),
        "splits": {name: len(rows) for name, rows in splits.items()},
    }
    leaks = shared_keys(splits)
    if any(leaks.values()):  # cannot happen by construction; refuse to write a leaky split
        raise RuntimeError(f"split leaks keys across splits: {leaks}")
    return {
        "medchat_version": __version__,
        "format": loaded.format,
        "source": {"path": source, "sha256": loaded.source_sha256},
        "seed": options.seed,
        "options": asdict(options),
        "loader": loader_counts,
        "counts": counts,
        "split": {
            "rule": "connected components over normalised question, focus and document",
            **group_stats(unique),
            "shared_keys": leaks,
        },
    }


def _write_splits(folder: Path, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    files = {}
    for name, rows in splits.items():
        path = folder / f"{name}.jsonl"
        write_jsonl(path, rows)
        files[path.name] = {"rows": len(rows), "sha256": sha256_file(path)}
    return files


# ----------------------------------------------------------------------------- reading back


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared data folder; MedchatError when there is no valid one."""
    path = Path(data_dir) / MANIFEST
    hint = f"run `medchat data prepare SOURCE --out {data_dir}` first"
    if not path.is_file():
        raise MedchatError(f"{data_dir}: no {MANIFEST} here; {hint}")
    try:
        manifest = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MedchatError(f"{path}: is not valid JSON ({e}); {hint}") from None
    missing = [
        k
        for k in ("format", "counts", "files")
        if not isinstance(manifest, dict) or k not in manifest
    ]
    if missing:
        raise MedchatError(f"{path}: lacks {', '.join(missing)}; {hint}")
    return manifest


def load_split(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows of one split (train, validation or test), checked against the manifest's sha256."""
    if split not in SPLITS:
        raise MedchatError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    entry = read_manifest(data_dir)["files"].get(f"{split}.jsonl")
    path = Path(data_dir) / f"{split}.jsonl"
    if entry is None or not path.is_file():
        raise MedchatError(f"{path}: missing; run `medchat data prepare SOURCE --out {data_dir}`")
    if sha256_file(path) != entry["sha256"]:
        raise MedchatError(
            f"{path}: changed since it was prepared (sha256 differs from {MANIFEST}); "
            "run `medchat data prepare` again"
        )
    return read_jsonl(path)


# ----------------------------------------------------------------------------- CLI


def prepare_command(args: argparse.Namespace) -> None:
    """`medchat data prepare SOURCE --out DIR ...`"""
    options = PrepareOptions(
        format=args.format,
        question_col=args.question_col,
        answer_col=args.answer_col,
        seed=args.seed,
        val_frac=args.val_frac,
        test_frac=args.test_frac,
        min_question_chars=args.min_question_chars,
        min_answer_chars=args.min_answer_chars,
        eval_only=args.eval_only,
    )
    prepare(args.source, args.out, options, overwrite=args.overwrite)
    show_summary(args.out, args.tokenizer, args.max_target_length)


def stats_command(args: argparse.Namespace) -> None:
    """`medchat data stats DIR`: the same summary, from the folder's files."""
    show_summary(args.dir, args.tokenizer, args.max_target_length)


def show_summary(data_dir: str | Path, tokenizer: str | None, max_target_length: int) -> None:
    """Print the summary of a prepared folder, computed from its manifest and files."""
    from medchat.data.stats import print_summary

    splits = {name: load_split(data_dir, name) for name in SPLITS}
    print_summary(read_manifest(data_dir), splits, tokenizer, max_target_length)
