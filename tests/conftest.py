"""Shared test fixtures: where ../shared/data lives, and skip markers for optional extras."""

from __future__ import annotations

import importlib.util
import os
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


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def requires(*modules: str) -> pytest.MarkDecorator:
    """Skip a test cleanly when an optional extra's module is missing, naming it."""
    missing = [m for m in modules if not has_module(m)]
    return pytest.mark.skipif(bool(missing), reason=f"needs optional module(s): {', '.join(missing)}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA
