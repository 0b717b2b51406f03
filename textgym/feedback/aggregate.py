"""Several raters per item: per-rater normalisation, aggregation and agreement.

Raters differ in scale (one gives 4 where another gives 2) and in care. The usual remedies:

- :func:`normalize_ratings`: each rater's scores as z-scores over that rater's own ratings, so
  a harsh and a lenient rater who order items alike contribute alike;
- :func:`aggregate_ratings`: one value per sample, the mean over its raters (raw or z-scored);
- :func:`krippendorff_alpha`: chance-corrected agreement for any number of raters, missing
  values allowed, at the nominal, ordinal or interval level (1 perfect, 0 chance);
- :func:`agreement_report`: all of it for a :class:`~textgym.feedback.store.FeedbackStore`,
  as the web app's statistics page shows it.

>>> data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
...         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
...         [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
...         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]  # Krippendorff's own example
>>> [round(krippendorff_alpha(data, level=lv), 3) for lv in ("nominal", "ordinal", "interval")]
[0.743, 0.815, 0.849]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from textgym.feedback.store import FeedbackStore, Rating

LEVELS = ("nominal", "ordinal", "interval")


def krippendorff_alpha(data: Any, *, level: str = "interval") -> float:
    """Krippendorff's alpha of a (raters, items) table; None or NaN marks a missing value.

    Items with fewer than two values are not pairable and are ignored. Returns NaN when fewer
    than two pairable values exist or when all values are equal (no disagreement is possible).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r}")
    table = np.array(
        [[np.nan if v is None else float(v) for v in row] for row in data], dtype=float
    )  # (R, N)
    if table.ndim != 2:
        raise ValueError(f"data must be a (raters, items) table, got shape {table.shape}")
    values = np.unique(table[~np.isnan(table)])
    index = {v: k for k, v in enumerate(values)}
    # Coincidence matrix o[c, k]: pairs of values within an item, weighted 1 / (m_u - 1).
    o = np.zeros((len(values), len(values)))
    for unit in table.T:
        present = unit[~np.isnan(unit)]
        m = len(present)
        if m < 2:
            continue
        counts = np.zeros(len(values))
        for v in present:
            counts[index[v]] += 1
        o += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    n_c = o.sum(1)  # (V,)
    n = n_c.sum()
    if n < 2 or len(values) < 2:
        return float("nan")
    if level == "nominal":
        delta = 1.0 - np.eye(len(values))
    elif level == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    else:  # ordinal: distance by the number of values between c and k
        cum = np.cumsum(n_c)
        delta = np.zeros((len(values), len(values)))
        for c in range(len(values)):
            for k in range(c + 1, len(values)):
                between = cum[k] - (cum[c - 1] if c else 0.0)
                delta[c, k] = delta[k, c] = (between - (n_c[c] + n_c[k]) / 2) ** 2
    observed = (o * delta).sum() / n
    expected = (np.outer(n_c, n_c) * delta).sum() / (n * (n - 1))
    return float(1.0 - observed / expected) if expected > 0 else float("nan")


def normalize_ratings(ratings: Sequence[Rating]) -> dict[int, float]:
    """Each rating's z-score within its rater's ratings (rating id -> z); a rater whose scores
    are all equal gets 0 for each.

    >>> rs = [Rating(1, 10, 2, "a"), Rating(2, 11, 4, "a"), Rating(3, 10, 4, "b"), Rating(4, 11, 5, "b")]
    >>> normalize_ratings(rs)
    {1: -1.0, 2: 1.0, 3: -1.0, 4: 1.0}
    """
    by_rater: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        by_rater[r.rater].append(r)
    out = {}
    for rs in by_rater.values():
        scores = np.array([r.score for r in rs], dtype=float)
        std = scores.std()
        for r, s in zip(rs, scores, strict=True):
            out[r.id] = float((s - scores.mean()) / std) if std > 0 else 0.0
    return out


def aggregate_ratings(ratings: Sequence[Rating], *, normalize: bool = True) -> dict[int, float]:
    """One value per sample id: the mean over its ratings, of z-scores when ``normalize``.

    >>> rs = [Rating(1, 10, 2, "a"), Rating(2, 11, 4, "a"), Rating(3, 10, 4, "b"), Rating(4, 11, 5, "b")]
    >>> aggregate_ratings(rs), aggregate_ratings(rs, normalize=False)
    ({10: -1.0, 11: 1.0}, {10: 3.0, 11: 4.5})
    """
    value = normalize_ratings(ratings) if normalize else {r.id: float(r.score) for r in ratings}
    per_sample: dict[int, list[float]] = defaultdict(list)
    for r in ratings:
        per_sample[r.sample_id].append(value[r.id])
    return {sid: float(np.mean(v)) for sid, v in sorted(per_sample.items())}


def rating_table(
    ratings: Sequence[Rating],
) -> tuple[list[str], list[int], list[list[float | None]]]:
    """``(raters, sample_ids, table)``: the (raters, items) table for :func:`krippendorff_alpha`.

    A rater who rated a sample twice counts with the latest rating.
    """
    raters = sorted({r.rater for r in ratings})
    samples = sorted({r.sample_id for r in ratings})
    row, col = {r: i for i, r in enumerate(raters)}, {s: j for j, s in enumerate(samples)}
    table: list[list[float | None]] = [[None] * len(samples) for _ in raters]
    for r in sorted(ratings, key=lambda r: r.id):
        table[row[r.rater]][col[r.sample_id]] = float(r.score)
    return raters, samples, table


def agreement_report(store: FeedbackStore) -> dict[str, Any]:
    """Agreement statistics of a store: per rater, for ratings, and for pairwise preferences."""
    ratings = store.ratings()
    raters, samples, table = rating_table(ratings)
    multi = sum(1 for j in range(len(samples)) if sum(row[j] is not None for row in table) >= 2)
    per_rater = {}
    for name in raters:
        scores = [r.score for r in ratings if r.rater == name]
        per_rater[name] = {
            "ratings": len(scores),
            "mean": round(float(np.mean(scores)), 3),
            "std": round(float(np.std(scores)), 3),
        }

    # Pairwise preferences: one unit per (prompt, unordered pair); value 0/1 = which one won.
    votes: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for p in store.preference_pairs():
        a, b = sorted((p.chosen, p.rejected))
        votes[(p.prompt, a, b)][p.rater] = int(p.chosen == a)
    pair_raters = sorted({r for v in votes.values() for r in v})
    pair_table = [[v.get(r) for v in votes.values()] for r in pair_raters]
    agree = total = 0
    for v in votes.values():
        for x, y in combinations(v.values(), 2):
            agree += x == y
            total += 1

    def rounded(x: float) -> float | None:
        return None if np.isnan(x) else round(x, 4)

    return {
        "counts": store.counts(),
        "raters": per_rater,
        "ratings": {
            "items": len(samples),
            "items_with_2plus_raters": multi,
            "alpha_interval": rounded(krippendorff_alpha(table)) if samples else None,
            "alpha_ordinal": rounded(krippendorff_alpha(table, level="ordinal"))
            if samples
            else None,
        },
        "preferences": {
            "pairs": len(votes),
            "pairs_with_2plus_raters": sum(1 for v in votes.values() if len(v) >= 2),
            "percent_agreement": round(100 * agree / total, 2) if total else None,
            "alpha_nominal": rounded(krippendorff_alpha(pair_table, level="nominal"))
            if votes
            else None,
        },
    }
