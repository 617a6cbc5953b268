"""`fracsight batch` as a new user first runs it: paths written by hand or on Windows, `-` for
standard input, a cluster of another Ray version. Fast: nothing here starts Ray (the job with a
cluster of another version is in tests/test_scale_ray.py, beside the token test's cluster)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracsight.cli import app as cli
from fracsight.errors import DatasetError
from fracsight.scale.inputs import collect_batch_inputs

pytest.importorskip("ray")


def one_line(output: str) -> str:
    return " ".join(output.split())


def test_a_home_path_in_a_list_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`~/xr/a.jpg` in a list (no shell expands it there) was a row for `<list folder>/~/xr/a.jpg`."""
    home = tmp_path / "home"
    (home / "xr").mkdir(parents=True)
    (home / "xr" / "a.jpg").write_bytes(b"x")
    monkeypatch.setenv("HOME", str(home))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "l.txt").write_text("~/xr/a.jpg\n~/xr/gone.jpg\n")
    (lists / "m.csv").write_text("path\n~/xr/a.jpg\n")
    expected = [str(home / "xr/a.jpg"), str(home / "xr/gone.jpg")]
    assert list(collect_batch_inputs([lists / "l.txt"])) == expected
    assert collect_batch_inputs([lists / "m.csv"]) == {str(home / "xr/a.jpg"): "a.jpg"}
    (lists / "~").mkdir()  # a folder literally named ~ beside the list: the file there wins
    (lists / "~" / "xr").mkdir()
    (lists / "~" / "xr" / "a.jpg").write_bytes(b"x")
    assert next(iter(collect_batch_inputs([lists / "l.txt"]))) == str(lists / "~/xr/a.jpg")


@pytest.mark.skipif(os.sep != "/", reason="a POSIX file system")
def test_dot_dot_after_a_linked_folder_leads_where_the_link_leads(tmp_path: Path) -> None:
    """`qa/lists -> proj/lists` and a row `../images/a.jpg`: the system opens proj/images/a.jpg,
    but the path was made absolute as text (qa/images/a.jpg): another image was predicted under
    the right name, or "no such file" for one `ls` shows."""
    (tmp_path / "proj" / "lists").mkdir(parents=True)
    (tmp_path / "proj" / "images").mkdir()
    (tmp_path / "qa" / "images").mkdir(parents=True)
    (tmp_path / "proj" / "images" / "a.jpg").write_bytes(b"meant")
    (tmp_path / "qa" / "images" / "a.jpg").write_bytes(b"another")
    (tmp_path / "qa" / "lists").symlink_to(tmp_path / "proj" / "lists")
    (tmp_path / "proj" / "lists" / "l.txt").write_text("../images/a.jpg\n")
    meant = str(tmp_path / "proj" / "images" / "a.jpg")
    assert list(collect_batch_inputs([tmp_path / "qa" / "lists" / "l.txt"])) == [meant]
    assert list(collect_batch_inputs([tmp_path / "qa" / "lists" / ".." / "images"])) == [meant]
    both = collect_batch_inputs(
        [tmp_path / "qa" / "lists" / ".." / "images" / "a.jpg", tmp_path / "qa" / "images" / "a.jpg"]
    )
    assert sorted(both) == sorted([meant, str(tmp_path / "qa" / "images" / "a.jpg")])  # two files, two rows


def test_a_manifest_of_a_header_alone_is_said_to_have_no_rows(tmp_path: Path) -> None:
    """ "no image files found in the given inputs" named neither the manifest nor why."""
    (tmp_path / "m.csv").write_text("path,label\n")
    with pytest.raises(DatasetError, match=r"m\.csv: no rows \(no path listed in it\)"):
        collect_batch_inputs([tmp_path / "m.csv"])
    # beside a manifest with rows (an empty daily shard), it is no error: the job runs
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "day1.csv").write_text("path\na.jpg\n")
    assert list(collect_batch_inputs([tmp_path / "day1.csv", tmp_path / "m.csv"])) == [
        str(tmp_path / "a.jpg")
    ]
    # a folder given as `..` that holds no image yet: its row's key is the folder itself (it was
    # `.../sub/..`, which a later run that finds images there never matched: its error row stayed)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    here = os.getcwd()
    try:
        os.chdir(tmp_path / "empty" / "sub")
        keys = list(collect_batch_inputs([tmp_path / "a.jpg", Path("..")]))
    finally:
        os.chdir(here)
    assert keys == [str(tmp_path / "a.jpg"), str(tmp_path / "empty")]


