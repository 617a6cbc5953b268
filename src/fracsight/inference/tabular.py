"""Flat rows and files for batch results (CSV for the CLI and the app, one place for both)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fracsight.inference.results import NOTICE, FailedPrediction, Prediction, StudyPrediction

__all__ = [
    "CSV_COLUMNS",
    "IMAGE_SUFFIXES",
    "collect_inputs",
    "csv_text",
    "result_row",
    "results_payload",
    "study_key",
]

CSV_COLUMNS = (
    "kind",
    "source",
    "decision",
    "fracture_probability",
    "operating_point",
    "threshold",
    "region",
    "region_probability",
    "top_box",
    "top_box_score",
    "reliable",
    "warnings",
    "error_code",
    "error",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom"}
_STUDY_DIR = re.compile(r"^study\d+", re.IGNORECASE)


def result_row(result: Prediction | FailedPrediction | StudyPrediction) -> dict[str, str]:
    row = dict.fromkeys(CSV_COLUMNS, "")
    if isinstance(result, FailedPrediction):
        row.update(kind="image", source=result.source, error_code=result.error_code, error=result.error)
        return row
    row.update(
        decision=result.decision,
        fracture_probability=f"{result.fracture_probability:.4f}",
        operating_point=result.operating_point,
        threshold=f"{result.threshold:.4f}",
        reliable=str(result.reliable),
    )
    if isinstance(result, StudyPrediction):
        row.update(kind="study", source=result.study)
        return row
    row.update(
        kind="image", source=result.source, region=result.region or "", warnings="; ".join(result.warnings)
    )
    if result.region:
        row["region_probability"] = f"{result.region_probabilities[result.region]:.4f}"
    if result.boxes:
        b = result.boxes[0]
        row.update(top_box=f"{b.x0:.0f},{b.y0:.0f},{b.x1:.0f},{b.y1:.0f}", top_box_score=f"{b.score:.4f}")
    return row


def results_payload(
    results: Iterable[Prediction | FailedPrediction], studies: Iterable[StudyPrediction], model: str
) -> dict[str, Any]:
    """The JSON document of a batch (``fracsight predict --json``, the app's download)."""
    return {
        "model": model,
        "notice": NOTICE,
        "images": [r.to_dict() for r in results],
        "studies": [s.to_dict() for s in studies],
    }


def csv_text(results: Iterable[Prediction | FailedPrediction | StudyPrediction]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for r in results:
        writer.writerow(result_row(r))
    return buffer.getvalue()


def collect_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their image files (sorted, hidden ones skipped)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            files.extend(found)
        else:
            files.append(path)
    return files


def study_key(path: Path) -> str | None:
    """MURA-style study folders (``.../patient00011/study1_negative/image1.png``) name a study."""
    parent = path.parent
    if _STUDY_DIR.match(parent.name):
        return f"{parent.parent.name}/{parent.name}" if parent.parent.name else parent.name
    return None
