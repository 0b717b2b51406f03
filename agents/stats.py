"""Statistics for comparing runs over a few seeds: bootstrap confidence intervals and the IQM.

With 2 to 10 seeds per algorithm, a mean alone says little. Following Agarwal et al. (2021),
"Deep RL at the Edge of the Statistical Precipice", we report the mean with a percentile
bootstrap confidence interval over seeds, and the interquartile mean (IQM), which is less
sensitive to one lucky or broken seed than the mean and less noisy than the median.

When every run is scored on the same held-out prompts, two sources of noise add up: which
seeds were run and which prompts were drawn. :func:`stratified_bootstrap_ci` resamples both
(seeds, then prompts within each resampled seed), so its interval covers the prompt noise a
seed-only bootstrap of per-run means ignores. :func:`probability_of_improvement` is
Agarwal et al.'s P(X > Y): how likely a run of one algorithm scores above a run of another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]


def _as_values(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"values must be finite, got {x.tolist()}")
    return x


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``).

    ``int(0.25 * n)`` values are cut from each end, so with fewer than 4 values it is the mean.

    >>> iqm([1, 2, 3, 4, 5, 6, 7, 100])
    4.5
    >>> iqm([1.0, 2.0, 6.0])
    3.0
    """
    x = np.sort(_as_values(values))
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """IQM of every row of ``samples`` (R, n) -> (R,)."""
    n = samples.shape[1]
    cut = int(0.25 * n)
    return np.sort(samples, axis=1)[:, cut : n - cut].mean(axis=1)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    statistic: str = "mean",
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (or IQM) of ``values``.

    Resamples the n values with replacement ``num_resamples`` times, computes the statistic of
    each resample and returns its ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles. One value gives the degenerate interval ``(x, x)``. Seeded: same input, same
    interval.

    Args:
        values: one number per seed (run).
        confidence: coverage in (0, 1).
        num_resamples: bootstrap resamples.
        statistic: ``"mean"`` or ``"iqm"``.
        seed: seed of the resampling.

    >>> bootstrap_ci([0.5, 0.5, 0.5])
    (0.5, 0.5)
    >>> low, high = bootstrap_ci([0.1, 0.2, 0.3, 0.4])
    >>> 0.1 <= low < 0.25 < high <= 0.4
    True
    """
    x = _as_values(values)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"num_resamples must be a positive int, got {num_resamples!r}")
    stats: dict[str, Statistic] = {"mean": lambda s: s.mean(axis=1), "iqm": _iqm_rows}
    if statistic not in stats:
        raise ValueError(f"statistic must be one of {list(stats)}, got {statistic!r}")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(x.size, size=(num_resamples, x.size))]  # (R, n)
    dist = stats[statistic](samples)  # (R,)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(dist, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_band(
    curves: np.ndarray, confidence: float = 0.95, num_resamples: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and pointwise percentile-bootstrap band of ``curves`` (n seeds, G grid points).

    Returns ``(mean (G,), low (G,), high (G,))``; the same seed resamples are used at every
    grid point, so the band is that of whole curves.

    >>> mean, low, high = bootstrap_band(np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> mean.tolist(), low.tolist(), high.tolist()
    ([1.0, 2.0], [0.0, 1.0], [2.0, 3.0])
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[0] == 0:
        raise ValueError(f"curves must have shape (seeds, points), got {curves.shape}")
    mean = curves.mean(axis=0)
    if curves.shape[0] == 1:
        return mean, mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    pick = rng.integers(curves.shape[0], size=(num_resamples, curves.shape[0]))  # (R, n)
    dist = curves[pick].mean(axis=1)  # (R, G)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(dist, [alpha, 1 - alpha], axis=0)
    return mean, low, high


def _as_table(scores: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"scores must be a non-empty (seeds, prompts) table (the same prompts for every "
            f"seed), got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite")
    return x


def _check_confidence(confidence: float, num_resamples: int) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"num_resamples must be a positive int, got {num_resamples!r}")
    return (1 - confidence) / 2


def stratified_bootstrap_ci(
    scores: Sequence[Sequence[float]] | np.ndarray,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    statistic: str = "mean",
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (or IQM) of per-prompt ``scores``
    (seeds, prompts), resampling seeds and then prompts within each resampled seed.

    Each resample draws S seeds with replacement, then for each drawn seed P of its prompt
    scores with replacement, and takes the statistic of the S * P values (the IQM pools them,
    as Agarwal et al. pool runs and tasks). With one seed it is the bootstrap over prompts;
    with one prompt, the bootstrap over seeds.

    Args:
        scores: ``scores[s][p]``: the score of seed s's run on held-out prompt p.
        confidence / num_resamples / seed: as in :func:`bootstrap_ci`.
        statistic: ``"mean"`` or ``"iqm"``.

    >>> stratified_bootstrap_ci([[1.0, 1.0], [1.0, 1.0]])
    (1.0, 1.0)
    >>> low, high = stratified_bootstrap_ci([[0.0, 1.0], [0.5, 1.5]])
    >>> 0.0 < low < 0.75 < high < 1.5
    True
    """
    x = _as_table(scores)
    alpha = _check_confidence(confidence, num_resamples)
    stats: dict[str, Statistic] = {"mean": lambda v: v.mean(axis=1), "iqm": _iqm_rows}
    if statistic not in stats:
        raise ValueError(f"statistic must be one of {list(stats)}, got {statistic!r}")
    S, P = x.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // (S * P))  # bounds the (chunk, S, P) resample array
    dist = []
    for done in range(0, num_resamples, chunk):
        r = min(chunk, num_resamples - done)
        seeds = rng.integers(S, size=(r, S, 1))  # (r, S, 1)
        prompts = rng.integers(P, size=(r, S, P))  # (r, S, P)
        dist.append(stats[statistic](x[seeds, prompts].reshape(r, S * P)))
    low, high = np.quantile(np.concatenate(dist), [alpha, 1 - alpha])
    return float(low), float(high)


