"""What the window shows, without the window: the files, their results, the operating point, the studies.

Every text, row and file comes from :mod:`fracsight.app.logic` (the web app's logic) and
:mod:`fracsight.inference.tabular`; this module only keeps the state a desktop session needs
between events. No tkinter here: it is tested without a display.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from fracsight.app.logic import (
    at_operating_point,
    csv_download,
    display_columns,
    json_text,
    named_as,
    table_rows,
)
from fracsight.bundle import OperatingPoint
from fracsight.desktop.worker import FileStamp, Item, file_stamp
from fracsight.inference import FailedPrediction, Prediction, Predictor, StudyPrediction
from fracsight.inference.results import views_unread
from fracsight.inference.tabular import (
    ALL_INPUTS,
    InputKey,
    distinct_names,
    input_key,
    named_inputs,
    study_groups,
    with_folder_notes,
)

__all__ = ["LIST_HIDDEN", "ReadingSession", "expand_inputs", "heading", "list_inputs"]

Result = Prediction | FailedPrediction

# Columns of the web app's table left out of the list: the side panel shows the threshold, the viewer
# the boxes, and the decision already says "uncertain" or "not reliable".
LIST_HIDDEN = frozenset({"kind", "threshold", "class_confident", "top_box", "reliable"})


def expand_inputs(
    paths: Iterable[Path], on_found: Callable[[Path], object] | None = None
) -> list[tuple[Path, str]]:
    """Files as given, folders expanded to their image files, in ``fracsight predict``'s order, each
    with the name ``fracsight predict`` gives it (``patientA/study1/IM000001.jpg`` under a folder);
    ``on_found`` is called with each file as it is found."""
    return list_inputs(paths, on_found)[0]


def list_inputs(
    paths: Iterable[Path], on_found: Callable[[Path], object] | None = None
) -> tuple[list[tuple[Path, str]], list[Path]]:
    """:func:`expand_inputs`, and the folders given that hold no image file: among other inputs they
    must be named (an unmounted share, a study folder not yet filled), as ``predict`` gives them a row."""
    paths = list(paths)
    given = set(paths)
    entries = named_inputs(paths, on_found, empty_folders=True)
    # a folder that cannot be listed stays an entry: its row says so (as predict's does)
    empty = [p for p, _ in entries if p in given and os.path.isdir(p) and os.access(p, os.R_OK | os.X_OK)]
    return [entry for entry in entries if entry[0] not in empty], empty


class _Made(NamedTuple):
    results: tuple[Result, ...]
    operating_point: OperatingPoint | None
    study: StudyPrediction | None


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
    given: list[str] = field(default_factory=list, repr=False)  # each file's name as it was opened
    renamed: list[int] = field(default_factory=list, init=False, repr=False)  # by the last add()
    keys: list[InputKey] = field(default_factory=list, repr=False)  # each file's input_key
    opened_folders: list[str] = field(default_factory=list, repr=False)  # real and absolute paths
    results: dict[int, Result] = field(default_factory=dict)
    stamps: dict[int, FileStamp | None] = field(default_factory=dict)  # each file as read for its result
    operating_point: OperatingPoint | None = None
    one_study: bool = False
    # MURA-style study folders among :attr:`paths` (name -> indices), as ``fracsight predict`` finds them
    folders: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    # each study's verdict with the results and operating point it was made from: the window asks
    # for every study at each redisplay, and a folder of a thousand studies must not cost a tick
    _made: dict[str, _Made] = field(default_factory=dict, init=False, repr=False)

    def set_predictor(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.operating_point = predictor.operating_point
        self._made.clear()

    def add(
        self,
        files: Iterable[tuple[Path, str]],
        keys: Sequence[InputKey] | None = None,
        pending: Container[int] = (),
    ) -> list[Item]:
        """Add ``(path, name)`` pairs (:func:`expand_inputs`); returns the items to predict.
        ``keys``: each file's :func:`input_key`, where already known (found off the window's thread:
        on a network share it is a round trip per file); a file linked into two study folders is a
        view of each, as for ``fracsight predict``. A file opened before keeps its row and
        name: it is predicted again in it when it has no result and is not ``pending`` (a cancelled
        run's), could not be read, or changed on disk since it was predicted; otherwise it is left
        as it is (a folder opened twice used to list every file twice, and export it twice)."""
        files = list(files)
        keys = list(keys) if keys is not None else [input_key(p) for p, _ in files]
        opened = {key: i for i, key in enumerate(self.keys)}
        chosen: dict[int, None] = {}  # in order, each once (a file given twice was predicted twice)
        for (path, name), key in zip(files, keys, strict=True):
            index = opened.get(key)
            if index is None:
                index = opened[key] = len(self.paths)
                self.paths.append(path)
                self.names.append(name)
                self.given.append(name)
                self.keys.append(key)
                chosen[index] = None
            elif index not in chosen and self._again(index, pending):
                chosen[index] = None
        self.renamed = self._name_apart()
        self._find_folders()
        return [(index, self.paths[index], self.names[index]) for index in chosen]

    def _name_apart(self) -> list[int]:
        """Files of one name opened one after another (``IM000001.jpg`` of one patient's folder, then
        of another's) are named by their paths, as ``fracsight predict`` names them given together:
        their rows, cards and exports could not be told apart. The files renamed, results too."""
        renamed = []
        for index, (_, name) in enumerate(distinct_names(list(zip(self.paths, self.given, strict=True)))):
            if name != self.names[index]:
                self.names[index] = name
                if index in self.results:
                    self.results[index] = named_as(self.results[index], name)
                renamed.append(index)
        return renamed

    def _again(self, index: int, pending: Container[int]) -> bool:
        """Whether a file opened again is predicted again (:meth:`add`)."""
        result = self.results.get(index)
        if result is None:
            return index not in pending
        return isinstance(result, FailedPrediction) or file_stamp(self.paths[index]) != self.stamps.get(index)

    def _find_folders(self) -> None:
        """:attr:`folders`, found here rather than on every redisplay (it resolves every path)."""
        self.folders = study_groups(self.paths)

    def record(self, index: int, result: Result, stamp: FileStamp | None) -> None:
        """The result of a file, and its stamp when it was read for it (under the file's name now: it
        may have been named apart while it was predicted)."""
        if result.source != self.names[index]:
            result = named_as(result, self.names[index])
        self.results[index] = result
        self.stamps[index] = stamp

    def changed_on_disk(self) -> list[int]:
        """The files whose result is not of the file as it is now (overwritten, removed or made since
        they were read): one stat each, so only when an export asks."""
        return [i for i in sorted(self.results) if file_stamp(self.paths[i]) != self.stamps.get(i)]

    def is_opened(self, path: Path) -> bool:
        """Whether ``path`` is one of the files opened: an export there would replace the image."""
        target = os.path.realpath(path)  # against the keys' real paths: resolving each opened file
        if any(real == target for real, _ in self.keys):  # froze the window 0.16 s for 5,000
            return True
        # a file reached through a link re-pointed since it was opened (its key is the old file's):
        # the file as last read, by its stamp (an export first predicts again what changed)
        stamp = file_stamp(Path(target))
        return stamp is not None and stamp in self.stamps.values()

    def holds_opened(self, folder: Path) -> bool:
        """Whether an opened file lies in ``folder``, or ``folder`` is a folder opened or inside one:
        an overlay saved there is one more file the next prediction of that folder reads (as
        ``predict --overlay-dir`` inside a folder read is refused)."""
        target = os.path.realpath(folder)
        targets = (target, os.path.abspath(folder))  # export/PAT1 a link to elsewhere: lies in export
        if any(os.path.commonpath([opened, t]) == opened for opened in self.opened_folders for t in targets):
            return True
        # a file opened through a link (a folder of linked images) lies where it was opened too
        lies_in = {os.path.dirname(real) for real, _ in self.keys}
        folders = {os.path.dirname(os.path.abspath(p)) for p in self.paths}  # each folder resolved once
        lies_in |= {os.path.realpath(folder) for folder in folders}
        return target in lies_in

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

    def studies(self) -> list[StudyPrediction]:
        """The study verdicts, as ``fracsight predict`` gives them, at the chosen operating point.

        Marked as one study: all opened files, once each has a result (``predict --study``, which
        gives a study of one image, and of one image and a file that could not be read); a run
        cancelled or still going has none, as its verdict would stand for images never read.
        Otherwise one per MURA-style study folder (``patient1/study1_positive/``; found by
        :func:`~fracsight.inference.tabular.study_groups`, as ``predict`` finds them) once every
        view of it has a result, so that a verdict never stands for views still being predicted.
        A view that could not be read is one the verdict has not seen, as in ``predict``.
        """
        if self.predictor is None:
            return []
        out = []
        for name, indices in self._groups().items():
            if all(i in self.results for i in indices):
                study = self._study(name, tuple(self.results[i] for i in indices))
                if study is not None:
                    out.append(study)
        return out

    def _study(self, name: str, results: tuple[Result, ...]) -> StudyPrediction | None:
        """The verdict of one study from its views' results; made again only when they, or the
        operating point, are not those it was made from."""
        made = self._made.get(name)
        if (
            made is not None
            and made.operating_point is self.operating_point
            and len(made.results) == len(results)
            and all(a is b for a, b in zip(made.results, results, strict=True))
        ):
            return made.study
        assert self.predictor is not None
        views = [r for r in results if isinstance(r, Prediction)]
        study = None
        if views:  # as study_results: a study none of whose views could be read has no verdict
            unread = views_unread(r for r in results if isinstance(r, FailedPrediction))
            made_now = self.predictor.predict_study(views, name, unread=unread)
            # as study_results: the folders it combines, and the images of a folder not opened
            parts = self.folders if self.one_study else {name: self.folders[name]}
            paths = {folder: [self.paths[i] for i in members] for folder, members in parts.items()}
            made_now = with_folder_notes(made_now, paths, one_study=self.one_study)
            study = at_operating_point(made_now, self.operating_point)
        self._made[name] = _Made(results, self.operating_point, study)
        return study

    def views_of(self, study: str) -> list[int]:
        """The indices of the files that are views of ``study`` (a name :meth:`studies` gives)."""
        return self._groups().get(study, [])

    def study_of(self, index: int) -> str | None:
        """The name of the study the file at ``index`` is a view of, if any."""
        return next((name for name, indices in self._groups().items() if index in indices), None)

    def _groups(self) -> dict[str, list[int]]:
        return {ALL_INPUTS: list(range(len(self.paths)))} if self.one_study else self.folders

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
        return [r for _, r in self.shown()] + self.studies()

    def csv_text(self) -> str:
        """The columns of ``fracsight predict --csv --all-classes``: images, then the studies."""
        assert self.predictor is not None
        return csv_download(self._everything(), self.predictor.spec)

    def json_text(self) -> str:
        """The document of ``fracsight predict --json``."""
        assert self.predictor is not None
        return json_text([r for _, r in self.shown()], self.studies(), self.predictor.name)
