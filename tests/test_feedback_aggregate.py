"""Rater aggregation: Krippendorff's alpha edge cases, per-rater normalisation."""

from __future__ import annotations

import math

import pytest

from textgym.feedback.aggregate import (
    aggregate_ratings,
    krippendorff_alpha,
    normalize_ratings,
    rating_table,
)
from textgym.feedback.store import Rating


def test_alpha_extremes_and_missing_values():
    assert krippendorff_alpha([[1, 2, 3, 4], [1, 2, 3, 4]]) == pytest.approx(1.0)
    # Systematic disagreement is below chance.
    assert krippendorff_alpha([[1, 5, 1, 5], [5, 1, 5, 1]]) < 0
    # Items with one value are not pairable and change nothing.
    assert krippendorff_alpha([[1, 2, 3, None], [1, 2, 3, 5]]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([[1, None], [None, 2]]))  # nothing pairable
    assert math.isnan(krippendorff_alpha([[3, 3], [3, 3]]))  # no variation at all
    with pytest.raises(
        ValueError, match=r"level must be one of \['nominal', 'ordinal', 'interval'\]"
    ):
        krippendorff_alpha([[1, 2]], level="ratio")


def test_normalisation_removes_rater_offsets():
    # Rater b scores every item exactly 2 points above rater a.
    ratings = [
        Rating(i, sample, score, rater)
        for i, (sample, score, rater) in enumerate(
            [(1, 1, "a"), (2, 2, "a"), (3, 3, "a"), (1, 3, "b"), (2, 4, "b"), (3, 5, "b")]
        )
    ]
    z = normalize_ratings(ratings)
    assert [round(z[i], 3) for i in range(3)] == [round(z[i], 3) for i in range(3, 6)]
    raw = aggregate_ratings(ratings, normalize=False)
    assert raw == {1: 2.0, 2: 3.0, 3: 4.0}
    assert aggregate_ratings(ratings)[2] == pytest.approx(0.0)
    raters, samples, table = rating_table(ratings)
    assert (raters, samples) == (["a", "b"], [1, 2, 3])
    assert krippendorff_alpha(table) < 1.0  # raw scores disagree by the offset


def test_latest_rating_of_a_rater_counts_in_the_table():
    ratings = [Rating(1, 7, 2, "a"), Rating(2, 7, 5, "a")]
    assert rating_table(ratings)[2] == [[5.0]]
