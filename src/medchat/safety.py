"""Rule-based safety layer: spot emergencies and dose/prescription requests before answering.

Every answering path (CLI ask, eval, UI, HTTP API) calls `check(question)` first. It is plain
Python (regular expressions over normalised tokens, a typo map and difflib on a few key words),
so it runs in well under a millisecond and needs no model.

The rule that decides most borderline cases (docs/safety.md has the full list):
a *description* of what is happening now, to the writer or someone with them ("my dad's face is
drooping", "chest pain", "I want to die"), is an emergency; a *question about* a condition in
general ("what are the symptoms of a heart attack?"), a negated symptom ("no chest pain") or a
past event ("I had a seizure 5 years ago") is not.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medchat.errors import MedchatError

DISCLAIMER = (
    "medchat is an automated assistant, not a doctor: its answers are general information, "
    "may be wrong, and are not medical advice. In an emergency call 911 or your local "
    "emergency number."
)

MEDICATION_NOTE = (
    "Changing a dose, stopping a medicine or getting a prescription needs someone who knows "
    "your history: talk to your clinician or pharmacist before you change anything."
)

# Short, plain "what to do now" per category: the first thing a frightened reader sees.
MESSAGES: dict[str, str] = {
    "heart_attack": (
        "This could be a heart attack. Call 911 or your local emergency number now. "
        "Stop, sit down and rest; do not drive yourself to hospital."
    ),
    "stroke": (
        "These can be signs of a stroke. Call 911 or your local emergency number now: every "
        "minute counts. Note the time the symptoms started; give no food, drink or medicine."
    ),
    "breathing": (
        "Serious trouble breathing is an emergency. Call 911 or your local emergency number now. "
        "Sit upright; use a reliever inhaler if you have one. If someone is choking and cannot "
        "speak, give back blows and abdominal thrusts."
    ),
    "bleeding": (
        "Heavy bleeding, or vomiting or coughing up blood, is an emergency. Call 911 or your "
        "local emergency number now. Press firmly on a wound with a clean cloth and keep pressing."
    ),
    "anaphylaxis": (
        "This could be anaphylaxis, a severe allergic reaction. Use an adrenaline (epinephrine) "
        "auto-injector such as an EpiPen if there is one, and call 911 or your local emergency "
        "number now, even if it seems to improve."
    ),
    "suicide_self_harm": (
        "You don't have to face this alone. If you or someone else is in danger now, call 911 or "
        "your local emergency number. In the US call or text 988 (Suicide & Crisis Lifeline); "
        "elsewhere, call your local crisis line. Stay with the person if you can."
    ),
    "overdose_poisoning": (
        "This could be poisoning or an overdose. If the person is hard to wake, struggling to "
        "breathe or having a seizure, call 911 or your local emergency number now. Otherwise call "
        "Poison Control now (US 1-800-222-1222). Do not make them vomit."
    ),
    "seizure": (
        "Call 911 or your local emergency number now for a first seizure, one lasting over 5 "
        "minutes, repeated seizures, or if the person does not wake up. Lay them on their side, "
        "move hard objects away, put nothing in their mouth."
    ),
    "pregnancy": (
        "These can be signs of a pregnancy emergency. Call 911 or your local emergency number, "
        "or your maternity unit, now."
    ),
    "unresponsive": (
        "Someone who is unconscious or cannot be woken needs help now. Call 911 or your local "
        "emergency number. If they are not breathing normally, start CPR; if they are, lay "
        "them on their side."
    ),
    "infant": (
        "A baby with these signs needs emergency care. Call 911 or your local emergency number "
        "now. If the baby is not breathing, start infant CPR if you know how."
    ),
}

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
CATEGORIES = PRIORITY

# Recall/FPR targets on the labelled set: missing an emergency costs far more than an extra
# warning, so recall is held higher than the false-positive budget.
TARGETS = {"recall": 0.97, "false_positive_rate": 0.03}


@dataclass(frozen=True)
class SafetyVerdict:
    """What `check` found: an emergency (red_flag), a note to show, or nothing."""

    red_flag: bool
    category: str | None = None
    message: str | None = None
    notes: list[str] = field(default_factory=list)
    matched: str | None = None  # the phrase that fired, for logs and debugging
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    "feed feeding feel"
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

_POSS = r"(?:my|his|her|their|our|your|the|a)"
_NEAR = r"(?:\s+\w+){0,4}?\s+"  # up to four tokens in between

# (category, pattern, co-signal that must also appear somewhere in the sentence, or None).
_RULES_SRC: list[tuple[str, str, str | None]] = [
    # heart attack
    (
        "heart_attack",
        r"\bchest\b(?!\s+(?:cold|infection|x\s?ray|xray|workout|press(?:es|ing)?\b|drawers))(?:\s+\w+){0,5}?\s+"
        r"(?:pain|pressure|tightness|tight|heavy|heaviness|discomfort|hurts?|hurting|ache|aching"
        r"|squeez\w*|crush\w*)\b",
        None,
    ),
    (
        "heart_attack",
        r"\b(?:pain|pressure|tight|tightness|heaviness|discomfort|crushing|squeezing|heavy)\b"
        r"(?:\s+\w+){0,6}?\s+chest\b(?!\s+(?:cold|infection|x\s?ray|xray|workout|press(?:es|ing)?\b))",
        None,
    ),
    ("heart_attack", r"\b(?:clutching|holding|grabbing|gripping)\s+(?:my|his|her)\s+chest", None),
    (
        "heart_attack",
        r"\belephant\s+(?:is\s+)?(?:sitting|standing)\s+on\b"
        r"|\b(?:sitting|standing|weight)\s+on\s+(?:my|his|her)\s+chest\b",
        None,
    ),
    (
        "heart_attack",
        r"\b(?:pain|ache|pressure)\b(?:\s+\w+){0,4}?\s+(?:down|into|to|up)\s+(?:my|his|her|the)"
        r"\s+(?:left\s+)?(?:arm|jaw)\b",
        None,
    ),
    (
        "heart_attack",
        r"\b(?:having|had|just\s+had|going\s+into)\s+an?\s+(?:heart\s+attack|cardiac\s+arrest)\b"
        r"|\bheart\s+attack\s+(?:happening|right\s+now|now)\b",
        None,
    ),
    # stroke
    (
        "stroke",
        r"\b(?:face|mouth|smile|lip)\b(?:\s+\w+){0,3}?\s+"
        r"(?:droop\w*|lopsided|uneven|crooked|numb|sagging|fallen)\b",
        None,
    ),
    ("stroke", r"\b(?:droop\w*|lopsided|crooked)\b(?:\s+\w+){0,3}?\s+(?:face|mouth|smile)\b", None),
    ("stroke", r"\bslurr\w*|\bgarbled\b|\baphasi\w*|\bdysarthri\w*", None),
    (
        "stroke",
        r"\b(?:cant|trouble|difficulty|struggling\s+to|hard\s+to)\s+(?:talk|speak|speaking|talking"
        r"|find\s+(?:\w+\s+)?words|get\s+(?:\w+\s+)?words\s+out)\b",
        None,
    ),
    ("stroke", r"\bwords\s+(?:are\s+)?(?:coming\s+out\s+)?(?:wrong|jumbled|mixed\s+up)\b", None),
    (
        "stroke",
        r"\bcant\s+(?:lift|raise|move|feel)\s+(?:\w+\s+){0,2}(?:arm|leg|hand|side)\b",
        None,
    ),
    (
        "stroke",
        r"\b(?:left|right|one)\s+sided?\b(?:\s+\w+){0,4}?\s+(?:weak\w*|numb\w*|paraly\w*)"
        r"|\b(?:weak\w*|numb\w*|paraly\w*)\s+(?:on|down)\s+(?:the\s+|one\s+|his\s+|her\s+|my\s+)?"
        r"(?:left\s+|right\s+)?side\b",
        None,
    ),
    (
        "stroke",
        r"\b(?:lost|losing|loss\s+of)\s+(?:\w+\s+){0,2}(?:vision|sight)\b"
        r"|\bsudden\w*\s+(?:\w+\s+){0,2}(?:blind|cant\s+see)\b",
        None,
    ),
    ("stroke", r"\bworst\s+headache\b|\bthunderclap\b", None),
    (
        "stroke",
        r"\bsudden\w*(?:\s+\w+){0,3}?\s+confus\w*|\bconfus\w*\s+all\s+of\s+a\s+sudden",
        None,
    ),
    (
        "stroke",
        r"\b(?:having|had|just\s+had)\s+an?\s+(?:mini\s+)?(?:stroke|tia)\b"
        r"|\bstroke\s+(?:signs|symptoms)\s+(?:in|on)\s+(?:my|his|her|our)\b",
        None,
    ),
    # breathing
    (
        "breathing",
        r"\b(?:cant|struggling\s+to|struggle\s+to|hard\s+to|hardly|barely|trouble|difficulty"
        r"|difficult\s+to|problems?|hard\s+time)\s+breath\w*",
        None,
    ),
    ("breathing", r"\bcant\s+(?:catch|get)\s+(?:\w+\s+){0,2}(?:breath|air)\b", None),
    ("breathing", r"\b(?:not|isnt|stopped|stop|wasnt|arent)\s+breathing\b", None),
    ("breathing", r"\bgasping\b|\bchoking\b(?!\s+up)|\bsuffocat\w*", None),
    (
        "breathing",
        r"\bbreath\w*\s+(?:is\s+|feels\s+)?(?:so\s+|really\s+|very\s+)?"
        r"(?:hard|difficult|laboured|labored)\b",
        None,
    ),
    ("breathing", r"\bshort(?:ness)?\s+of\s+breath\b|\bdyspn\w*|\bbreathless\w*", None),
    ("breathing", r"\b(?:turning|turned|going|gone|look\w*)\s+blue\b", None),
    (
        "breathing",
        r"\bwheez\w*\s+(?:badly|bad|severely|a\s+lot)"
        r"|\b(?:inhaler|puffer)\s+(?:isnt|is\s+not|not|doesnt|wont)\s+(?:help|work)\w*",
        None,
    ),
    ("breathing", r"\b(?:sats?|oxygen|o2|spo2)\s+(?:is\s+|at\s+|of\s+)?(?:[1-8]\d)\b", None),
    (
        "breathing",
        r"\bbreathing\s+(?:is\s+)?(?:really\s+|very\s+|so\s+)?"
        r"(?:fast|rapid\w*|shallow|weird|strange|noisy|funny)\b",
        None,
    ),
    # bleeding
    ("bleeding", r"\b(?:wont|will\s+not|doesnt|cant|not)\s+stop\s+bleeding\b", None),
    (
        "bleeding",
        r"\bble(?:e)?d\w*(?:\s+\w+){0,6}?\s+(?:wont|will\s+not|doesnt|isnt|not)\s+stop\w*",
        None,
    ),
    (
        "bleeding",
        r"\b(?:bleeding|bleed|bled)\s+(?:heavily|a\s+lot|badly|profusely|everywhere|so\s+much)\b"
        r"|\b(?:heavy|severe|massive|uncontrolled|uncontrollable)\s+(?:bleeding|blood\s+loss)\b"
        r"|\b(?:lots|a\s+lot)\s+of\s+blood\b",
        None,
    ),
    (
        "bleeding",
        r"\bblood\s+(?:is\s+)?(?:spurting|pouring|gushing|everywhere|squirting|pumping)\b"
        r"|\b(?:spurting|pouring|gushing|squirting)\s+(?:out\s+)?blood\b",
        None,
    ),
    (
        "bleeding",
        r"\b(?:vomiting|throwing\s+up|threw\s+up|vomited|coughing|coughed|spitting|puking)\s+"
        r"(?:up\s+)?(?:blood|bright\s+red)\b|\bcoffee\s+grounds\b"
        r"|\b(?:black|tarry)\s+(?:\w+\s+)?(?:stools?|poop|poo)\b",
        None,
    ),
    ("bleeding", r"\bsoak\w*\s+(?:through\s+)?(?:\w+\s+){0,2}(?:towels?|bandages?)\b", None),
    # anaphylaxis
    (
        "anaphylaxis",
        r"\bthroat\b(?:\s+\w+){0,3}?\s+(?:closing|closed|tight\w*|swell\w*|swollen)"
        r"|\b(?:swollen|swelling)\s+throat\b"
        r"|\btongue\b(?:\s+\w+){0,3}?\s+(?:swell\w*|swollen)|\bswollen\s+tongue\b",
        None,
    ),
    (
        "anaphylaxis",
        r"\b(?:lips?|face|eyes|mouth)\b(?:\s+\w+){0,3}?\s+(?:swell\w*|swollen|puffy|puffing)\b",
        # lips or face swelling alone is common and often mild; with a trigger it is anaphylaxis
        r"\b(?:allerg\w*|sting|stung|bee|wasp|hornet|ate|eating|eaten|peanuts?|nuts?|cashews?"
        r"|shellfish|shrimp|prawns?|sesame|hives|epipen|reaction|injection|medication)\b",
    ),
    (
        "anaphylaxis",
        r"\bhives\b",
        r"\b(?:faint|dizzy|wheez\w*|breath\w*|swell\w*|swollen|throat|collaps\w*)\b",
    ),
    (
        "anaphylaxis",
        r"\b(?:having|going\s+into|in)\s+(?:an?\s+)?anaphyla\w*"
        r"|\b(?:used|use|using|gave|give|needed)\s+(?:my\s+|his\s+|her\s+|an\s+|the\s+)?epipen\b",
        None,
    ),
    # suicide and self-harm
    ("suicide_self_harm", r"\bsuicidal\b", None),
    (
        "suicide_self_harm",
        r"\b(?:commit\w*|attempt\w*|thinking\s+(?:about|of)|thoughts\s+of|consider\w*|plan\w*)"
        r"\s+suicide\b",
        None,
    ),
    (
        "suicide_self_harm",
        r"\bkill\w*\s+(?:myself|himself|herself|themselves|themself|my\s+self)\b"
        r"|\b(?:end|ending|take|taking)\s+(?:my|his|her|their)\s+(?:own\s+)?life\b"
        r"|\bend(?:ing)?\s+it\s+(?:all|tonight|today|now)\b",
        None,
    ),
    (
        "suicide_self_harm",
        r"\b(?:want|wanna|wants|wanted|going|gonna|ready)\s+(?:to\s+)?(?:die|jump)\b"
        r"|\b(?:dont|do\s+not|doesnt|no\s+longer)\s+want\s+to\s+(?:be\s+alive|live|be\s+here"
        r"|exist|wake\s+up)\b"
        r"|\bno\s+(?:reason|point)\s+(?:to|in)\s+(?:live|living|going\s+on)\b"
        r"|\bwhats\s+the\s+point\s+(?:of|in)\s+(?:living|life|going\s+on)\b"
        r"|\bbetter\s+off\s+(?:dead|without\s+(?:me|him|her))\b"
        r"|\bwant\w*\s+(?:it|everything)\s+(?:all\s+)?to\s+(?:stop|end)\b",
        None,
    ),
    (
        "suicide_self_harm",
        r"\bself\s*harm\w*"
        r"|\b(?:cutting|burning)\s+(?:myself|himself|herself|themselves)\b"
        r"|\b(?:cut|hurt|harmed|burnt|burned)\s+(?:myself|himself|herself|themselves)\s+on\s+purpose\b"
        r"|\b(?:want\w*|going|gonna|trying|tried|thinking\s+(?:about|of)|thoughts\s+of|urges?)\s+(?:to\s+)?"
        r"(?:hurt|harm|cut)\w*\s+(?:myself|himself|herself|themselves)\b",
        None,
    ),
    # overdose and poisoning
    (
        "overdose_poisoning",
        r"\boverdos\w*\b(?!\s+on\s+(?:netflix|tv|television|chocolate|sugar|candy|sweets|junk|love"
        r"|work|coffee|youtube|games?|gaming))",
        None,
    ),
    (
        "overdose_poisoning",
        r"\b(?:took|taken|take|swallowed|ate|had|drank|downed)\s+(?:\w+\s+){0,3}?"
        r"(?:too\s+many|too\s+much|(?:an?|the|half\s+a|half\s+the)\s+(?:whole\s+|full\s+|entire\s+)?"
        r"(?:bottle|packet|pack|box|strip)\s+of(?!\s+(?:water|wine|beer|juice|milk|soda|pop)))\b",
        None,
    ),
    (
        "overdose_poisoning",
        r"\b(?:drank|drunk|drink|swallowed|swallow|ate|eaten|licked|inhaled|got\s+into)\s+"
        r"(?:\w+\s+){0,5}?(?:bleach|antifreeze|poison\w*|detergent|pods?|battery|batteries|magnets?"
        r"|drain\s+cleaner|chemicals?|pesticide|weed\s*killer|lighter\s+fluid|petrol|gasoline"
        r"|kerosene|paint\s+thinner|(?:washer|lighter|brake|cleaning)\s+fluid|nail\s+polish\s+remover"
        r"|pills|tablets|medicine|meds|medication)\b",
        None,
    ),
    (
        "overdose_poisoning",
        r"\b(?:took|taken|swallowed)\s+(?:\d+|ten|twenty|thirty|forty|fifty)\s+"
        r"(?:\w+\s+){0,3}(?:pills|tablets|capsules)\b",
        None,
    ),
    (
        "overdose_poisoning",
        # an accidental extra dose is a poison-control call, not a dosing question
        r"\b(?:took|taken|take|given|gave|swallowed)\b(?:\s+\w+){0,4}?\s+"
        r"(?:doses?|pills?|tablets?|insulin|medicine|medication|meds)\b",
        r"\b(?:accident\w*|mistake|wrong\s+(?:pills?|tablets?|medicine|medication|dose))\b",
    ),
    (
        "overdose_poisoning",
        # pills on top of alcohol is a dangerous mix even at normal doses
        r"\b(?:took|taken|swallowed|popped)\s+(?:\w+\s+){0,2}?(?:pills|tablets|xanax|valium|opioids?)\b",
        r"\b(?:vodka|alcohol|drunk|drinking|wine|beer|whisky|whiskey|booze|rum|gin)\b",
    ),
    (
        "overdose_poisoning",
        r"\bcarbon\s+monoxide\s+(?:alarm|detector)\b|\bmixed\s+bleach\s+(?:and|with)\b",
        None,
    ),
    (
        "overdose_poisoning",
        r"\bunconscious\b|\bunresponsive\b|\bpassed\s+out\b|\bwont\s+wake\b|\bnot\s+waking\b",
        r"\b(?:pills|tablets|drugs|heroin|fentanyl|opioids?|methadone|overdos\w*)\b",
    ),
    # seizures
    (
        "seizure",
        r"\b(?:having|had|has\s+had|in)\s+an?\s+(?:seizure|fit|convulsion)\b"
        r"|\b(?:first|\d+|two|three|several|multiple)\s+(?:ever\s+)?seizures?\b"
        r"|\bseizures?\s+(?:\w+\s+)?(?:wont|isnt|hasnt|not|doesnt)\s+stop\w*",
        None,
    ),
    (
        "seizure",
        r"\b(?:is|been|keeps|started|still)\s+fitting\b|\bseizing\b|\bconvuls\w*"
        r"|\btonic\s+clonic\b|\bfoaming\s+at\b",
        None,
    ),
    ("seizure", r"\beyes\s+(?:have\s+)?rolled\b", None),
    (
        "seizure",
        r"\b(?:shaking|jerking|twitching)\s+(?:all\s+over|uncontrollabl\w*|violently)\b",
        r"\b(?:not\s+respond\w*|unresponsive|rolled|foaming|collapsed|unconscious|passed\s+out"
        r"|wont\s+wake)\b",
    ),
    # unconscious or cannot be woken: not a cause, but always an emergency
    (
        "unresponsive",
        r"\bunconscious\b|\bunresponsive\b|\bnot\s+responding\b"
        r"|\bcant\s+wake\s+(?:him|her|them|my|the)\b"
        # "collapsed into bed" is tiredness, not a collapse
        r"|\b(?:i|he|she|they|mum|dad|\w+(?:band|wife|ther|son|ter|friend))\s+(?:just\s+|has\s+)?"
        r"collapsed\b(?!\s+(?:into|onto|on|in)\s+(?:bed|the\s+sofa|the\s+couch|a\s+chair))"
        r"|\b(?:he|she|they|hes|shes|baby|it)\s+(?:wont|isnt|doesnt|cant)\s+(?:wake|waking)\b",
        None,
    ),
]

# Pregnancy and baby signs only count when the text sets that context (see _contexts):
# (category, pattern, co-signal or None, context the text must set).
_CONTEXT_RULES_SRC: list[tuple[str, str, str | None, str]] = [
    ("pregnancy", r"\bbleed\w*|\bblood\b|\bclots?\b|\bsoak\w*", None, "pregnancy"),
    (
        "pregnancy",
        r"\b(?:severe|bad|terrible|sharp|intense|awful|worst|really\s+bad)\b(?:\s+\w+){0,3}?\s+"
        r"(?:pain|cramps?|cramping)|\bpain\b(?:\s+\w+){0,3}?\s+(?:belly|stomach|abdomen|tummy)",
        None,
        "pregnancy",
    ),
    (
        "pregnancy",
        r"\bbaby\b(?:\s+\w+){0,2}?\s+(?:hasnt|isnt|not|stopped)\s+(?:moved|moving|kick\w*)"
        r"|\bcant\s+feel\s+(?:\w+\s+){0,2}(?:baby|him|her)\s+(?:move|moving|kick\w*)"
        r"|\b(?:no|less|reduced|fewer)\s+(?:fetal\s+|baby\s+)?(?:movements?|kicks)\b",
        None,
        "pregnancy",
    ),
    (
        "pregnancy",
        r"\b(?:blurry|blurred)\s+vision\b|\bseeing\s+spots\b"
        r"|\b(?:severe|terrible|bad|awful|pounding)\s+headache\b|\bface\s+(?:is\s+)?swollen\b",
        None,
        "pregnancy",
    ),
    ("pregnancy", r"\b(?:fell|fallen|car\s+(?:accident|crash))\b", None, "pregnancy"),
    (
        "pregnancy",
        r"\bwater\s+(?:broke|has\s+broken|breaking)\b|\bcontractions\b|\bcramping\b",
        None,
        "preterm",
    ),
    (
        "infant",
        r"\bfloppy\b|\blimp\b|\blethargic\b|\blistless\b|\bunresponsive\b|\bnot\s+responding\b"
        r"|\b(?:wont|cant|not|isnt|doesnt|hard\s+to)\s+(?:wake|waking)\b|\bblue\b",
        None,
        "infant",
    ),
    (
        "infant",
        r"\b(?:pausing|pauses|grunting)\b|\bsucking\s+in\b|\bbulging\b|\bfontanel\w*"
        r"|\b(?:no|hasnt\s+had\s+a|not\s+had\s+a)\s+wet\s+(?:nappy|nappies|diaper|diapers)\b",
        None,
        "infant",
    ),
    # a fall is only alarming with vomiting or drowsiness, often told in a later clause
    ("infant", r"\b(?:fell|fallen|dropped)\b", r"\b(?:vomit\w*|sleepy|drowsy)\b", "infant"),
    (
        "infant",
        r"\b(?:not|wont|refus\w*)\s+(?:to\s+)?(?:feed|feeding)\b|\byellow\b",
        r"\b(?:sleepy|hot|yellow|fever|not\s+feed\w*|wont\s+feed)\b",
        "infant",
    ),
    # fever under three months old is an emergency on its own; older babies need other signs
    ("infant", r"\bfever\w*|\btemp\w*|\bhot\b|\bburning\s+up\b", None, "young_infant"),
]

_RULES = [
    (cat, re.compile(pat), re.compile(co) if co else None, None) for cat, pat, co in _RULES_SRC
] + [
    (cat, re.compile(pat), re.compile(co) if co else None, ctx)
    for cat, pat, co, ctx in _CONTEXT_RULES_SRC
]

_PREGNANCY_CONTEXT = re.compile(
    r"\bpregnan\w*|\btrimester\b|\bpostpartum\b|\bpost\s+partum\b|\bgave\s+birth\b"
    r"|\bhad\s+(?:my|the|a|our)\s+baby\s+\d+\s+(?:days?|weeks?)\s+ago\b"
    r"|\bwater\s+(?:broke|has\s+broken)\b"
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
                if co is not None and not co.search(joined):
                    continue
                for m in rx.finditer(clause):
                    if not _negated(clause, m.start(), m.group(0)):
                        hits.append((cat, m.group(0)))
                        break
    return hits


def check(text: str) -> SafetyVerdict:
    """Screen one question: an emergency verdict with what to do now, a dose note, or nothing."""
    sentences = normalise(text)
    flat = " ".join(" ".join(s) for s in sentences)
    contexts = _contexts(flat)
    hits = _hits(sentences, contexts)
    med_note = [MEDICATION_NOTE] if _MEDICATION.search(flat) else []
    if not hits:
        if med_note:
            return SafetyVerdict(False, "medication_change", MEDICATION_NOTE, med_note)
        return SafetyVerdict(False)
    found = {cat for cat, _ in hits}
    # A baby or a pregnancy changes what to do, so that context wins over the symptom.
    if "pregnancy" in contexts:
        found.add("pregnancy")
    elif "infant" in contexts:
        found.add("infant")
    ranked = [cat for cat in PRIORITY if cat in found]
    category = ranked[0]
    matched = next((phrase for cat, phrase in hits if cat == category), hits[0][1])
    # The runner-up's advice (poison control next to a crisis line) is worth showing too.
    notes = [MESSAGES[cat] for cat in ranked[1:2]] + med_note
    return SafetyVerdict(True, category, MESSAGES[category], notes, matched)


def with_disclaimer(answer: str, verdict: SafetyVerdict | None = None) -> str:
    """The answer as shown to a user: emergency message and notes first, disclaimer last."""
    parts = []
    if verdict is not None and verdict.message:
        parts.append(verdict.message)
        parts += [n for n in verdict.notes if n != verdict.message]
    parts.append(answer.strip())
    parts.append(DISCLAIMER)
    return "\n\n".join(p for p in parts if p)


# ----------------------------------------------------------------------------- labelled set


def load_safety_set(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Read the labelled set (bundled one by default), checking every row's fields."""
    if path is None:
        text = (importlib.resources.files("medchat") / "resources" / "safety_set.jsonl").read_text(
            encoding="utf-8"
        )
        name = "medchat/resources/safety_set.jsonl"
    else:
        if not Path(path).is_file():
            raise MedchatError(f"{path}: safety set not found")
        text = Path(path).read_text(encoding="utf-8")
        name = str(path)
    rows, problems = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {lineno}: not valid JSON ({e.msg})")
            continue
        if not isinstance(row.get("text"), str) or not isinstance(row.get("red_flag"), bool):
            problems.append(f"line {lineno}: needs a string 'text' and a boolean 'red_flag'")
        elif row.get("split") not in ("dev", "heldout"):
            problems.append(f"line {lineno}: 'split' must be 'dev' or 'heldout'")
        elif row["red_flag"] and row.get("category") not in CATEGORIES:
            problems.append(f"line {lineno}: red-flag rows need a category from {CATEGORIES}")
        else:
            rows.append(row)
    if problems:
        raise MedchatError(f"{name}: " + "; ".join(problems))
    return rows


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def score(rows: list[dict[str, Any]], verdicts: list[SafetyVerdict]) -> dict[str, Any]:
    """Recall, false-positive rate, precision and per-category recall of verdicts vs labels."""
    pairs = list(zip(rows, verdicts, strict=True))
    tp = sum(r["red_flag"] and v.red_flag for r, v in pairs)
    fp = sum(not r["red_flag"] and v.red_flag for r, v in pairs)
    pos = sum(r["red_flag"] for r in rows)
    neg = len(rows) - pos
    per_cat_n = Counter(r["category"] for r in rows if r["red_flag"])
    per_cat_hit = Counter(r["category"] for r, v in pairs if r["red_flag"] and v.red_flag)
    same_cat = sum(r["red_flag"] and v.red_flag and r["category"] == v.category for r, v in pairs)
    med = [v for r, v in pairs if r.get("category") == "medication_change"]
    return {
        "n": len(rows),
        "positives": pos,
        "negatives": neg,
        "tp": tp,
        "fn": pos - tp,
        "fp": fp,
        "tn": neg - fp,
        "recall": _ratio(tp, pos),
        "false_positive_rate": _ratio(fp, neg),
        "precision": _ratio(tp, tp + fp),
        "category_agreement": _ratio(same_cat, tp),
        "per_category_recall": {
            cat: {"n": per_cat_n[cat], "recall": _ratio(per_cat_hit[cat], per_cat_n[cat])}
            for cat in CATEGORIES
            if per_cat_n[cat]
        },
        "medication_note_recall": _ratio(sum(MEDICATION_NOTE in v.notes for v in med), len(med)),
    }


