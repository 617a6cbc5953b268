"""File-system helpers shared by the data set readers (private)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_ALIASES",
    "fracture_polarity",
    "is_hidden",
    "is_image_file",
    "iter_images",
    "split_name",
    "visible_dirs",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"})

# Folder names accepted as a split level, mapped to the canonical split name.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}

_NEGATIVE_WORDS = {"non", "not", "no", "un", "normal", "negative", "healthy"}
_POSITIVE_WORDS = {"fractured", "fracture", "fractures", "positive", "abnormal", "broken"}
_NEGATIVE_COMPACT = re.compile(r"(non|not|no|un)(fractured?|fractures|broken)")


def is_hidden(path: Path) -> bool:
    """True for dot-files and dot-folders (``.DS_Store``, ``._image1.png``, ``.ipynb_checkpoints``)."""
    return path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    """True for a visible file whose extension (any case) is one fracsight reads."""
    return not is_hidden(path) and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def visible_dirs(path: Path) -> list[Path]:
    """Sub-folders of ``path`` that are not hidden, sorted by name."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not is_hidden(p))


def iter_images(folder: Path) -> Iterator[Path]:
    """Image files anywhere below ``folder``, sorted, skipping hidden files and hidden folders."""
    stack = [folder]
    found: list[Path] = []
    while stack:
        current = stack.pop()
        for entry in current.iterdir():
            if is_hidden(entry):
                continue
            if entry.is_dir():
                stack.append(entry)
            elif is_image_file(entry):
                found.append(entry)
    yield from sorted(found)


def split_name(name: str) -> str | None:
    """Canonical split for a folder or column value (``valid`` -> ``val``), None if not a split name."""
    return SPLIT_ALIASES.get(name.strip().lower())


def fracture_polarity(name: str) -> int | None:
    """1 if a class name means "fractured", 0 if it means "not fractured", None otherwise.

    Case, spaces, hyphens and underscores are ignored: ``Non_fractured``, ``not fractured``,
    ``normal`` and ``negative`` are 0; ``Fractured``, ``fracture``, ``positive`` and
    ``abnormal`` are 1.
    """
    tokens = [t for t in re.split(r"[\s_\-.]+", name.strip().lower()) if t]
    if not tokens:
        return None
    if any(t in _NEGATIVE_WORDS for t in tokens) or _NEGATIVE_COMPACT.fullmatch("".join(tokens)):
        return 0
    if any(t in _POSITIVE_WORDS for t in tokens):
        return 1
    return None
