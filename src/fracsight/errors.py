"""Exception types. Every refusal fracsight makes is one of these.

Each class carries a stable machine-readable ``code`` (used by the CLI and the
REST API) and a human message. Catch :class:`FracsightError` to handle them all.
"""

from __future__ import annotations

import logging
import traceback

__all__ = [
    "BundleError",
    "ChecksumMismatchError",
    "ConfigError",
    "CorruptImageError",
    "DatasetError",
    "DecompressionBombError",
    "DicomSourceError",
    "EmptyFileError",
    "FracsightError",
    "ImageReadError",
    "ImageTooSmallError",
    "IncompleteStudyError",
    "InvalidPixelsError",
    "ModelOutputError",
    "MultiFrameError",
    "NoPixelDataError",
    "OutputFolderError",
    "OverlayImageError",
    "TruncatedImageError",
    "UnknownModelError",
    "UnsupportedFormatError",
    "UnsupportedModalityError",
    "UnsupportedPhotometricError",
    "log_unexpected",
]


class FracsightError(Exception):
    """Base class; ``code`` is stable across releases, the message is for people. ``bad_argument``:
    the refusal is of what the user asked for (an unknown model, an output the job may not write),
    so a command line exits 2 for it (``fracsight.cli.user_errors``)."""

    code = "fracsight_error"
    http_status = 400
    bad_argument = False


class ImageReadError(FracsightError):
    """The input could not be read as a radiograph."""

    code = "unreadable_image"
    # no image for a study to assess (a report, fracsight's own output): not a view it missed
    not_an_image = False


class EmptyFileError(ImageReadError):
    code = "empty_file"


class UnsupportedFormatError(ImageReadError):
    """Not an image format fracsight reads (PNG, JPEG, BMP, TIFF, GIF, DICOM)."""

    code = "unsupported_format"
    http_status = 415


class NoPixelDataError(ImageReadError):
    """A DICOM file without (usable) pixel data."""

    code = "no_pixel_data"


class UnsupportedPhotometricError(ImageReadError):
    """Colour or otherwise non-radiographic DICOM pixel data."""

    code = "unsupported_photometric"


class UnsupportedModalityError(ImageReadError):
    """A well-formed DICOM object that is not a projection radiograph (CT, MR, NM, a report, ...).

    HTTP 422, not 415: the media type (DICOM) is one fracsight reads; it is the content
    that the model cannot assess. ``modality`` is the header's Modality value (a code such
    as ``"CT"``, never an identifier) when it was a valid code string, else None;
    ``sop_class`` the SOP Class UID when the refusal came from it. See
    :mod:`fracsight.io.dicom_gate`.
    """

    code = "unsupported_modality"
    http_status = 422

    def __init__(
        self,
        message: str,
        *,
        modality: str | None = None,
        sop_class: str | None = None,
        own_output: bool = False,
        not_an_image: bool = False,
    ) -> None:
        super().__init__(message)
        self.modality = modality
        self.sop_class = sop_class
        self.own_output = own_output  # a result object fracsight wrote (refused whatever its Modality)
        # no image to assess (a report, key object, presentation state; fracsight's own output): no
        # view a study has missed, where a CT slice or an unknown code (`DR`) is one it could not read
        self.not_an_image = not_an_image or own_output


class MultiFrameError(ImageReadError):
    """A DICOM file with several frames read without choosing one (``read_image(..., frame=k)``),
    or a frame it does not hold. HTTP 422: the format is supported, the request is ambiguous."""

    code = "multi_frame_image"
    http_status = 422


class ImageTooSmallError(ImageReadError):
    code = "image_too_small"


class InvalidPixelsError(ImageReadError, ValueError):
    """Pixels given in memory (an array, a :class:`~fracsight.io.Radiograph` built in Python) that
    are not an image the model can read: NaN or infinite values, a float image outside [0, 1], a
    dtype or shape with no grayscale meaning. A ``ValueError`` too, as a notebook's ``except
    ValueError`` for a bad argument expects."""

    code = "invalid_pixels"


class DecompressionBombError(ImageReadError):
    """The header claims more pixels than the configured limit."""

    code = "image_too_large"
    http_status = 413


class TruncatedImageError(ImageReadError):
    """A truncated file: for JPEG only with ``strict=True`` (otherwise read tolerantly), always for others."""

    code = "truncated_image"


class CorruptImageError(ImageReadError):
    """The header contradicts itself or the data (e.g. DICOM Rows x Columns vs. pixel data length)."""

    code = "corrupt_image"


class OverlayImageError(ImageReadError):
    """A picture fracsight made of a result (heatmap, boxes, the caption band): read as a radiograph,
    its colours and caption were scored as anatomy, "no fracture detected", reliable (overlays
    written into the folder of the images, then the folder predicted)."""

    code = "fracsight_overlay"
    http_status = 422
    not_an_image = True  # beside a study's views, it is none of them: the study's verdict stands


class DatasetError(FracsightError):
    """A folder is not a data set layout fracsight knows, or is inconsistent."""

    code = "dataset_error"


class BundleError(FracsightError):
    """A model bundle is missing, malformed or incompatible. The bundle is the model the user named,
    so a command line exits 2 for it, as for an unknown model; a server answers 500 (its own model)."""

    code = "bundle_error"
    http_status = 500
    bad_argument = True


class ChecksumMismatchError(BundleError):
    code = "bundle_checksum_mismatch"


class ModelOutputError(BundleError):
    """The network gave a value that is not a number (NaN or infinite): a broken bundle whose
    checksum still matches (an export or quantization gone wrong). NaN compared with a threshold
    is False, which read as "no fracture detected", marked reliable."""

    code = "model_output_not_finite"


class UnknownModelError(FracsightError):
    code = "unknown_model"
    bad_argument = True


class DicomSourceError(FracsightError):
    """A DICOM object that results cannot be placed against (no Study/Series/SOP Instance UID,
    no image size, a frame not named, a prediction for another image). Messages name the
    missing attribute, never a value from the header."""

    code = "unusable_dicom_source"
    http_status = 422


class IncompleteStudyError(FracsightError):
    """A DICOMweb service listed fewer of a study's instances than it says the study holds (a
    QIDO-RS result limit: Orthanc's LimitFindInstances): no verdict is made on part of a study."""

    code = "study_incomplete"


class ConfigError(FracsightError):
    code = "config_error"


class OutputFolderError(ConfigError):
    """An output folder the job may not write (a bad argument: the CLI exits 2)."""

    code = "output_refused"
    bad_argument = True


def log_unexpected(logger: logging.Logger, where: str, exc: BaseException) -> None:
    """Log an unexpected exception's type and stack, never its message (it may quote patient data)."""
    frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
    logger.error("unexpected %s in %s; stack:\n%s", type(exc).__name__, where, frames.rstrip())
