"""`medchat ui`: a local web page where the original and fine-tuned models answer side by side.

One question box; a column per model with its answer streamed token by token, the time taken and
tokens/s; one generation-settings panel applied to every column; the reference answer with each
column's ROUGE-L and semantic similarity when the question is in the test split; the medical
disclaimer always on screen and an urgent-care message above the answers when a question
describes an emergency.

Safe by default: binds 127.0.0.1, no public link unless asked, a request queue with a concurrency
limit, a question length limit, errors shown as one friendly line (the traceback goes to the log),
and no outside connection (analytics, telemetry and the hub are off; fonts are the system's).

Streaming every column at once needs ONE event: two listeners on one button stream one after the
other in the browser. So `stream_columns` advances all models concurrently (a thread per column
feeding a queue) and yields every column together.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medchat.errors import MedchatError
from medchat.ground import safety
from medchat.infer.generate import GenerationSettings


def _offline_env() -> None:
    """Keep gradio and huggingface_hub from phoning home; must run before gradio is imported."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    # setdefault: someone who sets HF_HUB_OFFLINE=0 on purpose may fetch hub models at start.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


_offline_env()

log = logging.getLogger(__name__)

# A medical question fits in far less; the limit keeps one request from tying up the models.
MAX_CHARS = 1000
# Requests answered at once. Each already runs a thread per column; on a CPU more at once only
# slows everyone, and adapters on one base answer one at a time anyway (their lock).
CONCURRENCY = 2
# Requests waiting beyond that get "queue full" instead of waiting for minutes.
MAX_QUEUE = 16
# At most this many page updates per second per request: sending every token of every column
# separately would flood the browser for no visible gain.
TICK_S = 0.05
N_EXAMPLES = 8

TITLE = "medchat · compare answers"


# ----------------------------------------------------------------------------- streaming


@dataclass
class ColumnState:
    """One column's answer while it streams, and its scores once it is done."""

    name: str
    text: str = ""
    tokens: int = 0
    seconds: float = 0.0
    status: str = "waiting"  # idle | waiting | streaming | done | error
    error: str | None = None
    rouge_l: float | None = None
    semantic: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def friendly_error(exc: BaseException) -> str:
    """One line a user can act on; never a traceback."""
    if isinstance(exc, MedchatError):
        return str(exc)
    if "out of memory" in str(exc).lower():
        return "ran out of memory; try fewer new tokens or fewer beams."
    # args[0], not str(): KeyError's str() is a repr, with newlines escaped into one long line
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    first = (text.strip().splitlines() or [""])[0][:200]
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return f"could not answer ({detail}). The details are in the server log."


def _apply(state: ColumnState, event: Any) -> None:
    if event is None:  # the column's worker ended
        if state.status not in ("done", "error"):
            state.status = "done"
    elif isinstance(event, BaseException):
        state.status, state.error = "error", friendly_error(event)
    else:
        state.text, state.tokens, state.seconds = event.text, event.tokens, event.seconds
        state.status = "done" if event.done else "streaming"


def stream_columns(
    group: Any,
    question: str,
    settings: GenerationSettings,
    names: Sequence[str] | None = None,
    tick_s: float = TICK_S,
    questions: Mapping[str, str] | None = None,
) -> Iterator[list[ColumnState]]:
    """Answer with every column at once; yield all columns' states together as they grow.

    `group` is a `ModelGroup` (anything with `.names` and `.stream(name, question, settings,
    should_stop)`).
    `questions` gives a column its own model question (rag: the question with its passages,
    shaped for that column's tokenizer). A column that fails shows a friendly error; the others
    carry on.
    """
    names = list(names or group.names)
    states = [ColumnState(n) for n in names]
    events: queue.Queue[tuple[int, Any]] = queue.Queue()
    stop = threading.Event()

    def work(i: int, name: str) -> None:
        try:
            # stop.is_set reaches the decoder itself: a column stops at its next step even
            # while its streamer holds back text (no space yet), not only at its next piece
            answer = group.stream(
                name, (questions or {}).get(name, question), settings, should_stop=stop.is_set
            )
            try:
                for stats in answer:
                    events.put((i, dataclasses.replace(stats)))
                    if stop.is_set():  # nobody is watching any more
                        break
            finally:
                answer.close()
        except Exception as e:
            log.exception("column %s failed", name)
            events.put((i, e))
        finally:
            events.put((i, None))

    for i, name in enumerate(names):
        threading.Thread(target=work, args=(i, name), daemon=True, name=f"ui-{name}").start()
    pending = len(names)
    try:
        yield [dataclasses.replace(s) for s in states]
        while pending:
            batch = [events.get()]
            deadline = time.monotonic() + tick_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(events.get(timeout=left))
                except queue.Empty:
                    break
            for i, event in batch:
                _apply(states[i], event)
                pending -= event is None
            yield [dataclasses.replace(s) for s in states]
    finally:
        stop.set()


