"""The model worker behind the HTTP API: one thread owns the model and answers queued requests
in batches (requests with the same generation settings decode together), with a bounded queue
and Prometheus metrics. FastAPI-free, so it can be tested without a server."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medchat.infer.generate import GenerationSettings

if TYPE_CHECKING:
    from medchat.infer.backends import Backend
    from medchat.serve.api import ServeConfig

log = logging.getLogger(__name__)


def batch_key(settings: GenerationSettings) -> GenerationSettings:
    """Settings as far as they change a greedy or beam answer: seed, temperature and top_p only
    matter when sampling, so greedy requests that differ only in them share one batch."""
    if settings.do_sample:
        return settings
    return dataclasses.replace(settings, seed=0, temperature=1.0, top_p=1.0)


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
        self.backend: Backend | None = None
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
