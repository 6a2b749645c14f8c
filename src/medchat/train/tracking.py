"""Experiment tracking beyond TensorBoard: MLflow (local-first) and W&B, chosen by train.report_to.

MLflow is driven by our own small callback through `MlflowClient` rather than transformers'
MLflowCallback, which logs TrainingArguments and the model config as params and would upload the
whole output dir as artifacts. We record exactly: the resolved config as params
(`train.learning_rate`), every numeric value of the Trainer's logs per step, and the run folder's
small files as artifacts. With no `MLFLOW_TRACKING_URI` the store is a SQLite file beside the run
folders (`<parent>/mlflow.db`, artifacts in `<parent>/mlartifacts`): MLflow 3 made SQLite its
default backend and refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set. The run id is
kept in `<run>/mlflow.json`, so a resumed training and `medchat eval` find the same MLflow run.
W&B is transformers' WandbCallback, passed through.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medchat.config import Config, config_to_dict
from medchat.console import console
from medchat.errors import MedchatError
from medchat.fileio import read_json, write_json
from medchat.runinfo import missing_modules
from medchat.runs import CARD, CONFIG, MANIFEST, RUN_INFO, SUMMARY, read_summary

RECORD = "mlflow.json"  # in a run folder: where its MLflow run lives
EXPERIMENT = "medchat"  # default experiment name (MLFLOW_EXPERIMENT_NAME overrides)
INSTALL = "pip install 'medchat[track]'"
# The run folder's small files that explain it; checkpoints and weights stay out of the store.
ARTIFACTS = (CARD, SUMMARY, MANIFEST, CONFIG, RUN_INFO)


def check_report_to(report_to: Iterable[str]) -> None:
    """Fail early, in one line, when a requested tracker is not installed."""
    wanted = set(report_to)
    if "wandb" in wanted and missing_modules("wandb"):
        raise MedchatError(
            "train.report_to includes wandb, which is not installed: pip install wandb"
        )
    if "mlflow" in wanted:
        # The default local store is SQLite, which MLflow drives through sqlalchemy and alembic.
        needed = (
            ("mlflow",)
            if os.environ.get("MLFLOW_TRACKING_URI")
            else ("mlflow", "sqlalchemy", "alembic")
        )
        missing = missing_modules(*needed)
        if missing:
            raise MedchatError(
                f"train.report_to includes mlflow, but {', '.join(missing)} is not installed: {INSTALL}"
            )


def hf_report_to(report_to: Iterable[str]) -> list[str] | str:
    """What transformers should report to: everything but mlflow, which our callback does."""
    rest = [r for r in report_to if r != "mlflow"]
    return rest or "none"


def default_tracking_uri(run_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else a SQLite store beside the run folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_store_dir(run_dir) / 'mlflow.db'}"


def _store_dir(run_dir: Path) -> Path:
    return Path(run_dir).resolve().parent


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params: {'train.learning_rate': '0.0003', ...}."""
    out: dict[str, str] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = str(value)

    walk(config_to_dict(cfg), "")
    return out


def numeric(logs: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a log dict (bools and text are not metrics)."""
    return {
        k: float(v)
        for k, v in logs.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [Metric(k, v, now, step) for k, v in metrics.items()]
    for i in range(0, len(rows), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=rows[i : i + 1000])


def _experiment_id(client: Any, uri: str, run_dir: Path) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # Our own SQLite store keeps artifacts beside it too (else MLflow uses ./mlruns of the cwd).
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (_store_dir(run_dir) / "mlartifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another run created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


class MlflowRun:
    """One run folder's MLflow run: params at the start, metrics per log, artifacts at the end."""

    def __init__(self, uri: str, run_id: str, run_dir: Path) -> None:
        self.uri, self.run_id, self.run_dir = uri, run_id, run_dir
        self.client = _client(uri)

    def log(self, logs: Mapping[str, Any], step: int) -> None:
        metrics = numeric(logs)
        if metrics:
            _log_metrics(self.client, self.run_id, metrics, step)

    def callback(self):
        """A TrainerCallback sending every numeric log value (loss, eval_*) at its step."""
        from transformers import TrainerCallback

        run = self

        class MlflowLogCallback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if state.is_world_process_zero and logs:
                    run.log(logs, state.global_step)

        return MlflowLogCallback()

    def finish(self) -> None:
        """Upload the run folder's small files and mark the run finished."""
        for name in ARTIFACTS:
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, "FINISHED")


