"""Seeded, leakage-free group split.

Rows are linked when they share a normalised question, a normalised focus (condition) or a
document; each connected component (found with a union-find) goes whole into one split, so no
question, condition or document is seen in training and again in validation or test.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any

from medchat.data.clean import normalize_key

SPLITS = ("train", "validation", "test")


def leakage_keys(row: dict[str, Any]) -> list[str]:
    """The keys that must not appear in two splits: question, focus and document."""
    keys = [f"q:{normalize_key(row['question'])}"]
    if focus := normalize_key(row.get("focus")):
        keys.append(f"f:{focus}")
    if row.get("doc_id"):
        keys.append(f"d:{row['doc_id']}")
    return keys


def group_keys(records: list[dict[str, Any]]) -> list[str]:
    """For each row, the name of its connected component (the smallest key in it)."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        root = key
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[key] != root:  # path compression keeps later finds short
            parent[key], key = root, parent[key]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        # The smaller key becomes the root, so a component's name does not depend on row order.
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    row_keys = [leakage_keys(r) for r in records]
    for keys in row_keys:
        for key in keys[1:]:
            union(keys[0], key)
    return [find(keys[0]) for keys in row_keys]


def split_records(
    records: list[dict[str, Any]], seed: int, val_frac: float, test_frac: float
) -> dict[str, list[dict[str, Any]]]:
    """Assign whole groups to test, validation and train; rows sorted by id in each split.

    Groups are shuffled with `seed`, then each goes to test while it fits under
    ceil(test_frac * n) rows, else to validation while that fits, else to train; groups too big
    for the held-out targets land in train. Same records and seed give the same split.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row, key in zip(records, group_keys(records), strict=True):
        groups[key].append(row)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    n = len(records)
    targets = {"test": math.ceil(test_frac * n), "validation": math.ceil(val_frac * n)}
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for key in order:
        rows = groups[key]
        name = next(
            (s for s in ("test", "validation") if len(splits[s]) + len(rows) <= targets[s]),
            "train",
        )
        splits[name].extend(rows)
    return {name: sorted(rows, key=lambda r: r["id"]) for name, rows in splits.items()}


def shared_keys(splits: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """How many question/focus/document keys occur in more than one split (0 when leak-free)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for name, rows in splits.items():
        for row in rows:
            for key in leakage_keys(row):
                seen[key].add(name)
    shared = {"question": 0, "focus": 0, "document": 0}
    kinds = {"q": "question", "f": "focus", "d": "document"}
    for key, names in seen.items():
        if len(names) > 1:
            shared[kinds[key[0]]] += 1
    return shared


def group_stats(records: list[dict[str, Any]]) -> dict[str, int]:
    """Number of groups and the size of the largest, for the manifest."""
    sizes: dict[str, int] = defaultdict(int)
    for key in group_keys(records):
        sizes[key] += 1
    return {"groups": len(sizes), "largest_group": max(sizes.values(), default=0)}
