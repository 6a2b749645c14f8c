"""`medchat report`: an eval folder and its runs -> report.md and a self-contained report.html.

Reads metrics.json and predictions.jsonl written by `medchat eval`, and train_summary.json /
metrics.jsonl of the run folders (found from the eval's model specs, plus --runs). Tables and
plots only present what eval measured; nothing is recomputed except per-example gains.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medchat.errors import MedchatError
from medchat.eval.results import NOT_READ_ALONE, fmt_ci, fmt_value, load_eval
from medchat.eval.verdict import verdict
from medchat.fileio import (
    atomic_output_dir,
    atomic_write_text,
)
from medchat.report.plots import (
    LABELS,
    plot_changes,
    plot_lengths,
    plot_losses,
    plot_scores,
    systems_of,
)
from medchat.report.render import Doc, Example, Image, Table, render_html, render_md
from medchat.runs import LOG, is_run, read_log, read_summary

log = logging.getLogger(__name__)

# The headline table: overlap, BLEU with the answer length right under it, then the rest.
MAIN_METRICS = (
    "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "answer_words", "semantic_similarity",
    "distinct1", "distinct2", "repeat3_rate", "empty_rate",
)  # fmt: skip
ORIGINAL_METRICS = ("original_rouge1", "original_rouge2", "original_rougeL", "original_bleu")
# The original project's reported F1 (0-1 scale) on 300 rows of its own, leaky split, with its
# definitions (BLEU = mean of nltk sentence BLEU). Shown x100 for our 0-100 scale.
ORIGINAL_NUMBERS = {
    "base flan-t5-base": (0.0411, 0.0044, 0.0346, 0.0011),
    "full fine-tune": (0.2378, 0.0468, 0.1484, 0.0143),
    "LoRA": (0.2231, 0.0398, 0.1362, 0.0116),
    "QLoRA": (0.1803, 0.0288, 0.1128, 0.0083),
}
N_EXAMPLES = 10
EXCERPT_CHARS = 600
# How the report names the safety sets (docs/safety.md says who wrote each and when).
SAFETY_SETS = {  # in the order the report shows them: the blind sets first
    "fresh pooled": "**fresh blind F-J, pooled** (never used for any choice)",
    "blind pooled": "**blind held-out B-J, pooled** (B-E set the operating point)",
    "heldout_b": "blind held-out B",
    "heldout_c": "blind held-out C",
    "heldout_d": "blind held-out D",
    "heldout_e": "blind held-out E",
    "heldout_f": "fresh blind held-out F",
    "heldout_g": "fresh blind held-out G",
    "heldout_h": "fresh blind held-out H",
    "heldout_i": "fresh blind held-out I",
    "heldout_j": "fresh blind held-out J",
    "heldout_a": "held-out A (read since: development)",
    "original": "original set, all",
    "original/dev": "original set, dev part (rules tuned on it)",
    "original/heldout": "original set, heldout part",
    "corpus (5-fold CV)": "training corpus, 5-fold CV",
}


# ----------------------------------------------------------------------------- runs


def discover_runs(metrics: Mapping[str, Any], extra: Sequence[str | Path] = ()) -> dict[str, Path]:
    """name -> run folder: the eval's model specs that are run folders, then `extra` ones."""
    runs: dict[str, Path] = {}
    for name in metrics["model_order"]:
        m = metrics["models"][name]
        path = Path(m.get("path") or m["spec"])
        if is_run(path):
            runs[name] = path
    known = {p.resolve(): n for n, p in runs.items()}
    for d in map(Path, extra):
        if not is_run(d):
            raise MedchatError(
                f"--runs {d}: not a run folder (no run_info.json); "
                "give a folder written by `medchat train --out`"
            )
        if d.resolve() not in known:
            runs[d.name if d.name not in runs else str(d)] = d
    return runs


