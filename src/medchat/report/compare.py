"""`medchat compare RUN... --out DIR`: several training runs on one page (md + html).

What differs between the runs (method and the hyperparameters whose values differ), what each
cost, how it did on validation during training (best eval loss, and the generation metrics of
`train.generation_eval_examples` at its best checkpoint, with their curves on one plot), and,
when an eval folder that holds the runs is given, their test metrics with intervals. Nothing is
recomputed: everything comes from the run folders and the eval folder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medchat.config import BEST_METRICS
from medchat.errors import MedchatError
from medchat.fileio import (
    atomic_output_dir,
    atomic_write_text,
    write_json,
)
from medchat.report.plots import _colour, _pyplot, _save
from medchat.report.render import Doc, Image, Table, render_html, render_md
from medchat.report.report import _num, cost_rows, metrics_table
from medchat.runs import CONFIG, is_run, read_log, read_run_file, read_summary

log = logging.getLogger(__name__)

# Validation figures logged at each evaluation: key in metrics.jsonl -> (label, greater is better)
CURVES = {
    "eval_loss": ("eval loss", False),
    "eval_rougeL": ("ROUGE-L", True),
    "eval_semantic": ("semantic similarity", True),
    "eval_answer_words": ("answer words", None),
    "eval_distinct2": ("distinct-2", True),
}
RANK_BY = {name: key for name, (key, _) in BEST_METRICS.items()}  # as train.metric_for_best
COST_HEADER = ["run", "method", "device", "precision", "wall s", "examples/s", "steps",
               "peak memory MiB", "trainable params", "trainable %", "final train loss",
               "best eval loss"]  # fmt: skip


def run_names(runs: Sequence[str | Path]) -> dict[str, Path]:
    """name -> folder for each run folder (its folder name; the path where names collide)."""
    out: dict[str, Path] = {}
    for r in map(Path, runs):
        if not is_run(r) or read_run_file(r, CONFIG) is None:
            raise MedchatError(
                f"{r}: not a run folder (no run_info.json or config.yaml); "
                "give folders written by `medchat train --out`"
            )
        out[r.name if r.name not in out else str(r)] = r
    if len(out) < 2:
        raise MedchatError("compare: give at least two run folders")
    return out


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def differing_settings(runs: Mapping[str, Path]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The config keys whose values differ between runs (train.method first), and every run's
    flattened config."""
    configs = {n: _flat(read_run_file(r, CONFIG) or {}) for n, r in runs.items()}
    keys = sorted({k for c in configs.values() for k in c})
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
    differ = ["train.method"] + [k for k in differ if k != "train.method"]
    return differ, configs


def eval_history(run: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per CURVES key from a run's metrics.jsonl; the last row of a step wins."""
    by_key: dict[str, dict[int, float]] = {k: {} for k in CURVES}
    for row in read_log(run):
        for k in CURVES:
            value = row.get(k)
            if isinstance(value, int | float) and isinstance(row.get("step"), int):
                by_key[k][row["step"]] = float(value)
    return {k: sorted(v.items()) for k, v in by_key.items()}


def best_row(run: Path, history: Mapping[str, list[tuple[int, float]]]) -> dict[str, Any]:
    """The validation figures at the run's best checkpoint (the last evaluation without one)."""
    summary = read_summary(run) or {}
    steps = [s for s, _ in history["eval_loss"]]
    best = summary.get("best_checkpoint")
    step = int(best.rsplit("-", 1)[1]) if best else (steps[-1] if steps else None)
    row: dict[str, Any] = {"step": step, "metric_for_best": summary.get("metric_for_best")}
    for k in CURVES:
        row[k] = dict(history[k]).get(step) if step is not None else None
    return row


def rank(bests: Mapping[str, Mapping[str, Any]], by: str) -> list[str]:
    """Run names, best first by validation `by` at each run's best checkpoint (missing last)."""
    key = RANK_BY[by]
    better_high = CURVES[key][1]

    def order(name: str) -> tuple[int, float]:
        v = bests[name].get(key)
        if v is None or math.isnan(v):
            return (1, 0.0)
        return (0, -v if better_high else v)

    return sorted(bests, key=order)


def plot_curves(
    histories: Mapping[str, Mapping[str, list[tuple[int, float]]]], order: Sequence[str], path: Path
) -> bool:
    """Eval loss and the generation metrics vs step: one panel per figure, one colour per run."""
    keys = [k for k in CURVES if any(h[k] for h in histories.values())]
    if not keys:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.3), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for name, h in histories.items():
            if h[key]:
                ax.plot(*zip(*h[key], strict=True), "-o", ms=3, lw=1.3,
                        color=_colour(name, order), label=name)  # fmt: skip
        ax.set_title(f"validation {CURVES[key][0]}", fontsize=9)
        ax.set_xlabel("step")
    # One legend for every run, even one that only logged eval loss (it has no line elsewhere).
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    axes[0][-1].legend(
        handles.values(), handles.keys(), fontsize=7, frameon=False, loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )  # fmt: skip
    _save(fig, path)
    return True


