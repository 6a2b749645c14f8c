"""`medchat compare` across three runs and `medchat sweep` over a 2x2 grid, on the micro model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medchat.cli import main
from medchat.errors import MedchatError
from medchat.eval import evaluate as ev
from medchat.fileio import read_jsonl
from medchat.sweep import parse_grid, plan, run_name
from tests.conftest import MICRO, requires, train_micro
from tests.report.test_report import md_table

pytestmark = requires("matplotlib", "rouge_score")


def eval_rows(run: Path) -> list[dict]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if "eval_loss" in r]


@pytest.fixture(scope="module")
def three(tiny_runs, medquad_prepared, tmp_path_factory) -> dict[str, Path]:
    """The session's full and lora runs, and a full run with another learning rate."""
    root = tmp_path_factory.mktemp("compare")
    slow = train_micro(medquad_prepared, root / "full-slow", "full", "train.learning_rate=3e-4")
    return {"full": tiny_runs["full"], "lora": tiny_runs["lora"], "full-slow": slow}


def test_compare_puts_three_runs_side_by_side(three, medquad_prepared, tmp_path) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # micro models: threads only add contention on a shared box
    models = [ev.ModelSpec("full", str(three["full"])), ev.ModelSpec("lora", str(three["lora"]))]
    ev.evaluate(
        medquad_prepared, models, tmp_path / "eval", limit=8, generation={"max_new_tokens": 4},
        cache_dir=tmp_path / "cache", semantic=False, progress=False,
    )  # fmt: skip
    torch.set_num_threads(threads)
    out = tmp_path / "cmp"
    runs = [str(p) for p in three.values()]
    assert main(["compare", *runs, "--out", str(out), "--eval", str(tmp_path / "eval")]) == 0

    md = (out / "compare.md").read_text()
    record = json.loads((out / "comparison.json").read_text())
    # Ranked by the lowest eval loss at each run's best checkpoint.
    best = {n: min(r["eval_loss"] for r in eval_rows(p)) for n, p in three.items()}
    assert record["order"] == sorted(best, key=best.get)
    assert md.index("medchat run comparison") < md.index(f"{record['order'][0]} first")

    differ = md_table(md, "## What differs")
    assert differ["run"][:2] == ["train.method", "train.learning_rate"]
    assert differ["full-slow"][:2] == ["full", "0.0003"] and differ["lora"][0] == "lora"
    assert "model.tiny.d_model" not in differ["run"]  # the same in every run: not shown

    val = md_table(md, "## Validation during training")
    assert val["rank"][:3] == ["run", "best checkpoint", "chosen by"]
    for name, run in three.items():
        row = val[str(record["order"].index(name) + 1)]
        at_best = next(r for r in eval_rows(run) if r["eval_loss"] == best[name])
        assert row[:3] == [name, f"step {at_best['step']}", "eval_loss"]
        assert row[3] == f"{at_best['eval_loss']:.4f}" and row[4] == f"{at_best['eval_rougeL']:.2f}"

    cost = md_table(md, "## Cost")
    for name, run in three.items():
        summary = json.loads((run / "train_summary.json").read_text())
        assert cost[name][3] == f"{summary['wall_time_s']:,.1f}"
        assert cost[name][7] == f"{summary['trainable_params']:,}"

    tests = md_table(md, "## Test metrics")
    assert tests["metric"] == ["full", "lora", "echo (floor)"]  # evaluated together
    assert "Not evaluated there: full-slow." in md

    from PIL import Image

    with Image.open(out / "curves.png") as img:
        assert img.size[0] > 1000  # one panel per validation figure
    html = (out / "compare.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html


def test_compare_errors_are_clear(three, tmp_path) -> None:
    with pytest.raises(MedchatError, match="at least two"):
        from medchat.report.compare import compare

        compare([three["full"]], tmp_path / "x")
    assert main(["compare", str(three["full"]), str(tmp_path), "--out", str(tmp_path / "y")]) == 2


# ----------------------------------------------------------------------------- sweep


def test_grid_parsing_and_names() -> None:
    assert parse_grid(["train.learning_rate=1e-3,3e-4", "lora.r=4,8"]) == [
        ("train.learning_rate", ["1e-3", "3e-4"]), ("lora.r", ["4", "8"]),
    ]  # fmt: skip
    assert run_name([("train.learning_rate", "1e-3"), ("lora.r", "8")]) == "learning_rate-1e-3_r-8"
    assert run_name([("lora.dropout", "0.1"), ("train.dropout", "0")]) == (
        "lora.dropout-0.1_train.dropout-0"
    )
    with pytest.raises(MedchatError) as err:
        parse_grid(["train.learning_rate", "lora.r=", "lora.r=4,4"])
    assert str(err.value).count("\n  - ") == 3
    with pytest.raises(MedchatError) as err:  # every bad point, before anything trains
        plan(None, ["train.method=full,sgd", "train.batch_size=0,8"], MICRO)
    text = str(err.value)
    assert "- method-sgd_batch_size-8:" in text and "'sgd' is not one of full" in text
    assert "- method-full_batch_size-0:" in text and "batch_size: must be > 0" in text
    assert "method-full_batch_size-8" not in text


def test_sweep_trains_a_2x2_grid_skips_finished_runs_and_ranks(medquad_prepared, tmp_path) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(medquad_prepared), "--out", str(out),
            "--grid", "train.learning_rate=3e-3,3e-4", "--grid", "train.batch_size=8,16",
            *MICRO, "train.max_steps=8", "train.generation_eval_examples=4",
            "train.generation_eval_semantic=false"]  # fmt: skip
    assert main(args) == 0
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == sorted(
        f"learning_rate-{lr}_batch_size-{bs}" for lr in ("3e-3", "3e-4") for bs in (8, 16)
    )
    for name in names:  # each run trained with its own point of the grid
        cfg = (out / "runs" / name / "config.yaml").read_text()
        lr, bs = name.removeprefix("learning_rate-").split("_batch_size-")
        assert f"learning_rate: {float(lr)}" in cfg and f"batch_size: {bs}" in cfg
        # ROUGE-L at each evaluation, semantic similarity off as asked.
        rows = eval_rows(out / "runs" / name)
        assert all("eval_rougeL" in r and "eval_semantic" not in r for r in rows)
    record = json.loads((out / "compare" / "comparison.json").read_text())
    best = {n: min(r["eval_loss"] for r in eval_rows(out / "runs" / n)) for n in names}
    assert record["rank_by"] == "eval_loss" and record["order"] == sorted(best, key=best.get)
    assert (out / "compare" / "compare.md").is_file()

    # Rerun: the finished runs are skipped (their files untouched), and the ranking is rewritten.
    stamps = {n: (out / "runs" / n / "train_summary.json").stat().st_mtime_ns for n in names}
    (out / "compare" / "comparison.json").unlink()
    assert main([*args, "--rank-by", "rougeL"]) == 0
    assert {
        n: (out / "runs" / n / "train_summary.json").stat().st_mtime_ns for n in names
    } == stamps
    record = json.loads((out / "compare" / "comparison.json").read_text())
    rouge = {n: record["best"][n]["eval_rougeL"] for n in names}
    assert record["rank_by"] == "rougeL" and record["order"] == sorted(
        names, key=lambda n: -rouge[n]
    )

    # A different grid into the same folder is refused, not mixed in.
    other = [a.replace("3e-3,3e-4", "1e-3,3e-4") for a in args]
    with pytest.raises(MedchatError, match="holds a different sweep"):
        from medchat.sweep import sweep

        sweep(None, medquad_prepared, out, ["train.learning_rate=1e-3,3e-4"], overrides=MICRO)
    assert main(other) == 2
