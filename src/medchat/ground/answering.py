"""The four answer modes, shared by `medchat ask`, eval, the UI and the HTTP API.

- `generate`: the model alone (format_prompt(question, the run's template)).
- `retrieve`: the best knowledge-base answer, quoted verbatim, with its citation; no model.
- `extract`: a short answer made of the knowledge base's own sentences chosen for the question,
  each with its `[n]` citation; no model.
- `rag`: the top-k passages put before the question (`prompts.format_rag_prompt`), then the
  model. The model input is the run's template applied to that RAG prompt, which is exactly what
  a model trained on `build_rag_examples` rows saw.

Every grounded mode passes its hits through the index's relevance gate (`RetrievalIndex.gate`):
a passage that does not pass is never given to a model, shown or cited. When none passes, the
answer is not grounded (`grounded` False): retrieve and extract say nothing matches, and rag
answers without context and says so.

Every answer carries the safety verdict of its question (`medchat.ground.safety.check`), so an emergency
message can be shown first and the disclaimer last.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from medchat.errors import MedchatError
from medchat.ground.safety import DISCLAIMER, SafetyVerdict, check, level_label
from medchat.prompts import MAX_SOURCE_TOKENS, format_prompt, format_rag_prompt

if TYPE_CHECKING:
    from medchat.ground.retrieval import Hit, RetrievalIndex
    from medchat.infer.backends import Backend
    from medchat.models.modeling import LoadedModel

    # What answers in rag and generate: a loaded model (eval, chat, UI) or a serving backend.
    Model = LoadedModel | Backend


MODES = ("generate", "retrieve", "rag", "extract")
GROUNDED_MODES = ("retrieve", "rag", "extract")
# Words of retrieved context in a RAG prompt, shared among the k passages: 240 words is about
# 330 flan-t5 tokens, leaving room for the question within its 512-token input.
CONTEXT_WORDS = 240
# An extract answer's length bound: about a third of a median MedQuAD answer, a paragraph.
MAX_WORDS = 120
NO_MATCH = (
    "No answer in the knowledge base matches this question closely enough. Try rephrasing it, "
    "or ask a clinician."
)
NO_SOURCE = (
    "No source: nothing in the knowledge base matches this question, so this answer comes from "
    "the model alone and cites nothing."
)


@dataclass
class Citation:
    """Where a passage or quoted answer comes from."""

    title: str
    url: str | None
    doc_id: str
    row_id: str
    question: str  # the knowledge-base question that matched
    source: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Answer:
    """One answer in any mode, with its citations, safety verdict and latency."""

    question: str
    mode: str
    text: str
    citations: list[Citation]
    safety: SafetyVerdict
    latency_s: float
    model: str | None = None
    context: list[str] = field(default_factory=list)  # passages the model was given (rag)
    grounded: bool = False  # a knowledge-base passage passed the relevance gate (cited)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["citations"] = [c.to_dict() for c in self.citations]
        d["safety"] = self.safety.to_dict()
        return d

    def display(self, verdict: bool = False) -> str:
        """As shown to a person: emergency message and notes first, then the answer and its
        sources, (with `verdict`, a one-line safety verdict), and the disclaimer last."""
        s = self.safety
        label = level_label(s)
        parts = [f"{label}: {s.message}" if label and s.message else s.message]
        parts += [n for n in s.notes if n != s.message]
        parts.append(source_note(self.mode, self.grounded))
        parts.append(self.text.strip())
        parts.append(sources_text(self.citations))
        if verdict:
            if not s.judged:
                flag = "not checked (not English)"
            elif s.level != "none":
                flag = f"{s.level} ({s.category})"
            else:
                flag = "no red flag" + (f"; note: {s.category}" if s.category else "")
            parts.append(f"Safety: {flag} [{s.screen}]. Mode: {self.mode}; {self.latency_s:.2f}s.")
        parts.append(DISCLAIMER)
        return "\n\n".join(p for p in parts if p)


def sources_text(citations: Sequence[Citation]) -> str:
    """'Sources:' and one numbered line per citation (title - URL); '' without citations."""
    if not citations:
        return ""
    lines = [f"[{i}] {c.title} - {c.url or c.row_id}" for i, c in enumerate(citations, 1)]
    return "Sources:\n" + "\n".join(lines)


def check_mode(mode: str, lm: Model | None, index: RetrievalIndex | None) -> None:
    """Refuse, before any work, a mode without what it needs."""
    if mode not in MODES:
        raise MedchatError(f"unknown answer mode {mode!r}; use one of {', '.join(MODES)}")
    if mode in ("generate", "rag") and lm is None:
        raise MedchatError(
            f"mode {mode!r} needs a model: give a SPEC (run dir, model dir or hub id)"
        )
    if mode in GROUNDED_MODES and index is None:
        raise MedchatError(
            f"mode {mode!r} needs a knowledge-base index: --index INDEX_DIR "
            "(build one with `medchat index build --data DATA_DIR --out INDEX_DIR`)"
        )


def answer(
    question: str,
    mode: str,
    lm: Model | None = None,
    index: RetrievalIndex | None = None,
    settings: Any = None,
    k: int = 3,
    **kwargs: Any,
) -> Answer:
    """Answer one question in `mode` (see `answer_batch` for the keyword arguments)."""
    return answer_batch([question], mode, lm, index, settings, k, progress=False, **kwargs)[0]


@dataclass
class Grounding:
    """What a mode puts around a question before any generation (for callers that generate or
    stream themselves: the UI, the HTTP API, eval's cached batches)."""

    question: str
    mode: str
    model_question: str | None  # what to pass to generate_answers in the question's place
    citations: list[Citation]
    context: list[str]  # passages inside model_question (rag)
    quote: str | None = None  # retrieve and extract: the answer text itself
    grounded: bool = False  # some passage passed the relevance gate

    def model_input(self, lm: Model | None) -> str:
        """The exact model input (the run's template applied), e.g. for `stream_answer(prompt=)`."""
        if self.model_question is None:
            raise MedchatError(f"mode {self.mode!r} has no model input")
        return format_prompt(self.model_question, lm.prompt_template)


def ground_batch(
    questions: Sequence[str],
    mode: str,
    lm: Model | None = None,
    index: RetrievalIndex | None = None,
    k: int = 3,
    *,
    method: str = "hybrid",
    min_relevance: float | None = None,
    context_words: int = CONTEXT_WORDS,
    max_words: int = MAX_WORDS,
    progress: bool = False,
) -> list[Grounding]:
    """Retrieval for many questions (one embedding batch), gated and shaped for `mode`; no
    generation. `min_relevance` overrides the index's calibrated gate (0 turns it off)."""
    check_mode(mode, lm, index)
    if k < 1:
        raise MedchatError(f"k must be >= 1 (got {k})")
    if mode == "generate":
        return [Grounding(q, mode, q, [], []) for q in questions]
    found = index.search_batch(list(questions), k, method, progress=progress)
    passing = [index.gate(hits, min_relevance) for hits in found]
    if mode == "extract":
        return extract_batch(questions, passing, index, max_words)
    out = []
    for q, hits in zip(questions, passing, strict=True):
        if mode == "retrieve":
            cited = [citation_of(h) for h in hits[:1]]
            out.append(Grounding(q, mode, None, cited, [], quote_of(hits), bool(hits)))
        else:
            passages = rag_passages(q, hits, context_words, lm)
            cited = [citation_of(h) for h in hits]
            out.append(
                Grounding(q, mode, rag_input(q, passages), cited, passages, grounded=bool(hits))
            )
    return out


def ground(
    question: str,
    mode: str,
    lm: Model | None = None,
    index: RetrievalIndex | None = None,
    k: int = 3,
    **kwargs: Any,
) -> Grounding:
    """`ground_batch` for one question."""
    return ground_batch([question], mode, lm, index, k, **kwargs)[0]


def answer_batch(
    questions: Sequence[str],
    mode: str,
    lm: Model | None = None,
    index: RetrievalIndex | None = None,
    settings: Any = None,
    k: int = 3,
    *,
    method: str = "hybrid",
    min_relevance: float | None = None,
    context_words: int = CONTEXT_WORDS,
    max_words: int = MAX_WORDS,
    progress: bool = True,
) -> list[Answer]:
    """Answer many questions in `mode`; generation is batched, retrieval embeds all at once.

    `lm` is a `modeling.LoadedModel`, `index` a `retrieval.RetrievalIndex`, `settings` a
    `generate.GenerationSettings` (defaults if None). `method` picks the retriever (hybrid, dense,
    bm25). `min_relevance` overrides the index's relevance gate (0: every hit passes). `max_words`
    bounds an extract answer. Each answer's latency_s is its share of the batch's wall time.
    """
    check_mode(mode, lm, index)
    if index is not None and mode != "generate":
        index.encoder  # noqa: B018 - load MiniLM now, so latency counts answering, not loading
    start = time.perf_counter()
    grounded = ground_batch(
        questions,
        mode,
        lm,
        index,
        k,
        method=method,
        min_relevance=min_relevance,
        context_words=context_words,
        max_words=max_words,
    )
    if mode in ("retrieve", "extract"):
        texts = [g.quote or "" for g in grounded]
    else:
        texts = _generate(lm, [g.model_question for g in grounded], settings, progress)
    share = (time.perf_counter() - start) / max(len(grounded), 1)
    return [
        Answer(
            question=g.question,
            mode=mode,
            text=text,
            citations=g.citations,
            safety=check(g.question),
            latency_s=share,
            model=getattr(lm, "name", None) if mode in ("generate", "rag") else None,
            context=g.context,
            grounded=g.grounded,
        )
        for g, text in zip(grounded, texts, strict=True)
    ]


def _generate(lm: Model, prompts: list[str], settings: Any, progress: bool) -> list[str]:
    from medchat.infer.generate import GenerationSettings, generate_answers

    # generate_answers applies the run's template to each prompt, sorted by length, in batches.
    return generate_answers(lm, prompts, settings or GenerationSettings(), progress=progress)


def quote_of(hits: Sequence[Hit]) -> str:
    """`retrieve`'s answer: the best gated row's answer verbatim, or the no-match message."""
    return hits[0].row["answer"] if hits else NO_MATCH


def source_note(mode: str, grounded: bool) -> str:
    """NO_SOURCE for a rag answer that got no passage past the gate, else ''."""
    return NO_SOURCE if mode == "rag" and not grounded else ""


def citation_of(hit: Hit) -> Citation:
    """The citation of one retrieved row."""
    r = hit.row
    return Citation(
        title=hit.title,
        url=r.get("url"),
        doc_id=r["doc_id"],
        row_id=r["id"],
        question=r["question"],
        source=r.get("source"),
        score=round(hit.score, 6),
    )


# Sentence ends: ., ! or ? followed by a space and a capital, digit or bracket ("Dr. smith" and
# "e.g. this" stay whole because the next word is lower case).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")
# Sentences of one answer that extract considers: the answers' openings hold their substance, and a
# bound keeps a 4,000-word answer from costing seconds of embedding.
SENTENCES_PER_ROW = 40
# Maximal marginal relevance: relevance to the question against overlap with what is chosen.
MMR_LAMBDA = 0.7


def sentences_of(text: str) -> list[str]:
    """An answer's sentences, without the questions some answers open with (GARD repeats the
    question) and without fragments of under four words."""
    out = []
    for part in _SENTENCE_END.split(" ".join(text.split())):
        part = part.strip()
        if len(part.split()) >= 4 and not part.endswith("?"):
            out.append(part)
    return out[:SENTENCES_PER_ROW]


def extract_batch(
    questions: Sequence[str],
    passing: Sequence[Sequence[Hit]],
    index: RetrievalIndex,
    max_words: int,
) -> list[Grounding]:
    """`extract` for many questions: from each question's gated hits, the sentences closest to
    the question (MiniLM cosine), chosen by maximal marginal relevance so none repeats another,
    up to `max_words` words, then put back in reading order (hit rank, then position) with the
    `[n]` of the hit each came from. Sentences of one row are embedded once per batch."""
    if max_words < 10:
        raise MedchatError(f"max_words must be >= 10 (got {max_words})")
    rows = {h.row["id"]: h.row for hits in passing for h in hits}
    sents = {rid: sentences_of(r["answer"]) for rid, r in rows.items()}
    flat = [(rid, j, t) for rid, ss in sents.items() for j, t in enumerate(ss)]
    vecs = index.embed_queries([*questions, *(t for _, _, t in flat)])
    qvecs, svecs = vecs[: len(questions)], vecs[len(questions) :]
    where = {(rid, j): n for n, (rid, j, _) in enumerate(flat)}
    out = []
    for q, qv, hits in zip(questions, qvecs, passing, strict=True):
        cands = [
            (rank, j, text, where[(h.row["id"], j)])
            for rank, h in enumerate(hits)
            for j, text in enumerate(sents[h.row["id"]])
        ]
        chosen = _mmr(cands, qv, svecs, max_words)
        if not chosen:
            out.append(Grounding(q, "extract", None, [], [], NO_MATCH, False))
            continue
        chosen.sort(key=lambda c: (c[0], c[1]))
        number: dict[int, int] = {}  # hit rank -> its [n], in order of first use
        parts = []
        for rank, _, text, _ in chosen:
            n = number.setdefault(rank, len(number) + 1)
            parts.append(f"{text} [{n}]")
        cited = [citation_of(hits[rank]) for rank in number]
        out.append(Grounding(q, "extract", None, cited, [], " ".join(parts), True))
    return out


def _mmr(cands: list[tuple], qv: Any, svecs: Any, max_words: int) -> list[tuple]:
    """Greedy maximal marginal relevance under a word budget; a sentence that does not fit is
    skipped for a shorter one."""
    import numpy as np

    if not cands:
        return []
    vec = svecs[[c[3] for c in cands]]
    rel = vec @ qv
    overlap = np.full(len(cands), -1.0)  # each candidate's highest cosine to a chosen sentence
    left = np.ones(len(cands), dtype=bool)
    chosen: list[int] = []
    words = 0
    while left.any():
        score = np.where(
            left, MMR_LAMBDA * rel - (1 - MMR_LAMBDA) * np.maximum(overlap, 0), -np.inf
        )
        best = int(np.argmax(score))
        left[best] = False
        n = len(cands[best][2].split()) + 1  # its words and its [n]
        if words + n > max_words:
            continue
        chosen.append(best)
        words += n
        overlap = np.maximum(overlap, vec @ vec[best])
    return [cands[i] for i in chosen]


def _passage(hit: Any, words: int | None = None) -> str:
    text = hit.passage if words is None else " ".join(hit.passage.split()[:words])
    return f"{hit.title}: {text}"


def rag_passages(
    question: str, hits: Sequence[Hit], context_words: int = CONTEXT_WORDS, lm: Model | None = None
) -> list[str]:
    """Each hit's passage, titled and cut to its share of `context_words`. With `lm`, passages
    shrink until the model input fits its 512 tokens, so the question (last in the RAG template)
    is never truncated away."""
    if not hits:
        return []
    words = max(context_words // len(hits), 8)
    while True:
        passages = [_passage(h, words) for h in hits]
        if lm is None or words <= 8:
            return passages
        prompt = format_prompt(format_rag_prompt(question, passages), lm.prompt_template)
        if len(lm.tokenizer(prompt)["input_ids"]) <= MAX_SOURCE_TOKENS:
            return passages
        words = max(int(words * 0.8), 8)


def rag_prompt(
    question: str, hits: Sequence[Hit], context_words: int = CONTEXT_WORDS, lm: Model | None = None
) -> str:
    """The RAG prompt for `question` and its retrieved `hits` (the run's template goes around it);
    with `lm`, shrunk to fit that model's input (see `rag_passages`). Without hits (nothing passed
    the relevance gate), the bare question."""
    return rag_input(question, rag_passages(question, hits, context_words, lm))


def rag_input(question: str, passages: Sequence[str]) -> str:
    """What rag gives the model in the question's place: the RAG prompt, or, with no passage,
    the bare question (it answers alone rather than from an empty context)."""
    return format_rag_prompt(question, passages) if passages else question


def build_rag_examples(
    rows: Sequence[dict[str, Any]],
    index: RetrievalIndex,
    k: int = 3,
    exclude_own_doc: bool = True,
    *,
    context_words: int = CONTEXT_WORDS,
    method: str = "hybrid",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Training rows whose question is replaced by its RAG prompt.

    The context never holds the row's own answer: its own row is always left out, and with
    `exclude_own_doc` its whole document too, so the model learns to use context rather than copy
    a passage. Each row keeps its question as `original_question` and records where its context
    came from (`context_doc_ids`, `context_row_ids`).
    """
    from medchat.ground.retrieval import doc_id_of

    questions = [r["question"] for r in rows]
    own_docs = [doc_id_of(r) if exclude_own_doc else None for r in rows]
    own_rows = [str(r["id"]) for r in rows]
    hits = index.search_batch(questions, k, method, own_docs, own_rows, progress=progress)
    out = []
    for r, h in zip(rows, hits, strict=True):
        out.append(
            {
                **r,
                "question": rag_prompt(r["question"], h, context_words),
                "original_question": r["question"],
                "context_doc_ids": [x.doc_id for x in h],
                "context_row_ids": [x.row["id"] for x in h],
            }
        )
    return out


# ----------------------------------------------------------------------------- CLI


def ask_command(args: Any) -> int:
    """`medchat ask [SPEC] QUESTION [--index DIR] [--mode M] [--k 3] [--json]`."""
    import json
    import sys

    from medchat.infer.generate import GenerationSettings

    mode = args.mode or (
        "rag" if args.spec and args.index else "retrieve" if args.index else "generate"
    )
    # Check with what was given before loading anything heavy.
    check_mode(mode, args.spec, args.index)
    lm = index = None
    if mode != "generate":
        from medchat.ground.index import load_index

        index = load_index(args.index)
    if mode in ("generate", "rag"):  # retrieve and extract need no model
        from medchat.models.modeling import load_model_spec

        lm = load_model_spec(args.spec)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    result = answer(
        args.question, mode, lm, index, settings, args.k, method=args.retriever,
        min_relevance=args.min_relevance, max_words=args.max_words,
    )  # fmt: skip
    out = json.dumps(result.to_dict(), ensure_ascii=False) if args.json else result.display(True)
    sys.stdout.write(out + "\n")
    return 0
