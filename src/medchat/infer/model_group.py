"""Several models loaded side by side, with adapters on the same base sharing ONE copy of it.

Used by the comparison UI and the HTTP API. Each named SPEC (as in `load_model_spec`: run dir,
local model dir, hub id) becomes a *column*. Columns whose weights are the same share one loaded
*weight set*:

- LoRA/QLoRA runs on the same base model with the same quantisation load that base once, as one
  PEFT model holding every adapter (`load_adapter` + `set_adapter`); a QLoRA run keeps the 4-bit
  base it was trained on;
- a plain model that IS such a base (the "base" column) is that same PEFT model inside
  `disable_adapter()`, not a second copy;
- plain models given twice load once.

Switching adapters changes the shared model for every thread, so each weight set has a lock and
answering holds it for the whole generation (`ModelGroup.use`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medchat.errors import MedchatError
from medchat.infer.generate import GenerationSettings, StreamStats, generate_answers, stream_answer
from medchat.models import modeling
from medchat.models.modeling import LoadedModel
from medchat.runs import SpecInfo, describe

log = logging.getLogger(__name__)

BASE = "base"

# What each kind of column is, in words (the UI's column headers).
DESCRIPTIONS = {
    "pretrained": "original weights",
    "full": "full fine-tune",
    "lora": "LoRA adapter",
    "qlora": "QLoRA adapter · 4-bit base",
}


# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class _Plan(SpecInfo):
    """What one column needs loaded (its SPEC described), under the column's name."""

    name: str = BASE

    @property
    def key(self) -> tuple[str, str]:
        """Columns with equal keys can share one loaded copy of the weights."""
        return _identity(self.weights), json.dumps(self.quant, sort_keys=True)


def _identity(weights: str) -> str:
    # The same folder reached by two paths (relative, symlinked) is the same weights.
    return os.path.realpath(weights) if Path(weights).exists() else weights


def plan_spec(name: str, spec: str) -> _Plan:
    """What SPEC needs loaded (runs.describe reads its folder); loads no weights."""
    return _Plan(**vars(describe(spec)), name=name)


def base_plan(plans: Sequence[_Plan], name: str = BASE) -> _Plan | None:
    """The base column to add when none was given: the runs' base, costing no memory if possible.

    An adapter run's base is already loaded (the column is it with the adapter off), so LoRA runs
    are preferred, then QLoRA (its 4-bit base), then the base of the first full run.
    """
    runs = [p for p in plans if p.kind != "pretrained"]
    if not runs:
        return None
    pick = min(runs, key=lambda p: ("lora", "qlora", "full").index(p.kind))
    tokenizer_from = pick.tokenizer_from if pick.adapter_dir else pick.base
    return _Plan(pick.base, Path(pick.base), "pretrained", pick.base, pick.base, pick.template,
                 tokenizer_from, quant=pick.quant, name=name)  # fmt: skip


# ----------------------------------------------------------------------------- loaded group


@dataclass(eq=False)
class WeightSet:
    """One loaded copy of weights and the lock that guards it while it answers."""

    key: tuple[str, str]
    model: Any
    quantized: bool
    adapters: dict[str, str] = field(default_factory=dict)  # column name -> PEFT adapter name
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def is_peft(self) -> bool:
        return bool(self.adapters)


@dataclass(eq=False)
class Column:
    """One named model as the UI and API show it; `lm.model` is its (maybe shared) weight set."""

    name: str
    kind: str  # "pretrained" | "full" | "lora" | "qlora"
    spec: str
    lm: LoadedModel
    weights: WeightSet
    adapter: str | None  # PEFT adapter name; None on a PEFT weight set means "adapter off"

    @property
    def description(self) -> str:
        text = DESCRIPTIONS[self.kind]
        if self.kind == "pretrained" and self.weights.quantized:
            text += " · 4-bit"
        if self.kind == "pretrained" and self.weights.is_peft:
            text += " · adapters off"
        return text


