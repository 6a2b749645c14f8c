"""Answer-quality metrics: pure functions on lists of strings.

Scales: ROUGE, BLEU and semantic similarity are on 0-100; distinct-n and the ``*_rate`` values
are fractions in 0-1; lengths are word counts. Every function returns per-example values in the
input order so a caller can write them into predictions.jsonl; ``compute_metrics`` bundles them.

Labels starting with ``original_`` reproduce the original project's definitions so our numbers can
stand next to theirs (see docs/metrics.md); they are not the numbers to draw conclusions from.
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from medchat.models.embedder import Embedder, embed, load_embedder

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ORIGINAL_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# A sentence ends at . ! or ? followed by whitespace, or at a line break. Deliberately simple: it
# only feeds ROUGE-Lsum, whose tokenizer drops punctuation anyway, and needs no nltk punkt data.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; they must pair up"
        )


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean over defined values; None when nothing is defined (JSON-safe, unlike NaN)."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


# --- ROUGE -----------------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """Split text into sentences with a regex (no nltk data needed); blank pieces are dropped."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


class _MemoStemTokenizer:
    """rouge_score's default stemming tokenizer with the Porter stemmer memoised.

    Same tokens (a test checks it), but stemming was half of ROUGE's run time and medical answers
    repeat the same words endlessly.
    """

    def __init__(self) -> None:
        from nltk.stem import porter

        self.stem = functools.lru_cache(maxsize=1 << 16)(porter.PorterStemmer().stem)

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize

        return tokenize.tokenize(text, self)


@functools.lru_cache(maxsize=4)
def _rouge_scorer(rouge_types: tuple[str, ...], use_stemmer: bool) -> Any:
    from rouge_score import rouge_scorer

    tokenizer = _MemoStemTokenizer() if use_stemmer else None
    return rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=use_stemmer, tokenizer=tokenizer)


def rouge_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    use_stemmer: bool = True,
    rouge_types: tuple[str, ...] = ROUGE_TYPES,
) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L/Lsum F1 on 0-100 (Porter stemming on by default).

    Texts are re-joined one sentence per line, which ROUGE-Lsum needs; ROUGE-1/2/L are unchanged
    by it because rouge_score's tokenizer treats a line break as any other whitespace.
    """
    _check_pairs(predictions, references)
    scorer = _rouge_scorer(rouge_types, use_stemmer)
    out: dict[str, list[float]] = {t: [] for t in rouge_types}
    for pred, ref in zip(predictions, references, strict=True):
        # rouge_score's argument order is (target, prediction).
        scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(pred)))
        for t in rouge_types:
            out[t].append(100.0 * scores[t].fmeasure)
    return out


# --- BLEU ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _sentence_bleu_metric() -> Any:
    from sacrebleu.metrics import BLEU

    # sacrebleu.sentence_bleu's defaults (exp smoothing, effective order), built once rather than
    # once per sentence as the compat function does.
    return BLEU(effective_order=True)


def corpus_bleu(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    extra_references: Sequence[Sequence[str]] = (),
) -> float:
    """Corpus BLEU on 0-100 from ``sacrebleu.corpus_bleu`` (13a tokens, case-sensitive).

    ``extra_references`` holds further reference sets, each parallel to ``predictions``.
    """
    import sacrebleu

    _check_pairs(predictions, references)
    ref_sets = [list(references), *(list(r) for r in extra_references)]
    for refs in ref_sets[1:]:
        _check_pairs(predictions, refs)
    return float(sacrebleu.corpus_bleu(list(predictions), ref_sets).score)


def sentence_bleu_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-example sacrebleu sentence BLEU on 0-100 (exp smoothing, effective order)."""
    _check_pairs(predictions, references)
    bleu = _sentence_bleu_metric()
    return [
        float(bleu.sentence_score(p, [r]).score)
        for p, r in zip(predictions, references, strict=True)
    ]


def bleu_stats(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-example BLEU sufficient statistics, shape (n, 10), for bootstrapping corpus BLEU.

    Columns: hypothesis length, reference length, matched 1-4-grams, total 1-4-grams. Summing rows
    of any subset and passing the sum to ``bleu_from_stats`` gives that subset's corpus BLEU.
    """
    _check_pairs(predictions, references)
    bleu = _sentence_bleu_metric()
    rows = []
    for p, r in zip(predictions, references, strict=True):
        s = bleu.sentence_score(p, [r])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), 10)


def bleu_from_stats(stats: np.ndarray) -> float:
    """Corpus BLEU on 0-100 from ``bleu_stats`` rows (summed here), as sacrebleu.corpus_bleu."""
    from sacrebleu.metrics import BLEU

    total = np.asarray(stats).reshape(-1, 10).sum(axis=0).tolist()
    score = BLEU.compute_bleu(
        correct=total[2:6],
        total=total[6:10],
        sys_len=total[0],
        ref_len=total[1],
        smooth_method="exp",
    )
    return float(score.score)


def original_bleu_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """The original project's BLEU per example, on 0-100: nltk sentence BLEU on whitespace tokens.

    ``sentence_bleu([ref.split()], pred.split(), smoothing_function=method1)``; its reported
    "BLEU" is the mean of these, which is not corpus BLEU.
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    _check_pairs(predictions, references)
    smooth = SmoothingFunction().method1
    return [
        100.0 * float(sentence_bleu([r.split()], p.split(), smoothing_function=smooth))
        for p, r in zip(predictions, references, strict=True)
    ]


def original_rouge_scores(
    predictions: Sequence[str], references: Sequence[str]
) -> dict[str, list[float]]:
    """The original project's ROUGE-1/2/L F1 per example, on 0-100 (rouge_score, stemming on).

    Scored on the raw strings, as the original did. Equal to ``rouge_scores``' first three types,
    so ``compute_metrics`` reuses those rather than paying for the LCS twice.
    """
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    # The library's own tokenizer, exactly as the original built it.
    scorer = rouge_scorer.RougeScorer(list(ORIGINAL_ROUGE_TYPES), use_stemmer=True)
    out: dict[str, list[float]] = {t: [] for t in ORIGINAL_ROUGE_TYPES}
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)
        for t in ORIGINAL_ROUGE_TYPES:
            out[t].append(100.0 * scores[t].fmeasure)
    return out


