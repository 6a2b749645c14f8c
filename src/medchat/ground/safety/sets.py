"""Labelled sets, the screen's training run, and its measurement (dev, held-out, leave-one-out).

Sets shipped in `resources/safety/` (docs/safety.md says who wrote each and when it was frozen):
- `corpus.jsonl`: the training corpus (dev: measured by cross-validation only);
- `heldout_a.jsonl` ... `heldout_g.jsonl`: written blind, from the taxonomy and the writing
  instructions alone, by writers who never saw the rules, the screen or the corpus (A has
  been read since, so it is development data; D and E were written after B and C were used,
  F and G after the screen was last changed on the others' figures: the fresh ones);
- `original.jsonl`: the project's first hand-written set (302 questions, its own dev/heldout).

Rows: `text`, `level` (emergency | urgent | none) and `category` (a taxonomy id), or the
original set's `red_flag` boolean. Recall, false-positive rate and precision are about
`red_flag` (emergency vs everything else), each with a Wilson 95% interval.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medchat.errors import MedchatError
from medchat.ground.safety.rules import rule_check
from medchat.ground.safety.screen import (
    SCREEN_FILE,
    Screen,
    TrainSettings,
    choose_thresholds,
    corpus_sha256,
    cross_val_probs,
    embed,
    fit_networks,
    fit_rows,
    level_targets,
    problem,
    resources,
    rule_signals,
    workers,
)
from medchat.ground.safety.taxonomy import BY_ID, EMERGENCY_IDS, LEVELS
from medchat.ground.safety.verdict import MEDICATION_NOTE, TARGETS, SafetyVerdict, judge

SHIPPED_SETS = {
    "original": "original.jsonl",
    "corpus": "corpus.jsonl",
    "heldout_a": "heldout_a.jsonl",
    "heldout_b": "heldout_b.jsonl",
    "heldout_c": "heldout_c.jsonl",
    "heldout_d": "heldout_d.jsonl",
    "heldout_e": "heldout_e.jsonl",
    "heldout_f": "heldout_f.jsonl",
    "heldout_g": "heldout_g.jsonl",
    "heldout_h": "heldout_h.jsonl",
    "heldout_i": "heldout_i.jsonl",
    "heldout_j": "heldout_j.jsonl",
}
# never read by anyone who changed the screen (A was read, so it is development data)
BLIND_SETS = (
    "heldout_b", "heldout_c", "heldout_d", "heldout_e", "heldout_f", "heldout_g", "heldout_h",
    "heldout_i", "heldout_j",
)  # fmt: skip
# never used for any choice: frozen before their first measurement, and the screen has not
# changed since (F and G were written before round 2; H, I and J after it)
FRESH_SETS = ("heldout_f", "heldout_g", "heldout_h", "heldout_i", "heldout_j")


def _resource(name: str) -> str:
    return (resources() / name).read_text(encoding="utf-8")


def load_set(path: str | Path | None = None, name: str = "original") -> list[dict[str, Any]]:
    """Read a labelled set (a shipped one by name, or a JSONL file), checking every row."""
    if path is None:
        text, label = _resource(SHIPPED_SETS[name]), f"medchat/resources/safety/{name}.jsonl"
    else:
        if not Path(path).is_file():
            raise MedchatError(f"{path}: safety set not found")
        text, label = Path(path).read_text(encoding="utf-8"), str(path)
    rows, problems = [], []
    known = set(BY_ID) | {"medication_change"}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {lineno}: not valid JSON ({e.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            problems.append(f"line {lineno}: needs a string 'text'")
            continue
        if "level" not in row and isinstance(row.get("red_flag"), bool):
            row["level"] = "emergency" if row["red_flag"] else "none"
        if row.get("level") not in LEVELS:
            problems.append(f"line {lineno}: 'level' must be one of {LEVELS} (or give 'red_flag')")
            continue
        row["red_flag"] = row["level"] == "emergency"
        cat = row.get("category")
        if row["level"] != "none" and BY_ID.get(cat or "") is None:
            problems.append(f"line {lineno}: category {cat!r} is not in the taxonomy")
        elif row["level"] != "none" and BY_ID[cat].level != row["level"]:
            problems.append(
                f"line {lineno}: category {cat!r} is {BY_ID[cat].level}, not {row['level']}"
            )
        elif cat is not None and cat not in known:
            problems.append(f"line {lineno}: unknown category {cat!r}")
        else:
            rows.append(row)
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise MedchatError(f"{label}: {shown}")
    return rows


# ----------------------------------------------------------------------------- scoring


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson score 95% interval for k successes out of n (None when n is 0)."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "value": round(k / n, 4) if n else None, "ci95": wilson(k, n)}


def figures_from_counts(tp: int, positives: int, fp: int, negatives: int) -> dict[str, Any]:
    """Recall, FPR and precision with Wilson intervals from confusion counts alone."""
    return {
        "n": positives + negatives,
        "positives": positives,
        "negatives": negatives,
        "tp": tp,
        "fp": fp,
        "recall": _rate(tp, positives),
        "false_positive_rate": _rate(fp, negatives),
        "precision": _rate(tp, tp + fp),
    }


def score(rows: Sequence[dict[str, Any]], verdicts: Sequence[SafetyVerdict]) -> dict[str, Any]:
    """Recall, FPR, precision (with Wilson intervals), per-category recall and level figures."""
    pairs = list(zip(rows, verdicts, strict=True))
    tp = sum(r["red_flag"] and v.red_flag for r, v in pairs)
    fp = sum(not r["red_flag"] and v.red_flag for r, v in pairs)
    pos = sum(r["red_flag"] for r in rows)
    neg = len(rows) - pos
    per_cat: dict[str, list[int]] = {}
    for r, v in pairs:
        if r["level"] != "none":
            hit = v.red_flag if r["red_flag"] else v.level in ("urgent", "emergency")
            per_cat.setdefault(r["category"], [0, 0])
            per_cat[r["category"]][0] += hit
            per_cat[r["category"]][1] += 1
    urgent = [(r, v) for r, v in pairs if r["level"] == "urgent"]
    none_rows = [(r, v) for r, v in pairs if r["level"] == "none"]
    same_cat = sum(r["red_flag"] and v.red_flag and r["category"] == v.category for r, v in pairs)
    med = [v for r, v in pairs if r.get("category") == "medication_change"]
    return {
        "n": len(rows),
        "positives": pos,
        "negatives": neg,
        "tp": tp,
        "fn": pos - tp,
        "fp": fp,
        "tn": neg - fp,
        "recall": _rate(tp, pos),
        "false_positive_rate": _rate(fp, neg),
        "precision": _rate(tp, tp + fp),
        "category_agreement": _rate(same_cat, tp),
        # urgent rows at level urgent or above: same-day care was at least suggested
        "urgent_recall": _rate(sum(v.level != "none" for _, v in urgent), len(urgent)),
        # "none" rows given an urgent or emergency level
        "none_flagged": _rate(sum(v.level != "none" for _, v in none_rows), len(none_rows)),
        "per_category": {c: _rate(k, n) for c, (k, n) in sorted(per_cat.items())},
        "medication_note_recall": _rate(sum(MEDICATION_NOTE in v.notes for v in med), len(med))
        if med
        else None,
        "not_judged": sum(not v.judged for v in verdicts),
    }


def misses(
    rows: Sequence[dict[str, Any]], verdicts: Sequence[SafetyVerdict]
) -> list[dict[str, Any]]:
    """Every row whose red flag was missed or raised wrongly."""
    return [
        {
            "text": r["text"],
            "level": r["level"],
            "category": r.get("category"),
            "predicted_level": v.level,
            "predicted_category": v.category,
            "score": v.score,
        }
        for r, v in zip(rows, verdicts, strict=True)
        if r["red_flag"] != v.red_flag
    ]


# ----------------------------------------------------------------------------- training


def _embed_rows(rows: Sequence[dict[str, Any]], progress: Callable[[str], None]) -> np.ndarray:
    progress(f"embedding {len(rows)} questions with MiniLM")
    return embed([r["text"] for r in rows])


def _signals(rows: Sequence[dict[str, Any]], exclude: Sequence[str] = ()) -> np.ndarray:
    return np.stack([rule_signals(rule_check(r["text"], exclude)) for r in rows])


def train_screen(
    rows: Sequence[dict[str, Any]],
    settings: TrainSettings,
    corpus_text: str,
    embeddings: np.ndarray | None = None,
    progress: Callable[[str], None] = lambda _: None,
    loco: bool = True,
) -> Screen:
    """Fit both heads on the corpus and calibrate the thresholds on out-of-fold scores; then
    (unless `loco` is False) measure leave-one-category-out, which takes most of the time."""
    emb = _embed_rows(rows, progress) if embeddings is None else embeddings
    sig = _signals(rows)
    progress(f"cross-validating ({settings.folds} folds) to calibrate the thresholds")
    oof = cross_val_probs(emb, sig, rows, settings)
    emergency_t, urgent_t = choose_thresholds(oof, level_targets(rows), sig[:, 0] > 0, settings)
    progress("fitting the network on the whole corpus")
    screen = fit_rows(emb, sig, rows, settings)
    screen.emergency_threshold, screen.urgent_threshold = emergency_t, urgent_t
    # The screen file carries how well it generalises, measured here once, so the eval report
    # can show it without the minutes that leave-one-category-out takes.
    cv = score(rows, _verdicts_from_probs(rows, oof, screen, emb))
    measured: dict[str, Any] = {
        "corpus_cv": {k: cv[k] for k in ("tp", "positives", "fp", "negatives")}
    }
    if loco:
        figures = leave_one_category_out(rows, emb, screen, settings, progress=progress)
        measured["leave_one_category_out"] = {
            "mean_recall": figures["mean_recall"],
            "min_recall": figures["min_recall"],
            "per_category": {c: [r["k"], r["n"]] for c, r in figures["per_category"].items()},
        }
    screen.meta = {
        "corpus_rows": len(rows),
        "corpus_sha256": corpus_sha256(corpus_text),
        "levels": dict(sorted(Counter(r["level"] for r in rows).items())),
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "measured": measured,
    }
    return screen


def train_command(
    out: str | Path | None,
    corpus_path: str | Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
    settings: TrainSettings = TrainSettings(),  # noqa: B008 (frozen dataclass)
    loco: bool = True,
) -> Path:
    """`medchat safety train`: fit on the corpus and write screen.json atomically."""
    from medchat.fileio import atomic_write_text

    if corpus_path is None:
        text = _resource(SHIPPED_SETS["corpus"])
        rows = load_set(name="corpus")
    else:
        rows = load_set(corpus_path)
        text = Path(corpus_path).read_text(encoding="utf-8")
    screen = train_screen(rows, settings, text, progress=progress, loco=loco)
    target = Path(out) if out else Path(str(resources() / SCREEN_FILE))
    if target.is_dir():
        target = target / SCREEN_FILE
    atomic_write_text(target, screen.to_json())
    progress(
        f"wrote {target} ({target.stat().st_size // 1024} KB): emergency threshold "
        f"{screen.emergency_threshold:.3f}, urgent threshold {screen.urgent_threshold:.3f}"
    )
    return target


# ----------------------------------------------------------------------------- evaluation


def leave_one_category_out(
    corpus: Sequence[dict[str, Any]],
    emb: np.ndarray,
    screen: Screen,
    settings: TrainSettings,
    categories: Sequence[str] = EMERGENCY_IDS,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train without a category (its rows, its look-alikes and its rules), then measure recall on
    its corpus rows: how the screen meets a presentation it never saw.

    The thresholds are the shipped screen's (calibrated on the whole corpus): recalibrating each
    of the 38 heads by cross-validation would cost 5x the time for thresholds that barely move.
    """
    per: dict[str, Any] = {}
    cats = [c for c in categories if any(r.get("category") == c for r in corpus)]
    problems = []
    for cat in cats:
        keep = [
            j for j, r in enumerate(corpus) if r.get("category") != cat and r.get("near") != cat
        ]
        train_rows = [corpus[j] for j in keep]
        problems.append(problem(emb[keep], _signals(train_rows, (cat,)), train_rows))
    fits = len(cats) * settings.members
    progress(
        f"leave-one-category-out: {len(cats)} categories x {settings.members} networks "
        f"(about {fits * 15 // 60 // workers(fits)} min: 15 s a fit on 8,000 rows)"
    )
    blinds = fit_networks(problems, settings)
    for cat, blind in zip(cats, blinds, strict=True):
        test = [j for j, r in enumerate(corpus) if r.get("category") == cat]
        blind.emergency_threshold = screen.emergency_threshold
        blind.urgent_threshold = screen.urgent_threshold
        verdicts = judge([corpus[j]["text"] for j in test], blind, emb[test], exclude=(cat,))
        per[cat] = _rate(sum(v.red_flag for v in verdicts), len(test))
    values = [v["value"] for v in per.values()]
    return {
        "mean_recall": round(float(np.mean(values)), 4) if values else None,
        "min_recall": round(float(np.min(values)), 4) if values else None,
        "per_category": per,
    }


