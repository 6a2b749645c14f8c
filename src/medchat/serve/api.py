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
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medchat.errors import MedchatError
from medchat.ground import safety
from medchat.ground.answering import source_note
from medchat.infer.generate import GenerationSettings
from medchat.prompts import format_prompt
from medchat.serve.batching import Batcher, Job, Metrics, NotReady, QueueFull

if TYPE_CHECKING:  # quoted in annotations: FastAPI reads this module's annotations
    from medchat.ground.retrieval import RetrievalIndex
    from medchat.infer.backends import Backend

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


def _fail(status: int, message: str, headers: dict[str, str] | None = None):
    from starlette.exceptions import HTTPException

    return HTTPException(status, message, headers)


class Server:
    """What every route shares: the config, the batcher and its model, the metrics, the index;
    and the steps the routes have in common (checks, queueing, grounding, waiting)."""

    def __init__(
        self, load: Callable[[], "Backend"], config: ServeConfig, index: "RetrievalIndex | None"
    ) -> None:
        if config.default_mode != "generate" and index is None:
            raise MedchatError(f"default mode {config.default_mode!r} needs an index (--index)")
        self.config, self.index = config, index
        self.metrics = Metrics()
        self.batcher = Batcher(load, config, self.metrics)
        self.metrics.queue_depth.set_function(self.batcher.depth)
        self.retrieving = 0  # grounding calls in flight (event-loop only, so no lock)

    def require_key(self, request: Any) -> None:
        """A FastAPI dependency: 401 unless the request carries the API key (when one is set)."""
        if self.config.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = (
            auth[7:].strip()
            if auth[:7].lower() == "bearer "
            else request.headers.get("x-api-key", "")
        )
        if not hmac.compare_digest(given.encode(), self.config.api_key.encode()):
            raise _fail(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})

    def question_of(self, text: str) -> str:
        question = text.strip()
        if not question:
            raise _fail(422, "question is empty")
        if len(question) > self.config.max_question_chars:
            raise _fail(413, f"question longer than {self.config.max_question_chars} characters")
        return question

    def settings_of(self, **options: Any) -> GenerationSettings:
        n = options.pop("max_new_tokens", None) or self.config.default_max_new_tokens
        if n > self.config.max_new_tokens_limit:
            raise _fail(422, f"max_new_tokens must be <= {self.config.max_new_tokens_limit}")
        try:
            return GenerationSettings(max_new_tokens=n, **options)
        except MedchatError as e:
            raise _fail(422, str(e)) from None

    def chat_settings(self, req: Any) -> GenerationSettings:
        # Greedy unless the client asks for a temperature above 0: the model was evaluated greedy.
        sample = req.temperature is not None and req.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": req.max_completion_tokens or req.max_tokens}
        if sample:
            options.update(do_sample=True, temperature=req.temperature, top_p=req.top_p or 1.0)
        if req.seed is not None:
            options["seed"] = req.seed
        return self.settings_of(**options)

    def last_user_message(self, req: Any) -> str:
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise _fail(422, "messages: no user message to answer")
        return self.question_of(users[-1].text())

    def model_name(self) -> str:
        backend = self.batcher.backend
        return backend.name if backend is not None else "loading"

    def enqueue(self, question: str, settings: GenerationSettings, stream: bool = False):
        batcher = self.batcher
        try:
            if not batcher.ready.is_set():
                raise NotReady
            prompt = format_prompt(question, batcher.backend.prompt_template)
            return batcher.submit(prompt, settings, stream)
        except QueueFull as e:
            raise _fail(
                429, "server busy: queue full", {"Retry-After": str(e.retry_after)}
            ) from None
        except NotReady:
            raise _fail(503, "model not ready", {"Retry-After": "5"}) from None

    async def grounding(self, question: str, mode: str | None, k: int | None) -> Any:
        """What the mode puts around the question (passages, citations, a quote); generate: none.

        Retrieval embeds the question (MiniLM), so it runs off the event loop."""
        from medchat.ground.answering import Grounding, ground

        mode = mode or self.config.default_mode
        if mode == "generate":
            return Grounding(question, mode, question, [], [])
        if self.index is None:
            raise _fail(
                422,
                f"mode {mode!r} needs a knowledge-base index; this server has none "
                "(start it with `medchat serve SPEC --index INDEX_DIR`)",
            )
        if mode == "rag" and not self.batcher.ready.is_set():
            raise _fail(503, "model not ready", {"Retry-After": "5"})
        # Retrieval is work too: it shares the bound of the model's queue, so a flood of rag or
        # retrieve requests gets 429 like a flood of generate ones, instead of piling up threads.
        if self.retrieving + self.batcher.depth() >= self.config.max_queue:
            raise _fail(429, "server busy: queue full", {"Retry-After": "1"})
        lm = self.batcher.backend if mode == "rag" else None
        self.retrieving += 1
        try:
            return await asyncio.to_thread(
                ground, question, mode, lm, self.index, k or self.config.k
            )
        finally:
            self.retrieving -= 1

    def start_stream(self, g: Any, settings: GenerationSettings) -> tuple[Job | None, Any]:
        """A streamed answer's job and result queue; a retrieve answer needs no model, so its
        quote is queued whole at once."""
        if g.model_question is not None:
            return self.enqueue(g.model_question, settings, stream=True)
        results: asyncio.Queue = asyncio.Queue()
        for item in (("text", g.quote), ("done", _Quoted(g.quote))):
            results.put_nowait(item)
        return None, results

    async def answer_one(self, question: str, settings: GenerationSettings, request: Any):
        """The answer to one non-streamed request. While it waits, it watches the client: if the
        client goes away, or `request_timeout_s` passes (504), the job is cancelled, so a queued
        job is skipped and a batch whose clients have all gone stops decoding."""
        job, results = self.enqueue(question, settings)
        timeout = self.config.request_timeout_s
        deadline = time.monotonic() + timeout if timeout else None
        got = asyncio.ensure_future(results.get())
        try:
            while True:
                done, _ = await asyncio.wait({got}, timeout=0.1)
                if done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise _fail(
                        504,
                        f"no answer within {timeout:g} s (the server's "
                        "--request-timeout); ask for fewer new tokens or try again later",
                    )
                if await request.is_disconnected():
                    raise _fail(499, "client closed the request")  # nobody reads this reply
        except BaseException:
            job.cancelled.set()
            got.cancel()
            raise
        kind, value = got.result()
        if kind == "error":
            raise _fail(500, f"generation failed: {value}")
        return value


