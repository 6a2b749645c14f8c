"""`medchat report`: the files exist, the PNGs open, the numbers are metrics.json's."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from medchat.cli import main
from medchat.eval import evaluate as ev
from medchat.eval import results
from medchat.report import report as rp
from tests.conftest import requires

pytestmark = requires("rouge_score", "sacrebleu", "nltk", "peft", "matplotlib", "PIL")

PNGS = ("scores.png", "change.png", "lengths.png", "losses.png")


@pytest.fixture(scope="module")
def built(medquad_prepared: Path, tiny_runs: dict[str, Path], tmp_path_factory) -> dict:
    """eval (base + full + lora, 24 examples) then the real `medchat report` CLI."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # micro models: threads only add contention on a shared box
    root = tmp_path_factory.mktemp("report")
    models = [
        ev.ModelSpec("base", str(tiny_runs["lora"] / "base_model")),
        ev.ModelSpec("full", str(tiny_runs["full"])),
        ev.ModelSpec("lora", str(tiny_runs["lora"])),
    ]
    ev.evaluate(
        medquad_prepared, models, root / "eval", limit=24, generation={"max_new_tokens": 8},
        cache_dir=root / "cache", semantic=False, progress=False,
    )  # fmt: skip
    torch.set_num_threads(threads)
    assert main(["report", str(root / "eval"), "--out", str(root / "report")]) == 0
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (root / "eval" / "predictions.jsonl").open()]
    return {
        "eval": root / "eval",
        "out": root / "report",
        "metrics": metrics,
        "rows": rows,
        "runs": tiny_runs,
    }


