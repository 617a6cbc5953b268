"""The in-memory radiograph: pixels plus the metadata that travels with them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["ImageMetadata", "Radiograph"]


@dataclass(frozen=True)
class ImageMetadata:
    """What is known about where the pixels came from.

    Never holds patient identifiers: the DICOM reader copies only technical
    tags (photometric interpretation, bit depth, spacing, body part, view).
    """

    source_format: str  # "png", "jpeg", "bmp", "tiff", "gif", "dicom"
    original_size: tuple[int, int]  # (height, width) of the stored image
    bit_depth: int
    photometric: str  # e.g. "MONOCHROME2", "MONOCHROME1 (inverted)", "L", "RGB"
    pixel_spacing_mm: tuple[float, float] | None = None
    body_part: str | None = None
    view: str | None = None
    truncated: bool = False  # the file ends early (a JPEG or compressed DICOM frame without its end)
    # part of the image is missing from the file and the decoder filled it in: the model did not
    # see all of it (a truncated JPEG whose every row was decoded is ``truncated`` but complete)
    incomplete: bool = False
    frames: int = 1
    name: str | None = None  # file name (not path) when read from disk
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # (height, width) of the full-resolution image, as displayed, when the reader was asked to
    # decode a JPEG at reduced scale (``read_image(reduce_to=...)``); None: the pixels are full size
    reduced_from: tuple[int, int] | None = None
    # sha256 of the file's bytes (and the frame read, for a DICOM frame), set by ``read_image``: a
    # study counts a copy under another name once; None for pixels given as an array
    content_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["original_size"] = list(self.original_size)
        d["warnings"] = list(self.warnings)
        if self.pixel_spacing_mm is not None:
            d["pixel_spacing_mm"] = list(self.pixel_spacing_mm)
        if self.reduced_from is not None:
            d["reduced_from"] = list(self.reduced_from)
        return d


@dataclass(frozen=True, eq=False)
class Radiograph:
    """float32 H x W array in [0, 1], bone bright, plus :class:`ImageMetadata`.

    Two radiographs are equal when their metadata and every pixel are (``==`` on the generated
    dataclass compared the arrays element-wise and raised "truth value ... is ambiguous")."""

    pixels: np.ndarray
    metadata: ImageMetadata

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Radiograph):
            return NotImplemented
        return self.metadata == other.metadata and np.array_equal(self.pixels, other.pixels)

    __hash__ = None  # type: ignore[assignment]  # pixels are a mutable array

    def __post_init__(self) -> None:
        p = self.pixels
        if p.ndim != 2 or p.dtype != np.float32:
            raise ValueError(f"Radiograph pixels must be a 2-D float32 array, got {p.dtype} {p.shape}")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def full_size(self) -> tuple[int, int]:
        """(height, width) at full resolution: the pixels' own size unless the reader reduced them."""
        return self.metadata.reduced_from or (self.height, self.width)
