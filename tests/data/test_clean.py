"""Cleaning, split-answer merging and deduplication are pure functions with exact counts."""

from __future__ import annotations

from typing import Any

from medchat.data.clean import (
    clean_records,
    deduplicate,
    merge_split_answers,
    normalize_key,
    normalize_text,
)


def rec(question: str, answer: str, doc_id: str | None = None, rid: str = "r") -> dict[str, Any]:
    return {"id": rid, "question": question, "answer": answer, "focus": None, "doc_id": doc_id}


def test_normalize_text_nfc_entities_controls_whitespace() -> None:
    assert normalize_text("Cafe\u0301 &amp; bar&#39;s\u00a0\n\t x\x07y ") == "Café & bar's x y"
    # Only complete entities are decoded; "&para" inside a word is left alone.
    assert normalize_text("R&D &paragraph") == "R&D &paragraph"
    assert normalize_text(None) == ""


def test_normalize_key_folds_case_spacing_punctuation_and_accents() -> None:
    assert normalize_key("What is (are) Aicardi Syndrome ?") == "what is are aicardi syndrome"
    assert normalize_key("what is (are) aicardi  syndrome?") == "what is are aicardi syndrome"
    assert normalize_key("Sjögren Syndrome") == normalize_key("sjogren  syndrome")
    assert normalize_key("Aicardi syndrome") == normalize_key("AICARDI SYNDROME.")
    assert normalize_key("Type 1 diabetes") != normalize_key("Type 2 diabetes")
    assert normalize_key(None) == ""


def test_clean_records_drops_by_reason_and_leaves_input_alone() -> None:
    rows = [
        rec("  what is gout ?", " a kind of\narthritis ", rid="ok"),
        rec("   ", "answer", rid="q-empty"),
        rec("what is gout", "&nbsp;", rid="a-empty"),
        rec("hi", "hello there", rid="q-short"),
        rec("what is flu", "a", rid="a-short"),
    ]
    kept, dropped = clean_records(rows, min_question_chars=5, min_answer_chars=2)
    assert [r["id"] for r in kept] == ["ok"]
    assert kept[0]["question"] == "what is gout ?"
    assert kept[0]["answer"] == "a kind of arthritis"
    assert dropped == {
        "empty_question": 1,
        "empty_answer": 1,
        "short_question": 1,
        "short_answer": 1,
    }
    assert rows[0]["question"] == "  what is gout ?"  # pure: the input is not modified


def test_merge_split_answers_joins_only_consecutive_same_question_in_one_doc() -> None:
    rows = [
        rec("What causes X ?", "Part one.", "d1", "d1/1"),
        rec("what causes x?", "Part two.", "d1", "d1/2"),
        rec("How to treat X ?", "Rest.", "d1", "d1/3"),
        rec("What causes X ?", "Later section.", "d1", "d1/4"),  # not consecutive: kept apart
        rec("What causes X ?", "Other document.", "d2", "d2/1"),  # other doc: kept apart
        rec("What is Y ?", "A.", None, "n1"),
        rec("What is Y ?", "B.", None, "n2"),  # no document: never merged
    ]
    merged, folded = merge_split_answers(rows)
    assert folded == 1
    assert [r["id"] for r in merged] == ["d1/1", "d1/3", "d1/4", "d2/1", "n1", "n2"]
    assert merged[0]["answer"] == "Part one. Part two."
    assert rows[0]["answer"] == "Part one."


def test_deduplicate_on_normalised_question_and_answer_keeps_first() -> None:
    rows = [
        rec("What is gout?", "A kind of arthritis.", rid="a"),
        rec("what is gout", "a kind of  arthritis", rid="b"),
        rec("what is gout", "a different answer", rid="c"),
        rec("what is flu", "a kind of arthritis", rid="d"),
    ]
    kept, removed = deduplicate(rows)
    assert removed == 1
    assert [r["id"] for r in kept] == ["a", "c", "d"]