def cost_rows(runs: Mapping[str, Path]) -> list[list[str]]:
    """One training-cost row per run that finished (has train_summary.json)."""
    rows = []
    for name, run in runs.items():
        s = read_summary(run)
        if s is None:
            log.warning(
                "%s: no train_summary.json (unfinished run?); left out of the cost table", run
            )
            continue
        peak = s.get("peak_memory_bytes")
        rows.append([
            name, str(s.get("method", "?")), str(s.get("device", "?")),
            str(s.get("precision", "?")), _num(s.get("wall_time_s"), 1),
            _num(s.get("examples_per_s"), 2), str(s.get("steps", "-")),
            f"{peak / 2**20:,.0f} ({s.get('peak_memory_kind', '?')})" if peak else "-",
            f"{s['trainable_params']:,}" if s.get("trainable_params") is not None else "-",
            _num(s.get("trainable_pct"), 2), _num(s.get("final_loss"), 3),
            _num(s.get("best_eval_loss"), 3),
        ])  # fmt: skip
    return rows


def _num(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def loss_history(run: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, loss) for train and eval from a run's metrics.jsonl (empty lists when absent)."""
    # A run resumed by an older medchat repeats the steps after its checkpoint: keep the last
    # row of each step (read_log skips a torn line with a note).
    rows = read_log(run)
    by_step: dict[str, dict[int, float]] = {"train": {}, "eval": {}}
    for row in rows:
        try:
            step = int(row["step"])
            if "loss" in row:
                by_step["train"][step] = float(row["loss"])
            if "eval_loss" in row:
                by_step["eval"][step] = float(row["eval_loss"])
        except (KeyError, TypeError, ValueError):
            log.warning("%s: a row without a numeric step or loss (skipped)", run / LOG)
    return {kind: sorted(steps.items()) for kind, steps in by_step.items()}


# ----------------------------------------------------------------------------- tables


def metrics_table(metrics: Mapping[str, Any], keys: Sequence[str] = MAIN_METRICS) -> Table:
    """Metric rows x system columns (models, then floors), `value [low, high]`."""
    systems = systems_of(metrics)
    rows = []
    for key in keys:
        cells = [fmt_ci(key, entries.get(key)) for _, entries, _ in systems]
        if any(c != "-" for c in cells):
            rows.append([LABELS[key], *cells])
    return Table(["metric", *[label for label, _, _ in systems]], rows)


def comparison_table(metrics: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]) -> Table:
    """Metric rows x comparison columns: `+diff [low, high], p=` in absolute points."""
    rows = []
    for key in MAIN_METRICS:
        cells = []
        for c in comps:
            v = c["metrics"].get(key)
            if not v or v.get("diff") is None:
                cells.append("-")
                continue
            ci = f"[{fmt_value(key, v['ci_low'], True)}, {fmt_value(key, v['ci_high'], True)}]"
            cells.append(f"{fmt_value(key, v['diff'], True)} {ci}, {_p(v['p_value'])}")
        if any(c != "-" for c in cells):
            rows.append([LABELS[key], *cells])
    return Table(["metric", *[f"{c['a']} - {c['b']}" for c in comps]], rows)


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def original_table(metrics: Mapping[str, Any]) -> Table:
    """Our models under the original's definitions, then the original's own numbers (x100)."""
    rows = [
        [
            f"{name} (ours, n={metrics['data']['n']})",
            *(fmt_value(k, metrics["metrics"][name][k]["value"]) for k in ORIGINAL_METRICS),
        ]
        for name in metrics["model_order"]
    ]
    rows += [
        [f"{name} (original project)", *(f"{100 * v:.2f}" for v in vals)]
        for name, vals in ORIGINAL_NUMBERS.items()
    ]
    return Table(["system", "ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU (mean sentence, nltk)"], rows)


def settings_table(metrics: Mapping[str, Any]) -> Table:
    g, d = metrics["generation"], metrics["data"]
    rows = [[k, str(v)] for k, v in sorted(g.items())]
    rows += [
        [f"data.{k}", str(d[k])]
        for k in ("dir", "split", "n", "limit", "subset_seed", "split_sha256", "manifest_sha256")
    ]
    return Table(["setting", "value"], rows)


