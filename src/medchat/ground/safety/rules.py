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
        r"\b(?:drank|drunk|drink|swallowed|swallow|ate|eaten|licked|inhaled|got\s+into|bit\s+into"
        r"|chewed|chewing|sucked\s+on)\s+"
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
    # ---- presentations added with the triage taxonomy (docs/safety.md); each names a sign
    # from the taxonomy that is specific enough to stand on its own, the learned screen covers
    # the rest
    (
        "meningitis",
        r"\b(?:rash|spots|blotch\w*|marks)\b(?:\s+\w+){0,8}?\s+(?:doesnt|didnt|wont|dont|not|isnt"
        r"|still)\s+(?:\w+\s+)?(?:fade|fading|blanch\w*|disappear\w*|go\s+away)\b"
        r"|\bnon\s+blanching\b"
        r"|\bglass\s+test\b(?:\s+\w+){0,6}?\s+(?:doesnt|didnt|dont|wont|not|still)\s+(?:\w+\s+)?"
        r"(?:fade|fading|go|disappear\w*)\b",
        None,
    ),
    (
        "meningitis",
        r"\bstiff\s+neck\b|\bneck\s+(?:is\s+)?(?:really\s+|so\s+|very\s+)?stiff\b",
        r"\b(?:fever\w*|temp\w*|burning\s+up|hot|vomit\w*|light\s+hurts|confus\w*|rash)\b",
    ),
    (
        "head_injury",
        r"\bpupils?\b(?:\s+\w+){0,4}?\s+(?:different|unequal|uneven|bigger|larger|smaller|odd)\b"
        r"|\b(?:different|unequal|uneven)\s+(?:sized\s+)?pupils\b",
        None,
    ),
    (
        "head_injury",
        r"\b(?:hit|bumped|banged|knocked|whacked|smacked|cracked)\s+(?:\w+\s+){0,3}?head\b"
        r"|\bhead\s+(?:injury|knock|bump|on\s+the)\b|\bfell\s+(?:\w+\s+){0,4}?head\b",
        r"\b(?:vomit\w*|throw\w*\s+up|threw\s+up|being\s+sick|drowsy|confus\w*|knocked\s+out"
        r"|passed\s+out|blacked\s+out|same\s+question|fluid|seizure|fit|cant\s+remember)\b",
    ),
    (
        "cauda_equina",
        r"\b(?:numb\w*|no\s+feeling|tingl\w*|pins\s+and\s+needles)\b(?:\s+\w+){0,4}?\s+(?:bum|bottom"
        r"|buttocks?|groin|genitals|saddle|privates|between\s+(?:my|his|her|the)\s+legs)\b",
        None,
    ),
    (
        "cauda_equina",
        r"\b(?:wet|peed|soiled)\s+(?:my|him|her)sel(?:f|ves)\b"
        r"|\bcant\s+(?:pee|wee|urinate|control\s+(?:my\s+)?(?:bladder|bowels?))\b"
        r"|\b(?:lost|losing)\s+control\s+of\s+(?:my\s+|his\s+|her\s+)?(?:bladder|bowels?)\b",
        r"\b(?:back|sciatica|spine|spinal|disc)\b",
    ),
    (
        "overdose_poisoning",
        r"\b(?:took|taken|swallowed|had|downed)\s+(?:about\s+|like\s+|around\s+|over\s+|maybe\s+)?"
        r"(?:\d{2,}|ten|twelve|fifteen|twenty|thirty|forty|fifty)\s+(?:\w+\s+){0,2}?(?:paracetamol"
        r"|tylenol|acetaminophen|ibuprofen|aspirin|advil|panadol|co\s+codamol|codeine|tramadol"
        r"|sleeping|antidepressants?|of\s+(?:my|his|her|their|the|them))\b",
        None,
    ),
    (
        "overdose_poisoning",
        r"\b(?:ate|swallowed|chewed|eaten|got\s+into)\b(?:\s+\w+){0,5}?\s+(?:pills?|tablets?"
        r"|medicine|meds|gummies|capsules?|blister|button\s+batter\w*)\b",
        r"\b(?:toddler|child|kid|son|daughter|baby|\d+\s+(?:year|yr)\s+old|missing|handful|whole"
        r"|several|lots|bunch)\b",
    ),
    (
        "eye_chemical",
        r"\b(?:bleach|lime|acid|cleaner|chemicals?|ammonia|cement|concrete|pepper\s+spray|caustic|lye"
        r"|chlorine|detergent|superglue|glue|solvent|battery\s+acid)\b(?:\s+\w+){0,5}?\s+(?:in|into)"
        r"\s+(?:my|his|her|their|the|both|one|an|her)\s+(?:\w+\s+)?eyes?\b",
        None,
    ),
    (
        "hypoglycaemia",
        r"\b(?:confus\w*|shak\w*|trembl\w*|drunk|slurr\w*|not\s+making\s+sense|dazed|out\s+of\s+it"
        r"|cant\s+wake|wont\s+wake|hard\s+to\s+wake|sweaty\s+and)\b",
        r"\b(?:diabet\w*|insulin|gliclazide|metformin|glucose|hypo|sugar\s+(?:is|was|level|levels|reading"
        r"|low|dropped))\b",
    ),
    (
        "suicide_self_harm",
        r"\b(?:worked\s+out|planned|planning|picked|chosen|chose|set|decided)\s+(?:\w+\s+){0,3}?"
        r"(?:how|when|a\s+date|the\s+date|a\s+day|the\s+day|a\s+method|the\s+method|a\s+way)\b",
        r"\b(?:end\s+it|end\s+(?:my|his|her)|die|dying|kill\w*|suicid\w*|not\s+be\s+here"
        r"|wont\s+be\s+(?:here|around)|goodbye|overdose|jump)\b",
    ),
    (
        "suicide_self_harm",
        r"\bcut\s+(?:myself|himself|herself)\s+again\b"
        r"|\bcut(?:ting)?\s+(?:my|his|her)\s+(?:wrists?|arms?|thighs?|legs?)\b(?!\s+on\b)",
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
        r"|\b(?:no|less|reduced|fewer|weaker)\s+(?:fetal\s+|baby\s+)?(?:movements?|kicks)\b"
        r"|\b(?:movements?|kicks)\b(?:\s+\w+){0,3}?\s+(?:weaker|different|less|slower|stopped|fewer)\b",
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
    (
        "pregnancy",
        r"\b(?:fell|fallen|car\s+(?:accident|crash))\b"
        r"|\b(?:tripped|slipped|fall)\b(?:\s+\w+){0,5}?\s+(?:belly|bump|stomach|tummy)\b",
        None,
        "pregnancy",
    ),
    (
        "pregnancy",
        r"\bwaters?\s+(?:\w+\s+)?(?:broke|broken|breaking|gone|went)\b|\bcontractions\b|\bcramping\b",
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
