"""A knowledge-base index on disk: build it from a prepared data folder (with the relevance gate
calibrated on the validation split), save and load it, and measure its gold-document recall.
`medchat index build` and `medchat index eval` run here; the index itself is `retrieval.py`."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medchat import __version__
from medchat.errors import MedchatError
from medchat.fileio import atomic_output_dir, read_json, read_jsonl, write_json, write_jsonl
from medchat.ground.retrieval import (
    DEFAULT_MIN_RELEVANCE,
    DENSE_FLOOR,
    GATE_KEEP,
    INDEX_FORMAT,
    METHODS,
    IndexSettings,
    RetrievalIndex,
    bm25_stemmer,
    bm25_tokenize,
    chunk_rows,
    doc_id_of,
    embed,
    embedder_fingerprint,
    kb_rows,
    load_encoder,
    search_text,
    status_line,
)

log = logging.getLogger(__name__)


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
    with status_line(f"BM25 over {len(chunks)} chunks", progress):
        corpus = bm25_tokenize(texts, bm25_stemmer(settings.stemmer))
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
            with status_line(
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
