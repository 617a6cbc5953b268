"""Flat rows and files for batch results (CSV for the CLI and the app, one place for both)."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any

from fracsight.bundle import BundleSpec
from fracsight.inference.results import NOTICE, FailedPrediction, Prediction, StudyPrediction, views_unread
from fracsight.io import IMAGE_SUFFIXES, SUPPORTED_FORMATS, UNREAD_IMAGE_SUFFIXES, text_cell
from fracsight.io._sniff import HEAD_BYTES, holds_image, image_head, sniff_format

if TYPE_CHECKING:
    from fracsight.inference.predictor import Predictor

__all__ = [
    "ALL_INPUTS",
    "collect_inputs",
    "csv_text",
    "distinct_names",
    "folder_images",
    "is_folder_image",
    "kept_names",
    "named_inputs",
    "numbered_names",
    "result_columns",
    "result_row",
    "results_payload",
    "spreadsheet_safe",
    "study_folder",
    "study_groups",
    "study_results",
    "text_cell",
]

#: The name of the one study made of every input (``predict --study``, the apps' "one study" box).
ALL_INPUTS = "all inputs"
_STUDY_DIR = re.compile(r"^study\d+", re.IGNORECASE)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_CLASS_PREFIX = "p_"  # p_<class>: one column per class with the full distribution


def result_columns(spec: BundleSpec, *, all_classes: bool = False) -> tuple[str, ...]:
    """The CSV / table columns for a bundle: only those of the heads it has.

    ``all_classes`` adds ``p_<class>`` columns with the class head's full distribution.
    """
    columns = ["kind", "source", "decision"]
    if spec.head("fracture"):
        columns += ["fracture_probability", "operating_point", "threshold"]
    class_head = spec.head("class")
    if class_head:
        columns += ["predicted_class", "class_probability", "class_confident"]
        if all_classes:
            columns += [_CLASS_PREFIX + name for name in class_head.classes]
    if spec.head("region"):
        columns += ["region", "region_probability"]
    if spec.head("fracture"):
        columns += ["top_box", "top_box_score"]
    return (*columns, "reliable", "warnings", "error_code", "error")


def result_row(
    result: Prediction | FailedPrediction | StudyPrediction, columns: Sequence[str]
) -> dict[str, str]:
    """One flat row with exactly ``columns`` (see :func:`result_columns`); blank where not applicable."""
    row: dict[str, str] = {}
    if isinstance(result, FailedPrediction):  # decision "error", as the table and the Python API say it
        row.update(
            kind="image", source=result.source, decision=result.decision, reliable=str(result.reliable)
        )
        row.update(error_code=result.error_code, error=result.error)
        return _only(row, columns)
    row.update(decision=result.decision, reliable=str(result.reliable), warnings="; ".join(result.warnings))
    if result.fracture_probability is not None and result.threshold is not None:
        row.update(
            fracture_probability=f"{result.fracture_probability:.4f}",
            operating_point=result.operating_point or "",
            threshold=f"{result.threshold:.4f}",
        )
    c = result.classification
    if c is not None:
        row.update(predicted_class=c.predicted, class_probability=f"{c.probability:.4f}")
        row["class_confident"] = str(c.confident)
        row.update({_CLASS_PREFIX + name: f"{p:.4f}" for name, p in c.probabilities.items()})
    if result.region:
        row.update(
            region=result.region, region_probability=f"{result.region_probabilities[result.region]:.4f}"
        )
    if isinstance(result, StudyPrediction):
        row.update(kind="study", source=result.study)
        return _only(row, columns)
    row.update(kind="image", source=result.source)
    if result.boxes:
        b = result.boxes[0]
        row.update(top_box=f"{b.x0:.0f},{b.y0:.0f},{b.x1:.0f},{b.y1:.0f}", top_box_score=f"{b.score:.4f}")
    return _only(row, columns)


def _only(row: dict[str, str], columns: Sequence[str]) -> dict[str, str]:
    return {k: text_cell(row.get(k, "")) for k in columns}


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


def spreadsheet_safe(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text: a file name such as ``=HYPERLINK(...).jpg`` or
    ``@SUM(1).png`` would otherwise run as a formula when the CSV is opened (OWASP's advice: a
    leading apostrophe)."""
    return "'" + cell if cell[:1] in _FORMULA_STARTS else cell


