"""Inference backends for serving: transformers fp32, torch dynamic int8, and CTranslate2.

Every backend answers already formatted prompts with the same `GenerationSettings`, in the calling
thread (the HTTP server gives the model to one worker thread), and can stream a single answer
through a callback. `load_backend(spec, kind)` is the one entry point; docs/serving.md says which
backend to pick and why (measured by benchmarks/inference.py).

ctranslate2 is imported lazily: it is the `medchat[ct2]` extra.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from medchat.errors import MedchatError
from medchat.infer.generate import GenerationSettings, encode, run_generate
from medchat.models.modeling import LoadedModel, serial_tokenizer
from medchat.prompts import DEFAULT_TEMPLATE, MAX_SOURCE_TOKENS, format_prompt
from medchat.runs import PROMPT

log = logging.getLogger(__name__)

BACKENDS = ("torch", "torch-int8", "ct2")
# What `--backend auto` serves on a CPU when it cannot measure (no ctranslate2, or the export
# failed): no export step, and it was the faster one on the development machine (docs/serving.md).
DEFAULT_CPU_BACKEND = "torch-int8"
# `--backend auto` on a CPU times torch-int8 and ct2 int8 on this machine (which is faster depends
# on the CPU: 4.05x vs 2.46x fp32 on one 2-core AMD box, 2.9x vs 3.6x on another) and remembers
# the choice per machine and model shape here ($MEDCHAT_BACKEND_CHOICES overrides the path).
CHOICES_ENV = "MEDCHAT_BACKEND_CHOICES"
CHOICES_FILE = Path("~/.cache/medchat/backend_choices.json")
# Each candidate decodes this many tokens per timed call, for about this many seconds.
AUTO_TOKENS = 32
AUTO_SECONDS = 3.0
AUTO_PROMPT = (
    "What are the symptoms of type 2 diabetes, how is it diagnosed, and which treatments help?"
)


OnText = Callable[[str], None]
ShouldStop = Callable[[], bool]


@dataclass
class Generation:
    """One answer, the tokens the decoder produced for it (EOS included) and the prompt's."""

    text: str
    tokens: int
    prompt_tokens: int = 0


class Backend(Protocol):
    """What the server, the terminal chat and rag grounding need of a loaded model:
    `TorchBackend` (fp32 or int8) and `CT2Backend` both are one."""

    kind: str  # "torch" | "torch-int8" | "ct2"
    name: str
    tokenizer: Any
    prompt_template: str
    choice: dict[str, Any] | None

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        *,
        min_new_tokens: int = 0,
        should_stop: ShouldStop | None = None,
    ) -> list[Generation]: ...

    def stream(
        self,
        prompt: str,
        settings: GenerationSettings,
        on_text: OnText,
        should_stop: ShouldStop | None = None,
    ) -> Generation: ...


