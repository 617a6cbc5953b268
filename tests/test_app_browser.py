"""The web app in a real browser: ``fracsight app`` in a subprocess, headless Chromium via Playwright.

Needs Debian's chromium (``apt-get install -y chromium``) and ``pip install playwright``; never a
downloaded browser. Screenshots go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import free_port
from fracsight.inference import NOTICE, Predictor

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
START_TIMEOUT = 90.0
WAIT_MS = 90_000
FILES = 'input[type="file"]:not([webkitdirectory])'  # the uploader of files
FOLDER = "input[webkitdirectory]"  # the uploader of a folder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is absent (pip install playwright)")
pytest.importorskip("streamlit", reason="the web app needs the app extra (pip install 'fracsight[app]')")


def fracsight_command() -> list[str]:
    script = Path(sys.executable).with_name("fracsight")
    if script.is_file():
        return [str(script)]
    found = shutil.which("fracsight")
    return [found] if found else [sys.executable, "-c", "from fracsight.cli import main; main()"]


def wait_until_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"fracsight app exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"fracsight app did not answer within {START_TIMEOUT:.0f} s:\n{log.read_text()}")


@contextmanager
def running_app(
    model: Path | None,
    examples: Path | None,
    work: Path,
    port: int | None = None,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """``fracsight app --port P --model MODEL --examples EXAMPLES`` running (the shipped model when
    ``model`` is None; on a free port unless given), its output in ``work/app.log``; yields its URL
    (on loopback) and stops it (with its children) on leaving."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "app.log"
    command = [*fracsight_command(), "app", "--port", str(port), "--host", host]
    command += [] if model is None else ["--model", str(model)]
    command += [] if examples is None else ["--examples", str(examples)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: teardown stops streamlit too
        )
    try:
        wait_until_healthy(proc, url, log)
        assert f"fracsight app: http://{host}:{port}" in log.read_text()
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def launch_chromium(pw):
    """Debian's Chromium, headless (never a downloaded browser)."""
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)


def new_tab(browser):
    # tall, so that one screenshot holds the whole app (Streamlit scrolls inside its own pane)
    tab = browser.new_page(viewport={"width": 1400, "height": 2600})
    tab.set_default_timeout(WAIT_MS)
    return tab


