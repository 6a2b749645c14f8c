"""Uncertainty for evaluation numbers: bootstrap intervals and paired tests, in plain numpy.

Everything is seeded and deterministic: the same inputs and seed give the same numbers. Resamples
are drawn as index matrices, in chunks so memory stays bounded on large evaluation sets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Cap on a chunk's resample matrix (entries): ~64 MB of int64 indices, whatever n is.
_MAX_CHUNK_ENTRIES = 8_000_000


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _check_settings(n_resamples: int, confidence: float) -> None:
    problems = []
    if n_resamples < 1:
        problems.append(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        problems.append(f"confidence must be in (0, 1), got {confidence}")
    if problems:
        raise ValueError("; ".join(problems))


def _chunks(n: int, n_resamples: int) -> list[int]:
    """Resample counts per chunk so each chunk's (rows, n) matrix stays under the cap."""
    rows = max(1, _MAX_CHUNK_ENTRIES // n)
    return [min(rows, n_resamples - start) for start in range(0, n_resamples, rows)]


def _resample_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``x`` over ``n_resamples`` bootstrap resamples (rows of random indices)."""
    return np.concatenate(
        [
            x[rng.integers(0, x.size, size=(rows, x.size))].mean(axis=1)
            for rows in _chunks(x.size, n_resamples)
        ]
    )


def _percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    per_example_values: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval: ``(mean, low, high)``."""
    _check_settings(n_resamples, confidence)
    x = _as_1d(per_example_values, "per_example_values")
    means = _resample_means(x, n_resamples, np.random.default_rng(seed))
    return (float(x.mean()), *_percentile_interval(means, confidence))


def bootstrap_ci_fn(
    n: int,
    stat_fn: Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile-bootstrap interval for a statistic that must be recomputed per resample.

    ``stat_fn(indices)`` scores the examples at ``indices`` (with repeats), e.g. corpus BLEU from
    summed ``metrics.bleu_stats`` rows. Returns ``(stat_fn(all indices), low, high)``. With the same
    seed it draws the same resamples as ``bootstrap_ci``.
    """
    _check_settings(n_resamples, confidence)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    stats = [
        float(stat_fn(row))
        for rows in _chunks(n, n_resamples)
        for row in rng.integers(0, n, size=(rows, n))
    ]
    return (float(stat_fn(np.arange(n))), *_percentile_interval(np.asarray(stats), confidence))


def paired_test(
    a_values: Sequence[float] | np.ndarray,
    b_values: Sequence[float] | np.ndarray,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float | tuple[float, float]]:
    """Is system A better than system B on the same examples? Paired, two-sided.

    Returns ``diff`` (mean of A - B), ``ci`` (percentile-bootstrap interval of that mean),
    ``p_bootstrap`` (paired bootstrap: twice the smaller share of resampled mean differences on
    either side of 0), ``p_permutation`` (approximate randomisation: each example's A/B labels
    swapped at random, i.e. its difference's sign flipped) and ``p_value``, which is
    ``p_permutation``: it tests "no difference" directly, where the bootstrap share is centred on
    the observed difference and only approximates a p-value.

    Both p-values count the observed data as one resample, (k + 1) / (R + 1), so they are never 0:
    with R resamples nothing below about 1/R can be claimed. 10,000 resamples by default so that
    p < 0.001 is reachable; that still takes well under a second for 1,000 examples.
    """
    _check_settings(n_resamples, confidence)
    a = _as_1d(a_values, "a_values")
    b = _as_1d(b_values, "b_values")
    if a.size != b.size:
        raise ValueError(f"paired values must have the same length: {a.size} vs {b.size}")
    d = a - b
    observed = float(d.mean())
    rng = np.random.default_rng(seed)

    boot = _resample_means(d, n_resamples, rng)
    low, high = _percentile_interval(boot, confidence)
    # Differences are sums of floats; a resample equal to 0 up to rounding counts as 0.
    tol = 1e-9 * max(1.0, float(np.abs(d).max()))
    at_most_zero = int(np.count_nonzero(boot <= tol))
    at_least_zero = int(np.count_nonzero(boot >= -tol))
    p_boot = min(1.0, 2 * (min(at_most_zero, at_least_zero) + 1) / (n_resamples + 1))

    flipped = np.concatenate(
        [
            ((rng.integers(0, 2, size=(rows, d.size), dtype=np.int8) * 2 - 1) * d).mean(axis=1)
            for rows in _chunks(d.size, n_resamples)
        ]
    )
    as_extreme = int(np.count_nonzero(np.abs(flipped) >= abs(observed) - tol))
    p_perm = (as_extreme + 1) / (n_resamples + 1)

    return {
        "diff": observed,
        "ci": (low, high),
        "p_value": p_perm,
        "p_bootstrap": p_boot,
        "p_permutation": p_perm,
    }