def cpu_threads() -> int:
    """Cores this process may run on (cgroup/affinity aware, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------- torch


class TorchBackend:
    """transformers `generate` on a loaded model: fp32, or int8 after `quantize_int8`."""

    def __init__(self, lm: LoadedModel, kind: str = "torch") -> None:
        self.lm = lm
        self.kind = kind
        self.name = lm.name
        self.choice: dict[str, Any] | None = None  # what `--backend auto` measured, if it chose
        self.tokenizer = lm.tokenizer
        self.prompt_template = lm.prompt_template

    def _count(self, out: torch.Tensor) -> list[int]:
        # Position 0 is the decoder start token; finished rows are padded with pad (0).
        return (out[:, 1:] != self.tokenizer.pad_token_id).sum(dim=1).tolist()

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        *,
        min_new_tokens: int = 0,
        should_stop: ShouldStop | None = None,
    ) -> list[Generation]:
        """Answers for one batch of formatted prompts; decoding ends early once `should_stop()`
        (the server's "every client of this batch has gone away")."""
        enc = encode(self.lm, prompts)
        out = run_generate(
            self.lm, enc, settings, min_new_tokens=min_new_tokens, should_stop=should_stop
        )
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        sources = enc["attention_mask"].sum(dim=1).tolist()
        return [
            Generation(t.strip(), n, p)
            for t, n, p in zip(texts, self._count(out), sources, strict=True)
        ]

    def stream(
        self,
        prompt: str,
        settings: GenerationSettings,
        on_text: OnText,
        should_stop: ShouldStop | None = None,
    ) -> Generation:
        """Generate one answer in this thread, handing each new piece of text to `on_text`."""
        from transformers import TextStreamer

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    on_text(text)

        # Beam search cannot stream; it yields the answer at once.
        streamer = Streamer(self.tokenizer, skip_special_tokens=True)
        enc = encode(self.lm, [prompt])
        out = run_generate(
            self.lm, enc, settings, should_stop=should_stop,
            streamer=streamer if settings.num_beams == 1 else None,
        )  # fmt: skip
        text = self.tokenizer.decode(out[0], skip_special_tokens=True).strip()
        if settings.num_beams > 1:
            on_text(text)
        return Generation(text, self._count(out)[0], int(enc["input_ids"].shape[1]))


def quantize_int8(lm: LoadedModel) -> LoadedModel:
    """Merge any LoRA adapter, then quantise every nn.Linear (T5's lm_head too) to dynamic qint8.

    The one int8 path: `--backend torch-int8` serves with it and `medchat eval --cpu-int8`
    evaluates with it. It changes numerics (greedy answers can differ from fp32;
    benchmarks/eval_throughput.py measures how often), so eval records it in metrics.json and in
    the cache key.
    """
    if lm.quantized:
        raise MedchatError(
            f"{lm.spec}: a QLoRA run answers on its 4-bit base and cannot be quantised to int8; "
            "evaluate or serve it as it is (--backend torch), or export it "
            "(`medchat export --format ct2`) and serve that with --backend ct2"
        )
    model = lm.model
    if lm.kind == "lora":
        model = model.merge_and_unload()
    with warnings.catch_warnings():
        # torch.ao's eager quantisation warns that it is moving to torchao; it still works.
        warnings.simplefilter("ignore")
        qmodel = torch.ao.quantization.quantize_dynamic(
            model.float().eval(), {torch.nn.Linear}, dtype=torch.qint8
        )
    return dataclasses.replace(lm, model=qmodel)


# ----------------------------------------------------------------------------- ctranslate2


def require_ctranslate2() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise MedchatError(
            "the ct2 backend needs CTranslate2: `pip install 'medchat[ct2]'`, or use "
            "--backend torch-int8"
        ) from None
    return ctranslate2


def is_ct2_dir(path: str | Path) -> bool:
    """A folder written by `medchat export --format ct2` (or ct2-transformers-converter)."""
    p = Path(path)
    return (p / "model.bin").is_file() and (p / "config.json").is_file()


def ct2_tokens(tokenizer, ids: Sequence[int]) -> list[str]:
    """Token ids as CTranslate2 vocabulary tokens.

    T5 checkpoints can have more embedding rows than tokenizer entries; the converter names the
    extra ones `<extra_id_N>` in order (ctranslate2's T5Loader.get_vocabulary), so do the same.
    """
    n = len(tokenizer)
    return [tokenizer.convert_ids_to_tokens(i) if i < n else f"<extra_id_{i - n}>" for i in ids]


def ct2_ids(tokenizer, tokens: Sequence[str]) -> list[int]:
    """The inverse of `ct2_tokens`."""
    ids = []
    for t in tokens:
        i = tokenizer.convert_tokens_to_ids(t)
        if i == tokenizer.unk_token_id and t.startswith("<extra_id_"):
            i = len(tokenizer) + int(t[len("<extra_id_") : -1])
        ids.append(i)
    return ids


class CT2Backend:
    """CTranslate2 `Translator` on an exported folder (int8 weights by default)."""

    def __init__(
        self,
        model_dir: str | Path,
        compute_type: str = "int8",
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        ct2 = require_ctranslate2()
        model_dir = Path(model_dir)
        if not is_ct2_dir(model_dir):
            raise MedchatError(
                f"{model_dir}: not a CTranslate2 model folder (no model.bin); create one with "
                f"`medchat export SPEC --format ct2 --out {model_dir}`"
            )
        self.kind = "ct2"
        self.name = name or model_dir.name
        self.choice: dict[str, Any] | None = None
        self.threads = threads or cpu_threads()
        # One translator replica (inter_threads=1) using every core for each step: at batch 1
        # the per-step matrix products are the work to split; ct2's own default would start 4
        # OpenMP threads, oversubscribing a 2-core machine.
        self.translator = ct2.Translator(
            str(model_dir),
            device="cpu",
            compute_type=compute_type,
            inter_threads=1,
            intra_threads=self.threads,
        )
        # Shared by the server's threads like a torch model's (see SerialTokenizer).
        self.tokenizer = serial_tokenizer(AutoTokenizer.from_pretrained(str(model_dir)))
        prompt_file = model_dir / PROMPT
        self.prompt_template = (
            prompt_file.read_text(encoding="utf-8") if prompt_file.is_file() else DEFAULT_TEMPLATE
        )

    def source_tokens(self, prompts: Sequence[str]) -> list[list[str]]:
        ids = self.tokenizer(list(prompts), truncation=True, max_length=MAX_SOURCE_TOKENS)
        return [self.tokenizer.convert_ids_to_tokens(x) for x in ids["input_ids"]]

    def _options(self, settings: GenerationSettings) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "beam_size": settings.num_beams,
            "max_decoding_length": settings.max_new_tokens,
            "no_repeat_ngram_size": settings.no_repeat_ngram_size,
            "repetition_penalty": settings.repetition_penalty,
        }
        if settings.do_sample:
            # topk 0 samples from the whole distribution (as transformers does), after top_p.
            opts.update(
                sampling_topk=0,
                sampling_topp=settings.top_p,
                sampling_temperature=settings.temperature,
            )
        return opts

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        *,
        min_new_tokens: int = 0,
        should_stop: ShouldStop | None = None,
    ) -> list[Generation]:
        """Answers for one batch of formatted prompts; with greedy or sampled decoding (ct2 calls
        back per token only at beam size 1), decoding ends early once `should_stop()`."""
        if settings.do_sample:
            require_ctranslate2().set_random_seed(settings.seed)
        sources = self.source_tokens(prompts)
        extra: dict[str, Any] = {}
        if should_stop is not None and settings.num_beams == 1:
            extra["callback"] = lambda step: bool(should_stop())
        results = self.translator.translate_batch(
            sources,
            min_decoding_length=min_new_tokens,
            return_end_token=True,  # so token counts include EOS, as transformers' do
            **self._options(settings),
            **extra,
        )
        out = []
        for r, src in zip(results, sources, strict=True):
            ids = ct2_ids(self.tokenizer, r.hypotheses[0])
            out.append(Generation(self._decode(ids), len(ids), len(src)))
        return out

    def stream(
        self,
        prompt: str,
        settings: GenerationSettings,
        on_text: OnText,
        should_stop: ShouldStop | None = None,
    ) -> Generation:
        """Generate one answer in this thread, handing each new piece of text to `on_text`."""
        if settings.num_beams > 1:  # ct2 streams greedy/sampled decoding only
            gen = self.generate([prompt], settings)[0]
            on_text(gen.text)
            return gen
        if settings.do_sample:
            require_ctranslate2().set_random_seed(settings.seed)
        opts = self._options(settings)
        opts.pop("beam_size")
        source = self.source_tokens([prompt])[0]
        ids: list[int] = []
        shown = ""
        steps = self.translator.generate_tokens(source, **opts)
        for step in steps:
            if should_stop is not None and should_stop():
                steps.close()  # stops ct2's decoding loop
                break
            ids.append(step.token_id)
            text = self.tokenizer.decode(ids, skip_special_tokens=True).lstrip()
            # Emit only what extends the text shown so far; hold back a half-decoded character.
            if len(text) > len(shown) and text.startswith(shown) and not text.endswith("\ufffd"):
                on_text(text[len(shown) :])
                shown = text
        text = self._decode(ids)
        if len(text) > len(shown) and text.startswith(shown):
            on_text(text[len(shown) :])
        # generate_tokens stops before yielding EOS; count it as the batch path does.
        ended = len(ids) < settings.max_new_tokens and not (should_stop and should_stop())
        return Generation(text, len(ids) + int(ended), len(source))


