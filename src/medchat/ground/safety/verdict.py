"""One verdict for every answering path: rules and the learned screen combined.

`check(question)` is what ask, chat, the UI, the API and eval call. It returns a `SafetyVerdict`
with a level (`emergency`: call emergency services now; `urgent`: get care today; `none`),
`red_flag` (true exactly for `emergency`), the taxonomy category, the what-to-do-now message, and
which screen judged it (`rules+minilm`, or `rules` when MiniLM cannot be loaded). A message the
screen cannot judge (not English) says so instead of passing silently.

How the two halves combine was decided by measurement on the corpus (docs/safety.md): an
emergency when the screen's P(emergency) passes its calibrated threshold, or when a rule fires and
the screen does not all but rule it out (P below `veto`); the rules' gates (general question, past
event, negation) are inputs to the screen rather than hard vetoes.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medchat.ground.safety.rules import RuleResult, rule_check
from medchat.ground.safety.screen import CATEGORY_CLASSES, Screen, embed, load_screen, rule_signals
from medchat.ground.safety.taxonomy import EMERGENCY_IDS, TAXONOMY, URGENT_IDS

DISCLAIMER = (
    "medchat is an automated assistant, not a doctor: its answers are general information, "
    "may be wrong, and are not medical advice. In an emergency call 911 or your local "
    "emergency number."
)

MEDICATION_NOTE = (
    "Changing a dose, stopping a medicine or getting a prescription needs someone who knows "
    "your history: talk to your clinician or pharmacist before you change anything."
)

NOT_JUDGED_MESSAGE = (
    "This safety check reads English only, so it could not check this message for an emergency. "
    "If someone may be in danger, call your local emergency number now."
)

RULES_ONLY_NOTE = (
    "The learned safety screen is unavailable here (MiniLM could not be loaded); this message "
    "was checked by the rules alone, which miss phrasings they were not written for."
)

MESSAGES: dict[str, str] = {e.id: e.message for e in TAXONOMY}
CATEGORIES = EMERGENCY_IDS  # the categories that are red flags

# Recall/FPR targets: missing an emergency costs far more than an extra warning, so recall is
# held higher than the false-positive budget.
# Leave-one-category-out: the mean recall on categories the screen was trained without.
TARGETS = {"recall": 0.97, "false_positive_rate": 0.03, "loco_mean_recall": 0.85}


@dataclass(frozen=True)
class SafetyVerdict:
    """What `check` found: the level, the category and what to do now."""

    red_flag: bool  # exactly level == "emergency"
    category: str | None = None  # a taxonomy id, "medication_change", "not_judged" or None
    message: str | None = None
    notes: list[str] = field(default_factory=list)
    matched: str | None = None  # the rule phrase that fired, for logs and debugging
    level: str = "none"  # "emergency" | "urgent" | "none"
    screen: str = "rules"  # "rules+minilm", or "rules" when MiniLM was not available
    judged: bool = True  # False when the screen could not read the message (not English)
    score: float | None = None  # the learned screen's P(emergency), when it ran
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- language

# A few of the commonest words of English and of the languages users most often write in
# instead. Enough to tell "mi padre tiene dolor en el pecho" from "chest pain sweating".
_ENGLISH = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "but",
        "i",
        "im",
        "ive",
        "my",
        "me",
        "you",
        "your",
        "he",
        "his",
        "she",
        "her",
        "it",
        "its",
        "we",
        "our",
        "they",
        "their",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "am",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "not",
        "no",
        "cant",
        "dont",
        "wont",
        "can",
        "will",
        "would",
        "should",
        "could",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "this",
        "that",
        "what",
        "how",
        "why",
        "when",
        "where",
        "who",
        "which",
        "please",
        "help",
        "just",
        "now",
        "very",
        "so",
        "if",
        "after",
        "before",
        "since",
        "been",
        "feel",
        "feeling",
        "pain",
        "hurts",
        "hurt",
    ]
)
_OTHER = frozenset(
    # Spanish, Portuguese, French, Italian, German, Dutch, Indonesian/Malay, Tagalog
    [
        "el",
        "la",
        "los",
        "las",
        "un",
        "una",
        "y",
        "o",
        "pero",
        "mi",
        "tu",
        "su",
        "es",
        "esta",
        "estoy",
        "tiene",
        "tengo",
        "con",
        "por",
        "para",
        "que",
        "del",
        "muy",
        "dolor",
        "pecho",
        "ayuda",
        "não",
        "com",
        "uma",
        "meu",
        "minha",
        "você",
        "está",
        "le",
        "les",
        "des",
        "et",
        "je",
        "il",
        "elle",
        "est",
        "avec",
        "pour",
        "dans",
        "pas",
        "mon",
        "ma",
        "suis",
        "très",
        "aide",
        "il",
        "lo",
        "gli",
        "della",
        "sono",
        "ho",
        "mio",
        "mia",
        "che",
        "non",
        "per",
        "der",
        "die",
        "das",
        "und",
        "ich",
        "ist",
        "nicht",
        "mit",
        "mein",
        "meine",
        "ein",
        "eine",
        "sehr",
        "hilfe",
        "het",
        "een",
        "en",
        "ik",
        "niet",
        "mijn",
        "zijn",
        "saya",
        "tidak",
        "dan",
        "yang",
        "ini",
        "itu",
        "ada",
        "sakit",
        "ako",
        "ang",
        "ng",
        "sa",
        "hindi",
        "ko",
        "siya",
        "po",
    ]
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def looks_english(text: str) -> bool:
    """False for text the screen cannot read: mostly non-Latin script, or more function words
    of another language than of English. Short English fragments ("chest pain") pass."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return True
    latin = sum(c.isascii() or "\u00c0" <= c <= "\u024f" for c in letters)
    if latin / len(letters) < 0.5:
        return False
    words = [w.lower() for w in _WORD.findall(text)]
    english = sum(w in _ENGLISH for w in words)
    other = sum(w in _OTHER and w not in _ENGLISH for w in words)
    return not (other >= 2 and other > english)