def models_table(metrics: Mapping[str, Any]) -> Table:
    rows = []
    for name in metrics["model_order"]:
        m = metrics["models"][name]
        rows.append(
            [
                name,
                m.get("answer_mode", "generate"),
                m["kind"],
                m["spec"],
                m["fingerprint"],
                "yes" if m["cached"] else "no",
                _num(m.get("generate_seconds"), 1),
            ]
        )
    return Table(
        ["system", "mode", "kind", "spec", "fingerprint", "from cache", "generate s"], rows
    )


def modes_of(metrics: Mapping[str, Any]) -> list[str]:
    return list(metrics.get("modes") or ["generate"])


def add_retrieval(doc: Doc, metrics: Mapping[str, Any]) -> None:
    """Answer modes compared, the index they used, and gold-document recall."""
    r = metrics["retrieval"]
    doc.h(2, "Answer modes and retrieval")
    if r.get("index"):
        rate = r.get("answer_rate")
        doc.p(
            f"Modes compared: {', '.join(modes_of(metrics))}. A system named NAME+rag is model "
            f"NAME given the top {r['k']} passages ({r['method']} retrieval, "
            f"{r['context_words']} words of context) from the index {r['index']} "
            f"({r['index_rows']} rows of the {', '.join(r.get('index_splits') or ['?'])} "
            + (
                "split(s); it holds the evaluated documents, and each question's own row was "
                "hidden from its search: leave-row-out). "
                if r.get("leave_row_out")
                else "split(s); it holds none of the evaluated documents). "
            )
            + (
                f"Answer rate: {rate:.1%} of the questions had a passage past the relevance gate "
                f"(min_relevance {r.get('min_relevance')}); rag answered the rest without context "
                "and cited nothing, retrieve and extract declined them."
                if rate is not None
                else ""
            )
        )
    add_modes_table(doc, metrics)
    recall = r.get("recall")
    if recall:
        rows = [
            [
                protocol.replace("_", "-"),
                str(x["n"]),
                _num(x["recall@1"], 3),
                _num(x["recall@5"], 3),
                _num(x["mrr"], 3),
            ]
            for protocol, x in recall.items()
            if isinstance(x, dict) and "recall@1" in x
        ]
        doc.add(Table(["protocol", "n", "recall@1", "recall@5", "MRR@10"], rows))
        doc.p(
            f"Gold-document recall of the evaluated questions ({recall['method']} retrieval) on "
            f"{recall['index']} ({recall['index_rows']} rows over every split, used only for "
            "this table): a hit is any retrieved row of the question's own document. "
            "known-item: the question's own row is indexed; leave-row-out: it is hidden, so the "
            "document must be found through its other rows (single-row documents skipped)."
        )
    else:
        doc.p(
            "Gold-document recall not measured: give `medchat eval --recall-index` an index over "
            "every split (the answering index must not hold the evaluated documents)."
        )


MODE_METRICS = ("rougeL", "semantic_similarity", "bleu")


