"""The learned half of the safety screen: small networks over MiniLM sentence embeddings.

Trained by `medchat safety train` on the corpus written for the project
(`resources/safety/corpus.jsonl`) and shipped as `resources/safety/screen.json` (about 290 KB of
float16 weights, 58 KB per network). Its input is the MiniLM embedding of the message plus five
signals from the rules (a rule fired, a general question, a past event, a negation, an animal).
It is an ensemble
of five small networks, trained alike from five seeds, whose probabilities are averaged; in each,
one hidden layer of 64 GELU units feeds two outputs:

- the *level*: softmax over none / urgent / emergency;
- the *category*: softmax over the taxonomy's presentations, which names the emergency when the
  rules did not (trained on the labelled rows only; it shares the hidden layer).

Why this shape (measured by 5-fold cross-validation on the corpus, docs/safety.md): a linear head
on the embedding recalled 0.65 of the emergencies at a 3% false-positive rate, one network 0.82;
more hidden units, max-pooled tokens, n-grams or a nearest-neighbour vote moved it by noise.
Averaging five networks lowered the cross-validated false-positive rate at 90% recall from
0.090 to 0.073 (corpus of 5,639 rows); five networks of 32 units did worse than one of 64.

Training is full-batch AdamW from a fixed seed on one thread, so a rerun on the same machine
writes the same bytes. MiniLM is loaded lazily; when it cannot be loaded, `load_screen()` returns
(None, why) and `check` runs on the rules alone (every verdict says so).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medchat.ground.safety.rules import RuleResult
from medchat.ground.safety.taxonomy import BY_ID, TAXONOMY

log = logging.getLogger(__name__)

LEVEL_CLASSES = ("none", "urgent", "emergency")
CATEGORY_CLASSES = tuple(e.id for e in TAXONOMY)
SIGNALS = ("rule_hit", "general_question", "past_event", "negation", "animal")
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
SCREEN_FILE = "screen.json"
FORMAT = "medchat-safety-screen/4"  # /4: an ensemble (arrays carry a member axis)


@dataclass(frozen=True)
class TrainSettings:
    """How the screen is trained (recorded in screen.json)."""

    seed: int = 20261202  # weight init, dropout and the calibration folds; member k adds 1000*k
    members: int = 5  # networks averaged: one is noisier (CV FPR 0.090 vs 0.073 at 90% recall)
    hidden: int = 64  # hidden units; 128 gained about a point of recall for twice the weights
    epochs: int = 300  # full-batch AdamW steps; the loss is flat well before
    lr: float = 3e-3
    weight_decay: float = 1e-3
    dropout: float = 0.2  # on the inputs and the hidden layer: the corpus is small
    category_weight: float = 1.0  # the category loss beside the level loss
    folds: int = 5  # cross-validation folds that calibrate the thresholds
    # The emergency threshold: the highest P(emergency) whose cross-validated recall (rules and
    # screen combined) is still at least this. Recall first: a missed emergency costs far more
    # than a needless warning, and the corpus's negatives are all written to look alike. The
    # corpus is harder than what people type (many rows only hint), so 0.94 here meant 0.97 on
    # the pooled held-out sets B-E (chosen on their counts; docs/safety.md).
    target_recall: float = 0.94
    # A rule hit stands unless the screen puts P(emergency) below this: that removed a third of
    # the rules' false alarms on the corpus ("this tie is choking me lol") and no true hit there.
    veto: float = 0.02
    urgent_recall: float = 0.85  # the urgent threshold: lowest that keeps this urgent recall


def rule_signals(result: RuleResult) -> np.ndarray:
    """The rule signals the network sees beside the embedding, as 0/1 floats."""
    return np.array(
        [bool(result.hits), result.general, result.past, result.negated, result.animal],
        dtype=np.float32,
    )


# ----------------------------------------------------------------------------- embedding

_EMBED_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def load_embedder() -> Any:
    """A private CPU MiniLM for the screen (raises ImportError/OSError when it cannot load)."""
    from medchat.models.embedder import load_embedder as load_minilm

    # __wrapped__: our own instance (as retrieval's), since we change its length limit.
    model = load_minilm.__wrapped__("cpu")
    # Questions are short; 128 word pieces hold a long rambling message and halve the worst case.
    model.max_seq_length = 128
    return model.eval()


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 MiniLM embeddings of `texts`, in order."""
    import torch

    model = load_embedder()
    # One caller at a time: a fast tokenizer is not safe to share between threads.
    with _EMBED_LOCK, torch.inference_mode():
        vecs = model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    return np.asarray(vecs, dtype=np.float32)