@pytest.fixture(scope="module")
def app_url(
    tiny_bundle: Path, fracatlas_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The app on the tiny test bundle, with one fractured and one normal FracAtlas example."""
    work = tmp_path_factory.mktemp("app")
    examples = work / "examples"
    for sub in ("Fractured", "Non_fractured"):
        (examples / sub).mkdir(parents=True)
        src = sorted((fracatlas_dir / "images" / sub).glob("*.jpg"))[1]
        (examples / sub / src.name).symlink_to(src)
    with running_app(tiny_bundle, examples, work) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One Chromium for the module (Playwright's sync API runs one at a time)."""
    with sync_api.sync_playwright() as pw:
        chromium = launch_chromium(pw)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(app_url: str, browser) -> object:
    return new_tab(browser)


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_upload_a_radiograph_and_a_broken_file(
    page, app_url: str, tiny_bundle: Path, fracatlas_dir: Path
) -> None:
    radiograph = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    expected = Predictor(tiny_bundle).predict(radiograph)

    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(app_url)
    page.get_by_text("Decision aid, not a diagnosis.").wait_for()
    assert NOTICE in page.inner_text("body")
    page.get_by_role("button", name="Try").nth(1).wait_for()  # the gallery renders its columns one by one
    assert page.get_by_role("button", name="Try").count() == 2  # the example gallery
    screenshot(page, "app-start.png")

    page.locator(FILES).set_input_files(str(radiograph))
    page.get_by_text(f"Fracture probability {expected.fracture_probability:.3f} (").wait_for()
    body = page.inner_text("body")
    assert radiograph.name in body
    assert expected.decision.lower() in body.lower()
    assert f"{expected.fracture_probability:.3f}" in body
    assert "Body region" not in body  # the tiny bundle has no region head: no filler line
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stImage"] img')]
                 .some(img => img.complete && img.naturalWidth > 0)"""
    )
    widths = page.eval_on_selector_all('[data-testid="stImage"] img', "imgs => imgs.map(i => i.naturalWidth)")
    assert max(widths) > 100
    alts = page.eval_on_selector_all('[data-testid="stImage"] img', "imgs => imgs.map(i => i.alt)")
    assert alts and all(alts), alts  # a screen reader read "image" for each
    page.get_by_text("Fracture heatmap: where the model ").first.wait_for()  # suspects, or looked most
    page.locator(".fs-bar-threshold").first.wait_for()
    page.get_by_text("Download CSV").wait_for()
    screenshot(page, "app-result.png")

    page.locator(FILES).set_input_files(
        {"name": "broken.png", "mimeType": "image/png", "buffer": b"these bytes are not a PNG"}
    )
    error = page.locator('[data-testid="stAlert"]', has_text="could not be read")
    error.wait_for()
    assert "unsupported_format" in error.inner_text()
    assert "Traceback" not in page.inner_text("body")
    # told to a screen reader by the live region that was on the page before the results
    page.wait_for_function(
        """() => [...document.querySelectorAll('[role="status"][aria-live="polite"]')]
                 .some(e => e.textContent.startsWith('Results for 2 files:')
                            && e.textContent.includes('1 could not be read'))"""
    )
    page.get_by_text("Download CSV").wait_for()
    page.locator('[data-testid="stDataFrame"]').wait_for()
    screenshot(page, "app-error.png")

    with page.expect_download() as download:
        page.get_by_text("Download CSV").click()
    csv_rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    by_source = {row["source"]: row for row in csv_rows}
    assert by_source[radiograph.name]["decision"] == expected.decision
    assert by_source["broken.png"]["error_code"] == "unsupported_format"
    elsewhere = [u for u in requested if not u.startswith((app_url, "data:", "blob:"))]
    assert requested and not elsewhere, f"the page must work offline, but it asked for {elsewhere}"


def test_after_a_server_restart_no_listed_upload_is_left_out_unsaid(
    browser, tiny_bundle: Path, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """The page reconnects by itself to a restarted server and still lists its uploads, which the
    new server never had: a file added then got the only card, the 3 listed before none, without a
    word. Now the new server's uploader is a new one: what it lists is what was read."""
    port = free_port()
    broken = [
        {"name": f"junk{i}.png", "mimeType": "image/png", "buffer": b"not a PNG %d" % i} for i in range(4)
    ]
    with running_app(tiny_bundle, fracatlas_dir / "images", tmp_path, port) as url:
        tab = new_tab(browser)
        tab.goto(url)
        tab.get_by_text("Decision aid, not a diagnosis.").wait_for()
        tab.locator(FILES).set_input_files(broken[:3])
        read = tab.locator('[data-testid="stAlert"]', has_text="could not be read")
        sync_api.expect(read).to_have_count(3)
        assert all(b["name"] in tab.inner_text("body") for b in broken[:3])
    with running_app(tiny_bundle, fracatlas_dir / "images", tmp_path, port):
        tab.wait_for_timeout(3000)  # the page reconnects by itself
        # while it runs again the old uploader and the new server's may both be on the page
        sync_api.expect(tab.locator(FILES)).to_have_count(1, timeout=60_000)

        def shown() -> tuple[list[str], list[str]]:
            tab.wait_for_timeout(5000)  # the run that reads the upload, whatever it shows
            uploader = tab.locator('[data-testid="stFileUploader"]').first.inner_text()
            listed = [b["name"] for b in broken if b["name"] in uploader]
            return listed, [b["name"] for b in broken if tab.get_by_role("heading", name=b["name"]).count()]

        tab.locator(FILES).set_input_files(broken[3:])
        listed, cards = shown()
        screenshot(tab, "app-after-restart.png")
        assert listed == cards, f"{listed} listed, {cards} read"  # never listed and left unread
        if not cards:  # added before the page ran again: dropped with the old list, and said so
            assert "add them again" in tab.inner_text("body")
            tab.locator(FILES).set_input_files(broken[3:])
            listed, cards = shown()
        assert listed == cards == ["junk3.png"], f"{listed} listed, {cards} read"
        tab.close()


class _Link:
    """A TCP link from a loopback port to the app that can be cut and restored on the same port, as
    a ward PC's network goes and comes (a sleep, a locked phone, a Wi-Fi drop)."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []

    def up(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def down(self) -> None:
        """Cut every connection and stop listening (shutdown wakes the thread blocked in accept)."""
        for s in [*([self._server] if self._server else []), *self._open]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._server, self._open = None, []

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            app = socket.create_connection(("127.0.0.1", self.target))
            self._open += [client, app]
            for a, b in ((client, app), (app, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)


def test_a_page_away_longer_than_a_session_lives_lists_only_what_it_reads(
    browser, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A page whose network was gone longer than Streamlit keeps a session (2 minutes; 3 s here)
    reconnects to a new session of the same server and still listed its uploads: the next action
    emptied the results, and a file added then got the only card, 4 listed, 1 read, no word."""
    broken = [
        {"name": f"junk{i}.png", "mimeType": "image/png", "buffer": b"not a PNG %d" % i} for i in range(4)
    ]
    port = free_port()
    env = {**os.environ, "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": "3"}
    with running_app(tiny_bundle, None, tmp_path, port, env=env):
        link = _Link(port)
        link.up()
        tab = new_tab(browser)
        tab.goto(f"http://127.0.0.1:{link.port}")
        tab.get_by_text("Decision aid, not a diagnosis.").wait_for()
        tab.locator(FILES).set_input_files(broken[:3])
        sync_api.expect(tab.locator('[data-testid="stAlert"]', has_text="could not be read")).to_have_count(3)
        link.down()
        tab.wait_for_timeout(15_000)  # past the session's 3 s, and Streamlit's check of it
        link.up()
        tab.wait_for_timeout(8_000)  # the page reconnects by itself
        tab.locator(FILES).set_input_files(broken[3:])
        tab.wait_for_timeout(6_000)
        uploader = tab.locator('[data-testid="stFileUploader"]').first.inner_text()
        listed = [b["name"] for b in broken if b["name"] in uploader]
        cards = [b["name"] for b in broken if tab.get_by_role("heading", name=b["name"]).count()]
        assert listed == cards, f"{listed} listed, {cards} read"
        link.down()
        tab.close()


# ---- the shipped model: a study, operating points, the overlay download, a phone ----------------------
WRIST = ("IMG0000015.jpg", "IMG0000006.jpg")  # FracAtlas Non_fractured: 0.16 and 0.02 with the shipped model


@pytest.fixture(scope="module")
def shipped_app_url(fracatlas_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app on the shipped model, with a gallery of six FracAtlas examples."""
    work = tmp_path_factory.mktemp("shipped-app")
    with running_app(None, fracatlas_dir / "images", work) as url:
        yield url


def test_a_study_whose_mean_hides_a_view_says_so_at_every_operating_point(
    browser, shipped_app_url: str, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """Two views of one arm: the mean is below both thresholds, but at *triage* one view alone is
    above it. The study card counts the views suspected on their own and warns, and follows the
    operating point; the overlay download is ``predict --overlay-dir``'s picture, band included;
    *Clear all images* empties the page for the next patient."""
    paths = [fracatlas_dir / "images" / "Non_fractured" / name for name in WRIST]
    predictor = Predictor()
    balanced, triage = (predictor.spec.operating_point(name) for name in ("balanced", "triage"))
    first, second = (predictor.predict(p).fracture_probability for p in paths)
    assert triage.threshold <= first < balanced.threshold and (first + second) / 2 < triage.threshold

    tab = new_tab(browser)
    tab.goto(shipped_app_url)
    tab.locator(FILES).set_input_files([str(p) for p in paths])
    tab.get_by_text("These images are one study").click()
    tab.get_by_text("Views suspected on their own: 0 of 2", exact=True).wait_for()
    tab.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').click()
    tab.get_by_role("option", name="triage").click()
    tab.get_by_text(f"Views suspected on their own: 1 of 2 ({WRIST[0]})", exact=True).wait_for()
    caution = tab.locator('[data-testid="stAlert"]', has_text="The mean of the views is below")
    assert f"{WRIST[0]} is above it on its own: review it" in caution.inner_text()
    screenshot(tab, "app-study-caution.png")

    with tab.expect_download() as download:
        tab.get_by_role("button", name="Download IMG0000015.overlay.png").click()
    assert download.value.suggested_filename == "IMG0000015.overlay.png"
    shown = np.asarray(Image.open(download.value.path()).convert("RGB"), dtype=int)
    predict = [*fracsight_command(), "predict", "--operating-point", "triage", "--overlay-dir", str(tmp_path)]
    subprocess.run([*predict, str(paths[0])], capture_output=True, check=True)
    written = np.asarray(Image.open(tmp_path / "IMG0000015.overlay.png").convert("RGB"), dtype=int)
    assert shown.shape == written.shape and np.abs(shown - written).max() <= 2

    tab.get_by_role("button", name="Clear all images").click()
    tab.get_by_text("Upload radiographs or pick an example").wait_for()
    assert tab.get_by_text(WRIST[0]).count() == 0
    tab.close()


def test_on_a_phone_the_result_comes_before_the_example_gallery(
    browser, shipped_app_url: str, fracatlas_dir: Path
) -> None:
    """At 390 px the six gallery thumbnails stand one a row: open, they put the first result some
    3000 px down. Once an image is given the gallery folds away."""
    radiograph = fracatlas_dir / "images" / "Non_fractured" / WRIST[1]
    phone = browser.new_page(viewport={"width": 390, "height": 4000}, is_mobile=True, has_touch=True)
    phone.set_default_timeout(WAIT_MS)
    phone.goto(shipped_app_url)
    phone.get_by_role("button", name="Try").first.wait_for()  # open before anything is given
    phone.locator(FILES).set_input_files(str(radiograph))
    decision = phone.get_by_text("Fracture probability 0.0").first
    decision.wait_for()
    assert not phone.get_by_role("button", name="Try").first.is_visible()
    box = decision.bounding_box()
    assert box is not None and box["y"] < 1200, box
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
    screenshot(phone, "app-phone.png")
    phone.close()


def test_each_example_button_says_which_image_it_tries(browser, shipped_app_url: str) -> None:
    """The gallery's buttons were all called *Try*: a screen reader listed six buttons of the same
    name and could not tell which image each would add. Now each is named by its image, and the
    button found by that name adds that image."""
    tab = new_tab(browser)
    tab.goto(shipped_app_url)
    buttons = tab.get_by_role("button", name="Try")
    buttons.nth(5).wait_for()  # the gallery renders its six columns one by one
    names = [" ".join(buttons.nth(i).inner_text().split()) for i in range(buttons.count())]
    assert len(names) == 6 and len(set(names)) == 6, names
    captions = tab.eval_on_selector_all('[data-testid="stImageCaption"]', "cs => cs.map(c => c.innerText)")
    for name in names:
        assert name.startswith("Try ") and name[4:] in captions, (name, captions)
    chosen = names[2][4:]
    tab.get_by_role("button", name=names[2], exact=True).click()
    tab.get_by_role("heading", name=chosen).wait_for()
    tab.close()


FRACTURED_TWO_BOXES = "IMG0000019.jpg"  # FracAtlas Fractured: two boxes with the shipped model, 0.39 and 0.22


def test_the_card_gives_the_score_of_every_box_the_overlay_labels(
    browser, shipped_app_url: str, fracatlas_dir: Path
) -> None:
    """The overlay labels each box with its score (0.39 and 0.22); the card said only *top score
    0.39*, so the second label had no counterpart on the card, and neither said what the number is
    (next to a fracture probability of 0.85, a box's 0.39 read as a contradiction). Now the card
    lists every box's score as the image labels it, and says it is not the fracture probability."""
    path = fracatlas_dir / "images" / "Fractured" / FRACTURED_TWO_BOXES
    expected = Predictor().predict(path)
    labels = [f"{b.score:.2f}" for b in expected.boxes]
    assert len(labels) >= 2
    tab = new_tab(browser)
    tab.goto(shipped_app_url)
    tab.locator(FILES).set_input_files(str(path))
    line = tab.get_by_text(f"{len(labels)} suspected areas boxed")
    line.wait_for()
    text = " ".join(line.inner_text().split())
    assert f"box scores {', '.join(labels)}, as labelled on the image" in text, text
    assert "not the fracture probability" in text
    tab.close()


def test_many_images_show_how_far_the_reading_is(browser, shipped_app_url: str, fracatlas_dir: Path) -> None:
    """Thirty radiographs at once: the page showed *Reading 30 image(s) ...* and a spinner until
    all were done, which on a slow computer (or a slow model) was minutes with no sign of progress.
    Now a bar counts them, naming the image being read, and goes once all are shown."""
    paths = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[40:70]
    tab = new_tab(browser)
    tab.goto(shipped_app_url)
    tab.get_by_text("Decision aid, not a diagnosis.").wait_for()
    tab.locator(FILES).set_input_files([str(p) for p in paths])
    tab.get_by_text(re.compile(r"Reading image \d+ of 30: IMG\d+\.jpg")).wait_for()
    tab.get_by_text("Download CSV").wait_for()
    assert tab.locator('[data-testid="stProgress"]').count() == 0
    assert tab.get_by_role("button", name=re.compile(r"^Download IMG\d+\.overlay\.png$")).count() == 30
    tab.close()


def test_a_folder_upload_is_read_as_predict_reads_the_folder(
    browser, shipped_app_url: str, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """A PACS export or a MURA study chosen as a folder: each image named by its path in it, a
    DICOM-style file without extension read by its bytes, hidden files and notes left out with a
    note, and the study folder's verdict: the CSV is that of ``fracsight predict FOLDER``."""
    study = tmp_path / "export" / "patient1" / "study1"
    study.mkdir(parents=True)
    for name in WRIST:
        shutil.copy(fracatlas_dir / "images" / "Non_fractured" / name, study / name)
    (study / "IM000003").write_bytes((fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg").read_bytes())
    (study / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (study / "notes.txt").write_text("left wrist, two views\n")
    run = subprocess.run(
        [*fracsight_command(), "predict", str(tmp_path / "export"), "--json"], capture_output=True, check=True
    )
    expected = json.loads(run.stdout)
    cli_study = next(s for s in expected["studies"])
    assert cli_study["study"] == "patient1/study1" and len(cli_study["images"]) == 3

    tab = new_tab(browser)
    tab.goto(shipped_app_url)
    tab.get_by_text("Decision aid, not a diagnosis.").wait_for()
    tab.locator(FOLDER).set_input_files(str(tmp_path / "export"))
    tab.get_by_text("Study verdict (3 views): patient1/study1", exact=True).wait_for()
    tab.get_by_text("Download CSV").wait_for()
    note = tab.get_by_text("Left out of the folder (not images, or hidden):").inner_text()
    assert "export/patient1/study1/notes.txt" in note and "export/patient1/study1/.DS_Store" in note
    assert (
        f"{cli_study['fracture_probability']:.3f}"
        in tab.get_by_text("Mean fracture probability").inner_text()
    )
    buttons = tab.get_by_role("button", name=re.compile(r"^Download .*overlay\.png$"))
    assert sorted(buttons.all_inner_texts()) == sorted(
        f"Download patient1_study1_{name}.overlay.png" for name in ("IMG0000015", "IMG0000006", "IM000003")
    )  # named with the folders: another patient's IM000003 would have had the same name
    # the CSV is predict's, named as predict names the folder's files (the app said export/patient1/...)
    with tab.expect_download() as download:
        tab.get_by_role("button", name="Download CSV").click()
    shown = Path(download.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(shown)))
    assert sorted(r["source"] for r in rows) == sorted(
        [*(f"patient1/study1/{name}" for name in (*WRIST, "IM000003")), "patient1/study1"]
    )
    predicted = subprocess.run(
        [*fracsight_command(), "predict", str(tmp_path / "export"), "--csv", "-", "--all-classes"],
        capture_output=True,
        check=True,
        text=True,
    )
    assert shown.splitlines() == predicted.stdout.splitlines()
    screenshot(tab, "app-folder-upload.png")
    tab.close()


def uploads_in_memory(url: str, until: Callable[[int], bool], timeout: float = 30.0) -> int:
    """The bytes of uploads the server holds for all its tabs (Streamlit's metrics, which it
    refreshes every 5 s), once ``until`` holds for them or ``timeout`` is over."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{url}/_stcore/metrics", timeout=10) as response:
            text = response.read().decode()
        found = re.search(r'^cache_memory_bytes\{cache_type="UploadedFileManager"[^}]*\} (\d+)', text, re.M)
        held = int(found.group(1)) if found else 0
        if until(held) or time.monotonic() > deadline:
            return held
        time.sleep(1)


def test_clear_all_images_frees_the_uploads_on_the_server(browser, shipped_app_url: str) -> None:
    """*Clear all images* emptied the uploader on the page, but the server kept its files until the
    tab closed: on a ward PC left open all day, each patient's uploads stayed in memory (40 MB more
    at each clear). Now each clear gives them back."""
    size = 20_000_000  # not an image: an error card, quickly; far more than any other tab holds
    junk = {"name": "junk.png", "mimeType": "image/png", "buffer": os.urandom(size)}
    tab = new_tab(browser)
    tab.goto(shipped_app_url)
    tab.get_by_text("Decision aid, not a diagnosis.").wait_for()
    for _ in range(3):
        tab.locator(FILES).set_input_files(junk)
        tab.locator('[data-testid="stAlert"]', has_text="could not be read").wait_for()
        held = uploads_in_memory(shipped_app_url, lambda n: n >= size)
        assert held >= size
        tab.get_by_role("button", name="Clear all images").click()
        tab.get_by_text("Upload radiographs or pick an example").wait_for()
        freed = held - size
        assert uploads_in_memory(shipped_app_url, freed.__ge__) <= freed
    tab.close()


def test_a_closed_tabs_uploads_are_freed_once_streamlit_forgets_the_tab(
    browser, fracatlas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed (or reloaded) tab's uploads stayed in the server's memory for good: Streamlit drops
    an expired session without removing its files (150 MB held 200 s after the tab closed). With a
    session kept 2 s here (Streamlit's own setting, 120 s by default), the next tab's run frees them."""
    monkeypatch.setenv("STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL", "2")
    size = 20_000_000  # not an image: an error card, quickly
    junk = {"name": "junk.png", "mimeType": "image/png", "buffer": os.urandom(size)}
    with running_app(None, fracatlas_dir / "images", tmp_path) as url:
        tab = new_tab(browser)
        tab.goto(url)
        tab.get_by_text("Decision aid, not a diagnosis.").wait_for()
        tab.locator(FILES).set_input_files(junk)
        tab.locator('[data-testid="stAlert"]', has_text="could not be read").wait_for()
        assert uploads_in_memory(url, lambda n: n >= size) >= size
        tab.close()
        time.sleep(5)  # past the 2 s the closed tab's session is kept
        later = new_tab(browser)
        later.goto(url)
        later.get_by_text("Decision aid, not a diagnosis.").wait_for()
        assert uploads_in_memory(url, lambda n: n < size) < size
        later.close()


def test_two_uploads_of_one_stem_get_overlays_of_two_names(
    browser, shipped_app_url: str, fracatlas_dir: Path, tmp_path: Path
) -> None:
    """`wrist.jpg` and `wrist.png` (a film as JPEG and PNG; `frac.jpg` beside `frac.dcm`) both
    downloaded as `wrist.overlay.png`: two pictures no one could match to their images."""
    source = fracatlas_dir / "images" / "Non_fractured" / WRIST[0]
    jpeg, png = tmp_path / "wrist.jpg", tmp_path / "wrist.png"
    jpeg.write_bytes(source.read_bytes())
    Image.open(source).save(png)
    tab = new_tab(browser)
    tab.goto(shipped_app_url)
    tab.locator(FILES).set_input_files([str(jpeg), str(png)])
    tab.get_by_text("Download CSV").wait_for()
    buttons = tab.get_by_role("button", name=re.compile(r"^Download .*overlay\.png$"))
    assert sorted(buttons.all_inner_texts()) == [
        "Download wrist.jpg.overlay.png",
        "Download wrist.png.overlay.png",
    ]


def test_on_every_address_the_app_calls_nowhere_and_says_it_has_no_login(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    """`fracsight app --host 0.0.0.0` (the web-app image's command) asked checkip.amazonaws.com for
    an "External URL" at every start, through the proxy when one was set, and said nothing of the
    app having no login, where `serve` warns (or refuses) off loopback."""
    import socket
    import threading

    calls: list[bytes] = []
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        proxy.settimeout(0.5)

        def record() -> None:
            while True:
                try:
                    conn, _ = proxy.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return  # closed
                with conn:
                    conn.settimeout(2)
                    calls.append(conn.recv(200))

        threading.Thread(target=record, daemon=True).start()
        via = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
        env |= {"HTTP_PROXY": via, "HTTPS_PROXY": via, "http_proxy": via, "https_proxy": via}
        with running_app(tiny_bundle, None, tmp_path, host="0.0.0.0", env=env) as url:
            # a WebSocket from another origin (a proxy on another port, a stray page): Streamlit's
            # origin check asked for the public address again, on every such try while offline
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as ws:
                ws.sendall(
                    f"GET /_stcore/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\nOrigin: https://fracsight.hospital.example\r\n\r\n".encode()
                )
                assert ws.recv(200).startswith(b"HTTP/1.1 403")  # refused, as before
            time.sleep(4)  # Streamlit asked (and waited up to 2 x 1 s) right after it started
    assert calls == []
    said = (tmp_path / "app.log").read_text()
    assert "warning: listening on 0.0.0.0: the web app has no login of its own" in said
    assert "External URL" not in said
