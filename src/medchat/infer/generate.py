"""Batched generation shared by eval, the UI, the HTTP API and the terminal chat.

One `GenerationSettings` is applied identically to every model, so comparisons are fair: greedy by
default, KV cache on, inputs sorted by length so batches carry little padding.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medchat.errors import MedchatError
from medchat.models.modeling import LoadedModel
from medchat.prompts import MAX_SOURCE_TOKENS, format_prompt


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are decoded. Greedy by default: deterministic and the fairest comparison."""

    max_new_tokens: int = 128
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens < 1:
            problems.append("max_new_tokens must be >= 1")
        if self.num_beams < 1:
            problems.append("num_beams must be >= 1")
        if self.do_sample and not self.temperature > 0:
            problems.append("temperature must be > 0 when sampling")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        if self.batch_size < 1:
            problems.append("batch_size must be >= 1")
        if problems:
            raise MedchatError("invalid generation settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate` (sampling knobs only when sampling)."""
        kw: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "use_cache": True,
        }
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        if self.no_repeat_ngram_size:
            kw["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if self.repetition_penalty != 1.0:
            kw["repetition_penalty"] = self.repetition_penalty
        return kw


def max_new_tokens_for(tokenizer, references: Sequence[str], quantile: float = 95) -> int:
    """Token budget from the references: their p95 length, so most answers can be complete."""
    if not references:
        return 128
    lengths = [len(ids) for ids in tokenizer(list(references))["input_ids"]]
    return max(8, int(np.ceil(np.percentile(lengths, quantile))))


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def encode(lm: LoadedModel, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Formatted prompts as padded model inputs on the model's device, cut at MAX_SOURCE_TOKENS."""
    enc = lm.tokenizer(
        list(prompts), return_tensors="pt", padding=True, truncation=True,
        max_length=MAX_SOURCE_TOKENS,
    )  # fmt: skip
    return {k: v.to(_device_of(lm.model)) for k, v in enc.items()}


@torch.inference_mode()
def run_generate(
    lm: LoadedModel,
    enc: dict[str, torch.Tensor],
    settings: GenerationSettings,
    *,
    min_new_tokens: int = 0,
    should_stop: Callable[[], bool] | None = None,
    streamer: Any = None,
) -> torch.Tensor:
    """The one call of transformers' `generate` in medchat: eval, the UI, the terminal chat and
    the server's torch backends all decode here. Seeds sampling; ends early once `should_stop()`."""
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    kwargs = settings.hf_kwargs()
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    if should_stop is not None:
        kwargs["stopping_criteria"] = stopping_when(should_stop)
    if streamer is not None:
        kwargs["streamer"] = streamer
    return lm.model.generate(**enc, **kwargs)


def generate_batch(
    lm: LoadedModel, prompts: Sequence[str], settings: GenerationSettings
) -> list[str]:
    """Answers for one batch of already formatted prompts."""
    out = run_generate(lm, encode(lm, prompts), settings)
    return [t.strip() for t in lm.tokenizer.batch_decode(out, skip_special_tokens=True)]


def generate_answers(
    lm: LoadedModel,
    questions: Sequence[str],
    settings: GenerationSettings,
    *,
    progress: bool = True,
    description: str | None = None,
) -> list[str]:
    """Answer every question in batches sorted by prompt length; answers come back in order."""
    prompts = [format_prompt(q, lm.prompt_template) for q in questions]
    lengths = [len(ids) for ids in lm.tokenizer(prompts)["input_ids"]] if prompts else []
    # Longest first: memory errors surface on the first batch, and padding stays small.
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    answers: list[str] = [""] * len(prompts)
    bar = _progress(description or lm.name, len(prompts), enabled=progress)
    with bar:
        task = bar.add_task(description or lm.name, total=len(prompts))
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            for i, text in zip(
                idx, generate_batch(lm, [prompts[i] for i in idx], settings), strict=True
            ):
                answers[i] = text
            bar.advance(task, len(idx))
    return answers


def _speed_column_class():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class SpeedColumn(ProgressColumn):
        """Examples per second; blank until rich has measured a speed (it starts as None)."""

        def render(self, task) -> Text:
            return Text(f"{task.speed:.2f} ex/s" if task.speed else "")

    return SpeedColumn


def stopping_when(should_stop: Callable[[], bool]):
    """A transformers stopping criterion that ends every row once `should_stop()` is true."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), bool(should_stop()), dtype=torch.bool)

    return StoppingCriteriaList([Stop()])


def _progress(description: str, total: int, enabled: bool):
    from medchat.console import progress_bar

    return progress_bar(_speed_column_class()(), enabled=enabled)


@dataclass
class StreamStats:
    """Filled in while streaming: the text so far, tokens, seconds."""

    text: str = ""
    tokens: int = 0
    seconds: float = 0.0
    done: bool = False

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def stream_answer(
    lm: LoadedModel,
    question: str,
    settings: GenerationSettings,
    *,
    prompt: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[StreamStats]:
    """Yield the growing answer token by token (generation runs in a background thread). It
    ends at the next decoding step once `should_stop()` is true, or once this is closed."""
    from transformers import TextIteratorStreamer

    prompt = prompt if prompt is not None else format_prompt(question, lm.prompt_template)
    if settings.num_beams > 1:
        # Beam search cannot stream; generate whole and yield once.
        start = time.perf_counter()
        text = generate_batch(lm, [prompt], settings)[0]
        n = len(lm.tokenizer(text)["input_ids"])
        yield StreamStats(text, n, time.perf_counter() - start, True)
        return
    enc = encode(lm, [prompt])
    streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=False, skip_special_tokens=True)
    errors: list[BaseException] = []
    stop = threading.Event()  # set when our caller stops listening: generation ends next step

    def stopped() -> bool:
        return stop.is_set() or (should_stop is not None and should_stop())

    def run() -> None:
        try:
            run_generate(lm, enc, settings, should_stop=stopped, streamer=streamer)
        except BaseException as e:  # surfaced to the caller below
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    start = time.perf_counter()
    thread.start()
    stats = StreamStats()
    try:
        for piece in streamer:
            if not piece:
                continue
            stats.text += piece
            stats.tokens += 1
            stats.seconds = time.perf_counter() - start
            yield stats
    except GeneratorExit:  # closed early (a UI page that went away): stop decoding, then return
        stop.set()
        thread.join()
        raise
    thread.join()
    if errors:
        raise errors[0]
    stats.text = stats.text.strip()
    stats.seconds = time.perf_counter() - start
    stats.done = True
    yield stats
