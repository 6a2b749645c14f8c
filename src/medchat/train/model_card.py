"""MODEL_CARD.md for a run folder: what the model is, what it was trained on, how it scores, and
what it must not be used for. Written at the end of training, and again by `record_evaluation`
(the step `medchat eval` runs after evaluating) with the test figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from medchat.eval.verdict import verdict
from medchat.fileio import atomic_write_text
from medchat.runs import (
    CARD,
    CONFIG,
    MANIFEST,
    PROMPT,
    is_run,
    read_run_file,
    read_run_info,
    read_summary,
)

MEDQUAD_LICENCE = (
    'MedQuAD (Ben Abacha A., Demner-Fushman D. "A Question-Entailment Approach to Question '
    'Answering". BMC Bioinformatics 20, 511 (2019)), CC BY 4.0. Answers come from NIH web sites; '
    "the MedlinePlus subsets have no answers (removed for copyright)."
)

LIMITATIONS = """\
- **Not a medical device and not medical advice.** Answers are generated text: they can be wrong,
  out of date, or invented (a small model writes fluent-looking nonsense). Never use them to
  diagnose, treat, or change a medicine; talk to a clinician or pharmacist.
- In an emergency call your local emergency number. medchat's safety layer flags common
  emergencies by rules; it is English-only and will miss phrasings it has not seen.
- Trained on consumer-health Q&A of a few NIH sites: coverage of conditions, drugs, languages
  and populations outside that material is poor.
- Intended use: research on fine-tuning methods, and demonstrations with the disclaimer shown."""


def _data_section(manifest: dict[str, Any] | None) -> str:
    if not manifest:
        return "unknown"
    fmt = manifest.get("format", "?")
    counts = manifest.get("counts", {})
    splits = {k: v for k, v in counts.items() if k in ("train", "validation", "test")}
    source = manifest.get("source", {})
    name = source.get("path", source) if isinstance(source, dict) else source
    text = f"`{name}` (format {fmt}); split sizes {splits or counts}"
    if fmt == "medquad":
        text += f".\n\nLicence and attribution: {MEDQUAD_LICENCE}"
    return text


def _metrics_section(metrics: dict[str, Any] | None, run_name: str | None) -> str:
    """A table of this model's metrics vs the base, with 95% CIs, from an eval's metrics.json."""
    if not metrics or not run_name or run_name not in metrics.get("metrics", {}):
        return "Not evaluated yet: run `medchat eval` with this run folder, then `medchat report`."
    ours = metrics["metrics"][run_name]
    base_name = metrics.get("baseline")
    base = metrics["metrics"].get(base_name, {})
    labels = metrics.get("labels", {})
    data = metrics.get("data", {})
    lines = [
        verdict(metrics),
        "",
        f"`{data.get('split', 'test')}` split, {data.get('n', '?')} examples, one generation "
        f"setting for every model (`metrics.json` of the eval has them all):",
        "",
        f"| metric | this model (95% CI) | base `{base_name}` |",
        "|---|---|---|",
    ]
    for key, value in ours.items():
        if not isinstance(value, dict) or "value" not in value or value["value"] is None:
            continue
        ci = ""
        if value.get("ci_low") is not None:
            ci = f" ({value['ci_low']:.2f} to {value['ci_high']:.2f})"
        b = base.get(key, {})
        bval = f"{b['value']:.2f}" if isinstance(b, dict) and b.get("value") is not None else "-"
        lines.append(f"| {labels.get(key, key)} | {value['value']:.2f}{ci} | {bval} |")
    return "\n".join(lines)


def write_model_card(
    run_dir: str | Path, metrics: dict[str, Any] | None = None, run_name: str | None = None
) -> Path:
    """Write RUN/MODEL_CARD.md from the run's own files (and eval metrics when given)."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir) or {}
    cfg = read_run_file(run_dir, CONFIG) or {}
    summary = read_summary(run_dir) or {}
    manifest = read_run_file(run_dir, MANIFEST)
    prompt = read_run_file(run_dir, PROMPT) or "?"
    method = info.get("method", "?")
    train = cfg.get("train", {})
    hyper = {
        k: train.get(k)
        for k in (
            "learning_rate",
            "num_epochs",
            "max_steps",
            "batch_size",
            "weight_decay",
            "precision",
            "seed",
        )
    }
    if method in ("lora", "qlora"):
        hyper["lora"] = cfg.get("lora")
    if method == "qlora":
        hyper["quant"] = cfg.get("quant")
    cost = ""
    if summary:
        cost = (f"{summary['wall_time_s']:.0f} s on {summary['device']}, {summary['examples_per_s']:.2f} examples/s, "
                f"peak memory {summary['peak_memory_bytes'] / 2**20:,.0f} MiB; "
                f"{summary['trainable_params']:,} of {summary['total_params']:,} parameters trained "
                f"({summary['trainable_pct']:.3f}%); best eval loss {summary.get('best_eval_loss')}.")  # fmt: skip
    text = f"""# Model card: {run_dir.name}

A medical question-answering model made with [medchat](https://pypi.org/project/medchat/).

- **Base model**: `{cfg.get("model", {}).get("name", info.get("base_model", "?"))}`
- **Method**: {method} fine-tuning
- **Prompt**: `{prompt}`
- **Training cost**: {cost or "not finished"}
- **Created**: {info.get("created", "?")} (medchat git commit `{info.get("git_commit")}`)

## Data
{_data_section(manifest)}

## Hyperparameters
```yaml
{yaml.safe_dump(hyper, sort_keys=False).strip()}
```

## Evaluation
{_metrics_section(metrics, run_name)}

## Intended use and limitations
{LIMITATIONS}
"""
    path = run_dir / CARD
    atomic_write_text(path, text)
    return path


def record_evaluation(eval_dir: Path) -> None:
    """The step after `medchat eval`: every run folder it evaluated (metrics.json names them)
    gets its figures against the base (with CIs) in MODEL_CARD.md, and in its MLflow run (if it
    has one) the test metrics.

    Kept out of `evaluate()` so that evaluating never writes into the folders it reads.
    """
    from medchat.eval.results import load_eval
    from medchat.train.tracking import log_eval

    result, _ = load_eval(eval_dir)
    # Cards carry the model's own generate-mode figures; NAME+rag rows stay in the report.
    runs = [
        (name, Path(m["path"]))
        for name, m in result["models"].items()
        if m.get("answer_mode", "generate") == "generate" and m.get("path") and is_run(m["path"])
    ]
    for name, run in runs:
        if name != result.get("baseline") and name in result["metrics"]:
            write_model_card(run, result, name)
    log_eval(runs, result, eval_dir)