def _grounded_fields(g: Any) -> dict[str, Any]:
    return {
        "mode": g.mode,
        "grounded": g.grounded,
        "citations": [c.to_dict() for c in g.citations],
        **({"note": note} if (note := source_note(g.mode, g.grounded)) else {}),
    }


async def _stream_job(job: Job | None, results: Any) -> AsyncIterator[tuple[str, Any]]:
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


def create_app(
    load: Callable[[], "Backend"],
    config: ServeConfig | None = None,
    index: "RetrievalIndex | None" = None,
):
    """The FastAPI app; `load()` runs on the worker thread and returns a backend. `index` (a
    `retrieval.RetrievalIndex`) enables the rag and retrieve answer modes, with citations."""
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI, Request

    server = Server(load, config or ServeConfig(), index)
    config = server.config

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.batcher.start()
        # Load the safety screen's MiniLM now, not on the first question.
        await asyncio.to_thread(safety.check, "warm up")
        yield
        # uvicorn has already waited for in-flight requests; answer anything still queued.
        await asyncio.to_thread(server.batcher.close)

    hide_docs = config.protect_all and config.api_key is not None
    app = FastAPI(
        title="medchat",
        version="1",
        lifespan=lifespan,
        # protected below instead, behind the key
        docs_url=None if hide_docs else "/docs",
        openapi_url=None if hide_docs else "/openapi.json",
    )
    app.state.server = server
    app.state.batcher = server.batcher
    app.state.metrics = server.metrics
    app.state.config = config
    _error_handlers(app)

    def require_key(request: Request) -> None:  # FastAPI injects the request by this annotation
        server.require_key(request)

    keyed = [Depends(require_key)]
    AnswerRequest, ChatRequest = _request_models()
    _answer_routes(app, server, AnswerRequest, keyed)
    _chat_routes(app, server, ChatRequest, keyed)
    _operation_routes(app, server, keyed, hide_docs)
    app.add_middleware(Edge, metrics=server.metrics, max_body_bytes=config.max_body_bytes)
    return app