class ModelGroup:
    """Named columns over shared weight sets; answer with `stream`, `generate` or `use`."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self._by_name = {c.name: c for c in self.columns}

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __getitem__(self, name: str) -> Column:
        try:
            return self._by_name[name]
        except KeyError:
            raise MedchatError(
                f"no model named {name!r}; loaded: {', '.join(self.names)}"
            ) from None

    @property
    def weight_sets(self) -> list[WeightSet]:
        """The distinct loaded copies of weights, in column order."""
        seen: dict[int, WeightSet] = {}
        for c in self.columns:
            seen.setdefault(id(c.weights), c.weights)
        return list(seen.values())

    def shares_with(self, name: str) -> list[str]:
        """The other columns answering from the same loaded weights as `name`."""
        ws = self[name].weights
        return [c.name for c in self.columns if c.weights is ws and c.name != name]

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[LoadedModel]:
        """Hold the column's weight set, its adapter switched on (or all off), for one job."""
        col = self[name]
        with col.weights.lock:
            if not col.weights.is_peft:
                yield col.lm
            elif col.adapter is None:
                with col.lm.model.disable_adapter():
                    yield col.lm
            else:
                col.lm.model.set_adapter(col.adapter)
                yield col.lm

    def stream(
        self,
        name: str,
        question: str,
        settings: GenerationSettings,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[StreamStats]:
        """Stream one column's answer token by token (see `generate.stream_answer`)."""
        with self.use(name) as lm:
            inner = stream_answer(lm, question, settings, should_stop=should_stop)
            try:
                # not `yield from`: that would close `inner` at once when our caller stops
                for stats in inner:  # noqa: UP028
                    yield stats
            finally:
                # When our caller stops early, closing `inner` stops its generation at the next
                # step and waits for it, so the lock is held until the model is free: another
                # column cannot switch the adapter under a running generate.
                inner.close()

    def generate(
        self,
        name: str,
        questions: Sequence[str],
        settings: GenerationSettings,
        *,
        progress: bool = False,
    ) -> list[str]:
        """Batched answers from one column (see `generate.generate_answers`)."""
        with self.use(name) as lm:
            return generate_answers(lm, questions, settings, progress=progress, description=name)


def _load_weights(plan: _Plan, adapters: list[tuple[str, str]], device: str) -> Any:
    """Load `plan.weights` once; wrap it with every adapter in `adapters` (name, folder)."""
    if plan.quant is not None:
        from medchat.config import QuantSettings

        model = modeling.load_pretrained(plan.weights, quant=QuantSettings(**plan.quant))
    else:
        model = modeling.load_pretrained(plan.weights).to(device)
    if adapters:
        from peft import PeftModel

        (first, folder), *rest = adapters
        model = PeftModel.from_pretrained(model, folder, adapter_name=first)
        for adapter_name, folder in rest:
            model.load_adapter(folder, adapter_name=adapter_name)
    return model.eval()


def load_model_group(
    named_specs: Sequence[tuple[str, str]], *, add_base: bool = True, device: str | None = None
) -> ModelGroup:
    """Load columns from (name, SPEC) pairs, each distinct set of weights once.

    With `add_base` and no plain model among the specs, the runs' base is added first as the
    "base" column (see `base_plan`).
    """
    if not named_specs:
        raise MedchatError("give at least one model: NAME=SPEC (a run dir, model dir or hub id)")
    names = [n for n, _ in named_specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MedchatError(f"model names must be unique; given twice: {', '.join(dupes)}")
    plans = [plan_spec(name, spec) for name, spec in named_specs]
    if add_base and all(p.kind != "pretrained" for p in plans):
        base_name = BASE if BASE not in names else "base model"
        plans.insert(0, base_plan(plans, base_name))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return _load_plans(plans, device)


def _load_plans(plans: list[_Plan], device: str) -> ModelGroup:
    # Group by weights: every adapter on a key joins one PEFT model, and a plain model with the
    # same key becomes that model with its adapters off.
    by_key: dict[tuple[str, str], list[_Plan]] = {}
    for p in plans:
        by_key.setdefault(p.key, []).append(p)
    columns: dict[str, Column] = {}
    for key, members in by_key.items():
        adapters = [(f"adapter_{i}", p.adapter_dir) for i, p in enumerate(members) if p.adapter_dir]
        adapter_of = dict(
            zip([p.name for p in members if p.adapter_dir], [a for a, _ in adapters], strict=True)
        )
        log.info("loading %s for %s", key[0], ", ".join(p.name for p in members))
        model = _load_weights(members[0], adapters, device)
        ws = WeightSet(key, model, quantized=members[0].quant is not None, adapters=adapter_of)
        for p in members:
            tokenizer = modeling.load_tokenizer(p.tokenizer_from)
            lm = LoadedModel(p.name, model, tokenizer, p.spec, p.kind, p.base, p.template,
                             quantized=ws.quantized)  # fmt: skip
            columns[p.name] = Column(p.name, p.kind, p.spec, lm, ws, adapter_of.get(p.name))
    return ModelGroup([columns[p.name] for p in plans])


# ----------------------------------------------------------------------------- memory


def memory_in_use() -> dict[str, int | None]:
    """This process's resident memory and, on a GPU, CUDA memory allocated by torch (bytes)."""
    rss: int | None
    try:
        import psutil

        rss = psutil.Process().memory_info().rss
    except ImportError:
        try:  # Linux without psutil: second field of statm is resident pages
            pages = int(Path("/proc/self/statm").read_text().split()[1])
            rss = pages * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            rss = None
    cuda = torch.cuda.memory_allocated() if torch.cuda.is_available() else None
    return {"rss_bytes": rss, "cuda_allocated_bytes": cuda}
