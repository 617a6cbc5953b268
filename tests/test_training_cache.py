"""The letterbox cache names every unreadable file by its path in the data set."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fracsight.data import FRACTURE, Sample
from fracsight.errors import ImageReadError, UnsupportedFormatError
from fracsight.training.cache import letterbox_samples


def _mura_like(root: Path, garbage: set[int], n: int) -> list[Sample]:
    """``n`` studies, each of one ``image1.png`` as in MURA; those in ``garbage`` are not images."""
    samples = []
    for k in range(n):
        path = root / "train" / "XR_HAND" / f"patient{k:05d}" / "study1_positive" / "image1.png"
        path.parent.mkdir(parents=True)
        if k in garbage:
            path.write_bytes(b"not an image at all")
        else:
            Image.new("L", (40, 48), color=k).save(path)
        samples.append(Sample(path=path, labels={FRACTURE: 1}))
    return samples


@pytest.mark.parametrize("workers", [1, 2])
def test_all_unreadable_files_are_named_under_the_data_set(tmp_path: Path, workers: int) -> None:
    samples = _mura_like(tmp_path / "mura", garbage={3, 7}, n=40)  # 40 > 32: a process pool with 2 workers
    with pytest.raises(UnsupportedFormatError) as caught:
        letterbox_samples(samples, 32, tmp_path / "cache", workers=workers, root=tmp_path / "mura")
    message = str(caught.value)
    assert message.startswith("2 images cannot be read")
    for k in (3, 7):
        assert f"train/XR_HAND/patient{k:05d}/study1_positive/image1.png: " in message
    assert not (tmp_path / "cache").exists()  # nothing cached from a failed read


def test_one_unreadable_file_keeps_its_error_and_is_named_by_the_shared_folder(tmp_path: Path) -> None:
    samples = _mura_like(tmp_path / "mura", garbage={1}, n=3)
    with pytest.raises(ImageReadError, match=r"^patient00001/study1_positive/image1\.png: "):
        letterbox_samples(samples, 32, workers=1)  # no root: named under the folder the samples share
    assert letterbox_samples(samples[:1], 32, workers=1).images.shape == (1, 32, 32)


def test_a_cache_cut_short_is_never_left_and_one_found_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reproduction: a full disk while the cache was saved left a short ``.npy`` file, and
    every later ``train`` on that data stopped with numpy's traceback on loading it."""
    import numpy as np

    samples = _mura_like(tmp_path / "mura", garbage=set(), n=3)
    cache = tmp_path / "cache"
    real_save = np.save

    def disk_full(file, array):  # half the bytes written, then ENOSPC
        real_save(file, array[: len(array) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        letterbox_samples(samples, 32, cache, workers=1)
    assert list(cache.iterdir()) == []  # no short file under the cache's name, no temporary one
    monkeypatch.setattr(np, "save", real_save)

    made = letterbox_samples(samples, 32, cache, workers=1)
    (image_file,) = cache.glob("*-img.npy")
    for cut in (200, 0):  # as the old code left it: cut short, or empty (np.load: EOFError)
        image_file.write_bytes(image_file.read_bytes()[:cut])
        caplog.clear()
        with caplog.at_level("WARNING"):
            again = letterbox_samples(samples, 32, cache, workers=1)
        assert "damaged" in caplog.text
        assert np.array_equal(again.images, made.images)
        assert np.array_equal(np.load(image_file), made.images)  # and written whole this time


def test_one_data_set_given_by_two_paths_is_cached_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train data` then `train /abs/data` (the card's Reproduce command): every image letterboxed
    and stored again (the key took each path as typed)."""
    import dataclasses

    samples = _mura_like(tmp_path / "mura", garbage=set(), n=3)
    letterbox_samples(samples, 32, tmp_path / "cache", workers=1)
    monkeypatch.chdir(tmp_path)
    relative = [dataclasses.replace(s, path=s.path.relative_to(tmp_path)) for s in samples]
    letterbox_samples(relative, 32, tmp_path / "cache", workers=1)
    assert len({p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache").iterdir()}) == 1  # one key


def test_the_cache_line_counts_and_deletes_only_fracsights_entries(tmp_path: Path) -> None:
    """A run made in ~ put its cache in ~/.cache beside pip's and torch hub's, counted them in its
    size, and said "delete it"; a `--cache-dir` beside runs said so of the runs."""
    from fracsight.training.cache import cache_note

    cache = tmp_path / ".cache"
    assert cache_note(cache, "x") is None
    letterboxed = _mura_like(tmp_path / "mura", garbage=set(), n=2)
    letterbox_samples(letterboxed, 32, cache, workers=1)
    assert cache_note(cache, "x").endswith("; delete it to free the space")  # ours alone
    (cache / "pip").mkdir()
    (cache / "pip" / "wheel.whl").write_bytes(b"\0" * 3_000_000)
    note = cache_note(cache, "x")
    assert note.startswith(f"cache: {cache} (0 MB) holds x for the next run; ")  # pip's 3 MB not counted
    assert note.endswith("; delete its lb-* and heads-* entries to free the space")
    assert cache_note(tmp_path / "mura", "x") is None  # nothing of fracsight's there
