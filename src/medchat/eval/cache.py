"""The prediction cache of `medchat eval`: a model's answers keyed by everything that can change
them (weights, prompt, data, generation settings, device, precision), so a rerun is instant."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medchat.fileio import read_json, write_json
from medchat.infer.generate import GenerationSettings
from medchat.prompts import MAX_SOURCE_TOKENS

log = logging.getLogger(__name__)

CACHE_ENV = "MEDCHAT_CACHE"
DEFAULT_CACHE = Path("~/.cache/medchat/predictions")
# Bump when answers for the same model/data/settings could change (prompting, decoding code).
CACHE_VERSION = 2  # 2: int8 answers come from infer.backends.quantize_int8 (LoRA merged first)


def default_cache_dir() -> Path:
    """$MEDCHAT_CACHE, else ~/.cache/medchat/predictions."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cache_key(
    model: Mapping[str, Any],
    data_key: str,
    settings: GenerationSettings,
    device: str,
    precision: str = "fp32",
) -> tuple[str, dict[str, Any]]:
    """Key of one model's answers: weights, prompt, data, settings, device and precision."""
    material = {
        "version": CACHE_VERSION,
        "fingerprint": model["fingerprint"],
        "prompt_sha256": hashlib.sha256(model["prompt_template"].encode()).hexdigest(),
        "data_key": data_key,
        # batch_size stays in: padding can move greedy decoding by a rounding error.
        "settings": settings.to_dict(),
        "max_source_length": MAX_SOURCE_TOKENS,  # prompts are cut there
        "device": device,
        "precision": precision,
    }
    if model.get("answer_mode", "generate") != "generate":
        # Only then, so generate-mode keys (and caches) stay what they were.
        material["answer_mode"] = model["answer_mode"]
        material["retrieval"] = model["retrieval"]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24], material


def cache_read(cache_dir: Path, key: str, ids: Sequence[str]) -> list[str] | None:
    """Cached answers for `key`, or None (missing, unreadable, or for other examples)."""
    path = cache_dir / f"{key}.json"
    if not path.is_file():
        return None
    try:
        entry = read_json(path)
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable prediction cache %s: %s", path, e)
        return None
    if entry.get("ids") != list(ids) or len(entry.get("answers", [])) != len(ids):
        return None
    return list(entry["answers"])


def cache_write(
    cache_dir: Path,
    key: str,
    material: dict[str, Any],
    ids: Sequence[str],
    answers: Sequence[str],
    spec: str,
) -> None:
    write_json(
        cache_dir / f"{key}.json",
        {
            "key": key,
            "material": material,
            "spec": spec,
            "ids": list(ids),
            "answers": list(answers),
        },
    )
