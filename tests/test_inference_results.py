"""Results say only what the bundle's heads say: decisions, dictionaries and study aggregation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fracsight.bundle import OperatingPoint
from fracsight.inference.results import (
    ClassResult,
    FailedPrediction,
    StudyPrediction,
    at_operating_point,
    finding_of,
)


@pytest.mark.parametrize(
    ("suspected", "confident", "decision"),
    [
        (None, True, "most likely spiral"),
        (None, False, "class uncertain (top: spiral)"),
        (True, True, "fracture suspected, most likely spiral"),
        (True, False, "fracture suspected, type uncertain"),
        (False, True, "no fracture detected"),
    ],
)
def test_decision_words_per_head_combination(suspected, confident, decision) -> None:
    classification = ClassResult("spiral", 0.6, confident, 0.5, {"spiral": 0.6, "oblique": 0.4})
    study = StudyPrediction(
        "s",
        ("a.png",),
        True,
        fracture_probability=None if suspected is None else 0.7,
        fracture_suspected=suspected,
        operating_point=None if suspected is None else "balanced",
        threshold=None if suspected is None else 0.5,
        classification=classification,
    )
    assert study.decision == decision
    d = study.to_dict()
    assert ("fracture_probability" in d) == (suspected is not None)
    assert d["classification"]["predicted"] == "spiral"


def test_class_result_from_probabilities() -> None:
    r = ClassResult.from_probabilities({"a": 0.2, "b": 0.5, "c": 0.3}, min_probability=0.5)
    assert (r.predicted, r.probability, r.confident) == ("b", 0.5, True)
    assert not ClassResult.from_probabilities({"a": 0.45, "b": 0.55}, 0.6).confident


def test_softmax_is_stable() -> None:
    from fracsight.explain import softmax

    out = softmax(np.array([[1000.0, 1000.0], [0.0, -1000.0]]), axis=1)
    assert np.allclose(out, [[0.5, 0.5], [1.0, 0.0]])


def test_what_a_binary_head_finds_is_named_by_its_positive_class() -> None:
    assert finding_of("fractured") == "fracture" and finding_of("positive") == "fracture"
    assert finding_of("abnormal") == finding_of("Abnormal ") == "abnormality"  # MURA's
    words = {
        StudyPrediction("s", ("a",), True, 0.9, s, finding="abnormality").decision for s in (True, False)
    }
    assert words == {"abnormality suspected", "no abnormality detected"}


def test_at_operating_point_refuses_a_bare_name() -> None:
    # at_operating_point(result, "triage") raised AttributeError: 'str' object has no attribute 'name'
    study = StudyPrediction("s", ("a.png",), True, 0.3, True, "balanced", 0.2)
    with pytest.raises(TypeError, match=r"not the name 'triage': use predictor\.spec\.operating_point"):
        at_operating_point(study, "triage")  # type: ignore[arg-type]
    triage = at_operating_point(study, OperatingPoint("triage", 0.4, "test"))
    assert (triage.operating_point, triage.fracture_suspected) == ("triage", False)


def test_a_failed_file_reads_as_an_error_in_a_loop_over_results() -> None:
    # [r.decision for r in predictor.predict_many(files)] stopped with AttributeError at a bad file
    failed = FailedPrediction("a.png", "empty_file", "a.png: the file is empty (0 bytes)")
    assert (failed.decision, failed.reliable) == ("error", False)
    entry = {"source": "a.png", "decision": "error", "reliable": False, "error_code": "empty_file"}
    assert failed.to_dict() == entry | {"error": failed.error}  # as predict --json's CSV row says it


def test_a_view_outside_the_model_does_not_make_the_regions_differ() -> None:
    """A photo among two hand views read as "leg": its region means nothing, so it is no sign that
    the views are not one examination (its own warning says what is wrong with it)."""
    study = StudyPrediction(
        "s",
        ("pa.png", "lat.png", "photo.jpg"),
        False,
        region="hand",
        region_probabilities={"hand": 0.7, "leg": 0.3},
        view_regions=("hand", "hand", "leg"),
        unreliable=("photo.jpg",),
    )
    assert study.regions_differ is None
    assert study.warnings == (
        "not reliable on its own: photo.jpg (see each view's warnings); the study's result still includes it",
    )
    hip = replace(study, view_regions=("hand", "hip", "leg"))
    assert hip.regions_differ is not None and "(hand: pa.png; hip: lat.png)" in hip.regions_differ
