"""What a pip user gets: the wheel built from the sdist (as `python -m build` makes them) holds
every file the package reads at run time (bundles, cards, training recipes, py.typed) and the
licence, and nothing of the checkout's (tests, caches); its recipes load from an installed layout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info")


def _run(*args: str, cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """The sdist of a copy of the sources, and the wheel built from that sdist (no network)."""
    tmp = tmp_path_factory.mktemp("dist")
    tree = tmp / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=SKIP)
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "tests", tree / "tests", ignore=SKIP)  # must stay out of both
    build_sdist = f"from setuptools import build_meta as b; b.build_sdist({str(tmp)!r})"
    _run(sys.executable, "-c", build_sdist, cwd=tree)
    (sdist,) = tmp.glob("fracsight-*.tar.gz")
    wheel_cmd = ["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(sdist)]
    _run(sys.executable, *wheel_cmd, cwd=tmp)
    (wheel,) = tmp.glob("fracsight-*.whl")
    return sdist, wheel


@pytest.mark.slow
def test_the_wheel_holds_every_package_file_and_nothing_of_the_checkout(dists):
    sdist, wheel = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    src = ROOT / "src"
    package_files = {
        p.relative_to(src).as_posix()
        for p in (src / "fracsight").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }
    assert package_files - names == set()  # recipes, card.md, bundle.json, model.onnx, py.typed
    assert "fracsight/training/recipes/fracatlas-lite0-384.yaml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {n.split("/")[0] for n in names} == {"fracsight", wheel.name.split("-py3")[0] + ".dist-info"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/tests/" in n]
    assert wheel.stat().st_size < 60e6, f"wheel of {wheel.stat().st_size / 1e6:.1f} MB"
    with tarfile.open(sdist) as tar:
        assert not [n for n in tar.getnames() if "/tests/" in n]


@pytest.mark.slow
def test_the_recipes_load_from_the_installed_wheel(dists, tmp_path):
    """From a folder that is no checkout: `-c NAME` finds the recipe in site-packages."""
    _, wheel = dists
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = (
        "import fracsight.training.config as c; from fracsight.training import load_config\n"
        f"assert c.__file__.startswith({str(site)!r}), c.__file__\n"
        "names = c.recipe_names(); assert 'fracatlas-lite0-384-gpu' in names, names\n"
        "print([load_config(n).name for n in names])"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n{code}"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fracatlas-lite0-384" in done.stdout


def test_python_dash_m_fracsight_is_the_command(tmp_path):
    """`python -m fracsight`, for an environment whose scripts folder is not on PATH."""
    done = subprocess.run(
        [sys.executable, "-m", "fracsight", "train", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage: fracsight train" in done.stdout


def test_every_config_the_docs_give_to_train_is_a_packaged_recipe():
    """The README and docs/training.md name recipes a pip install has (no checkout's configs/)."""
    import re

    from fracsight.training.config import recipe_names

    texts = [(ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "docs/training.md")]
    given = {m for text in texts for m in re.findall(r"(?:-c|--config)\s+`?([\w./-]+)", text)}
    assert given and given <= set(recipe_names()), given - set(recipe_names())


def test_the_code_runs_on_the_oldest_python_it_claims() -> None:
    """`requires-python = ">=3.10"`, yet `quantize` ended on 3.10 with "module 'contextlib' has no
    attribute 'chdir'" (3.11's): ruff's target version does not see a library call a version lacks."""
    import re  # not tomllib: Python 3.11's, and the tests run on 3.10 too

    claimed = re.search(r'^requires-python = ">=([\d.]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert claimed is not None, "pyproject.toml states no requires-python >= X"
    oldest = claimed.group(1)
    vermin = Path(sys.executable).with_name("vermin")
    command = [str(vermin)] if vermin.is_file() else [sys.executable, "-m", "vermin"]
    done = subprocess.run(
        [*command, "--no-tips", "--violations", f"-t={oldest}-", str(ROOT / "src")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_ci_runs_the_readmes_commands_with_what_the_tests_need() -> None:
    """`.ci/run` installs as the README says and runs its test command; it makes the venv only
    after Python's venv module is installed (a bare Debian has none: "python3: command not found"),
    and refuses to run the tests without the data and programs whose absence would skip them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Install, run, test", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    install, test = commands[1], commands[3]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in ci.splitlines()]
    assert install in lines and test in lines and lines.index(install) < lines.index(test)
    packages = next(line for line in lines if line.startswith("PACKAGES="))
    assert {"python3", "python3-venv"} <= set(packages.split("=", 1)[1].strip('"').split())
    venv = next(i for i, line in enumerate(lines) if line.startswith("python3 -m venv"))
    assert lines.index(packages) < venv
    assert "../shared/data/fracatlas/dataset.csv" in ci and 'if [ "$rc" -eq 5 ]' in ci