# --- Semantic similarity ---------------------------------------------------------------------


def semantic_similarity(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    embedder: Embedder | None = None,
    batch_size: int = 64,
    reference_vectors: np.ndarray | None = None,
) -> list[float]:
    """Per-example cosine similarity of MiniLM embeddings, times 100 (so about -100 to 100).

    `reference_vectors` (from `embed_texts(references)`) saves re-embedding references that
    are scored again and again, as during training.

    An empty prediction scores 0: its embedding is not "no meaning" and can sit close to anything.
    """
    _check_pairs(predictions, references)
    if not predictions:
        return []
    embedder = embedder if embedder is not None else load_embedder()
    pred_vecs = embed(embedder, list(predictions), batch_size)
    ref_vecs = (
        embed(embedder, list(references), batch_size)
        if reference_vectors is None
        else reference_vectors
    )
    cosines = np.einsum("ij,ij->i", pred_vecs, ref_vecs)
    return [
        0.0 if not p.strip() else 100.0 * float(c)
        for p, c in zip(predictions, cosines, strict=True)
    ]


# --- Length, repetition, emptiness -----------------------------------------------------------


def word_counts(texts: Sequence[str]) -> list[int]:
    """Number of whitespace-separated words in each text."""
    return [len(t.split()) for t in texts]


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(text: str, n: int) -> float | None:
    """Distinct n-grams / all n-grams of one answer (whitespace tokens), in 0-1.

    None when the answer has fewer than n words: with no n-grams there is nothing to measure, and
    scoring it 1.0 would reward empty or one-word answers.
    """
    grams = _ngrams(text.split(), n)
    return len(set(grams)) / len(grams) if grams else None


def has_repeated_ngram(text: str, n: int = 3) -> bool:
    """Whether some n-gram (whitespace tokens, case-sensitive) occurs twice in the answer."""
    grams = _ngrams(text.split(), n)
    return len(set(grams)) < len(grams)


def is_empty(text: str) -> bool:
    """An answer with nothing but whitespace."""
    return not text.strip()


# --- Everything at once ----------------------------------------------------------------------


def compute_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    embedder: Embedder | None = None,
    with_semantic: bool = True,
) -> dict[str, Any]:
    """All metrics: ``{"corpus": {name: value}, "per_example": {name: [values]}}``.

    Corpus values are means of the per-example values, except ``bleu`` (corpus BLEU). ROUGE, BLEU
    and similarity are on 0-100, distinct-n and rates on 0-1. ``original_*`` follow the original
    project's definitions. ``semantic_similarity`` loads MiniLM unless ``embedder`` is given or
    ``with_semantic`` is False.
    """
    _check_pairs(predictions, references)
    if not predictions:
        raise ValueError("no examples to score")

    per: dict[str, list[Any]] = dict(rouge_scores(predictions, references))
    per["sentence_bleu"] = sentence_bleu_scores(predictions, references)
    per["original_bleu"] = original_bleu_scores(predictions, references)
    if with_semantic:
        per["semantic_similarity"] = semantic_similarity(predictions, references, embedder=embedder)
    per["answer_words"] = word_counts(predictions)
    per["distinct1"] = [distinct_n(p, 1) for p in predictions]
    per["distinct2"] = [distinct_n(p, 2) for p in predictions]
    # Floats, not bools, so the mean is the rate and bootstrap_ci works on them directly.
    per["repeat3"] = [float(has_repeated_ngram(p, 3)) for p in predictions]
    per["empty"] = [float(is_empty(p)) for p in predictions]

    corpus: dict[str, Any] = {"n": len(predictions)}
    corpus.update({t: _mean(per[t]) for t in ROUGE_TYPES})
    corpus["bleu"] = corpus_bleu(predictions, references)
    corpus["sentence_bleu"] = _mean(per["sentence_bleu"])
    corpus["original_bleu"] = _mean(per["original_bleu"])
    # Same numbers as original_rouge_scores (a test checks it), relabelled for side-by-side tables.
    corpus.update({f"original_{t}": corpus[t] for t in ORIGINAL_ROUGE_TYPES})
    if with_semantic:
        corpus["semantic_similarity"] = _mean(per["semantic_similarity"])
    corpus["answer_words_mean"] = _mean(per["answer_words"])
    corpus["answer_words_median"] = float(statistics.median(per["answer_words"]))
    corpus["reference_words_mean"] = _mean(word_counts(references))
    corpus["distinct1"] = _mean(per["distinct1"])
    corpus["distinct2"] = _mean(per["distinct2"])
    corpus["repeat3_rate"] = _mean(per["repeat3"])
    corpus["empty_rate"] = _mean(per["empty"])
    return {"corpus": corpus, "per_example": per}


def echo_floor(
    questions: Sequence[str],
    references: Sequence[str],
    *,
    embedder: Embedder | None = None,
    with_semantic: bool = True,
) -> dict[str, Any]:
    """Metrics of a "model" that answers by repeating the question: a floor any model must beat.

    It scores high on semantic similarity (same topic), so similarity is never read alone.
    """
    return compute_metrics(questions, references, embedder=embedder, with_semantic=with_semantic)
