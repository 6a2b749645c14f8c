"""Pure cleaning steps: records in, records and counts out. No files, no randomness."""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

DROP_REASONS = ("empty_question", "empty_answer", "short_question", "short_answer")
# C0/C1 control characters other than whitespace: invisible, and they upset tokenizers.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Only complete entities ("&amp;", "&#39;"): html.unescape alone would also turn "&para" or
# "&not" inside ordinary words into symbols.
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_NON_WORD = re.compile(r"[\W_]+")
_ASCII_PUNCT_TO_SPACE = str.maketrans({chr(i): " " for i in range(128) if not chr(i).isalnum()})


def _unescape(match: re.Match[str]) -> str:
    return html.unescape(match.group(0))


def normalize_text(text: str | None) -> str:
    """Unicode NFC, HTML entities decoded, control characters gone, whitespace collapsed."""
    text = unicodedata.normalize("NFC", _ENTITY.sub(_unescape, text or ""))
    return " ".join(_CONTROL.sub(" ", text).split())


def normalize_key(text: str | None) -> str:
    """A matching key: case, accents, punctuation and spacing folded away.

    So "What is (are) Aicardi Syndrome ?" and "what is (are) aicardi syndrome?" share a key, and
    GHR's "Aicardi syndrome" is NINDS' "Aicardi Syndrome".
    """
    folded = _ENTITY.sub(_unescape, text or "").casefold()
    if folded.isascii():  # nearly all rows: a translate table is ~6x faster than a regex
        return " ".join(folded.translate(_ASCII_PUNCT_TO_SPACE).split())
    decomposed = unicodedata.normalize("NFKD", folded)
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_NON_WORD.sub(" ", letters).split())


def clean_records(
    records: list[dict[str, Any]], min_question_chars: int, min_answer_chars: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Normalise the text fields; drop empty or too-short rows, counted by reason."""
    kept, dropped = [], dict.fromkeys(DROP_REASONS, 0)
    for record in records:
        row = {**record}
        for key in ("question", "answer", "focus"):
            if isinstance(row.get(key), str):
                row[key] = normalize_text(row[key]) or None
        reason = _drop_reason(row, min_question_chars, min_answer_chars)
        if reason:
            dropped[reason] += 1
        else:
            kept.append(row)
    return kept, dropped


def _drop_reason(row: dict[str, Any], min_question: int, min_answer: int) -> str | None:
    question, answer = row["question"] or "", row["answer"] or ""
    if not question:
        return "empty_question"
    if not answer:
        return "empty_answer"
    if len(question) < min_question:
        return "short_question"
    if len(answer) < min_answer:
        return "short_answer"
    return None


def merge_split_answers(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Join consecutive rows of one document that repeat the same question into one answer.

    MedQuAD splits some answers over several pairs with the same question; as separate rows
    each would teach (and score) a fragment. Only *consecutive* repeats are joined: repeats
    further apart in SeniorHealth/NIDDK documents are different sections under one templated
    question, and stay separate rows (the split keeps them together anyway). Returns the rows
    and how many were folded into the row before them.
    """
    merged: list[dict[str, Any]] = []
    folded = 0
    for row in records:
        prev = merged[-1] if merged else None
        if (
            prev is not None
            and row.get("doc_id") is not None
            and row.get("doc_id") == prev.get("doc_id")
            and normalize_key(row["question"]) == normalize_key(prev["question"])
        ):
            merged[-1] = {**prev, "answer": f"{prev['answer']} {row['answer']}"}
            folded += 1
        else:
            merged.append(row)
    return merged, folded


def deduplicate(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Drop rows whose normalised (question, answer) was already seen; keep the first."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in records:
        key = (normalize_key(row["question"]), normalize_key(row["answer"]))
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(records) - len(kept)
