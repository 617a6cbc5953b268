"""Study-level aggregation."""

from __future__ import annotations

import pytest

from fracsight.evaluation.aggregate import aggregate_labels, aggregate_studies, aggregate_study_predictions

IDS = ["a", "a", "b", "c", "c", "c"]
PROBS = [0.2, 0.4, 0.9, 0.1, 0.5, 0.6]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("mean", [0.3, 0.9, 0.4]),
        ("max", [0.4, 0.9, 0.6]),
        ("noisy_or", [1 - 0.8 * 0.6, 0.9, 1 - 0.9 * 0.5 * 0.4]),
    ],
)
def test_aggregate_studies(method: str, expected: list[float]) -> None:
    ids, probs = aggregate_studies(IDS, PROBS, method)  # type: ignore[arg-type]
    assert ids == ["a", "b", "c"]
    assert probs.tolist() == pytest.approx(expected)


def test_default_is_mean_and_order_is_first_appearance() -> None:
    ids, probs = aggregate_studies([7, 3, 7], [0.2, 0.5, 0.4])
    assert ids == [7, 3]
    assert probs.tolist() == pytest.approx([0.3, 0.5])


def test_noisy_or_with_certain_image() -> None:
    _, probs = aggregate_studies(["s", "s"], [1.0, 0.3], "noisy_or")
    assert probs.tolist() == [1.0]


def test_labels_any_positive() -> None:
    ids, labels = aggregate_labels(IDS, [0, 1, 0, 0, 0, 1])
    assert ids == ["a", "b", "c"]
    assert labels.tolist() == [1, 0, 1]
    ids, y, p = aggregate_study_predictions(IDS, [0, 1, 0, 0, 0, 1], PROBS, "max")
    assert y.tolist() == [1, 0, 1] and p.tolist() == pytest.approx([0.4, 0.9, 0.6])


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_studies(IDS, PROBS, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="entries"):
        aggregate_studies(["a"], PROBS)