# ----------------------------------------------------------------------------- pure helpers


def check_question(text: str | None, max_chars: int = MAX_CHARS) -> str | None:
    """Why a question cannot be asked, or None when it can."""
    text = text or ""
    if not text.strip():
        return "Type a question first."
    if len(text) > max_chars:
        return (
            f"Your question is {len(text):,} characters long; the limit is {max_chars:,}. "
            "Please shorten it."
        )
    return None


def settings_from_ui(
    max_new_tokens: float,
    num_beams: float,
    do_sample: bool,
    temperature: float,
    top_p: float,
    no_repeat_ngram_size: float,
) -> GenerationSettings:
    """The settings panel's values as one `GenerationSettings` (MedchatError when invalid)."""
    return GenerationSettings(
        max_new_tokens=int(max_new_tokens),
        num_beams=int(num_beams),
        do_sample=bool(do_sample),
        temperature=float(temperature),
        top_p=float(top_p),
        no_repeat_ngram_size=int(no_repeat_ngram_size),
    )


def _norm(question: str) -> str:
    return " ".join(question.split()).casefold()


def pick_examples(rows: Sequence[dict[str, Any]], n: int = N_EXAMPLES, seed: int = 0) -> list[str]:
    """A seeded sample of short test-split questions (short ones read well as buttons)."""
    short = [r["question"] for r in rows if len(r["question"]) <= 90]
    pool = short if len(short) >= n else [r["question"] for r in rows]
    return random.Random(seed).sample(pool, min(n, len(pool)))


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def memory_html(group: Any) -> str:
    from medchat.infer.model_group import memory_in_use

    mem = memory_in_use()
    parts = [f"process RSS {_mib(mem['rss_bytes'])}"]
    if mem["cuda_allocated_bytes"] is not None:
        parts.append(f"CUDA allocated {_mib(mem['cuda_allocated_bytes'])}")
    n_cols, n_sets = len(group.columns), len(group.weight_sets)
    parts.append(f"{n_cols} models on {n_sets} loaded weight set{'s' * (n_sets != 1)}")
    return f'<div class="mc-memory">Memory in use: {" · ".join(parts)}</div>'


def alert_html(verdict: safety.SafetyVerdict) -> str:
    """The safety banner: emergency (call now), urgent (be seen today), not checked (not
    English), or the medication note; '' when there is nothing to say."""
    if not verdict.message:
        return ""
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in verdict.notes if n != verdict.message)
    body = f"<p>{html.escape(verdict.message)}</p>{notes}"
    if verdict.red_flag:
        return (
            '<div class="mc-alert mc-urgent" role="alert" data-level="emergency">'
            f'<div class="mc-alert-title">Emergency: this may need help now</div>{body}</div>'
        )
    if verdict.level == "urgent":
        return (
            '<div class="mc-alert mc-sameday" role="alert" data-level="urgent">'
            f'<div class="mc-alert-title">Urgent: get care today</div>{body}</div>'
        )
    if not verdict.judged:
        return (
            '<div class="mc-alert mc-sameday" role="note" data-level="not-checked">'
            f'<div class="mc-alert-title">Not checked</div>{body}</div>'
        )
    return f'<div class="mc-alert mc-note" role="note" data-level="none">{body}</div>'


def notice_html(message: str) -> str:
    return f'<div class="mc-notice" role="status">{html.escape(message)}</div>'


