"""`medchat demo`: the whole job in one command, offline, in minutes on 2 CPU cores.

prepare data -> train the tiny model full, LoRA and QLoRA (where bitsandbytes runs) -> evaluate
base vs each -> write the report -> print where it is and how to compare the models in the UI.
With `--model google/flan-t5-base` (online, ideally on a GPU) the same command is the real job.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from medchat.console import console
from medchat.errors import MedchatError

# MedQuAD at the commit the project measured (CC BY 4.0, Ben Abacha & Demner-Fushman 2019).
MEDQUAD_COMMIT = "577bd37b96c02d1833b2c9eed2de9f96964e96cb"
MEDQUAD_URL = f"https://github.com/abachaa/MedQuAD/archive/{MEDQUAD_COMMIT}.tar.gz"
CACHE_DIR = Path(os.environ.get("MEDCHAT_CACHE", Path.home() / ".cache" / "medchat"))

# The micro model and budget of `--quick` (CI's smoke run of the whole path).
QUICK = [
    "model.tiny.vocab_size=1000", "model.tiny.d_model=64", "model.tiny.d_ff=128", "model.tiny.d_kv=16",
    "model.tiny.num_heads=4", "model.tiny.num_layers=1", "data.max_train_examples=256",
    "data.max_eval_examples=32", "train.max_steps=12", "train.eval_steps=6",
]  # fmt: skip


# The shipped sample is a few hundred rows, not thousands: more epochs so the fine-tuned models
# visibly learn its answer style, and a larger test share so the report has examples to compare.
SAMPLE_BUDGET = ["train.num_epochs=12", "train.eval_steps=20", "train.logging_steps=5"]
SAMPLE_SPLIT = {"val_frac": 0.1, "test_frac": 0.2}

# The tiny preset's budget, used when configs/ is not beside the package (a wheel install).
TINY_FALLBACK = [
    "data.max_source_length=64", "data.max_target_length=128", "data.max_train_examples=2000",
    "data.max_eval_examples=200", "train.num_epochs=1", "train.batch_size=16",
    "train.eval_strategy=steps", "train.eval_steps=50", "train.learning_rate=2e-3",
]  # fmt: skip


@dataclass
class DataChoice:
    source: str
    why: str


def sample_data_path() -> Path:
    """The small illustrative sample that ships with medchat (not medical advice)."""
    return Path(str(importlib.resources.files("medchat") / "resources" / "sample_qa.jsonl"))


def _cached_medquad() -> Path | None:
    for candidate in (CACHE_DIR / "MedQuAD.tar.gz", CACHE_DIR / "MedQuAD"):
        if candidate.exists():
            return candidate
    return None


def _download_medquad(timeout: float = 15.0) -> Path | None:
    """Fetch MedQuAD from its public repository into the cache; None when offline."""
    target = CACHE_DIR / "MedQuAD.tar.gz"
    tmp = target.with_suffix(".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(MEDQUAD_URL, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        os.replace(tmp, target)
        return target
    except OSError:
        tmp.unlink(missing_ok=True)
        return None


def choose_data(data: str | None, allow_download: bool = True) -> DataChoice:
    """--data; else MedQuAD in the user cache; else a download when online; else the sample."""
    if data:
        return DataChoice(data, "given with --data")
    cached = _cached_medquad()
    if cached:
        return DataChoice(str(cached), f"MedQuAD found in the cache ({cached})")
    if allow_download and os.environ.get("HF_HUB_OFFLINE") != "1":
        downloaded = _download_medquad()
        if downloaded:
            return DataChoice(str(downloaded), f"MedQuAD downloaded into {downloaded}")
    return DataChoice(
        str(sample_data_path()),
        "no MedQuAD copy in the cache and no internet: using the small illustrative sample that "
        "ships with medchat (general health questions written for the project, not medical "
        f"advice). For real data: medchat demo --data /path/to/MedQuAD.tar.gz, or put it at {CACHE_DIR / 'MedQuAD.tar.gz'}",
    )


def _qlora_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return False
    return True


def _stage(n: int, total: int, text: str) -> None:
    console.rule(f"[bold]{n}/{total} {text}")


def demo(
    data: str | None = None,
    out: str | Path = "medchat-demo",
    *,
    model: str = "tiny",
    quick: bool = False,
    overwrite: bool = False,
    limit: int | None = None,
    allow_download: bool = True,
) -> Path:
    """Run prepare -> train (full, LoRA, QLoRA) -> eval -> report; returns the report folder."""
    from medchat.config import load_config
    from medchat.data.prepare import PrepareOptions, prepare
    from medchat.eval.evaluate import ModelSpec, evaluate
    from medchat.eval.verdict import verdict
    from medchat.fileio import read_json
    from medchat.report.report import report
    from medchat.train.model_card import record_evaluation
    from medchat.train.train import train

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MedchatError(
            f"{out}: already exists; pass --overwrite to replace it, or choose --out"
        )
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    methods = ["full", "lora"] + (["qlora"] if _qlora_available() else [])
    total = 3 + len(methods)

    _stage(1, total, "data")
    choice = choose_data(data, allow_download)
    console.print(f"data: {choice.source}\n  why: {choice.why}", soft_wrap=True)
    data_dir = out / "data"
    is_sample = choice.source == str(sample_data_path())
    prepare(
        choice.source,
        data_dir,
        PrepareOptions(**(SAMPLE_SPLIT if is_sample else {})),
        overwrite=True,
    )

    family = "tiny" if model == "tiny" else "flan-t5-base"
    presets = Path(__file__).resolve().parents[2] / "configs"
    runs: dict[str, Path] = {}
    for i, method in enumerate(methods, start=2):
        _stage(i, total, f"train {method}")
        preset = presets / f"{family}-{method}.yaml"
        overrides = [f"train.method={method}", f"model.name={model}"]
        if not preset.is_file() and model == "tiny":
            overrides = TINY_FALLBACK + overrides
        if quick and model == "tiny":
            overrides += QUICK
        elif is_sample and model == "tiny":
            overrides += SAMPLE_BUDGET
        cfg = load_config(preset if preset.is_file() else None, overrides)
        runs[method] = train(cfg, data_dir, out / "runs" / method, overwrite=True)
    if not methods:
        raise MedchatError("no training method could run")

    _stage(total - 1, total, "evaluate base vs fine-tuned")
    first = runs[methods[0]]
    base_spec = str(first / "base_model") if model == "tiny" else model
    specs = [ModelSpec("base", base_spec)] + [ModelSpec(m, str(p)) for m, p in runs.items()]
    # The tiny model writes long nonsense; cap its answers so the demo stays within minutes.
    generation = {"max_new_tokens": 32 if quick else 96} if model == "tiny" else {}
    eval_dir = out / "eval"
    evaluate(
        data_dir, specs, eval_dir, limit=limit or (16 if quick else 100),
        generation=generation, semantic=not quick, overwrite=True,
    )  # fmt: skip
    record_evaluation(eval_dir)

    _stage(total, total, "report")
    report_dir = report(eval_dir, out / "report", runs=list(runs.values()), overwrite=True)
    minutes = (time.perf_counter() - start) / 60
    ui = " ".join(f"--model {m}={p}" for m, p in runs.items())
    console.print(
        f"\n[bold green]demo finished in {minutes:.1f} min.[/]\n"
        f"report: {report_dir / 'report.html'} (and report.md)\n"
        f"compare the models side by side in your browser:\n"
        f"  medchat ui --model base={base_spec} {ui} --data {data_dir}",
        soft_wrap=True,  # keep the command on one line so it can be copied
    )
    # Last, so the reader leaves with it; markup off: intervals are written in [brackets].
    console.print("\n" + verdict(read_json(eval_dir / "metrics.json")), markup=False)
    return report_dir


def demo_command(args) -> None:
    demo(
        args.data,
        args.out,
        model=args.model,
        quick=args.quick,
        overwrite=args.overwrite,
        limit=args.limit,
    )
