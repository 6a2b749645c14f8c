"""The triage taxonomy: when a lay reader should call emergency services now, or get care today.

Each entry has a level (`emergency`: call 911 / the local emergency number now; `urgent`: be seen
today), the presentations it covers in lay terms (what the corpus writers were given), a short
"what to do now" message, and the public guidance it is drawn from. docs/safety.md lists them.
The corpus and the held-out sets are labelled with these ids; the eleven categories of the old
rules keep their ids, so the old hand-written set still reads.
"""

from __future__ import annotations

from dataclasses import dataclass

CALL = "Call 911 or your local emergency number now."


@dataclass(frozen=True)
class Entry:
    id: str
    level: str  # "emergency" | "urgent"
    name: str
    signs: str  # what it covers, in lay words
    message: str
    sources: tuple[str, ...]


NHS_999 = "NHS: When to call 999 (nhs.uk)"
NHS_111 = "NHS 111: When to get urgent help (nhs.uk)"
RED_CROSS = "American Red Cross First Aid/CPR/AED Participant's Manual"
RCUK = "Resuscitation Council UK: First aid guidance"
MEDLINE = "MedlinePlus: Recognizing medical emergencies (NIH/NLM)"

TAXONOMY: tuple[Entry, ...] = (
    # ------------------------------------------------------------------ emergency
    Entry(
        "heart_attack",
        "emergency",
        "Heart attack",
        "chest pain, pressure, tightness or heaviness now, possibly spreading to the arm, jaw, "
        "neck or back, with sweating, sickness or breathlessness",
        f"This could be a heart attack. {CALL} Stop, sit down and rest; do not drive yourself "
        "to hospital. Chew an aspirin (300 mg) if you are not allergic to it.",
        ("American Heart Association: Warning signs of a heart attack", NHS_999),
    ),
    Entry(
        "stroke",
        "emergency",
        "Stroke",
        "face drooping, arm or leg weakness or numbness on one side, slurred or confused speech, "
        "sudden loss of balance, a sudden 'worst ever' headache (BE FAST)",
        f"These can be signs of a stroke. {CALL} Every minute counts. Note the time the "
        "symptoms started; give no food, drink or medicine.",
        ("American Stroke Association: BE FAST stroke signs", "NHS: Stroke symptoms (F.A.S.T.)"),
    ),
    Entry(
        "unresponsive",
        "emergency",
        "Collapse, unconscious, cardiac arrest",
        "someone collapsed, found on the floor, cannot be woken, not responding, not breathing "
        "normally",
        f"Someone who is unconscious or cannot be woken needs help now. {CALL} If they are not "
        "breathing normally, start CPR (push hard and fast in the centre of the chest); if they "
        "are breathing, lay them on their side.",
        (RCUK, "American Heart Association: Hands-Only CPR", RED_CROSS),
    ),
    Entry(
        "breathing",
        "emergency",
        "Severe difficulty breathing",
        "cannot breathe or catch breath, struggling for each breath, cannot finish a sentence, "
        "lips or face turning blue or grey, sudden breathlessness with chest pain",
        f"Serious trouble breathing is an emergency. {CALL} Sit upright and stay still; loosen "
        "tight clothing.",
        (NHS_999, MEDLINE),
    ),
    Entry(
        "choking",
        "emergency",
        "Choking",
        "something stuck in the throat, cannot speak, cough or breathe, clutching the throat",
        f"If the person cannot speak, cough or breathe: give up to 5 back blows, then up to 5 "
        f"abdominal thrusts, and repeat. {CALL} If they become unresponsive, start CPR.",
        (RCUK, RED_CROSS),
    ),
    Entry(
        "asthma_attack",
        "emergency",
        "Severe asthma attack",
        "asthma with the reliever inhaler not helping, too breathless to talk, wheezing that "
        "keeps getting worse, lips turning blue",
        "Sit upright and take one puff of your reliever (blue) inhaler every 30-60 seconds, up "
        f"to 10 puffs. {CALL} If you still feel worse, or are too breathless to speak.",
        ("Asthma + Lung UK: What to do in an asthma attack", NHS_999),
    ),
    Entry(
        "anaphylaxis",
        "emergency",
        "Anaphylaxis (severe allergic reaction)",
        "throat tightening or swelling, swollen tongue or lips, wheeze or faintness after a food, "
        "sting or a new medicine, hives with breathing trouble",
        "This could be anaphylaxis. Use an adrenaline (epinephrine) auto-injector such as an "
        f"EpiPen if there is one. {CALL} Even if it seems to improve. Lie down with legs raised "
        "unless breathing is easier sitting.",
        ("Anaphylaxis UK / NHS: Anaphylaxis", RCUK),
    ),
    Entry(
        "bleeding",
        "emergency",
        "Severe bleeding",
        "bleeding that will not stop with pressure, blood spurting or pooling, a deep wound, "
        "coughing up large amounts of blood",
        f"Heavy bleeding is an emergency. {CALL} Press firmly on the wound with a clean cloth "
        "and keep pressing; do not lift it to look.",
        ("Stop the Bleed (American College of Surgeons)", RED_CROSS),
    ),
    Entry(
        "gi_bleed",
        "emergency",
        "Vomiting blood or black tarry stool",
        "vomiting blood or what looks like coffee grounds, black sticky tarry stool especially "
        "with dizziness, weakness or fainting",
        f"Vomiting blood or black, tarry stools can mean bleeding inside the gut. {CALL} Lie "
        "down; do not eat or drink.",
        (NHS_999, "NHS: Vomiting blood"),
    ),
    Entry(
        "suicide_self_harm",
        "emergency",
        "Suicidal intent or self-harm",
        "wanting to die or end one's life, a plan or a date, stockpiled pills, saying goodbye, "
        "self-harm now, or someone else saying these things",
        "You don't have to face this alone. If you or someone else is in danger now, call 911 or "
        "your local emergency number. In the US call or text 988 (Suicide & Crisis Lifeline); "
        "elsewhere, call your local crisis line. Stay with the person if you can.",
        ("988 Suicide & Crisis Lifeline", "NHS: Help for suicidal thoughts"),
    ),
    Entry(
        "overdose_poisoning",
        "emergency",
        "Overdose or poisoning",
        "too many pills, someone else's overdose, swallowed bleach, a button battery or a "
        "detergent pod, drug or alcohol poisoning, a child who ate medicine",
        "This could be poisoning or an overdose. If the person is hard to wake, struggling to "
        "breathe or having a seizure, call 911 or your local emergency number now. Otherwise "
        "call Poison Control now (US 1-800-222-1222). Do not make them vomit.",
        ("America's Poison Centers", NHS_999),
    ),
    Entry(
        "carbon_monoxide",
        "emergency",
        "Carbon monoxide or smoke poisoning",
        "a carbon monoxide alarm going off, several people in one home with headache, dizziness "
        "or sickness, fumes from a heater, generator or car",
        f"Get everyone out into fresh air now and leave the door open. {CALL} Do not go back in.",
        ("CDC: Carbon monoxide poisoning", NHS_999),
    ),
    Entry(
        "seizure",
        "emergency",
        "Seizure",
        "a first seizure, a seizure lasting more than 5 minutes, one after another, or not waking "
        "up afterwards",
        f"{CALL} for a first seizure, one lasting over 5 minutes, repeated seizures, or if the "
        "person does not wake up. Lay them on their side, move hard objects away, put nothing "
        "in their mouth.",
        ("Epilepsy Foundation: Seizure first aid", NHS_999),
    ),
    Entry(
        "meningitis",
        "emergency",
        "Meningitis",
        "fever with a stiff neck, a rash that does not fade under a pressed glass, dislike of "
        "bright light, severe headache with vomiting, confusion",
        f"These can be signs of meningitis. {CALL} Do not wait for a rash.",
        ("NHS: Meningitis (the glass test)", "Meningitis Research Foundation: Signs and symptoms"),
    ),
    Entry(
        "sepsis",
        "emergency",
        "Sepsis",
        "an infection with confusion or slurred speech, mottled, blue or very pale skin, very fast "
        "breathing, no urine all day, feeling like one might die",
        f"These can be signs of sepsis. {CALL} and say you are worried about sepsis.",
        ("CDC: Sepsis", "UK Sepsis Trust: Spot the signs", "NICE NG51: Sepsis"),
    ),
    Entry(
        "head_injury",
        "emergency",
        "Serious head injury",
        "a knock to the head followed by vomiting, drowsiness, confusion, repeated questions, "
        "unequal pupils, clear fluid from the nose or ears, a seizure or being knocked out",
        f"After a head injury these signs need emergency care. {CALL} Keep the person still "
        "and do not leave them alone.",
        ("NICE CG176: Head injury", NHS_999),
    ),
    Entry(
        "spinal_injury",
        "emergency",
        "Spinal injury",
        "neck or back pain after a fall, dive or crash, with numbness, tingling or weakness in the "
        "arms or legs",
        f"Do not move the person unless they are in danger; keep their head and neck still. {CALL}",
        (RED_CROSS, RCUK),
    ),
    Entry(
        "cauda_equina",
        "emergency",
        "Cauda equina syndrome",
        "back pain with numbness between the legs or around the bottom, new trouble passing or "
        "holding urine or stool, weakness in both legs",
        f"Back pain with numbness around the bottom or bladder or bowel changes needs emergency "
        f"care today. {CALL} or go to an emergency department.",
        ("NHS: Cauda equina syndrome", "NICE CKS: Sciatica red flags"),
    ),
    Entry(
        "acute_abdomen",
        "emergency",
        "Acute abdomen or appendicitis",
        "sudden severe belly pain, pain moving to the lower right side and getting worse, a "
        "rigid or swelling belly, belly pain with vomiting and fever",
        f"Severe, sudden or worsening belly pain needs emergency care. {CALL} or go to an "
        "emergency department. Do not eat or drink.",
        ("NHS: Appendicitis", NHS_999),
    ),
    Entry(
        "testicular_torsion",
        "emergency",
        "Testicular torsion",
        "sudden severe pain or swelling in a testicle, often with sickness",
        "Sudden testicle pain can be torsion, which needs surgery within hours. Go to an "
        f"emergency department now or {CALL.lower()}",
        ("NHS: Testicular torsion", "Urology Care Foundation"),
    ),
    Entry(
        "vision_loss",
        "emergency",
        "Sudden loss of vision",
        "sudden loss of sight in one or both eyes, a curtain coming down over vision, sudden "
        "double vision",
        f"Sudden loss of vision is an emergency. {CALL} or go to an emergency department now.",
        ("American Academy of Ophthalmology", NHS_999),
    ),
    Entry(
        "eye_chemical",
        "emergency",
        "Chemical in the eye or eye injury",
        "bleach, oven cleaner, lime or another chemical in the eye; something stuck in the eye; "
        "a cut to the eye",
        "Rinse the eye with clean lukewarm water for at least 20 minutes now, holding it open. "
        f"{CALL} Do not rub the eye.",
        ("NHS: Eye injuries", "American Academy of Ophthalmology: Chemical eye burns"),
    ),
    Entry(
        "snake_bite",
        "emergency",
        "Snake bite",
        "bitten by a snake, especially a venomous one, with swelling, pain or feeling unwell",
        f"{CALL} Keep still and keep the bitten limb still and below the heart; remove rings. "
        "Do not cut, suck or put ice on the bite.",
        ("WHO: Snakebite envenoming", "CDC: Venomous snakes"),
    ),
    Entry(
        "serious_burn",
        "emergency",
        "Serious burn",
        "a burn larger than the person's hand, deep or charred, on the face, hands or genitals, "
        "a chemical or electrical burn, a burn to a child",
        "Cool the burn under cool running water for 20 minutes and remove jewellery. "
        f"{CALL} Cover it loosely with cling film; no ice or creams.",
        ("NHS: Burns and scalds", "British Burn Association"),
    ),
    Entry(
        "electric_shock",
        "emergency",
        "Electric shock",
        "a shock from mains power or a high-voltage line, lightning, burns or numbness after a shock",
        "Do not touch the person until the power is off. "
        f"{CALL} If they are not breathing normally, start CPR.",
        (RED_CROSS, RCUK),
    ),
    Entry(
        "drowning",
        "emergency",
        "Drowning",
        "someone pulled from water not breathing, coughing, confused or breathless after being "
        "underwater",
        f"{CALL} If the person is not breathing normally, start CPR with 5 rescue breaths. "
        "Anyone pulled from water who coughs or is breathless needs checking.",
        ("Royal Life Saving Society / RLSS UK", RCUK),
    ),
    Entry(
        "heat_stroke",
        "emergency",
        "Heat stroke",
        "hot, confused, not sweating or collapsing in the heat, a very high temperature after "
        "exercise or a hot day",
        f"This could be heat stroke. {CALL} Move them somewhere cool, cool them with water and "
        "fanning, and give sips of water if they are awake.",
        ("CDC: Heat-related illness", "NHS: Heat exhaustion and heatstroke"),
    ),
    Entry(
        "hypothermia",
        "emergency",
        "Hypothermia",
        "very cold, shivering hard or stopped shivering, confused, slurred speech or very drowsy "
        "after cold exposure",
        f"This could be hypothermia. {CALL} Move them somewhere warm, remove wet clothes, wrap "
        "them in blankets; warm them gradually, not with hot water.",
        ("CDC: Hypothermia", "NHS: Hypothermia"),
    ),
    Entry(
        "hypoglycaemia",
        "emergency",
        "Severe low blood sugar",
        "a person with diabetes who is shaky, sweaty, confused, acting drunk or hard to wake; a "
        "very low glucose reading",
        "If they can swallow, give sugar now: juice, regular soda or glucose tablets. "
        f"{CALL} If they are drowsy, cannot swallow or do not improve in 15 minutes.",
        ("American Diabetes Association: Hypoglycemia", "NHS: Low blood sugar"),
    ),
    Entry(
        "hyperglycaemia",
        "emergency",
        "Diabetic ketoacidosis or very high blood sugar",
        "very high glucose with vomiting, deep fast breathing, fruity breath, belly pain, extreme "
        "thirst or drowsiness; ketones",
        f"These can be signs of diabetic ketoacidosis. {CALL} or go to an emergency department "
        "now.",
        ("American Diabetes Association: DKA", "NHS: Diabetic ketoacidosis"),
    ),
    Entry(
        "child_dehydration",
        "emergency",
        "Dehydration in a child",
        "a child or baby with vomiting or diarrhoea who has no wet nappy or no pee for many hours, "
        "sunken eyes, no tears, very sleepy or floppy",
        f"A child this dry needs care now. {CALL} or go to an emergency department; give small "
        "sips of fluid meanwhile.",
        ("NHS: Dehydration in children", "American Academy of Pediatrics (healthychildren.org)"),
    ),
    Entry(
        "arrhythmia_fainting",
        "emergency",
        "Racing or irregular heart with fainting",
        "a racing, pounding or irregular heartbeat with fainting, near-fainting, chest pain or "
        "breathlessness; a very slow pulse with dizziness",
        f"A racing or irregular heartbeat with fainting or chest pain needs help now. {CALL} "
        "Sit or lie down.",
        ("American Heart Association: Arrhythmia", NHS_999),
    ),
    Entry(
        "major_trauma",
        "emergency",
        "Major injury",
        "a car crash, a fall from a height, a stab or gunshot wound, a bone through the skin, a "
        "crushed or badly deformed limb",
        f"{CALL} Keep the person still and warm, press on any bleeding, and do not move them "
        "unless they are in danger.",
        (RED_CROSS, NHS_999),
    ),
    Entry(
        "pregnancy",
        "emergency",
        "Bleeding or severe pain in pregnancy",
        "bleeding, severe belly pain or a fall while pregnant; one-sided pain in early pregnancy "
        "(ectopic); heavy bleeding after giving birth",
        f"These can be signs of a pregnancy emergency. {CALL} or your maternity unit.",
        ("NHS: Vaginal bleeding in pregnancy", "ACOG: Urgent maternal warning signs"),
    ),
    Entry(
        "reduced_fetal_movement",
        "emergency",
        "Reduced fetal movement",
        "the baby in the womb moving less, not moving, or a change in the pattern of kicks",
        "Call your maternity unit or labour ward now; do not wait until tomorrow. If you cannot "
        "reach them, call 911 or your local emergency number.",
        ("Tommy's / NHS: Baby's movements", "RCOG: Reduced fetal movements"),
    ),
    Entry(
        "preeclampsia",
        "emergency",
        "Pre-eclampsia signs",
        "pregnant or just gave birth with a severe headache, vision problems such as flashing "
        "lights, pain under the ribs, sudden swelling of the face, hands or feet",
        f"These can be signs of pre-eclampsia. {CALL} or your maternity unit.",
        ("NHS: Pre-eclampsia", "Preeclampsia Foundation", "ACOG: Urgent maternal warning signs"),
    ),
    Entry(
        "preterm_labour",
        "emergency",
        "Waters breaking or labour before 37 weeks",
        "waters breaking, regular contractions or pressure before 37 weeks of pregnancy",
        f"Labour signs before 37 weeks need care now. {CALL} or your maternity unit.",
        ("NHS: Premature labour", "ACOG: Preterm labor"),
    ),
    Entry(
        "infant",
        "emergency",
        "A seriously ill baby",
        "a baby who is floppy, hard to wake, blue, grunting or breathing with pauses, has a bulging "
        "soft spot, will not feed; any fever in a baby under 3 months",
        f"A baby with these signs needs emergency care. {CALL} If the baby is not breathing, "
        "start infant CPR if you know how.",
        ("NHS: Signs that a baby is seriously ill", "NICE NG143: Fever in under 5s"),
    ),
    # ------------------------------------------------------------------ urgent (same day)
    Entry(
        "fever_child",
        "urgent",
        "Fever in a baby or child",
        "fever of 39 C (102 F) or more in a baby 3-6 months old, fever lasting over 5 days, a "
        "feverish child who is not drinking",
        "A child with this fever should be seen by a doctor today: call your doctor or a nurse "
        "line now. Call 911 if they are floppy, hard to wake, breathing fast or have a rash that "
        "does not fade.",
        ("NICE NG143: Fever in under 5s", "NHS: Fever in children"),
    ),
    Entry(
        "suspected_fracture",
        "urgent",
        "Suspected broken bone",
        "a limb that is swollen, bruised and too painful to use or walk on after a fall or knock",
        "This may be a broken bone: get it checked today at urgent care or an emergency "
        "department. Keep it still and raised, with ice wrapped in a cloth.",
        ("NHS: Broken bones", RED_CROSS),
    ),
    Entry(
        "kidney_infection",
        "urgent",
        "Kidney infection",
        "burning or frequent urination with pain in the side or back, fever, shivering or vomiting",
        "This could be a kidney infection: see a doctor today. Call 911 if you feel confused, "
        "very drowsy or faint.",
        ("NHS: Kidney infection", "NIDDK: Kidney infection (pyelonephritis)"),
    ),
    Entry(
        "wound_care",
        "urgent",
        "A cut that needs stitches, or an animal or human bite",
        "a gaping cut, a cut with dirt in it, a dog, cat or human bite that broke the skin, a "
        "puncture from a rusty object",
        "Clean the wound, press on it to stop bleeding and cover it; get it seen today for "
        "stitches, antibiotics or a tetanus shot.",
        ("NHS: Cuts and grazes", "NHS: Animal and human bites"),
    ),
    Entry(
        "eye_problem",
        "urgent",
        "A painful red eye or changed vision",
        "a painful red eye, sensitivity to light, something in the eye that will not rinse out, "
        "new floaters or flashes",
        "Get your eye checked today by an eye clinic, urgent care or an emergency department. "
        "Sudden loss of vision is an emergency: call 911.",
        ("NHS: Red eye", "American Academy of Ophthalmology"),
    ),
    Entry(
        "vomiting_dehydration",
        "urgent",
        "Cannot keep fluids down",
        "vomiting or diarrhoea for over a day in an adult, unable to keep water down, dizzy when "
        "standing, very little urine",
        "Sip fluids often; if you cannot keep any down, see a doctor or urgent care today.",
        ("NHS: Dehydration", NHS_111),
    ),
    Entry(
        "asthma_worsening",
        "urgent",
        "Worsening asthma",
        "needing the reliever inhaler more than usual, waking at night with asthma, but still "
        "able to talk",
        "Your asthma needs a review today: call your doctor or nurse. If the reliever stops "
        "helping or you are too breathless to talk, call 911.",
        ("Asthma + Lung UK", NHS_111),
    ),
    Entry(
        "spreading_infection",
        "urgent",
        "A spreading skin infection",
        "skin that is red, hot, swollen and spreading, red streaks from a wound, with or without "
        "a fever",
        "A spreading skin infection needs a doctor today; mark the edge of the redness with a pen.",
        ("NHS: Cellulitis", NHS_111),
    ),
    Entry(
        "pregnancy_urgent",
        "urgent",
        "Pregnancy problems that need a same-day check",
        "vomiting all day and unable to keep fluids down in pregnancy, itching of the hands and "
        "feet in late pregnancy, a fever while pregnant, leaking fluid at term",
        "Call your midwife, maternity unit or doctor today.",
        ("NHS: Severe vomiting in pregnancy", "NHS: Itching and intrahepatic cholestasis"),
    ),
    Entry(
        "dental_swelling",
        "urgent",
        "Tooth abscess with swelling",
        "toothache with a swollen face, jaw or gum, a bad taste or fever",
        "See a dentist or doctor today. Go to an emergency department if the swelling reaches "
        "the eye or neck, or makes it hard to swallow or breathe.",
        ("NHS: Dental abscess", NHS_111),
    ),
    Entry(
        "mental_health_urgent",
        "urgent",
        "A mental health crisis without immediate danger",
        "not sleeping for days, hearing voices, feeling out of control or unable to cope, "
        "thoughts of self-harm without a plan or intent",
        "Please talk to someone today: call your doctor, a local crisis team, or in the US call "
        "or text 988. If you feel you may act on thoughts of harming yourself, call 911.",
        ("988 Suicide & Crisis Lifeline", "NHS: Get help for mental health crisis"),
    ),
)

BY_ID = {e.id: e for e in TAXONOMY}
EMERGENCY_IDS = tuple(e.id for e in TAXONOMY if e.level == "emergency")
URGENT_IDS = tuple(e.id for e in TAXONOMY if e.level == "urgent")
LEVELS = ("emergency", "urgent", "none")


def level_of(category: str | None) -> str:
    """The level a category belongs to: emergency, urgent, or none (medication notes, null)."""
    entry = BY_ID.get(category or "")
    return entry.level if entry else "none"