def evaluate(
    screen: Screen | None,
    settings: TrainSettings = TrainSettings(),  # noqa: B008 (frozen dataclass)
    extra: dict[str, str | Path] | None = None,
    loco: bool = True,
    progress: Callable[[str], None] = lambda _: None,
    corpus_cv: bool = True,
) -> dict[str, Any]:
    """Measure the screen on every shipped set (and `extra` files): recall, FPR, precision with
    Wilson intervals, per category; the corpus by cross-validation; leave-one-category-out."""
    names = [n for n in SHIPPED_SETS if corpus_cv or n != "corpus"]
    sets: dict[str, list[dict[str, Any]]] = {n: load_set(name=n) for n in names}
    for name, path in (extra or {}).items():
        sets[name] = load_set(path)
    texts = sorted({r["text"] for rows in sets.values() for r in rows})
    emb_of: dict[str, np.ndarray] = {}
    if screen is not None:
        progress(f"embedding {len(texts)} questions with MiniLM")
        emb_of = dict(zip(texts, embed(texts), strict=True))

    def emb(rows: Sequence[dict[str, Any]]) -> np.ndarray | None:
        return np.stack([emb_of[r["text"]] for r in rows]) if screen is not None else None

    report: dict[str, Any] = {
        "screen": "rules+minilm" if screen is not None else "rules",
        "targets": dict(TARGETS),
        "sets": {},
        "misses": {},
    }
    for name, rows in sets.items():
        if name == "corpus":
            continue
        parts = (
            {
                "dev": [r for r in rows if r.get("split") == "dev"],
                "heldout": [r for r in rows if r.get("split") == "heldout"],
            }
            if name == "original"
            else {}
        )
        parts[""] = rows
        for part, prow in parts.items():
            if not prow:
                continue
            verdicts = judge([r["text"] for r in prow], screen, emb(prow))
            key = f"{name}/{part}" if part else name
            report["sets"][key] = score(prow, verdicts)
            if part == "":
                report["misses"][name] = misses(prow, verdicts)
    for key, names in (("blind pooled", BLIND_SETS), ("fresh pooled", FRESH_SETS)):
        parts = [report["sets"][n] for n in names if n in report["sets"]]
        if parts:  # the headline: every blind writer's questions together
            report["sets"][key] = figures_from_counts(
                *(sum(s[k] for s in parts) for k in ("tp", "positives", "fp", "negatives"))
            )
    if screen is not None and corpus_cv:
        corpus = sets["corpus"]
        cemb = emb(corpus)
        progress("cross-validating on the corpus")
        oof = cross_val_probs(cemb, _signals(corpus), corpus, settings)
        verdicts = _verdicts_from_probs(corpus, oof, screen, cemb)
        report["sets"]["corpus (5-fold CV)"] = score(corpus, verdicts)
        if loco:
            report["leave_one_category_out"] = leave_one_category_out(
                corpus, cemb, screen, settings, progress=progress
            )
    return report