def _error_handlers(app: Any) -> None:
    """Errors as JSON the OpenAI client can read."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

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


def _answer_routes(app: Any, server: Server, AnswerRequest: Any, keyed: list) -> None:
    """/v1/answer and /v1/answer/stream: medchat's own answer, with its mode and citations."""
    from fastapi import Request
    from fastapi.responses import StreamingResponse

    @app.post("/v1/answer", dependencies=keyed)
    async def answer(req: AnswerRequest, request: Request):  # type: ignore[valid-type]
        start = time.perf_counter()
        question = server.question_of(req.question)
        settings = server.settings_of(**req.model_dump(exclude={"question", "mode", "k"}))
        verdict = await asyncio.to_thread(safety.check, question)
        g = await server.grounding(question, req.mode, req.k)
        if g.model_question is None:  # retrieve and extract: the knowledge base's own text
            text, tokens, model, backend = g.quote, 0, None, g.mode
        else:
            gen = await server.answer_one(g.model_question, settings, request)
            text, tokens = gen.text, gen.tokens
            model, backend = server.model_name(), server.batcher.backend.kind
        return {
            "answer": text,
            "model": model,
            "backend": backend,
            **_grounded_fields(g),
            "latency_ms": round((time.perf_counter() - start) * 1000, 1),
            "tokens": tokens,
            "safety": verdict.to_dict(),
            "disclaimer": safety.DISCLAIMER,
        }

    @app.post("/v1/answer/stream", dependencies=keyed)
    async def answer_stream(req: AnswerRequest):  # type: ignore[valid-type]
        start = time.perf_counter()
        question = server.question_of(req.question)
        settings = server.settings_of(**req.model_dump(exclude={"question", "mode", "k"}))
        verdict = await asyncio.to_thread(safety.check, question)
        g = await server.grounding(question, req.mode, req.k)
        job, results = server.start_stream(g, settings)
        model = None if g.model_question is None else server.model_name()

        async def events() -> AsyncIterator[str]:
            yield sse({"model": model, **_grounded_fields(g), "safety": verdict.to_dict()}, "meta")
            async for kind, value in _stream_job(job, results):
                if kind == "text":
                    yield sse({"text": value}, "token")
                elif kind == "done":
                    yield sse(
                        {
                            "answer": value.text,
                            "model": model,
                            **_grounded_fields(g),
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


def _chat_routes(app: Any, server: Server, ChatRequest: Any, keyed: list) -> None:
    """/v1/chat/completions and /v1/models: what an OpenAI client needs."""
    from fastapi import Request
    from fastapi.responses import StreamingResponse

    from medchat.ground.answering import sources_text

    @app.post("/v1/chat/completions", dependencies=keyed)
    async def chat_completions(req: ChatRequest, request: Request):  # type: ignore[valid-type]
        question = server.last_user_message(req)
        settings = server.chat_settings(req)
        verdict = await asyncio.to_thread(safety.check, question)
        g = await server.grounding(question, req.mode, req.k)
        sources = sources_text(g.citations)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not req.stream:
            if g.model_question is None:
                gen = _Quoted(g.quote)
            else:
                gen = await server.answer_one(g.model_question, settings, request)
            text = f"{gen.text}\n\n{sources}" if sources else gen.text
            if note := source_note(g.mode, g.grounded):
                text = f"{note}\n\n{text}"
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": server.model_name(),
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
                **_grounded_fields(g),
            }

        job, results = server.start_stream(g, settings)

        def chunk(delta: dict, finish: str | None = None) -> str:
            return sse(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": server.model_name(),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        async def events() -> AsyncIterator[str]:
            # The same text as the non-streaming answer: safety message first, disclaimer last.
            head = safety.with_disclaimer("", verdict).removesuffix(safety.DISCLAIMER)
            yield chunk({"role": "assistant", "content": head})
            async for kind, value in _stream_job(job, results):
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
        name = server.model_name()
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "medchat"}],
        }


def _operation_routes(app: Any, server: Server, keyed: list, hide_docs: bool) -> None:
    """/healthz, /readyz, /metrics, and the docs behind the key when everything is protected."""
    from fastapi.responses import JSONResponse, PlainTextResponse

    batcher, config, index = server.batcher, server.config, server.index

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

    @app.get("/readyz")
    async def readyz():
        from medchat.ground.safety.screen import load_screen

        if not batcher.ready.is_set():
            return JSONResponse({"ready": False, "model": server.model_name()}, 503)
        return {
            "ready": True,
            "model": server.model_name(),
            "backend": batcher.backend.kind,
            # how --backend auto chose it on this machine (None: named on the command line)
            "backend_choice": getattr(batcher.backend, "choice", None),
            "default_mode": config.default_mode,
            "index_rows": len(index) if index is not None else None,
            "safety_screen": "rules+minilm" if load_screen()[0] is not None else "rules",
        }

    @app.get("/metrics", dependencies=keyed if config.protect_all else [])
    async def metrics_endpoint():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(server.metrics.registry)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    if hide_docs:
        from fastapi.openapi.docs import get_swagger_ui_html

        @app.get("/openapi.json", dependencies=keyed, include_in_schema=False)
        async def openapi_protected():
            return JSONResponse(app.openapi())

        @app.get("/docs", dependencies=keyed, include_in_schema=False)
        async def docs_protected():
            return get_swagger_ui_html(openapi_url="/openapi.json", title="medchat")


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
    load: Callable[[], "Backend"],
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    shutdown_timeout: float = 30.0,
    index: "RetrievalIndex | None" = None,
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
