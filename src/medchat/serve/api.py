"""HTTP API: answers, an OpenAI-compatible chat endpoint, health, readiness and metrics.

One worker thread owns the model (it loads it, then answers): requests wait in a bounded queue,
and the worker takes the oldest one plus every queued request with identical generation
settings, waiting a few milliseconds for more, up to `max_batch_size`, and answers them with one
`generate` call. A full queue is answered at once with 429 and `Retry-After`, so overload costs
clients a retry instead of the server its memory. Streams (server-sent events) run one at a time
on the same worker. docs/serving.md describes every endpoint.

fastapi, uvicorn and prometheus-client are the `medchat[serve]` extra, imported lazily.
"""

# No `from __future__ import annotations`: FastAPI reads the request-model annotations of the
# handlers, which are local to create_app, at definition time.
import asyncio
import collections
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from medchat.errors import MedchatError
from medchat.ground import safety
from medchat.ground.answering import source_note
from medchat.infer.generate import GenerationSettings
from medchat.prompts import format_prompt

log = logging.getLogger(__name__)

ROUTES = (
    "/v1/answer",
    "/v1/answer/stream",
    "/v1/chat/completions",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/metrics",
)


MAX_SEED = 2**32 - 1  # what numpy and every backend accept as a seed


def batch_key(settings: GenerationSettings) -> GenerationSettings:
    """Settings as far as they change a greedy or beam answer: seed, temperature and top_p only
    matter when sampling, so greedy requests that differ only in them share one batch."""
    if settings.do_sample:
        return settings
    return dataclasses.replace(settings, seed=0, temperature=1.0, top_p=1.0)


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class ServeConfig:
    """How the server batches, bounds and checks requests."""

    max_batch_size: int = _f(8, "Most requests answered by one generate call.")
    max_queue: int = _f(
        64, "Most requests waiting for the model; more get 429 with Retry-After at once."
    )
    batch_wait_ms: float = _f(
        5.0,
        "How long the worker waits for companions once it holds a request: a few ms costs a "
        "lone request little and lets a burst share one generate call.",
    )
    default_max_new_tokens: int = _f(128, "Answer length when a request does not say.")
    max_new_tokens_limit: int = _f(512, "Largest max_new_tokens a request may ask for.")
    max_question_chars: int = _f(4000, "Longer questions get 413 (T5 reads 512 tokens anyway).")
    max_body_bytes: int = _f(65536, "Larger request bodies get 413 before they are parsed.")
    api_key: str | None = _f(None, "When set, /v1/* needs `Authorization: Bearer KEY`.")
    request_timeout_s: float | None = _f(
        None, "A non-streamed answer not ready in this many seconds gets 504 (None: no limit)."
    )
    protect_all: bool = _f(
        False,
        "With api_key: /metrics, /docs and /openapi.json need the key too (probes stay open).",
    )
    default_mode: str = _f(
        "generate",
        "Answer mode when a request does not say: generate (the model alone), rag (the model "
        "given the top-k passages of the index), retrieve (the best indexed answer, quoted) or "
        "extract (the index's sentences chosen for the question, each cited). rag, retrieve and "
        "extract need an index.",
    )
    k: int = _f(3, "Passages per question in rag mode when a request does not say.")

    def __post_init__(self) -> None:
        problems = []
        if self.default_mode not in ("generate", "rag", "retrieve", "extract"):
            problems.append("default_mode must be generate, rag, retrieve or extract")
        if self.k < 1:
            problems.append("k must be >= 1")
        for name in ("max_batch_size", "max_queue", "default_max_new_tokens", "max_body_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.batch_wait_ms < 0:
            problems.append("batch_wait_ms must be >= 0")
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            problems.append("request_timeout_s must be > 0")
        if self.max_new_tokens_limit < self.default_max_new_tokens:
            problems.append("max_new_tokens_limit must be >= default_max_new_tokens")
        if problems:
            raise MedchatError("invalid serve settings: " + "; ".join(problems))


# ----------------------------------------------------------------------------- metrics


class Metrics:
    """Prometheus metrics in the app's own registry (so several apps can live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "medchat_requests", "HTTP requests by route and status.", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "medchat_request_latency_seconds", "Request latency by route.", ["route"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "medchat_queue_depth", "Requests waiting for the model.", registry=self.registry
        )
        self.tokens = Counter(
            "medchat_tokens_generated", "Tokens generated (EOS included).", registry=self.registry
        )
        self.batch_size = Histogram(
            "medchat_batch_size", "Requests answered per generate call.",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry,
        )  # fmt: skip


# ----------------------------------------------------------------------------- batcher


class QueueFull(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("queue full")
        self.retry_after = retry_after


class NotReady(Exception):
    pass


@dataclass(eq=False)
class Job:
    """One request for the worker; results go back through `deliver` (thread-safe)."""

    prompt: str
    settings: GenerationSettings
    deliver: Callable[[str, Any], None]
    stream: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)


class Batcher:
    """The worker thread that owns the model, and the bounded queue in front of it."""

    def __init__(self, load: Callable[[], Any], config: ServeConfig, metrics: Metrics) -> None:
        self._load = load
        self.config = config
        self.metrics = metrics
        self.backend: Any = None
        self.load_error: BaseException | None = None
        self.ready = threading.Event()
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._seconds_per_batch = 1.0  # running estimate, for Retry-After
        self._thread = threading.Thread(target=self._main, name="medchat-model", daemon=True)

    # -- called from the event loop

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive() or not self._thread.ident

    def depth(self) -> int:
        return len(self._pending)

    def submit(self, prompt: str, settings: GenerationSettings, stream: bool = False):
        """Queue a job; returns it and the asyncio.Queue its results arrive on."""
        if not self.ready.is_set() or self._closing:
            raise NotReady
        loop = asyncio.get_running_loop()
        results: asyncio.Queue = asyncio.Queue()

        def deliver(kind: str, value: Any) -> None:
            # A closed loop (server stopped) means nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(results.put_nowait, (kind, value))

        job = Job(prompt, settings, deliver, stream)
        with self._cond:
            if len(self._pending) >= self.config.max_queue:
                raise QueueFull(self._retry_after())
            self._pending.append(job)
            self._cond.notify()
        return job, results

    def close(self, timeout: float | None = 60.0) -> None:
        """Answer everything already queued, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.ident:
            self._thread.join(timeout)

    def _retry_after(self) -> int:
        batches = math.ceil((len(self._pending) + 1) / self.config.max_batch_size)
        return max(1, math.ceil(batches * self._seconds_per_batch))

    # -- the worker thread

    def _main(self) -> None:
        try:
            self.backend = self._load()
        except BaseException as e:  # reported by /readyz and the log
            log.exception("loading the model failed")
            self.load_error = e
            return
        self.ready.set()
        while (batch := self._take()) is not None:
            self._run(batch)

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._pending.popleft()
            batch = [first]
            if first.stream:
                return batch
            deadline = time.monotonic() + self.config.batch_wait_ms / 1000
            while True:
                self._move_matching(first.settings, batch)
                remaining = deadline - time.monotonic()
                if len(batch) >= self.config.max_batch_size or remaining <= 0 or self._closing:
                    return batch
                self._cond.wait(remaining)

    def _move_matching(self, settings: GenerationSettings, batch: list[Job]) -> None:
        """Move queued jobs that can share a generate call into `batch`, keeping the others in
        order."""
        key = batch_key(settings)
        keep: collections.deque[Job] = collections.deque()
        for job in self._pending:
            if (
                len(batch) < self.config.max_batch_size
                and not job.stream
                and batch_key(job.settings) == key
            ):
                batch.append(job)
            else:
                keep.append(job)
        self._pending = keep

    def _run(self, batch: list[Job]) -> None:
        jobs = [j for j in batch if not j.cancelled.is_set()]
        if not jobs:
            return
        start = time.perf_counter()
        try:
            if jobs[0].stream:
                job = jobs[0]
                gens = [
                    self.backend.stream(
                        job.prompt,
                        job.settings,
                        lambda text: job.deliver("text", text),
                        job.cancelled.is_set,
                    )
                ]
            else:
                # Nobody waits for a batch whose clients have all gone: stop decoding it.
                gens = self.backend.generate(
                    [j.prompt for j in jobs],
                    jobs[0].settings,
                    should_stop=lambda: all(j.cancelled.is_set() for j in jobs),
                )
        except Exception as e:
            log.exception("generation failed for a batch of %d", len(jobs))
            for job in jobs:
                job.deliver("error", e)
            return
        for job, gen in zip(jobs, gens, strict=True):
            job.deliver("done", gen)
        elapsed = time.perf_counter() - start
        self._seconds_per_batch = 0.8 * self._seconds_per_batch + 0.2 * elapsed
        self.metrics.tokens.inc(sum(g.tokens for g in gens))
        self.metrics.batch_size.observe(len(jobs))


# ----------------------------------------------------------------------------- edge middleware


class BodyTooLarge(BaseException):
    """Raised while a body is read. Not an Exception: FastAPI's body parser turns any Exception
    into a 400 ("error parsing the body"); this must reach `Edge` and become a 413."""


class Edge:
    """ASGI middleware: 413 for oversized bodies, and request counts/latency by route and status."""

    def __init__(self, app: Any, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        start = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
            await send(message)

        received = 0

        async def receive_bounded() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise BodyTooLarge
            return message

        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                raise BodyTooLarge
            await self.app(scope, receive_bounded, send_counted)
        except BodyTooLarge:
            if not status["started"]:
                message = f"request body larger than {self.max_body} bytes"
                await _send_json(send_counted, 413, _error(message, "request_too_large"))
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


async def _send_json(send: Callable, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _error(message: str, kind: str, **extra: Any) -> dict:
    """OpenAI-style error body, so its clients show the message."""
    return {"error": {"message": message, "type": kind, **extra}}


# ----------------------------------------------------------------------------- request models


def _request_models():
    """Pydantic request bodies (built lazily: pydantic comes with fastapi)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class GenerationOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")

        max_new_tokens: int | None = Field(None, ge=1)
        num_beams: int = Field(1, ge=1, le=8)
        do_sample: bool = False
        temperature: float = Field(1.0, gt=0, le=5)
        top_p: float = Field(1.0, gt=0, le=1)
        no_repeat_ngram_size: int = Field(0, ge=0, le=16)
        repetition_penalty: float = Field(1.0, gt=0, le=10)
        seed: int = Field(0, ge=0, le=MAX_SEED)

    Mode = Literal["generate", "rag", "retrieve", "extract"]

    class AnswerRequest(GenerationOptions):
        question: str = Field(..., min_length=1)
        mode: Mode | None = None  # the server's default mode when absent
        k: int | None = Field(None, ge=1, le=10)

    class Message(BaseModel):
        model_config = ConfigDict(extra="ignore")

        role: Literal["system", "developer", "user", "assistant", "tool"]
        content: str | list[dict[str, Any]] | None = None

        def text(self) -> str:
            if isinstance(self.content, list):  # content parts: keep the text ones
                return " ".join(
                    str(p.get("text", "")) for p in self.content if p.get("type") == "text"
                )
            return self.content or ""

    class ChatRequest(BaseModel):
        # Unknown OpenAI fields (user, stream_options, ...) are accepted and ignored.
        model_config = ConfigDict(extra="ignore")

        model: str | None = None
        messages: list[Message] = Field(..., min_length=1)
        max_tokens: int | None = Field(None, ge=1)
        max_completion_tokens: int | None = Field(None, ge=1)
        temperature: float | None = Field(None, ge=0, le=2)
        top_p: float | None = Field(None, gt=0, le=1)
        n: int = Field(1, ge=1, le=1)
        seed: int | None = Field(None, ge=0, le=MAX_SEED)
        stream: bool = False
        # medchat's own (OpenAI clients send them with extra_body): answer mode and passages.
        mode: Mode | None = None
        k: int | None = Field(None, ge=1, le=10)

    return AnswerRequest, ChatRequest


# ----------------------------------------------------------------------------- the app


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


def create_app(load: Callable[[], Any], config: ServeConfig | None = None, index: Any = None):
    """The FastAPI app; `load()` runs on the worker thread and returns a backend. `index` (a
    `retrieval.RetrievalIndex`) enables the rag and retrieve answer modes, with citations."""
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    config = config or ServeConfig()
    if config.default_mode != "generate" and index is None:
        raise MedchatError(f"default mode {config.default_mode!r} needs an index (--index)")
    metrics = Metrics()
    batcher = Batcher(load, config, metrics)
    metrics.queue_depth.set_function(batcher.depth)
    AnswerRequest, ChatRequest = _request_models()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        # Load the safety screen's MiniLM now, not on the first question.
        await asyncio.to_thread(safety.check, "warm up")
        yield
        # uvicorn has already waited for in-flight requests; answer anything still queued.
        await asyncio.to_thread(batcher.close)

    hide_docs = config.protect_all and config.api_key is not None
    app = FastAPI(
        title="medchat",
        version="1",
        lifespan=lifespan,
        # protected below instead, behind the key
        docs_url=None if hide_docs else "/docs",
        openapi_url=None if hide_docs else "/openapi.json",
    )
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.config = config

    # -- errors as JSON the OpenAI client can read

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = [
            {"field": ".".join(str(p) for p in e["loc"][1:]), "message": e["msg"]}
            for e in exc.errors()
        ]
        text = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
        return JSONResponse(
            _error(f"invalid request: {text}", "invalid_request_error", problems=problems), 422
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse(
            _error(str(exc.detail), _KINDS.get(exc.status_code, "error")),
            exc.status_code,
            headers=exc.headers,
        )

    def fail(status: int, message: str, headers: dict[str, str] | None = None):
        return HTTPException(status, message, headers)

    def require_key(request: Request) -> None:
        if config.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = (
            auth[7:].strip()
            if auth[:7].lower() == "bearer "
            else request.headers.get("x-api-key", "")
        )
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise fail(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})

    # -- shared steps

    def question_of(text: str) -> str:
        question = text.strip()
        if not question:
            raise fail(422, "question is empty")
        if len(question) > config.max_question_chars:
            raise fail(413, f"question longer than {config.max_question_chars} characters")
        return question

    def settings_of(**options: Any) -> GenerationSettings:
        n = options.pop("max_new_tokens", None) or config.default_max_new_tokens
        if n > config.max_new_tokens_limit:
            raise fail(422, f"max_new_tokens must be <= {config.max_new_tokens_limit}")
        try:
            return GenerationSettings(max_new_tokens=n, **options)
        except MedchatError as e:
            raise fail(422, str(e)) from None

    def enqueue(question: str, settings: GenerationSettings, stream: bool = False):
        try:
            if not batcher.ready.is_set():
                raise NotReady
            return batcher.submit(format_prompt(question, prompt_template()), settings, stream)
        except QueueFull as e:
            raise fail(
                429, "server busy: queue full", {"Retry-After": str(e.retry_after)}
            ) from None
        except NotReady:
            raise fail(503, "model not ready", {"Retry-After": "5"}) from None

    retrieving = {"n": 0}  # grounding calls in flight (event-loop only, so no lock)

    async def grounding(question: str, mode: str | None, k: int | None) -> Any:
        """What the mode puts around the question (passages, citations, a quote); generate: none.

        Retrieval embeds the question (MiniLM), so it runs off the event loop."""
        from medchat.ground.answering import Grounding, ground

        mode = mode or config.default_mode
        if mode == "generate":
            return Grounding(question, mode, question, [], [])
        if index is None:
            raise fail(
                422,
                f"mode {mode!r} needs a knowledge-base index; this server has none "
                "(start it with `medchat serve SPEC --index INDEX_DIR`)",
            )
        if mode == "rag" and not batcher.ready.is_set():
            raise fail(503, "model not ready", {"Retry-After": "5"})
        # Retrieval is work too: it shares the bound of the model's queue, so a flood of rag or
        # retrieve requests gets 429 like a flood of generate ones, instead of piling up threads.
        if retrieving["n"] + batcher.depth() >= config.max_queue:
            raise fail(429, "server busy: queue full", {"Retry-After": "1"})
        lm = batcher.backend if mode == "rag" else None
        retrieving["n"] += 1
        try:
            return await asyncio.to_thread(ground, question, mode, lm, index, k or config.k)
        finally:
            retrieving["n"] -= 1

    def start_stream(g: Any, settings: GenerationSettings) -> tuple[Job | None, asyncio.Queue]:
        """A streamed answer's job and result queue; a retrieve answer needs no model, so its
        quote is queued whole at once."""
        if g.model_question is not None:
            return enqueue(g.model_question, settings, stream=True)
        results: asyncio.Queue = asyncio.Queue()
        for item in (("text", g.quote), ("done", _Quoted(g.quote))):
            results.put_nowait(item)
        return None, results

    def grounded_fields(g: Any) -> dict[str, Any]:
        return {
            "mode": g.mode,
            "grounded": g.grounded,
            "citations": [c.to_dict() for c in g.citations],
            **({"note": note} if (note := source_note(g.mode, g.grounded)) else {}),
        }

    async def answer_one(question: str, settings: GenerationSettings, request: Request):
        """The answer to one non-streamed request. While it waits, it watches the client: if the
        client goes away, or `request_timeout_s` passes (504), the job is cancelled, so a queued
        job is skipped and a batch whose clients have all gone stops decoding."""
        job, results = enqueue(question, settings)
        deadline = time.monotonic() + config.request_timeout_s if config.request_timeout_s else None
        got = asyncio.ensure_future(results.get())
        try:
            while True:
                done, _ = await asyncio.wait({got}, timeout=0.1)
                if done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise fail(
                        504,
                        f"no answer within {config.request_timeout_s:g} s (the server's "
                        "--request-timeout); ask for fewer new tokens or try again later",
                    )
                if await request.is_disconnected():
                    raise fail(499, "client closed the request")  # nobody reads this reply
        except BaseException:
            job.cancelled.set()
            got.cancel()
            raise
        kind, value = got.result()
        if kind == "error":
            raise fail(500, f"generation failed: {value}")
        return value

    def prompt_template() -> str:
        return batcher.backend.prompt_template

    def model_name() -> str:
        return batcher.backend.name if batcher.backend is not None else "loading"

    async def stream_job(job: Job | None, results: asyncio.Queue) -> AsyncIterator[tuple[str, Any]]:
        """The job's results as they come; the job is cancelled if the client goes away.
        (No job: a retrieve answer, already in `results`.)"""
        try:
            while True:
                kind, value = await results.get()
                yield kind, value
                if kind != "text":
                    return
        finally:
            if job is not None:
                job.cancelled.set()

    # -- answers

    keyed = [Depends(require_key)]

    @app.post("/v1/answer", dependencies=keyed)
    async def answer(req: AnswerRequest, request: Request):  # type: ignore[valid-type]
        start = time.perf_counter()
        question = question_of(req.question)
        settings = settings_of(**req.model_dump(exclude={"question", "mode", "k"}))
        verdict = await asyncio.to_thread(safety.check, question)
        g = await grounding(question, req.mode, req.k)
        if g.model_question is None:  # retrieve and extract: the knowledge base's own text
            text, tokens, model, backend = g.quote, 0, None, g.mode
        else:
            gen = await answer_one(g.model_question, settings, request)
            text, tokens, model, backend = gen.text, gen.tokens, model_name(), batcher.backend.kind
        return {
            "answer": text,
            "model": model,
            "backend": backend,
            **grounded_fields(g),
            "latency_ms": round((time.perf_counter() - start) * 1000, 1),
            "tokens": tokens,
            "safety": verdict.to_dict(),
            "disclaimer": safety.DISCLAIMER,
        }

    @app.post("/v1/answer/stream", dependencies=keyed)
    async def answer_stream(req: AnswerRequest):  # type: ignore[valid-type]
        start = time.perf_counter()
        question = question_of(req.question)
        settings = settings_of(**req.model_dump(exclude={"question", "mode", "k"}))
        verdict = await asyncio.to_thread(safety.check, question)
        g = await grounding(question, req.mode, req.k)
        job, results = start_stream(g, settings)
        model = None if g.model_question is None else model_name()

        async def events() -> AsyncIterator[str]:
            yield sse({"model": model, **grounded_fields(g), "safety": verdict.to_dict()}, "meta")
            async for kind, value in stream_job(job, results):
                if kind == "text":
                    yield sse({"text": value}, "token")
                elif kind == "done":
                    yield sse(
                        {
                            "answer": value.text,
                            "model": model,
                            **grounded_fields(g),
                            "latency_ms": round((time.perf_counter() - start) * 1000, 1),
                            "tokens": value.tokens,
                            "safety": verdict.to_dict(),
                            "disclaimer": safety.DISCLAIMER,
                        },
                        "done",
                    )
                else:
                    yield sse(_error(f"generation failed: {value}", "server_error"), "error")

        return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)

    # -- OpenAI-compatible chat

    def chat_settings(req: Any) -> GenerationSettings:
        # Greedy unless the client asks for a temperature above 0: the model was evaluated greedy.
        sample = req.temperature is not None and req.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": req.max_completion_tokens or req.max_tokens}
        if sample:
            options.update(do_sample=True, temperature=req.temperature, top_p=req.top_p or 1.0)
        if req.seed is not None:
            options["seed"] = req.seed
        return settings_of(**options)

    def last_user_message(req: Any) -> str:
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise fail(422, "messages: no user message to answer")
        return question_of(users[-1].text())

    @app.post("/v1/chat/completions", dependencies=keyed)
    async def chat_completions(req: ChatRequest, request: Request):  # type: ignore[valid-type]
        from medchat.ground.answering import sources_text

        question = last_user_message(req)
        settings = chat_settings(req)
        verdict = await asyncio.to_thread(safety.check, question)
        g = await grounding(question, req.mode, req.k)
        sources = sources_text(g.citations)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not req.stream:
            if g.model_question is None:
                gen = _Quoted(g.quote)
            else:
                gen = await answer_one(g.model_question, settings, request)
            text = f"{gen.text}\n\n{sources}" if sources else gen.text
            if note := source_note(g.mode, g.grounded):
                text = f"{note}\n\n{text}"
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model_name(),
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": safety.with_disclaimer(text, verdict),
                        },
                        "finish_reason": _finish(gen, settings),
                    }
                ],
                "usage": {
                    "prompt_tokens": gen.prompt_tokens,
                    "completion_tokens": gen.tokens,
                    "total_tokens": gen.prompt_tokens + gen.tokens,
                },
                "safety": verdict.to_dict(),
                **grounded_fields(g),
            }

        job, results = start_stream(g, settings)

        def chunk(delta: dict, finish: str | None = None) -> str:
            return sse(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model_name(),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        async def events() -> AsyncIterator[str]:
            # The same text as the non-streaming answer: safety message first, disclaimer last.
            head = safety.with_disclaimer("", verdict).removesuffix(safety.DISCLAIMER)
            yield chunk({"role": "assistant", "content": head})
            async for kind, value in stream_job(job, results):
                if kind == "text":
                    yield chunk({"content": value})
                elif kind == "done":
                    tail = f"\n\n{sources}" if sources else ""
                    yield chunk({"content": f"{tail}\n\n{safety.DISCLAIMER}"})
                    yield chunk({}, _finish(value, settings))
                else:
                    yield sse(_error(f"generation failed: {value}", "server_error"))
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)

    @app.get("/v1/models", dependencies=keyed)
    async def models():
        return {
            "object": "list",
            "data": [{"id": model_name(), "object": "model", "created": 0, "owned_by": "medchat"}],
        }

    # -- operations

    @app.get("/healthz")
    async def healthz():
        if not batcher.alive() or batcher.load_error is not None:
            # The exception text (paths, hub URLs) is in the server log, not on a public route.
            kind = type(batcher.load_error).__name__ if batcher.load_error else "worker stopped"
            return JSONResponse(
                {
                    "status": "failed",
                    "error": f"the model could not be loaded ({kind}); see the server log",
                },
                503,
            )
        return {"status": "ok"}

    def safety_screen_name() -> str:
        from medchat.ground.safety.screen import load_screen

        return "rules+minilm" if load_screen()[0] is not None else "rules"

    @app.get("/readyz")
    async def readyz():
        if not batcher.ready.is_set():
            return JSONResponse({"ready": False, "model": model_name()}, 503)
        return {
            "ready": True,
            "model": model_name(),
            "backend": batcher.backend.kind,
            # how --backend auto chose it on this machine (None: named on the command line)
            "backend_choice": getattr(batcher.backend, "choice", None),
            "default_mode": config.default_mode,
            "index_rows": len(index) if index is not None else None,
            "safety_screen": safety_screen_name(),
        }

    operator = keyed if config.protect_all else []

    @app.get("/metrics", dependencies=operator)
    async def metrics_endpoint():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if hide_docs:
        from fastapi.openapi.docs import get_swagger_ui_html

        @app.get("/openapi.json", dependencies=keyed, include_in_schema=False)
        async def openapi_protected():
            return JSONResponse(app.openapi())

        @app.get("/docs", dependencies=keyed, include_in_schema=False)
        async def docs_protected():
            return get_swagger_ui_html(openapi_url="/openapi.json", title="medchat")

    app.add_middleware(Edge, metrics=metrics, max_body_bytes=config.max_body_bytes)
    return app


_KINDS = {
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}
# Proxies (nginx) buffer responses unless told not to, which would hold back every token.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class _Quoted:
    """A retrieve answer in the shape of a backend's Generation (no tokens were generated)."""

    text: str
    tokens: int = 0
    prompt_tokens: int = 0


def _finish(gen: Any, settings: GenerationSettings) -> str:
    return "length" if gen.tokens >= settings.max_new_tokens else "stop"


# ----------------------------------------------------------------------------- run it


def serve(
    load: Callable[[], Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    shutdown_timeout: float = 30.0,
    index: Any = None,
) -> None:
    """Run the API with uvicorn until SIGINT/SIGTERM; in-flight requests are finished first."""
    import uvicorn

    uvicorn.run(
        create_app(load, config, index),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=shutdown_timeout,
        # The model is the bottleneck; keep-alive lets clients reuse connections under load.
        timeout_keep_alive=30,
    )