def _eval_section(doc: Doc, eval_dir: Path, runs: Mapping[str, Path]) -> None:
    from medchat.eval.results import load_eval

    metrics, _ = load_eval(eval_dir)
    paths = {Path(m.get("path") or m["spec"]).resolve(): n for n, m in metrics["models"].items()}
    held = {paths[r.resolve()] for r in runs.values() if r.resolve() in paths}
    if not held:
        raise MedchatError(
            f"--eval {eval_dir}: evaluated none of these runs; give the folder of a "
            "`medchat eval` that had them as --model"
        )
    doc.h(2, f"Test metrics ({metrics['data']['n']} examples, {eval_dir})")
    doc.add(metrics_table(metrics))
    doc.p(
        "From the eval folder: the same examples and generation settings for every model, "
        "95% bootstrap intervals; floors are systems without a model."
        + (
            f" Not evaluated there: {', '.join(sorted(set(runs) - held))}."
            if len(held) < len(runs)
            else ""
        )
    )


def build_doc(
    runs: Mapping[str, Path],
    bests: Mapping[str, Mapping[str, Any]],
    order: list[str],
    by: str,
    figures: set[str],
    eval_dir: Path | None,
) -> tuple[Doc, dict[str, Any]]:
    """The page, and what it shows as JSON (comparison.json)."""
    differ, configs = differing_settings(runs)
    doc = Doc()
    doc.h(1, "medchat run comparison")
    top = bests[order[0]].get(RANK_BY[by])
    doc.p(
        f"{len(runs)} runs, ranked by validation {CURVES[RANK_BY[by]][0]} at each run's best "
        f"checkpoint: {order[0]} first"
        + (f" ({top:.4g})." if top is not None else " (no run logged it).")
    )
    doc.h(2, "What differs")
    doc.add(
        Table(
            ["run", *differ], [[n, *[str(configs[n].get(k, "-")) for k in differ]] for n in order]
        )
    )
    doc.h(2, "Validation during training (at the best checkpoint)")
    doc.add(
        Table(
            ["rank", "run", "best checkpoint", "chosen by", *[CURVES[k][0] for k in CURVES]],
            [
                [
                    str(i),
                    n,
                    f"step {bests[n]['step']}" if bests[n]["step"] is not None else "-",
                    str(bests[n]["metric_for_best"] or "-"),
                    *[_num(bests[n][k], 4 if k == "eval_loss" else 2) for k in CURVES],
                ]
                for i, n in enumerate(order, 1)
            ],
        )
    )
    doc.p(
        "Generation metrics come from the train.generation_eval_examples validation questions "
        "answered at every evaluation (greedy); ROUGE-L and similarity are on 0-100."
    )
    if "curves.png" in figures:
        doc.add(Image("curves.png", "validation curves"))
    doc.h(2, "Cost")
    ranked = {n: runs[n] for n in order}
    doc.add(Table(COST_HEADER, cost_rows(ranked)))
    doc.p("Peak memory is CUDA peak allocation on a GPU, process peak RSS on CPU.")
    if eval_dir is not None:
        _eval_section(doc, eval_dir, runs)
    record = {
        "rank_by": by,
        "order": order,
        "runs": {n: str(runs[n]) for n in order},
        "differ": {n: {k: configs[n].get(k) for k in differ} for n in order},
        "best": bests,
    }
    return doc, record


def compare(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    rank_by: str = "eval_loss",
    eval_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write compare.md, compare.html (self-contained), curves.png and comparison.json."""
    from medchat.console import console

    if rank_by not in RANK_BY:
        raise MedchatError(f"--rank-by {rank_by!r}: choose one of {', '.join(RANK_BY)}")
    named = run_names(runs)
    histories = {n: eval_history(r) for n, r in named.items()}
    bests = {n: best_row(r, histories[n]) for n, r in named.items()}
    order = rank(bests, rank_by)
    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        figures = {"curves.png"} if plot_curves(histories, order, tmp / "curves.png") else set()
        where = Path(eval_dir) if eval_dir else None
        doc, record = build_doc(named, bests, order, rank_by, figures, where)
        atomic_write_text(tmp / "compare.md", render_md(doc))
        atomic_write_text(tmp / "compare.html", render_html(doc, tmp, "medchat run comparison"))
        write_json(tmp / "comparison.json", record)
    console.print(f"Comparison of {len(named)} runs written to {out}/compare.md and compare.html")
    return out