def add_modes_table(doc: Doc, metrics: Mapping[str, Any]) -> None:
    """generate / rag / retrieve / extract side by side: answer rate, length, metrics with their
    intervals, then each grounded system's paired difference to what it is compared with."""
    r = metrics.get("retrieval") or {}
    if not r.get("index"):
        return
    rate = r.get("answer_rate")
    systems = [
        (name, metrics["models"][name].get("answer_mode", "generate"), v)
        for name, v in metrics["metrics"].items()
    ] + [(n, n, metrics["floors"][n]) for n in ("retrieve", "extract") if n in metrics["floors"]]
    rows = [
        [
            name,
            mode,
            "-" if mode == "generate" or rate is None else f"{rate:.1%}",
            fmt_ci("answer_words", v.get("answer_words")),
            *(fmt_ci(k, v.get(k)) for k in MODE_METRICS),
        ]
        for name, mode, v in systems
    ]
    doc.h(3, "Answer modes side by side")
    head = ["system", "mode", "answer rate", LABELS["answer_words"]]
    doc.add(Table(head + [LABELS[k] for k in MODE_METRICS], rows))
    paired = [
        c
        for c in metrics.get("comparisons", [])
        if c["a"].endswith("+rag") or (c["a"], c["b"]) == ("extract", "retrieve")
    ]
    lines = [
        f"{c['a']} - {c['b']}: "
        + ", ".join(
            f"{LABELS[k]} {fmt_value(k, c['metrics'][k]['diff'], sign=True)} "
            f"[{fmt_value(k, c['metrics'][k]['ci_low'], sign=True)}, "
            f"{fmt_value(k, c['metrics'][k]['ci_high'], sign=True)}]"
            for k in ("answer_words", *MODE_METRICS)
            if k in c["metrics"] and c["metrics"][k]["diff"] is not None
        )
        for c in paired
    ]
    if lines:
        doc.p("Paired differences on the same questions, 95% intervals: " + "; ".join(lines) + ".")


def add_safety(doc: Doc, safety: Mapping[str, Any]) -> None:
    """The safety screen's recall, false-positive rate and precision on its labelled sets."""
    t = safety["targets"]
    from medchat.ground.safety.sets import fmt_rate  # torch-free, as the report must be

    doc.h(2, "Safety layer")
    sets = safety.get("sets", {})
    rows = [
        [
            SAFETY_SETS.get(name, name),
            str(x["n"]),
            f"{x['positives']}/{x['negatives']}",
            fmt_rate(x["recall"], counts=False),
            fmt_rate(x["false_positive_rate"], counts=False),
            fmt_rate(x["precision"], counts=False),
        ]
        for name, x in sorted(
            sets.items(),
            key=lambda kv: list(SAFETY_SETS).index(kv[0]) if kv[0] in SAFETY_SETS else 99,
        )
    ]
    trained = safety.get("trained") or {}
    doc.add(
        Table(
            ["set", "n", "emergencies/other", "recall [95% CI]", "FPR [95% CI]", "precision"],
            rows,
        )
    )
    loco = trained.get("leave_one_category_out")
    if loco and loco.get("per_category"):
        worst = min(loco["per_category"].items(), key=lambda kv: kv[1][0] / kv[1][1])
        doc.p(
            f"Leave-one-category-out (the screen retrained without each of "
            f"{len(loco['per_category'])} emergency categories, its rules off, then measured on "
            f"it): mean recall {loco['mean_recall']:.3f}, lowest {worst[0]} "
            f"{worst[1][0]}/{worst[1][1]}; target mean >= {t['loco_mean_recall']}."
        )
    doc.p(
        f"Emergency detection by `medchat.ground.safety` ({safety.get('screen', 'rules')}), the one "
        "verdict every answering path uses. The blind held-out sets were written from the "
        "triage taxonomy alone, by writers who saw neither the rules, the classifier nor its "
        f"training corpus. Targets: recall >= {t['recall']}, false-positive rate <= "
        f"{t['false_positive_rate']}; intervals are Wilson 95%. The corpus and leave-one-out "
        "figures were recorded when the screen was trained; `medchat safety eval` re-measures "
        "them, and docs/safety.md has the per-category tables."
    )


# ----------------------------------------------------------------------------- examples


def focus_model(metrics: Mapping[str, Any], by: str) -> str | None:
    """The fine-tuned model whose examples are shown: the best non-base one on `by`."""
    others = [n for n in metrics["model_order"] if n != metrics["baseline"]]
    if not others:
        return None
    return max(
        others, key=lambda n: metrics["metrics"][n].get(by, {}).get("value") or float("-inf")
    )