def reference_html(row: dict[str, Any], max_chars: int = 900) -> str:
    """The reference answer for a test-split question, with its source link."""
    answer = row["answer"].strip()
    if len(answer) > max_chars:
        answer = answer[:max_chars].rsplit(" ", 1)[0] + " …"
    source = html.escape(row.get("source") or "the dataset")
    url = row.get("url") or ""
    link = (
        f' · <a href="{html.escape(url)}" target="_blank" rel="noopener noreferrer">'
        f"{html.escape(url)}</a>"
        if url.startswith(("http://", "https://"))
        else ""
    )
    return (
        '<div class="mc-ref"><div class="mc-ref-head">Reference answer '
        f'<span class="mc-sub">test split · {source}{link}</span></div>'
        f'<div class="mc-ref-body">{html.escape(answer)}</div></div>'
    )


def _source_link(i: int, citation: Any) -> str:
    title = html.escape(f"[{i}] {citation.title}")
    url = citation.url or ""
    if url.startswith(("http://", "https://")):
        return f'<a href="{html.escape(url)}" target="_blank" rel="noopener noreferrer">{title}</a>'
    return f"<span>{title}</span>"


def citations_html(citations: Sequence[Any]) -> str:
    """Numbered source links (title -> URL), as shown under each rag answer."""
    links = [_source_link(i, c) for i, c in enumerate(citations, 1)]
    return f'<div class="mc-cites">Sources: {" · ".join(links)}</div>' if links else ""


def sources_html(citations: Sequence[Any], k: int) -> str:
    """The panel above the columns: what every model was given to ground its answer."""
    if not citations:
        return notice_html(
            "No source: nothing in the knowledge base matches this question, so the models "
            "answered alone and cite nothing."
        )
    rows = "".join(
        f'<li>{_source_link(i, c)} <span class="mc-sub">{html.escape(c.source or "")} · '
        f"matched “{html.escape(c.question)}”</span></li>"
        for i, c in enumerate(citations, 1)
    )
    return (
        '<div class="mc-ref"><div class="mc-ref-head">Knowledge-base passages given to every '
        f'model <span class="mc-sub">rag · top {k}</span></div><ol class="mc-sources">{rows}</ol>'
        "</div>"
    )


def stats_html(
    state: ColumnState,
    waits_for: Sequence[str] = (),
    scoring: bool = False,
    citations: Sequence[Any] = (),
) -> str:
    """The line under an answer: progress, time, tokens/s, scores, sources; or the error."""
    if state.status == "error":
        return f'<div class="mc-stats" data-state="error"><span class="mc-err">⚠ {html.escape(state.error or "")}</span></div>'
    if state.status == "idle":
        return ""
    if state.status == "waiting":
        why = f" (shares weights with {', '.join(waits_for)})" if waits_for else ""
        return f'<div class="mc-stats" data-state="waiting">waiting for its turn{html.escape(why)}…</div>'
    parts = [f"{state.seconds:.2f} s", f"{state.tokens} tokens", f"{state.tokens_per_s:.1f} tok/s"]
    if state.status == "streaming":
        return f'<div class="mc-stats" data-state="streaming">answering… {" · ".join(parts)}</div>'
    scores = []
    if state.rouge_l is not None:
        scores.append(f"ROUGE-L <b>{state.rouge_l:.1f}</b>")
    if state.semantic is not None:
        scores.append(f"semantic <b>{state.semantic:.1f}</b>")
    score_line = (
        f'<div class="mc-scores">vs reference: {" · ".join(scores)}</div>' if scores else ""
    )
    if scoring:
        score_line = '<div class="mc-scores">scoring against the reference…</div>'
    cites = citations_html(citations)
    return f'<div class="mc-stats" data-state="done">{" · ".join(parts)}{score_line}{cites}</div>'


def column_header_html(col: Any, shares_with: Sequence[str]) -> str:
    share = (
        f"shares loaded weights with {', '.join(shares_with)}"
        if shares_with
        else "own loaded weights"
    )
    return (
        f'<div class="mc-colhead"><div class="mc-name">{html.escape(col.name)}</div>'
        f'<span class="mc-kind mc-kind-{col.kind}">{html.escape(col.description)}</span>'
        f'<div class="mc-share">{html.escape(share)}</div></div>'
    )


# ----------------------------------------------------------------------------- the app


