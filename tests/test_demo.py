"""`medchat demo`: the newcomer's one command, run with a reduced budget (--quick)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medchat import demo as demo_mod
from medchat.cli import main
from medchat.eval.verdict import verdict


def test_data_choice_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo_mod, "CACHE_DIR", tmp_path / "cache")
    assert demo_mod.choose_data("given.csv").source == "given.csv"
    # Nothing cached, offline: the shipped sample, saying why.
    choice = demo_mod.choose_data(None, allow_download=False)
    assert choice.source == str(demo_mod.sample_data_path()) and "no MedQuAD" in choice.why
    # A cached MedQuAD wins over the sample.
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "MedQuAD.tar.gz").write_bytes(b"")
    assert demo_mod.choose_data(None, allow_download=False).source.endswith("MedQuAD.tar.gz")


def test_download_failure_falls_back_quietly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo_mod, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(demo_mod, "MEDQUAD_URL", "http://127.0.0.1:9/unreachable.tar.gz")
    assert demo_mod._download_medquad(timeout=2) is None
    assert not list((tmp_path / "cache").glob("*"))  # no partial file left behind


def test_sample_data_ships_and_is_marked_illustrative() -> None:
    rows = [json.loads(x) for x in demo_mod.sample_data_path().read_text().splitlines()]
    assert len(rows) >= 40 and all(r["question"] and r["answer"] for r in rows)
    notice = demo_mod.sample_data_path().with_name("SAMPLE_DATA.md").read_text()
    assert "not medical advice" in notice.lower()


def test_quick_demo_runs_the_whole_path_offline(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(demo_mod, "CACHE_DIR", tmp_path / "cache")  # no MedQuAD: the sample
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    # the sample is split with a larger test share, so the report compares on enough examples
    options = json.loads((out / "data" / "manifest.json").read_text())["options"]
    assert (options["val_frac"], options["test_frac"]) == (0.1, 0.2)
    assert metrics["data"]["n"] == 16  # --quick's limit, reached
    names = set(metrics["model_order"])
    assert {"base", "full", "lora"} <= names
    report = out / "report"
    assert (report / "report.html").stat().st_size > 1000
    assert (report / "report.md").is_file()
    verdict_text = verdict(metrics)
    for run in (out / "runs").iterdir():
        card = (run / "MODEL_CARD.md").read_text()
        # eval wrote each run's metrics vs the base into its model card, the verdict first
        assert "| ROUGE-L F1 |" in card and "base `base`" in card
        assert card.split("## Evaluation\n", 1)[1].startswith(verdict_text + "\n")
    captured = capsys.readouterr()
    err = captured.err
    # the demo's last words are the verdict (rich wraps it to the terminal width)
    assert " ".join(err.split()).endswith(" ".join(verdict_text.split()))
    assert "medchat ui --model base=" in err and "illustrative sample" in err
    # the console shows medchat's progress and results, not the libraries' chatter
    for noise in ("{'loss'", "Loading weights", "Writing model shards", "[transformers]", "it/s]"):
        assert noise not in captured.out + err, noise
    assert "training" in err and "eval loss" in err  # the one progress line per run
    # ... which is kept, not lost: the run folder has the libraries' records
    assert "Running training" in (out / "runs" / "full" / "train.log").read_text()


def test_demo_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path / "x")]) == 2
    assert (tmp_path / "x" / "file").read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.medquad
def test_full_demo_on_medquad(tmp_path: Path) -> None:
    from tests.conftest import MEDQUAD_TGZ

    assert main(["demo", "--data", str(MEDQUAD_TGZ), "--out", str(tmp_path / "d")]) == 0