def _verdicts_from_probs(
    rows: Sequence[dict[str, Any]], probs: np.ndarray, screen: Screen, emb: np.ndarray
) -> list[SafetyVerdict]:
    """Verdicts from precomputed (out-of-fold) level probabilities, combined as `check` does."""
    from medchat.ground.safety.verdict import _verdict

    results = [rule_check(r["text"]) for r in rows]
    cat_probs = screen.probs(emb, np.stack([rule_signals(x) for x in results]))[1]
    return [_verdict(results[i], probs[i], cat_probs[i], screen) for i in range(len(rows))]


# ----------------------------------------------------------------------------- formatting


def read_texts(path: str | Path) -> list[str]:
    """Questions from a file, one per line; JSONL rows give their 'text' field; '-' is stdin."""
    if str(path) == "-":
        lines = sys.stdin.read().splitlines()
    else:
        if not Path(path).is_file():
            raise MedchatError(f"{path}: file not found; give a text or JSONL file of questions")
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    texts = []
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                line = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise MedchatError(
                    f"{path}: line {lineno} looks like JSON but has no readable 'text' field"
                ) from None
        texts.append(str(line))
    return texts


def verdict_line(text: str, verdict: SafetyVerdict, as_json: bool = False) -> str:
    """One output line for `medchat safety check`: JSON or readable."""
    if as_json:
        record = {
            "text": text,
            "level": verdict.level,
            "red_flag": verdict.red_flag,
            "category": verdict.category,
            "message": verdict.message,
            "screen": verdict.screen,
            "judged": verdict.judged,
            "score": verdict.score,
        }
        return json.dumps(record, ensure_ascii=False)
    if not verdict.judged:
        return f"NOT CHECKED {text!r}: {verdict.message}"
    if verdict.red_flag:
        return f"EMERGENCY [{verdict.category}] {text!r}: {verdict.message}"
    if verdict.level == "urgent":
        return f"URGENT [{verdict.category}] {text!r}: {verdict.message}"
    if verdict.category:
        return f"note [{verdict.category}] {text!r}: {verdict.message}"
    return f"ok {text!r}"