# ----------------------------------------------------------------------------- the model


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _gelu(x: np.ndarray) -> np.ndarray:
    # The tanh form, which training uses too, so numpy inference matches torch exactly.
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


@dataclass
class Screen:
    """The trained network and its thresholds, as shipped in screen.json. numpy at inference."""

    mean: np.ndarray  # input standardisation, (384 + len(SIGNALS),)
    std: np.ndarray
    w1: np.ndarray  # (members, inputs, hidden)
    b1: np.ndarray  # (members, hidden)
    w_level: np.ndarray  # (members, hidden, 3)
    b_level: np.ndarray
    w_category: np.ndarray  # (members, hidden, len(CATEGORY_CLASSES))
    b_category: np.ndarray
    emergency_threshold: float
    urgent_threshold: float
    veto: float
    meta: dict[str, Any]

    def probs(self, emb: np.ndarray, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(level) rows (none, urgent, emergency) and P(category) rows: the members' mean."""
        x = (np.hstack([emb, signals]) - self.mean) / self.std
        level = np.zeros((len(x), self.w_level.shape[2]))
        category = np.zeros((len(x), self.w_category.shape[2]))
        for k in range(len(self.w1)):
            h = _gelu(x @ self.w1[k] + self.b1[k])
            level += _softmax(h @ self.w_level[k] + self.b_level[k])
            category += _softmax(h @ self.w_category[k] + self.b_category[k])
        return level / len(self.w1), category / len(self.w1)

    def level(self, p: np.ndarray, rule_hit: bool) -> str:
        """One row's level: a rule hit (unless vetoed) or P(emergency) over its threshold is an
        emergency; then P(urgent or emergency) over the urgent threshold is urgent."""
        if p[2] >= self.emergency_threshold or (rule_hit and p[2] >= self.veto):
            return "emergency"
        if p[1] + p[2] >= self.urgent_threshold:
            return "urgent"
        return "none"

    # ---- (de)serialisation: JSON with float16 arrays in base64, so a rerun is byte-identical

    ARRAYS = ("mean", "std", "w1", "b1", "w_level", "b_level", "w_category", "b_category")

    def to_json(self) -> str:
        def pack(a: np.ndarray) -> dict[str, Any]:
            a16 = np.ascontiguousarray(a, dtype="<f2")
            return {"shape": list(a16.shape), "f16": base64.b64encode(a16.tobytes()).decode()}

        doc = {
            "format": FORMAT,
            "embedder": EMBEDDER,
            "level_classes": list(LEVEL_CLASSES),
            "category_classes": list(CATEGORY_CLASSES),
            "signals": list(SIGNALS),
            "emergency_threshold": round(self.emergency_threshold, 6),
            "urgent_threshold": round(self.urgent_threshold, 6),
            "veto": self.veto,
            "meta": self.meta,
            "weights": {name: pack(getattr(self, name)) for name in self.ARRAYS},
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Screen:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown safety screen format {doc.get('format')!r}")
        if tuple(doc["category_classes"]) != CATEGORY_CLASSES:
            raise ValueError("the screen's categories differ from the taxonomy; retrain it")

        def unpack(d: dict[str, Any]) -> np.ndarray:
            raw = np.frombuffer(base64.b64decode(d["f16"]), dtype="<f2")
            return raw.reshape(d["shape"]).astype(np.float32)

        arrays = [unpack(doc["weights"][name]) for name in cls.ARRAYS]
        return cls(
            *arrays,
            emergency_threshold=float(doc["emergency_threshold"]),
            urgent_threshold=float(doc["urgent_threshold"]),
            veto=float(doc["veto"]),
            meta=doc["meta"],
        )


def fit_member(
    xs: np.ndarray, y_level: np.ndarray, y_category: np.ndarray, settings: TrainSettings, seed: int
) -> tuple[np.ndarray, ...]:
    """Train one network on standardised inputs: (w1, b1, w_level, b_level, w_category,
    b_category). Full-batch AdamW on one thread from `seed`: the same weights on every run.
    `y_category` is -1 on rows without a category (they only train the level).
    """
    import torch

    xt = torch.tensor(xs, dtype=torch.float32)
    counts = np.bincount(y_level, minlength=3).astype(np.float64)
    # Balanced: each level present weighs as much as any other, whatever its size.
    weight = torch.tensor(np.where(counts > 0, len(y_level) / (3 * np.maximum(counts, 1)), 0.0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same summation order on every run
    try:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        lin1 = torch.nn.Linear(xs.shape[1], settings.hidden)
        lin_level = torch.nn.Linear(settings.hidden, 3)
        lin_cat = torch.nn.Linear(settings.hidden, len(CATEGORY_CLASSES))
        for lin in (lin1, lin_level, lin_cat):
            bound = 1 / np.sqrt(lin.in_features)
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.zero_()
        drop = torch.nn.Dropout(settings.dropout)
        params = [*lin1.parameters(), *lin_level.parameters(), *lin_cat.parameters()]
        opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        yl = torch.tensor(y_level, dtype=torch.long)
        yc = torch.tensor(y_category, dtype=torch.long)
        has_cat = bool((yc >= 0).any())
        for _ in range(settings.epochs):
            opt.zero_grad()
            h = drop(torch.nn.functional.gelu(lin1(drop(xt)), approximate="tanh"))
            loss = torch.nn.functional.cross_entropy(lin_level(h), yl, weight=weight.float())
            if has_cat and settings.category_weight:
                loss = loss + settings.category_weight * torch.nn.functional.cross_entropy(
                    lin_cat(h), yc, ignore_index=-1
                )
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)

    def t(m: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
        return m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()

    return (*t(lin1), *t(lin_level), *t(lin_cat))


def _fit_member_job(args: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    return fit_member(*args)


def fit_networks(
    problems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], settings: TrainSettings
) -> list[Screen]:
    """Train one ensemble per (x, y_level, y_category) problem, thresholds left at 0.5
    (`choose_thresholds` sets them). All members of all problems are fitted as one batch of
    jobs, so cross-validation and leave-one-category-out keep every CPU busy."""
    scaled = []
    jobs = []
    for x, y_level, y_category in problems:
        mean = x.mean(axis=0)
        std = x.std(axis=0) + 1e-6
        scaled.append((mean, std))
        xs = ((x - mean) / std).astype(np.float32)
        jobs += [
            (xs, y_level, y_category, settings, settings.seed + 1000 * k)
            for k in range(settings.members)
        ]
    parts = _map_jobs(_fit_member_job, jobs)
    screens = []
    for i, (mean, std) in enumerate(scaled):
        mine = parts[i * settings.members : (i + 1) * settings.members]
        screens.append(
            Screen(
                mean.astype(np.float32),
                std.astype(np.float32),
                *(np.stack([p[j] for p in mine]) for j in range(6)),
                emergency_threshold=0.5,
                urgent_threshold=0.5,
                veto=settings.veto,
                meta={},
            )
        )
    return screens


def workers(jobs: int) -> int:
    """Worker processes for `jobs` fits: one per CPU, at most 8 ($MEDCHAT_SAFETY_WORKERS caps)."""
    import os

    return max(1, min(jobs, os.cpu_count() or 1, int(os.environ.get("MEDCHAT_SAFETY_WORKERS", 8))))


def _map_jobs(fn: Any, jobs: Sequence[Any]) -> list[Any]:
    """`fn` over `jobs`, in order, in worker processes when there is more than one CPU.

    Every fit runs on one thread from its own seed, so the result is the same bytes whether the
    jobs run here or in workers; workers only make leave-one-category-out take half the time on
    2 cores. Spawned, not forked: the parent has already run MiniLM's OpenMP threads.
    """
    n = workers(len(jobs))
    if n <= 1:
        return [fn(j) for j in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, jobs))


def resources() -> Any:
    """The package folder of the shipped sets and screen.json (an importlib Traversable)."""
    return importlib.resources.files("medchat") / "resources" / "safety"


def shipped_screen_text() -> str:
    return (resources() / SCREEN_FILE).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def load_screen() -> tuple[Screen | None, str | None]:
    """The shipped screen with MiniLM loaded, or (None, why) when either cannot be had."""
    try:
        screen = Screen.from_json(shipped_screen_text())
        load_embedder()
    except Exception as e:  # any failure means: rules alone, said on every verdict
        why = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        log.warning("safety: learned screen unavailable, rules alone (%s)", why)
        return None, why
    return screen, None


# ----------------------------------------------------------------------------- training


def _folds(n: int, k: int, seed: int, groups: Sequence[str]) -> np.ndarray:
    """Fold number per row; rows of one category stay spread over all folds (stratified)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(n, dtype=np.int64)
    for g in sorted(set(groups)):
        idx = np.array([i for i in range(n) if groups[i] == g])
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return fold


def level_targets(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([LEVEL_CLASSES.index(r["level"]) for r in rows])


def category_targets(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Category index per row; -1 where there is none (the row trains the level only)."""
    return np.array(
        [CATEGORY_CLASSES.index(r["category"]) if r.get("category") in BY_ID else -1 for r in rows]
    )


def problem(
    emb: np.ndarray, signals: np.ndarray, rows: Sequence[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, level targets, category targets) of labelled rows, for `fit_networks`."""
    return np.hstack([emb, signals]), level_targets(rows), category_targets(rows)


def fit_rows(
    emb: np.ndarray, signals: np.ndarray, rows: Sequence[dict[str, Any]], settings: TrainSettings
) -> Screen:
    return fit_networks([problem(emb, signals, rows)], settings)[0]


def cross_val_probs(
    emb: np.ndarray, signals: np.ndarray, rows: Sequence[dict[str, Any]], settings: TrainSettings
) -> np.ndarray:
    """Out-of-fold P(level) for every corpus row (each row scored by a network that never saw
    it): what the thresholds are calibrated on, and what `medchat safety eval` reports."""
    groups = [f"{r['level']}/{r.get('category') or r.get('near') or ''}" for r in rows]
    fold = _folds(len(rows), settings.folds, settings.seed, groups)
    out = np.zeros((len(rows), 3))
    nets = fit_networks(
        [
            problem(
                emb[fold != f],
                signals[fold != f],
                [r for r, g in zip(rows, fold, strict=True) if g != f],
            )
            for f in range(settings.folds)
        ],
        settings,
    )
    for f, net in enumerate(nets):
        out[fold == f] = net.probs(emb[fold == f], signals[fold == f])[0]
    return out


def choose_thresholds(
    probs: np.ndarray, y: np.ndarray, rule_hit: np.ndarray, settings: TrainSettings
) -> tuple[float, float]:
    """Emergency: the highest threshold whose combined recall (rule hit not vetoed, or
    P(emergency) over it) reaches target_recall on out-of-fold scores. Urgent: the highest
    threshold on P(urgent or emergency) that keeps urgent_recall of the urgent rows."""
    pe = probs[:, 2]
    pos = y == 2
    by_rules = rule_hit & (pe >= settings.veto)
    need = int(np.ceil(settings.target_recall * pos.sum())) - int((pos & by_rules).sum())
    rest = np.sort(pe[pos & ~by_rules])[::-1]  # positives the rules leave to the screen
    emergency_t = 1.0
    if need > 0:
        i = min(need, len(rest)) - 1
        # Halfway to the next lower score, not on a row's own score: a rerun whose embeddings
        # differ in the last float bit (other batch shapes) must not flip that row.
        emergency_t = float(rest[i] + rest[i + 1]) / 2 if i + 1 < len(rest) else float(rest[i])
    pu = probs[:, 1] + probs[:, 2]
    urgent_scores = np.sort(pu[y == 1])
    urgent_t = 0.5
    if len(urgent_scores):
        j = int(np.floor((1 - settings.urgent_recall) * len(urgent_scores)))
        urgent_t = float(urgent_scores[j])
        if j > 0:  # halfway to the next lower score, as above
            urgent_t = float(urgent_scores[j - 1] + urgent_scores[j]) / 2
    return emergency_t, min(urgent_t, emergency_t)


def corpus_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
