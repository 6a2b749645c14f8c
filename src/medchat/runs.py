"""A model SPEC, read without loading weights: a run folder written by `medchat train` (full,
LoRA or QLoRA), a local model folder, or a Hugging Face hub id.

`describe(spec)` is the one reader of a run folder's layout: loading (models.modeling), the
side-by-side group (infer.model_group), serving backends and eval all start from it, so a
folder is judged, and its problems are worded, the same way everywhere.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medchat.errors import MedchatError
from medchat.fileio import read_log_jsonl
from medchat.prompts import DEFAULT_TEMPLATE

log = logging.getLogger(__name__)

# The files of a run folder (written by train.train; read here, and only here).
RUN_INFO = "run_info.json"  # method, base model, seed, versions: what makes a folder a run
PROMPT = "prompt.txt"
CONFIG = "config.yaml"  # the resolved config
MANIFEST = "data_manifest.json"  # the data it was trained on
SUMMARY = "train_summary.json"  # written when training finishes: cost and best checkpoint
LOG = "metrics.jsonl"  # one row per logging step and evaluation
CARD = "MODEL_CARD.md"
METHODS = ("full", "lora", "qlora")


@dataclass(frozen=True)
class ModelSpec:
    """One `--model NAME=SPEC`: a hub id, a local model folder, or a run folder."""

    name: str
    spec: str


def parse_model_args(values: Sequence[str], reserved: Collection[str] = ()) -> list[ModelSpec]:
    """`--model` values as ModelSpecs, one rule for eval, the UI and the report.

    `NAME=SPEC`, or a bare SPEC: a local folder is named after itself (`runs/lora/` -> `lora`), a
    hub id keeps its id. A NAME never holds a slash, so a path that contains `=` is a bare SPEC.
    Names must be unique and not in `reserved` (the names of eval's floors)."""
    specs = []
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or "/" in name:
            spec = value
            local = reads_as_path(value) or Path(value).expanduser().exists()
            name = (Path(value.rstrip("/")).name or value) if local else value
        if not spec.strip():
            raise MedchatError(
                f"--model {value!r}: empty SPEC; give NAME=SPEC (a run folder, a model folder or "
                "a hub id)"
            )
        if not name.strip():
            raise MedchatError(f"--model {value!r}: empty NAME; e.g. base=google/flan-t5-base")
        specs.append(ModelSpec(name.strip(), spec.strip()))
    if not specs:
        raise MedchatError("give at least one --model NAME=SPEC")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MedchatError(f"--model: names must be unique, {', '.join(dupes)} given twice")
    taken = sorted(set(names) & set(reserved))
    if taken:
        raise MedchatError(f"--model: {taken[0]!r} is the name of an eval floor; pick another name")
    return specs


def reads_as_path(spec: str) -> bool:
    """True when SPEC can only mean a local folder: it starts with ./ ../ / or ~, has more than
    one slash, or its first component is a folder here (`runs/ful` when runs/ exists). Hub ids
    are `name` or `org/name`, so a mistyped run folder is never looked up, or downloaded, there."""
    if spec.startswith(("./", "../", "/", "~")) or spec in (".", "..") or spec.count("/") > 1:
        return True
    first = spec.split("/", 1)[0]
    return "/" in spec and Path(first).is_dir()


def check_spec(spec: str, what: str = "model") -> Path:
    """SPEC as a local path; a missing folder that reads as a path is an error naming it."""
    path = Path(spec).expanduser()
    if not path.exists() and reads_as_path(spec):
        raise MedchatError(
            f"{spec}: no such folder (it reads as a local path, so it is not looked up on the "
            f"Hugging Face Hub); give a run folder, a {what} folder or a hub id"
        )
    return path


def read_run_info(run_dir: Path) -> dict[str, Any] | None:
    """run_info.json of a run folder, or None when the folder has none (not a run)."""
    return read_run_file(run_dir, RUN_INFO)


def is_run(path: str | Path) -> bool:
    """A folder written by `medchat train --out` (it has run_info.json)."""
    return (Path(path) / RUN_INFO).is_file()


def read_run_file(run_dir: str | Path, name: str) -> Any:
    """One of a run's files parsed (JSON, YAML or text by its name), or None when absent."""
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    if path.suffix == ".yaml":
        import yaml

        return yaml.safe_load(text) or {}
    return text


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """train_summary.json, or None for a run that has not finished."""
    return read_run_file(run_dir, SUMMARY)


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (none when absent). A killed run can leave a torn line:
    it is skipped with a warning naming it, instead of losing the whole log."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return []
    rows, notes = read_log_jsonl(path)
    for note in notes:
        log.warning(note)
    return rows


def resolve_base(run_dir: Path, base: str) -> str:
    """A base recorded relative to its run dir (the tiny model) resolves against that dir."""
    candidate = run_dir / base
    return str(candidate) if candidate.exists() else base


@dataclass(frozen=True)
class SpecInfo:
    """What loading a SPEC needs, worked out before any weights are read."""

    spec: str
    path: Path  # SPEC as a local path (it may not exist: a hub id)
    kind: str  # "pretrained" | "full" | "lora" | "qlora"
    weights: str  # the model folder or hub id whose weights are loaded (an adapter's base)
    base: str  # the base model it was trained from (the spec itself when pretrained)
    template: str  # the prompt template it answers with
    tokenizer_from: str
    adapter_dir: str | None = None
    quant: dict[str, Any] | None = None  # QuantSettings fields of a QLoRA run's 4-bit base

    @property
    def quantized(self) -> bool:
        return self.kind == "qlora"


def describe(spec: str) -> SpecInfo:
    """Read SPEC's run_info.json and prompt.txt (if it is a run folder); loads no weights.

    A run folder must have been finished by `medchat train`: its model/ or adapter/ folder is
    checked here, so a broken SPEC fails before any other model spends time.
    """
    path = check_spec(spec)
    info = read_run_info(path) if path.is_dir() else None
    template = read_run_file(path, PROMPT)  # a model folder may carry one too (medchat export)
    if info is None:
        template = DEFAULT_TEMPLATE if template is None else template
        return SpecInfo(spec, path, "pretrained", spec, spec, template, spec)
    method = info.get("method")
    if method not in METHODS or "base_model" not in info:
        raise MedchatError(
            f"{path / RUN_INFO}: needs 'method' (full, lora or qlora) and 'base_model'; "
            "was this folder written by `medchat train`?"
        )
    if template is None:
        raise MedchatError(
            f"{path}: run folder without {PROMPT}; was it written by `medchat train`?"
        )
    base = resolve_base(path, info["base_model"])
    folder = path / ("model" if method == "full" else "adapter")
    if not folder.is_dir():
        raise MedchatError(
            f"{path}: no {folder.name}/ folder; did this run finish? (`medchat train --resume`)"
        )
    if method == "full":
        return SpecInfo(spec, path, "full", str(folder), base, template, str(folder))
    quant = info.get("quant", {}) if method == "qlora" else None
    return SpecInfo(spec, path, method, base, base, template, str(folder), str(folder), quant)