# ----------------------------------------------------------------------------- entry point


def resolve_backend(spec: str, kind: str = "auto") -> str:
    """'auto' -> ct2 for a CTranslate2 folder; else torch-int8 on CPU, torch on a GPU or for QLoRA."""
    if kind != "auto":
        return kind
    if is_ct2_dir(spec):
        return "ct2"
    if torch.cuda.is_available():
        return "torch"
    from medchat.runs import read_run_info

    info = read_run_info(Path(spec)) if Path(spec).is_dir() else None
    return "torch" if info is not None and info.get("method") == "qlora" else DEFAULT_CPU_BACKEND


def load_backend(
    spec: str,
    kind: str = "auto",
    *,
    threads: int | None = None,
    compute_type: str = "int8",
    name: str | None = None,
    measure: bool = True,
) -> TorchBackend | CT2Backend:
    """Load SPEC (see `load_model_spec`; a CTranslate2 export folder for `ct2`) for serving.

    `auto` on a CPU (not QLoRA) measures torch-int8 against a ct2 int8 export and serves the
    faster (`choose_cpu_backend`); `measure=False` takes torch-int8 without measuring."""
    from medchat.models.modeling import load_model_spec

    requested, kind = kind, resolve_backend(spec, kind)
    auto_cpu = requested == "auto" and kind == DEFAULT_CPU_BACKEND
    if kind not in BACKENDS:
        raise MedchatError(f"unknown backend {kind!r}; choose one of auto, {', '.join(BACKENDS)}")
    if threads:
        torch.set_num_threads(threads)
    if kind == "ct2":
        if not is_ct2_dir(spec):
            raise MedchatError(
                f"{spec}: --backend ct2 needs a CTranslate2 export folder; create it with "
                f"`medchat export {spec} --format ct2 --out DIR` and serve DIR"
            )
        return CT2Backend(spec, compute_type=compute_type, threads=threads, name=name)
    if is_ct2_dir(spec):
        raise MedchatError(f"{spec}: is a CTranslate2 folder; serve it with --backend ct2")
    lm = load_model_spec(spec, name=name, device="cpu" if kind == "torch-int8" else None)
    if kind == "torch-int8":
        lm = quantize_int8(lm)
    backend = TorchBackend(lm, kind)
    if auto_cpu and measure:
        return choose_cpu_backend(spec, backend, threads=threads, name=name)
    return backend