def evaluate_safety_set(path: str | Path | None = None) -> dict[str, Any]:
    """Score `check` on the labelled set per split (dev, heldout, all), listing every miss."""
    rows = load_safety_set(path)
    verdicts = [check(r["text"]) for r in rows]
    splits = {}
    for split in ("dev", "heldout", "all"):
        idx = [i for i, r in enumerate(rows) if split == "all" or r["split"] == split]
        splits[split] = score([rows[i] for i in idx], [verdicts[i] for i in idx])
    misclassified = [
        {
            "split": r["split"],
            "text": r["text"],
            "red_flag": r["red_flag"],
            "category": r.get("category"),
            "predicted_red_flag": v.red_flag,
            "predicted_category": v.category,
        }
        for r, v in zip(rows, verdicts, strict=True)
        if r["red_flag"] != v.red_flag
        or (r.get("category") == "medication_change" and MEDICATION_NOTE not in v.notes)
    ]
    return {"targets": dict(TARGETS), "splits": splits, "misclassified": misclassified}


# ----------------------------------------------------------------------------- formatting


def read_texts(path: str | Path) -> list[str]:
    """Questions from a file, one per line; JSONL rows give their 'text' field; '-' is stdin."""
    if str(path) == "-":
        import sys

        lines = sys.stdin.read().splitlines()
    else:
        if not Path(path).is_file():
            raise MedchatError(f"{path}: file not found; give a text or JSONL file of questions")
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    texts = []
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                line = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise MedchatError(
                    f"{path}: line {lineno} looks like JSON but has no readable 'text' field"
                ) from None
        texts.append(str(line))
    return texts