@dataclass
class Frame:
    """Everything one step of a request shows; a None field leaves that part of the page as is."""

    notice: str | None = None
    alert: str | None = None
    reference: str | None = None
    columns: list[ColumnState] | None = None
    history: list[dict[str, str]] | None = None
    memory: str | None = None
    busy: bool = False
    scoring: bool = False  # answers done, scores against the reference being computed
    waits_for: dict[str, list[str]] = field(default_factory=dict)
    sources: str | None = None  # rag: the passages panel
    citations: list[Any] = field(default_factory=list)  # rag: shown under every answer


class CompareApp:
    """The callbacks behind the page, free of gradio so they can be tested directly."""

    def __init__(
        self,
        group: Any,
        rows: Sequence[dict[str, Any]] = (),
        *,
        max_chars: int = MAX_CHARS,
        defaults: GenerationSettings | None = None,
        embedder: Any = None,
        concurrency: int = CONCURRENCY,
        max_queue: int = MAX_QUEUE,
        index: Any = None,
        k: int = 3,
    ) -> None:
        self.group = group
        self.index = index  # a retrieval.RetrievalIndex: enables the rag mode and its sources
        self.k = k
        self.max_chars = max_chars
        self.defaults = defaults or GenerationSettings()
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.references = {_norm(r["question"]): r for r in rows}
        self.examples = pick_examples(rows) if rows else []
        self._embedder = embedder
        self._embedder_failed = False
        self._embedder_lock = threading.Lock()

    # -- scoring -------------------------------------------------------------------------------

    def embedder(self) -> Any:
        """The sentence embedder, loaded on first use, once; None if it cannot load."""
        with self._embedder_lock:
            if self._embedder is None and not self._embedder_failed:
                try:
                    from medchat.models.embedder import load_embedder

                    self._embedder = load_embedder()
                except Exception:
                    log.warning("semantic similarity unavailable", exc_info=True)
                    self._embedder_failed = True
            return self._embedder

    def score(self, states: list[ColumnState], reference: str) -> None:
        """Fill each finished column's ROUGE-L and semantic similarity to the reference."""
        from medchat.eval import metrics

        done = [s for s in states if s.status == "done"]
        if not done:
            return
        preds, refs = [s.text for s in done], [reference] * len(done)
        for s, r in zip(done, metrics.rouge_scores(preds, refs)["rougeL"], strict=True):
            s.rouge_l = r
        embedder = self.embedder()
        if embedder is not None:
            sims = metrics.semantic_similarity(preds, refs, embedder=embedder)
            for s, v in zip(done, sims, strict=True):
                s.semantic = v

    # -- callbacks -----------------------------------------------------------------------------

    def reference_for(self, question: str) -> dict[str, Any] | None:
        return self.references.get(_norm(question))

    def ground(self, question: str, mode: str) -> tuple[dict[str, str] | None, list[Any]]:
        """rag: each column's model question (passages shaped for its tokenizer) and the
        citations; generate: (None, [])."""
        if mode == "generate":
            return None, []
        from medchat.ground.answering import CONTEXT_WORDS, citation_of, rag_prompt

        if mode != "rag" or self.index is None:
            raise MedchatError(f"answer mode {mode!r} needs the UI started with --index")
        # One search for every column; only the passage length depends on a column's tokenizer.
        # Only passages past the relevance gate are given to the models or shown; with none,
        # rag_prompt is the bare question.
        hits = self.index.gate(self.index.search(question, self.k))
        questions = {
            c.name: rag_prompt(question, hits, CONTEXT_WORDS, c.lm) for c in self.group.columns
        }
        return questions, [citation_of(h) for h in hits]

    def ask(
        self,
        question: str,
        settings: GenerationSettings,
        history: list[dict[str, str]] | None,
        mode: str = "generate",
    ) -> Iterator[Frame]:
        """Screen the question, (rag: retrieve passages), stream every column's answer, score it,
        add it to the history."""
        history = list(history or [])
        problem = check_question(question, self.max_chars)
        if problem:
            yield Frame(notice=notice_html(problem))
            return
        waits = {n: self.group.shares_with(n) for n in self.group.names}
        try:
            verdict = safety.check(question)
            alert = alert_html(verdict)
            ref = self.reference_for(question)
            ref_html = reference_html(ref) if ref else ""
            questions, cites = self.ground(question, mode)
            src = sources_html(cites, self.k) if questions is not None else ""
            states: list[ColumnState] = []
            for states in stream_columns(self.group, question, settings, questions=questions):
                yield Frame(
                    "", alert, ref_html, states, busy=True, waits_for=waits, sources=src,
                    citations=cites,
                )  # fmt: skip
            if ref:
                yield Frame(
                    "", alert, ref_html, states, busy=True, scoring=True, sources=src,
                    citations=cites,
                )  # fmt: skip
                self.score(states, ref["answer"])
            history += self._turn(question, verdict, states, cites)
            yield Frame(
                "", alert, ref_html, states, history, memory_html(self.group), sources=src,
                citations=cites,
            )  # fmt: skip
        except Exception as e:
            log.exception("request failed")
            yield Frame(notice=notice_html(f"Sorry, something went wrong: {friendly_error(e)}"))

    def _turn(
        self,
        question: str,
        verdict: safety.SafetyVerdict,
        states: list[ColumnState],
        citations: Sequence[Any] = (),
    ) -> list[dict[str, str]]:
        turn = [{"role": "user", "content": question}]
        if verdict.message and (verdict.level != "none" or not verdict.judged):
            label = safety.level_label(verdict)
            turn.append({"role": "assistant", "content": f"⚠ **{label}: {verdict.message}**"})
        for s in states:
            col = self.group[s.name]
            body = f"⚠ {s.error}" if s.status == "error" else (s.text or "(empty answer)")
            turn.append(
                {"role": "assistant", "content": f"**{s.name}** · *{col.description}*\n\n{body}"}
            )
        if citations:
            links = [
                f"[{i}] [{c.title}]({c.url})" if c.url else f"[{i}] {c.title}"
                for i, c in enumerate(citations, 1)
            ]
            turn.append({"role": "assistant", "content": "Sources: " + " · ".join(links)})
        return turn

    # -- gradio --------------------------------------------------------------------------------

    def build(self) -> Any:
        """The gradio page (launch it with `launch`)."""
        import gradio as gr

        d = self.defaults
        with gr.Blocks(title=TITLE) as demo:
            gr.HTML(HEADER_HTML, elem_id="mc-header")
            gr.HTML(
                f'<div class="mc-disclaimer" role="note">⚕ {html.escape(safety.DISCLAIMER)}</div>',
                elem_id="disclaimer",
            )
            with gr.Row(equal_height=True, elem_id="mc-ask-row"):
                question = gr.Textbox(
                    show_label=False,
                    placeholder="Ask a medical question, e.g. What are the early signs of glaucoma?",
                    lines=2,
                    max_lines=6,
                    scale=5,
                    elem_id="question",
                    autofocus=True,
                )
                with gr.Column(scale=1, min_width=150):
                    ask_btn = gr.Button("Ask every model", variant="primary", elem_id="ask")
                    clear_btn = gr.Button("Clear", variant="secondary", size="sm", elem_id="clear")
            if self.examples:
                gr.Examples(
                    [[q] for q in self.examples],
                    inputs=[question],
                    label="Try a question from the test split (its reference answer is shown)",
                    examples_per_page=N_EXAMPLES,
                )
            if self.index is not None:
                mode = gr.Radio(
                    ["rag", "generate"],
                    value="rag",
                    label="Answer mode",
                    info=f"rag: every model is given the top {self.k} knowledge-base passages and "
                    "its answer cites them; generate: the models answer alone",
                    elem_id="mode",
                )
            else:
                mode = gr.State("generate")
            notice = gr.HTML(elem_id="notice", visible=False)
            alert = gr.HTML(elem_id="alert", visible=False)
            reference = gr.HTML(elem_id="reference", visible=False)
            sources = gr.HTML(elem_id="sources", visible=False)
            answers, stats = [], []
            with gr.Row(equal_height=True, elem_classes="mc-columns"):
                for i, col in enumerate(self.group.columns):
                    with gr.Column(min_width=220, elem_classes="mc-col"):
                        gr.HTML(column_header_html(col, self.group.shares_with(col.name)))
                        answers.append(
                            gr.Textbox(
                                # the label bar is where gradio puts the copy button
                                label="Answer",
                                # one fixed height, so the columns line up; long answers scroll
                                lines=9,
                                max_lines=9,
                                interactive=False,
                                buttons=["copy"],
                                placeholder="The answer appears here.",
                                elem_id=f"answer-{i}",
                                elem_classes="mc-answer",
                            )
                        )
                        stats.append(gr.HTML(elem_id=f"stats-{i}"))
            with gr.Accordion(
                "Generation settings · applied identically to every model", open=False
            ):
                with gr.Row():
                    max_new = gr.Slider(
                        8, 512, value=d.max_new_tokens, step=8, label="Max new tokens"
                    )
                    beams = gr.Slider(1, 8, value=d.num_beams, step=1, label="Beams",
                                      info="Above 1 an answer appears whole: beam search cannot stream")  # fmt: skip
                    no_repeat = gr.Slider(0, 6, value=d.no_repeat_ngram_size, step=1,
                                          label="No-repeat n-gram size", info="0 = off")  # fmt: skip
                with gr.Row():
                    sample = gr.Checkbox(value=d.do_sample, label="Sample instead of greedy decoding",
                                         info="Greedy is deterministic: the fairest comparison")  # fmt: skip
                    temperature = gr.Slider(0.05, 2.0, value=d.temperature, step=0.05,
                                            label="Temperature (sampling)")  # fmt: skip
                    top_p = gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="Top-p (sampling)")
            with gr.Accordion("Conversation history", open=True):
                chatbot = gr.Chatbot(
                    show_label=False,
                    height=320,
                    buttons=["copy"],
                    group_consecutive_messages=False,
                    feedback_options=None,
                    placeholder="Your questions and every model's answers collect here.",
                    elem_id="history",
                )
            memory = gr.HTML(memory_html(self.group), elem_id="memory")
            gr.HTML(
                FOOTER_HTML.format(disclaimer=html.escape(safety.DISCLAIMER)), elem_id="mc-footer"
            )
            history = gr.State([])

            outputs = [
                notice,
                alert,
                reference,
                sources,
                *answers,
                *stats,
                chatbot,
                history,
                memory,
                ask_btn,
            ]

            def to_outputs(frame: Frame) -> tuple[Any, ...]:
                keep = gr.skip()
                cols = frame.columns
                texts = [keep] * len(answers) if cols is None else [s.text for s in cols]
                lines = (
                    [keep] * len(stats)
                    if cols is None
                    else [
                        stats_html(
                            s, frame.waits_for.get(s.name, ()), frame.scoring, frame.citations
                        )
                        for s in cols
                    ]
                )
                hist = keep if frame.history is None else frame.history

                def opt(v: Any) -> Any:
                    return keep if v is None else v

                def panel(v: str | None) -> Any:
                    # hidden when empty, so an empty panel leaves no gap
                    return keep if v is None else gr.HTML(v, visible=bool(v))

                return (
                    panel(frame.notice), panel(frame.alert), panel(frame.reference),
                    panel(frame.sources), *texts, *lines,
                    hist, hist, opt(frame.memory), gr.Button(interactive=not frame.busy),
                )  # fmt: skip

            def on_ask(q, max_new_v, beams_v, sample_v, temp_v, top_p_v, no_repeat_v, hist, mode_v):
                try:
                    settings = settings_from_ui(
                        max_new_v, beams_v, sample_v, temp_v, top_p_v, no_repeat_v
                    )
                except MedchatError as e:
                    yield to_outputs(Frame(notice=notice_html(str(e))))
                    return
                for frame in self.ask(q, settings, hist, mode_v):
                    yield to_outputs(frame)

            def on_clear():
                empty = [ColumnState(c.name, status="idle") for c in self.group.columns]
                frame = Frame("", "", "", empty, [], memory_html(self.group), sources="")
                return ("", *to_outputs(frame))

            inputs = [question, max_new, beams, sample, temperature, top_p, no_repeat, history]
            inputs.append(mode)
            for trigger in (ask_btn.click, question.submit):
                trigger(on_ask, inputs, outputs, concurrency_limit=self.concurrency,
                        concurrency_id="ask", show_progress="hidden")  # fmt: skip
            clear_btn.click(on_clear, None, [question, *outputs], queue=False)
            # the history's own clear (bin) icon empties what the next question appends to
            chatbot.clear(lambda: [], None, history, queue=False)
            demo.load(lambda: memory_html(self.group), None, memory, queue=False)
        return demo


