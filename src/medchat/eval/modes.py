"""The answer modes of `medchat eval` beyond plain generation: rag (a model given retrieved
passages), retrieve (a quoted knowledge-base answer) and extract (cited sentences), the search
they share, and the system names each mode adds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medchat.errors import MedchatError

if TYPE_CHECKING:
    from medchat.eval.evaluate import ModelSpec
    from medchat.ground.retrieval import RetrievalIndex

ECHO = "echo"
# Answer modes eval compares (medchat.ground.answering): each model answers in every model mode given
# (a rag system is named NAME+rag), and `retrieve` adds a no-model system scored beside the floors.
MODEL_MODES = ("generate", "rag")
RETRIEVE = "retrieve"
EXTRACT = "extract"
# System names of eval's no-model answers; a --model may not take one.
FLOORS = (ECHO, RETRIEVE, EXTRACT)
RAG_SUFFIX = "+rag"


@dataclass
class Retrieval:
    """The index's top-k rows for every eval question, searched once for rag and retrieve."""

    index: RetrievalIndex
    hits: list[list[Any]]  # what passed the relevance gate (all a grounded mode may use)
    record: dict[str, Any]  # metrics.json["retrieval"]; its identity is in rag cache keys


def parse_modes(modes: str | Sequence[str] | None) -> list[str]:
    """`"generate,rag,retrieve"` (or a list) -> the modes, in order, checked."""
    from medchat.ground.answering import MODES

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
    from medchat.ground.answering import CONTEXT_WORDS, MAX_WORDS
    from medchat.ground.index import load_index
    from medchat.ground.retrieval import doc_id_of

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
    from medchat.ground.answering import MAX_WORDS, extract_batch, quote_of

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

    from medchat.ground.answering import CONTEXT_WORDS, rag_prompt
    from medchat.models.modeling import load_tokenizer

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
            systems.append(dataclasses.replace(m, name=name))
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
    from medchat.ground.index import load_index, retrieval_recall
    from medchat.ground.retrieval import doc_id_of

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
