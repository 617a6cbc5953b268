"""Test support for the desktop app: a real Xvfb on a free display, a DICOM made from a FracAtlas
image, and waiting on the real Tk event loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # tkinter may be missing: the tests that need it skip
    import tkinter as tk

    from fracsight.desktop.window import DesktopApp

XVFB = shutil.which("Xvfb")
SCREEN = (1280, 900)
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
PATIENT_NAME = "Desktop^Sentinel"  # planted in the test DICOM: must never appear in the window
PATIENT_ID = "DESKTOP-SENTINEL-77"


def _free_display() -> int:
    for n in range(90, 400):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number between :90 and :399")


@contextmanager
def xvfb(screen: tuple[int, int] = SCREEN) -> Iterator[str]:
    """A real Xvfb (``Xvfb :N -screen 0 1280x900x24``, or ``screen``) on a free display, stopped
    afterwards."""
    assert XVFB is not None
    for _ in range(5):  # another process may take the number between the check and the start
        n = _free_display()
        proc = subprocess.Popen(
            [XVFB, f":{n}", "-screen", "0", f"{screen[0]}x{screen[1]}x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            if Path(f"/tmp/.X11-unix/X{n}").exists():
                break
            time.sleep(0.05)
        if proc.poll() is None:
            break
    else:
        raise RuntimeError("Xvfb did not start")
    try:
        yield f":{n}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(root: tk.Tk, condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Run the real Tk main loop until ``condition()`` holds (checked every 20 ms), or fail."""
    deadline = time.monotonic() + timeout
    state = {"ok": False}

    def check() -> None:
        if condition():
            state["ok"] = True
            root.quit()
        elif time.monotonic() > deadline:
            root.quit()
        else:
            root.after(20, check)

    root.after(0, check)
    root.mainloop()
    assert state["ok"], f"timed out after {timeout} s waiting for {what or condition}"


def open_and_wait(desktop: DesktopApp, paths: Sequence[Path], timeout: float = 60.0) -> int:
    """``desktop.open_paths(paths)``, then the loop run until the files are looked for (on a
    thread) and queued; how many were."""
    listing = desktop.open_paths(paths)
    if listing is None:
        return 0
    wait_until(desktop.root, lambda: listing.queued is not None, timeout, f"the files of {paths}")
    assert listing.queued is not None
    return listing.queued


def settle(root: tk.Tk, seconds: float = 0.3) -> None:
    """Let the loop run for a moment (pending redraws, geometry)."""
    end = time.monotonic() + seconds
    wait_until(root, lambda: time.monotonic() >= end, seconds + 5, "the window to settle")


def screenshot(display: str, name: str) -> Image.Image:
    from PIL import ImageGrab

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    image = ImageGrab.grab(xdisplay=display)
    image.save(SCREENSHOTS / name)
    return image


def widget_box(widget: tk.Misc) -> tuple[int, int, int, int]:
    """The widget's rectangle on the screen (for cropping screenshots)."""
    x, y = widget.winfo_rootx(), widget.winfo_rooty()
    return x, y, x + widget.winfo_width(), y + widget.winfo_height()


def descendants(widget: tk.Misc) -> list[tk.Misc]:
    """Every widget under ``widget``, in the order made (a toolbar's buttons sit in its groups)."""
    return [w for child in widget.winfo_children() for w in (child, *descendants(child))]


def all_texts(widget: tk.Misc) -> list[str]:
    """Every text a widget tree shows: labels, buttons, tree rows and headings."""
    from tkinter import TclError

    out: list[str] = []
    for child in widget.winfo_children():
        with suppress(TclError):
            out.append(str(child.cget("text")))
        if child.winfo_class() == "Treeview":
            tree = child
            for iid in tree.get_children():  # type: ignore[attr-defined]
                out.extend(str(v) for v in tree.item(iid, "values"))  # type: ignore[attr-defined]
        out.extend(all_texts(child))
    return out


def linked_folder(folder: Path, images: Sequence[Path], prefix: str = "") -> Path:
    """``folder`` made and filled with links to ``images``, named ``<prefix><index>-<name>`` so that
    a folder lists them in the order given."""
    folder.mkdir()
    for i, image in enumerate(images):
        (folder / f"{prefix}{i:03d}-{image.name}").symlink_to(image)
    return folder


def dicom_from_image(jpeg: Path, target: Path) -> Path:
    """A 12-bit DX DICOM (MONOCHROME2, a window centre/width) of a FracAtlas JPEG, with patient
    identifiers planted; made with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    grey = np.asarray(Image.open(jpeg).convert("L"), dtype=np.uint16) * 16  # 0..4080
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = grey.astype("<u2").tobytes()
    ds.save_as(target, enforce_file_format=True)
    return target


def display_env(display: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DISPLAY"] = display
    return env


# Another X client that drags files with tkdnd's own XDND drag code (``::tkdnd::xdnd::_dodragdrop``,
# what a tkdnd drag source runs) and drops them at a point of the screen. The pointer is moved with a
# real warp (the X server sends the grabbing source its motion); only the button release, which an
# X client cannot make without the XTEST extension, is replaced by the call it would trigger.
DRAG_SOURCE = r"""
import sys, tkinter as tk
x, y, uris = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
root = tk.Tk()
root.geometry("16x16+1262+882")  # off the window under test (1260 x 860 at the top left)
root.tk.call("package", "require", "tkdnd")
root.update()
xdnd = "::tkdnd::xdnd::"
tries = [0]
def move():
    root.event_generate("<Motion>", warp=True, x=x - root.winfo_rootx(), y=y - root.winfo_rooty())
    root.after(100, release)
def release():
    tries[0] += 1
    if root.tk.eval("set " + xdnd + "_dodragdrop_drop_target_accepts_drop") == "1" or tries[0] > 100:
        root.tk.eval(xdnd + "_SendXdndDrop")  # what releasing button 1 does
    else:
        root.after(100, release)
def drag():
    root.after(200, move)
    root.tk.call(xdnd + "_dodragdrop", root._w, ("copy",), ("text/uri-list",), tuple(uris), 1)
    accepted = root.tk.eval("set " + xdnd + "_dodragdrop_drop_target_accepts_drop")
    action = root.tk.eval("set " + xdnd + "_dodragdrop_drop_target_accepts_action")
    print("accepted", accepted, action, flush=True)
    root.destroy()
root.after(100, drag)
root.after(30000, root.destroy)
root.mainloop()
"""


def start_drag(display: str, x: int, y: int, uris: list[str]) -> subprocess.Popen[str]:
    """Drag ``uris`` (``text/uri-list``, as file managers send them) from another process and drop
    them at the screen point ``(x, y)``; the caller runs its Tk loop meanwhile, then :func:`finish_drag`."""
    return subprocess.Popen(
        [sys.executable, "-c", DRAG_SOURCE, str(x), str(y), *uris],
        env=display_env(display),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_drag(proc: subprocess.Popen[str]) -> str:
    """What the drag source reported (``accepted 1 copy`` when the window took the drop)."""
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.strip()