def unescaped_cell(cell: str) -> str | None:
    """The cell :func:`spreadsheet_safe` made ``cell`` from (``'=cmd.jpg`` -> ``=cmd.jpg``), or None
    where it adds no apostrophe to such a cell."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in _FORMULA_STARTS else None


def csv_text(
    results: Iterable[Prediction | FailedPrediction | StudyPrediction], columns: Sequence[str]
) -> str:
    """The CSV of a batch (``fracsight predict --csv``, the API's ``format=csv``, the apps' download)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    for r in results:
        writer.writerow({k: spreadsheet_safe(v) for k, v in result_row(r, columns).items()})
    return buffer.getvalue()


def collect_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (see :func:`folder_images`)."""
    return [path for path, _ in named_inputs(paths)]


InputKey = tuple[str, PurePath | None]  # what makes a file one input: see input_key


def named_inputs(
    paths: Sequence[Path], on_found: Callable[[Path], object] | None = None, *, empty_folders: bool = False
) -> list[tuple[Path, str]]:
    """:func:`collect_inputs` with the name results give each file: its path under the folder it
    was found in (``patient1/study1/image1.png``: several images may be named ``image1.png``),
    or its file name when it was given itself (never more of a path than the user typed).

    Each file is taken once, at its first place, however often it is given or found (``a.jpg
    ./a.jpg``, a file and its folder, a link to it): the key is its resolved path, as in
    ``fracsight batch run``, and its MURA-style study folder (:func:`study_folder`): a file
    linked into two studies is a view of each. A name that is not UTF-8 is given as
    :func:`text_cell` writes it, so JSON, CSV and the table show the same name. ``on_found`` is
    called with each image file as the walk finds it (to count them, or to stop a long walk by
    raising). ``empty_folders``: a
    folder given that holds no image is an entry itself (its row then says it is a folder), so
    that it does not vanish from the results among other inputs (an unmounted share, a study
    folder not yet filled) as a list's row of it does not.
    """
    # a file is taken once per study folder: one linked into a second study (MURA's layout) is a
    # view of that study too; taken once in all, it was a view of whichever folder came first, the
    # other's verdict changed with the order of the arguments and called it "not given"
    found: dict[InputKey, tuple[Path, str]] = {}
    for path in paths:
        if os.path.isdir(path):  # False, not PermissionError, for a file in a folder not to be entered
            named = [(f, _relative_name(f, path)) for f in folder_images(path, on_found)]
            if not named and empty_folders:
                named = [(path, str(path))]
        else:
            if on_found is not None:
                on_found(path)
            named = [(path, path.name)]
        for file, name in named:
            found.setdefault(input_key(file), (file, text_cell(name)))
    return distinct_names(list(found.values()))


def input_key(file: Path) -> InputKey:
    """What makes a file one input (:func:`named_inputs`, ``batch run``): the file it is, however it
    is reached (``a.jpg``, ``./a.jpg``, a link), in the study folder it is reached in."""
    return os.path.realpath(file), study_folder(file)


def distinct_names(named: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """Two files of one name (``a/x.jpg`` and ``b/x.jpg``, given as folders or as files) are
    named by their paths as typed instead: rows of the same name could not be told apart."""
    while True:  # twice at most: a path as typed may be another file's name (c/a/x.jpg found in c)
        counts = Counter(name for _, name in named)
        renamed = [(file, text_cell(file.as_posix()) if counts[name] > 1 else name) for file, name in named]
        if renamed == named:
            break
        named = renamed
    # paths that still read the same (caf\xe9.jpg beside a name of bytes shown so) are numbered
    return list(zip([file for file, _ in named], numbered_names([name for _, name in named]), strict=True))


def numbered_names(names: Sequence[str]) -> list[str]:
    """``names`` with each repeat numbered as a browser numbers a second download of one name
    (``IM000001 (2)``, ``a (2).jpg``): two uploads named ``IM000001`` (PACS exports name their files
    so) had one title, one overlay name and one ``source`` in the CSV, and nothing told them apart."""
    shown = kept_names([(str(i), name) for i, name in enumerate(names)], {})
    return [shown[str(i)][1] for i in range(len(names))]


def kept_names(
    items: Sequence[tuple[str, str]], given: Mapping[str, tuple[str, str]], retired: Iterable[str] = ()
) -> dict[str, tuple[str, str]]:
    """Key -> ``(name, name shown)`` for ``items`` (``(key, name)`` of each upload, in order), repeats
    numbered as :func:`numbered_names` numbers them, each key keeping the name shown it was
    ``given`` for the same name: numbered anew each time, removing the first ``IM000001`` gave
    the second one its name, and a CSV or overlay saved before named another image than the page
    did. An upload whose own name changed (a folder's file, named by its whole path once a second
    folder holds its path) is named anew. A name shown in ``retired`` (of uploads since removed) is
    given to no other: a new ``IM000001`` took the removed one's name, and what was saved of it
    then named another image."""
    out = {key: given[key] for key, name in items if key in given and given[key][0] == name}
    taken = {shown for _, shown in out.values()} | set(retired)
    own = {name for key, name in items if key not in out}  # a number never takes a file's own name
    for key, name in items:
        if key in out:
            continue
        n, candidate = 1, name
        while candidate in taken or (n > 1 and candidate in own):
            n += 1
            candidate = _numbered(name, n)
        taken.add(candidate)
        out[key] = (name, candidate)
    return out


def _numbered(name: str, n: int) -> str:
    path = PurePosixPath(name)
    return str(path.with_name(f"{path.stem} ({n}){path.suffix}")) if path.name else f"{name} ({n})"


def _relative_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root).as_posix()
    return path.name if relative == "." else relative  # "." : the folder given, unreadable itself


def folder_images(root: Path, on_found: Callable[[Path], object] | None = None) -> list[Path]:
    """The image files under ``root``, sorted; hidden files and folders, and a DICOMDIR, are skipped.

    Linked folders are followed (once each). A file is an image by its extension or, without
    one of ours, by its first bytes: PACS exports name DICOM files ``IM000001`` or by their UID.
    A sub-folder that cannot be listed is returned as it is, so that its row says so instead
    of it vanishing. ``on_found`` is called with each image file as it is found.
    """
    found: list[Path] = []
    seen: set[str] = set()

    def unreadable(error: OSError) -> None:
        found.append(Path(error.filename))

    for folder, dirs, names in os.walk(root, onerror=unreadable, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(folder, name)
            if _image_by_name(name, partial(holds_image, path)):
                found.append(path)
                if on_found is not None:
                    on_found(path)
    return sorted(found)


def no_images_message(paths: Sequence[Path], most: int = 5) -> str:
    """Why ``paths`` gave no image file: the files in its folders that are not images (``report.pdf``,
    ``notes.txt``; hidden files and a DICOMDIR left out), by their paths under the folder given. It
    was "no image files found" alone."""
    folders = [p for p in paths if os.path.isdir(p)]
    others: list[str] = []
    for root in folders:
        for folder, dirs, names in os.walk(root):  # only on this error: not the walk of every run
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            others += [
                Path(folder, n).relative_to(root).as_posix()
                for n in sorted(names)
                if not n.startswith(".") and n.upper() != "DICOMDIR"
            ]
            if len(others) > most:
                break
    found = f"no image files found in the given {'folders' if folders else 'inputs'}"
    bundles = [f for f in folders if _is_file(f / "bundle.json")]  # `predict BUNDLE IMAGE`
    if bundles:
        # `./NAME`: a bare NAME is a packaged bundle's name where one has it, not this folder
        given = bundles[0].as_posix() if bundles[0].parent != Path() else f"./{bundles[0]}"
        return f"{found}: {bundles[0]} is a model bundle, not images: give it with --model {given}"
    if not others:
        return found
    shown = ", ".join(others[:most]) + (" and more" if len(others) > most else "")
    formats = ", ".join(SUPPORTED_FORMATS)
    return f"{found}: what is there ({shown}) is in no format fracsight reads ({formats})"


def _image_by_name(name: str, holds: Callable[[], bool]) -> bool:
    """A file in a folder is an image when it is not hidden, not a DICOMDIR (the index of a CD or
    PACS export, which every such export holds, PS3.10 8.6: a DICOM file without pixels), and has
    one of our extensions or, without one, a supported image's first bytes (``holds()``, asked
    only then). An image in a format fracsight does not read (``lateral.webp``) is one too, so
    that its row says so: passed over, a study was judged on the other views without a word."""
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    suffix = Path(name).suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in UNREAD_IMAGE_SUFFIXES or holds()


def is_folder_image(relative: str, head: Callable[[], bytes]) -> bool:
    """Whether a file of an uploaded folder, named by its path in it (``study1/IM000001``), is an
    image as :func:`folder_images` judges one: nothing hidden on its way (``.DS_Store``, ``.git/``),
    and an image by its extension or by its first bytes (``head()``, read only then)."""
    parts = PurePosixPath(relative).parts
    # the folder chosen (the first part) is not judged, as folder_images does not judge its root
    if not parts or any(part.startswith(".") for part in parts[1:-1]):
        return False
    return _image_by_name(parts[-1], lambda: image_head(parts[-1], head()[:HEAD_BYTES]))


def study_folder(path: PurePath, *, resolve: bool = True) -> PurePath | None:
    """The MURA-style study folder that holds ``path`` (``.../patient00011/study1_negative/image1.png``),
    resolved (unless ``resolve`` is False: an uploaded folder's names are no files here): the
    identity of its study. None when ``path`` is not in a ``studyN`` folder. A relative path is
    taken from here (`predict .` in a study folder: the folder "." has no name, and the study row
    was missing)."""
    parent = Path(os.path.abspath(path)).parent if resolve else path.parent
    if not _STUDY_DIR.match(parent.name):
        return None
    return Path(os.path.realpath(parent)) if resolve else parent


def study_groups(paths: Sequence[PurePath], *, resolve: bool = True) -> dict[str, list[int]]:
    """The MURA-style studies among ``paths`` (absolute, or resolved here unless ``resolve`` is
    False): name -> the indices of its views in ``paths``.

    A study is the folder that holds its views (:func:`study_folder`): two studies never merge
    because their last folder names agree (``XR_WRIST/patient1/study1`` and
    ``XR_ELBOW/patient1/study1``). A study is named by the shortest end of its folder's path as
    given (a link to a study folder is named as the link, not its target), at least
    ``patient/studyN``, that no other study of ``paths`` shares. A file given twice (by its
    resolved path) is one view.
    """
    views: dict[PurePath, dict[str, int]] = {}
    given: dict[PurePath, PurePath] = {}  # each study's folder as the first of its views names it
    for i, path in enumerate(paths):
        folder = study_folder(path, resolve=resolve)
        if folder is not None:
            given.setdefault(folder, PurePath(os.path.abspath(path.parent)) if resolve else folder)
            views.setdefault(folder, {}).setdefault(os.path.realpath(path) if resolve else str(path), i)
    names = _shortest_names(list(given.values()))
    return {names[given[folder]]: list(indices.values()) for folder, indices in views.items()}


def study_results(
    predictor: Predictor,
    results: Sequence[tuple[PurePath, Prediction | FailedPrediction]],
    *,
    one_study: bool = False,
    resolve: bool = True,
) -> list[StudyPrediction]:
    """The study verdicts of ``results`` (each with its file's path): one per MURA-style study
    folder (:func:`study_groups`; ``resolve`` as there), or, with ``one_study``, one over them all.

    A study with views that could not be read says so (and is not reliable); one none of whose
    views could be read has no verdict (its files' results carry the errors). One study over the
    views of several study folders warns that it combines them (``StudyPrediction.folders``); one
    whose folder holds images not given (views given one by one) names them
    (``StudyPrediction.left_out``): a verdict under the study's name had not seen them, unsaid."""
    folders = study_groups([path for path, _ in results], resolve=resolve)
    groups: Mapping[str, Sequence[int]] = {ALL_INPUTS: range(len(results))} if one_study else folders
    studies = []
    for name, indices in groups.items():
        views = [results[i][1] for i in indices]
        read = [r for r in views if isinstance(r, Prediction)]
        unread = views_unread(r for r in views if isinstance(r, FailedPrediction))
        if read:
            study = predictor.predict_study(read, name, unread=unread)
            parts = folders if one_study else {name: indices}
            paths = {folder: [results[i][0] for i in members] for folder, members in parts.items()}
            studies.append(with_folder_notes(study, paths, one_study=one_study, resolve=resolve))
    return studies


def with_folder_notes(
    study: StudyPrediction,
    folders: Mapping[str, Sequence[PurePath]],
    *,
    one_study: bool,
    resolve: bool = True,
) -> StudyPrediction:
    """``study`` with what its study ``folders`` (name -> the paths of the views given from it) say
    beside its views: with ``one_study``, the folders it combines, where several (a patient's
    folder, its studies averaged into one); and each folder's images not given (files on disk:
    ``resolve``), under ``--study`` too: a verdict under a study's name had not seen them, unsaid."""
    several = one_study and len(folders) > 1
    if several:
        study = dataclasses.replace(study, folders=tuple(folders))
    if resolve:
        left_out = [
            f"{folder}/{image}" if several else image
            for folder, paths in folders.items()
            for image in _not_given(paths)
        ]
        study = dataclasses.replace(study, left_out=tuple(left_out))
    return study


def _not_given(views: Sequence[PurePath]) -> tuple[str, ...]:
    """The names of the images in the study folder of ``views`` (files on disk) that are not among them."""
    folder = study_folder(views[0])
    assert folder is not None
    seen = {os.path.realpath(v) for v in views}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return ()
    left_out = []
    for name in names:
        path = Path(folder, name)
        real = os.path.realpath(path)
        if real in seen or not path.is_file() or not _image_by_name(name, partial(holds_image, path)):
            continue
        seen.add(real)  # a link to an image left out is that image
        if _a_radiograph_object(path):
            left_out.append(text_cell(name))
    return tuple(left_out)


def _a_radiograph_object(path: Path) -> bool:
    """False for a DICOM file that is no radiograph (a structured report, a presentation state: a
    PACS export holds them beside the images), judged by its header as the reader judges it, and
    for an overlay fracsight made (`predict *.jpg --overlay-dir .`: no view the study lacks)."""
    try:
        with open(path, "rb") as f:
            kind = sniff_format(f.read(HEAD_BYTES))
    except OSError:  # unreadable: named, as the reader would name it
        return True
    if kind in ("png", "jpeg"):
        return not _an_overlay(path)
    if kind != "dicom":
        return True
    import pydicom

    from fracsight.errors import FracsightError
    from fracsight.io._dicom import check_object

    try:
        check_object(pydicom.dcmread(path, stop_before_pixels=True))
    except FracsightError:
        return False
    except Exception:  # unreadable: named, as the reader would name it
        return True
    return True


def _an_overlay(path: Path) -> bool:
    """Whether the PNG or JPEG at ``path`` carries the mark of fracsight's overlays (its header only)."""
    from PIL import Image

    from fracsight.io._raster import marked_as_overlay

    try:
        with Image.open(path) as image:
            return marked_as_overlay(image)
    except Exception:  # unreadable: named, as the reader would name it
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # in a folder that cannot be listed (Python 3.11 raises PermissionError)
        return False


def _shortest_names(folders: Sequence[PurePath]) -> dict[PurePath, str]:
    """Each (distinct, absolute) folder named by the fewest of its last parts, at least two, that
    tell it from the others."""
    names: dict[PurePath, str] = {}
    pending = list(folders)
    depth = 2
    while pending:
        tails = {f: "/".join(f.parts[1:][-depth:]) for f in pending}
        counts = Counter(tails.values())
        for f in pending:
            if counts[tails[f]] == 1 or depth >= len(f.parts) - 1:
                names[f] = text_cell(tails[f])  # as every other name: JSON held lone surrogates
        pending = [f for f in pending if f not in names]
        depth += 1
    return names
