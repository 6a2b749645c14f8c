"""The group split: seeded, complete, and no question, condition or document in two splits."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from medchat.data import load_split, read_manifest
from medchat.data.split import SPLITS, group_keys, split_records


def key(text: str | None) -> str:
    """The test's own normaliser (ASCII): case, punctuation and spacing folded."""
    return " ".join(re.sub(r"[\W_]+", " ", (text or "").casefold()).split())


def leaks(splits: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    """Normalised questions, focuses and documents found in more than one split."""
    where: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name, rows in splits.items():
        for r in rows:
            where["question", key(r["question"])].add(name)
            if key(r.get("focus")):
                where["focus", key(r["focus"])].add(name)
            if r.get("doc_id"):
                where["doc", r["doc_id"]].add(name)
    found: dict[str, set[str]] = {"question": set(), "focus": set(), "doc": set()}
    for (kind, value), names in where.items():
        if len(names) > 1:
            found[kind].add(value)
    return found


CONDITIONS = ["Aicardi Syndrome", "aicardi  syndrome", "Gout", "GOUT.", "Flu", "Asthma", "Acne"]
TEMPLATES = ["What is (are) {} ?", "what causes {}?", "How to treat {} ?", "Who gets {} ?"]

row_strategy = st.fixed_dictionaries(
    {
        "condition": st.sampled_from(CONDITIONS),
        "template": st.sampled_from(TEMPLATES),
        "focus": st.one_of(st.none(), st.sampled_from(CONDITIONS)),
        "doc_id": st.one_of(st.none(), st.sampled_from([f"S/{i}" for i in range(8)])),
    }
)


def build(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{i:03d}",
            "question": r["template"].format(r["condition"]),
            "answer": f"answer {i}",
            "focus": r["focus"],
            "doc_id": r["doc_id"],
        }
        for i, r in enumerate(rows)
    ]


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=60),
    seed=st.integers(0, 2**16),
    val_frac=st.sampled_from([0.0, 0.1, 0.25]),
    test_frac=st.sampled_from([0.05, 0.2, 0.4]),
)
def test_split_never_leaks_and_keeps_every_row(
    rows: list[dict[str, Any]], seed: int, val_frac: float, test_frac: float
) -> None:
    records = build(rows)
    splits = split_records(records, seed, val_frac, test_frac)
    assert set(splits) == set(SPLITS)
    ids = sorted(r["id"] for rows_ in splits.values() for r in rows_)
    assert ids == sorted(r["id"] for r in records)
    assert leaks(splits) == {"question": set(), "focus": set(), "doc": set()}
    assert len(splits["test"]) <= math.ceil(test_frac * len(records))
    assert len(splits["validation"]) <= math.ceil(val_frac * len(records))
    assert splits == split_records(list(reversed(records)), seed, val_frac, test_frac)


def test_groups_are_connected_components() -> None:
    records = [
        {"question": "what is a", "focus": "A", "doc_id": "d1"},
        {"question": "what is b", "focus": "B", "doc_id": "d1"},  # doc links b to a
        {"question": "What is B?", "focus": None, "doc_id": None},  # question links to b
        {"question": "what is c", "focus": "b", "doc_id": None},  # focus B = b
        {"question": "what is d", "focus": "D", "doc_id": "d9"},
    ]
    groups = group_keys(records)
    assert len(set(groups[:4])) == 1
    assert groups[4] != groups[0]


def test_seed_changes_the_split_and_fills_targets() -> None:
    records = [
        {"id": f"r{i:03d}", "question": f"question {i}", "answer": "a", "focus": None}
        for i in range(200)
    ]
    a = split_records(records, 1, 0.1, 0.1)
    b = split_records(records, 2, 0.1, 0.1)
    assert [len(a[s]) for s in SPLITS] == [160, 20, 20]
    assert {r["id"] for r in a["test"]} != {r["id"] for r in b["test"]}


def test_real_medquad_splits_share_no_question_focus_or_doc(real_medquad_prepared: Path) -> None:
    splits = {name: load_split(real_medquad_prepared, name) for name in SPLITS}
    assert leaks(splits) == {"question": set(), "focus": set(), "doc": set()}
    counts = read_manifest(real_medquad_prepared)["counts"]["splits"]
    assert {name: len(rows) for name, rows in splits.items()} == counts
    # GHR "Aicardi syndrome" and NINDS "Aicardi Syndrome" are one condition, so one split.
    aicardi = [
        (n, r) for n, rows in splits.items() for r in rows if key(r["focus"]) == "aicardi syndrome"
    ]
    assert {r["doc_id"].split("/")[0] for _, r in aicardi} == {"3_GHR_QA", "6_NINDS_QA"}
    assert len({n for n, _ in aicardi}) == 1
    total = sum(counts.values())
    assert 0.04 * total < counts["test"] <= math.ceil(0.05 * total)
