"""The verdict paragraph: right in both directions, on metrics dicts shaped like metrics.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from medchat.eval.verdict import clears, verdict
from medchat.train.model_card import write_model_card


def entry(value: float, low: float, high: float) -> dict:
    return {"value": value, "ci_low": low, "ci_high": high}


def diff(value: float, low: float, high: float) -> dict:
    return {"diff": value, "ci_low": low, "ci_high": high, "p_value": 0.001, "n": 100}


def metrics_of(systems: dict, floors: dict, vs_base: dict, baseline: str = "base") -> dict:
    """A metrics.json-shaped dict: {name: (rougeL, semantic)} entries, paired diffs vs base."""

    def scores(pair: tuple) -> dict:
        out = {"rougeL": pair[0], "rouge1": entry(1.0, 0.5, 1.5)}  # rouge1 is not judged
        if pair[1] is not None:
            out["semantic_similarity"] = pair[1]
        return out

    return {
        "baseline": baseline,
        "model_order": list(systems),
        "metrics": {n: scores(v) for n, v in systems.items()},
        "floors": {n: scores(v) for n, v in floors.items()},
        "comparisons": [
            {
                "a": a,
                "b": baseline,
                "metrics": dict(zip(("rougeL", "semantic_similarity"), d, strict=False)),
            }
            for a, d in vs_base.items()
        ]
        # between fine-tuned models: never part of the verdict
        + [{"a": "full", "b": "lora", "metrics": {"rougeL": diff(-40.0, -41.0, -39.0)}}],
    }


ECHO = (entry(8.27, 7.9, 8.6), entry(67.0, 65.2, 68.8))
BASE = (entry(5.1, 4.6, 5.6), entry(1.2, 0.5, 1.9))


def test_models_that_beat_the_base_and_clear_every_floor() -> None:
    m = metrics_of(
        {"base": BASE, "full": (entry(12.0, 11.0, 13.0), entry(72.0, 70.0, 74.0)),
         "lora": (entry(9.2, 8.8, 9.6), entry(69.5, 69.0, 70.0))},
        {"echo": ECHO, "retrieve": (entry(6.0, 5.5, 6.5), entry(50.0, 48.0, 52.0))},
        {"full": (diff(6.9, 6.0, 7.8), diff(70.8, 68.9, 72.7)),
         "lora": (diff(4.1, 2.0, 6.3), diff(68.3, 67.1, 69.4))},
    )  # fmt: skip
    text = verdict(m)
    assert text.startswith(
        "Verdict: full and lora clear every floor (echo, retrieve) on both ROUGE-L and semantic "
        "similarity; base does not."
    )
    assert (
        "lora: beats base on ROUGE-L (+4.10 [+2.00, +6.30]) and semantic similarity "
        "(+68.30 [+67.10, +69.40]); clears every floor." in text
    )
    assert "full: beats base on ROUGE-L (+6.90 [+6.00, +7.80])" in text
    assert "not usable" not in text
    assert "-40.00" not in text  # full vs lora is not a comparison with the base


def test_nothing_beats_the_base_or_clears_the_floor() -> None:
    m = metrics_of(
        {"base": BASE, "full": (entry(5.0, 4.4, 5.6), entry(0.9, 0.2, 1.6)),
         "lora": (entry(4.0, 3.5, 4.5), entry(1.0, 0.4, 1.6))},
        {"echo": ECHO},
        {"full": (diff(-0.1, -0.6, +0.4), diff(-0.3, -0.9, 0.3)),
         "lora": (diff(-1.1, -1.6, -0.6), diff(-0.2, -0.8, 0.4))},
    )  # fmt: skip
    text = verdict(m)
    assert text.startswith(
        "Verdict: No model clears the echo floor on both ROUGE-L and semantic similarity: "
        "these answers are not usable yet."
    )
    assert (
        "full: does not beat base on ROUGE-L (-0.10 [-0.60, +0.40]) and semantic similarity "
        "(-0.30 [-0.90, +0.30]); does not clear echo on ROUGE-L (5.00 [4.40, 5.60] vs "
        "8.27 [7.90, 8.60]) and semantic similarity (0.90 [0.20, 1.60] vs 67.00 [65.20, 68.80])."
    ) in text
    assert "lora: does not beat base on semantic similarity (-0.20 [-0.80, +0.40]); " in text
    assert "is worse than base on ROUGE-L (-1.10 [-1.60, -0.60])" in text
    assert "base (the baseline): does not clear echo on ROUGE-L (5.10 [4.60, 5.60] vs" in text
    assert "beats" not in text.split("A model beats")[0]  # only the rule line says "beats"


def test_beats_the_base_but_not_the_echo_floor() -> None:
    """The README demo's case: a significant gain over the base, below echo all the same."""
    m = metrics_of(
        {"base": BASE, "full": (entry(7.67, 7.1, 8.2), entry(2.9, 2.1, 3.7))},
        {"echo": ECHO},
        {"full": (diff(2.57, 1.8, 3.3), diff(1.7, 0.8, 2.6))},
    )
    text = verdict(m)
    assert text.startswith("Verdict: No model clears the echo floor on both ROUGE-L and semantic")
    assert (
        "full: beats base on ROUGE-L (+2.57 [+1.80, +3.30]) and semantic similarity "
        "(+1.70 [+0.80, +2.60]); does not clear echo on ROUGE-L (7.67 [7.10, 8.20] vs "
        "8.27 [7.90, 8.60]) and semantic similarity (2.90 [2.10, 3.70] vs 67.00 [65.20, 68.80])."
    ) in text


