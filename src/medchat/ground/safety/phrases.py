"""The rules' phrase table: for each taxonomy category, the patterns that describe it happening
now, over the normalised text that `rules.normalise` produces (lowercase, no apostrophes, common
typos repaired). `rules.py` compiles them and applies the gates (negation, past events, general
questions, animals); docs/safety.md says what each category covers."""

from __future__ import annotations

_POSS = r"(?:my|his|her|their|our|your|the|a)"
_NEAR = r"(?:\s+\w+){0,4}?\s+"  # up to four tokens in between

# (category, pattern, co-signal that must also appear somewhere in the sentence, or None).
RULES: list[tuple[str, str, str | None]] = [
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
CONTEXT_RULES: list[tuple[str, str, str | None, str]] = [
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
