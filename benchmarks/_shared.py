"""Helpers shared by the benchmarks: a flan-t5-base-shaped model with random weights, offline.

Cost (time, memory) does not depend on the weight values, so random weights stand in for the real
google/flan-t5-base here, where the hub cannot be reached. The tokenizer is trained on the data so
token lengths resemble a real subword tokenizer's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medchat.models import modeling
from medchat.prompts import format_prompt

BENCH_CACHE = Path(__file__).resolve().parents[1] / ".dev" / "bench"


def read_rows(data_dir: Path, split: str) -> list[dict]:
    with open(Path(data_dir) / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def base_shaped_model_dir(data_dir: Path, cache: Path = BENCH_CACHE, seed: int = 0) -> Path:
    """Save (once) a flan-t5-base-shaped random model and a 32k tokenizer trained on the data."""
    out = cache / "flan-t5-base-shaped"
    if (out / "config.json").is_file():
        return out
    rows = read_rows(data_dir, "train")
    texts = (t for r in rows for t in (format_prompt(r["question"]), r["answer"]))
    tokenizer = modeling.train_tiny_tokenizer(texts, vocab_size=32000)
    model = modeling.build_model_from_config(modeling.flan_t5_base_shaped_config(32128), seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