# ----------------------------------------------------------------------------- auto, measured


def choose_cpu_backend(
    spec: str,
    int8: TorchBackend,
    *,
    threads: int | None = None,
    name: str | None = None,
    seconds: float | None = None,
) -> TorchBackend | CT2Backend:
    """The faster of torch-int8 (`int8`, already loaded) and a ct2 int8 export of SPEC on this
    CPU, timed at batch 1 on the first use and remembered per machine and model shape. The export
    is made once, beside the run (`SPEC/ct2-int8`) or, for a hub id or a folder that cannot be
    written, in the choices file's folder. The backend's `choice` says what was measured."""
    key = _choice_key(int8)
    choices = _read_choices()
    known = choices.get(key)
    export = _export_dir(spec)
    if known and (known["chosen"] != "ct2" or is_ct2_dir(export)):
        if known["chosen"] == "ct2":
            backend: TorchBackend | CT2Backend = CT2Backend(
                str(export), threads=threads, name=name or int8.name
            )
        else:
            backend = int8
        backend.choice = {**known, "cached": True}
        log.info("backend auto: %s (measured earlier on this machine: %s)", known["chosen"], key)
        return backend
    try:
        require_ctranslate2()
        if not is_ct2_dir(export):
            from medchat.infer.export import export_ct2

            log.info("backend auto: exporting %s to CTranslate2 int8 in %s (once)", spec, export)
            export_ct2(spec, export, "int8")
        ct2 = CT2Backend(str(export), threads=threads, name=name or int8.name)
    except MedchatError as e:
        int8.choice = {"chosen": int8.kind, "reason": f"ct2 not measured: {e}", "cached": False}
        log.warning("backend auto: %s (ct2 not measured: %s)", int8.kind, e)
        return int8
    timings = {b.kind: _median_latency(b, seconds or AUTO_SECONDS) for b in (int8, ct2)}
    chosen = min(timings, key=timings.get)
    record = {
        "chosen": chosen,
        "batch1_seconds": {k: round(v, 4) for k, v in timings.items()},
        "new_tokens": AUTO_TOKENS,
        "ct2_export": str(export),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    choices[key] = record
    _write_choices(choices)
    log.info("backend auto: %s (batch-1 seconds per answer: %s)", chosen, record["batch1_seconds"])
    backend = int8 if chosen == int8.kind else ct2
    backend.choice = {**record, "key": key, "cached": False}
    return backend


def _median_latency(backend: TorchBackend | CT2Backend, seconds: float) -> float:
    """Median seconds for one batch-1 answer of exactly AUTO_TOKENS tokens, over `seconds`."""
    import statistics

    prompt = format_prompt(AUTO_PROMPT, backend.prompt_template)
    settings = GenerationSettings(max_new_tokens=AUTO_TOKENS)
    backend.generate([prompt], settings, min_new_tokens=AUTO_TOKENS)  # warm-up
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < 3 or (time.perf_counter() < end and len(times) < 50):
        start = time.perf_counter()
        backend.generate([prompt], settings, min_new_tokens=AUTO_TOKENS)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _choice_key(backend: TorchBackend) -> str:
    """This machine (CPU model, threads, library versions) and the model's shape."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    c = backend.lm.model.config
    shape = "x".join(
        str(getattr(c, a, "?")) for a in ("d_model", "num_layers", "num_decoder_layers", "d_ff")
    )
    try:
        import ctranslate2

        ct2 = ctranslate2.__version__
    except ImportError:
        ct2 = "none"
    return (
        f"{cpu} | {torch.get_num_threads()} threads | torch {torch.__version__} | ct2 {ct2} | "
        f"{c.model_type} {shape} vocab {getattr(c, 'vocab_size', '?')}"
    )


def _choices_path() -> Path:
    return Path(os.environ.get(CHOICES_ENV) or CHOICES_FILE).expanduser()


def _read_choices() -> dict[str, Any]:
    from medchat.fileio import read_json

    path = _choices_path()
    try:
        data = read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        log.warning("%s: unreadable, measuring again", path)
        return {}
    return data if isinstance(data, dict) else {}


def _write_choices(choices: dict[str, Any]) -> None:
    from medchat.fileio import write_json

    path = _choices_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, choices)
    except OSError as e:  # a read-only home must not stop the server
        log.warning("could not remember the backend choice in %s: %s", path, e)


def _export_dir(spec: str) -> Path:
    """Where auto keeps SPEC's ct2 int8 export: beside a writable local run, else cached."""
    import hashlib

    local = Path(spec).expanduser()
    if local.is_dir() and os.access(local, os.W_OK):
        return local / "ct2-int8"
    digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
    return _choices_path().parent / "ct2-exports" / digest