def _win_rate(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 over all pairs of the last axes: (..., m), (..., n) -> (...)."""
    diff = x[..., :, None] - y[..., None, :]  # (..., m, n)
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-2, -1))


@dataclass(frozen=True)
class Improvement:
    """P(X > Y) with its bootstrap confidence interval, over ``m`` and ``n`` runs."""

    probability: float
    low: float
    high: float
    m: int
    n: int


def probability_of_improvement(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    paired: bool = False,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> Improvement:
    """Agarwal et al.'s probability of improvement of X over Y: the probability that a run of
    X scores higher than a run of Y (ties count half), the Mann-Whitney U statistic
    ``mean over (i, j) of [x_i > y_j] + [x_i = y_j] / 2``, with a percentile bootstrap interval.

    ``x`` and ``y`` hold one score per run (e.g. each seed's held-out mean reward). With
    ``paired`` (runs with the same seeds, in the same order: the same data order, prompts and
    initial model), the bootstrap resamples seeds jointly for both, keeping that pairing;
    otherwise it resamples the runs of each independently (as ``rliable`` does).

    >>> probability_of_improvement([0.9, 0.8, 0.95], [0.1, 0.2, 0.15]).probability
    1.0
    >>> probability_of_improvement([1.0, 2.0], [1.0]).probability  # one win, one tie
    0.75
    """
    a, b = _as_values(x), _as_values(y)
    alpha = _check_confidence(confidence, num_resamples)
    if paired and a.size != b.size:
        raise ValueError(f"paired runs need as many of each, got {a.size} and {b.size}")
    point = float(_win_rate(a, b))
    rng = np.random.default_rng(seed)
    pick_a = rng.integers(a.size, size=(num_resamples, a.size))
    pick_b = pick_a if paired else rng.integers(b.size, size=(num_resamples, b.size))
    dist = _win_rate(a[pick_a], b[pick_b])  # (R,)
    low, high = np.quantile(dist, [alpha, 1 - alpha])
    return Improvement(point, float(low), float(high), int(a.size), int(b.size))


@dataclass(frozen=True)
class Summary:
    """Mean, its bootstrap confidence interval, and the IQM of one metric over seeds."""

    mean: float
    low: float
    high: float
    iqm: float
    n: int


def summarize(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Summary:
    """:class:`Summary` of ``values`` (one per seed).

    >>> summarize([1.0, 2.0, 3.0, 4.0]).iqm
    2.5
    """
    x = _as_values(values)
    low, high = bootstrap_ci(x, confidence)
    return Summary(float(x.mean()), low, high, iqm(x), int(x.size))


__all__ = [
    "Improvement",
    "Summary",
    "bootstrap_band",
    "bootstrap_ci",
    "iqm",
    "probability_of_improvement",
    "stratified_bootstrap_ci",
    "summarize",
]