def md_table(md: str, heading: str) -> dict[str, list[str]]:
    """First table under `heading`: first cell -> the other cells (a header row included)."""
    lines = md.split(heading, 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    table: dict[str, list[str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):  # the table ended
            break
        if set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        table[cells[0]] = cells[1:]
    return table


def test_report_files_exist_and_pngs_open(built: dict) -> None:
    from PIL import Image

    out = built["out"]
    for name in ("report.md", "report.html", "metrics.json", *PNGS):
        assert (out / name).is_file(), name
    for name in PNGS:
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= 800 and im.size[1] >= 300
    assert (out / "metrics.json").read_bytes() == (built["eval"] / "metrics.json").read_bytes()


def test_the_verdict_is_the_first_paragraph(built: dict) -> None:
    """Before any number or table, in words (semantic similarity is off here: ROUGE-L alone)."""
    from medchat.eval.verdict import verdict

    text = verdict(built["metrics"])
    assert text.startswith("Verdict: ") and "full: " in text and "lora: " in text
    assert "Judged on ROUGE-L." in text  # eval ran with semantic=False
    md = (built["out"] / "report.md").read_text()
    first = next(b for b in md.split("\n\n") if b.strip() and not b.startswith("#"))
    assert first.strip() == text
    page = (built["out"] / "report.html").read_text()
    assert page.index("<p>") < page.index("<table>")
    assert re.search(r"<p>(.*?)</p>", page, flags=re.S).group(1) == html.escape(text)


def test_headline_numbers_match_metrics_json(built: dict) -> None:
    md = (built["out"] / "report.md").read_text()
    metrics = built["metrics"]
    table = md_table(md, "## Answer quality")
    header = table.pop("metric")
    assert header == ["base", "full", "lora", "echo (floor)"]
    labels = {label: key for key, _, label in results.METRICS}
    assert {labels[label] for label in table} >= {
        "rouge1",
        "rougeL",
        "bleu",
        "answer_words",
        "empty_rate",
    }
    for label, cells in table.items():
        key = labels[label]
        systems = [metrics["metrics"][n] for n in ("base", "full", "lora")] + [
            metrics["floors"]["echo"]
        ]
        assert cells == [results.fmt_ci(key, s[key]) for s in systems], label
    # BLEU with the answer length right under it.
    keys = [labels[label] for label in table]
    assert keys[keys.index("bleu") + 1] == "answer_words"
    assert results.NOT_READ_ALONE in md


def test_change_vs_base_is_in_absolute_points(built: dict) -> None:
    md = (built["out"] / "report.md").read_text()
    table = md_table(md, "## Change vs base")
    assert table.pop("metric") == ["full - base", "lora - base"]
    comps = {c["a"]: c["metrics"] for c in built["metrics"]["comparisons"] if c["b"] == "base"}
    rouge_l = table["ROUGE-L F1"]
    for cell, name in zip(rouge_l, ["full", "lora"], strict=True):
        v = comps[name]["rougeL"]
        assert cell.startswith(results.fmt_value("rougeL", v["diff"], sign=True) + " [")
        assert ("p<0.001" in cell) == (v["p_value"] < 0.001)
    assert "%" not in "".join(c for cells in table.values() for c in cells)


def test_training_cost_from_train_summaries(built: dict) -> None:
    md = (built["out"] / "report.md").read_text()
    table = md_table(md, "## Training cost")
    header = table.pop("run")
    assert set(table) == {"full", "lora"}  # base_model is not a run folder
    for name, cells in table.items():
        summary = json.loads((built["runs"][name] / "train_summary.json").read_text())
        row = dict(zip(header, cells, strict=True))
        assert row["method"] == name
        assert row["trainable params"] == f"{summary['trainable_params']:,}"
        assert row["examples/s"] == f"{summary['examples_per_s']:,.2f}"


def test_examples_with_largest_gain_and_loss(built: dict) -> None:
    md = (built["out"] / "report.md").read_text()
    rows, metrics = built["rows"], built["metrics"]
    focus = rp.focus_model(metrics, "rougeL")
    assert f"## Largest gains and losses: {focus} vs base, by per-example ROUGE-L F1" in md
    gains = [r["scores"][focus]["rougeL"] - r["scores"]["base"]["rougeL"] for r in rows]
    best, worst = rp.gain_examples(rows, focus, "base", "rougeL")
    assert len(best) <= 10 and len(worst) <= 10
    assert all(gains[i] > 0 for i in best) and all(gains[i] < 0 for i in worst)
    assert best or worst  # the micro models differ from the base somewhere
    first = (best or worst)[0]
    assert first == int(np.argmax(gains) if best else np.argmin(gains))
    assert f"**1. {rows[first]['id']}:" in md


def test_gain_examples_pick_the_largest_gains_and_losses() -> None:
    def row(mine: float, base: float) -> dict:
        return {"scores": {"m": {"r": mine}, "base": {"r": base}}}

    rows = [row(0.5, 0.1), row(0.2, 0.2), row(0.1, 0.6), row(0.9, 0.3), row(0.3, 0.4)]
    best, worst = rp.gain_examples(rows, "m", "base", "r", k=2)
    assert best == [3, 0] and worst == [2, 4]  # ties (row 1) are neither


def test_html_is_self_contained(built: dict) -> None:
    from PIL import Image

    page = (built["out"] / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == len(PNGS)
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG"
    # Nothing is fetched: every src is a data URI, no scripts, no linked stylesheets.
    assert not re.search(r"""src=['"](?!data:)""", page)
    assert "<script" not in page and "<link" not in page


def test_loss_history_reads_train_and_eval_points(built: dict) -> None:
    h = rp.loss_history(built["runs"]["full"])
    lines = [json.loads(line) for line in (built["runs"]["full"] / "metrics.jsonl").open()]
    assert len(h["train"]) == sum("loss" in r for r in lines) > 0
    assert len(h["eval"]) == sum("eval_loss" in r for r in lines) > 0
    assert rp.loss_history(built["out"]) == {"train": [], "eval": []}


def test_runs_are_discovered_and_bad_runs_refused(built: dict, tmp_path: Path) -> None:
    runs = rp.discover_runs(built["metrics"], [built["runs"]["full"]])
    assert list(runs) == ["full", "lora"]  # --runs of an already found run adds nothing
    argv = ["report", str(built["eval"]), "--runs", str(tmp_path), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2  # no eval files


def test_loss_history_survives_a_torn_line_and_repeated_steps(tmp_path, caplog) -> None:
    from medchat.report.report import loss_history

    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.5}\n{"step": 2, "eval_loss": 2.7}\n'
        '{"step": 2, "loss": 2.4}\n{"step": 3, "loss": 2.0}\n{"step": 4, "lo'
    )
    hist = loss_history(tmp_path)
    assert hist == {"train": [(1, 3.0), (2, 2.4), (3, 2.0)], "eval": [(2, 2.7)]}
    assert "metrics.jsonl: line 6 is not a complete JSON row" in caplog.text