def theme() -> Any:
    """A quiet theme on system fonts (the default theme would fetch fonts from the web)."""
    import gradio as gr

    sans = [
        "ui-sans-serif",
        "system-ui",
        "-apple-system",
        "Segoe UI",
        "Roboto",
        "Helvetica Neue",
        "Arial",
        "sans-serif",
    ]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Soft(primary_hue="teal", neutral_hue="slate", font=sans, font_mono=mono).set(
        button_primary_background_fill="#0f766e",
        button_primary_background_fill_hover="#115e59",
        button_primary_text_color="#ffffff",
        # quiet grey labels: the colour is kept for what needs attention
        block_title_background_fill="*neutral_100",
        block_title_text_color="*neutral_600",
        block_label_background_fill="*neutral_100",
        block_label_text_color="*neutral_600",
    )


def launch(
    app: CompareApp,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    block: bool = True,
) -> Any:
    """Build and serve the page; with block=False return the running gradio Blocks at once."""
    demo = app.build()
    demo.queue(default_concurrency_limit=app.concurrency, max_size=app.max_queue)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            prevent_thread_lock=not block,
            theme=theme(),
            css=CSS,
            footer_links=[],
            show_error=False,
            quiet=True,
            inbrowser=False,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            enable_monitoring=False,
        )
    except OSError as e:
        raise MedchatError(f"cannot serve on {host}:{port} ({e}); pick another --port") from None
    return demo


