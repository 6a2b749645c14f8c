"""train(cfg) -> run dir: fine-tune full, LoRA or QLoRA on transformers' Seq2SeqTrainer.

Our code does what the trainer does not: labels padded with -100 (the loss never averages over
padding), dynamic padding with length-grouped batches, a run folder that explains itself,
checkpoints marked complete only once fully written, and honest cost figures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch

from medchat.config import BEST_METRICS, Config, load_config, save_config
from medchat.console import console, library_log
from medchat.errors import MedchatError
from medchat.fileio import (
    atomic_write_text,
    read_json,
    read_log_jsonl,
    recover_dir,
    replace_dir,
    trim_torn_tail,
    write_json,
    write_jsonl,
)
from medchat.models import modeling
from medchat.models.qlora_fix import keep_4bit_trainable
from medchat.prompts import format_prompt
from medchat.runinfo import (
    command_line,
    device_description,
    git_commit,
    library_versions,
    seed_everything,
)
from medchat.runs import CONFIG, LOG, MANIFEST, PROMPT, RUN_INFO, SUMMARY
from medchat.train import tracking
from medchat.train.model_card import write_model_card
from medchat.train.probe import GenerationProbe, build_probe

log = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"  # written last into a checkpoint: only marked ones are resumed from
FAULT_ENV = "MEDCHAT_FAULT_AT_STEP"  # test hook: SIGKILL ourselves at this step (kill -9 test)


# ----------------------------------------------------------------------------- data


class TokenizedPairs(torch.utils.data.Dataset):
    """Question/answer rows tokenised once, unpadded (the collator pads each batch)."""

    def __init__(self, rows: list[dict[str, Any]], tokenizer, cfg: Config) -> None:
        prompts = [format_prompt(r["question"], cfg.data.prompt_template) for r in rows]
        answers = [r["answer"] for r in rows]
        src = tokenizer(prompts, truncation=True, max_length=cfg.data.max_source_length)
        full = tokenizer(text_target=answers, truncation=False)["input_ids"]
        limit = cfg.data.max_target_length
        self.truncated = sum(len(ids) > limit for ids in full)
        # Truncate by hand so the last kept token is still EOS: the model learns to stop.
        labels = [
            ids if len(ids) <= limit else [*ids[: limit - 1], tokenizer.eos_token_id]
            for ids in full
        ]
        self.items = [
            {"input_ids": i, "attention_mask": m, "labels": y}
            for i, m, y in zip(src["input_ids"], src["attention_mask"], labels, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]

    def target_tokens(self) -> int:
        return sum(len(x["labels"]) for x in self.items)

    def lengths(self) -> list[int]:
        """Per-example cost proxy for length grouping: decoder positions dominate a T5 step."""
        return [len(x["input_ids"]) + len(x["labels"]) for x in self.items]


def _trainer_class():
    from transformers import Seq2SeqTrainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class LengthGroupedSeq2SeqTrainer(Seq2SeqTrainer):
        """Seq2SeqTrainer whose length grouping also counts the labels.

        The stock sampler groups by input length only; in Q&A the answers (labels) are the long
        side, so grouping by inputs alone leaves most of the padding in place. With a
        `probe`, every evaluation also generates answers and adds their metrics to the eval log.
        """

        probe: GenerationProbe | None = None
        _probe_scores: dict[str, float] | None = None

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **kw):
            # Generate before Trainer starts its clock, so eval_runtime stays the loss pass's.
            if self.probe is not None and metric_key_prefix == "eval" and eval_dataset is None:
                # Each rank measures the same subset, so every rank agrees on the best checkpoint.
                model = self.accelerator.unwrap_model(self.model)
                self._probe_scores = self.probe.measure(model, self.processing_class)
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **kw)

        def evaluation_loop(self, *args, **kwargs):
            output = super().evaluation_loop(*args, **kwargs)
            if self._probe_scores is not None:  # joins the eval log, so every callback sees it
                output.metrics.update({f"eval_{k}": v for k, v in self._probe_scores.items()})
                self._probe_scores = None
            return output

        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.world_size > 1 or not isinstance(ds, TokenizedPairs):
                return super()._get_train_sampler(train_dataset)
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                dataset=ds,
                lengths=ds.lengths(),
            )

    return LengthGroupedSeq2SeqTrainer


def load_prepared(data_dir: Path) -> tuple[dict[str, Any], list[dict], list[dict]]:
    """Manifest, train rows and validation rows of a `medchat data prepare` folder."""
    from medchat.data import load_split, read_manifest

    manifest = read_manifest(data_dir)
    return manifest, load_split(data_dir, "train"), load_split(data_dir, "validation")


# ----------------------------------------------------------------------------- callbacks


def _callbacks(run_dir: Path, probe: GenerationProbe | None = None):
    from transformers import TrainerCallback

    class RunDirCallback(TrainerCallback):
        """Mark checkpoints complete, log metrics as JSONL (with the probe's sample answers on
        eval rows, also as TensorBoard text), and the kill-9 test hook."""

        writer: Any = None

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    atomic_write_text(ckpt / COMPLETE_MARKER, f"{state.global_step}\n")

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                row = {"step": state.global_step, "epoch": state.epoch, **logs}
                if probe is not None and probe.samples and "eval_loss" in logs:
                    # Strings stay out of `logs`: TensorBoard's callback takes them for scalars.
                    row["samples"] = probe.samples
                    if "tensorboard" in (args.report_to or []):
                        self._text(state.global_step, probe.samples)
                    probe.samples = None
                with open(run_dir / LOG, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")

        def _text(self, step: int, samples: list[dict[str, str]]) -> None:
            from torch.utils.tensorboard import SummaryWriter

            if self.writer is None:
                self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            text = "\n\n".join(
                f"**Q:** {x['question']}\n\n**reference:** {x['reference']}\n\n"
                f"**answer:** {x['answer']}"
                for x in samples
            )
            self.writer.add_text("eval/samples", text, step)
            self.writer.flush()

        def on_train_end(self, args, state, control, **kw):
            if self.writer is not None:
                self.writer.close()
                self.writer = None

        def on_step_end(self, args, state, control, **kw):
            fault = os.environ.get(FAULT_ENV)
            if fault and state.global_step == int(fault):
                os.kill(os.getpid(), signal.SIGKILL)

    return [RunDirCallback(), _ProgressCallback()]


class _ProgressLine:
    """One rich progress bar for a training run: steps, ETA, the latest loss and eval loss (in
    place of Trainer's tqdm bars and printed log dicts)."""

    def __init__(self, total: int, label: str) -> None:
        from rich.progress import TextColumn

        from medchat.console import progress_bar

        self.stats: dict[str, float] = {}
        self.progress = progress_bar(TextColumn("{task.fields[stats]}"))
        self.task = self.progress.add_task(label, total=total, stats="")
        self.progress.start()

    def update(self, step: int, logs: dict | None = None) -> None:
        for key in ("loss", "eval_loss", "eval_rougeL", "eval_semantic"):
            if logs and isinstance(logs.get(key), int | float):
                self.stats[key] = float(logs[key])
        stats = "  ".join(
            f"{k.replace('_', ' ')} {v:.4f}" if "loss" in k else f"{k.replace('_', ' ')} {v:.1f}"
            for k, v in self.stats.items()
        )
        self.progress.update(self.task, completed=step, stats=stats)

    def stop(self) -> None:
        self.progress.stop()


def _ProgressCallback():
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        line: _ProgressLine | None = None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.line = _ProgressLine(state.max_steps, "training")
                self.line.update(state.global_step)

        def on_step_end(self, args, state, control, **kw):
            if self.line:
                self.line.update(state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.line:
                self.line.update(state.global_step, logs)

        def on_train_end(self, args, state, control, **kw):
            if self.line:
                self.line.stop()
                self.line = None

    return ProgressCallback()


# ----------------------------------------------------------------------------- run dir


def latest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose COMPLETE marker exists; half-written ones are ignored."""
    ckpts = sorted(
        (
            p
            for p in (run_dir / "checkpoints").glob("checkpoint-*")
            if (p / COMPLETE_MARKER).is_file()
        ),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    return ckpts[-1] if ckpts else None


def _prepare_run_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise MedchatError(
                f"{out}: run folder already exists; pass --overwrite to replace it "
                f"or --resume {out} to continue it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _write_run_files(
    run_dir: Path, cfg: Config, manifest: dict, base_model: str, rag: dict | None = None
) -> None:
    save_config(cfg, run_dir / CONFIG)
    atomic_write_text(run_dir / PROMPT, cfg.data.prompt_template)
    write_json(run_dir / MANIFEST, manifest)
    write_json(
        run_dir / RUN_INFO,
        {
            "method": cfg.train.method,
            "base_model": base_model,
            "quant": dataclasses.asdict(cfg.quant) if cfg.train.method == "qlora" else {},
            "seed": cfg.train.seed,
            "versions": library_versions(),
            "git_commit": git_commit(),
            "command": command_line(),
            "device": device_description(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rag": rag,  # None: trained on plain questions
        },
    )


def rag_rows(
    cfg: Config, data_dir: Path, train_rows: list[dict], val_rows: list[dict]
) -> tuple[list[dict], list[dict], dict]:
    """Train and validation rows with each question replaced by its RAG prompt
    (`answering.build_rag_examples`): passages never come from the row's own document, so the
    model learns to use context rather than copy its answer. Also what run_info records."""
    from medchat.data import load_split
    from medchat.ground.answering import build_rag_examples
    from medchat.ground.index import load_index
    from medchat.ground.retrieval import doc_id_of

    index = load_index(cfg.data.rag_index)
    data = index.manifest.get("data") or {}
    test_rows = load_split(data_dir, "test") if (data_dir / "test.jsonl").is_file() else []
    leaked = [r for r in test_rows if index.holds_doc(doc_id_of(r))]
    if "test" in (data.get("splits") or []) or leaked:
        raise MedchatError(
            f"data.rag_index {cfg.data.rag_index}: indexes the test split, so training contexts "
            "would hold test answers; build it from the train split: `medchat index build "
            "--data DIR --out INDEX_DIR`"
        )
    console.print(f"building RAG examples from {cfg.data.rag_index} (k={cfg.data.rag_k})")
    train_rows = build_rag_examples(train_rows, index, cfg.data.rag_k)
    val_rows = (
        build_rag_examples(val_rows, index, cfg.data.rag_k, progress=False) if val_rows else []
    )
    info = {
        "index": str(Path(cfg.data.rag_index).resolve()),
        "index_data_hash": data.get("hash"),
        "index_splits": data.get("splits"),
        "k": cfg.data.rag_k,
        "exclude_own_doc": True,
    }
    return train_rows, val_rows, info


# ----------------------------------------------------------------------------- model


def _base_model_for(cfg: Config, run_dir: Path, train_rows: list[dict]) -> tuple[str, str]:
    """(name recorded in run_info, loadable path or id). The tiny model is built into the run."""
    if cfg.model.name != modeling.TINY:
        return cfg.model.name, cfg.model.name
    base_dir = run_dir / "base_model"
    if not (base_dir / "config.json").is_file():
        texts = (
            t
            for r in train_rows
            for t in (format_prompt(r["question"], cfg.data.prompt_template), r["answer"])
        )
        model, tokenizer = modeling.build_tiny(texts, cfg.model.tiny, cfg.train.seed)
        tmp = run_dir / ".base_model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, base_dir)
    # Recorded relative, so a run dir can be moved or copied as a whole.
    return "base_model", str(base_dir)


def _load_trainable(cfg: Config, base_path: str):
    method = cfg.train.method
    quant = cfg.quant if method == "qlora" else None
    model = modeling.load_pretrained(base_path, quant=quant)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if method == "full":
        return model
    model = modeling.attach_lora(
        model, cfg.lora, quantized=method == "qlora",
        gradient_checkpointing=cfg.train.gradient_checkpointing,
    )  # fmt: skip
    if method == "qlora":
        # Evaluation passes must not turn the 4-bit base into a layout with no backward.
        keep_4bit_trainable(model)
    return model


def _training_args(cfg: Config, run_dir: Path, precision: str):
    from transformers import Seq2SeqTrainingArguments

    t = cfg.train
    evaluating = t.eval_strategy != "no"
    return Seq2SeqTrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of total steps in transformers 5
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps if t.eval_strategy == "steps" else None,
        # Save when we evaluate, so the best checkpoint by eval loss can be kept and restored.
        save_strategy=t.eval_strategy if evaluating else "steps",
        save_steps=t.eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=evaluating,
        metric_for_best_model=BEST_METRICS[t.metric_for_best][0] if evaluating else None,
        greater_is_better=BEST_METRICS[t.metric_for_best][1] if evaluating else None,
        bf16=precision == "bf16",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to=tracking.hf_report_to(t.report_to),  # mlflow goes through tracking.py
        seed=t.seed,
        data_seed=t.seed,
        # Batches of similar length waste little compute on padding.
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        # True makes transformers 5 log DDP losses multiplied by the world size (15.0 for 7.5).
        average_tokens_across_devices=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        save_only_model=False,
        disable_tqdm=False,
    )


# ----------------------------------------------------------------------------- stage


def peak_memory_bytes() -> tuple[int, str]:
    """Peak CUDA allocation on a GPU, else this process's peak RSS."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_rss"


def train(
    cfg: Config,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Fine-tune per `cfg` on a prepared data folder; returns the run folder."""
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    if cfg.train.method == "qlora":
        modeling.require_bitsandbytes()
    tracking.check_report_to(cfg.train.report_to)
    precision = modeling.resolve_precision(cfg.train.precision)
    manifest, train_rows, val_rows = load_prepared(data_dir)
    if cfg.data.max_train_examples:
        train_rows = train_rows[: cfg.data.max_train_examples]
    if cfg.data.max_eval_examples:
        val_rows = val_rows[: cfg.data.max_eval_examples]
    rag = None
    if cfg.data.rag_index:
        train_rows, val_rows, rag = rag_rows(cfg, data_dir, train_rows, val_rows)

    checkpoint = None
    if resume:
        checkpoint = latest_complete_checkpoint(run_dir)
        if checkpoint is None:
            raise MedchatError(
                f"{run_dir}: no complete checkpoint to resume from; start a new run with --out"
            )
        _check_same_data(run_dir, manifest, data_dir)
        _repair_after_kill(run_dir, int(checkpoint.name.rsplit("-", 1)[1]))
    args = _training_args(cfg, run_dir, precision)  # under torchrun this joins the process group
    # Under DDP (torchrun / accelerate launch) rank 0 makes the run folder and the tiny base
    # first; the other ranks then find them there instead of racing to write them.
    with args.main_process_first(desc="run folder"):
        if args.process_index == 0 and not resume:
            _prepare_run_dir(run_dir, overwrite)
        seed_everything(cfg.train.seed)
        base_name, base_path = _base_model_for(cfg, run_dir, train_rows)
        if args.process_index == 0 and not resume:
            _write_run_files(run_dir, cfg, manifest, base_name, rag)
    tokenizer = modeling.load_tokenizer(base_path)
    train_ds = TokenizedPairs(train_rows, tokenizer, cfg)
    val_ds = TokenizedPairs(val_rows, tokenizer, cfg) if val_rows else None
    if val_ds is None and cfg.train.eval_strategy != "no":
        raise MedchatError(f"{data_dir}: validation split is empty; set train.eval_strategy=no")

    model = _load_trainable(cfg, base_path)
    trainable, total = modeling.count_parameters(model)
    console.print(
        f"[bold]{cfg.train.method}[/] fine-tuning of {cfg.model.name}: {trainable:,} of {total:,} "
        f"parameters trainable ({100 * trainable / total:.2f}%), {precision}, "
        f"{len(train_ds):,} train / {len(val_ds) if val_ds else 0:,} validation examples; "
        f"{train_ds.truncated:,} answers ({100 * train_ds.truncated / max(len(train_ds), 1):.1f}%) "
        f"truncated at {cfg.data.max_target_length} tokens"
    )

    probe = None
    if cfg.train.eval_strategy != "no":
        probe = build_probe(
            val_rows,
            cfg.train.generation_eval_examples,
            cfg.train.seed,
            tokenizer,
            cfg.data.prompt_template,
            cfg.train.metric_for_best,
            cfg.data.max_target_length,
            cfg.train.generation_eval_semantic,
        )
    callbacks = _callbacks(run_dir, probe)
    mlflow_run = tracking.start(cfg, run_dir, resume=resume, main=args.process_index == 0)
    if mlflow_run:
        callbacks.append(mlflow_run.callback())
    if cfg.train.eval_strategy != "no" and cfg.train.early_stopping_patience > 0:
        callbacks.append(
            EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience)
        )
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        # label_pad_token_id=-100: padding never counts in the loss.
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.probe = probe
    # Our progress line replaces Trainer's tqdm bars and its printed {'loss': ...} dicts (the
    # same figures are in metrics.jsonl and TensorBoard).
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with library_log.to(run_dir / "train.log"):  # library records of this run, kept beside it
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.perf_counter() - start

    if trainer.is_world_process_zero():
        _save_final(trainer, tokenizer, cfg, run_dir, base_path)
        summary = _summary(cfg, trainer, result, wall, train_ds, trainable, total, precision)
        if probe is not None:
            summary["generation_eval"] = {
                **probe.record(),
                "share_of_wall_time": round(probe.seconds / wall, 4) if wall else None,
            }
        write_json(run_dir / SUMMARY, summary)
        trainer.state.save_to_json(str(run_dir / "trainer_state.json"))
        write_model_card(run_dir)
        if mlflow_run:
            mlflow_run.finish()
        _print_summary(run_dir, summary)
    return run_dir


def _repair_after_kill(run_dir: Path, step: int) -> None:
    """Before a resume: put back a final model a kill left aside, drop stale temp folders, and
    cut metrics.jsonl back to the checkpoint's step (the steps after it are trained again, and
    a torn last line would otherwise glue onto the next row)."""
    notes = [n for name in ("model", "adapter", "merged") for n in recover_dir(run_dir / name)]
    log_path = run_dir / LOG
    if trim_torn_tail(log_path):
        notes.append(f"{log_path}: cut a torn last line (the run was killed while writing it)")
    if log_path.is_file():
        rows, bad = read_log_jsonl(log_path)
        kept = [r for r in rows if int(r.get("step", 0)) <= step]
        if len(kept) < len(rows) or bad:
            write_jsonl(log_path, kept)
            notes.append(
                f"{log_path}: kept the {len(kept)} rows up to step {step}, the checkpoint resumed"
            )
    for note in notes:
        console.print(f"[dim]{note}[/dim]", highlight=False)


def _check_same_data(run_dir: Path, manifest: dict, data_dir: Path) -> None:
    recorded = read_json(run_dir / MANIFEST)
    if recorded != manifest:
        raise MedchatError(
            f"{data_dir}: this data differs from the data the run in {run_dir} started on "
            "(data_manifest.json); resume with the same --data folder"
        )


def _save_final(trainer, tokenizer, cfg: Config, run_dir: Path, base_path: str) -> None:
    """The best model (full) or adapter (LoRA/QLoRA), written beside the checkpoints."""
    target = run_dir / ("model" if cfg.train.method == "full" else "adapter")
    tmp = run_dir / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, target)  # the old model stays whole until the new one is in place
    if cfg.train.merge_adapter and cfg.train.method != "full":
        merge_adapter(run_dir, base_path)


def merge_adapter(run_dir: Path, base_path: str) -> Path:
    """Write merged/: the unquantised base with the adapter folded in, as one plain model."""
    from peft import PeftModel

    base = modeling.load_pretrained(base_path)
    merged = PeftModel.from_pretrained(base, str(run_dir / "adapter")).merge_and_unload()
    out = run_dir / "merged"
    tmp = run_dir / ".merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    modeling.load_tokenizer(str(run_dir / "adapter")).save_pretrained(tmp)
    atomic_write_text(tmp / PROMPT, (run_dir / PROMPT).read_text(encoding="utf-8"))
    replace_dir(tmp, out)
    return out


def _summary(cfg, trainer, result, wall, train_ds, trainable, total, precision) -> dict[str, Any]:
    state = trainer.state
    epochs = float(state.epoch or 0.0)
    examples = (
        state.global_step
        * cfg.train.batch_size
        * cfg.train.gradient_accumulation_steps
        * max(trainer.args.world_size, 1)
    )
    tokens = (
        train_ds.target_tokens() / max(len(train_ds), 1) * examples
    )  # mean target length x seen
    peak, peak_kind = peak_memory_bytes()
    evals = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    return {
        "method": cfg.train.method,
        "base_model": cfg.model.name,
        "precision": precision,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "wall_time_s": round(wall, 3),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "steps": state.global_step,
        "epochs": round(epochs, 4),
        "train_examples": len(train_ds),
        "examples_seen": examples,
        "examples_per_s": round(examples / wall, 4) if wall else None,
        "target_tokens_per_s": round(tokens / wall, 2) if wall else None,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100 * trainable / total, 4),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "best_eval_loss": min(evals) if evals else None,
        "metric_for_best": cfg.train.metric_for_best,
        "best_metric": state.best_metric,
        "eval_losses": evals,
        "best_checkpoint": Path(state.best_model_checkpoint).name
        if state.best_model_checkpoint
        else None,
        "truncated_answers": train_ds.truncated,
        "stopped_early": bool(cfg.train.max_steps <= 0 and epochs + 1e-6 < cfg.train.num_epochs),
    }


def _print_summary(run_dir: Path, s: dict[str, Any]) -> None:
    best = (
        f"best eval loss {s['best_eval_loss']:.4f}"
        if s["best_eval_loss"] is not None
        else "no eval"
    )
    console.print(
        f"\n[bold green]done[/] {s['method']} in {s['wall_time_s']:.1f} s: {s['steps']} steps, "
        f"{s['epochs']:.2f} epochs, {s['examples_per_s']:.2f} examples/s, "
        f"{s['target_tokens_per_s']:.0f} target tokens/s; loss {s['first_loss']:.3f} -> "
        f"{s['final_loss']:.3f}, {best}"
        f"{' (stopped early)' if s['stopped_early'] else ''}; peak memory "
        f"{s['peak_memory_bytes'] / 2**20:,.0f} MiB ({s['peak_memory_kind']}); "
        f"{s['trainable_params']:,} trainable of {s['total_params']:,} ({s['trainable_pct']:.2f}%).\n"
        f"Run folder: {run_dir}"
    )


def train_command(args) -> None:
    """`medchat train`: resolve config (preset + overrides, or the run's own on --resume), train."""
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / CONFIG).is_file():
            raise MedchatError(f"{run_dir}: not a run folder (no config.yaml); nothing to resume")
        if args.config or args.overrides or args.method or args.model:
            raise MedchatError(
                "--resume continues a run with its own config; drop --config, --method, --model and overrides"
            )
        cfg = load_config(run_dir / CONFIG)
        train(cfg, args.data, run_dir, resume=True)
        return
    if not args.out:
        raise MedchatError("--out RUN_DIR is required (or --resume RUN_DIR)")
    overrides = list(args.overrides)
    if args.method:
        overrides.append(f"train.method={args.method}")
    if args.model:
        overrides.append(f"model.name={args.model}")
    cfg = load_config(args.config, overrides)
    train(cfg, args.data, args.out, overwrite=args.overwrite)
