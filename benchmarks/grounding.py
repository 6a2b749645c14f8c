"""The relevance gate and `extract` mode, measured (docs/retrieval.md, "The relevance gate").

    python benchmarks/grounding.py --data .dev/data/medquad --train-index .dev/index/train \
        --all-index .dev/index/all --sets benchmarks/data/grounding --out benchmarks/results/grounding.json

Gate: the threshold is calibrated on the validation split (`index.calibrate_gate`, as
`medchat index build` does). In domain: test questions on an index that holds their documents keep
a passage (and their own document). Absent topics: test questions on the train index (prepared
splits keep each focus group in one split). Written sets (benchmarks/data/grounding): non-medical
questions, and lay questions on topics that are or are not in the train index.
Extract vs retrieve: test questions on the train index with the gate off (no test topic is indexed,
so both answer from related topics), scored against the references, paired bootstrap.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--train-index", required=True)
    ap.add_argument("--all-index", required=True)
    ap.add_argument("--sets", default="benchmarks/data/grounding")
    ap.add_argument("--limit", type=int, default=None, help="test questions for extract/retrieve")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--dump-passes",
        default=None,
        help="write the absent-topic test questions that still got a source (to be judged)",
    )
    args = ap.parse_args()

    from medchat.data import load_split
    from medchat.eval.metrics import load_embedder, rouge_scores, semantic_similarity
    from medchat.eval.significance import paired_test
    from medchat.ground.answering import answer_batch
    from medchat.ground.index import calibrate_gate, load_index
    from medchat.ground.retrieval import doc_id_of

    train, everything = load_index(args.train_index), load_index(args.all_index)
    gate = calibrate_gate(train, load_split(args.data, "validation"))
    t = gate["min_relevance"]
    for ix in (train, everything):
        ix.min_relevance = t
    test = load_split(args.data, "test")
    qs = [r["question"] for r in test]
    res: dict = {"gate": gate, "machine": platform.processor() or platform.machine()}

    def rate(index, questions):
        hits = [index.gate(h) for h in index.search_batch(questions, 3)]
        return hits, sum(bool(h) for h in hits) / len(hits)

    hits, kept = rate(everything, qs)
    own = sum(any(h.doc_id == doc_id_of(r) for h in hs) for r, hs in zip(test, hits, strict=True))
    own /= len(test)
    absent_hits, passed = rate(train, qs)
    if args.dump_passes:
        passes = [
            {"question": q, "topic": r["focus"], "cited": sorted({h.title for h in hs})}
            for q, r, hs in zip(qs, test, absent_hits, strict=True)
            if hs
        ]
        Path(args.dump_passes).write_text("".join(json.dumps(p) + "\n" for p in passes))
    res["medquad_test"] = {
        "n": len(qs),
        "in_domain_kept": kept,
        "in_domain_own_doc_kept": own,
        "absent_topic_no_source": 1 - passed,
    }
    sets = Path(args.sets)
    topics = (
        json.loads((sets / "topics.json").read_text()) if (sets / "topics.json").exists() else {}
    )
    for name in sorted(p.stem for p in sets.glob("*.jsonl")):
        rows = [json.loads(x) for x in (sets / f"{name}.jsonl").read_text().splitlines() if x]
        if name.startswith("nonmedical"):
            _, p = rate(train, [r["question"] for r in rows])
            res[name] = {"n": len(rows), "no_source": 1 - p}
        else:
            indexed = set(topics.get(name, {}).get("train", []))
            inn = [r["question"] for r in rows if r["topic"] in indexed]
            out = [r["question"] for r in rows if r["topic"] not in indexed]
            res[name] = {
                "n_in": len(inn),
                "in_index_kept": rate(train, inn)[1],
                "n_absent": len(out),
                "absent_no_source": 1 - rate(train, out)[1],
            }
    # extract vs retrieve, gate off
    rows = test[: args.limit] if args.limit else test
    q, refs = [r["question"] for r in rows], [r["answer"] for r in rows]
    start = time.perf_counter()
    ext = [a.text for a in answer_batch(q, "extract", index=train, min_relevance=0, progress=False)]
    ext_s = time.perf_counter() - start
    ret = [
        a.text for a in answer_batch(q, "retrieve", index=train, min_relevance=0, progress=False)
    ]
    emb = load_embedder()
    out = {"n": len(q), "extract_seconds": round(ext_s, 1)}
    for name, texts in (("extract", ext), ("retrieve", ret)):
        out[name] = {
            "words": float(np.mean([len(x.split()) for x in texts])),
            "rougeL": float(np.mean(rouge_scores(texts, refs)["rougeL"])),
            "semantic": float(np.mean(semantic_similarity(texts, refs, embedder=emb))),
        }
        out[name]["_r"] = rouge_scores(texts, refs)["rougeL"]
        out[name]["_s"] = semantic_similarity(texts, refs, embedder=emb)
    for m, key in (("rougeL", "_r"), ("semantic", "_s")):
        pt = paired_test(np.array(out["extract"][key]), np.array(out["retrieve"][key]))
        out[f"diff_{m}"] = pt
    for name in ("extract", "retrieve"):
        out[name].pop("_r")
        out[name].pop("_s")
    res["extract_vs_retrieve"] = out
    text = json.dumps(res, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
