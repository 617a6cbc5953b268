"""Finding model bundles: the packaged default, other packaged names, a folder, or a .zip."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
import zlib
from multiprocessing import util
from pathlib import Path

from fracsight.bundle import BundleSpec, load_bundle_spec, read_checked_onnx
from fracsight.errors import BundleError, UnknownModelError

__all__ = [
    "DEFAULT_MODEL",
    "checked_bundle",
    "list_bundles",
    "loadable_bundle",
    "packaged_bundles",
    "resolve_bundle",
]

DEFAULT_MODEL = "fracatlas-lite0-384-v5-int8"
_PACKAGED = Path(__file__).resolve().parent.parent / "weights"
_MAX_ZIP_BYTES = 512 * 1024 * 1024
_MAX_ZIP_ENTRIES = 1000
_unpacked: dict[tuple[str, int, int, int], Path] = {}


def list_bundles() -> list[str]:
    """Names of the bundles shipped inside the package.

    Hidden folders are not bundles: an export killed outright leaves its half-built
    ``.NAME.partial-*`` folder behind, which holds a ``bundle.json`` already."""
    if not _PACKAGED.is_dir():
        return []
    return sorted(
        p.name for p in _PACKAGED.iterdir() if not p.name.startswith(".") and (p / "bundle.json").is_file()
    )


def packaged_bundles() -> dict[str, Path]:
    """The shipped bundles' folders by name (whatever the current folder holds of their names)."""
    return {name: _PACKAGED / name for name in list_bundles()}