def fmt_rate(r: dict[str, Any] | None, counts: bool = True) -> str:
    """`value [low, high] (k/n)` for a rate with its Wilson interval; '-' when there is none."""
    if not r or r.get("value") is None:
        return "-"
    lo, hi = r["ci95"]
    return f"{r['value']:.3f} [{lo:.3f}, {hi:.3f}]" + (f" ({r['k']}/{r['n']})" if counts else "")


def hide_blind_misses(report: dict[str, Any]) -> None:
    """Drop the blind sets' misclassified questions from `report` (counts stay). Someone who
    reads them and then changes a rule or the corpus has made that set development data."""
    hidden = {}
    for name in BLIND_SETS:
        rows = report["misses"].pop(name, None)
        if rows is not None:
            hidden[name] = len(rows)
    report["misses_hidden"] = hidden


def report_table(report: dict[str, Any]) -> str:
    """A plain-text table of `evaluate` output: one block per set, then leave-one-out, misses."""
    lines = [f"screen: {report['screen']}"]
    t = report["targets"]
    lines.append(
        f"targets: recall >= {t['recall']}, false-positive rate <= {t['false_positive_rate']}, "
        f"leave-one-category-out mean recall >= {t['loco_mean_recall']}"
    )
    head = f"{'set':<22}{'n':>5}  {'recall [95% CI]':<34}{'FPR [95% CI]':<34}{'precision [95% CI]':<34}"
    lines += ["", head, "-" * len(head)]
    for name, s in report["sets"].items():
        lines.append(
            f"{name:<22}{s['n']:>5}  {fmt_rate(s['recall']):<34}{fmt_rate(s['false_positive_rate']):<34}"
            f"{fmt_rate(s['precision']):<34}"
        )
    lines.append("")
    lines.append(f"{'set':<22}{'urgent at urgent+':<34}{'none rows flagged':<34}not judged")
    for name, s in report["sets"].items():
        if "urgent_recall" not in s:  # figures from counts alone (the pooled blind row)
            continue
        lines.append(
            f"{name:<22}{fmt_rate(s['urgent_recall']):<34}{fmt_rate(s['none_flagged']):<34}{s['not_judged']}"
        )
    loco = report.get("leave_one_category_out")
    if loco:
        lines += [
            "",
            f"leave-one-category-out: mean recall {loco['mean_recall']:.3f}, min {loco['min_recall']:.3f}",
        ]
        for cat, r in loco["per_category"].items():
            lines.append(f"  {cat:<24}{fmt_rate(r)}")
    blind = [n for n in report["sets"] if n.startswith("heldout")]
    if blind:
        lines += ["", "recall by category on the blind held-out sets"]
        cats = sorted({c for n in blind for c in report["sets"][n]["per_category"]})
        lines.append(f"  {'category':<24}" + "".join(f"{n:>20}" for n in blind))
        for c in cats:
            cells = []
            for n in blind:
                r = report["sets"][n]["per_category"].get(c)
                cells.append(f"{r['k']}/{r['n']}" if r else "-")
            lines.append(f"  {c:<24}" + "".join(f"{x:>20}" for x in cells))
    for name, rows in report["misses"].items():
        if rows:
            lines += ["", f"misclassified in {name} ({len(rows)}):"]
            for m in rows:
                want = m["category"] or "none"
                lines.append(
                    f"  want {m['level']}/{want}, got {m['predicted_level']}/{m['predicted_category']}: {m['text']}"
                )
    for name, n in report.get("misses_hidden", {}).items():
        lines += [
            "",
            f"misclassified in {name}: {n}, not listed: it is a blind set "
            "(--show-blind-misses lists them, and then it is development data)",
        ]
    return "\n".join(lines) + "\n"
