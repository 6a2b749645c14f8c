"""Tracking: train.report_to, the MLflow run a training records (read back with MLflow's own
client), resume continuing it, eval joining it, and the one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medchat.config import load_config
from medchat.errors import MedchatError
from medchat.fileio import read_jsonl
from medchat.train import tracking
from tests.conftest import requires, train_micro

needs_mlflow = requires("mlflow", "sqlalchemy", "alembic")
REPORT = "train.report_to=[tensorboard,mlflow]"


@pytest.fixture(scope="module")
def mlflow_run(medquad_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro LoRA run trained with MLflow on, into the default store beside it."""
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        return train_micro(medquad_prepared, root / "run", "lora", REPORT)


def _client(run: Path):
    from mlflow.tracking import MlflowClient

    record = json.loads((run / tracking.RECORD).read_text())
    return MlflowClient(record["tracking_uri"]), record["run_id"]


# ----------------------------------------------------------------------------- config, errors


def test_report_to_override_parses_a_list() -> None:
    assert load_config(None, [REPORT]).train.report_to == ["tensorboard", "mlflow"]
    assert load_config(None).train.report_to == ["tensorboard"]
    assert tracking.hf_report_to(["tensorboard", "mlflow"]) == ["tensorboard"]
    assert tracking.hf_report_to(["mlflow"]) == "none"


def test_unknown_report_to_names_the_allowed_values() -> None:
    with pytest.raises(MedchatError) as e:
        load_config(None, ["train.report_to=[tensorboard,neptune]"])
    assert "train.report_to: 'neptune' is not one of tensorboard, mlflow, wandb" in str(e.value)
    with pytest.raises(MedchatError, match=r"not of type list \(write a list: \[mlflow\]\)"):
        load_config(None, ["train.report_to=mlflow"])


def test_missing_tracker_is_a_one_line_error(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "missing_modules", lambda *modules: list(modules))
    with pytest.raises(MedchatError, match=r"medchat\[track\]") as e:
        tracking.check_report_to(["tensorboard", "mlflow"])
    assert "\n" not in str(e.value)
    with pytest.raises(MedchatError, match="pip install wandb"):
        tracking.check_report_to(["wandb"])
    tracking.check_report_to(["tensorboard"])  # nothing to install


def test_eval_without_mlflow_says_why_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / tracking.RECORD).write_text(json.dumps({"tracking_uri": "x", "run_id": "abc"}))
    result = {"data": {"split": "test"}, "metrics": {"ft": {"rougeL": {"value": 0.2}}}}
    monkeypatch.setattr(tracking, "missing_modules", lambda *modules: list(modules))
    tracking.log_eval([("ft", run)], result, tmp_path / "eval")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "not added to MLflow run abc" in err and "medchat[track]" in err


# ----------------------------------------------------------------------------- the store


@needs_mlflow
def test_training_records_params_metrics_and_artifacts(mlflow_run: Path) -> None:
    record = json.loads((mlflow_run / tracking.RECORD).read_text())
    assert record["tracking_uri"] == f"sqlite:///{mlflow_run.parent / 'mlflow.db'}"
    client, run_id = _client(mlflow_run)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert float(params["train.learning_rate"]) == pytest.approx(3e-3)
    assert params["train.method"] == "lora" and params["model.tiny.d_model"] == "64"
    # Every step the Trainer logged a loss (or eval loss) at is in MLflow's history.
    logged = read_jsonl(mlflow_run / "metrics.jsonl")
    for key in ("loss", "eval_loss", "learning_rate"):
        steps = [r["step"] for r in logged if key in r]
        history = client.get_metric_history(run_id, key)
        assert steps and sorted(m.step for m in history) == steps, key
    assert [m.step for m in client.get_metric_history(run_id, "eval_loss")] == [8, 16]
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"MODEL_CARD.md", "train_summary.json", "data_manifest.json", "config.yaml"} <= names
    # Artifacts live beside the store, not in the working directory's ./mlruns.
    assert (mlflow_run.parent / "mlartifacts").is_dir()


@needs_mlflow
def test_resume_continues_the_same_mlflow_run(mlflow_run: Path, medquad_prepared: Path) -> None:
    from medchat.train.train import train

    client, run_id = _client(mlflow_run)
    train(load_config(mlflow_run / "config.yaml"), medquad_prepared, mlflow_run, resume=True)
    assert json.loads((mlflow_run / tracking.RECORD).read_text())["run_id"] == run_id
    runs = client.search_runs([client.get_run(run_id).info.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"


@needs_mlflow
@requires("rouge_score", "sacrebleu", "nltk", "peft")
def test_eval_adds_its_metrics_to_the_training_run(
    mlflow_run: Path, medquad_prepared: Path, tmp_path: Path
) -> None:
    from medchat.eval import evaluate as ev
    from medchat.train.model_card import record_evaluation

    models = [
        ev.ModelSpec("base", str(mlflow_run / "base_model")),
        ev.ModelSpec("ft", str(mlflow_run)),
    ]
    out = ev.evaluate(
        medquad_prepared, models, tmp_path / "eval", limit=8, semantic=False, progress=False,
        generation={"max_new_tokens": 8, "batch_size": 8}, cache_dir=tmp_path / "cache",
    )  # fmt: skip
    client, run_id = _client(mlflow_run)
    # evaluate() writes only its own folder; the explicit step (`medchat eval` runs it) records.
    assert "test_rougeL" not in client.get_run(run_id).data.metrics
    record_evaluation(out)
    metrics = client.get_run(run_id).data.metrics
    written = json.loads((out / "metrics.json").read_text())["metrics"]["ft"]
    assert metrics["test_rougeL"] == pytest.approx(written["rougeL"]["value"])
    assert "test_bleu" in metrics and "loss" in metrics  # joined the training's own run
    assert [a.path for a in client.list_artifacts(run_id, "eval/eval")] == [
        "eval/eval/metrics.json"
    ]


@needs_mlflow
def test_quiet_console_keeps_mlflow_chatter_off_the_terminal(tmp_path: Path) -> None:
    code = (
        "from medchat.console import quiet_libraries\nquiet_libraries()\n"
        "from mlflow.tracking import MlflowClient\n"
        f"MlflowClient('sqlite:///{tmp_path / 'mlflow.db'}').search_experiments()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