def test_quoted_names_in_a_list_are_the_files_inside_the_quotes(tmp_path: Path) -> None:
    """Windows' "Copy as path" and GNU ls on a terminal quote names: each was a "no such file" row
    (`<list folder>/"a.jpg"`), kept for good. A file whose name has the quotes is still itself."""
    (tmp_path / "a b.jpg").write_bytes(b"x")
    (tmp_path / "c.jpg").write_bytes(b"x")
    (tmp_path / "'odd'.jpg").write_bytes(b"x")
    (tmp_path / "list.txt").write_text(f"\"{tmp_path / 'c.jpg'}\"\n'a b.jpg'\n'odd'.jpg\n\"missing.jpg\"\n")
    assert collect_batch_inputs([tmp_path / "list.txt"]) == {
        str(tmp_path / "c.jpg"): "c.jpg",
        str(tmp_path / "a b.jpg"): "a b.jpg",
        str(tmp_path / "'odd'.jpg"): "'odd'.jpg",
        str(tmp_path / "missing.jpg"): "missing.jpg",  # named as the file it would be: its row says so
    }
    # fracsight's own CSV spells `-x.jpg'` as `'-x.jpg'` (a spreadsheet's escape): that file
    (tmp_path / "-x.jpg'").write_bytes(b"x")
    (tmp_path / "given-back.csv").write_text("path\n'-x.jpg'\n")
    assert list(collect_batch_inputs([tmp_path / "given-back.csv"])) == [str(tmp_path / "-x.jpg'")]
    # a list reached through a link: the quotes are looked up where its rows are read from (the
    # link's folder was asked, and the list's own `'x.jpg'` lost its quotes)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "'x.jpg'").write_bytes(b"x")
    (tmp_path / "real" / "list.txt").write_text("'x.jpg'\n")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "list.txt").symlink_to(tmp_path / "real" / "list.txt")
    assert list(collect_batch_inputs([tmp_path / "link" / "list.txt"])) == [
        str(tmp_path / "real" / "'x.jpg'")
    ]
    # quotes around nothing are no path: the list is refused, naming the lines (they were rows
    # for files named `''` or ` `, committed)
    (tmp_path / "blank.txt").write_text("c.jpg\n''\n\" \"\n")
    with pytest.raises(DatasetError, match=r"2 of 3 rows have no 'path' \(line 2, line 3\)"):
        collect_batch_inputs([tmp_path / "blank.txt"])


