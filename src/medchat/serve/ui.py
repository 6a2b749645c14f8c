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
import functools
import html
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medchat.errors import MedchatError
from medchat.ground import safety
from medchat.infer.generate import GenerationSettings
from medchat.serve.ui_page import (
    CSS,
    FOOTER_HTML,
    HEADER_HTML,
    alert_html,
    column_header_html,
    memory_html,
    notice_html,
    reference_html,
    sources_html,
    stats_html,
    theme,
)

if TYPE_CHECKING:
    from medchat.ground.retrieval import RetrievalIndex
    from medchat.infer.model_group import ModelGroup
    from medchat.models.embedder import Embedder


def _offline_env() -> None:
    """Keep gradio and huggingface_hub from phoning home; must run before gradio is imported.
    Called by `ui_command` and `build`, not at import: importing a module changes no setting."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    # setdefault: someone who sets HF_HUB_OFFLINE=0 on purpose may fetch hub models at start.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


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


# The panels above the columns, in the order `_to_outputs` fills them.
PANELS = ("notice", "alert", "reference", "sources")


def _to_outputs(gr: Any, n_columns: int, frame: Frame) -> tuple[Any, ...]:
    """One Frame as values for the page's outputs; a None part of the frame is left as it is."""
    keep = gr.skip()
    cols = frame.columns
    texts = [keep] * n_columns if cols is None else [s.text for s in cols]
    lines = (
        [keep] * n_columns
        if cols is None
        else [
            stats_html(s, frame.waits_for.get(s.name, ()), frame.scoring, frame.citations)
            for s in cols
        ]
    )
    hist = keep if frame.history is None else frame.history

    def panel(v: str | None) -> Any:
        # hidden when empty, so an empty panel leaves no gap
        return keep if v is None else gr.HTML(v, visible=bool(v))

    return (
        panel(frame.notice), panel(frame.alert), panel(frame.reference), panel(frame.sources),
        *texts, *lines, hist, hist, keep if frame.memory is None else frame.memory,
        gr.Button(interactive=not frame.busy),
    )  # fmt: skip


class CompareApp:
    """The callbacks behind the page, free of gradio so they can be tested directly."""

    def __init__(
        self,
        group: ModelGroup,
        rows: Sequence[dict[str, Any]] = (),
        *,
        max_chars: int = MAX_CHARS,
        defaults: GenerationSettings | None = None,
        embedder: Embedder | None = None,
        concurrency: int = CONCURRENCY,
        max_queue: int = MAX_QUEUE,
        index: RetrievalIndex | None = None,
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
        _offline_env()
        import gradio as gr

        with gr.Blocks(title=TITLE) as demo:
            gr.HTML(HEADER_HTML, elem_id="mc-header")
            gr.HTML(
                f'<div class="mc-disclaimer" role="note">⚕ {html.escape(safety.DISCLAIMER)}</div>',
                elem_id="disclaimer",
            )
            question, ask_btn, clear_btn, mode = self._ask_row(gr)
            panels = [gr.HTML(elem_id=i, visible=False) for i in PANELS]
            answers, stats = self._columns(gr)
            controls = self._settings(gr)
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
            outputs = [*panels, *answers, *stats, chatbot, history, memory, ask_btn]
            to_outputs = functools.partial(_to_outputs, gr, len(answers))

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

            inputs = [question, *controls, history, mode]
            for trigger in (ask_btn.click, question.submit):
                trigger(on_ask, inputs, outputs, concurrency_limit=self.concurrency,
                        concurrency_id="ask", show_progress="hidden")  # fmt: skip
            clear_btn.click(on_clear, None, [question, *outputs], queue=False)
            # the history's own clear (bin) icon empties what the next question appends to
            chatbot.clear(lambda: [], None, history, queue=False)
            demo.load(lambda: memory_html(self.group), None, memory, queue=False)
        return demo

    def _ask_row(self, gr: Any) -> tuple[Any, Any, Any, Any]:
        """The question box, its buttons, the examples and (with an index) the answer mode."""
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
        if self.index is None:
            return question, ask_btn, clear_btn, gr.State("generate")
        mode = gr.Radio(
            ["rag", "generate"],
            value="rag",
            label="Answer mode",
            info=f"rag: every model is given the top {self.k} knowledge-base passages and "
            "its answer cites them; generate: the models answer alone",
            elem_id="mode",
        )
        return question, ask_btn, clear_btn, mode

    def _columns(self, gr: Any) -> tuple[list[Any], list[Any]]:
        """One column per model: its header, its answer box and the line of stats under it."""
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
        return answers, stats

    def _settings(self, gr: Any) -> list[Any]:
        """The generation settings every model shares, in `settings_from_ui`'s order."""
        d = self.defaults
        with gr.Accordion("Generation settings · applied identically to every model", open=False):
            with gr.Row():
                max_new = gr.Slider(8, 512, value=d.max_new_tokens, step=8, label="Max new tokens")
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
        return [max_new, beams, sample, temperature, top_p, no_repeat]


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


def ui_command(args: Any) -> None:
    """`medchat ui --model NAME=SPEC ... [--data DIR] [--host] [--port] [--share]`"""
    _offline_env()  # before the models load: hub ids resolve from the local cache
    from medchat.console import console
    from medchat.infer.model_group import load_model_group
    from medchat.runs import parse_model_args

    specs = [(m.name, m.spec) for m in parse_model_args(args.model)]
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
        from medchat.ground.index import load_index

        with console.status("loading the knowledge-base index…"):
            index = load_index(args.index)
            index.encoder  # noqa: B018 - load MiniLM now, not on the first question
        console.print(f"  index {args.index}: {len(index)} rows; answer mode rag by default")
    app = CompareApp(
        group, rows, max_chars=args.max_chars, concurrency=args.concurrency, index=index, k=args.k
    )
    console.print(f"medchat UI on http://{args.host}:{args.port} (Ctrl+C to stop)")
    launch(app, host=args.host, port=args.port, share=args.share)
