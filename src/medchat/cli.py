"""`medchat <verb>`: argument parsing that hands over to the library functions, nothing more.

Each verb has a `_add_<verb>` function that builds its parser and a `_run_<verb>` handler that
imports its module lazily (so `medchat --help` stays fast and optional extras stay optional).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from medchat import __version__
from medchat.errors import MedchatError

# ----------------------------------------------------------------------------- data


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare and inspect Q&A datasets")
    dsub = p.add_subparsers(dest="data_verb", required=True, metavar="{prepare,stats}")

    prep = dsub.add_parser(
        "prepare",
        help="load, clean, deduplicate and split a Q&A source into train/validation/test JSONL",
        description=(
            "Load a Q&A source (Kaggle medical-chatbot CSV, MedQuAD XML folder or .tar.gz, "
            "generic CSV/JSONL, or hf:org/name), clean it, merge MedQuAD answers split over "
            "consecutive pairs, drop exact duplicates, and split it seeded and leakage-free "
            "(rows sharing a normalised question, or for MedQuAD a normalised focus or "
            "document, stay in one split). Writes train.jsonl, validation.jsonl, test.jsonl and "
            "manifest.json. See docs/data.md."
        ),
    )
    prep.add_argument("source", help="file, folder, .tar.gz archive, or hf:org/name")
    prep.add_argument("--out", required=True, help="output folder (written atomically)")
    prep.add_argument(
        "--format",
        default="auto",
        choices=["auto", "kaggle", "medquad", "csv", "jsonl"],
        help="source format (default: auto-detect from the file)",
    )
    prep.add_argument(
        "--question-col", default=None, help="question column for csv/jsonl/hf (default: question)"
    )
    prep.add_argument(
        "--answer-col", default=None, help="answer column for csv/jsonl/hf (default: answer)"
    )
    prep.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    prep.add_argument(
        "--val-frac", type=float, default=0.05, help="validation share (default 0.05)"
    )
    prep.add_argument("--test-frac", type=float, default=0.05, help="test share (default 0.05)")
    prep.add_argument(
        "--min-question-chars", type=int, default=5, help="drop shorter questions (default 5)"
    )
    prep.add_argument(
        "--min-answer-chars", type=int, default=2, help="drop shorter answers (default 2)"
    )
    prep.add_argument(
        "--tokenizer",
        default=None,
        help=(
            "tokenizer (hub id or local dir) for length stats, loaded offline only (default "
            "google/flan-t5-base; 'words' or an unavailable one: whitespace word counts)"
        ),
    )
    prep.add_argument(
        "--max-target-length",
        type=int,
        default=256,
        help="report the share of answers longer than this many tokens (default 256)",
    )
    prep.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    stats = dsub.add_parser("stats", help="print the summary of a prepared data folder again")
    stats.add_argument("dir", help="a folder written by `medchat data prepare`")
    stats.add_argument(
        "--tokenizer", default=None, help="as for prepare (default google/flan-t5-base, offline)"
    )
    stats.add_argument(
        "--max-target-length",
        type=int,
        default=256,
        help="report the share of answers longer than this many tokens (default 256)",
    )


def _run_data(args: argparse.Namespace) -> int:
    from medchat.data import prepare

    if args.data_verb == "prepare":
        prepare.prepare_command(args)
    else:
        prepare.stats_command(args)
    return 0


# ----------------------------------------------------------------------------- train


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a model (full, LoRA or QLoRA) on a prepared data folder",
        description=(
            "Fine-tune with transformers' Seq2SeqTrainer. The run folder explains itself: "
            "resolved config, prompt, data manifest, versions, metrics log, checkpoints, "
            "train_summary.json. Extra key=value arguments override the config, e.g. "
            "train.learning_rate=1e-4 lora.r=8."
        ),
    )
    p.add_argument("--config", default=None, help="YAML preset (see configs/); defaults if omitted")
    p.add_argument("--data", required=True, help="folder written by `medchat data prepare`")
    p.add_argument("--out", default=None, help="run folder to create (not needed with --resume)")
    p.add_argument("--method", choices=["full", "lora", "qlora"], help="overrides train.method")
    p.add_argument("--model", default=None, help="overrides model.name (hub id, dir, or 'tiny')")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue an interrupted run from its last complete checkpoint",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def _run_train(args: argparse.Namespace) -> int:
    from medchat import train

    train.train_command(args)
    return 0


# ----------------------------------------------------------------------------- config


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show every config field with its default and help")
    p.add_argument("--config", default=None, help="show this preset resolved instead")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def _run_config(args: argparse.Namespace) -> int:
    import yaml

    from medchat.config import config_to_dict, field_help, load_config

    if args.config or args.overrides:
        cfg = load_config(args.config, args.overrides)
        sys.stdout.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    else:
        for name, default, help_text in field_help():
            sys.stdout.write(f"{name} = {default}\n    {help_text}\n")
    return 0


# ----------------------------------------------------------------------------- safety


def _add_safety(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("safety", help="screen questions for emergencies and dose requests")
    ssub = p.add_subparsers(dest="safety_verb", required=True, metavar="{check,eval}")

    chk = ssub.add_parser(
        "check",
        help="print one safety verdict per question",
        description=(
            "Rule-based screen (no model): flags emergencies (heart attack, stroke, breathing, "
            "bleeding, anaphylaxis, suicide/self-harm, overdose/poisoning, seizure, pregnancy, "
            "infant, unresponsive) with what to do now, and notes dose-change or prescription "
            "requests. One line per question: readable, or JSON with --json."
        ),
    )
    chk.add_argument("text", nargs="?", default=None, help="a question to check (or use --file)")
    chk.add_argument(
        "--file",
        default=None,
        help="one question per line, or JSONL rows with a 'text' field; '-' reads stdin",
    )
    chk.add_argument("--json", action="store_true", help="print JSON lines")

    ev = ssub.add_parser(
        "eval",
        help="measure recall and false-positive rate on the labelled safety set",
        description="Score the checker per split (dev, heldout, all) and list every miss.",
    )
    ev.add_argument("--set", dest="path", default=None, help="labelled JSONL (default: bundled)")
    ev.add_argument("--json", action="store_true", help="print the full report as JSON")


def _run_safety(args: argparse.Namespace) -> int:
    import json

    from medchat import safety

    if args.safety_verb == "eval":
        report = safety.evaluate_safety_set(args.path)
        out = json.dumps(report, indent=2) + "\n" if args.json else safety.report_table(report)
        sys.stdout.write(out)
        return 0
    if (args.text is None) == (args.file is None):
        raise MedchatError("safety check: give a question as TEXT or --file FILE (one of them)")
    texts = [args.text] if args.file is None else safety.read_texts(args.file)
    for text in texts:
        sys.stdout.write(safety.verdict_line(text, safety.check(text), args.json) + "\n")
    return 0


# ----------------------------------------------------------------------------- main

_VERBS = {
    "data": (_add_data, _run_data),
    "train": (_add_train, _run_train),
    "config": (_add_config, _run_config),
    "safety": (_add_safety, _run_safety),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medchat",
        description="Fine-tune a seq2seq model into a medical Q&A chatbot, and measure the gain.",
    )
    parser.add_argument("--version", action="version", version=f"medchat {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add, _ in _VERBS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `medchat` console script."""
    # Offline-first: never phone home for analytics; users who want the hub still get it
    # through from_pretrained (HF_HUB_OFFLINE is left to the user).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    args = build_parser().parse_args(argv)
    try:
        return _VERBS[args.verb][1](args)
    except MedchatError as e:
        from medchat.console import console

        console.print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        from medchat.console import console

        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
