"""`medchat chat`: a terminal chat that streams answers, with safety messages and the disclaimer.

It reads stdin line by line, so it works interactively (with readline editing and up-arrow
recall on a terminal) and when questions are piped in. The conversation is kept for `/history`,
but each question is answered on its own: the model was fine-tuned on single questions, and
earlier turns in the prompt would only push it off the distribution it learned.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from medchat.ground import safety
from medchat.infer.generate import GenerationSettings
from medchat.prompts import format_prompt

if TYPE_CHECKING:
    from medchat.ground.retrieval import RetrievalIndex
    from medchat.infer.backends import Backend

HELP = """commands:
  /help     show this help
  /reset    forget the conversation so far
  /history  show the conversation so far
  /quit     leave (Ctrl-D works too)
Anything else is a question. Emergencies get what-to-do-now advice before the answer."""


def read_lines(stdin: TextIO, prompt: str) -> Iterator[str]:
    """Lines from stdin; on a terminal through input(), so readline gives editing and recall."""
    if stdin is sys.stdin and stdin.isatty():
        with contextlib.suppress(ImportError):  # no readline on Windows: plain input()
            import readline  # noqa: F401  (importing it turns on line editing for input())
        while True:
            try:
                yield input(prompt)
            except EOFError:
                return
    else:
        yield from stdin


def answer_streamed(
    backend: Backend,
    question: str,
    settings: GenerationSettings,
    out: TextIO,
    index: RetrievalIndex | None = None,
    k: int = 3,
) -> tuple[str, safety.SafetyVerdict]:
    """Print the safety message (if any), then the answer as it is generated; with an `index`
    (rag), the model is given the top-k passages that pass the relevance gate and the sources follow
    the answer; when none passes, it answers alone and says it has no source."""
    verdict = safety.check(question)
    prompt, citations = format_prompt(question, backend.prompt_template), []
    note = ""
    if index is not None:
        from medchat.ground.answering import ground, source_note

        grounded = ground(question, "rag", backend, index, k)
        prompt, citations = grounded.model_input(backend), grounded.citations
        note = source_note("rag", grounded.grounded)
    if verdict.message:
        label = safety.level_label(verdict)
        out.write(f"\n!! {label + ': ' if label else ''}{verdict.message}\n")
        for note in verdict.notes:
            if note != verdict.message:
                out.write(f"!! {note}\n")
        out.write("\n")
    if note:  # after any emergency message, before the answer
        out.write(f"({note})\n")
    out.write("medchat: ")
    out.flush()

    def show(text: str) -> None:
        out.write(text)
        out.flush()

    gen = backend.stream(prompt, settings, show)
    out.write("\n")
    if citations:
        from medchat.ground.answering import sources_text

        out.write(sources_text(citations) + "\n")
    if verdict.level != "none" or not verdict.judged:
        out.write(f"({safety.DISCLAIMER})\n")
    out.flush()
    return gen.text, verdict


def run_chat(
    backend: Backend,
    settings: GenerationSettings,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    index: RetrievalIndex | None = None,
    k: int = 3,
) -> list[tuple[str, str]]:
    """Chat until /quit or end of input; returns the conversation (question, answer) pairs.
    With `index` every answer is grounded in the top-k passages and cites them (rag)."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    interactive = stdin is sys.stdin and stdin.isatty()
    grounding = f", rag over {len(index)} knowledge-base rows" if index is not None else ""
    out.write(f"medchat chat: {backend.name} ({backend.kind}{grounding}). /help for commands.\n")
    out.write(f"{safety.DISCLAIMER}\n\n")
    history: list[tuple[str, str]] = []
    for line in read_lines(stdin, "you> " if interactive else ""):
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command = text.split()[0].lower()
            if command in ("/quit", "/exit"):
                break
            if command == "/reset":
                history.clear()
                out.write("(conversation cleared)\n")
            elif command == "/history":
                for i, (q, a) in enumerate(history, 1):
                    out.write(f"{i}. you: {q}\n   medchat: {a}\n")
                if not history:
                    out.write("(no questions yet)\n")
            elif command == "/help":
                out.write(HELP + "\n")
            else:
                out.write(f"unknown command {command}; /help lists them\n")
            continue
        if not interactive:  # echo piped questions so the transcript reads as a conversation
            out.write(f"you> {text}\n")
        answer, _ = answer_streamed(backend, text, settings, out, index, k)
        history.append((text, answer))
    out.write("bye\n")
    out.flush()
    return history