def test_a_floor_is_cleared_by_intervals_not_point_estimates() -> None:
    floor = entry(10.0, 9.0, 11.0)
    assert not clears(entry(10.5, 9.5, 11.5), floor)  # point above, intervals overlap
    assert clears(entry(12.5, 11.2, 13.8), floor)
    assert not clears(entry(12.5, 10.8, 13.8), floor)
    assert clears(entry(10.5, None, None), {"value": 10.0, "ci_low": None, "ci_high": None})
    m = metrics_of(
        {"base": BASE, "lora": (entry(8.5, 8.0, 9.0), entry(70.5, 69.5, 71.5))},
        {"echo": ECHO},
        {"lora": (diff(3.4, 2.8, 4.0), diff(68.3, 67.1, 69.4))},
    )
    # ROUGE-L 8.50 is above echo's 8.27, but [8.00, 9.00] overlaps [7.90, 8.60]; similarity clears.
    assert "lora: beats base on" in verdict(m)
    assert "does not clear echo on ROUGE-L (8.50 [8.00, 9.00] vs 8.27 [7.90, 8.60])." in verdict(m)


def test_semantic_similarity_off_judges_rouge_l_alone() -> None:
    m = metrics_of(
        {"base": (BASE[0], None), "full": (entry(12.0, 11.0, 13.0), None)},
        {"echo": (ECHO[0], None)},
        {"full": (diff(6.9, 6.0, 7.8),)},
    )
    text = verdict(m)
    assert text.startswith("Verdict: full clears the echo floor on ROUGE-L; base does not.")
    assert "full: beats base on ROUGE-L (+6.90 [+6.00, +7.80]); clears the echo floor." in text
    assert "Not measured, so not judged: semantic similarity." in text
    assert "Judged on ROUGE-L." in text


def test_only_the_base_no_floors_and_no_base_named_base() -> None:
    only = metrics_of({"base": BASE}, {"echo": ECHO}, {})
    assert "Only base was evaluated: there is nothing to compare with it." in verdict(only)
    assert "A model beats" not in verdict(only)  # no comparison, so no rule for one
    no_floor = metrics_of({"base": BASE, "full": BASE}, {}, {"full": (diff(0, -1, 1),) * 2})
    text = verdict(no_floor)
    assert "No floor was scored, so whether the answers are usable is not judged." in text
    assert "clear" not in text and "base (the baseline)" not in text
    other = metrics_of({"flan": BASE, "full": BASE}, {"echo": ECHO}, {}, baseline="flan")
    assert "No model named base was evaluated: flan, the first model, is the baseline." in (
        verdict(other)
    )
    assert verdict({**other, "metrics": {n: {} for n in other["metrics"]}}) == (
        "Verdict: none of the headline metrics (ROUGE-L and semantic similarity) was measured, "
        "so there is no verdict."
    )


def test_rag_systems_are_judged_against_retrieve_and_extract_floors() -> None:
    m = metrics_of(
        {"base": BASE, "full": (entry(9.0, 8.7, 9.3), entry(70.0, 69.0, 71.0)),
         "full+rag": (entry(20.0, 19.0, 21.0), entry(80.0, 79.0, 81.0))},
        {"echo": ECHO, "retrieve": (entry(15.0, 14.0, 16.0), entry(75.0, 74.0, 76.0)),
         "extract": (entry(14.0, 13.0, 15.0), entry(78.0, 77.0, 78.9))},
        {"full": (diff(3.9, 3.0, 4.8), diff(68.8, 67.5, 70.0)),
         "full+rag": (diff(14.9, 13.5, 16.3), diff(78.8, 77.5, 80.0))},
    )  # fmt: skip
    text = verdict(m)
    assert text.startswith(
        "Verdict: full+rag clears every floor (echo, extract, retrieve) on both ROUGE-L and "
        "semantic similarity; full and base do not."
    )
    assert (
        "full: beats base on ROUGE-L (+3.90 [+3.00, +4.80]) and semantic similarity "
        "(+68.80 [+67.50, +70.00]); does not clear extract on ROUGE-L (9.00 [8.70, 9.30] vs "
        "14.00 [13.00, 15.00]) and semantic similarity (70.00 [69.00, 71.00] vs 78.00 [77.00, "
        "78.90]) nor retrieve on ROUGE-L"
    ) in text
    assert "full+rag: beats base on ROUGE-L (+14.90 [+13.50, +16.30])" in text


def test_the_model_card_carries_the_verdict(tmp_path: Path) -> None:
    m = metrics_of(
        {"base": BASE, "full": (entry(7.67, 7.1, 8.2), entry(2.9, 2.1, 3.7))},
        {"echo": ECHO},
        {"full": (diff(2.57, 1.8, 3.3), diff(1.7, 0.8, 2.6))},
    )
    (tmp_path / "run_info.json").write_text(json.dumps({"method": "full"}))
    card = write_model_card(tmp_path, m, "full").read_text()
    evaluation = card.split("## Evaluation\n", 1)[1]
    assert evaluation.startswith(verdict(m) + "\n")


def test_verdict_imports_no_torch() -> None:
    code = (
        "import sys, medchat.eval.verdict, medchat.train.model_card; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