def start(cfg: Config, run_dir: Path, *, resume: bool, main: bool) -> MlflowRun | None:
    """The MLflow run of this training (None without mlflow in report_to, or off rank 0).

    A resumed training continues the run recorded in the run folder."""
    if "mlflow" not in cfg.train.report_to or not main:
        return None
    record = read_json(run_dir / RECORD) if resume and (run_dir / RECORD).is_file() else None
    if record:
        run = MlflowRun(record["tracking_uri"], record["run_id"], run_dir)
        run.client.update_run(run.run_id, status="RUNNING")
        return run
    uri = default_tracking_uri(run_dir)
    client = _client(uri)
    info = client.create_run(
        _experiment_id(client, uri, run_dir),
        run_name=run_dir.name,
        tags={"medchat.run_dir": str(run_dir.resolve()), "medchat.method": cfg.train.method},
    ).info
    params = sorted(flat_params(cfg).items())
    from mlflow.entities import Param

    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(info.run_id, params=[Param(k, v) for k, v in params[i : i + 100]])
    record = {"tracking_uri": uri, "experiment_id": info.experiment_id, "run_id": info.run_id}
    write_json(run_dir / RECORD, record)
    return MlflowRun(uri, info.run_id, run_dir)


# ----------------------------------------------------------------------------- eval


def eval_metrics(result: Mapping[str, Any], name: str) -> dict[str, float]:
    """Corpus metrics of model `name` (and its NAME+mode systems) keyed like `test_rougeL`,
    `test_rag_rougeL`."""
    split = result["data"]["split"]
    out: dict[str, float] = {}
    for system, metrics in result["metrics"].items():
        if system != name and not system.startswith(name + "+"):
            continue
        mode = system[len(name) + 1 :]
        prefix = f"{split}_{mode}_" if mode else f"{split}_"
        for key, entry in metrics.items():
            if entry.get("value") is not None:
                out[prefix + key] = float(entry["value"])
    return out


def log_eval(runs: Iterable[tuple[str, Path]], result: Mapping[str, Any], out: Path) -> None:
    """Add eval metrics (and metrics.json) to the MLflow run of each (name, run folder) that has
    one. Never fails the evaluation, which is already written: a problem is one printed line."""
    for name, run_dir in runs:
        record_path = Path(run_dir) / RECORD
        if not record_path.is_file():
            continue
        record = read_json(record_path)
        metrics = eval_metrics(result, name)
        if not metrics:
            continue
        why = f"mlflow is not installed ({INSTALL})" if missing_modules("mlflow") else None
        if why is None:
            why = _log_eval_run(record, metrics, Path(run_dir), out)
        if why:
            console.print(
                f"{run_dir}: eval metrics not added to MLflow run {record['run_id']}: {why}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


def _log_eval_run(
    record: Mapping[str, Any], metrics: Mapping[str, float], run_dir: Path, out: Path
) -> str | None:
    """Log to one recorded run; the reason it failed, or None."""
    try:
        client = _client(record["tracking_uri"])
        step = int((read_summary(run_dir) or {}).get("steps") or 0)
        _log_metrics(client, record["run_id"], metrics, step)
        if (out / "metrics.json").is_file():
            client.log_artifact(record["run_id"], str(out / "metrics.json"), f"eval/{out.name}")
    except ImportError as e:  # e.g. the SQLite store without sqlalchemy
        return f"{e} ({INSTALL})"
    except Exception as e:  # the store moved, a server is down: eval's own files are written
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None