def _extract_zip(path: Path) -> Path:
    """The bundle inside a .zip, unpacked once per process and archive (its path, size, time and
    inode): a Predictor pickled to process workers is unpacked again at each task it is sent with."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    known = _unpacked.get(key)
    if known is not None:
        try:  # a temp cleaner may have taken part of it since: then unpacked again
            read_checked_onnx(known, load_bundle_spec(known))
            return known
        except BundleError:
            pass
    _unpacked[key] = _unpack(path)
    return _unpacked[key]


def _unpack(path: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="fracsight-bundle-"))
    # removed when the process ends: a multiprocessing worker ends with os._exit, past atexit, but
    # runs multiprocessing's finalizers, which also skip a forked child (its parent's copy stays)
    util.Finalize(None, shutil.rmtree, args=(str(target),), kwargs={"ignore_errors": True}, exitpriority=0)
    try:
        with zipfile.ZipFile(path) as zf:
            total = 0
            if len(zf.infolist()) > _MAX_ZIP_ENTRIES:  # a bundle is a handful of files, not an inode flood
                raise BundleError(f"{path.name}: archive holds more than {_MAX_ZIP_ENTRIES} entries")
            for info in zf.infolist():
                name = Path(info.filename)
                if name.is_absolute() or ".." in name.parts:
                    raise BundleError(f"{path.name}: unsafe path in archive: {info.filename!r}")
                total += info.file_size
                if total > _MAX_ZIP_BYTES:
                    raise BundleError(f"{path.name}: archive expands to more than {_MAX_ZIP_BYTES >> 20} MB")
            if any(info.flag_bits & 0x1 for info in zf.infolist()):
                raise BundleError(f"{path.name}: archive is encrypted (password-protected): not a bundle")
            zf.extractall(target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # zlib, EOF: a damaged entry
        raise BundleError(f"{path.name} is not a valid zip archive: {e}") from None
    except NotImplementedError:  # zipfile's word for an unknown compression method
        raise BundleError(
            f"{path.name}: an entry is compressed in a way Python's zipfile cannot unpack "
            "(stored, deflate, bzip2 and lzma can be)"
        ) from None
    except OSError as e:  # an entry under a file's name, a name over 255 bytes: said of the archive
        where = str(e.filename or "").replace(str(target), path.name)
        raise BundleError(f"{path.name} cannot be unpacked as a bundle: {e.strerror or e}: {where}") from None
    inner = [p.parent for p in target.rglob("bundle.json")]
    if len(inner) != 1:
        raise BundleError(f"{path.name} must hold exactly one bundle.json, found {len(inner)}")
    try:  # checked here, so that a message names the archive the user gave, not the unpacked copy
        read_checked_onnx(inner[0], load_bundle_spec(inner[0]))
    except BundleError as e:
        raise type(e)(str(e).replace(str(target), path.name)) from None
    return inner[0]


def resolve_bundle(model: str | Path | None = None) -> Path:
    """The bundle folder for a packaged name, a folder path or a .zip path (None or the name
    ``"default"``: the shipped model, as the CLI's ``fracsight evaluate default ...`` says it).
    A packaged name given as a string wins over a folder of that name where the command runs
    (``./NAME`` or a :class:`~pathlib.Path` names the folder)."""
    if model is None or model == "default":  # a Path("default") is a folder of that name
        # the packaged one, never a folder of its name where the command runs (an evaluation report
        # written there broke every command, a copy of another bundle replaced the default unsaid)
        return _PACKAGED / DEFAULT_MODEL
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be a bundle name, folder or .zip path (str or Path), not {type(model).__name__}"
        )
    if not str(model):  # Path("") is the current folder: an empty name is not a request for it
        raise UnknownModelError("model is empty: give a bundle name, folder or .zip path, or None")
    if isinstance(model, str) and model in list_bundles():
        # an evaluation report written to --out NAME made every later `--model NAME` (and the
        # report's own re-run command) fail, and a copied bundle there was used instead unsaid
        return _PACKAGED / model
    path = Path(model)
    if path.is_dir():
        # absolute: a relative one passed on as text (to the API's workers, benchmark's timing
        # process) read as the packaged name it shares (`serve --model ./NAME` checked the folder
        # and served the packaged model)
        return path.absolute()
    if path.is_file() and path.suffix.lower() == ".zip":
        return _extract_zip(path)
    if path.exists():
        raise BundleError(f"{path} is neither a bundle folder nor a .zip of one")
    if str(model) in list_bundles():  # a Path of a packaged name, with no folder of that name here
        return _PACKAGED / str(model)
    return _by_model_name(str(model))


def checked_bundle(model: str | Path | None, operating_point: str | None = None) -> tuple[Path, BundleSpec]:
    """:func:`resolve_bundle`, its ``bundle.json``, its ``model.onnx`` checked against the sha256
    there, and the operating point a Predictor would take (``operating_point``, else the default
    of a fracture head): all but loading the model, for commands that hand it on to other
    processes or a window, where a bundle they cannot load would fail late or out of sight."""
    folder = resolve_bundle(model)
    spec = load_bundle_spec(folder)
    read_checked_onnx(folder, spec)
    spec.chosen_operating_point(operating_point)  # as Predictor asks for it: BundleError here, not per image
    return folder, spec


def loadable_bundle(model: str | Path | None, operating_point: str | None = None) -> tuple[Path, BundleSpec]:
    """:func:`checked_bundle`, and its graph loaded once, as each worker will load it: a
    ``bundle.json`` that contradicts ``model.onnx`` (its input size, a head the graph lacks) is a
    :class:`BundleError` here, not a traceback from every Ray actor after they start. The session
    is dropped and its memory given back (a batch job's driver holds no model otherwise)."""
    from fracsight._malloc import release_freed_memory
    from fracsight.inference.onnx_model import OnnxModel

    folder, spec = checked_bundle(model, operating_point)
    OnnxModel(folder, threads=1)
    release_freed_memory()
    return folder, spec


def packaged_models() -> dict[str, tuple[str | None, str]]:
    """Each packaged bundle's folder name: (its model name, its version), as results name it."""
    named = {}
    for folder in list_bundles():
        # only the two fields, read leniently (not load_bundle_spec): looking up one name must not
        # fail on another packaged bundle that the full check would refuse
        spec = json.loads((_PACKAGED / folder / "bundle.json").read_text(encoding="utf-8"))
        named[folder] = (spec.get("name"), str(spec.get("version")))
    return named


def _by_model_name(model: str) -> Path:
    """A packaged bundle named as predictions name their model (``NAME vVERSION``, or ``NAME``
    where one packaged version has it), so that a name read off a result can be passed back."""
    named = packaged_models()
    found = [f for f, (name, version) in named.items() if model in (name, f"{name} v{version}")]
    if len(found) == 1:
        return _PACKAGED / found[0]
    if found:
        versions = ", ".join(f"{f} (v{named[f][1]})" for f in found)
        raise UnknownModelError(f"{model!r} names several packaged versions: {versions}; name one of them")
    known = ", ".join(list_bundles()) or "none installed"
    # a variable exported long ago, never typed in this command: the message names where it came from
    source = " (set by FRACSIGHT_MODEL)" if os.environ.get("FRACSIGHT_MODEL") == model else ""
    if "/" in model or "\\" in model or model.lower().endswith(".zip"):  # meant as a path: say it is missing
        raise UnknownModelError(f"no such bundle folder or .zip: {model}{source}; packaged: {known}")
    raise UnknownModelError(f"no model bundle named {model!r}{source}, not a path either; packaged: {known}")
