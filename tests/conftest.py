"""Shared test fixtures: where ../shared/data lives, and skip markers for optional extras."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDCHAT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MEDQUAD_TGZ = SHARED_DATA / "medquad" / "MedQuAD.tar.gz"
KAGGLE_TRAIN = SHARED_DATA / "kaggle-format" / "train_data_chatbot.csv"
KAGGLE_VAL = SHARED_DATA / "kaggle-format" / "validation_data_chatbot.csv"

# Tests never reach the network: the hub is off and gradio's analytics are off.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# `--backend auto` remembers its measured choice; tests never write the user's own file.
os.environ.setdefault(
    "MEDCHAT_BACKEND_CHOICES",
    str(Path(tempfile.mkdtemp(prefix="medchat-tests-")) / "backend_choices.json"),
)


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def requires(*modules: str) -> pytest.MarkDecorator:
    """Skip a test cleanly when an optional extra's module is missing, naming it."""
    missing = [m for m in modules if not has_module(m)]
    return pytest.mark.skipif(
        bool(missing), reason=f"needs optional module(s): {', '.join(missing)}"
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


def write_medquad_like_archive(out: Path) -> Path:
    """A MedQuAD-format .tar.gz (one <Document> per focus, in two subset folders, with URLs)
    built from the sample Q&A that ships with medchat: the real MedQuAD loader and preparation
    path, on data in the repo, so a clone without ../shared runs the same tests."""
    import io
    import json
    import tarfile
    from xml.sax.saxutils import escape, quoteattr

    sample = REPO_ROOT / "src" / "medchat" / "resources" / "sample_qa.jsonl"
    rows = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines()]
    by_focus: dict[str, list[dict]] = {}
    for r in rows:
        by_focus.setdefault(r["focus"], []).append(r)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tf:
        for i, (focus, pairs) in enumerate(sorted(by_focus.items()), 1):
            doc_id = f"{i:07d}"
            slug = "-".join(focus.lower().split())
            url = f"https://medlineplus.example/sample/{slug}"
            qa = "".join(
                f'<QAPair pid="{k}"><Question qid="{doc_id}-{k}" qtype={quoteattr(p["qtype"])}>'
                f"{escape(p['question'])}</Question><Answer>{escape(p['answer'])}</Answer></QAPair>"
                for k, p in enumerate(pairs, 1)
            )
            xml = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Document id="{doc_id}" '
                f'source="SAMPLE" url={quoteattr(url)}><Focus>{escape(focus)}</Focus>'
                f"<QAPairs>{qa}</QAPairs></Document>\n"
            ).encode()
            info = tarfile.TarInfo(f"MedQuAD/{1 + i % 2}_Sample_QA/{doc_id}.xml")
            info.size = len(xml)
            tf.addfile(info, io.BytesIO(xml))
    return out


@pytest.fixture(scope="session")
def medquad_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MedQuAD-format archive built from the repo's sample, prepared once per session through
    the real CLI. Tests that need the real corpus use `real_medquad_prepared`."""
    from medchat.cli import main

    root = tmp_path_factory.mktemp("medquad")
    archive = write_medquad_like_archive(root / "MedQuAD.tar.gz")
    out = root / "data"
    # 66 documents: larger held-out shares, so validation and test have a few dozen rows each
    argv = ["data", "prepare", str(archive), "--out", str(out), "--tokenizer", "words",
            "--val-frac", "0.15", "--test-frac", "0.25"]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def real_medquad_prepared(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MedQuAD archive (../shared/data) prepared once per session through the real CLI."""
    from medchat.cli import main

    if not MEDQUAD_TGZ.is_file():
        pytest.skip(f"MedQuAD archive not found at {MEDQUAD_TGZ}")
    out = tmp_path_factory.mktemp("medquad-real") / "data"
    argv = ["data", "prepare", str(MEDQUAD_TGZ), "--out", str(out), "--tokenizer", "words"]
    assert main(argv) == 0
    return out


# A micro model and budget: enough steps for loss to fall and every parameter to move, in seconds.
MICRO = [
    "model.name=tiny",
    "model.tiny.vocab_size=1000",
    "model.tiny.d_model=64",
    "model.tiny.d_ff=128",
    "model.tiny.d_kv=16",
    "model.tiny.num_heads=4",
    "model.tiny.num_layers=1",
    "data.max_source_length=48",
    "data.max_target_length=48",
    "data.max_train_examples=256",
    "data.max_eval_examples=64",
    "train.max_steps=16",
    "train.batch_size=16",
    "train.eval_batch_size=32",
    "train.eval_strategy=steps",
    "train.eval_steps=8",
    "train.logging_steps=4",
    "train.learning_rate=3e-3",
    "train.warmup_ratio=0.0",
    "train.early_stopping_patience=0",
    "train.generation_eval_examples=8",  # generation metrics on, on a few answers
]


def train_micro(data_dir: Path, out: Path, method: str, *extra: str) -> Path:
    """Train the micro model with `method` into `out` (the real `train()` path)."""
    from medchat.config import load_config
    from medchat.train.train import train

    cfg = load_config(None, [*MICRO, f"train.method={method}", *extra])
    return train(cfg, data_dir, out, overwrite=True)


@pytest.fixture(scope="session")
def tiny_runs(medquad_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run dirs of the micro model trained full, LoRA and (where bitsandbytes runs) QLoRA."""
    root = tmp_path_factory.mktemp("runs")
    methods = ["full", "lora"] + (["qlora"] if has_module("bitsandbytes") else [])
    return {m: train_micro(medquad_prepared, root / m, m) for m in methods}


# Checks that need the real corpus (../shared/data): marked `medquad` wherever they ask for it,
# and without it skipped with one line that says so (CI refuses to run without the corpus).
_REAL_DATA_FIXTURES = {"shared_data", "real_medquad_prepared"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = not SHARED_DATA.is_dir()
    for item in items:
        if _REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.medquad)
        if missing and item.get_closest_marker("medquad"):
            item.add_marker(
                pytest.mark.skip(reason=f"needs the real corpus at {SHARED_DATA} (medquad)")
            )
