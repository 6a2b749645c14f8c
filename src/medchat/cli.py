"""`medchat <verb>`: argument parsing that hands over to the library functions, nothing more.

Each verb has a `_add_<verb>` function that builds its parser and a `_run_<verb>` handler that
imports its module lazily (so `medchat --help` stays fast and optional extras stay optional).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
        "--eval-only",
        action="store_true",
        help="every row to test.jsonl after the same cleaning and dedup: a benchmark to evaluate "
        "as it is (no train or validation rows; --val-frac/--test-frac/--seed do not apply)",
    )
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
    from medchat.train import train

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
    ssub = p.add_subparsers(dest="safety_verb", required=True, metavar="{check,eval,train}")

    chk = ssub.add_parser(
        "check",
        help="print one safety verdict per question",
        description=(
            "Screen questions against the triage taxonomy (38 emergency and 11 urgent "
            "presentations, docs/safety.md): phrase rules plus a small classifier over MiniLM "
            "embeddings. Each verdict has a level (emergency: call emergency services now; "
            "urgent: get care today; none), a category and what to do now; dose-change and "
            "prescription requests get a note. One line per question: readable, or JSON with "
            "--json. --file screens a whole file in MiniLM batches."
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
        help="measure recall, false-positive rate and precision on the labelled safety sets",
        description=(
            "Score the screen on every shipped set (the original set's dev and heldout parts, the "
            "nine held-out sets A-I, the training corpus by 5-fold cross-validation) with Wilson "
            "95% intervals and per-category recall, then leave-one-category-out: retrain without "
            "each emergency category and measure recall on it. Lists every miss, except on the blind sets."
        ),
    )
    ev.add_argument(
        "--set",
        dest="path",
        action="append",
        default=[],
        help="also score this labelled JSONL (text + level/category, or red_flag); repeatable",
    )
    ev.add_argument(
        "--no-loco", action="store_true", help="skip leave-one-category-out (~28 min on 2 cores)"
    )
    ev.add_argument(
        "--rules-only", action="store_true", help="score the rules alone (as without MiniLM)"
    )
    ev.add_argument("--json", action="store_true", help="print the full report as JSON")
    ev.add_argument(
        "--show-blind-misses",
        action="store_true",
        help="also list the blind held-out sets' misses (reading them, then fixing anything, "
        "turns those sets into development data: docs/safety.md)",
    )

    tr = ssub.add_parser(
        "train",
        help="retrain the learned screen on the shipped corpus (seeded, same bytes on a rerun)",
        description=(
            "Embed the corpus (resources/safety/corpus.jsonl) with MiniLM, calibrate the "
            "thresholds by cross-validation, fit the five networks and measure leave-one-"
            "category-out (about 32 min on 2 cores, 28 of them leave-one-out). Writes "
            "screen.json (by default over the shipped one, atomically)."
        ),
    )
    tr.add_argument("--out", default=None, help="where to write screen.json (default: shipped)")
    tr.add_argument("--corpus", default=None, help="a corpus JSONL instead of the shipped one")
    tr.add_argument(
        "--no-loco",
        action="store_true",
        help="skip leave-one-category-out (the file then records no such figures)",
    )


def _run_safety(args: argparse.Namespace) -> int:
    import json

    from medchat.console import console
    from medchat.ground import safety

    def progress(msg: str) -> None:
        console.print(f"[dim]{msg}[/dim]", highlight=False)

    if args.safety_verb == "train":
        from medchat.ground.safety.sets import train_command

        train_command(args.out, args.corpus, progress, loco=not args.no_loco)
        return 0
    if args.safety_verb == "eval":
        from medchat.ground.safety.screen import load_screen

        screen = None if args.rules_only else load_screen()[0]
        extra = {str(p): p for p in args.path}
        report = safety.evaluate(screen, extra=extra, loco=not args.no_loco, progress=progress)
        if not args.show_blind_misses:
            safety.hide_blind_misses(report)
        out = json.dumps(report, indent=2) + "\n" if args.json else safety.report_table(report)
        sys.stdout.write(out)
        return 0
    if (args.text is None) == (args.file is None):
        raise MedchatError("safety check: give a question as TEXT or --file FILE (one of them)")
    texts = [args.text] if args.file is None else safety.read_texts(args.file)
    for start in range(0, len(texts), 256):
        batch = texts[start : start + 256]
        for text, verdict in zip(batch, safety.check_many(batch), strict=True):
            sys.stdout.write(safety.verdict_line(text, verdict, args.json) + "\n")
    return 0


# ----------------------------------------------------------------------------- eval


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate models side by side on one split, under one generation setting",
        description=(
            "Every model answers the same examples with ONE recorded generation setting (greedy, "
            "batched, sorted by length, KV cache; max new tokens = p95 of the reference answers' "
            "token length unless given). Scores ROUGE-1/2/L/Lsum, corpus BLEU, semantic "
            "similarity, length, distinct-n, repetition and empty answers, with 95% bootstrap "
            "intervals, paired tests against the base, and the echo floor. Predictions are cached "
            "per model, data and setting. Under torchrun, examples are sharded across ranks. "
            "See docs/evaluation.md."
        ),
    )
    p.add_argument("--data", required=True, help="folder written by `medchat data prepare`")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=SPEC",
        help=(
            "a model to evaluate (repeatable): SPEC is a hub id, a local model folder or a run "
            "folder (full, LoRA, QLoRA). The one named 'base', else the first, is the baseline"
        ),
    )
    p.add_argument("--out", required=True, help="eval folder to write (atomically)")
    p.add_argument(
        "--limit", type=int, default=None, help="evaluate a seeded random N examples (default all)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --limit's subset and the bootstrap")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="token budget per answer (default: p95 of the references' token lengths)",
    )
    p.add_argument(
        "--num-beams", type=int, default=None, help="beam search width (default 1: greedy)"
    )
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (needs --do-sample)"
    )
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling (needs --do-sample)")
    p.add_argument(
        "--no-repeat-ngram-size", type=int, default=None, help="ban repeated n-grams (default off)"
    )
    p.add_argument(
        "--batch-size", type=int, default=None, help="generation batch size (default 16)"
    )
    p.add_argument(
        "--no-semantic", action="store_true", help="skip semantic similarity (no MiniLM load)"
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="prediction cache (default $MEDCHAT_CACHE, else ~/.cache/medchat/predictions)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument(
        "--cpu-int8",
        action="store_true",
        help=(
            "quantise every model's Linear layers to int8 (dynamic) for faster CPU eval; changes "
            "numerics, so answers can differ from fp32 (default off)"
        ),
    )
    p.add_argument(
        "--mode",
        default="generate",
        help=(
            "answer modes to compare, comma-separated: generate (the model alone), rag (the "
            "model given the top --k passages; reported as NAME+rag), retrieve (the index's best "
            "answer quoted) and extract (the index's sentences chosen for the question, cited): "
            "both no-model systems. Default generate"
        ),
    )
    p.add_argument(
        "--index",
        default=None,
        help=(
            "knowledge-base index for rag/retrieve (`medchat index build`); refused when it "
            "holds the evaluated split's documents"
        ),
    )
    p.add_argument("--k", type=int, default=3, help="passages per question in rag (default 3)")
    p.add_argument(
        "--retriever",
        default="hybrid",
        choices=["hybrid", "dense", "bm25"],
        help="ranking for rag/retrieve and recall (default hybrid)",
    )
    _add_min_relevance(p)
    p.add_argument(
        "--leave-row-out",
        action="store_true",
        help=(
            "accept an --index that holds the evaluated documents and hide each question's own "
            "row from its search (in-domain grounding: the topic is known through the document's "
            "other rows); default: such an index is refused"
        ),
    )
    p.add_argument(
        "--recall-index",
        default=None,
        help=(
            "an index over every split, used only to measure gold-document recall@1/@5 of the "
            "evaluated questions (never for answering)"
        ),
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _add_min_relevance(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--min-relevance",
        type=float,
        default=None,
        help=(
            "relevance gate for rag/retrieve/extract: passages below it are not used or cited "
            "(default: the threshold calibrated into the index; 0 turns the gate off)"
        ),
    )


def _run_eval(args: argparse.Namespace) -> int:
    from medchat.eval import evaluate
    from medchat.train.model_card import record_evaluation

    out = evaluate.eval_command(args)
    if out is not None:  # rank 0: add the figures to each evaluated run's card and MLflow run
        record_evaluation(out)
    return 0


# ----------------------------------------------------------------------------- report


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="turn an eval folder (and its runs) into report.md and a self-contained report.html",
        description=(
            "Metrics with 95% intervals and p-values, change vs base in points, floors, training "
            "cost, loss curves, bar charts with error bars, answer-length distributions, and the "
            "examples with the largest gain and loss. Runs are found from the eval's model specs; "
            "--runs adds more."
        ),
    )
    p.add_argument("eval_dir", help="folder written by `medchat eval`")
    p.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR", help="extra run folders")
    p.add_argument("--out", required=True, help="report folder to write (atomically)")
    p.add_argument(
        "--examples-by",
        default="rougeL",
        choices=["rougeL", "semantic_similarity"],
        help="per-example score that ranks the largest gains/losses (default rougeL)",
    )
    p.add_argument(
        "--focus",
        default=None,
        metavar="NAME",
        help="model whose gains/losses vs base are listed (default: the best non-base one)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _run_report(args: argparse.Namespace) -> int:
    from medchat.report import report

    report.report_command(args)
    return 0


# ----------------------------------------------------------------------------- compare, sweep


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="put training runs side by side: what differs, cost, validation curves",
        description=(
            "One md and html page across run folders: the method and the hyperparameters that "
            "differ, cost (time, examples/s, peak memory, trainable parameters), best eval loss "
            "and the validation generation metrics at each run's best checkpoint with their "
            "curves on one plot, and with --eval the test metrics with intervals."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (at least two)")
    p.add_argument("--out", required=True, help="folder to write (atomically)")
    p.add_argument(
        "--rank-by",
        default="eval_loss",
        choices=["eval_loss", "rougeL", "semantic"],
        help="validation metric at the best checkpoint that orders the runs (default eval_loss)",
    )
    p.add_argument("--eval", default=None, metavar="EVAL_DIR", help="a `medchat eval` folder "
                   "that evaluated these runs together: adds their test metrics")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _run_compare(args: argparse.Namespace) -> int:
    from medchat.report.compare import compare

    compare(args.runs, args.out, rank_by=args.rank_by, eval_dir=args.eval, overwrite=args.overwrite)
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train a grid of configs one after another, then compare them ranked",
        description=(
            "Every combination of the --grid values is trained through the same path as "
            "`medchat train` into OUT/runs/NAME; OUT/compare ranks them. Rerunning the same "
            "command skips finished runs and resumes an interrupted one."
        ),
    )
    p.add_argument("--config", default=None, help="YAML preset (see configs/); defaults if omitted")
    p.add_argument("--data", required=True, help="folder written by `medchat data prepare`")
    p.add_argument("--out", required=True, help="sweep folder (reuse it to resume)")
    p.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="a config key and its values, e.g. train.learning_rate=1e-3,3e-4 (repeatable)",
    )
    p.add_argument(
        "--rank-by",
        default=None,
        choices=["eval_loss", "rougeL", "semantic"],
        help="validation metric that ranks the runs (default: the config's train.metric_for_best)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every run")


def _run_sweep(args: argparse.Namespace) -> int:
    from medchat.sweep import sweep

    sweep(
        args.config,
        args.data,
        args.out,
        args.grid,
        overrides=args.overrides,
        rank_by=args.rank_by,
    )
    return 0


# ----------------------------------------------------------------------------- ui


def _add_ui(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="a local web page where the base and fine-tuned models answer side by side",
        description=(
            "Serve a comparison page: one question, a column per model with its answer "
            "streamed, time and tokens/s, one settings panel for all, the reference answer and "
            "scores for test-split questions, and the safety layer. With only run dirs given, "
            "their base model is added as the 'base' column. Adapters on the same base share one "
            "loaded copy of it. Binds 127.0.0.1 and makes no outside connection. See docs/ui.md."
        ),
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=SPEC",
        help="a model to compare (repeat): run dir, local model dir or hub id, optionally named",
    )
    p.add_argument("--data", default=None, help="prepared data folder (examples, references)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--concurrency", type=int, default=2, help="requests answered at once")
    p.add_argument("--max-chars", type=int, default=1000, help="longest question accepted")
    p.add_argument(
        "--index",
        default=None,
        help=(
            "knowledge-base index (`medchat index build`): adds the rag answer mode (the default "
            "then), where every model gets the top --k passages and each answer cites them"
        ),
    )
    p.add_argument("--k", type=int, default=3, help="passages per question in rag (default 3)")


def _run_ui(args: argparse.Namespace) -> int:
    from medchat.serve import ui

    ui.ui_command(args)
    return 0


# ----------------------------------------------------------------------------- serve / chat / export


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "spec",
        metavar="SPEC",
        help="run dir, local model dir or hub id; for --backend ct2 a `medchat export --format ct2` dir",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "torch-int8", "ct2"],
        help=(
            "auto (default): ct2 for a CTranslate2 folder; torch for QLoRA or on a GPU; else, on a "
            "CPU, the faster of torch-int8 and a ct2 int8 export, timed on this machine at first "
            "use (a few seconds, remembered per machine and model shape; docs/serving.md)"
        ),
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument(
        "--compute-type",
        default="int8",
        choices=["int8", "float32"],
        help="ct2 compute type (default int8; float32 needs a float32 or int8 export)",
    )


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP API: /v1/answer, OpenAI-compatible /v1/chat/completions, health, metrics",
        description=(
            "Serve a model over HTTP (FastAPI + uvicorn). One worker thread owns the model and "
            "micro-batches concurrent requests with equal settings; a full queue answers 429 "
            "with Retry-After. SIGINT/SIGTERM finish in-flight requests first. See "
            "docs/serving.md."
        ),
    )
    _add_backend_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--api-key",
        default=None,
        help="require `Authorization: Bearer KEY` on /v1/* (default: $MEDCHAT_API_KEY, else "
        "none); a key on the command line shows in `ps`, so prefer --api-key-file",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        help="seconds a non-streamed answer may take before the reply is 504 (default: no limit)",
    )
    p.add_argument(
        "--api-key-file",
        default=None,
        help="read the API key from this file (its first line)",
    )
    p.add_argument(
        "--protect-all",
        action="store_true",
        help="with a key: /metrics, /docs and /openapi.json need it too (/healthz, /readyz stay open)",
    )
    p.add_argument(
        "--max-batch-size", type=int, default=8, help="requests per generate (default 8)"
    )
    p.add_argument(
        "--max-queue", type=int, default=64, help="waiting requests before 429 (default 64)"
    )
    p.add_argument(
        "--batch-wait-ms", type=float, default=5.0, help="wait for batch companions (default 5)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=128, help="answer length by default (default 128)"
    )
    p.add_argument(
        "--index",
        default=None,
        help=(
            "knowledge-base index (`medchat index build`): enables the rag, retrieve and extract "
            "modes"
        ),
    )
    p.add_argument(
        "--mode",
        default=None,
        choices=["generate", "rag", "retrieve", "extract"],
        help="answer mode when a request gives none (default: rag with --index, else generate)",
    )
    p.add_argument("--k", type=int, default=3, help="passages per question in rag (default 3)")


def _run_serve(args: argparse.Namespace) -> int:
    from medchat.console import console
    from medchat.infer.backends import load_backend
    from medchat.serve.api import ServeConfig, serve

    api_key = args.api_key or os.environ.get("MEDCHAT_API_KEY") or None
    if args.api_key_file:
        key_file = Path(args.api_key_file)
        if not key_file.is_file():
            raise MedchatError(f"--api-key-file {key_file}: no such file")
        lines = key_file.read_text(encoding="utf-8").splitlines()
        api_key = lines[0].strip() if lines else ""
        if not api_key:
            raise MedchatError(
                f"--api-key-file {key_file}: the first line is empty; put the key there"
            )
    if args.protect_all and api_key is None:
        raise MedchatError("--protect-all needs a key: --api-key-file FILE (or $MEDCHAT_API_KEY)")
    config = ServeConfig(
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        batch_wait_ms=args.batch_wait_ms,
        default_max_new_tokens=args.max_new_tokens,
        max_new_tokens_limit=max(512, args.max_new_tokens),
        api_key=api_key,
        protect_all=args.protect_all,
        request_timeout_s=args.request_timeout,
        default_mode=args.mode or ("rag" if args.index else "generate"),
        k=args.k,
    )
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] serving on {args.host} without --api-key")
    index = None
    if args.index:
        from medchat.ground.index import load_index

        with console.status("loading the knowledge-base index…"):
            index = load_index(args.index)
            index.encoder  # noqa: B018 - load MiniLM before the first request, not during it
    elif config.default_mode != "generate":
        raise MedchatError(f"--mode {config.default_mode} needs --index INDEX_DIR")

    # Load before the port opens: a bad SPEC ends here with one line and exit status 2, instead
    # of a server that logs a traceback and is never ready.
    with console.status(f"loading {args.spec}…"):
        backend = load_backend(
            args.spec, args.backend, threads=args.threads, compute_type=args.compute_type
        )
    serve(lambda: backend, args.host, args.port, config, index=index)
    return 0


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="terminal chat with streamed answers (reads stdin, so questions can be piped)",
        description="Commands: /help, /reset, /history, /quit. See docs/serving.md.",
    )
    _add_backend_args(p)
    p.add_argument("--max-new-tokens", type=int, default=128, help="answer length (default 128)")
    p.add_argument("--num-beams", type=int, default=1, help="beam search width (default 1)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--index",
        default=None,
        help="knowledge-base index: answer in rag mode, each answer followed by its sources",
    )
    p.add_argument("--k", type=int, default=3, help="passages per question with --index (3)")


def _run_chat(args: argparse.Namespace) -> int:
    from medchat.infer.backends import load_backend
    from medchat.infer.generate import GenerationSettings
    from medchat.serve.chat import run_chat

    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    backend = load_backend(
        args.spec, args.backend, threads=args.threads, compute_type=args.compute_type
    )
    index = None
    if args.index:
        from medchat.ground.index import load_index

        index = load_index(args.index)
    run_chat(backend, settings, index=index, k=args.k)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run for serving: merged model folder, or CTranslate2 (int8)",
        description=(
            "merged: fold LoRA adapters into the base (plain transformers folder). ct2: convert "
            "to CTranslate2 and check it against torch (greedy tokens and log-probs). Both "
            "write prompt.txt and export_manifest.json. See docs/serving.md."
        ),
    )
    p.add_argument("spec", metavar="SPEC", help="run dir, local model dir or hub id")
    p.add_argument("--format", required=True, choices=["merged", "ct2"], help="what to write")
    p.add_argument(
        "--quantization",
        default="int8",
        choices=["int8", "float32"],
        help="ct2 weight type (default int8)",
    )
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _run_export(args: argparse.Namespace) -> int:
    from medchat.infer import export

    export.export_command(args)
    return 0


# ----------------------------------------------------------------------------- index / ask


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build and evaluate the knowledge-base retrieval index")
    isub = p.add_subparsers(dest="index_verb", required=True, metavar="{build,eval}")
    b = isub.add_parser(
        "build",
        help="chunk, embed (MiniLM) and BM25-index a prepared data folder",
        description=(
            "Index the knowledge base for `medchat ask --mode retrieve|rag`: answers cut into "
            "chunks searched with their question and focus; MiniLM embeds each row's first chunk "
            "(int8 on CPU), BM25 indexes every chunk; queries fuse both rankings. Index the train "
            "split only (the default) when the index will answer eval questions. See "
            "docs/retrieval.md."
        ),
    )
    b.add_argument("--data", required=True, help="folder written by `medchat data prepare`")
    b.add_argument("--out", required=True, help="index folder to create (written atomically)")
    b.add_argument(
        "--splits", default="train", help="comma-separated splits to index (default: train)"
    )
    b.add_argument("--chunk-words", type=int, default=64, help="answer words per chunk (64)")
    b.add_argument(
        "--dense-chunks", type=int, default=1, help="leading chunks per row to embed (1; 0 = all)"
    )
    b.add_argument(
        "--max-seq-length",
        type=int,
        default=128,
        help="MiniLM word pieces per chunk (128; 64 builds ~2.4x faster, slightly lower recall)",
    )
    b.add_argument("--no-quantize", action="store_true", help="embed in fp32 instead of int8")
    b.add_argument("--stemmer", choices=["porter", "none"], default="porter", help="BM25 stemmer")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    e = isub.add_parser(
        "eval",
        help="recall@1/@5 and MRR of a split's questions (dense, BM25, hybrid)",
        description=(
            "A hit is any retrieved row of the question's own document (doc_id). Measure on an "
            "index over all splits (--splits train,validation,test): the split keeps a "
            "document's rows together, so a train-only index never holds a test document."
        ),
    )
    e.add_argument("--index", required=True, help="index folder")
    e.add_argument("--data", required=True, help="prepared data folder with the questions")
    e.add_argument("--split", default="test", help="split whose questions to ask (test)")
    e.add_argument(
        "--exclude-own-row",
        action="store_true",
        help="hide each question's own row: its document must be found through its other rows",
    )
    e.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_index(args: argparse.Namespace) -> int:
    from medchat.ground import index

    if args.index_verb == "build":
        index.build_command(args)
    else:
        index.eval_command(args)
    return 0


def _add_ask(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ask",
        help="answer one question: model, quoted knowledge-base answer, or both (RAG)",
        description=(
            "Modes: generate (SPEC only), retrieve (--index only: the best knowledge-base answer "
            "quoted with its source), extract (--index only: the knowledge base's sentences "
            "chosen for the question, each with its [n] source), rag (SPEC and --index: the "
            "top-k passages as context). Passages must pass the index's relevance gate; when none "
            "does, the answer says it has no source. "
            "Prints the emergency message first when the question is a red flag, the sources, "
            "the safety verdict, and the disclaimer last. Default mode: rag with both, else "
            "whichever is given."
        ),
    )
    p.add_argument("spec", nargs="?", default=None, help="run dir, model dir or hub id")
    p.add_argument("question", help="the question (quote it)")
    p.add_argument("--index", default=None, help="index folder from `medchat index build`")
    p.add_argument("--mode", choices=["generate", "retrieve", "rag", "extract"], default=None)
    p.add_argument("--k", type=int, default=3, help="passages for rag and extract (3)")
    p.add_argument(
        "--max-words", type=int, default=120, help="length bound of an extract answer (120)"
    )
    _add_min_relevance(p)
    p.add_argument(
        "--retriever", choices=["hybrid", "dense", "bm25"], default="hybrid", help="(hybrid)"
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="answer length limit (128)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _run_ask(args: argparse.Namespace) -> int:
    from medchat.ground import answering

    return answering.ask_command(args)


# ----------------------------------------------------------------------------- demo


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole job offline: prepare -> train full/LoRA/QLoRA -> eval -> report",
        description=(
            "Prepare data, train the tiny model with full fine-tuning, LoRA and QLoRA (where "
            "bitsandbytes runs), evaluate base vs each, write the report, and print the "
            "`medchat ui` command that compares them. Data, in this order: --data; MedQuAD in the "
            "user cache (~/.cache/medchat); a download of MedQuAD when online; otherwise a small "
            "illustrative sample that ships with medchat. Offline on 2 CPU cores: minutes (--quick: ~1). "
            "With --model google/flan-t5-base (online, ideally on a GPU) it is the real job."
        ),
    )
    p.add_argument("--data", default=None, help="Q&A source (file, folder, .tar.gz); see above")
    p.add_argument("--out", default="medchat-demo", help="output folder (default medchat-demo)")
    p.add_argument("--model", default="tiny", help="'tiny' (offline) or a hub id / local model dir")
    p.add_argument(
        "--limit", type=int, default=None, help="test examples to evaluate (default 100)"
    )
    p.add_argument("--quick", action="store_true", help="a minimal budget (CI's smoke run)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _run_demo(args: argparse.Namespace) -> int:
    from medchat import demo

    demo.demo_command(args)
    return 0


# ----------------------------------------------------------------------------- main

_VERBS = {
    "demo": (_add_demo, _run_demo),
    "data": (_add_data, _run_data),
    "train": (_add_train, _run_train),
    "config": (_add_config, _run_config),
    "safety": (_add_safety, _run_safety),
    "eval": (_add_eval, _run_eval),
    "report": (_add_report, _run_report),
    "compare": (_add_compare, _run_compare),
    "sweep": (_add_sweep, _run_sweep),
    "ui": (_add_ui, _run_ui),
    "serve": (_add_serve, _run_serve),
    "chat": (_add_chat, _run_chat),
    "export": (_add_export, _run_export),
    "index": (_add_index, _run_index),
    "ask": (_add_ask, _run_ask),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medchat",
        description="Fine-tune a seq2seq model into a medical Q&A chatbot, and measure the gain.",
    )
    parser.add_argument("--version", action="version", version=f"medchat {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the libraries' own logs, warnings and progress bars (by default they "
        "are kept off the terminal; a training run keeps them in its train.log)",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add, _ in _VERBS.values():
        add(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`build_parser().parse_args`, letting `medchat ask SPEC --index DIR "question"` put its
    options between its two positionals (argparse alone fills QUESTION with SPEC there)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if "--verbose" in extra:  # also accepted after the verb: `medchat train --verbose ...`
        extra.remove("--verbose")
        args.verbose = True
    if (
        args.verb == "ask"
        and args.spec is None
        and len(extra) == 1
        and not extra[0].startswith("-")
    ):
        args.spec, args.question = args.question, extra[0]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `medchat` console script."""
    # Offline-first: never phone home for analytics; users who want the hub still get it
    # through from_pretrained (HF_HUB_OFFLINE is left to the user).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = parse_args(argv)
    if not args.verbose:
        from medchat.console import quiet_libraries

        quiet_libraries()
    try:
        return _VERBS[args.verb][1](args)
    except MedchatError as e:
        from rich.markup import escape

        from medchat.console import console

        # escape: "pip install 'medchat[track]'" is text, not a rich style tag.
        console.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)
        return 2
    except OSError as e:
        # A full disk, a read-only folder, a permission: one line naming the path, no traceback.
        # Outputs are written to a temp file or folder and renamed, so nothing is left half-written.
        from medchat.console import console

        console.print(f"[bold red]error:[/] {os_error_line(e)}", markup=True, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        from medchat.console import console

        console.print("interrupted")
        return 130


def os_error_line(e: OSError) -> str:
    """'PATH: reason; what to do' for an operating-system error."""
    import errno

    where = e.filename or "(no path)"
    if e.filename2:
        where = f"{where} -> {e.filename2}"
    reason = e.strerror or str(e)
    hint = {
        errno.ENOSPC: "free some space and run the command again (training: add --resume)",
        errno.EDQUOT: "free some space and run the command again (training: add --resume)",
        errno.EACCES: "check the folder's permissions, or write somewhere else",
        errno.EROFS: "the file system is read-only; write somewhere else",
    }.get(e.errno or 0, "check the path and run the command again")
    return f"{where}: {reason}; {hint}"


if __name__ == "__main__":
    sys.exit(main())