@pytest.mark.skipif(os.sep != "/", reason="a POSIX file system")
def test_windows_paths_in_a_manifest(tmp_path: Path) -> None:
    """`sub\\a.jpg` was a row for a file named `sub\\a.jpg` (no such file); `C:\\xr\\a.jpg` and
    `\\\\pacs\\share\\a.jpg` rows for `<manifest folder>/C:\\xr\\a.jpg`, all `unreadable_image`."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jpg").write_bytes(b"x")
    (tmp_path / "rel.csv").write_text("path\nsub\\a.jpg\nsub\\b.jpg\n")
    assert collect_batch_inputs([tmp_path / "rel.csv"]) == {
        str(tmp_path / "sub/a.jpg"): "a.jpg",
        str(tmp_path / "sub\\b.jpg"): "sub\\b.jpg",  # found under neither spelling: its row says so
    }
    (tmp_path / "win.csv").write_text(
        "path\nC:\\xr\\a.jpg\nsub\\a.jpg\n\\\\pacs\\share\\a.jpg\nD:/xr/b.jpg\n"
    )
    said = "3 of 4 rows are Windows paths (a drive letter or \\\\server\\share) (line 2, line 4, line 5)"
    with pytest.raises(DatasetError) as e:
        collect_batch_inputs([tmp_path / "win.csv"])
    assert said in str(e.value)

    args = ["batch", "run", str(tmp_path / "win.csv"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and said in one_line(result.output), result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_a_list_from_mura_or_of_patterns_is_refused_before_ray_starts(tmp_path: Path, monkeypatch) -> None:
    """MURA's valid_image_paths.csv (no header, paths from the folder above it): "no 'path' column:
    name the column of paths with --path-column", which took the first image for the header and
    left it out; from inside the data folder, every row an unreadable_image row, committed. A shell
    pattern in a list (arch/a/*.jpg) was one such row too, counted as an error for good."""
    mura = tmp_path / "MURA-v1.1"
    image = mura / "valid" / "XR_HAND" / "patient00002" / "study1_positive" / "image1.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"png")
    listed = mura / "valid_image_paths.csv"
    listed.write_text("MURA-v1.1/valid/XR_HAND/patient00002/study1_positive/image1.png\n")
    with pytest.raises(DatasetError, match=r"it has no header row \(its first line, 'MURA-v1.1/valid/") as e:
        collect_batch_inputs([listed])
    assert f"its paths are relative to {tmp_path}, not to the list's folder" in str(e.value)
    as_text = mura / "valid_image_paths.txt"
    as_text.write_text(listed.read_text())
    monkeypatch.chdir(mura)  # and given by their bare names, as typed there
    with pytest.raises(
        DatasetError, match="1 of them exist relative to the folder above it, as MURA's lists are"
    ):
        collect_batch_inputs([Path(as_text.name)])
    with pytest.raises(DatasetError, match="it has no header row"):
        collect_batch_inputs([Path(listed.name)])
    (tmp_path / "arch").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "arch" / name).write_bytes(b"jpg")
    patterns = tmp_path / "list.txt"
    patterns.write_text("arch/*.jpg\n")
    with pytest.raises(DatasetError, match=r"1 of 1 rows are shell patterns, not paths \(line 1\)"):
        collect_batch_inputs([patterns])


def test_standard_input_is_refused_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`find ... | fracsight batch run - --out o` said `no such file or folder: -`."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["batch", "run", "-", "--out", "o"], input="/x/a.jpg\n")
    assert result.exit_code == 2, result.output
    assert "reads no paths from standard input ('-'): save them to a list" in one_line(result.output)
    assert not (tmp_path / "o").exists()


def test_a_cluster_of_another_ray_version_names_both_versions() -> None:
    """Ray's version check spreads the versions over six lines; the one line kept was
    `RuntimeError: Version mismatch: The cluster was started with:`."""
    from ray._private.utils import check_version_info

    from fracsight.scale.job import _first_line

    with pytest.raises(RuntimeError) as e:  # the message of the check a driver runs as it connects
        check_version_info({"ray_version": "2.0.1", "python_version": "3.9.1"}, "node 10.0.0.5")
    said = _first_line(e.value)
    assert "\n" not in said
    assert said.startswith("version mismatch: the cluster runs Ray 2.0.1 on Python 3.9.1, this driver Ray ")
    assert "run the driver with the cluster's versions" in said


def test_an_output_inside_a_parquet_dataset_folder_is_not_read_as_the_manifest(tmp_path: Path) -> None:
    """`batch run ds.parquet --out ds.parquet/results`: the re-run that resumes it read the output's
    parts and results.csv as the manifest's, `not a readable Parquet file (ArrowInvalid)`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fracsight.scale.output import BatchOutput

    dataset = tmp_path / "ds.parquet"
    dataset.mkdir()
    paths = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    pq.write_table(pa.table({"path": paths[:2]}), dataset / "part-0.parquet")
    pq.write_table(pa.table({"path": paths[2:]}), dataset / "part-1.parquet")
    assert list(collect_batch_inputs([dataset])) == paths
    output = BatchOutput(dataset / "results", ("path", "error_code"), {"name": "m"})
    output.commit([{"path": p, "error_code": "unreadable_image"} for p in paths])
    output.close()
    assert (dataset / "results" / "results.csv").is_file()
    assert list(collect_batch_inputs([dataset])) == paths


def test_a_list_relative_to_the_current_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`batch run lists/m.csv` with rows `xr/a.jpg` meant from where the command runs: every row
    became an `unreadable_image` row, committed after Ray started (exit 1)."""
    (tmp_path / "xr").mkdir()
    (tmp_path / "xr" / "a.jpg").write_bytes(b"x")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "m.csv").write_text("path\nxr/a.jpg\nxr/b.jpg\n")
    monkeypatch.chdir(tmp_path)
    said = (
        "lists/m.csv: its relative paths are read relative to its folder (lists), where none of the "
        "first 2 exists, and 1 of them exist relative to the current folder"
    )
    with pytest.raises(DatasetError, match=re.escape(said)):
        collect_batch_inputs([Path("lists/m.csv")])
    result = CliRunner().invoke(cli, ["batch", "run", "lists/m.csv", "--out", "o"])
    assert result.exit_code == 2 and said in one_line(result.output) and not Path("o").exists()
    (tmp_path / "lists" / "xr").mkdir()  # one row there: the list means its folder, as documented
    (tmp_path / "lists" / "xr" / "b.jpg").write_bytes(b"x")
    assert list(collect_batch_inputs([Path("lists/m.csv")])) == [
        str(tmp_path / "lists/xr/a.jpg"),
        str(tmp_path / "lists/xr/b.jpg"),
    ]
    monkeypatch.chdir(tmp_path / "lists")  # run from the list's folder: its paths are read as they are
    assert len(collect_batch_inputs([Path("m.csv")])) == 2


def test_lists_and_manifests_as_archives_hold_them(tmp_path: Path) -> None:
    """`ls > list.txt` listed `#1.jpg`, dropped silently as a comment; a `.tsv` manifest was taken for
    an image (an `unsupported_format` row, Ray started); an accession column of numbers given as
    --path-column left "no such file" rows in the output for good; a spreadsheet became a row."""
    for name in ("#1.jpg", "2.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# made by ls\n#1.jpg\n2.jpg\n")
    assert list(collect_batch_inputs([tmp_path / "list.txt"])) == [
        str(tmp_path / "#1.jpg"),
        str(tmp_path / "2.jpg"),
    ]
    (tmp_path / "m.tsv").write_text("path\taccession\n2.jpg\t1000\n")
    assert list(collect_batch_inputs([tmp_path / "m.tsv"])) == [str(tmp_path / "2.jpg")]
    with pytest.raises(DatasetError, match="column 'accession' holds numbers, not paths"):
        collect_batch_inputs([tmp_path / "m.tsv"], path_column="accession")
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(DatasetError, match=r"a \.xlsx file is no manifest fracsight reads"):
        collect_batch_inputs([tmp_path / "sheet.xlsx"])
    # a one-column .tsv (no tab in its header) was split at commas: "line 2 has 2 values for 1 columns"
    (tmp_path / "com,ma.jpg").write_bytes(b"x")
    (tmp_path / "one.tsv").write_text("path\ncom,ma.jpg\n2.jpg\n")
    assert list(collect_batch_inputs([tmp_path / "one.tsv"])) == [
        str(tmp_path / "com,ma.jpg"),
        str(tmp_path / "2.jpg"),
    ]
    # a compressed manifest became an unsupported_format row of the output, after Ray started
    (tmp_path / "m.csv.gz").write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(DatasetError, match=r"a compressed \.csv file: decompress it first"):
        collect_batch_inputs([tmp_path / "m.csv.gz"])


def test_a_manifest_reached_through_a_link_reads_its_rows_where_it_lies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """proj/q/m.csv -> ../../man/m.csv with rows ../imgs/x.jpg: read beside the link, every row was
    an unreadable_image row of the output."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.jpg").write_bytes(b"x")
    (tmp_path / "man").mkdir()
    (tmp_path / "man" / "m.csv").write_text("path\n../imgs/x.jpg\n")
    (tmp_path / "proj" / "q").mkdir(parents=True)
    (tmp_path / "proj" / "q" / "m.csv").symlink_to("../../man/m.csv")
    monkeypatch.chdir(tmp_path / "proj" / "q")
    assert list(collect_batch_inputs([Path("m.csv")])) == [str(tmp_path / "imgs" / "x.jpg")]
    # rows found beside the link are read there, as before
    (tmp_path / "proj" / "imgs").mkdir()
    (tmp_path / "proj" / "imgs" / "x.jpg").write_bytes(b"y")
    assert list(collect_batch_inputs([Path("m.csv")])) == [str(tmp_path / "proj" / "imgs" / "x.jpg")]


def test_the_row_of_a_folder_given_empty_goes_once_its_images_are_inputs(tmp_path: Path) -> None:
    """A share given before it was mounted has a row "is a folder, not an image file"; once mounted,
    its images got rows and the stale error row stayed beside them for good."""
    from fracsight.scale.output import BatchOutput

    share = tmp_path / "share"
    share.mkdir()
    model = {"name": "m", "version": "1"}
    out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    out.commit(
        [{"path": str(share), "error_code": "unreadable_image"}, {"path": "/elsewhere", "error_code": ""}]
    )
    (share / "a.jpg").write_bytes(b"x")
    assert out.forget_folders_now_read([str(share / "a.jpg"), "/elsewhere"]) == 1
    assert set(out.done) == {"/elsewhere"}
    out.close()


def test_a_file_linked_into_two_study_folders_is_a_view_of_both_as_predict_takes_it(tmp_path: Path) -> None:
    """`batch run arch` gave one row for an image linked into two MURA studies, where `predict arch`
    gives two: the second study had no row for its view. A file reached twice in one folder, or
    given again, is still one row."""
    from fracsight.inference.tabular import named_inputs

    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    arch = tmp_path / "arch"
    for study in ("patient1/study1_positive", "patient2/study1_negative"):
        (arch / study).mkdir(parents=True)
        (arch / study / "image1.png").symlink_to(image)
    (arch / "patient1" / "study1_positive" / "again.png").symlink_to(image)  # one study: one view
    found = collect_batch_inputs([arch, arch / "patient2"])
    assert sorted(found.values()) == sorted(name for _, name in named_inputs([arch]))
    (first,) = [name for name in found.values() if name.startswith("patient1/")]  # one of its two links
    assert sorted(found.values()) == sorted([first, "patient2/study1_negative/image1.png"])


def test_a_path_column_without_a_manifest_is_said_unused(tmp_path: Path) -> None:
    """`batch run archive --path-column accession`: the option was ignored without a word (a folder
    given where a manifest was meant)."""
    (tmp_path / "archive").mkdir()
    result = CliRunner().invoke(
        cli, ["batch", "run", str(tmp_path / "archive"), "--out", str(tmp_path / "o"), "--path-column", "acc"]
    )
    said = "--path-column acc: no .csv, .tsv or .parquet manifest among the inputs, so it is not used"
    assert said in one_line(result.output), result.output
