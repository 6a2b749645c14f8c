"""The rules half of the safety screen: phrase patterns over normalised text, with gates.

Plain Python (regular expressions over normalised tokens, a typo map and difflib on a few key
words), so it runs in well under a millisecond and needs no model. The learned screen
(`medchat.ground.safety.screen`) sits beside it; `medchat.ground.safety.check` combines the two.

The rule that decides most borderline cases (docs/safety.md has the full list):
a *description* of what is happening now, to the writer or someone with them ("my dad's face is
drooping", "chest pain", "I want to die"), is an emergency; a *question about* a condition in
general ("what are the symptoms of a heart attack?"), a negated symptom ("no chest pain") or a
past event ("I had a seizure 5 years ago") is not.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Collection
from dataclasses import dataclass

from medchat.ground.safety.phrases import CONTEXT_RULES, RULES

# Which category wins when several fire: context (pregnancy, a baby) first because it changes
# the advice, then the categories whose message carries extra help (crisis line, poison control).
PRIORITY = (
    "pregnancy",
    "infant",
    "suicide_self_harm",
    "overdose_poisoning",
    "anaphylaxis",
    "stroke",
    "heart_attack",
    "seizure",
    "bleeding",
    "breathing",
    "unresponsive",
)

# ----------------------------------------------------------------------------- normalisation


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Misspellings too short or too far for difflib to fix safely.
TYPOS = {
    "pian": "pain",
    "pains": "pain",
    "hart": "heart",
    "atack": "attack",
    "attak": "attack",
    "atak": "attack",
    "chset": "chest",
    "stoke": "stroke",
    "breth": "breath",
    "brethe": "breathe",
    "breate": "breathe",
    "breahte": "breathe",
    "tounge": "tongue",
    "toung": "tongue",
    "throt": "throat",
    "babys": "baby",
    "bby": "baby",
    "preg": "pregnant",
    "wks": "weeks",
    "wk": "week",
    "mths": "months",
    "mos": "months",
    "yo": "year",
    "pt": "patient",
    "mom": "mum",
    "mommy": "mum",
    "seazure": "seizure",
    "ceasure": "seizure",
    "ceizure": "seizure",
    "cannot": "cant",
    "couldnt": "cant",
}

# Spelled-out negations collapse to the contracted token the rules use ("can not" -> "cant").
_CONTRACTIONS = [
    (re.compile(r"\b(?:can not|could not|unable to)\b"), "cant"),
    (re.compile(r"\bwill not\b"), "wont"),
    (re.compile(r"\bdo not\b"), "dont"),
    (re.compile(r"\bdoes not\b"), "doesnt"),
    (re.compile(r"\bis not\b"), "isnt"),
    (re.compile(r"\bhas not\b"), "hasnt"),
    (re.compile(r"\bhave not\b"), "havent"),
]

# Key words difflib may correct misspellings to ("suicidel" -> "suicidal"). Sorted so that
# ties resolve the same way on every run.
FUZZY_TARGETS = tuple(
    sorted(
        _words(
            "anaphylactic anaphylaxis bleeding breath breaths breathe breathing choking clutching "
            "convulsing convulsion crushing drooping overdose overdosed poisoning pregnant "
            "pregnancy pressure seizing seizure seizures slurred slurring suicidal swallow "
            "swallowed swelling swollen throat tongue unconscious unresponsive"
        )
    )
)
# "suicide" is left out on purpose: a typo of it is far more often "suicidal" (which fires on its
# own) than the noun (which only fires in a frame like "thinking about suicide").
# Real words one letter away from a key word: never "correct" these.
FUZZY_PROTECTED = _words("breeding smelling spelling dwelling threat strike preschool seized")


@functools.lru_cache(maxsize=4096)
def _fix_token(token: str) -> str:
    """Map a token through the typo table, then difflib onto a key word when it is close."""
    if token in TYPOS:
        return TYPOS[token]
    # Short tokens are too ambiguous for fuzzy matching ("chess" is not "chest").
    if len(token) < 6 or token in FUZZY_PROTECTED or token.isdigit():
        return token
    candidates = [w for w in FUZZY_TARGETS if w[0] == token[0]]
    close = difflib.get_close_matches(token, candidates, n=1, cutoff=0.85)
    return close[0] if close else token


_APOSTROPHES = re.compile(r"['’‘`´]")
_SENTENCE_SPLIT = re.compile(r"(?<!\d)\.|\.(?!\d)|[!?\n]+")
# Clause boundaries limit negation and history: "no fever, but my chest hurts".
_CLAUSE_SPLIT = re.compile(
    r"[,;:()\[\]]|\s-+\s|\b(?:but|however|although|though|whereas|yet|now|then)\b"
)
_TOKEN = re.compile(r"[a-z0-9]+(?:\.\d+)?")
# Clinical list negators reach past commas: "denies chest pain, nausea, dyspnea".
_LIST_NEGATORS = re.compile(r"\b(?:denies|denied|denying|negative\s+for)\b")


def normalise(text: str) -> list[list[str]]:
    """Text -> sentences -> clauses, each clause a space-joined string of corrected tokens."""
    text = _APOSTROPHES.sub("", text.lower()).replace("-", " ").replace("/", " ")
    for pattern, short in _CONTRACTIONS:
        text = pattern.sub(short, text)
    sentences = []
    for sent in _SENTENCE_SPLIT.split(text):
        m = _LIST_NEGATORS.search(sent)
        if m:  # keep a denied list in one clause so the denial covers every item
            sent = sent[: m.end()] + sent[m.end() :].replace(",", " or ")
        clauses = []
        for clause in _CLAUSE_SPLIT.split(sent):
            tokens = [_fix_token(t) for t in _TOKEN.findall(clause)]
            if tokens:
                clauses.append(" ".join(tokens))
        if clauses:
            sentences.append(clauses)
    return sentences


# ----------------------------------------------------------------------------- gates

_NEGATION_CUES = _words(
    "no not dont doesnt didnt isnt arent wasnt werent never without denies denied deny denying "
    "hasnt havent nor negative"
)
# After these words a negation inside a match is part of the symptom ("bleeding won't stop",
# "baby hasn't moved"), not a denial of it ("chest doesn't hurt").
_SYMPTOM_AFTER_NEGATION = _words(
    "stop stopping respond responding wake waking breathe breathing moved moving kicking kicked "
    "feed feeding feel fade fading blanch disappear go"
)
# Only verb negations count inside a match ("better off without me" is no denial).
_INTERIOR_CUES = _words("no not dont doesnt didnt isnt arent wasnt werent never hasnt havent")
_STRONG_CUES = _words("denies denied deny denying negative")
# A negation does not reach past these ("no fever and my chest hurts").
_NEGATION_STOPS = _words("and so because just since while except")
# Four tokens covers "denies any chest pain", "I don't have any trouble breathing".
NEGATION_WINDOW = 4


def _negated(clause: str, start: int, matched: str = "") -> bool:
    """True when a negation cue sits within NEGATION_WINDOW tokens before `start`, or inside
    the match itself ("my chest doesn't hurt")."""
    inside = matched.split()
    for i, token in enumerate(inside[1:], 1):
        after = inside[i + 1] if i + 1 < len(inside) else ""
        if token in _INTERIOR_CUES and after not in _SYMPTOM_AFTER_NEGATION:
            return True
    before = clause[:start].split()
    for distance, token in enumerate(reversed(before), 1):
        if token in _NEGATION_STOPS:
            return False
        if token in _NEGATION_CUES and (distance <= NEGATION_WINDOW or token in _STRONG_CUES):
            return True
    return False


# A past event, not something happening now. Days and hours are recent, so they do not count.
_HISTORIC = re.compile(
    r"\b(?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|few|several|many|couple of)"
    r"\s+(?:years?|yrs?|months?|weeks?)\s+ago\b"
    r"|\b(?:last|previous)\s+(?:year|month|summer|winter|spring|autumn|fall|christmas)\b"
    r"|\bin\s+(?:19|20)\d\d\b|\bas\s+a\s+(?:child|kid|teen|teenager|baby|toddler)\b"
    r"|\bwhen\s+(?:i|he|she|they)\s+was\s+(?:a\s+)?(?:child|kid|little|young|\d+)\b"
    r"|\bhistory\s+of\b|\bused\s+to\b|\b(?:nearly|almost)\s+had\b"
)

# The symptom is over: "my chest pain went away after an antacid".
_RESOLVED = re.compile(r"\b(?:went|gone)\s+away\b|\bresolved\b|\bsettled\s+down\b")

# Pets are out of scope: "my cat is choking" should go to a vet, not trigger a 911 message.
_ANIMAL_SUBJECT = re.compile(
    r"\b(?:dog|cat|puppy|kitten|pet|horse|rabbit|hamster|bird|parrot)s?\s+"
    r"(?:is|has|was|keeps|just|ate|swallowed|drank|cant|isnt)\b"
)

_QUESTION_LEAD = _words(
    "what whats which why how when where who is are was were does do did can could should "
    "would will may might define explain describe list any difference"
)
_AUXILIARY = _words("do does did can could should would will shall may might must am")
# "were" is left out: once apostrophes go, "we're" and "were" look the same.
_PERSONAL = _words(
    "i im ive id me my mine myself we our us ours he hes him his himself she shes her hers "
    "herself friend friends husband wife son daughter dad mum father mother grandma grandpa "
    "grandmother grandfather brother sister partner boyfriend girlfriend neighbour neighbor "
    "patient colleague roommate flatmate"
)


def _is_general_question(sentence: list[str]) -> bool:
    """A question about a condition in general: question word first and nobody in particular.

    "what should I do if someone has a seizure?" is general (the "I" only asks the question);
    "is my dad having a stroke?" is not.
    """
    tokens = " ".join(sentence).split()
    if not tokens or tokens[0] not in _QUESTION_LEAD:
        return False
    for i, token in enumerate(tokens):
        asker = token in {"i", "we"} and i > 0 and tokens[i - 1] in _AUXILIARY
        if token in _PERSONAL and not asker:
            return False
    return True


# ----------------------------------------------------------------------------- rules

_RULES = [
    (cat, re.compile(pat), re.compile(co) if co else None, None) for cat, pat, co in RULES
] + [
    (cat, re.compile(pat), re.compile(co) if co else None, ctx)
    for cat, pat, co, ctx in CONTEXT_RULES
]

_PREGNANCY_CONTEXT = re.compile(
    r"\bpregnan\w*|\btrimester\b|\bpostpartum\b|\bpost\s+partum\b|\bgave\s+birth\b"
    r"|\bhad\s+(?:my|the|a|our)\s+baby\s+\d+\s+(?:days?|weeks?)\s+ago\b"
    r"|\bwaters?\s+(?:\w+\s+)?(?:broke|broken)\b"
    r"|\b(?:im|i\s+am|shes|she\s+is|were|we\s+are|wife\s+is|wifes)\s+\d{1,2}\s+(?:weeks?|wks?)\b"
    r"|\b(?:baby|babys|fetal|foetal)\s+(?:movements?|kicks?|kicking)\b|\bkicks\b|\bbump\b"
)
_INFANT_CONTEXT = re.compile(
    r"\b(?:baby|babies|newborns?|infants?|neonates?)\b(?!\s+blue)"
    r"|\b(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven)\s+"
    r"(?:days?|weeks?|months?)\s+old\b"
)
_YOUNG_INFANT = re.compile(
    r"\b(?:newborns?|neonates?)\b|\b(?:\d|1[0-2]|one|two|three|four|five|six|seven|eight)\s+"
    r"(?:days?|weeks?)\s+old\b|\b(?:[12]|one|two)\s+months?\s+old\b"
)
_WEEKS = re.compile(r"\b(\d{1,2})\s+weeks?\b")

# Dose changes and prescriptions: a note, not an emergency. Matched on the whole text.
_MEDICATION = re.compile(
    r"\b(?:can|could|should|may|shall|do\s+i\s+need\s+to|is\s+it\s+(?:ok|okay|safe|fine|alright)"
    r"\s+to)\s+(?:i\s+|we\s+|he\s+|she\s+)?(?:just\s+)?(?:double|triple|increase|decrease|lower"
    r"|reduce|raise|up|change|adjust|halve|skip|stop|quit|come\s+off|go\s+off|go\s+up|go\s+down"
    r"|taper|cut|take\s+(?:an?\s+)?(?:extra|two|2|three|3|more|less|another|double))\b"
    r"|\bhow\s+(?:much|many)\b(?:\s+\w+){0,4}?\s+(?:should|can|do|could|shall)\s+"
    r"(?:i|he|she|we|you)\s+(?:take|give|use|have)\b"
    r"|\bwhat\s+(?:dose|dosage|amount|strength)\b(?:\s+\w+){0,6}?\s+(?:should|can|do)\s+"
    r"(?:i|we)\s+(?:take|give|use)\b"
    r"|\bprescri\w*\s+(?:me|him|her|us|something|some|it|them)\b"
    r"|\b(?:write|give|get)\s+(?:me\s+)?(?:a\s+)?(?:prescription|script|rx)\b"
    r"|\b(?:need|want|get)\s+(?:a\s+)?refill\b"
    r"|\b(?:get|buy|order)\s+\w+\s+without\s+(?:a\s+)?(?:prescription|seeing\s+a\s+doctor|doctor)"
    r"|\b(?:want|going|planning|thinking\s+about)\s+(?:to\s+)?(?:come\s+off|stop|quit|go\s+off)"
    r"\s+(?:my|the)\b"
)


def _contexts(flat: str) -> set[str]:
    """Which context the whole text sets: pregnancy, a baby, a very young baby, preterm weeks."""
    found = set()
    if _PREGNANCY_CONTEXT.search(flat):
        found.add("pregnancy")
        weeks = [int(w) for w in _WEEKS.findall(flat)]
        if any(w < 37 for w in weeks):
            found.add("preterm")
    if _INFANT_CONTEXT.search(flat):
        found.add("infant")
        if _YOUNG_INFANT.search(flat):
            found.add("young_infant")
    return found


def _hits(sentences: list[list[str]], contexts: set[str]) -> list[tuple[str, str]]:
    """Every (category, matched phrase) that survives the question, history and negation gates."""
    hits = []
    for sentence in sentences:
        if _is_general_question(sentence):
            continue
        joined = " ".join(sentence)
        for clause in sentence:
            if (
                _HISTORIC.search(clause)
                or _ANIMAL_SUBJECT.search(clause)
                or _RESOLVED.search(clause)
            ):
                continue
            for cat, rx, co, needs in _RULES:
                if needs is not None and needs not in contexts:
                    continue
                if co is not None and all(
                    _negated(joined, c.start(), c.group(0)) for c in co.finditer(joined)
                ):
                    continue
                for m in rx.finditer(clause):
                    if not _negated(clause, m.start(), m.group(0)):
                        hits.append((cat, m.group(0)))
                        break
    return hits


@dataclass(frozen=True)
class RuleResult:
    """What the rules found in one text: emergency hits, the contexts it sets, gate signals."""

    hits: list[tuple[str, str]]  # (category, matched phrase), in order found
    contexts: frozenset[str]
    medication: bool  # a dose-change or prescription request
    general: bool  # every sentence is a general question ("what are the signs of ...")
    past: bool  # a clause dates it to the past ("5 years ago", "as a child")
    negated: bool  # a negation cue is present
    animal: bool  # a pet or animal is the one affected ("our dog had a fit")

    @property
    def categories(self) -> list[str]:
        """The categories that fired, highest priority first (a baby or pregnancy wins)."""
        found = {cat for cat, _ in self.hits}
        if not found:
            return []
        if "pregnancy" in self.contexts:
            found.add("pregnancy")
        elif "infant" in self.contexts:
            found.add("infant")
        return [c for c in PRIORITY if c in found] + sorted(found - set(PRIORITY))


_NEGATION_ANYWHERE = re.compile(r"\b(?:no|not|dont|doesnt|didnt|isnt|wasnt|never|without|denies)\b")


_ANIMAL_ANYWHERE = re.compile(
    r"\b(?:my|our|the|his|her|their|a)\s+(?:\w+\s+)?(?:dog|cat|puppy|kitten|pet|horse|rabbit|hamster"
    r"|bird|parrot|guinea\s+pig|ferret|pony)s?\b"
)


def rule_check(text: str, exclude: Collection[str] = ()) -> RuleResult:
    """Run every rule over `text`; rules for categories in `exclude` are skipped (used to leave
    a category out entirely when measuring how the screen meets a presentation it never saw)."""
    sentences = normalise(text)
    flat = " ".join(" ".join(s) for s in sentences)
    contexts = frozenset(_contexts(flat))
    hits = [(c, m) for c, m in _hits(sentences, contexts) if c not in exclude]
    if "pregnancy" in exclude and "pregnancy" in contexts:
        contexts = contexts - {"pregnancy", "preterm"}
    if "infant" in exclude and "infant" in contexts:
        contexts = contexts - {"infant", "young_infant"}
    general = bool(sentences) and all(_is_general_question(s) for s in sentences)
    past = any(_HISTORIC.search(c) or _RESOLVED.search(c) for s in sentences for c in s)
    negated = bool(_NEGATION_ANYWHERE.search(flat))
    animal = bool(_ANIMAL_ANYWHERE.search(flat))
    return RuleResult(
        hits=hits,
        contexts=contexts,
        medication=bool(_MEDICATION.search(flat)),
        general=general,
        past=past,
        negated=negated,
        animal=animal,
    )