def verdict_line(text: str, verdict: SafetyVerdict, as_json: bool = False) -> str:
    """One output line for `medchat safety check`: JSON or readable."""
    if as_json:
        record = {
            "text": text,
            "red_flag": verdict.red_flag,
            "category": verdict.category,
            "message": verdict.message,
        }
        return json.dumps(record, ensure_ascii=False)
    if verdict.red_flag:
        return f"RED FLAG [{verdict.category}] {text!r}: {verdict.message}"
    if verdict.category:
        return f"note [{verdict.category}] {text!r}: {verdict.message}"
    return f"ok {text!r}"


def report_table(report: dict[str, Any]) -> str:
    """A plain-text table of `evaluate_safety_set` output, misses listed below it."""
    splits = report["splits"]
    names = list(splits)

    def fmt(value: Any) -> str:
        return (
            "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        )

    keys = ["n", "positives", "negatives", "tp", "fn", "fp", "recall", "false_positive_rate"]
    keys += ["precision", "category_agreement", "medication_note_recall"]
    lines = [f"{'metric':<24}" + "".join(f"{s:>10}" for s in names)]
    lines += [f"{k:<24}" + "".join(f"{fmt(splits[s][k]):>10}" for s in names) for k in keys]
    lines.append("recall by category")
    for cat in CATEGORIES:
        cells = [splits[s]["per_category_recall"].get(cat, {}).get("recall") for s in names]
        lines.append(f"  {cat:<22}" + "".join(f"{fmt(c):>10}" for c in cells))
    t = report["targets"]
    lines.append(
        f"targets: recall >= {t['recall']}, false_positive_rate <= {t['false_positive_rate']}"
    )
    lines.append(f"misclassified ({len(report['misclassified'])}):")
    for m in report["misclassified"]:
        want = m["category"] if m["red_flag"] else (m["category"] or "none")
        lines.append(f"  [{m['split']}] want {want}, got {m['predicted_category']}: {m['text']}")
    return "\n".join(lines) + "\n"
