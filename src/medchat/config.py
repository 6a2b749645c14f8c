"""Typed run configuration: one dataclass per concern, YAML presets, `key=value` overrides.

Every field carries help text (`medchat config --help-fields` prints it). Problems in a config are
collected across all sections and reported together in one error, so a user fixes them in one go.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medchat.errors import MedchatError
from medchat.prompts import DEFAULT_TEMPLATE

REPORT_TO = ("tensorboard", "mlflow", "wandb")  # train.report_to values
# train.metric_for_best -> (the Trainer's metric key, greater is better)
BEST_METRICS = {
    "eval_loss": ("eval_loss", False),
    "rougeL": ("eval_rougeL", True),
    "semantic": ("eval_semantic", True),
}


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text (mutable defaults go through default_factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TinyModelConfig:
    """Shape of the offline `tiny` T5 (random weights, tokenizer trained on the training split)."""

    vocab_size: int = _f(4000, "Tokenizer vocabulary size trained on the training split.")
    d_model: int = _f(128, "Hidden size.")
    d_ff: int = _f(512, "Feed-forward size (gated-GELU, as flan-t5).")
    d_kv: int = _f(32, "Size of each attention head.")
    num_heads: int = _f(4, "Attention heads.")
    num_layers: int = _f(2, "Encoder layers (the decoder gets the same number).")


@dataclass
class ModelConfig:
    name: str = _f(
        "google/flan-t5-base",
        "Hub id, local model directory, or 'tiny' for the offline test model built from a config.",
    )
    tiny: TinyModelConfig = _f(None, "Shape of the 'tiny' model (used only when name is 'tiny').")

    def __post_init__(self) -> None:
        if self.tiny is None:
            self.tiny = TinyModelConfig()


@dataclass
class DataConfig:
    max_source_length: int = _f(
        128,
        "Max input tokens; MedQuAD questions are short (median 8 words), so 128 truncates ~none.",
    )
    max_target_length: int = _f(
        256,
        "Max answer tokens for training; longer answers are truncated and the share is reported.",
    )
    prompt_template: str = _f(DEFAULT_TEMPLATE, "Model input template; must contain {question}.")
    max_train_examples: int | None = _f(None, "Use at most this many training rows (None = all).")
    max_eval_examples: int | None = _f(
        None, "Use at most this many validation rows for eval loss (None = all)."
    )
    rag_index: str | None = _f(
        None,
        "Train on RAG examples: a knowledge-base index folder (`medchat index build`, train split) "
        "whose top rag_k passages go before each question; a row's own document is never in its "
        "context. Needs max_source_length >= 384. None = plain questions.",
    )
    rag_k: int = _f(3, "Passages per RAG training example (with rag_index).")


@dataclass
class LoraSettings:
    r: int = _f(16, "LoRA rank.")
    alpha: int = _f(32, "LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = _f(0.05, "Dropout on the LoRA branch.")
    target_modules: list[str] = _f(
        ["q", "k", "v", "o", "wi_0", "wi_1", "wo"],
        "T5 linear layers that get adapters (attention q,k,v,o and the gated FFN wi_0, wi_1, wo).",
    )


@dataclass
class QuantSettings:
    quant_type: str = _f("nf4", "4-bit data type: nf4 (QLoRA paper) or fp4.")
    double_quant: bool = _f(True, "Quantise the quantisation constants too (saves ~0.4 bit/param).")
    compute_dtype: str = _f(
        "auto", "Matmul dtype for 4-bit layers: auto (bf16 where supported, else fp32), bf16, fp32."
    )


@dataclass
class TrainSettings:
    method: str = _f("lora", "full | lora | qlora.")
    learning_rate: float = _f(3e-4, "Peak learning rate (AdamW).")
    num_epochs: float = _f(3.0, "Training epochs (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimiser steps (-1 = use num_epochs).")
    batch_size: int = _f(8, "Examples per device per step.")
    eval_batch_size: int = _f(16, "Examples per device per eval-loss step.")
    gradient_accumulation_steps: int = _f(1, "Steps to accumulate before each optimiser step.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    warmup_ratio: float = _f(0.03, "Share of steps spent warming up the learning rate.")
    lr_scheduler: str = _f("linear", "transformers scheduler name (linear, cosine, constant, ...).")
    max_grad_norm: float = _f(1.0, "Gradient clipping.")
    eval_strategy: str = _f("epoch", "When to compute validation loss: epoch | steps | no.")
    eval_steps: int = _f(200, "With eval_strategy=steps: every this many steps.")
    save_total_limit: int = _f(2, "Checkpoints kept (the best by metric_for_best is always kept).")
    early_stopping_patience: int = _f(
        2, "Stop after this many evaluations without a better metric_for_best (0 = off)."
    )
    generation_eval_examples: int = _f(
        64,
        "At every evaluation, answer this many validation questions (a fixed subset drawn with "
        "the seed, greedy, max_new_tokens as medchat eval) and log ROUGE-L, semantic similarity, "
        "answer length, distinct-2 and three sample answers (0 = off).",
    )
    generation_eval_semantic: bool = _f(
        True,
        "Include MiniLM semantic similarity in the generation metrics. On a small CPU it is most "
        "of their cost (embedding the answers); medchat eval reports it either way.",
    )
    metric_for_best: str = _f(
        "eval_loss",
        "eval_loss | rougeL | semantic: the evaluation metric that picks the best checkpoint "
        "(restored at the end) and drives early stopping; rougeL and semantic come from "
        "generation_eval_examples.",
    )
    precision: str = _f(
        "auto",
        "auto (bf16 where supported, else fp32) | bf16 | fp32. fp16 is refused: T5 overflows in fp16.",
    )
    gradient_checkpointing: bool = _f(False, "Trade compute for memory.")
    logging_steps: int = _f(10, "Log loss every this many steps.")
    seed: int = _f(42, "One seed for python, numpy, torch and data order.")
    merge_adapter: bool = _f(False, "Also write merged/ (base + adapter as one plain model).")
    report_to: list[str] = _f(
        ["tensorboard"],
        "Trackers: tensorboard, mlflow (a local store beside the run folder, or "
        "MLFLOW_TRACKING_URI; extra `track`), wandb (needs wandb installed). [] = none.",
    )


@dataclass
class Config:
    """A whole training run."""

    model: ModelConfig = _f(None, "The model to start from.")
    data: DataConfig = _f(None, "Tokenisation and data limits.")
    train: TrainSettings = _f(None, "Optimisation and checkpointing.")
    lora: LoraSettings = _f(None, "LoRA adapter settings (method lora or qlora).")
    quant: QuantSettings = _f(None, "4-bit settings (method qlora).")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None:
                setattr(self, f.name, _section_type(Config, f.name)())
        problems = self.problems()
        if problems:
            raise MedchatError("invalid config:\n  - " + "\n  - ".join(problems))

    def problems(self) -> list[str]:
        """Every problem in the config (empty when valid)."""
        p: list[str] = []
        t, d, lo, q = self.train, self.data, self.lora, self.quant
        if t.method not in ("full", "lora", "qlora"):
            p.append(f"train.method: {t.method!r} is not one of full, lora, qlora")
        if t.precision == "fp16":
            p.append(
                "train.precision: fp16 is refused for T5: its activations overflow fp16 "
                "(transformers #5651, #23918); use bf16 (GPU) or fp32"
            )
        elif t.precision not in ("auto", "bf16", "fp32"):
            p.append(f"train.precision: {t.precision!r} is not one of auto, bf16, fp32")
        if t.eval_strategy not in ("epoch", "steps", "no"):
            p.append(f"train.eval_strategy: {t.eval_strategy!r} is not one of epoch, steps, no")
        for name in (
            "learning_rate",
            "batch_size",
            "eval_batch_size",
            "gradient_accumulation_steps",
        ):
            if getattr(t, name) <= 0:
                p.append(f"train.{name}: must be > 0 (got {getattr(t, name)})")
        if t.max_steps <= 0 and t.num_epochs <= 0:
            p.append("train.num_epochs: must be > 0 when max_steps is not set")
        if not 0 <= t.warmup_ratio < 1:
            p.append(f"train.warmup_ratio: must be in [0, 1) (got {t.warmup_ratio})")
        unknown = [r for r in t.report_to if r not in REPORT_TO]
        if unknown:
            bad = ", ".join(map(repr, unknown))
            p.append(f"train.report_to: {bad} is not one of {', '.join(REPORT_TO)}")
        if t.save_total_limit < 1:
            p.append("train.save_total_limit: must be >= 1")
        if t.early_stopping_patience < 0:
            p.append("train.early_stopping_patience: must be >= 0")
        if t.generation_eval_examples < 0:
            p.append("train.generation_eval_examples: must be >= 0 (0 = off)")
        if t.metric_for_best not in BEST_METRICS:
            p.append(
                f"train.metric_for_best: {t.metric_for_best!r} is not one of eval_loss, rougeL, "
                "semantic"
            )
        elif t.metric_for_best == "semantic" and not t.generation_eval_semantic:
            p.append("train.metric_for_best: semantic needs train.generation_eval_semantic=true")
        elif t.metric_for_best != "eval_loss" and (
            t.generation_eval_examples == 0 or t.eval_strategy == "no"
        ):
            p.append(
                f"train.metric_for_best: {t.metric_for_best} needs generation metrics: set "
                "train.generation_eval_examples > 0 and train.eval_strategy to steps or epoch"
            )
        if d.max_source_length <= 0 or d.max_target_length <= 0:
            p.append("data.max_source_length/max_target_length: must be > 0")
        if "{question}" not in d.prompt_template:
            p.append("data.prompt_template: must contain {question}")
        if d.rag_k < 1:
            p.append(f"data.rag_k: must be >= 1 (got {d.rag_k})")
        if d.rag_index and d.max_source_length < 384:
            p.append(
                f"data.max_source_length: {d.max_source_length} would cut the RAG context "
                "(~330 tokens before the question); use >= 384 with data.rag_index"
            )
        if lo.r <= 0 or lo.alpha <= 0:
            p.append("lora.r and lora.alpha: must be > 0")
        if not 0 <= lo.dropout < 1:
            p.append(f"lora.dropout: must be in [0, 1) (got {lo.dropout})")
        if not lo.target_modules:
            p.append("lora.target_modules: name at least one module")
        if q.quant_type not in ("nf4", "fp4"):
            p.append(f"quant.quant_type: {q.quant_type!r} is not one of nf4, fp4")
        if q.compute_dtype not in ("auto", "bf16", "fp32"):
            p.append(
                f"quant.compute_dtype: {q.compute_dtype!r} is not one of auto, bf16, fp32 "
                "(fp16 overflows in T5)"
            )
        tiny = self.model.tiny
        if tiny.d_model != tiny.num_heads * tiny.d_kv:
            p.append("model.tiny: d_model must equal num_heads * d_kv")
        return p


# --------------------------------------------------------------------------- load / save


def _section_type(cls: type, name: str) -> type:
    return typing.get_type_hints(cls)[name]


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_type(value: Any, tp: Any) -> bool:
    """Loose runtime check of a YAML value against a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(tp)
        return isinstance(value, list) and all(_check_type(v, inner) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _build(cls: type, data: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    """Build dataclass `cls` from a dict, collecting unknown keys and type errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in (data or {}).items():
        where = f"{prefix}{key}"
        if key not in names:
            problems.append(f"{where}: unknown key (known: {', '.join(sorted(names))})")
            continue
        tp = hints[key]
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                problems.append(f"{where}: expected a mapping")
                continue
            kwargs[key] = _build(tp, value, where + ".", problems)
        elif tp is float and isinstance(value, str) and _is_number(value):
            # YAML 1.1 reads 1e-4 (no dot) as a string; users mean a number.
            kwargs[key] = float(value)
        elif _check_type(value, tp):
            kwargs[key] = float(value) if tp is float else value
        else:
            hint = (
                " (quote it: YAML reads yes/no/on/off as booleans)"
                if isinstance(value, bool)
                else ""
            )
            if typing.get_origin(tp) is list and not isinstance(value, list):
                hint = f" (write a list: [{value}])"
            problems.append(
                f"{where}: {value!r} is not of type {getattr(tp, '__name__', tp)}{hint}"
            )
    if cls is Config:
        # Construct sections first so Config.__post_init__ can validate the whole.
        for f in dataclasses.fields(cls):
            kwargs.setdefault(f.name, _section_type(cls, f.name)())
        if problems:
            return None
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise MedchatError(f"override {dotted!r}: {part} is not a section")
    node[leaf] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['train.learning_rate=1e-4', 'lora.r=8'] into a nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise MedchatError(
                f"override {item!r}: expected key=value, e.g. train.learning_rate=1e-4"
            )
        key, raw = item.split("=", 1)
        # YAML 1.1 reads yes/no/on/off as booleans; on the command line they are words
        # (train.eval_strategy=no), while true/false stay booleans.
        words = {"yes", "no", "on", "off", "y", "n"}
        value = (
            raw if raw.strip().lower() in words else (yaml.safe_load(raw) if raw.strip() else "")
        )
        # YAML reads '1e-4' as a string; numbers written that way should be floats.
        if isinstance(value, str) and any(c in value for c in ".eE") and _is_number(value):
            value = float(value)
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Build and validate a Config; all problems (unknown keys, types, values) in one error."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise MedchatError(f"{source}: expected a YAML mapping at the top level")
    try:
        cfg = _build(Config, data, "", problems)
    except MedchatError as e:
        raise MedchatError(f"{source}: {e}") from None
    if problems:
        raise MedchatError(f"{source}: invalid config:\n  - " + "\n  - ".join(problems))
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML preset (or defaults when path is None) and apply key=value overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise MedchatError(f"{path}: config file not found (presets live in configs/)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise MedchatError(f"{path}: not valid YAML ({e})") from None
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    return config_from_dict(data, source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomic)."""
    from medchat.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def field_help(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, help) for every field, for `--help-fields` and the docs."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            rows += field_help(tp, f"{prefix}{f.name}.")
        else:
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", "")))
    return rows
