"""Reader for the FracAtlas layout: ``dataset.csv`` + ``images/`` + YOLO or COCO boxes.

The csv is the label source. The ``Fractured``/``Non_fractured`` folder an image sits in
is only cross-checked: disagreements (FracAtlas has one, IMG0003298) are logged as a
warning. Images listed in the csv but absent on disk raise :class:`DatasetError`: a
partial copy would silently change every count and metric.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from fracsight.data._files import (
    fracture_polarity,
    iter_images,
    read_csv_rows,
    split_name,
    warn_skipped,
    with_case_hints,
)
from fracsight.data.sample import FRACTURE, REGION, Box, Dataset, Sample
from fracsight.errors import DatasetError

__all__ = ["REGION_COLUMNS", "VIEW_COLUMNS", "is_fracatlas", "read_fracatlas"]

log = logging.getLogger(__name__)

REGION_COLUMNS = ("hand", "leg", "hip", "shoulder")
VIEW_COLUMNS = ("frontal", "lateral", "oblique")
_REQUIRED_COLUMNS = ("image_id", "fractured")
_MAX_NAMES = 10


def is_fracatlas(root: Path) -> bool:
    """True if ``root`` has ``dataset.csv`` and an ``images/`` folder (in any case: ``Images/`` was
    taken for a class folder, "class folders need at least two classes")."""
    return (root / "dataset.csv").is_file() and _child(root, "images") is not None


def read_fracatlas(root: Path) -> Dataset:
    """Read a FracAtlas folder into a :class:`Dataset` (layout ``"fracatlas"``)."""
    rows = _read_csv(root / "dataset.csv")
    images = _child(root, "images") or root / "images"
    on_disk = _index_images(images)
    missing = [r["image_id"] for r in rows if r["image_id"] not in on_disk]
    if missing:
        by_case = {name.casefold(): name for name in on_disk}
        named, case_note = with_case_hints([(m, by_case.get(m.casefold())) for m in missing])
        raise DatasetError(
            f"{len(missing)} image(s) listed in {root / 'dataset.csv'} are missing under "
            f"{images}: {_names(named)}{case_note}"
        )
    listed = {r["image_id"] for r in rows}
    unlisted = sorted(set(on_disk) - listed)
    if unlisted:
        log.warning(
            "%d image(s) under %s/ are not in dataset.csv and are ignored: %s",
            len(unlisted),
            images.name,
            _names(unlisted),
        )

    boxes = _BoxSource(root)
    samples: list[Sample] = []
    disagree: list[str] = []
    for row in rows:
        image_id = row["image_id"]
        path = on_disk[image_id]
        fractured = _flag(row, "fractured", image_id)
        folder_label = fracture_polarity(path.parent.name)
        if folder_label is not None and folder_label != fractured:
            disagree.append(f"{image_id} (folder {path.parent.name}, csv fractured={fractured})")
        split_value = (row.get("split") or "").strip()
        split = split_name(split_value) if split_value else None
        if split_value and split is None:
            raise DatasetError(f"{image_id}: unknown split {split_value!r} in dataset.csv")
        samples.append(
            Sample(
                path=path,
                labels={FRACTURE: fractured},
                regions=tuple(c for c in REGION_COLUMNS if c in row and _flag(row, c, image_id)),
                view="+".join(c for c in VIEW_COLUMNS if c in row and _flag(row, c, image_id)) or None,
                group=(row.get("dup_group") or "").strip() or None,
                split=split,
                boxes=boxes.get(image_id),
            )
        )
    if disagree:
        log.warning(
            "%d image(s) sit in a folder that disagrees with dataset.csv (the csv label is used): %s",
            len(disagree),
            _names(disagree),
        )
    boxes.warn_unmatched(samples)
    class_names: dict[str, tuple[str, ...]] = {FRACTURE: ("not fractured", "fractured")}
    if any(c in rows[0] for c in REGION_COLUMNS):
        class_names[REGION] = tuple(c for c in REGION_COLUMNS if c in rows[0])
    return Dataset(root=root, layout="fracatlas", samples=tuple(samples), class_names=class_names)


def _read_csv(path: Path) -> list[dict[str, str]]:
    _, lines = read_csv_rows(path, required=_REQUIRED_COLUMNS)
    rows: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for line, row in lines:
        if not any((v or "").strip() for v in row.values()):  # a row that holds nothing (Excel's
            continue  # trailing ;;;;): it refused the whole set as "image_id is empty"
        rows.append({k: v.strip() for k, v in row.items()})
        image_id = rows[-1]["image_id"]
        where = f"{path.name} line {line}"
        if not image_id:
            raise DatasetError(f"{where}: image_id is empty")
        if image_id in seen:  # two rows, two labels (or twice the weight) for one image
            raise DatasetError(f"{where}: {image_id} is listed already on line {seen[image_id]}")
        seen[image_id] = line
    if not rows:
        raise DatasetError(f"{path} has no rows")
    return rows


def _flag(row: dict[str, str], column: str, image_id: str) -> int:
    value = row.get(column, "")
    try:
        flag = float(value)
    except ValueError:
        raise DatasetError(f"{image_id}: column {column!r} should be 0 or 1, got {value!r}") from None
    if flag not in (0.0, 1.0):  # never truncated: 0.5 is not 0
        raise DatasetError(f"{image_id}: column {column!r} should be 0 or 1, got {value!r}")
    return int(flag)


def _index_images(images: Path) -> dict[str, Path]:
    """Map file name -> path for every image below ``images/`` (class sub-folders or flat)."""
    index: dict[str, Path] = {}
    skipped: list[Path] = []
    for path in iter_images(images, skipped):
        if path.name in index:
            raise DatasetError(f"{path.name} occurs twice under {images}: {index[path.name]} and {path}")
        index[path.name] = path
    warn_skipped(skipped, images.parent)
    return index


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (f", ... ({len(names) - _MAX_NAMES} more)" if len(names) > _MAX_NAMES else "")


class _BoxSource:
    """Fracture boxes per image: YOLO ``annotations/yolo/<stem>.txt`` first, COCO as fallback.
    Folder names in any case, and FracAtlas as figshare gives it: ``Annotations/YOLO/`` and
    ``Annotations/COCO JSON/COCO_fracture_masks.json`` (read as none: every box was lost unsaid)."""

    def __init__(self, root: Path) -> None:
        self.annotations = annotations = _child(root, "annotations")
        self.yolo_dir = _child(annotations, "yolo") if annotations else None
        self.coco_path = None
        if annotations is not None:
            coco_folder = _child(annotations, "coco json")
            found = [annotations / "coco.json"] + (sorted(coco_folder.glob("*.json")) if coco_folder else [])
            self.coco_path = next((p for p in found if p.is_file()), None)
        self._coco: dict[str, tuple[Box, ...]] | None = None

    def warn_unmatched(self, samples: list[Sample]) -> None:
        """Say where boxes were given but do not reach the images: YOLO files named otherwise than
        the images (``img0000019.txt``, Roboflow's ``IMG0000019_jpg.rf.<hash>.txt``), or an
        annotations folder of which nothing is read (PASCAL VOC only): every box was lost unsaid,
        and training learnt without them."""
        stems = {s.path.stem for s in samples}
        if self.yolo_dir is not None:
            with contextlib.suppress(OSError):
                orphans = sorted(
                    t.name
                    for t in self.yolo_dir.glob("*.txt")
                    if t.stem not in stems and t.name != "classes.txt"  # labelImg's list of class names
                )
                if orphans:
                    by_case = {s.casefold(): s for s in stems}
                    named = [
                        o + (f" (image {by_case[k]}: names are case-sensitive)" if k in by_case else "")
                        for o in orphans
                        for k in [Path(o).stem.casefold()]
                    ]
                    log.warning(
                        "%d YOLO file(s) in %s name no image of dataset.csv (<image stem>.txt) and are "
                        "ignored: %s",
                        len(orphans),
                        self.yolo_dir,
                        _names(named),
                    )
        fractured_stems = {s.path.stem for s in samples if s.labels[FRACTURE]}
        if self.annotations is None or not fractured_stems or any(s.boxes for s in samples):
            return
        # the fractured images' files read, holding no box (a set without boxes, made so), are no
        # boxes lost; FracAtlas ships an empty file for every normal image, which says nothing
        if self.yolo_dir is None or not any((self.yolo_dir / f"{s}.txt").is_file() for s in fractured_stems):
            with contextlib.suppress(OSError):
                found = _names(sorted(p.name for p in self.annotations.iterdir())) or "nothing"
                log.warning(
                    "%s gives none of the fractured images a box (fracsight reads yolo/<image stem>.txt "
                    "and COCO json; found: %s): they are read without boxes",
                    self.annotations,
                    found,
                )

    def get(self, image_id: str) -> tuple[Box, ...]:
        txt = self.yolo_dir / (Path(image_id).stem + ".txt") if self.yolo_dir else None
        if txt is not None and txt.is_file():
            return _read_yolo(txt)
        if self.coco_path is not None:
            if self._coco is None:
                self._coco = _read_coco(self.coco_path)
            return self._coco.get(image_id, ())
        return ()


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name`` in any case (``Annotations``, ``YOLO``)."""
    exact = folder / name
    if exact.is_dir():
        return exact
    with contextlib.suppress(OSError):
        return next((p for p in folder.iterdir() if p.name.lower() == name and p.is_dir()), None)
    return None


def _box(x0: float, y0: float, x1: float, y1: float) -> Box | None:
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in (x0, y0, x1, y1))
    return Box(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _read_yolo(txt: Path) -> tuple[Box, ...]:
    boxes: list[Box] = []
    try:
        text = txt.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{txt} is not a YOLO label file (not text): {e}") from None
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(p) for p in parts[1:]]
        except ValueError:
            values = []
        if len(values) in (4, 5):  # a box, or a box and a detector's confidence
            cx, cy, w, h = values[:4]
            box = _box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        elif len(values) >= 6 and len(values) % 2 == 0:  # a segmentation polygon: x1 y1 x2 y2 ...
            box = _box(min(values[0::2]), min(values[1::2]), max(values[0::2]), max(values[1::2]))
        else:  # read as 'cx cy w h' from a polygon's first points, a box that was never there
            raise DatasetError(
                f"{txt}:{n}: expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...', "
                f"got {line!r}"
            )
        if max(values[:4] if len(values) in (4, 5) else values) > 1.5:  # every box skipped, or clipped whole
            raise DatasetError(
                f"{txt}:{n}: YOLO values are fractions of the image's width and height (0 to 1), got "
                f"{line!r}: pixel coordinates? divide them by the image's size"
            )
        if box is None:
            log.warning("%s:%d: a box of no area inside the image skipped", txt, n)
        else:
            boxes.append(box)
    return tuple(boxes)


def _read_coco(path: Path) -> dict[str, tuple[Box, ...]]:
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        images = {im["id"]: im for im in coco["images"]}
        result: dict[str, list[Box]] = {}
        for ann in coco.get("annotations", []):
            if ann["image_id"] not in images:
                raise DatasetError(
                    f"{path}: annotation {ann.get('id')!r} is of image_id {ann['image_id']!r}, "
                    "which no image has"
                )
            im = images[ann["image_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
            width, height = float(im["width"]), float(im["height"])
            box = _box(x / width, y / height, (x + w) / width, (y + h) / height)
            # by file name: CVAT and Roboflow write the folder too (images/Fractured/IMG0000019.jpg)
            name = Path(str(im["file_name"]).replace("\\", "/")).name
            if box is None:
                log.warning("%s: annotation %r of %s: an empty box, skipped", path.name, ann.get("id"), name)
            else:
                result.setdefault(name, []).append(box)
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        raise DatasetError(f"{path} is not a COCO annotation file fracsight understands: {e!r}") from None
    return {name: tuple(b) for name, b in result.items()}
