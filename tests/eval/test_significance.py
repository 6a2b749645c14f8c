"""Bootstrap intervals and paired tests: coverage, determinism, power and speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medchat.eval.significance import bootstrap_ci, bootstrap_ci_fn, paired_test


def scores(n: int, seed: int, loc: float = 40.0) -> np.ndarray:
    """Per-example scores shaped like ROUGE values: 0-100, skewed."""
    return np.clip(np.random.default_rng(seed).gamma(2.0, loc / 2.0, size=n), 0.0, 100.0)


def test_ci_contains_the_mean_and_narrows_with_n() -> None:
    small_mean, small_lo, small_hi = bootstrap_ci(scores(50, seed=1))
    big_mean, big_lo, big_hi = bootstrap_ci(scores(2000, seed=1))
    assert small_lo < small_mean < small_hi
    assert big_lo < big_mean < big_hi
    # Width shrinks like 1/sqrt(n): 40x the data, about a sixth of the width.
    assert (big_hi - big_lo) < 0.3 * (small_hi - small_lo)


def test_ci_is_deterministic_and_seeded() -> None:
    x = scores(300, seed=2)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci(x, seed=7) != bootstrap_ci(x, seed=8)
    assert bootstrap_ci(x, confidence=0.99)[1] < bootstrap_ci(x, confidence=0.9)[1]


def test_ci_fn_draws_the_same_resamples_as_ci() -> None:
    x = scores(200, seed=3)
    via_fn = bootstrap_ci_fn(len(x), lambda idx: float(x[idx].mean()), n_resamples=500, seed=4)
    assert via_fn == pytest.approx(bootstrap_ci(x, n_resamples=500, seed=4))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=50),
    st.integers(0, 2**32 - 1),
)
def test_ci_is_ordered(values: list[float], seed: int) -> None:
    _, low, high = bootstrap_ci(values, n_resamples=200, seed=seed)
    assert min(values) - 1e-9 <= low <= high <= max(values) + 1e-9


def test_constant_values_give_a_point_interval() -> None:
    assert bootstrap_ci([42.0] * 10) == pytest.approx((42.0, 42.0, 42.0))


def test_clearly_better_model_is_significant() -> None:
    b = scores(300, seed=5)
    a = np.clip(b + 5.0 + np.random.default_rng(6).normal(0.0, 5.0, size=b.size), 0, 100)
    result = paired_test(a, b, seed=0)
    assert result["diff"] == pytest.approx(float(np.mean(a - b)))
    assert result["ci"][0] > 0.0
    assert result["p_value"] < 0.01
    assert result["p_bootstrap"] < 0.01
    assert result["p_value"] == result["p_permutation"]


def test_identical_models_are_not_different() -> None:
    a = scores(300, seed=7)
    result = paired_test(a, a.copy())
    assert result["diff"] == 0.0
    assert result["ci"] == (0.0, 0.0)
    assert result["p_value"] == 1.0
    assert result["p_bootstrap"] == 1.0


def test_noisy_but_equal_models_are_not_significant() -> None:
    a = scores(400, seed=8)
    # Zero-mean noise by construction: every +e has a matching -e.
    e = np.random.default_rng(9).normal(0.0, 10.0, size=200)
    b = a + np.concatenate([e, -e])
    result = paired_test(a, b)
    assert result["p_value"] > 0.05
    assert result["p_bootstrap"] > 0.05
    assert result["ci"][0] < 0.0 < result["ci"][1]
    # Two independent draws from one distribution (fixed seeds, so not flaky).
    assert paired_test(scores(400, seed=10), scores(400, seed=11))["p_value"] > 0.05


def test_paired_test_is_deterministic() -> None:
    a, b = scores(100, seed=12), scores(100, seed=13)
    assert paired_test(a, b, seed=3) == paired_test(a, b, seed=3)
    assert paired_test(a, b, seed=3) != paired_test(a, b, seed=4)


def test_p_value_is_never_zero() -> None:
    result = paired_test(np.full(50, 90.0), np.full(50, 10.0), n_resamples=999)
    assert result["p_value"] == pytest.approx(1 / 1000)


def test_thousand_by_thousand_is_fast() -> None:
    a, b = scores(1000, seed=14), scores(1000, seed=15)
    start = time.perf_counter()
    bootstrap_ci(a, n_resamples=1000)
    paired_test(a, b, n_resamples=1000)
    assert time.perf_counter() - start < 1.0


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"n_resamples.*confidence"):
        bootstrap_ci([1.0], n_resamples=0, confidence=1.5)