def gain_examples(
    predictions: Sequence[Mapping[str, Any]], model: str, base: str, by: str, k: int = N_EXAMPLES
) -> tuple[list[int], list[int]]:
    """Indices of the k largest gains and the k largest losses of `model` over `base` on `by`."""
    gains = np.array(
        [r["scores"][model][by] - r["scores"][base][by] for r in predictions], dtype=float
    )
    order = np.argsort(-gains, kind="stable")
    best = [int(i) for i in order[:k] if gains[i] > 0]
    worst = [int(i) for i in order[::-1][:k] if gains[i] < 0]
    return best, worst


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def example_block(row: Mapping[str, Any], model: str, base: str, by: str, rank: int) -> Example:
    gain = row["scores"][model][by] - row["scores"][base][by]
    before, after = row["scores"][base][by], row["scores"][model][by]
    title = f"{rank}. {row['id']}: {LABELS[by]} {before:.1f} -> {after:.1f} ({gain:+.1f})"
    fields = [
        ("question", row["question"]),
        ("reference", _excerpt(row["reference"])),
        (base, _excerpt(row["answers"][base])),
        (model, _excerpt(row["answers"][model])),
    ]
    return Example(title, fields, row.get("url"))


# ----------------------------------------------------------------------------- the stage


def build_doc(
    metrics: Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]],
    runs: Mapping[str, Path],
    figures: Collection[str],
    by: str,
    focus: str | None,
) -> Doc:
    """Everything the report says, in reading order."""
    doc, d, base = Doc(), metrics["data"], metrics["baseline"]
    ref_words = [len(r["reference"].split()) for r in predictions]
    doc.h(1, "medchat evaluation report")
    doc.p(verdict(metrics))  # first, in words: the tables below cannot be misread as a win
    doc.p(
        f"{d['n']} examples of the {d['split']} split of {d['dir']} "
        f"(split sha256 {d['split_sha256'][:12]}…), {len(metrics['model_order'])} model(s) "
        f"answering with one generation setting; baseline: {base}. "
        "ROUGE, BLEU and similarity are on 0-100, rates and distinct-n on 0-1. "
        f"Reference answers: mean {np.mean(ref_words):.0f} words, "
        f"median {np.median(ref_words):.0f}."
    )
    doc.h(2, "Answer quality")
    doc.add(metrics_table(metrics))
    doc.p(metrics.get("note") or NOT_READ_ALONE)
    doc.p(
        'Floors are systems without a model: "echo" answers every question with the question '
        "itself; any model must clear it."
        + (
            ' "retrieve" quotes the best knowledge-base answer verbatim (see Answer modes).'
            if "retrieve" in metrics["floors"]
            else ""
        )
    )
    if "scores.png" in figures:
        doc.add(Image("scores.png", "scores with 95% CIs"))
    comps = [c for c in metrics["comparisons"] if c["b"] == base]
    if comps:
        doc.h(2, f"Change vs {base} (absolute points)")
        doc.add(comparison_table(metrics, comps))
        doc.p(
            "Differences are A minus B on the same examples, with a 95% paired bootstrap "
            "interval; p from a paired sign-flip permutation test (corpus BLEU: approximate "
            "randomisation). Absolute points, not % over a near-zero baseline."
        )
        if "change.png" in figures:
            doc.add(Image("change.png", "change vs base"))
    between = [c for c in metrics["comparisons"] if c["b"] != base]
    if between:
        doc.h(
            2,
            "Between the other systems"
            if len(modes_of(metrics)) > 1
            else "Between fine-tuned models",
        )
        doc.add(comparison_table(metrics, between))
    if metrics.get("retrieval"):
        add_retrieval(doc, metrics)
    if metrics.get("safety"):
        add_safety(doc, metrics["safety"])
    doc.h(2, "Answer length")
    if "lengths.png" in figures:
        doc.add(Image("lengths.png", "answer length distributions"))
    doc.h(2, "Training cost")
    rows = cost_rows(runs)
    if rows:
        doc.add(
            Table(
                [
                    "run",
                    "method",
                    "device",
                    "precision",
                    "wall s",
                    "examples/s",
                    "steps",
                    "peak memory MiB",
                    "trainable params",
                    "trainable %",
                    "final train loss",
                    "best eval loss",
                ],
                rows,
            )
        )
        doc.p(
            "From each run's train_summary.json. Peak memory is CUDA peak allocation on a GPU, "
            "process peak RSS on CPU."
        )
    else:
        doc.p("No run folders with train_summary.json (give them with --runs).")
    if "losses.png" in figures:
        doc.add(Image("losses.png", "loss curves"))
    doc.h(2, "Under the original project's definitions")
    doc.add(original_table(metrics))
    doc.p(
        "The original project's numbers were measured on 300 rows of a different split that was "
        "not leakage-free, with different generation settings per model and BLEU as a mean of "
        "sentence BLEU; shown x100 for our scale. They are a reference point, not comparable "
        "evidence."
    )
    if focus:
        best, worst = gain_examples(predictions, focus, base, by)
        doc.h(2, f"Largest gains and losses: {focus} vs {base}, by per-example {LABELS[by]}")
        doc.h(3, f"{len(best)} largest gains")
        if not best:
            doc.p(f"No example scored higher than under {base}.")
        for i, idx in enumerate(best, 1):
            doc.add(example_block(predictions[idx], focus, base, by, i))
        doc.h(3, f"{len(worst)} largest losses")
        if not worst:
            doc.p(f"No example scored lower than under {base}.")
        for i, idx in enumerate(worst, 1):
            doc.add(example_block(predictions[idx], focus, base, by, i))
    doc.h(2, "How the answers were generated")
    doc.add(settings_table(metrics))
    doc.add(models_table(metrics))
    return doc