# ----------------------------------------------------------------------------- the verdict


def _verdict(
    rules: RuleResult,
    probs: np.ndarray | None,
    cat_probs: np.ndarray | None,
    screen: Screen | None,
    exclude: Collection[str] = (),
) -> SafetyVerdict:
    """Combine one text's rule result with the learned screen's probabilities."""
    name = "rules+minilm" if screen is not None else "rules"
    med = [MEDICATION_NOTE] if rules.medication else []
    base_notes = [] if screen is not None else [RULES_ONLY_NOTE]
    score = None if probs is None else round(float(probs[2]), 4)
    if screen is not None and probs is not None:
        level = screen.level(probs, bool(rules.hits))
    else:
        level = "emergency" if rules.hits else "none"

    def best(ids: Sequence[str]) -> str:
        allowed = [c for c in ids if c not in exclude]
        if cat_probs is None or not allowed:
            return allowed[0] if allowed else ids[0]
        return max(allowed, key=lambda c: cat_probs[CATEGORY_CLASSES.index(c)])

    if level == "emergency":
        ranked = rules.categories if rules.hits else []
        category = ranked[0] if ranked else best(EMERGENCY_IDS)
        matched = next((p for c, p in rules.hits if c == category), None)
        if matched is None and rules.hits:
            matched = rules.hits[0][1]
        # The runner-up's advice (poison control next to a crisis line) is worth showing too.
        notes = [MESSAGES[c] for c in ranked[1:2]] + med + base_notes
        return SafetyVerdict(
            True, category, MESSAGES[category], notes, matched, "emergency", name, True, score
        )
    if level == "urgent":
        category = best(URGENT_IDS)
        notes = med + base_notes
        return SafetyVerdict(
            False, category, MESSAGES[category], notes, None, "urgent", name, True, score
        )
    if med:
        return SafetyVerdict(
            False,
            "medication_change",
            MEDICATION_NOTE,
            med + base_notes,
            None,
            "none",
            name,
            True,
            score,
        )
    return SafetyVerdict(False, None, None, base_notes, None, "none", name, True, score)


def judge(
    texts: Sequence[str],
    screen: Screen | None,
    embeddings: np.ndarray | None = None,
    exclude: Collection[str] = (),
) -> list[SafetyVerdict]:
    """Verdicts for `texts` with an explicit screen (None: rules alone). `exclude` drops the rules
    and category names of those categories, for leave-one-category-out measurement."""
    english = [looks_english(t) for t in texts]
    rules = [rule_check(t, exclude) for t in texts]
    probs = cat_probs = None
    if screen is not None and texts:
        emb = embed(texts) if embeddings is None else embeddings
        probs, cat_probs = screen.probs(emb, np.stack([rule_signals(r) for r in rules]))
    out = []
    for i, r in enumerate(rules):
        if not english[i]:
            name = "rules+minilm" if screen is not None else "rules"
            out.append(
                SafetyVerdict(
                    False, "not_judged", NOT_JUDGED_MESSAGE, [], None, "none", name, False
                )
            )
            continue
        p = None if probs is None else probs[i]
        c = None if cat_probs is None else cat_probs[i]
        out.append(_verdict(r, p, c, screen, exclude))
    return out


def check_many(texts: Sequence[str]) -> list[SafetyVerdict]:
    """Screen several questions at once (one MiniLM batch)."""
    screen, _ = load_screen()
    return judge(list(texts), screen)


def check(text: str) -> SafetyVerdict:
    """Screen one question: emergency (with what to do now), urgent, a dose note, or nothing."""
    return check_many([text])[0]


def with_disclaimer(answer: str, verdict: SafetyVerdict | None = None) -> str:
    """The answer as shown to a user: the verdict's message and notes first, disclaimer last."""
    parts = []
    if verdict is not None and verdict.message:
        parts.append(verdict.message)
        parts += [n for n in verdict.notes if n != verdict.message]
    parts.append(answer.strip())
    parts.append(DISCLAIMER)
    return "\n\n".join(p for p in parts if p)


def level_label(verdict: SafetyVerdict) -> str:
    """A short upper-case label for banners and logs."""
    if not verdict.judged:
        return "NOT CHECKED"
    return {"emergency": "EMERGENCY", "urgent": "URGENT"}.get(verdict.level, "")
