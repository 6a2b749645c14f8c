"""The medical safety layer: every question is screened before any answer is shown.

`check(question)` returns one `SafetyVerdict` (level emergency | urgent | none, category, what to
do now), combining phrase rules (`rules`) with a small classifier over MiniLM embeddings
(`screen`), over the triage taxonomy in `taxonomy`. `sets` holds the labelled sets, training and
measurement. docs/safety.md has the taxonomy, its sources and the measured figures.
"""

from medchat.ground.safety.rules import normalise
from medchat.ground.safety.sets import (
    evaluate,
    hide_blind_misses,
    load_set,
    read_texts,
    report_table,
    score,
    verdict_line,
)
from medchat.ground.safety.taxonomy import TAXONOMY
from medchat.ground.safety.verdict import (
    CATEGORIES,
    DISCLAIMER,
    MEDICATION_NOTE,
    MESSAGES,
    TARGETS,
    SafetyVerdict,
    check,
    check_many,
    level_label,
    with_disclaimer,
)

__all__ = [
    "CATEGORIES",
    "DISCLAIMER",
    "MEDICATION_NOTE",
    "MESSAGES",
    "TARGETS",
    "TAXONOMY",
    "SafetyVerdict",
    "check",
    "check_many",
    "evaluate",
    "hide_blind_misses",
    "level_label",
    "load_set",
    "normalise",
    "read_texts",
    "report_table",
    "score",
    "verdict_line",
    "with_disclaimer",
]