def report(
    eval_dir: str | Path,
    out: str | Path,
    *,
    runs: Sequence[str | Path] = (),
    examples_by: str = "rougeL",
    focus: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write report.md, report.html (self-contained), the PNGs and a copy of metrics.json."""
    from medchat.console import console

    metrics, predictions = load_eval(eval_dir)
    if examples_by == "semantic_similarity" and metrics.get("semantic_model") is None:
        raise MedchatError(f"{eval_dir}: evaluated with --no-semantic; use --examples-by rougeL")
    if focus is not None and focus not in metrics["model_order"]:
        raise MedchatError(
            f"--focus {focus!r}: not a model of {eval_dir} ({', '.join(metrics['model_order'])})"
        )
    found = discover_runs(metrics, runs)
    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        figures = {"scores.png", "lengths.png"}  # always drawn; the other two when data exist
        plot_scores(metrics, tmp / "scores.png")
        plot_lengths(metrics, predictions, tmp / "lengths.png")
        if plot_changes(metrics, tmp / "change.png"):
            figures.add("change.png")
        histories = {n: loss_history(r) for n, r in found.items()}
        if plot_losses(histories, metrics["model_order"], tmp / "losses.png"):
            figures.add("losses.png")
        doc = build_doc(
            metrics,
            predictions,
            found,
            figures,
            examples_by,
            focus or focus_model(metrics, examples_by),
        )
        atomic_write_text(tmp / "report.md", render_md(doc))
        atomic_write_text(tmp / "report.html", render_html(doc, tmp, "medchat evaluation report"))
        shutil.copyfile(Path(eval_dir) / "metrics.json", tmp / "metrics.json")
    console.print(f"Report written to {out}/report.md and {out}/report.html")
    return out


def report_command(args: Any) -> None:
    """`medchat report EVAL_DIR [--runs RUN_DIR ...] --out REPORT_DIR`."""
    report(
        args.eval_dir,
        args.out,
        runs=args.runs,
        examples_by=args.examples_by,
        focus=args.focus,
        overwrite=args.overwrite,
    )
