"""What every output folder records about how it was made: versions, git commit, seed, device."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

_PACKAGES = (
    "medchat", "torch", "transformers", "tokenizers", "peft", "accelerate", "bitsandbytes",
    "datasets", "numpy", "rouge-score", "sacrebleu", "sentence-transformers",
)  # fmt: skip


def missing_modules(*names: str) -> list[str]:
    """The optional modules among `names` that are not installed (without importing any)."""
    import importlib.util

    return [m for m in names if importlib.util.find_spec(m) is None]


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the source checkout medchat runs from (None outside a git checkout)."""
    where = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_description() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_devices"] = torch.cuda.device_count()
    else:
        info["cuda_device"] = None
    info["platform"] = platform.platform()
    return info


def seed_everything(seed: int) -> None:
    """One seed for python, numpy and torch (the data split takes the same seed)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