# ----------------------------------------------------------------------------- CLI


def parse_model_args(values: Sequence[str]) -> list[tuple[str, str]]:
    """`NAME=SPEC` or a bare SPEC (named after its folder, or the hub id itself)."""
    from pathlib import Path

    pairs = []
    for v in values:
        name, sep, spec = v.partition("=")
        if not sep or not name or "/" in name or os.sep in name:
            name, spec = (Path(v).name if Path(v).exists() else v), v
        if not spec.strip():
            raise MedchatError(
                f"--model {v!r}: empty SPEC; give NAME=SPEC (run dir, model dir or hub id)"
            )
        pairs.append((name.strip(), spec.strip()))
    return pairs


def ui_command(args: Any) -> None:
    """`medchat ui --model NAME=SPEC ... [--data DIR] [--host] [--port] [--share]`"""
    from medchat.console import console
    from medchat.infer.model_group import load_model_group

    specs = parse_model_args(args.model)
    rows = []
    if args.data:
        from medchat.data import load_split

        rows = load_split(args.data, "test")
    with console.status("loading models…"):
        group = load_model_group(specs)
    for col in group.columns:
        console.print(f"  {col.name}: {col.description} ({col.spec})")
    console.print(f"  {len(group.columns)} models on {len(group.weight_sets)} loaded weight sets")
    if args.share:
        console.print(
            "[bold yellow]--share:[/] a public link lets anyone on the internet use these models"
        )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"[bold yellow]binding {args.host}:[/] other machines on the network can reach it"
        )
    index = None
    if args.index:
        from medchat.ground.retrieval import load_index

        with console.status("loading the knowledge-base index…"):
            index = load_index(args.index)
            index.encoder  # noqa: B018 - load MiniLM now, not on the first question
        console.print(f"  index {args.index}: {len(index)} rows; answer mode rag by default")
    app = CompareApp(
        group, rows, max_chars=args.max_chars, concurrency=args.concurrency, index=index, k=args.k
    )
    console.print(f"medchat UI on http://{args.host}:{args.port} (Ctrl+C to stop)")
    launch(app, host=args.host, port=args.port, share=args.share)


