"""`medchat eval --mode generate,rag,retrieve`: modes side by side, leak guard, recall, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medchat.cli import main
from medchat.errors import MedchatError
from medchat.eval import cache as pcache
from medchat.eval import evaluate as ev
from tests.conftest import requires
from tests.ground.test_retrieval import mini_data, shared_index

pytestmark = requires("rouge_score", "sacrebleu", "bm25s", "sentence_transformers", "nltk")

NEW_TOKENS = 6


@pytest.fixture(scope="module")
def data(medquad_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mini_data(tmp_path_factory.getbasetemp(), medquad_prepared)


@pytest.fixture(scope="module")
def train_index(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The answering index: the train split only, as `medchat index build` makes by default."""
    out = tmp_path_factory.getbasetemp() / "kb_index_train"
    if not (out / "manifest.json").is_file():
        assert main(["index", "build", "--data", str(data), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def all_index(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_index(tmp_path_factory.getbasetemp(), data)


def argv(data: Path, run: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "eval", "--data", str(data), "--out", str(out), "--cache-dir", str(cache),
        "--model", f"full={run}", "--max-new-tokens", str(NEW_TOKENS), "--batch-size", "8",
        "--limit", "16", "--no-semantic", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def modes_eval(data, train_index, all_index, tiny_runs, tmp_path_factory) -> dict:
    """One eval of the full run in generate and rag mode plus retrieve; model inputs recorded."""
    root = tmp_path_factory.mktemp("modes")
    seen: dict[str, list[str]] = {}
    real = ev.answer_with_progress

    def spy(lm, questions, settings, label, enabled):
        seen[label.split(" ")[0]] = list(questions)
        return real(lm, questions, settings, label, enabled)

    # Test topics are absent from a train index (splits keep a focus group together), so the gate
    # would decline most questions: it is turned off here to test the modes' mechanics.
    extra = ("--mode", "generate,rag,retrieve,extract", "--index", str(train_index), "--k", "2")
    extra += ("--recall-index", str(all_index), "--min-relevance", "0")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "answer_with_progress", spy)
        assert main(argv(data, tiny_runs["full"], root / "eval", root / "cache", *extra)) == 0
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    preds = [json.loads(x) for x in (root / "eval" / "predictions.jsonl").read_text().splitlines()]
    return {"root": root, "metrics": metrics, "preds": preds, "seen": seen, "extra": extra}


def test_each_mode_is_a_system_scored_on_the_same_examples(modes_eval) -> None:
    m = modes_eval["metrics"]
    assert m["modes"] == ["generate", "rag", "retrieve", "extract"]
    assert m["model_order"] == ["full", "full+rag"]
    assert set(m["floors"]) == {"echo", "retrieve", "extract"}
    assert m["models"]["full"]["answer_mode"] == "generate"
    assert m["models"]["full+rag"]["answer_mode"] == "rag"
    # rag vs generate is a paired comparison on the same examples.
    # rag vs generate, and extract vs retrieve, are paired comparisons on the same examples.
    pairs = [(c["a"], c["b"]) for c in m["comparisons"]]
    assert pairs == [("full+rag", "full"), ("extract", "retrieve")]
    assert m["retrieval"]["answer_rate"] == 1.0 and m["retrieval"]["min_relevance"] == 0
    for row in modes_eval["preds"]:
        assert set(row["answers"]) == {"full", "full+rag"}
        assert "retrieve" in row["floors"]


def test_rag_inputs_hold_train_passages_and_end_with_the_question(
    modes_eval, data, train_index
) -> None:
    from medchat.data import load_split
    from medchat.fileio import read_jsonl

    plain, rag = modes_eval["seen"]["full"], modes_eval["seen"]["full+rag"]
    questions = [r["question"] for r in modes_eval["preds"]]
    assert sorted(plain) == sorted(questions)
    assert len(rag) == len(plain)
    titles = {r["focus"] for r in read_jsonl(train_index / "rows.jsonl")}
    test_focus = {r["focus"] for r in load_split(data, "test")}
    for q, prompt in zip(plain, rag, strict=True):
        assert prompt != q and prompt.rstrip().endswith(q.strip())
        # Passages are "{title}: {words}"; every title is a train row's focus, none a test one's.
        used = [t for t in titles if f"{t}:" in prompt]
        assert used and not any(f"{t}:" in prompt for t in test_focus - titles)


def test_index_build_calibrates_the_gate_on_validation(train_index) -> None:
    manifest = json.loads((train_index / "manifest.json").read_text())
    gate = manifest["gate"]
    cal = gate["calibration"]
    assert cal["questions"] > 0 and cal["in_domain_kept"] >= cal["target_keep"]
    assert 0.05 <= gate["min_relevance"] <= 1.0 and gate["dense_floor"] == 0.3
    from medchat.ground.index import load_index

    assert load_index(train_index).min_relevance == gate["min_relevance"]


def test_gated_eval_answers_absent_topics_without_a_source(modes_eval, data, tiny_runs) -> None:
    """With the index's gate on, test questions (topics absent from the train index) mostly get no
    passage: rag's model input is then the plain question, retrieve and extract decline."""
    from medchat.ground.answering import NO_MATCH

    root = modes_eval["root"]
    extra = [x for x in modes_eval["extra"] if x not in ("--min-relevance", "0")]
    seen: dict[str, list[str]] = {}
    real = ev.answer_with_progress

    def spy(lm, questions, settings, label, enabled):
        seen[label.split(" ")[0]] = list(questions)
        return real(lm, questions, settings, label, enabled)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "answer_with_progress", spy)
        out = root / "gated"
        assert main(argv(data, tiny_runs["full"], out, root / "cache", *extra)) == 0
    m = json.loads((out / "metrics.json").read_text())
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    rate = m["retrieval"]["answer_rate"]
    assert rate < 0.5 and m["retrieval"]["min_relevance"] == m["retrieval"]["gate"]["min_relevance"]
    declined = [p["floors"]["retrieve"] == NO_MATCH for p in preds]
    assert declined == [p["floors"]["extract"] == NO_MATCH for p in preds]
    assert 1 - sum(declined) / len(declined) == pytest.approx(rate)
    # The gate is part of rag's cache key, so rag answered afresh: its ungrounded inputs are the
    # bare questions, the rest RAG prompts.
    questions = {p["question"] for p in preds}
    assert sum(x in questions for x in seen["full+rag"]) == sum(declined)
    assert "full" not in seen  # generate answers came from the cache: the gate does not touch them


def test_leave_row_out_answers_from_the_topics_other_rows(data, all_index, tiny_runs, tmp_path):
    """In domain: an index holding the evaluated documents is accepted with --leave-row-out, and
    no question's own row (its reference) is ever quoted or extracted from."""
    out = tmp_path / "lro"
    extra = ("--mode", "generate,retrieve,extract", "--index", str(all_index), "--leave-row-out")
    assert main(argv(data, tiny_runs["full"], out, tmp_path / "cache", *extra)) == 0
    m = json.loads((out / "metrics.json").read_text())
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert m["retrieval"]["leave_row_out"] is True and m["retrieval"]["answer_rate"] > 0.5
    # Without --leave-row-out the own row is retrieved and quoted for most questions (known item);
    # with it, never.
    assert all(p["floors"]["retrieve"] != p["reference"] for p in preds)
    assert all(p["floors"]["extract"] != p["reference"] for p in preds)
    from medchat.report.report import report

    md = (report(out, tmp_path / "report") / "report.md").read_text()
    assert "it holds the evaluated documents, and each question's own row was hidden" in md


def test_retrieve_quotes_train_answers_verbatim(modes_eval, train_index) -> None:
    from medchat.fileio import read_jsonl
    from medchat.ground.answering import NO_MATCH

    kb = {r["answer"] for r in read_jsonl(train_index / "rows.jsonl")}
    quotes = [row["floors"]["retrieve"] for row in modes_eval["preds"]]
    assert all(q in kb or q == NO_MATCH for q in quotes)
    matched = sum(q in kb for q in quotes) / len(quotes)
    assert matched == pytest.approx(modes_eval["metrics"]["retrieval"]["answer_rate"])
    # A quoted answer of another document still overlaps its reference more than echo does.
    floors = modes_eval["metrics"]["floors"]
    assert floors["retrieve"]["rougeL"]["value"] > floors["echo"]["rougeL"]["value"]


def test_recall_of_gold_documents_is_recorded(modes_eval) -> None:
    r = modes_eval["metrics"]["retrieval"]
    assert r["k"] == 2 and r["method"] == "hybrid" and r["index_splits"] == ["train"]
    known, hidden = r["recall"]["known_item"], r["recall"]["leave_row_out"]
    assert known["n"] == 16 and known["recall@5"] >= known["recall@1"] > 0.5
    assert hidden["n"] <= known["n"]


def test_rag_answers_are_cached_under_their_own_key(modes_eval, data, tiny_runs) -> None:
    m, root = modes_eval["metrics"], modes_eval["root"]
    keys = {n: m["models"][n]["cache_key"] for n in m["model_order"]}
    assert keys["full"] != keys["full+rag"]
    out = root / "again"
    called = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "answer_with_progress", lambda *a: called.append(a) or [])
        assert main(argv(data, tiny_runs["full"], out, root / "cache", *modes_eval["extra"])) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert not called and all(again["models"][n]["cached"] for n in keys)
    assert {n: again["models"][n]["cache_key"] for n in keys} == keys


def test_report_shows_modes_recall_and_safety(modes_eval) -> None:
    from medchat.report.report import report

    out = report(modes_eval["root"] / "eval", modes_eval["root"] / "report")
    md = (out / "report.md").read_text()
    assert "## Answer modes and retrieval" in md
    assert "full+rag" in md and "retrieve (floor)" in md
    recall = modes_eval["metrics"]["retrieval"]["recall"]["known_item"]
    assert f"| known-item | 16 | {recall['recall@1']:.3f} |" in md
    # the modes side by side: answer rate, length and metrics per system, then paired differences
    assert "### Answer modes side by side" in md
    m = modes_eval["metrics"]
    words = m["floors"]["extract"]["answer_words"]
    assert f"| extract | extract | 100.0% | {words['value']:.1f} [" in md
    assert "| full | generate | - |" in md and "| full+rag | rag | 100.0% |" in md
    diff = next(c for c in m["comparisons"] if c["a"] == "extract")["metrics"]["answer_words"]
    assert f"extract - retrieve: Answer length (words) {diff['diff']:+.1f} [" in md
    assert "## Safety layer" in md
    blind = modes_eval["metrics"]["safety"]["sets"]["heldout_b"]
    lo, hi = blind["recall"]["ci95"]
    assert f"| blind held-out B | {blind['n']} |" in md
    pooled = modes_eval["metrics"]["safety"]["sets"]["blind pooled"]
    sets = modes_eval["metrics"]["safety"]["sets"]
    assert pooled["tp"] == sum(sets[f"heldout_{c}"]["tp"] for c in "bcdefghij")
    fresh = sets["fresh pooled"]
    assert fresh["positives"] == sum(sets[f"heldout_{c}"]["positives"] for c in "fghij")
    assert md.index("fresh blind F-J, pooled") < md.index("blind held-out B-J, pooled")
    assert md.index("blind held-out B-J, pooled") < md.index("| original set, all |")
    assert f"{blind['recall']['value']:.3f} [{lo:.3f}, {hi:.3f}]" in md
    # what the screen recorded when trained: the corpus CV row and leave-one-category-out
    trained = modes_eval["metrics"]["safety"]["trained"]
    cv = trained["corpus_cv"]
    assert f"| training corpus, 5-fold CV | {cv['positives'] + cv['negatives']} |" in md
    loco = trained["leave_one_category_out"]
    assert f"mean recall {loco['mean_recall']:.3f}, lowest suicide_self_harm" in md


def refused(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the CLI, expect exit 2, return what it said on stderr."""
    assert main(args) == 2
    return capsys.readouterr().err


def test_an_index_holding_the_evaluated_documents_is_refused(
    data, all_index, tiny_runs, tmp_path, capsys
) -> None:
    extra = ("--mode", "generate,rag", "--index", str(all_index))
    err = refused(argv(data, tiny_runs["full"], tmp_path / "e", tmp_path / "c", *extra), capsys)
    assert "holds the documents of 16 of the 16 test examples" in err
    assert "--splits train" in err
    assert not (tmp_path / "e").exists()


def test_recall_index_must_hold_every_evaluated_document(
    data, train_index, tiny_runs, tmp_path, capsys
) -> None:
    extra = ("--mode", "generate,retrieve", "--index", str(train_index))
    extra += ("--recall-index", str(train_index))
    err = refused(argv(data, tiny_runs["full"], tmp_path / "e", tmp_path / "c", *extra), capsys)
    assert "lacks the documents of 16 of the 16" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--mode", "rag"), "needs --index"),
        (("--mode", "retrieve"), "compares no model"),
        (("--mode", "generate,recall"), "use generate, rag, retrieve and/or extract"),
        (("--index", "somewhere"), "only used by --mode rag, retrieve and extract"),
        (("--mode", "rag", "--index", "no/such/dir"), "no such index folder"),
    ],
)
def test_mode_requests_are_checked_before_any_work(data, tmp_path, capsys, extra, message) -> None:
    # A hub id that cannot load: the error must come before any model is touched.
    args = argv(data, Path("no-such-org/no-such-model"), tmp_path / "e", tmp_path / "c", *extra)
    assert message in refused(args, capsys)
    with pytest.raises(MedchatError, match=message.split(" ")[0]):
        ev.evaluate(
            data,
            [ev.ModelSpec("m", "no-such-org/no-such-model")],
            tmp_path / "e",
            modes=extra[1] if extra[0] == "--mode" else "generate",
            index=extra[extra.index("--index") + 1] if "--index" in extra else None,
        )


def test_generate_cache_keys_do_not_change_with_modes() -> None:
    from medchat.infer.generate import GenerationSettings

    model = {"fingerprint": "f", "prompt_template": "{question}"}
    plain, _ = pcache.cache_key(model, "d", GenerationSettings(), "cpu")
    tagged, _ = pcache.cache_key(
        {**model, "answer_mode": "generate"}, "d", GenerationSettings(), "cpu"
    )
    rag = {**model, "answer_mode": "rag", "retrieval": {"index_sha256": "x", "k": 3}}
    other = {**rag, "retrieval": {"index_sha256": "y", "k": 3}}
    keys = [pcache.cache_key(m, "d", GenerationSettings(), "cpu")[0] for m in (rag, other)]
    assert plain == tagged and len({plain, *keys}) == 3


# ----------------------------------------------------------------------------- RAG training


def test_training_on_rag_examples_keeps_each_rows_own_document_out(
    data, train_index, all_index, tmp_path
) -> None:
    from medchat.config import load_config
    from medchat.data import load_split
    from medchat.train import train as train_module
    from tests.conftest import train_micro

    seen: list[list[dict]] = []
    real = train_module.TokenizedPairs

    class Spy(real):
        def __init__(self, rows, tokenizer, cfg) -> None:
            seen.append(list(rows))
            super().__init__(rows, tokenizer, cfg)

    rag = (f"data.rag_index={train_index}", "data.rag_k=2", "data.max_source_length=384")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "TokenizedPairs", Spy)
        run = train_micro(data, tmp_path / "rag", "full", *rag, "train.max_steps=2")
    info = json.loads((run / "run_info.json").read_text())
    assert info["rag"]["k"] == 2 and info["rag"]["index_splits"] == ["train"]
    train_rows, val_rows = seen
    originals = {r["id"]: r for r in load_split(data, "train")}
    for r in train_rows:
        assert r["question"].rstrip().endswith(r["original_question"].strip())
        assert r["question"] != r["original_question"] and len(r["context_doc_ids"]) == 2
        assert originals[r["id"]]["doc_id"] not in r["context_doc_ids"]
        assert r["id"] not in r["context_row_ids"]
    assert all("original_question" in r for r in val_rows)
    # the run answers in rag mode through eval like any other
    out = tmp_path / "eval"
    extra = ("--mode", "rag", "--index", str(train_index), "--k", "2")
    assert main(argv(data, run, out, tmp_path / "cache", *extra)) == 0
    assert json.loads((out / "metrics.json").read_text())["model_order"] == ["full+rag"]

    with pytest.raises(MedchatError, match="max_source_length: 128 would cut the RAG context"):
        load_config(None, [f"data.rag_index={train_index}", "data.max_source_length=128"])
    with pytest.raises(MedchatError, match="indexes the test split"):
        train_micro(data, tmp_path / "leak", "full", f"data.rag_index={all_index}", *rag[1:])
