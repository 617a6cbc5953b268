"""What the window shows, without the window: the files, their results, the operating point, the study.

Every text, row and file comes from :mod:`fracsight.app.logic` (the web app's logic) and
:mod:`fracsight.inference.tabular`; this module only keeps the state a desktop session needs
between events. No tkinter here: it is tested without a display.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fracsight.app.logic import (
    STUDY_NAME,
    at_operating_point,
    csv_download,
    display_columns,
    json_text,
    table_rows,
)
from fracsight.bundle import OperatingPoint
from fracsight.desktop.worker import FileStamp, Item
from fracsight.inference import FailedPrediction, Prediction, Predictor, StudyPrediction
from fracsight.inference.tabular import named_inputs

__all__ = ["LIST_HIDDEN", "STUDY_NAME", "ReadingSession", "expand_inputs", "heading"]

Result = Prediction | FailedPrediction

# Columns of the web app's table left out of the list: the side panel shows the threshold, the viewer
# the boxes, and the decision already says "uncertain" or "not reliable".
LIST_HIDDEN = frozenset({"kind", "threshold", "class_confident", "top_box", "reliable"})


def expand_inputs(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """Files as given, folders expanded to their image files, in ``fracsight predict``'s order, each
    with the name ``fracsight predict`` gives it (``patientA/study1/IM000001.jpg`` under a folder)."""
    return named_inputs(list(paths))


def heading(column: str) -> str:
    return column.replace("_", " ")


@dataclass
class ReadingSession:
    """The files opened in one window and what the model said about them.

    Results are kept as predicted (at the model's own operating point); everything shown or
    exported is at :attr:`operating_point`, derived with :func:`~fracsight.app.logic.at_operating_point`.
    """

    predictor: Predictor | None = None
    paths: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # what rows, cards and exports call each file
    results: dict[int, Result] = field(default_factory=dict)
    stamps: dict[int, FileStamp | None] = field(default_factory=dict)  # each file as read for its result
    operating_point: OperatingPoint | None = None
    one_study: bool = False

    def set_predictor(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.operating_point = predictor.operating_point

    def add(self, files: Iterable[tuple[Path, str]]) -> list[Item]:
        """Add ``(path, name)`` pairs (:func:`expand_inputs`); returns the items to predict."""
        start = len(self.paths)
        items = [(index, path, name) for index, (path, name) in enumerate(files, start)]
        for _, path, name in items:
            self.paths.append(path)
            self.names.append(name)
        return items

    def record(self, index: int, result: Result, stamp: FileStamp | None) -> None:
        """The result of a file, and its stamp when it was read for it."""
        self.results[index] = result
        self.stamps[index] = stamp

    def is_opened(self, path: Path) -> bool:
        """Whether ``path`` is one of the files opened: an export there would replace the image."""
        target = Path(path).resolve()
        return any(Path(p).resolve() == target for p in self.paths)

    def choose_operating_point(self, name: str) -> None:
        if self.predictor is None:
            raise RuntimeError("no model loaded")
        self.operating_point = self.predictor.spec.operating_point(name)

    @property
    def operating_point_names(self) -> tuple[str, ...]:
        if self.predictor is None or self.predictor.operating_point is None:
            return ()
        return tuple(op.name for op in self.predictor.spec.operating_points)

    # ---- what is shown ---------------------------------------------------------------------------------
    def result(self, index: int) -> Result | None:
        r = self.results.get(index)
        return None if r is None else at_operating_point(r, self.operating_point)

    def shown(self) -> list[tuple[int, Result]]:
        """The results so far, in the order the files were opened, at the chosen operating point."""
        return [(i, at_operating_point(self.results[i], self.operating_point)) for i in sorted(self.results)]

    def study(self) -> StudyPrediction | None:
        """The study verdict when the images are marked as one study (two or more predicted views)."""
        if not self.one_study or self.predictor is None:
            return None
        results = [r for _, r in sorted(self.results.items())]
        views = [r for r in results if isinstance(r, Prediction)]
        if len(views) < 2:
            return None
        unread = [r.source for r in results if not isinstance(r, Prediction)]  # as predict --study
        study = self.predictor.predict_study(views, STUDY_NAME, unread=unread)
        return at_operating_point(study, self.operating_point)

    def list_columns(self) -> tuple[str, ...]:
        if self.predictor is None:
            return ()
        return tuple(c for c in display_columns(self.predictor.spec) if c not in LIST_HIDDEN)

    def list_row(self, result: Result | StudyPrediction) -> tuple[str, ...]:
        """A row of the list: the web app's table row (:func:`table_rows`) in :meth:`list_columns`."""
        assert self.predictor is not None
        (row,) = table_rows([result], self.predictor.spec)
        if isinstance(result, FailedPrediction):  # the CSV leaves it blank; the list says why at a glance
            row["decision"] = f"could not be read ({result.error_code})"
        return tuple(row[c] for c in self.list_columns())

    # ---- exports (only when the user asks) -------------------------------------------------------------
    def _everything(self) -> list[Result | StudyPrediction]:
        study = self.study()
        return [r for _, r in self.shown()] + ([study] if study else [])

    def csv_text(self) -> str:
        """The columns of ``fracsight predict --csv --all-classes``: images, then the study."""
        assert self.predictor is not None
        return csv_download(self._everything(), self.predictor.spec)

    def json_text(self) -> str:
        """The document of ``fracsight predict --json``."""
        assert self.predictor is not None
        study = self.study()
        return json_text([r for _, r in self.shown()], [study] if study else [], self.predictor.name)
