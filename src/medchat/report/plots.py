"""The report's figures (matplotlib, headless): scores with intervals, changes against the base,
answer lengths and training losses. Each writes one PNG and draws only what eval measured."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medchat.eval.results import METRICS

log = logging.getLogger(__name__)

LABELS = {k: label for k, _, label in METRICS}
BAR_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "semantic_similarity")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def systems_of(metrics: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(label, metric entries, is_floor) for every model, then every floor."""
    out = [(n, metrics["metrics"][n], False) for n in metrics["model_order"]]
    out += [(f"{n} (floor)", v, True) for n, v in sorted(metrics["floors"].items())]
    return out


def _colour(name: str, order: Sequence[str]) -> Any:
    """One colour per model across every plot (its position in the eval's model order)."""
    import matplotlib

    # Runs that are not eval models get a stable colour past the models' (str hash is salted).
    i = order.index(name) if name in order else len(order) + sum(map(ord, name)) % 5
    return matplotlib.colormaps["tab10"](i % 10)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    _pyplot().close(fig)


def plot_scores(metrics: Mapping[str, Any], path: Path) -> None:
    """Grouped bars per metric, one bar per system, 95% CI error bars; floors hatched grey."""
    plt = _pyplot()
    systems = systems_of(metrics)
    keys = [
        k for k in BAR_METRICS if any(v.get(k, {}).get("value") is not None for _, v, _ in systems)
    ]
    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    width = 0.8 / len(systems)
    x = np.arange(len(keys))
    floor_hatches = iter(["//", "..", "xx", "\\\\"] * len(systems))  # one pattern per floor
    for j, (label, entries, floor) in enumerate(systems):
        vals = [entries.get(k, {}).get("value") or 0.0 for k in keys]
        low = [v - (entries.get(k, {}).get("ci_low") or v) for k, v in zip(keys, vals, strict=True)]
        high = [
            (entries.get(k, {}).get("ci_high") or v) - v for k, v in zip(keys, vals, strict=True)
        ]
        ax.bar(
            x + (j - (len(systems) - 1) / 2) * width, vals, width, yerr=[low, high], capsize=2,
            label=label, color="0.82" if floor else _colour(label, metrics["model_order"]),
            hatch=next(floor_hatches) if floor else None, edgecolor="0.45" if floor else None,
            error_kw={"elinewidth": 0.8},
        )  # fmt: skip
    ax.set_xticks(x, [LABELS[k].replace(" (", "\n(") for k in keys], fontsize=8)
    ax.set_ylabel("score (0-100)")
    ax.set_title(f"Answer quality on {metrics['data']['n']} examples, 95% bootstrap CI")
    ax.legend(
        fontsize=8,
        ncol=min(len(systems), 5),
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(0, -0.16),
    )
    _save(fig, path)


def plot_changes(metrics: Mapping[str, Any], path: Path) -> bool:
    """Change vs base in points with 95% CIs, one row per metric, one marker per model."""
    comps = [c for c in metrics["comparisons"] if c["b"] == metrics["baseline"]]
    if not comps:
        return False
    plt = _pyplot()
    keys = [
        k
        for k in BAR_METRICS
        if any(c["metrics"].get(k, {}).get("diff") is not None for c in comps)
    ]
    fig, ax = plt.subplots(figsize=(8.0, 1.4 + 0.25 * len(keys) * len(comps)))
    step = 0.7 / len(comps)
    for j, c in enumerate(comps):
        ys = np.arange(len(keys)) + (j - (len(comps) - 1) / 2) * step
        d = [c["metrics"][k]["diff"] for k in keys]
        err = [[v - c["metrics"][k]["ci_low"] for k, v in zip(keys, d, strict=True)],
               [c["metrics"][k]["ci_high"] - v for k, v in zip(keys, d, strict=True)]]  # fmt: skip
        ax.errorbar(
            d,
            ys,
            xerr=err,
            fmt="o",
            capsize=3,
            color=_colour(c["a"], metrics["model_order"]),
            label=f"{c['a']} - {c['b']}",
        )
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_yticks(np.arange(len(keys)), [LABELS[k] for k in keys], fontsize=8)
    ax.invert_yaxis()
    ax.grid(axis="x", color="0.92")
    ax.set_xlabel("change vs base (points, 0-100 scale)")
    ax.set_title("Change vs base, 95% paired bootstrap CI")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True


def plot_lengths(
    metrics: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]], path: Path
) -> None:
    """Answer length (words) per model next to the references': box plots on a log axis.

    Log scale because untrained or short-budget models answer in a handful of words while
    MedQuAD references run to hundreds; on a linear axis one of the two is unreadable.
    """
    plt = _pyplot()
    order = metrics["model_order"]
    data = {"reference": [len(r["reference"].split()) for r in predictions]}
    data.update({n: [len(r["answers"][n].split()) for r in predictions] for n in order})
    fig, ax = plt.subplots(figsize=(8.0, 1.0 + 0.5 * len(data)))
    # +1 so empty answers (0 words) still have a place on the log axis.
    box = ax.boxplot(
        [np.asarray(v) + 1 for v in data.values()], vert=False, patch_artist=True, widths=0.6,
        flierprops={"markersize": 3, "alpha": 0.5}, medianprops={"color": "black"},
    )  # fmt: skip
    for patch, name in zip(box["boxes"], data, strict=True):
        patch.set_facecolor("0.85" if name == "reference" else _colour(name, order))
        patch.set_alpha(0.8)
    labels = [f"{n} (median {np.median(v):.0f})" for n, v in data.items()]
    ax.set_yticks(np.arange(1, len(data) + 1), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ticks = [
        t
        for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
        if t <= max(map(max, data.values())) + 1
    ]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.grid(axis="x", color="0.92")
    ax.set_xlabel("answer length (words + 1, log scale)")
    ax.set_title(
        f"Answer length on {len(predictions)} examples "
        f"(max new tokens {metrics['generation']['max_new_tokens']})"
    )
    _save(fig, path)


def plot_losses(
    histories: Mapping[str, Mapping[str, list[tuple[int, float]]]], order: Sequence[str], path: Path
) -> bool:
    """Train loss (solid) and eval loss (dashed, markers) vs step, one colour per run."""
    if not any(h["train"] or h["eval"] for h in histories.values()):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 4.0))
    for name, h in histories.items():
        colour = _colour(name, order)
        if h["train"]:
            ax.plot(*zip(*h["train"], strict=True), color=colour, lw=1.4, label=f"{name} train")
        if h["eval"]:
            ax.plot(
                *zip(*h["eval"], strict=True),
                "--o",
                color=colour,
                ms=4,
                lw=1.2,
                label=f"{name} eval",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy)")
    ax.set_title("Training curves: train loss (solid) and eval loss (dashed)")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)
    return True