# ----------------------------------------------------------------------------- look

HEADER_HTML = """
<div class="mc-header">
  <div class="mc-logo">✚</div>
  <div>
    <h1>medchat <span>· compare answers</span></h1>
    <p>Ask one medical question. The original model and each fine-tuned model answer it side by
    side with the same generation settings, so you can see what fine-tuning changed. For questions
    from the test split the reference answer and each model's ROUGE-L and semantic similarity to it
    are shown.</p>
  </div>
</div>
"""

FOOTER_HTML = """
<div class="mc-footer">
  <p><b>Not medical advice.</b> {disclaimer}</p>
  <p class="mc-sub">Runs locally: nothing you type leaves this machine. Answers come from research
  models and may invent facts, including drug names and doses.</p>
</div>
"""

CSS = """
.gradio-container { max-width: 1320px !important; margin: 0 auto !important; }
.mc-header { display: flex; gap: 14px; align-items: flex-start; padding: 6px 2px 2px; }
.mc-logo { flex: none; width: 40px; height: 40px; border-radius: 10px; background: #0f766e;
  color: #fff; font-size: 24px; line-height: 40px; text-align: center; font-weight: 700; }
.mc-header h1 { font-size: 1.55rem; margin: 0 0 4px; font-weight: 700; letter-spacing: -0.01em; }
.mc-header h1 span { color: #0f766e; font-weight: 600; }
.mc-header p { margin: 0; color: var(--body-text-color-subdued); max-width: 900px; line-height: 1.45; }
.mc-disclaimer { background: #fffbeb; border: 1px solid #f5d78e; color: #713f12;
  border-radius: 10px; padding: 9px 14px; font-size: 0.9rem; }
.mc-alert { border-radius: 10px; padding: 12px 16px; }
.mc-alert p { margin: 4px 0 0; }
.mc-urgent { background: #fef2f2; border: 2px solid #dc2626; color: #7f1d1d; }
.mc-alert-title { font-weight: 700; font-size: 1.05rem; color: #b91c1c; }
.mc-sameday { background: #fffbeb; border: 2px solid #d97706; color: #78350f; }
.mc-sameday .mc-alert-title { color: #b45309; }  /* red is kept for "call now" */
.mc-note { background: #eff6ff; border: 1px solid #93c5fd; color: #1e3a8a; }
.mc-notice { background: #f1f5f9; border: 1px solid #cbd5e1; color: #334155; border-radius: 10px;
  padding: 9px 14px; }
.mc-ref { border: 1px solid var(--border-color-primary); border-left: 4px solid #0f766e;
  border-radius: 10px; padding: 10px 14px; background: var(--block-background-fill); }
.mc-ref-head { font-weight: 650; margin-bottom: 4px; }
.mc-ref-body { font-size: 0.92rem; line-height: 1.45; white-space: pre-wrap; }
.mc-sub { font-weight: 400; color: var(--body-text-color-subdued); font-size: 0.85rem; }
.mc-columns { gap: 12px; }
.mc-col { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 10px 12px;
  background: var(--block-background-fill); box-shadow: 0 1px 2px rgba(15, 23, 42, 0.05); }
.mc-colhead { line-height: 1.3; }
.mc-name { font-weight: 700; font-size: 1.08rem; margin-bottom: 4px; overflow-wrap: anywhere; }
.mc-kind { display: inline-block; font-size: 0.75rem; padding: 2px 9px; border-radius: 999px;
  font-weight: 600; white-space: nowrap; }
.mc-kind-pretrained { background: #e2e8f0; color: #334155; }
.mc-kind-full { background: #ede9fe; color: #5b21b6; }
.mc-kind-lora { background: #ccfbf1; color: #115e59; }
.mc-kind-qlora { background: #ffedd5; color: #9a3412; }
.mc-share { font-size: 0.75rem; color: var(--body-text-color-subdued); margin-top: 4px; }
.mc-answer textarea { font-size: 0.93rem !important; line-height: 1.45 !important; }
.mc-stats { font-size: 0.8rem; color: var(--body-text-color-subdued); min-height: 1.2em; }
.mc-scores { margin-top: 2px; color: var(--body-text-color); }
.mc-cites { margin-top: 2px; }
.mc-cites a, .mc-sources a { color: var(--link-text-color); }
.mc-sources { margin: 4px 0 0 18px; padding: 0; }
.mc-err { color: #b91c1c; }
.mc-memory { font-size: 0.8rem; color: var(--body-text-color-subdued); text-align: right; }
.mc-footer { border-top: 1px solid var(--border-color-primary); margin-top: 8px; padding-top: 10px;
  font-size: 0.82rem; color: var(--body-text-color-subdued); }
.mc-footer p { margin: 2px 0; }
"""
