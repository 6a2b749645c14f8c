"""The verdict of an eval in words: which models beat the base, and which clear every floor.

Pure python on the `metrics.json` dict that `medchat eval` writes (no torch, no numpy), so the
report, the model cards and `medchat demo` all print the same paragraph. docs/evaluation.md
("Verdict") states the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The metrics the verdict judges, higher is better on both: overlap with the reference's wording,
# and closeness of meaning. Either alone can be gamed (templated answers inflate ROUGE, echoing
# the question scores high on similarity), so a model must hold up on both. Both are 0-100 scores,
# written with the tables' two decimals.
BASE = "base"  # evaluate.BASE_NAME (not imported: evaluate pulls in torch)
VERDICT_METRICS = {"rougeL": "ROUGE-L", "semantic_similarity": "semantic similarity"}
BEATS_RULE = (
    "A model beats {base} on a metric when the 95% paired interval of its difference (model "
    "minus {base}, same questions) lies above 0."
)
CLEARS_RULE = (
    "A model clears a floor when its own 95% interval lies wholly above the floor's "
    "(shown as value [95% interval], model vs floor)."
)


def verdict(metrics: Mapping[str, Any]) -> str:
    """One paragraph: the overall verdict, one clause per model, then the rule used."""
    order = list(metrics.get("model_order") or [])
    if not order:
        return "Verdict: no model was evaluated."
    base = metrics["baseline"]
    floors = metrics.get("floors") or {}
    keys = judged_metrics(metrics)
    if not keys:
        return (
            f"Verdict: none of the headline metrics ({_join(list(VERDICT_METRICS.values()))}) "
            "was measured, so there is no verdict."
        )
    # The other models first, as the reader came for them; the baseline last.
    order = [*(n for n in order if n != base), base]
    parts = ["Verdict:", _summary(metrics, order, keys), *_notes(metrics, order, keys)]
    parts += [_model_line(metrics, n, keys) for n in order]
    parts.append(f"Judged on {_join([VERDICT_METRICS[k] for k in keys])}.")
    if len(order) > 1:
        parts.append(BEATS_RULE.format(base=base))
    if floors:
        parts.append(CLEARS_RULE)
    return " ".join(p for p in parts if p)


def _notes(metrics: Mapping[str, Any], order: Sequence[str], keys: Sequence[str]) -> list[str]:
    """What the reader must know to weigh the verdict: the baseline, what was not measured."""
    base = metrics["baseline"]
    notes = []
    if base != BASE:
        notes.append(
            f"No model named base was evaluated: {base}, the first model, is the baseline."
        )
    if len(order) == 1:
        notes.append(f"Only {base} was evaluated: there is nothing to compare with it.")
    missing = [label for k, label in VERDICT_METRICS.items() if k not in keys]
    if missing:
        notes.append(f"Not measured, so not judged: {_join(missing)}.")
    if not metrics.get("floors"):
        notes.append("No floor was scored, so whether the answers are usable is not judged.")
    return notes


def judged_metrics(metrics: Mapping[str, Any]) -> list[str]:
    """The verdict metrics every model and floor has a value for (semantic may be off)."""
    systems = [*metrics["metrics"].values(), *(metrics.get("floors") or {}).values()]
    return [
        k
        for k in VERDICT_METRICS
        if systems and all((s.get(k) or {}).get("value") is not None for s in systems)
    ]


def beats(diff: Mapping[str, Any]) -> bool | None:
    """True when the paired interval lies above 0, False below 0, None when it holds 0."""
    if diff["ci_low"] > 0:
        return True
    return False if diff["ci_high"] < 0 else None


def clears(model: Mapping[str, Any], floor: Mapping[str, Any]) -> bool:
    """The model's 95% interval lies wholly above the floor's (a point estimate without one)."""
    low = model["ci_low"] if model.get("ci_low") is not None else model["value"]
    high = floor["ci_high"] if floor.get("ci_high") is not None else floor["value"]
    return low > high


def failed_floors(metrics: Mapping[str, Any], name: str, keys: Sequence[str]) -> dict[str, list]:
    """floor -> the metrics on which model `name` does not clear it (floors it clears left out)."""
    ours = metrics["metrics"][name]
    out = {}
    for floor, entries in sorted((metrics.get("floors") or {}).items()):
        failed = [k for k in keys if not clears(ours[k], entries[k])]
        if failed:
            out[floor] = failed
    return out


def _summary(metrics: Mapping[str, Any], order: Sequence[str], keys: Sequence[str]) -> str:
    floors = sorted(metrics.get("floors") or {})
    if not floors:
        return ""
    which = f"the {floors[0]} floor" if len(floors) == 1 else f"every floor ({', '.join(floors)})"
    on = ("on both " if len(keys) > 1 else "on ") + _join([VERDICT_METRICS[k] for k in keys])
    good = [n for n in order if not failed_floors(metrics, n, keys)]
    if not good:
        return f"No model clears {which} {on}: these answers are not usable yet."
    rest = [n for n in order if n not in good]
    text = f"{_join(good)} {'clears' if len(good) == 1 else 'clear'} {which} {on}"
    if rest:
        text += f"; {_join(rest)} {'does' if len(rest) == 1 else 'do'} not"
    return text + "."


def _model_line(metrics: Mapping[str, Any], name: str, keys: Sequence[str]) -> str:
    """`name: beats base on ...; does not clear echo on ...` ("" when there is nothing to say)."""
    base = metrics["baseline"]
    clauses = [*_base_clauses(metrics, name, keys), _floor_clause(metrics, name, keys)]
    clauses = [c for c in clauses if c]
    if not clauses:  # the baseline when no floor was scored
        return ""
    who = f"{name} (the baseline)" if name == base else name
    return f"{who}: {'; '.join(clauses)}."


def _base_clauses(metrics: Mapping[str, Any], name: str, keys: Sequence[str]) -> list[str]:
    """`beats base on ...`, `does not beat base on ...`, `is worse than base on ...`."""
    base = metrics["baseline"]
    comp = next(
        (c for c in metrics.get("comparisons", []) if c["a"] == name and c["b"] == base), None
    )
    if comp is None:
        return []
    by: dict[bool | None, list[str]] = {True: [], None: [], False: []}
    for k in keys:
        d = comp["metrics"].get(k)
        if d and d.get("diff") is not None:
            by[beats(d)].append(f"{VERDICT_METRICS[k]} ({_diff(d)})")
    verbs = {True: "beats", None: "does not beat", False: "is worse than"}
    return [f"{verbs[v]} {base} on {_join(items)}" for v, items in by.items() if items]


def _floor_clause(metrics: Mapping[str, Any], name: str, keys: Sequence[str]) -> str:
    """`clears every floor`, or `does not clear echo on ROUGE-L (model vs floor) ...`."""
    floors = metrics.get("floors") or {}
    failed = failed_floors(metrics, name, keys)
    if not floors:
        return ""
    if not failed:
        return "clears every floor" if len(floors) > 1 else f"clears the {min(floors)} floor"
    ours = metrics["metrics"][name]
    per_floor = [
        f"{floor} on "
        + _join([f"{VERDICT_METRICS[k]} ({_ci(ours[k])} vs {_ci(floors[floor][k])})" for k in ks])
        for floor, ks in failed.items()
    ]
    return "does not clear " + " nor ".join(per_floor)


def _diff(d: Mapping[str, Any]) -> str:
    return f"{d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def _ci(entry: Mapping[str, Any]) -> str:
    if entry.get("ci_low") is None:
        return f"{entry['value']:.2f}"
    return f"{entry['value']:.2f} [{entry['ci_low']:.2f}, {entry['ci_high']:.2f}]"


def _join(words: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
