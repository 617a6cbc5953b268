"""`fracsight batch` on Ray: the same rows as `fracsight predict`, exactly once, resumable after a kill.

One local two-CPU Ray is started for the module (Ray's start-up is slow); the batch commands run
as real subprocesses connected to it with --address, except a job on its own local Ray (killed,
then resumed on another).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from disk_support import fill, mounted_tmpfs
from fracsight.cli import app as cli
from fracsight.errors import DatasetError
from fracsight.scale.inputs import collect_batch_inputs
from fracsight.scale.output import FILE_STAT, BatchOutput, file_stat
from fracsight.scale.predict import ACTOR

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

CLI = [sys.executable, "-c", "from fracsight.cli import main; main()"]
N_IMAGES = 40


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, fracatlas_dir: Path) -> Path:
    """FracAtlas images (linked), a nested folder repeating a file name, and files that fail."""
    root = tmp_path_factory.mktemp("archive")
    images = sorted((fracatlas_dir / "images").rglob("*.jpg"), key=lambda p: p.name)[: N_IMAGES + 1]
    for image in images[:-5]:
        (root / image.name).symlink_to(image)
    (root / "nested").mkdir()
    for image in images[-5:-1]:
        (root / "nested" / image.name).symlink_to(image)
    # same name as a top-level file, another file (a link to the same file would be that file)
    (root / "nested" / images[0].name).symlink_to(images[-1])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("not an image\n")
    (root / "cut.jpg").write_bytes(images[2].read_bytes()[:2000])
    return root


@pytest.fixture(scope="module")
def plain_rows(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """What `fracsight predict --csv` writes for the archive."""
    out = tmp_path_factory.mktemp("plain") / "plain.csv"
    result = CliRunner().invoke(cli, ["predict", str(archive), "--csv", str(out)])
    assert result.exit_code == 1, result.output  # 1: some files have error codes
    return read_csv(out)


@pytest.fixture(scope="module")
def ray_address() -> str:
    """A local two-CPU Ray for the module (its processes end with it)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # "local": a new Ray even where another runs on the machine (a `ray start --head`, a stale
    # /tmp/ray/ray_current_cluster), which ray.init() would join and refuse num_cpus for
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def batch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "batch", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def without_path(rows: list[dict[str, str]]) -> list[tuple[tuple[str, str], ...]]:
    """The rows' cells but the path, and the file_stat only the Parquet parts hold (and the actor the
    driver counts the actors by, in none)."""
    hidden = ("path", FILE_STAT, ACTOR)
    return sorted(tuple(sorted((k, v) for k, v in r.items() if k not in hidden)) for r in rows)


def parquet_rows(out: Path) -> list[dict[str, str]]:
    return pq.read_table(out / "parts").to_pylist()


def assert_exactly_once(out: Path, archive: Path, plain: list[dict[str, str]]) -> None:
    expected = collect_batch_inputs([archive])
    for rows in (read_csv(out / "results.csv"), parquet_rows(out)):
        counts = Counter(r["path"] for r in rows)
        assert sorted(counts) == sorted(expected) and set(counts.values()) == {1}
        assert without_path(rows) == without_path(plain)


# ---- on Ray --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_gives_exactly_the_rows_of_fracsight_predict(
    archive: Path, plain_rows: list[dict[str, str]], ray_address: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, err = finish(batch(str(archive), "--out", str(out), "--address", ray_address, "--batch-size", "8"))
    assert code == 1, err  # as predict: 1 when some files have error codes
    assert "Traceback" not in err and "empty_file: 1" in err
    assert_exactly_once(out, archive, plain_rows)
    with (out / "results.csv").open(newline="") as f:
        header = next(csv.reader(f))
    assert header == ["path", *plain_rows[0].keys()]  # predict --csv's columns, after the path
    last_run = json.loads((out / "job.json").read_text())["last_run"]  # where the time went
    phases = {"prepare_s", "ray_start_s", "to_first_rows_s", "to_last_rows_s", "ray_stop_s"}
    assert set(last_run["phases"]) == phases
    assert all(v >= 0 for v in last_run["phases"].values()) and last_run["actors"] == 2
    # 44 files on a few cores: no rate, or a plausible one (a second block back with the first gave
    # 1,312 images/s for 30 files on 2 cores)
    assert last_run["steady_images_per_s"] is None or last_run["steady_images_per_s"] < 400
    codes = Counter(r["error_code"] for r in read_csv(out / "results.csv"))
    assert codes["empty_file"] == 1 and codes["unsupported_format"] == 1
    # a second run finds nothing left to do and adds nothing
    code, err = finish(batch(str(archive), "--out", str(out), "--address", ray_address))
    assert code == 1 and f"{N_IMAGES + 4} inputs: all already in" in err
    assert_exactly_once(out, archive, plain_rows)
    status = CliRunner().invoke(cli, ["batch", "status", str(out)])
    assert status.exit_code == 0 and f"complete, {N_IMAGES + 4} rows" in status.output


def descendants(pid: int) -> dict[int, str]:
    """The processes below ``pid`` (Linux /proc), each with its command line."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child in (c for c, p in parents.items() if p == parent):
            try:
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited


def wait_for_first_part(job: subprocess.Popen, out: Path) -> None:
    """Until the job has committed its first rows (it fails the test if it ends first, or takes 180 s)."""
    deadline = time.monotonic() + 180
    while not list((out / "parts").glob("part-*.parquet")):
        assert job.poll() is None, job.communicate()[1]
        assert time.monotonic() < deadline, "no rows committed within 180 s"
        time.sleep(0.02)


def assert_all_gone(processes: dict[int, str], within: float = 60) -> None:
    """Every one of ``processes`` (pid: command line) has exited within ``within`` seconds (a
    loaded CI machine's, not this one's: they end in a few seconds, a leak never)."""
    deadline = time.monotonic() + within
    while left := [f"{pid} {command[:60]}" for pid, command in processes.items() if alive(pid)]:
        assert time.monotonic() < deadline, f"still running after the job stopped: {left}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_a_killed_job_leaves_no_ray_behind_resumes_and_every_file_appears_exactly_once(
    archive: Path, plain_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [str(archive), "--out", str(out), "--batch-size", "2", "--commit-every", "2"]
    job = batch(*args)  # on a local Ray started for the job (the default)
    wait_for_first_part(job, out)
    ray_processes = descendants(job.pid)
    commands = " ".join(ray_processes.values())
    # the lean local Ray (fracsight/scale/local_ray.py): the GCS, the raylet and its agents, and
    # the workers; no dashboard head, autoscaler monitor or log monitor
    assert "gcs_server" in commands and "raylet" in commands and "MapWorker" in commands
    for unused in ("dashboard/dashboard.py", "autoscaler/_private/monitor.py", "log_monitor.py"):
        assert unused not in commands
    job.send_signal(signal.SIGKILL)  # no chance to commit anything more, nor to stop Ray
    job.communicate(timeout=30)
    # Ray shares the driver's fate: the kernel kills the GCS, the raylet and its workers with it.
    # (The raylet's two agents then exit by themselves, sometimes only a minute later, as they
    # do after a plain ray.init: not waited for here.)
    assert_all_gone({pid: c for pid, c in ray_processes.items() if "agent" not in c.lower()})
    committed = parquet_rows(out)
    assert 0 < len(committed) < N_IMAGES + 4, "the job was not killed mid-run"
    assert len({r["path"] for r in committed}) == len(committed)
    code, err = finish(batch(*args))  # resume, on a new local Ray, stopped at the end this time
    assert code == 1, err
    assert f"{len(committed)} already in" in err
    # Ray's notes about settings fracsight chose for the job (its own progress bar, the local
    # cluster's token authentication) are not repeated to the user
    assert "Progress bars disabled" not in err and "Token authentication is enabled" not in err
    assert_exactly_once(out, archive, plain_rows)


@pytest.mark.slow
def test_sigterm_keeps_what_is_done_and_says_so(archive: Path, tmp_path: Path) -> None:
    """The CLI's SIGTERM handler survives the Ray driver's start: the job commits, job.json says
    interrupted, stderr says how many rows are kept, and a re-run finishes the rest."""
    out = tmp_path / "out"
    # one actor, one image a block: the job is still running when its first rows are committed
    args = [str(archive), "--out", str(out), "--batch-size", "1", "--commit-every", "1", "--actors", "1"]
    job = batch(*args)
    wait_for_first_part(job, out)
    job.send_signal(signal.SIGTERM)
    code, err = finish(job)
    assert code == 130, err
    assert "interrupted:" in err and "rows are committed" in err
    assert "SIGTERM received" not in err and "Traceback" not in err
    record = json.loads((out / "job.json").read_text())
    assert record["status"] == "interrupted" and record["rows"] == len(parquet_rows(out))
    code, err = finish(batch(*args))
    assert code == 1 and json.loads((out / "job.json").read_text())["status"] == "complete"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_ctrl_c_pressed_again_while_stopping_still_stops_ray_and_exits_130(
    archive: Path, tmp_path: Path
) -> None:
    """Five Ctrl-C 0.15 s apart once rows were committed: exit 1 with Ray's traceback ("Exception
    ignored in atexit callback ... KeyboardInterrupt"), and the raylet's two agents ran on for
    minutes (the second Ctrl-C stopped Ray's shutdown halfway)."""
    out = tmp_path / "out"
    args = [str(archive), "--out", str(out), "--batch-size", "1", "--commit-every", "1", "--actors", "1"]
    job = subprocess.Popen(
        [*CLI, "batch", "run", *args],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for_first_part(job, out)
    ray_processes = descendants(job.pid)
    for _ in range(5):
        os.killpg(job.pid, signal.SIGINT)
        time.sleep(0.15)
    code, err = finish(job)
    assert code == 130, err
    assert "interrupted:" in err and "Traceback" not in err and "KeyboardInterrupt" not in err
    assert_all_gone(ray_processes)  # kill_all_processes: SIGTERM, SIGKILL after 1 s
    code, err = finish(batch(*args))
    assert code == 1 and json.loads((out / "job.json").read_text())["status"] == "complete"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_a_sigterm_to_the_jobs_process_group_commits_and_stops_ray(archive: Path, tmp_path: Path) -> None:
    """`timeout`, `kill -TERM -- -PGID` and Slurm stop a job's whole process group: Ray's GCS and
    raylet, in the driver's group, died with it, the driver's core worker ended the job before it
    could commit (exit 1, only Ray's lines), and job.json said "running"."""
    out = tmp_path / "out"
    args = [str(archive), "--out", str(out), "--batch-size", "2", "--commit-every", "4", "--actors", "1"]
    command = [*CLI, "batch", "run", *args]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_first_part(job, out)
    ray_processes = descendants(job.pid)
    # whether the driver got to commit first was a race; that the node's processes shared its group
    # was not (the fifth field of /proc/PID/stat after the command's name is the process group)
    heads = [pid for pid, command in ray_processes.items() if "gcs_server" in command or "raylet" in command]
    groups = {pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2]) for pid in heads}
    assert heads and job.pid not in groups.values(), groups
    os.killpg(job.pid, signal.SIGTERM)
    code, err = finish(job)
    assert code == 130, err
    assert "interrupted:" in err and "rows are committed" in err and "Traceback" not in err
    record = json.loads((out / "job.json").read_text())
    assert record["status"] == "interrupted" and record["rows"] == len(parquet_rows(out))
    assert_all_gone(ray_processes)


_TERM_AS_RAY_STOPS = """
import os, signal, sys
from ray._private.node import Node
from fracsight.cli import main

kill_all = Node.kill_all_processes

def term_first(self, *args, **kwargs):  # a `kill` that lands as the job stops its own Ray's
    if type(self).__name__ == "_Head":  # processes (ray.shutdown calls it on the driver's node too)
        os.kill(os.getpid(), signal.SIGTERM)
    return kill_all(self, *args, **kwargs)

Node.kill_all_processes = term_first
sys.argv = ["fracsight", "batch", "run", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_a_sigterm_as_the_job_stops_its_ray_is_held(archive: Path, tmp_path: Path) -> None:
    """ray.shutdown() sets the operating system's SIGTERM handler back to the default while Python
    still reports its own: a SIGTERM after it killed the job (Ray's stack dump, exit -6, job.json
    left "running", the raylet's agents orphaned)."""
    out = tmp_path / "out"
    job = subprocess.Popen(
        [sys.executable, "-c", _TERM_AS_RAY_STOPS, str(archive), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    ray_processes: dict[int, str] = {}
    deadline = time.monotonic() + 180
    while job.poll() is None and time.monotonic() < deadline:
        ray_processes |= descendants(job.pid)
        time.sleep(0.2)
    code, err = finish(job)
    assert code in (1, 130), err  # done (some files have error codes), or stopped by the SIGTERM
    assert "SIGTERM received" not in err and "Traceback" not in err
    assert json.loads((out / "job.json").read_text())["status"] in ("complete", "interrupted")
    assert_all_gone(ray_processes)


@pytest.mark.slow
def test_a_local_job_runs_with_a_home_it_cannot_write(archive: Path, tmp_path: Path) -> None:
    """The container's home is on its read-only root: Ray's token, written to ~/.ray/auth_token,
    failed every local job there (cannot start or reach a local Ray: Read-only file system)."""
    (tmp_path / "file").write_text("")  # a home below a file: no folder can be made in it, root or not
    env = {**os.environ, "HOME": str(tmp_path / "file" / "home")}
    env.pop("RAY_AUTH_TOKEN", None)
    code, err = finish(batch(str(archive), "--out", str(tmp_path / "out"), "--actors", "1", env=env))
    assert code == 1 and "batch_failed" not in err and "Traceback" not in err, err  # 1: its broken files
    assert len(read_csv(tmp_path / "out" / "results.csv")) == N_IMAGES + 4


@pytest.mark.slow
def test_actors_the_local_ray_cannot_place_are_refused_at_once(archive: Path, tmp_path: Path) -> None:
    """A bad argument (exit 2): more CPUs than the machine has is refused before Ray starts, more
    GPUs than Ray finds once it has; either way no output folder is left behind."""
    for option, unit in (("--cpus-per-actor", "CPUs"), ("--gpus-per-actor", "GPUs")):
        code, err = finish(batch(str(archive), "--out", str(tmp_path / option), option, "64"), timeout=120)
        assert code == 2 and f"{option} 64 asks for more than the local Ray has" in err and unit in err
        assert "actors_do_not_fit" in err and "Traceback" not in err
        assert not (tmp_path / option).exists()
    code, err = finish(batch(str(archive), "--out", str(tmp_path / "many"), "--actors", "64"), timeout=120)
    assert code == 2 and "--actors 64 with --cpus-per-actor 1 asks for 64 CPUs" in err, err
    assert not (tmp_path / "many").exists()  # was run on the actors that fit: "predicted by 64 actors"
    (tmp_path / "mine").mkdir()  # a folder the job did not create is kept, and says the job stopped
    mine = batch(str(archive), "--out", str(tmp_path / "mine"), "--gpus-per-actor", "64")
    code, err = finish(mine, timeout=120)
    assert code == 2 and json.loads((tmp_path / "mine" / "job.json").read_text())["status"] == "stopped"


@pytest.mark.slow
def test_actors_a_cluster_cannot_place_now_are_said(archive: Path, tmp_path: Path, ray_address: str) -> None:
    """On a cluster (which may add nodes) more actors than fit ran silently on those that did, and
    more GPUs than it has waited without a word: both are said, and the job runs on."""
    args = [str(archive), "--out", str(tmp_path / "out"), "--address", ray_address, "--actors", "3"]
    code, err = finish(batch(*args, "--batch-size", "4"))
    assert code == 1, err  # the archive's broken files
    assert "the cluster has 2 CPUs, 0 GPUs now, fewer than the actors ask for" in err, err
    assert len(read_csv(tmp_path / "out" / "results.csv")) == N_IMAGES + 4


@pytest.mark.slow
def test_a_cluster_other_jobs_hold_in_part_is_said_and_the_actors_that_ran_counted(
    archive: Path, tmp_path: Path, ray_address: str
) -> None:
    """Another job held one of the cluster's two CPUs: the job said nothing (with none free it
    waited without a word) and reported "predicted by 2 actors", in job.json too, when one ran."""

    @ray.remote(num_cpus=1)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    ray.get(holder.ready.remote())
    try:
        args = [str(archive), "--out", str(tmp_path / "out"), "--address", ray_address, "--actors", "2"]
        code, err = finish(batch(*args, "--batch-size", "4"))
    finally:
        ray.kill(holder)
    assert code == 1, err  # the archive's broken files
    assert "the cluster has 1 CPUs, 0 GPUs free now of 2 CPUs, 0 GPUs (other jobs hold the rest)" in err, err
    assert json.loads((tmp_path / "out" / "job.json").read_text())["last_run"]["actors"] == 1
    assert len(read_csv(tmp_path / "out" / "results.csv")) == N_IMAGES + 4


def test_a_bundle_whose_json_contradicts_its_graph_is_refused_before_ray(
    archive: Path, tmp_path: Path
) -> None:
    """bundle.json's input_size edited: Ray started, each actor died with a traceback (three in
    191 lines), and the error said to run the same command again, which could never help."""
    import shutil

    from fracsight.inference import resolve_bundle

    bundle = tmp_path / "edited"
    shutil.copytree(resolve_bundle(None), bundle)
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["input_size"] = 128
    (bundle / "bundle.json").write_text(json.dumps(spec))
    code, err = finish(batch(str(archive), "--out", str(tmp_path / "o"), "--model", str(bundle)), timeout=120)
    assert code == 2 and "bundle_error" in err and "input_size 128" in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_bundle_zip_is_refused_for_a_cluster(archive: Path, tmp_path: Path, ray_address: str) -> None:
    """Every actor off the driver's node failed on the driver's private unpacked copy (50 lines of
    traceback, and "run the same command again", which failed the same way). `--address local`,
    as `RAY_ADDRESS=local`, is this machine's own Ray: a .zip is fine there."""
    import shutil

    from fracsight.inference import resolve_bundle

    zipped = shutil.make_archive(str(tmp_path / "model"), "zip", resolve_bundle(None))
    args = [str(archive), "--out", str(tmp_path / "out"), "--model", zipped]
    for env, given in (
        ({}, f"--address {ray_address}"),
        ({"RAY_ADDRESS": ray_address}, f"RAY_ADDRESS={ray_address}"),
    ):
        extra = [] if env else ["--address", ray_address]
        code, err = finish(batch(*args, *extra, env={**os.environ, **env}))
        assert code == 2 and "model_not_shared" in err, err
        assert f"{given}: a bundle .zip" in err and f"unpack {zipped} on the file system the cluster" in err
        assert not (tmp_path / "out").exists()
    two = tmp_path / "two"
    two.mkdir()
    for image in sorted(archive.glob("*.jpg"))[:2]:
        (two / image.name).symlink_to(image.resolve())
    # even where RAY_ADDRESS names a cluster (a KubeRay pod, a `ray job submit` shell)
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    local = batch(str(two), "--out", str(tmp_path / "out"), "--model", zipped, "--address", "local", env=env)
    code, err = finish(local)
    assert code == 0, err


def test_rays_colours_are_left_out_of_the_error_line() -> None:
    from fracsight.scale.job import _first_line

    said = _first_line(RuntimeError("\x1b[36mray::MapWorker()\x1b[39m failed: no such bundle"))
    assert said == "RuntimeError: ray::MapWorker() failed: no such bundle"


def test_bad_arguments_exit_2(archive: Path, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file\nx.jpg\n")
    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "job.json").write_text("{bad")
    runner = CliRunner()
    for args, message in (
        ([str(tmp_path / "m.csv"), "--out", str(tmp_path / "o1")], "no 'path' column"),
        ([str(archive), "--out", str(tmp_path / "a-file")], "is a file"),
        (
            [str(archive), "--out", str(tmp_path / "o2"), "--operating-point", "nope"],
            "unknown operating point",
        ),
        ([str(archive), "--out", str(tmp_path / "damaged")], "unreadable"),
        ([str(archive), "--out", str(tmp_path / "a-file" / "out")], "cannot be created"),
    ):
        result = runner.invoke(cli, ["batch", "run", *args])
        assert result.exit_code == 2 and message in result.output, result.output
    assert (tmp_path / "a-file").read_text() == "mine"
    status = runner.invoke(cli, ["batch", "status", str(tmp_path / "damaged")])
    assert status.exit_code == 1 and "unreadable" in status.output and "Traceback" not in status.output


# ---- without Ray: inputs, the output folder, the actor's rows for every head combination ----------
def test_inputs_from_folders_lists_and_manifests(archive: Path, tmp_path: Path) -> None:
    named = collect_batch_inputs([archive])
    from_folder = list(named)
    assert len(from_folder) == N_IMAGES + 4
    assert all(
        named[p] == Path(p).relative_to(archive).as_posix() for p in from_folder
    )  # as predict names them
    names = [Path(p).name for p in from_folder[:3]]
    (tmp_path / "list.txt").write_text(f"# three\n{archive / names[0]}\n\n{archive / names[1]}\n")
    (tmp_path / "m.csv").write_text(
        f"path,label\n{archive / names[1]},x\n{archive / names[2]},y\nmissing.jpg,z\n"
    )
    import pyarrow as pa

    pq.write_table(pa.table({"file": [str(archive / names[0])]}), tmp_path / "m.parquet")
    (tmp_path / "again.lst").write_text(f"{archive}/./{names[0]}\n{tmp_path / 'link.jpg'}\n")
    (tmp_path / "link.jpg").symlink_to(archive / names[2])
    got = collect_batch_inputs([tmp_path / "list.txt", tmp_path / "m.csv", tmp_path / "again.lst"])
    # each once: listed twice, by another spelling of its path, or by a link to it
    assert list(got) == [*(str(archive / n) for n in names), str(tmp_path / "missing.jpg")]
    assert all(name == Path(path).name for path, name in got.items())  # named as files given themselves
    from_parquet = collect_batch_inputs([tmp_path / "m.parquet"], path_column="file")
    assert list(from_parquet) == [str(archive / names[0])]
    with pytest.raises(DatasetError, match="no 'path' column"):
        collect_batch_inputs([tmp_path / "m.parquet"])


def test_a_manifest_row_without_a_path_refuses_the_manifest(archive: Path, tmp_path: Path) -> None:
    """Such rows were dropped in silence: every manifest row must become an output row."""
    import pyarrow as pa

    image = next(archive.glob("*.jpg"))
    (tmp_path / "m.csv").write_text(f"label,path\nx,{image}\ny,\nz, \nshort\n")
    pq.write_table(pa.table({"path": [str(image), None, ""]}), tmp_path / "m.parquet")
    for name, rows in (
        ("m.csv", "3 of 4 rows have no 'path' (line 3, line 4, line 5)"),
        ("m.parquet", "2 of 3 rows have no 'path' (row 2, row 3)"),
    ):
        with pytest.raises(DatasetError, match=re.escape(rows)):
            collect_batch_inputs([tmp_path / name])
        result = CliRunner().invoke(cli, ["batch", "run", str(tmp_path / name), "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and rows in " ".join(result.output.split()), result.output
        assert not (tmp_path / "o").exists()


def test_output_folder_refuses_foreign_folders_and_other_models(tmp_path: Path) -> None:
    model = {"name": "m", "version": "1", "onnx_sha256": "0" * 64}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("keep me")
    with pytest.raises(DatasetError, match="not a fracsight batch output"):
        BatchOutput(tmp_path / "mine", ("path", "kind"), model)
    assert (tmp_path / "mine" / "thesis.docx").read_text() == "keep me"
    # another program's job.json: said "holds results of None vNone ... other columns (--all-classes?)"
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "job.json").write_text("{}")
    with pytest.raises(DatasetError, match="theirs exists and is not a fracsight batch output"):
        BatchOutput(tmp_path / "theirs", ("path", "kind"), model)
    assert (tmp_path / "theirs" / "job.json").read_text() == "{}"
    out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    out.commit([{"path": "/a", "error_code": ""}, {"path": "/b", "error_code": "empty_file"}])
    out.commit(
        [{"path": "/a", "error_code": ""}, {"path": "/c", "error_code": ""}, {"path": "/c", "error_code": ""}]
    )
    with pytest.raises(DatasetError, match="being written by another batch job"):
        BatchOutput(tmp_path / "out", ("path", "error_code"), model)  # while the first is open
    out.close()
    again = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    assert again.done == {"/a", "/b", "/c"} and again.pending(["/a", "/d", "/b", "/c"]) == ["/d"]
    assert [r["path"] for r in read_csv(tmp_path / "out" / "results.csv")] == ["/a", "/b", "/c"]  # each once
    again.close()
    with pytest.raises(DatasetError, match="use another --out"):
        BatchOutput(tmp_path / "out", ("path", "error_code"), {**model, "version": "2"})
    with pytest.raises(DatasetError, match="operating point triage"):
        BatchOutput(tmp_path / "out", ("path", "error_code"), {**model, "operating_point": "triage"})
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        BatchOutput(tmp_path / "file", ("path", "error_code"), model)


@pytest.mark.parametrize("interrupt", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_as_a_part_lands_does_not_commit_its_rows_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: signal.Signals
) -> None:
    """The driver commits what it holds when interrupted; an interrupt right after a part's rename
    used to make that commit write the same rows again (the SIGTERM test once found two rows)."""
    from fracsight.scale import output as output_module

    def stop(*_: object) -> None:  # a SIGTERM handler that ends the job, as the CLI's does
        raise SystemExit(143)

    stopped = KeyboardInterrupt if interrupt == signal.SIGINT else SystemExit
    previous = signal.signal(signal.SIGTERM, stop) if interrupt == signal.SIGTERM else None
    write = output_module.replace_atomically

    def write_then_interrupt(target: Path, content: object) -> None:
        write(target, content)
        signal.raise_signal(interrupt)  # the part is in place; its rows are not yet recorded

    model = {"name": "m", "version": "1", "onnx_sha256": "0" * 64}
    out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    rows = [{"path": "/a", "error_code": ""}, {"path": "/b", "error_code": ""}]
    monkeypatch.setattr(output_module, "replace_atomically", write_then_interrupt)
    try:
        with pytest.raises(stopped):
            out.commit(rows)
        monkeypatch.setattr(output_module, "replace_atomically", write)
        out.commit(rows)  # what the driver's `finally` does with the rows it holds
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    assert out.rows_done == 2
    assert sorted(r["path"] for r in parquet_rows(tmp_path / "out")) == ["/a", "/b"]
    assert [r["path"] for r in read_csv(tmp_path / "out" / "results.csv")] == ["/a", "/b"]
    out.close()


def test_a_damaged_part_or_job_json_is_one_clear_line(tmp_path: Path) -> None:
    """A part that is not Parquet (a copy cut short, a file put there by hand) or lacks the columns,
    and a job.json of the wrong shape, were pyarrow and AttributeError tracebacks."""
    model = {"name": "m", "version": "1", "onnx_sha256": "0" * 64}
    out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    out.commit([{"path": "/a", "error_code": ""}])
    out.close()
    runner = CliRunner()
    for content in (b"junk", None):
        damaged = tmp_path / "out" / "parts" / "part-zzz.parquet"
        if content is None:
            import pyarrow as pa

            pq.write_table(pa.table({"other": ["x"]}), damaged)  # Parquet, without the columns
        else:
            damaged.write_bytes(content)
        with pytest.raises(DatasetError, match=r"part-zzz\.parquet: not a readable part of a batch output"):
            BatchOutput(tmp_path / "out", ("path", "error_code"), model)
        assert json.loads((tmp_path / "out" / "job.json").read_text())["status"] == "stopped"
        assert [r["path"] for r in read_csv(tmp_path / "out" / "results.csv")] == ["/a"]  # kept
        if content is not None:
            status = runner.invoke(cli, ["batch", "status", str(tmp_path / "out")])
            assert status.exit_code == 1 and "not a readable part" in status.output
            assert "Traceback" not in status.output
    for record in ({"model": 5, "columns": ["path"]}, {"model": {"name": "m"}, "errors": [1], "columns": []}):
        (tmp_path / "out" / "job.json").write_text(json.dumps(record))
        status = runner.invoke(cli, ["batch", "status", str(tmp_path / "out")])
        assert status.exit_code == 1 and "unreadable" in status.output, status.output


def test_status_of_a_killed_job_says_stopped_not_running(tmp_path: Path) -> None:
    """job.json says `running` while a job runs, and still after `kill -9`: status asks the lock."""
    code = (
        "import sys, time; from pathlib import Path; from fracsight.scale.output import BatchOutput; "
        "o = BatchOutput(Path(sys.argv[1]), ('path', 'error_code'), {'name': 'm', 'version': '1'}); "
        "o.commit([{'path': '/a', 'error_code': ''}]); print('ready', flush=True); time.sleep(120)"
    )
    job = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert job.stdout is not None and job.stdout.readline() == "ready\n"
        running = CliRunner().invoke(cli, ["batch", "status", str(tmp_path / "out")])
        assert running.exit_code == 0 and ": running, 1 rows" in running.output, running.output
    finally:
        job.kill()
        job.wait()
    assert json.loads((tmp_path / "out" / "job.json").read_text())["status"] == "running"
    stopped = CliRunner().invoke(cli, ["batch", "status", str(tmp_path / "out")])
    assert ": stopped (not running: resume with the same command), 1 rows" in stopped.output, stopped.output
    as_json = CliRunner().invoke(cli, ["batch", "status", str(tmp_path / "out"), "--json"])
    assert json.loads(as_json.stdout)["status"] == "stopped"


def test_the_output_says_it_is_a_decision_aid(tmp_path: Path) -> None:
    """The CSV has no room for the notice (a line would break CSV readers): a file beside it says
    it, and job.json and every Parquet part carry it."""
    from fracsight.inference import NOTICE

    out = BatchOutput(tmp_path / "out", ("path", "error_code"), {"name": "m", "version": "1"})
    out.commit([{"path": "/a", "error_code": ""}])
    out.close()
    assert (tmp_path / "out" / "NOTICE.txt").read_text().startswith(NOTICE)
    assert json.loads((tmp_path / "out" / "job.json").read_text())["notice"] == NOTICE
    (part,) = (tmp_path / "out" / "parts").glob("part-*.parquet")
    assert pq.read_schema(part).metadata[b"fracsight.notice"] == NOTICE.encode()
    assert pq.read_table(tmp_path / "out" / "parts").schema.metadata[b"fracsight.notice"] == NOTICE.encode()
    assert read_csv(tmp_path / "out" / "results.csv") == [{"path": "/a", "error_code": ""}]  # plain CSV


def test_missing_inputs_are_refused_before_ray_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["batch", "run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not_found" in result.output and not (tmp_path / "o").exists()


def test_an_unreachable_cluster_is_a_clear_error(archive: Path, tmp_path: Path) -> None:
    from conftest import free_port

    args = [
        "batch",
        "run",
        str(archive),
        "--out",
        str(tmp_path / "o"),
        "--address",
        f"127.0.0.1:{free_port()}",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "error (batch_failed): no Ray cluster answers" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
    result = CliRunner().invoke(cli, [*args[:-1], "127.0.0.1:99999"])  # was taken as port 34463
    assert result.exit_code == 1 and "99999 is not a port number" in result.output


def test_an_address_that_takes_the_connection_and_says_nothing_is_a_clear_error(
    archive: Path, tmp_path: Path
) -> None:
    """Ray waited on such a server for over 12 minutes, deaf to SIGTERM and Ctrl-C."""
    import socket
    import time

    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens: connections are taken, never answered
        port = silent.getsockname()[1]
        args = ["batch", "run", str(archive), "--out", str(tmp_path / "o"), "--address", f"127.0.0.1:{port}"]
        started = time.monotonic()
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "said nothing in 5 s" in result.output, result.output
    assert time.monotonic() - started < 30 and not (tmp_path / "o").exists()
    url = CliRunner().invoke(cli, [*args[:-1], "http://x"])  # Ray's message stopped at "either:"
    assert url.exit_code == 1 and "give the Ray GCS as HOST:PORT" in url.output


def test_an_address_where_something_else_answers_is_a_clear_error(archive: Path, tmp_path: Path) -> None:
    """A port that is not Ray's (the dashboard's, a web server's): Ray retried for many minutes."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_http() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with client:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer_http, daemon=True).start()
    try:
        job = batch(str(archive), "--out", str(tmp_path / "o"), "--address", f"127.0.0.1:{port}")
        code, err = finish(job, timeout=60)
    finally:
        server.close()
    assert code == 1 and f"what answers at 127.0.0.1:{port} is not Ray" in err and "HTTP/1.1" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fracture", "fracture+region", "class", "fracture+class", "class+region"])
def test_actor_rows_equal_predict_csv_for_every_head_combination(
    kind: str, head_bundle, archive: Path, tmp_path: Path
) -> None:
    from fracsight.scale.predict import BatchPredictor

    _, bundle = head_bundle(kind)
    files = [str(archive / "empty.png"), *list(collect_batch_inputs([archive]))[:6]]
    plain = tmp_path / "plain.csv"
    result = CliRunner().invoke(
        cli, ["predict", *files, "--model", str(bundle), "--csv", str(plain), "--all-classes"]
    )
    assert result.exit_code == 1, result.output
    udf = BatchPredictor(str(bundle), all_classes=True)
    out = udf({"path": files})
    rows = [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]
    assert [r["path"] for r in rows] == files
    assert without_path(rows) == without_path(read_csv(plain))


# ---- found by a user's audit: each failed before its fix -----------------------------------------
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace the Ray part of run_batch: every pending path gets an error row (no Ray needed);
    returns the paths each run was given."""
    from fracsight.scale import job

    runs: list[list[str]] = []

    def run_on_ray(pending: dict[str, str], output: BatchOutput, *_: object, **__: object) -> None:
        runs.append(list(pending))
        rows = [
            {c: "" for c in output.columns} | {"path": p, "error_code": "x", FILE_STAT: file_stat(p)}
            for p in pending
        ]
        output.commit(rows)

    monkeypatch.setattr(job, "_run_on_ray", run_on_ray)
    return runs


def test_all_classes_of_a_model_without_a_class_head_is_said(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`batch run --all-classes` with the shipped model wrote no p_<class> column without a word,
    where `predict --csv --all-classes` notes it and the API sends X-Fracsight-Note."""
    from fracsight.scale.job import run_batch

    fake_ray(monkeypatch)
    with caplog.at_level("WARNING", logger="fracsight.scale"):
        run_batch(collect_batch_inputs([archive / "empty.png"]), tmp_path / "out", all_classes=True)
    assert any(
        "--all-classes: " in r.getMessage() and "no class head" in r.getMessage() for r in caplog.records
    )


def test_a_file_already_committed_under_another_spelling_is_not_predicted_again(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive given as a folder, then through a link to it (a mount seen under two names):
    every file got a second row, though the key is documented to be the resolved path."""
    from fracsight.scale.job import run_batch

    runs = fake_ray(monkeypatch)
    (tmp_path / "link").symlink_to(archive)
    first = collect_batch_inputs([archive])
    run_batch(first, tmp_path / "out")
    summary = run_batch(collect_batch_inputs([tmp_path / "link"]), tmp_path / "out")
    assert summary.skipped == len(first) and summary.predicted == 0 and len(runs) == 1
    assert [r["path"] for r in read_csv(tmp_path / "out" / "results.csv")] == list(first)


def test_a_link_moved_on_or_a_file_replaced_gets_a_new_row_not_the_old_one(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """May's image read through the link `current`; the link moves on to June's folder, whose
    image (another picture, the same name) is then given by its own path: it was counted as done,
    its row May's result. A file replaced under its path (a copy that was still being written) kept
    its old row too; only --retry-errors could redo an error row, and a row with a result never."""
    from fracsight.scale.job import run_batch

    runs = fake_ray(monkeypatch)
    images = sorted(archive.glob("*.jpg"))
    may, june = tmp_path / "2024-05", tmp_path / "2024-06"
    for folder, image in ((may, images[0]), (june, images[1])):
        folder.mkdir()
        (folder / "IM0001.jpg").write_bytes(image.read_bytes())
    (tmp_path / "current").symlink_to(may)
    out = tmp_path / "out"
    run_batch(collect_batch_inputs([tmp_path / "current"]), out)
    (tmp_path / "current").unlink()
    (tmp_path / "current").symlink_to(june)
    summary = run_batch(collect_batch_inputs([june]), out)
    assert summary.predicted == 1 and runs[-1] == [str(june / "IM0001.jpg")]
    assert summary.changed == 0  # May's row is May's: kept, and June's file has one of its own
    paths = [r["path"] for r in read_csv(out / "results.csv")]
    assert paths == [str(tmp_path / "current" / "IM0001.jpg"), str(june / "IM0001.jpg")]

    (june / "IM0001.jpg").write_bytes(images[2].read_bytes()[:5000])  # replaced, then cut short
    summary = run_batch(collect_batch_inputs([june]), out)
    assert (summary.changed, summary.predicted) == (1, 1)
    summary = run_batch(collect_batch_inputs([june]), out)  # unchanged since: nothing to do
    assert (summary.changed, summary.predicted, summary.skipped) == (0, 0, 1)
    rows = parquet_rows(out)
    assert Counter(r["path"] for r in rows) == Counter(paths)  # the replaced row took the old one's place
    assert {r["path"]: r[FILE_STAT] for r in rows}[str(june / "IM0001.jpg")].startswith("5000:")
    assert FILE_STAT not in read_csv(out / "results.csv")[0]  # the CSV keeps predict's columns


def test_storage_away_for_a_re_run_keeps_the_results_and_an_error_row_finds_its_file_again(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run while the archive's share was not mounted took every file for changed (gone) and
    replaced each result with an `unreadable_image` row. And an error row made while a file was
    missing no longer matched it under another spelling of its path (a second row, and
    --retry-errors found nothing to retry)."""
    from fracsight.scale.job import run_batch

    runs = fake_ray(monkeypatch)
    share = tmp_path / "share"
    share.mkdir()
    for image in sorted(archive.glob("*.jpg"))[:2]:
        (share / image.name).write_bytes(image.read_bytes())
    files = collect_batch_inputs([share])
    run_batch(files, tmp_path / "out")
    share.rename(tmp_path / "unmounted")
    summary = run_batch(files, tmp_path / "out")
    assert (summary.changed, summary.predicted) == (0, 0) and len(runs) == 1  # the rows stay
    (tmp_path / "unmounted").rename(share)

    missing = str(tmp_path / "data" / "x.jpg")
    run_batch([missing], tmp_path / "later")  # an error row: no such file (yet)
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    assert run_batch([str(tmp_path / "link" / "x.jpg")], tmp_path / "later").predicted == 0  # the same file


def test_rows_without_a_file_stat_are_never_taken_for_changed(tmp_path: Path) -> None:
    """Parts written before file_stat was kept (or rows committed without one) stay final."""
    image = tmp_path / "a.jpg"
    image.write_bytes(b"one")
    model = {"name": "m", "version": "1"}
    out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    out.commit([{"path": str(image), "error_code": ""}])
    out.close()
    image.write_bytes(b"changed")
    again = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    assert again.stats == {str(image): None}
    assert again.forget_changed([str(image)]) == 0 and again.pending([str(image)]) == []


def test_two_jobs_of_one_process_in_one_second_keep_both_their_rows(tmp_path: Path) -> None:
    """Their parts had one name (the time to the second and the process id): the second job's
    first part replaced the first job's, and its rows were gone (run_batch called in a loop)."""
    model = {"name": "m", "version": "1"}
    for path in ("/a", "/b"):
        out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
        out.commit([{"path": path, "error_code": ""}])
        out.close()
    assert BatchOutput(tmp_path / "out", ("path", "error_code"), model).done == {"/a", "/b"}


def test_a_bundle_refitted_in_place_does_not_add_rows_at_its_new_threshold(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refit (training/refit.py) rewrites bundle.json's thresholds and calibration and keeps the
    name, version and model.onnx: a resumed job mixed rows at two thresholds in one output."""
    import shutil

    from fracsight.inference import resolve_bundle
    from fracsight.scale.job import run_batch

    fake_ray(monkeypatch)
    bundle = tmp_path / "bundle"
    shutil.copytree(resolve_bundle(None), bundle)
    files = list(collect_batch_inputs([archive]))
    run_batch(files[:2], tmp_path / "out", model=str(bundle))
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["operating_points"][0]["threshold"] = 0.9
    (bundle / "bundle.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError, match=r"other settings in its bundle\.json"):
        run_batch(files[:3], tmp_path / "out", model=str(bundle))
    assert len(read_csv(tmp_path / "out" / "results.csv")) == 2


def test_a_file_name_that_is_not_utf8_gets_its_row(tmp_path: Path, fracatlas_dir: Path) -> None:
    """A Latin-1 file name (os gives its bytes as surrogates) raised UnicodeEncodeError at the
    commit of its part: the job stopped there on every run, losing the rows around it too."""
    from fracsight.scale.predict import BatchPredictor

    image = next((fracatlas_dir / "images").rglob("*.jpg"))
    path = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.jpg")
    Path(path).write_bytes(image.read_bytes())
    udf = BatchPredictor()
    out = udf({"path": [os.fsencode(path)], "name": ["caf\\xe9.jpg"]})  # as the driver hands them on
    assert out["path"] == [str(tmp_path / "caf\\xe9.jpg")] and out["error_code"] == [""]
    model = {"name": "m", "version": "1"}
    output = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    output.commit([{"path": path, "error_code": ""}])
    assert output.pending([path]) == []
    output.close()
    assert read_csv(tmp_path / "out" / "results.csv") == [{"path": out["path"][0], "error_code": ""}]


def test_manifests_of_the_wrong_shape_are_refused_or_read_as_meant(archive: Path, tmp_path: Path) -> None:
    """A Parquet path column of numbers, bytes or lists became rows for files named `1` or
    `b'/x.jpg'`; an empty CSV was "no 'path' column (columns: )"; a path list saved with a BOM
    (Windows Notepad) lost its first path; a list split file names at U+2028."""
    import pyarrow as pa

    image = next(archive.glob("*.jpg"))
    for values in ([1, 2], [str(image).encode()], [[str(image)]]):
        pq.write_table(pa.table({"path": values}), tmp_path / "m.parquet")
        with pytest.raises(DatasetError, match=r"column 'path' holds .*, not text paths"):
            collect_batch_inputs([tmp_path / "m.parquet"])
    pq.write_table(pa.table({"path": pa.array([str(image)]).dictionary_encode()}), tmp_path / "d.parquet")
    assert list(collect_batch_inputs([tmp_path / "d.parquet"])) == [str(image)]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="the manifest is empty"):
        collect_batch_inputs([tmp_path / "empty.csv"])
    (tmp_path / "l.txt").write_bytes(f"\ufeff{image}\r\n{tmp_path}/a\u2028b.jpg\r\n".encode())
    assert list(collect_batch_inputs([tmp_path / "l.txt"])) == [str(image), f"{tmp_path}/a\u2028b.jpg"]


# ---- an output folder that cannot take the rows: read-only, or a disk that fills up mid-job --------
@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root only: this machine's tests run as root, a laptop's skip)."""
    with mounted_tmpfs(tmp_path / "disk", "256k") as disk:
        yield disk


def test_a_disk_that_fills_as_the_job_ends_is_said_as_for_a_part(small_tmpfs: Path) -> None:
    """Every row committed, then no room for the final job.json (a race the disk-full test can
    lose on a fast machine): the same output_write_failed line, never a bare os_error."""
    from fracsight.scale.output import OutputWriteFailed

    out = BatchOutput(
        small_tmpfs / "out", ("path", "error_code"), {"name": "m", "version": "1", "onnx_sha256": "0" * 64}
    )
    out.commit([{"path": "a.png", "error_code": ""}])
    filler = fill(small_tmpfs)
    with pytest.raises(OutputWriteFailed, match=r"\(No space left on device\): 1 rows are committed"):
        out.write_job({"status": "complete", "rows": 1})
    out.end_early("stopped")  # job.json cannot say so either: no error, the free lock tells
    filler.unlink()
    out.close()


def test_a_read_only_output_folder_is_a_bad_argument(archive: Path, small_tmpfs: Path) -> None:
    """An existing folder on a read-only file system: one line naming why, exit 2 (was exit 1,
    `error (os_error): Read-only file system: OUT/.lock`)."""
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    result = CliRunner().invoke(cli, ["batch", "run", str(archive), "--out", str(small_tmpfs)])
    assert result.exit_code == 2, result.output
    assert "output_refused" in result.output and "cannot be written (Read-only file system)" in result.output


@pytest.mark.slow
def test_a_disk_full_mid_job_keeps_what_is_committed_and_resumes(
    archive: Path, small_tmpfs: Path, plain_rows: list[dict[str, str]], ray_address: str
) -> None:
    """The output's disk fills after the first part: one line saying so and how many rows are kept
    (was pyarrow's "Error writing bytes to file. Detail: [errno 28] ..."), exit 1, and once there
    is room the same command adds exactly the missing rows."""
    out = small_tmpfs / "out"
    args = [str(archive), "--out", str(out), "--address", ray_address]
    job = batch(*args, "--batch-size", "1", "--commit-every", "1", "--actors", "1")
    wait_for_first_part(job, out)
    filler = fill(small_tmpfs)
    code, err = finish(job)
    assert code == 1, err
    assert "error (output_write_failed): cannot write to" in err and "(No space left on device)" in err
    kept = len(parquet_rows(out))
    assert f": {kept} rows are committed; make room and run the same command again" in err
    assert "Traceback" not in err and "Error writing bytes" not in err
    filler.unlink()
    code, err = finish(batch(*args))
    assert code == 1, err  # some files of the archive have error codes
    assert_exactly_once(out, archive, plain_rows)


def child_names(pid: int) -> set[str]:
    """The names of the processes whose parent is ``pid`` (from /proc)."""
    names = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()  # "pid (name) state ppid ...": a name may hold spaces
            name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
            if int(fields[1]) == pid:
                names.add(name)
    return names


@pytest.mark.slow
def test_ctrl_c_while_the_local_ray_starts_stops_it_and_exits_130(archive: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) as the job's own Ray starts: the job says it
    was interrupted and exits 130 (was, in 4 of 5 tries: the driver's core worker crashed at exit,
    SIGSEGV, Ray never stopped)."""
    for attempt in range(3):
        job = subprocess.Popen(
            [*CLI, "batch", "run", str(archive), "--out", str(tmp_path / f"out{attempt}")],
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 120
        while "raylet" not in child_names(job.pid):  # the GCS is up, the driver about to connect
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1]
            time.sleep(0.01)
        os.killpg(job.pid, signal.SIGINT)
        code, err = finish(job, timeout=120)
        assert code == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert not (tmp_path / f"out{attempt}").exists()  # nothing committed: no folder left


@pytest.mark.slow
def test_a_cluster_with_token_authentication_says_how_to_connect(archive: Path, tmp_path: Path) -> None:
    """`ray start --head` turns token authentication on; a driver given its HOST:PORT sends no token
    unless RAY_AUTH_MODE=token. The error says so (was only "Failed to connect to Ray cluster")."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    ray_cli = str(Path(sys.executable).parent / "ray")
    start = ["start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false"]
    head = subprocess.Popen(
        [ray_cli, *start, "--disable-usage-stats", "--block"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "raylet" not in child_names(head.pid):
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head failed"
            time.sleep(0.1)
        out = tmp_path / "out"

        def batch_run(driver_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*CLI, "batch", "run", str(archive), "--out", str(out), "--address", f"127.0.0.1:{port}"],
                capture_output=True,
                text=True,
                env=driver_env,
                timeout=180,
            )

        job = batch_run(env)
        assert job.returncode == 1, job.stderr
        line = job.stderr.strip().splitlines()[-1]
        assert line.startswith(
            f"error (batch_failed): cannot start or reach the Ray cluster at 127.0.0.1:{port}"
        )
        assert "set RAY_AUTH_MODE=token" in line and "--address auto" in line
        assert not out.exists()
        # a driver of another Ray version (one Ray is installed: the driver's process reports another)
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(
            "import ray._private.utils as u\n"
            "real = u.compute_version_info\n"
            "u.compute_version_info = lambda: ('2.0.1', real()[1])\n"
        )
        path = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        other = {**env, "RAY_AUTH_MODE": "token", "PYTHONPATH": path}
        job = batch_run(other)
        assert job.returncode == 1 and "Traceback" not in job.stderr, job.stderr
        python = platform.python_version()
        said = (  # it was "... RuntimeError: Version mismatch: The cluster was started with:"
            f"error (batch_failed): cannot start or reach the Ray cluster at 127.0.0.1:{port}: "
            f"version mismatch: the cluster runs Ray {ray.__version__} on Python {python}, "
            f"this driver Ray 2.0.1 on Python {python}; run the driver with the cluster's versions"
        )
        assert job.stderr.strip().splitlines()[-1] == said
        assert not out.exists()
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops its processes
        head.wait(timeout=60)
        # but leaves its address as the machine's current cluster, where a later `ray.init()`
        # would look for it (and refuse num_cpus, "connecting to an existing cluster")
        current = Path("/tmp/ray/ray_current_cluster")
        with contextlib.suppress(OSError):
            if current.read_text().strip().endswith(f":{port}"):
                current.unlink()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_path_list_made_by_find_over_latin1_names_is_predicted(
    tmp_path: Path, fracatlas_dir: Path, ray_address: str
) -> None:
    """`find /archive > list.txt` writes a Latin-1 name's bytes as they are: the whole list was
    refused (`cannot read the path list (UnicodeDecodeError)`, exit 2); now that file gets its
    row, predicted. A UTF-16 list (NUL bytes) is still refused, saying why."""
    images = sorted((fracatlas_dir / "images").rglob("*.jpg"))[:2]
    latin = os.fsencode(tmp_path) + b"/caf\xe9.jpg"
    Path(os.fsdecode(latin)).symlink_to(images[0])
    (tmp_path / "paths.txt").write_bytes(latin + b"\r\n" + os.fsencode(images[1]) + b"\n")
    out = tmp_path / "out"
    code, err = finish(batch(str(tmp_path / "paths.txt"), "--out", str(out), "--address", ray_address))
    assert code == 0, err
    rows = {r["source"]: r for r in read_csv(out / "results.csv")}
    assert sorted(rows) == sorted(["caf\\xe9.jpg", images[1].name])
    assert rows["caf\\xe9.jpg"]["error_code"] == "" and rows["caf\\xe9.jpg"]["decision"]
    (tmp_path / "u16.txt").write_text(f"{images[1]}\n", encoding="utf-16")
    result = CliRunner().invoke(
        cli, ["batch", "run", str(tmp_path / "u16.txt"), "--out", str(tmp_path / "o2")]
    )
    assert result.exit_code == 2 and "not a text list of paths (it holds NUL bytes" in result.output


# ---- found by a hospital quality team's audit: each failed before its fix -----------------------
def test_files_of_one_name_in_two_inputs_are_named_as_predict_names_them(
    archive: Path, tmp_path: Path
) -> None:
    """`batch run a b` named a/x.jpg and b/x.jpg both `x.jpg` (predict: `a/x.jpg`, `b/x.jpg`): the
    `source` column differed from predict's, and the two rows could not be told apart by it."""
    first, second = sorted(archive.glob("*.jpg"))[:2]
    for folder, image in (("a", first), ("b", second)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jpg").symlink_to(image)
    plain = tmp_path / "plain.csv"
    folders = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert CliRunner().invoke(cli, ["predict", *folders, "--csv", str(plain)]).exit_code == 0
    sources = [r["source"] for r in read_csv(plain)]
    assert sources == [f"{tmp_path}/a/x.jpg", f"{tmp_path}/b/x.jpg"]
    assert list(collect_batch_inputs([Path(f) for f in folders]).values()) == sources
    assert list(collect_batch_inputs([Path(f) / "x.jpg" for f in folders]).values()) == sources
    (tmp_path / "m.csv").write_text("path\na/x.jpg\nb/x.jpg\n")  # named by the paths as listed
    assert list(collect_batch_inputs([tmp_path / "m.csv"]).values()) == ["a/x.jpg", "b/x.jpg"]


def test_names_with_spaces_around_them_are_read_as_written(archive: Path, tmp_path: Path) -> None:
    """`find /archive -type f > paths.txt` over ` lead.jpg` and `trail.jpg `: the list's lines were
    stripped, and both became "no such file" rows; a manifest's cells too. A path with spaces
    typed around it (a hand-made list) is still read without them where no such file exists."""
    image = next(archive.glob("*.jpg"))
    for name in (" lead.jpg", "trail.jpg "):
        (tmp_path / name).write_bytes(image.read_bytes())  # copies: links to one file are one input
    (tmp_path / "l.txt").write_text(" lead.jpg\ntrail.jpg \n  # comment\n")
    expected = [str(tmp_path / " lead.jpg"), str(tmp_path / "trail.jpg ")]
    assert list(collect_batch_inputs([tmp_path / "l.txt"])) == expected
    (tmp_path / "m.csv").write_text('path\n" lead.jpg"\n"trail.jpg "\n')
    assert list(collect_batch_inputs([tmp_path / "m.csv"])) == expected
    (tmp_path / "typed.txt").write_text(f"  {image}  \n")
    assert list(collect_batch_inputs([tmp_path / "typed.txt"])) == [str(image)]


def test_predicts_own_csv_is_a_manifest_of_its_files(archive: Path, tmp_path: Path, monkeypatch) -> None:
    """`predict --csv` writes `=cmd.jpg` as `'=cmd.jpg` (so a spreadsheet runs no formula); given
    back as a manifest, its rows were "no such file" for `'=cmd.jpg`. A file whose name does begin
    with the apostrophe is still that file."""
    image = next(archive.glob("*.jpg"))
    for name in ("=cmd.jpg", "+1.jpg", "'-kept.jpg"):
        (tmp_path / name).write_bytes(image.read_bytes())
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["predict", "=cmd.jpg", "+1.jpg", "'-kept.jpg", "--csv", "p.csv"])
    assert result.exit_code == 0, result.output
    assert "'=cmd.jpg" in (tmp_path / "p.csv").read_text()
    found = collect_batch_inputs([tmp_path / "p.csv"], path_column="source")
    assert sorted(found) == sorted(str(tmp_path / n) for n in ("=cmd.jpg", "+1.jpg", "'-kept.jpg"))


def test_names_that_are_not_utf8_in_a_manifest_are_their_files(tmp_path: Path) -> None:
    """`(echo path; ls) > m.csv` over an archive holding one Latin-1 name: the CSV was read as
    Windows-1252, and every row, the UTF-8 names' too, was a "no such file" row kept for good; the
    `caf\\xe9.jpg` that batch's own results.csv writes of such a name was one too."""
    latin1 = os.fsdecode(b"caf\xe9.jpg")
    for name in ("M\u00fcller_1.jpg", latin1):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "m.csv").write_bytes(b"path\n" + "M\u00fcller_1.jpg".encode() + b"\ncaf\xe9.jpg\n")
    expected = [str(tmp_path / "M\u00fcller_1.jpg"), str(tmp_path / latin1)]
    assert list(collect_batch_inputs([tmp_path / "m.csv"])) == expected
    (tmp_path / "redo.csv").write_text("path\ncaf\\xe9.jpg\n", encoding="utf-8")  # as text_cell writes it
    assert list(collect_batch_inputs([tmp_path / "redo.csv"])) == [str(tmp_path / latin1)]
    # both spellings on disk (review): the Latin-1 row, read as Windows-1252, named the UTF-8 file
    (tmp_path / "caf\u00e9.jpg").write_bytes(b"")
    (tmp_path / "both.csv").write_bytes(b"path\ncaf\xc3\xa9.jpg\ncaf\xe9.jpg\n")
    both = [str(tmp_path / "caf\u00e9.jpg"), str(tmp_path / latin1)]
    assert list(collect_batch_inputs([tmp_path / "both.csv"])) == both
    # (review) a Windows-1252 header is named as typed; a Latin-1 file typed in a UTF-8 list is found
    (tmp_path / "head.csv").write_bytes("Name;R\u00f6ntgenbild\nM;caf\u00e9.jpg\n".encode("cp1252"))
    found = collect_batch_inputs([tmp_path / "head.csv"], path_column="R\u00f6ntgenbild")
    assert list(found) == [str(tmp_path / latin1)]  # its bytes first: the file they name
    (tmp_path / "caf\u00e9.jpg").unlink()
    (tmp_path / "typed.txt").write_text("caf\u00e9.jpg\n", encoding="utf-8")
    assert list(collect_batch_inputs([tmp_path / "typed.txt"])) == [str(tmp_path / latin1)]


def test_a_list_of_study_folders_without_a_header_is_refused_as_one(tmp_path: Path) -> None:
    """MURA's *_labeled_studies.csv (no header, a study folder a line): `--path-column <first line>`,
    as suggested, took its first study for the header and left it out without a word."""
    for n in (1, 2):
        (tmp_path / f"patient0000{n}" / "study1_positive").mkdir(parents=True)
    (tmp_path / "studies.csv").write_text(
        "".join(f"{tmp_path}/patient0000{n}/study1_positive/,1\n" for n in (1, 2))
    )
    with pytest.raises(DatasetError, match="it has no header row"):
        collect_batch_inputs([tmp_path / "studies.csv"])


def test_manifests_as_excel_and_users_make_them(archive: Path, tmp_path: Path) -> None:
    """Excel's ';' CSV (a comma decimal mark: most of Europe) was refused as `no 'path' column
    (columns: path;label)`; its Windows code page CSV as `(UnicodeDecodeError)` (now read, as a
    labels.csv is); a `Path` header
    did not name the option; s3:// and https:// rows became `<folder>/s3:/bucket/...` rows."""
    image = next(archive.glob("*.jpg"))
    (tmp_path / "semi.csv").write_bytes(f"\ufeffid;path;label\r\n1;{image};x\r\n".encode())
    assert list(collect_batch_inputs([tmp_path / "semi.csv"])) == [str(image)]
    (tmp_path / "tab.csv").write_text(f"path\tlabel\n{image}\tx\n")
    assert list(collect_batch_inputs([tmp_path / "tab.csv"])) == [str(image)]
    (tmp_path / "mac.csv").write_bytes(f"label,path\r1,{image}\r".encode())  # lines end at \r alone
    assert list(collect_batch_inputs([tmp_path / "mac.csv"])) == [str(image)]
    # Excel's plain "CSV" on Windows: read as Windows-1252 (with a warning), as a labels.csv is
    (tmp_path / "cp1252.csv").write_bytes(f"path\r\n{image}\r\n{archive}/caf\xe9.jpg\r\n".encode("cp1252"))
    assert list(collect_batch_inputs([tmp_path / "cp1252.csv"])) == [str(image), f"{archive}/caf\xe9.jpg"]
    (tmp_path / "cap.csv").write_text(f"Path,label\n{image},x\n")
    (tmp_path / "urls.csv").write_text(f"path\n{image}\ns3://bucket/a.dcm\nhttps://pacs/b.dcm\n")
    (tmp_path / "urls.txt").write_text(f"# archive\n{image}\nfile:///data/c.dcm\n")
    for name, said in (
        ("cap.csv", "no 'path' column (columns: Path, label): --path-column 'Path'?"),
        ("urls.csv", "2 of 3 rows are URLs, not file paths (line 3, line 4): fracsight reads files"),
        ("urls.txt", "1 of 2 rows are URLs, not file paths (line 3)"),
    ):
        with pytest.raises(DatasetError, match=re.escape(said)):
            collect_batch_inputs([tmp_path / name])
        result = CliRunner().invoke(cli, ["batch", "run", str(tmp_path / name), "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and said in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_an_output_holding_another_commands_files_does_not_fail_this_one(
    archive: Path, ray_address: str, tmp_path: Path
) -> None:
    """One --out for each month's archive: the second month (every file read) exited 1 and counted
    the first month's error rows as its own; a re-run with nothing left said `0 predicted by 0
    actors in 0.3 s (0.0 images/s, Ray start-up included)`, though Ray was never started."""
    images = sorted(archive.glob("*.jpg"))[:3]
    november, december = tmp_path / "2026-11", tmp_path / "2026-12"
    for month, files in ((november, [*images[:2], archive / "empty.png"]), (december, images[2:])):
        month.mkdir()
        for file in files:
            (month / file.name).symlink_to(file)
    out = str(tmp_path / "out")
    code, err = finish(batch(str(november), "--out", out, "--address", ray_address))
    assert code == 1 and "1 row with an error code (empty_file: 1)" in " ".join(err.split()), err
    code, err = finish(batch(str(december), "--out", out, "--address", ray_address))
    # one line in a log (rich cut it at 80 columns), and one actor is not "1 actors"
    summary = next(line for line in err.splitlines() if line.startswith("1 inputs:"))
    assert code == 0 and "1 predicted by 1 actor in" in summary, err
    assert summary.endswith("0 rows with an error code"), err
    code, err = finish(batch(str(december), "--out", out, "--address", ray_address))
    said = " ".join(err.split())
    assert code == 0 and "1 inputs: all already in" in said and "nothing to predict" in said, err
    assert "actors" not in said and json.loads((tmp_path / "out" / "job.json").read_text())["errors"] == {
        "empty_file": 1
    }  # job.json counts the whole output


def test_a_folder_in_a_list_or_manifest_gives_its_images(archive: Path, tmp_path: Path) -> None:
    """A manifest of study folders (one row per study, as a RIS export lists them) or a list made by
    `find -type d` gave one `is a folder, not an image file` row per folder and no image of it."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.csv").write_text(f"path\n{archive / 'nested'}\nempty\n")
    (tmp_path / "l.txt").write_text(f"{archive / 'nested'}\n")
    nested = collect_batch_inputs([archive / "nested"])  # the folder given on the command line
    assert len(nested) == 5
    assert collect_batch_inputs([tmp_path / "l.txt"]) == nested  # paths and names as predict's
    # a folder without images stays a row of its own (its error code says what it is)
    assert collect_batch_inputs([tmp_path / "m.csv"]) == {**nested, str(tmp_path / "empty"): "empty"}


def test_a_parquet_dataset_folder_is_a_manifest(archive: Path, tmp_path: Path) -> None:
    """Spark, Ray Data (`write_parquet`) and pandas (`partition_cols`) write a Parquet manifest as a
    folder of parts: `batch run manifest.parquet` said `no image files found` (exit 2), and beside
    another input the folder was left out without a word."""
    import pyarrow as pa

    images = [str(p) for p in sorted(archive.glob("*.jpg"))[:3]]
    (tmp_path / "m.parquet").mkdir()
    pq.write_table(pa.table({"file": images[:2]}), tmp_path / "m.parquet" / "part-0.parquet")
    pq.write_table(pa.table({"file": images[2:]}), tmp_path / "m.parquet" / "part-1.parquet")
    (tmp_path / "m.parquet" / "_SUCCESS").write_text("")  # Spark's marker: not a part
    assert list(collect_batch_inputs([tmp_path / "m.parquet"], path_column="file")) == images
    with pytest.raises(DatasetError, match=re.escape("no 'path' column (columns: file)")):
        collect_batch_inputs([tmp_path / "m.parquet"])


def test_an_out_named_like_a_file_is_refused(archive: Path, tmp_path: Path) -> None:
    """`--out results.csv` (as `predict --csv results.csv`) made a folder `results.csv` holding a
    `results.csv`; a folder of that name that is already a batch output stays usable."""
    result = CliRunner().invoke(cli, ["batch", "run", str(archive), "--out", str(tmp_path / "results.csv")])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "--out is a folder" in said and f"use --out {tmp_path}/results" in said
    assert not (tmp_path / "results.csv").exists() and "Traceback" not in result.output
    (tmp_path / "old.csv").mkdir()  # a folder that exists is the user's choice
    for _ in range(2):
        BatchOutput(tmp_path / "old.csv", ("path", "error_code"), {"name": "m"}).close()


def test_status_of_a_mistyped_folder_says_it_does_not_exist(tmp_path: Path) -> None:
    """`batch status resluts` said `resluts is not a fracsight batch output (no job.json)`."""
    result = CliRunner().invoke(cli, ["batch", "status", str(tmp_path / "resluts")])
    assert result.exit_code == 2 and f"{tmp_path}/resluts does not exist" in " ".join(result.output.split())
    result = CliRunner().invoke(cli, ["batch", "status", str(tmp_path)])
    assert result.exit_code == 2 and "is not a fracsight batch output (no job.json)" in result.output
    # another program's job.json: "u3: None, 0 rows, model None vNone", exit 0; or "unreadable"
    for theirs in ('{"name": "webpack", "version": 3}', '{"model": "gpt-4o", "epochs": 3}', "[1, 2]"):
        (tmp_path / "job.json").write_text(theirs)
        result = CliRunner().invoke(cli, ["batch", "status", str(tmp_path)])
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and "is not a fracsight batch output (its job.json is another's)" in said


def test_retry_errors_predicts_the_failed_files_again_in_their_rows_place(
    archive: Path, ray_address: str, tmp_path: Path
) -> None:
    """A file that could not be read (storage gone, a copy cut short) kept its error row for good:
    a re-run skipped it and exited 1 again, with no way to try it once it was fixed."""
    folder = tmp_path / "archive"
    folder.mkdir()
    images = sorted(archive.glob("*.jpg"))[:2]
    for image in images:
        (folder / image.name).symlink_to(image)
    (folder / "late.jpg").write_bytes(b"")  # still being copied when the job ran
    other = tmp_path / "other"
    other.mkdir()
    (other / "empty.png").write_bytes(b"")  # another command's error row in the same output
    out = tmp_path / "out"
    assert finish(batch(str(other), "--out", str(out), "--address", ray_address))[0] == 1
    assert finish(batch(str(folder), "--out", str(out), "--address", ray_address))[0] == 1
    code, err = finish(batch(str(folder), "--out", str(out), "--address", ray_address))
    assert code == 1 and "all already in" in " ".join(err.split()), err  # a committed row is final
    # ... unless its file changed since (the copy has arrived): then it is predicted again
    (folder / "late.jpg").write_bytes(images[0].resolve().read_bytes())
    code, err = finish(batch(str(folder), "--out", str(out), "--address", ray_address))
    said = " ".join(err.split())
    assert code == 0 and "3 inputs: 1 file changed since their rows were made, predicted again" in said
    assert "0 rows with an error code" in said
    # --retry-errors: an error row tried again though its file is the same (storage back, a fix)
    code, err = finish(batch(str(other), "--out", str(out), "--address", ray_address, "--retry-errors"))
    assert code == 1 and "1 inputs: 1 error row retried" in " ".join(err.split()), err
    for rows in (read_csv(out / "results.csv"), parquet_rows(out)):
        by_path = {r["path"]: r for r in rows}
        assert len(by_path) == len(rows) == 4  # each input once: the error row replaced, not added
        assert by_path[str(folder / "late.jpg")]["error_code"] == ""
        assert by_path[str(folder / "late.jpg")]["fracture_probability"]
        assert by_path[str(other / "empty.png")]["error_code"] == "empty_file"  # not this command's
    for part in (out / "parts").glob("*.parquet"):
        assert b"fracsight.notice" in pq.read_schema(part).metadata


def test_a_disk_full_before_the_first_row_leaves_no_folder_and_says_so(small_tmpfs: Path) -> None:
    """No room for job.json or NOTICE.txt as the job opened its new output: a bare `error (os_error):
    No space left on device` naming no folder, and a half-made folder left behind (job.json
    `running`, an empty NOTICE.txt)."""
    from fracsight.scale.output import OutputWriteFailed

    filler = fill(small_tmpfs)
    model = {"name": "m", "version": "1", "onnx_sha256": "0" * 64}
    said = r"cannot write to .*/out \(No space left on device\): 0 rows"
    with pytest.raises(OutputWriteFailed, match=said):
        BatchOutput(small_tmpfs / "out", ("path", "error_code"), model)
    assert not (small_tmpfs / "out").exists()
    with pytest.raises(OutputWriteFailed):  # the folders it made above it go too
        BatchOutput(small_tmpfs / "new" / "out", ("path", "error_code"), model)
    assert not (small_tmpfs / "new").exists()
    (small_tmpfs / "mine").mkdir()  # an empty folder of the user's: left empty, usable again
    with pytest.raises(OutputWriteFailed):
        BatchOutput(small_tmpfs / "mine", ("path", "error_code"), model)
    assert list((small_tmpfs / "mine").iterdir()) == []
    filler.unlink()
    out = BatchOutput(small_tmpfs / "out", ("path", "error_code"), model)  # room again: it opens
    assert (out.folder / "NOTICE.txt").read_text().startswith("fracsight")
    out.close()
    BatchOutput(small_tmpfs / "mine", ("path", "error_code"), model).close()


def test_a_job_stopped_before_its_first_row_removes_only_what_it_made(tmp_path: Path) -> None:
    """`--out runs/today/a`, stopped before a row: the cleanup removed `runs/` whole, with another
    job's committed rows and the user's notes put in it meanwhile. Only the job's own folder goes,
    and the folders above it only while they are empty."""
    model = {"name": "m", "version": "1", "onnx_sha256": "0" * 64}
    a = BatchOutput(tmp_path / "runs" / "today" / "a", ("path", "error_code"), model)
    b = BatchOutput(tmp_path / "runs" / "today" / "b", ("path", "error_code"), model)
    b.commit([{"path": "x.png", "error_code": ""}])
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    a.end_early("interrupted")
    assert not a.folder.exists() and (tmp_path / "runs" / "notes.txt").read_text() == "mine"
    assert parquet_rows(b.folder) and b.folder.is_dir()
    b.close()
    c = BatchOutput(tmp_path / "new" / "deep" / "c", ("path", "error_code"), model)
    c.end_early("stopped")  # nothing else there: all it made goes
    assert not (tmp_path / "new").exists()
    # files put into the job's own new folder while it waited for CPUs: they stay, and so does it
    d = BatchOutput(tmp_path / "new" / "d", ("path", "error_code"), model)
    (d.folder / "flagged").mkdir()
    (d.folder / "flagged" / "case1.txt").write_text("mine")
    (d.folder / "review.txt").write_text("mine too")
    d.end_early("interrupted")
    kept = sorted(p.relative_to(d.folder).as_posix() for p in d.folder.rglob("*"))
    assert kept == ["flagged", "flagged/case1.txt", "review.txt"]


def test_ray_address_from_the_environment_is_the_cluster_used(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ray job submit` and KubeRay give the cluster as RAY_ADDRESS: it was ignored, and a second,
    local Ray ran the job on the head node alone. Here nothing listens there: said at once."""
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    result = CliRunner().invoke(cli, ["batch", "run", str(archive), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert f"error (batch_failed): no Ray cluster answers at 127.0.0.1:{port} (RAY_ADDRESS)" in result.output
    assert not (tmp_path / "o").exists()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:99999")  # said as where it came from
    result = CliRunner().invoke(cli, ["batch", "run", str(archive), "--out", str(tmp_path / "o")])
    assert "RAY_ADDRESS=127.0.0.1:99999: 99999 is not a port number" in result.output, result.output
    # what names no cluster: the Jobs API's address (exported for `ray job submit`), `local`
    from fracsight.scale.job import cluster_from_environment

    for value, cluster in [("http://127.0.0.1:8265", None), ("local", None), (" ", None), ("auto", "auto")]:
        monkeypatch.setenv("RAY_ADDRESS", value)
        assert cluster_from_environment() == cluster, value


def test_a_ray_client_address_without_ray_client_says_what_to_install(archive: Path, tmp_path: Path) -> None:
    """`--address ray://HOST:10001`, as --help advertises, ended in Ray's `ValueError: Ray Client
    requires pip package ray[client]` (the scale extra installs ray[data])."""
    import importlib.util

    if importlib.util.find_spec("grpc") is not None:
        pytest.skip("Ray Client is installed here")
    args = ["batch", "run", str(archive), "--out", str(tmp_path / "o"), "--address", "ray://127.0.0.1:10001"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "pip install 'ray[client]'" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_the_cpus_of_a_container_are_its_cgroups_quota(tmp_path: Path) -> None:
    """In a pod limited to 2 CPUs on a 64-core node the local Ray got 64 (the affinity mask), and
    as many actors, each loading the model; a limit on a child cgroup (systemd-run, Slurm) was not
    seen either. local_cpus takes whole CPUs of it, at least one."""
    from fracsight._cpus import cgroup_cpu_quota, local_cpus

    at_root = tmp_path / "self-root"  # /proc/self/cgroup in a container's own cgroup namespace
    at_root.write_text("0::/\n")
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir()
    (v2 / "cpu.max").write_text("100000 100000\n")
    assert cgroup_cpu_quota(v2, at_root) == 1.0
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2, at_root) is None
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert cgroup_cpu_quota(v2, at_root) == 0.5
    (v1 / "cpu,cpuacct").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    v1_root = tmp_path / "self-v1"
    v1_root.write_text("4:memory:/\n2:cpu,cpuacct:/\n0::/\n")
    assert cgroup_cpu_quota(v1, v1_root) == 1.5
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(v1, v1_root) is None and cgroup_cpu_quota(tmp_path / "none", at_root) is None
    # a child cgroup (systemd-run, Slurm, a host's cgroup namespace): its own limit, and its parents'
    child = v2 / "slurm" / "job42"
    child.mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (child / "cpu.max").write_text("25000 100000\n")
    (v2 / "slurm" / "cpu.max").write_text("200000 100000\n")
    in_child = tmp_path / "self-child"
    in_child.write_text("0::/slurm/job42\n")
    assert cgroup_cpu_quota(v2, in_child) == 0.25
    (child / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2, in_child) == 2.0  # the parent's
    assert 1 <= local_cpus() <= len(os.sched_getaffinity(0))


def test_a_parquet_manifest_of_string_views_is_text(archive: Path, tmp_path: Path) -> None:
    """Arrow's `string_view` (newer writers) was refused as `holds string_view, not text paths`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not hasattr(pa, "string_view"):
        pytest.skip("this pyarrow has no string_view")
    image = next(archive.glob("*.jpg"))
    pq.write_table(pa.table({"path": pa.array([str(image)], type=pa.string_view())}), tmp_path / "m.parquet")
    assert list(collect_batch_inputs([tmp_path / "m.parquet"])) == [str(image)]


def test_a_ctrl_c_while_rows_are_retried_leaves_counts_and_csv_true(tmp_path: Path) -> None:
    """A Ctrl-C between two parts of `--retry-errors` said "100000 rows are committed" of 57001, and
    job.json and results.csv kept the rows already taken out of the parts."""
    model = {"name": "m", "version": "1"}
    out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    for i in range(3):  # a part each
        out.commit([{"path": f"/p{i}", "error_code": "unreadable_image"}])
    asked: list[str] = []

    def drops(path: str, code: str) -> bool:
        asked.append(path)
        if len(asked) == 2:  # the second part: as a Ctrl-C between two parts
            raise KeyboardInterrupt
        return True

    with pytest.raises(KeyboardInterrupt):
        out._forget(drops)
    assert out.rows_done == 2 and len(out.done) == 2
    with out.csv_path.open(encoding="utf-8") as f:
        assert sorted(row[0] for row in list(csv.reader(f))[1:]) == sorted(out.done)
    out.close()


def test_batch_status_passes_over_a_part_a_running_job_took_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`batch status` beside a job retrying its rows called a part that job had just removed
    "not a readable part of a batch output: move it out"."""
    from fracsight.scale import output

    model = {"name": "m", "version": "1"}
    out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    for i in range(2):
        out.commit([{"path": f"/p{i}", "error_code": "unreadable_image"}])
    out.close()
    read = BatchOutput._read_part
    first = sorted((tmp_path / "out" / "parts").glob("part-*.parquet"))[0]

    def removed_meanwhile(part: Path, columns: list[str], optional=()):  # type: ignore[no-untyped-def]
        if part == first:
            part.unlink()
        return read(part, columns, optional)

    monkeypatch.setattr(output.BatchOutput, "_read_part", staticmethod(removed_meanwhile))
    assert output.committed_codes(tmp_path / "out") == {"unreadable_image": 1}


def test_batch_status_says_running_while_a_job_opens_the_output(tmp_path: Path) -> None:
    """While a job read and retried an output's rows, job.json still said "complete" from the run
    before, and `batch status` said so too."""
    model = {"name": "m", "version": "1"}
    out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
    out.commit([{"path": "/p0", "error_code": ""}])
    out.write_job({"status": "complete"})  # as the earlier run left it, the lock held by this job
    try:
        shown = CliRunner().invoke(cli, ["batch", "status", str(tmp_path / "out"), "--json"])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["status"] == "running"
    finally:
        out.close()
    shown = CliRunner().invoke(cli, ["batch", "status", str(tmp_path / "out"), "--json"])
    assert json.loads(shown.stdout)["status"] == "complete"


def test_a_run_in_another_time_zone_keeps_the_order_and_makes_no_edited_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A run under TZ=UTC, the next under TZ=UTC+12 (cron and a user; the hour DST repeats): the
    parts were named by local time, the second run's sorted first, and the next open rebuilt
    results.csv in that order: "differs from the job's rows (edited?)", a copy kept, rows reordered."""
    model = {"name": "m", "version": "1", "onnx_sha256": "0" * 64}
    # and runs in one second, which their random tokens ordered by chance
    names = ("first.png", "second.png", "third.png", "fourth.png")
    for zone, path in zip(("UTC", "UTC+12", "UTC+12", "UTC"), names, strict=True):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        out = BatchOutput(tmp_path / "out", ("path", "error_code"), model)
        out.commit([{"path": path, "error_code": ""}])
        out.close()
    monkeypatch.delenv("TZ")
    time.tzset()
    written = (tmp_path / "out" / "results.csv").read_text()
    BatchOutput(tmp_path / "out", ("path", "error_code"), model).close()
    assert not list((tmp_path / "out").glob("results.edited-*")), caplog.text
    assert (tmp_path / "out" / "results.csv").read_text() == written
    assert [written.index(name) for name in names] == sorted(written.index(name) for name in names)


def test_a_stop_after_the_last_row_is_committed_says_the_job_is_complete(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the job's last second (held while Ray stopped, raised after the last commit):
    "run the same command again to finish" and job.json `interrupted`, every row committed."""
    from fracsight.scale import job
    from fracsight.scale.job import BatchInterrupted, run_batch

    fake_ray(monkeypatch)
    committed = job._run_on_ray

    def stopped_after_the_last_commit(*args: object, **kwargs: object) -> None:
        committed(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "_run_on_ray", stopped_after_the_last_commit)
    monkeypatch.setattr(job, "ignore_further_stops", lambda: None)  # the test process keeps its Ctrl-C
    with pytest.raises(BatchInterrupted, match=r"interrupted after every row was committed: .* is complete"):
        run_batch(collect_batch_inputs([archive]), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "job.json").read_text())["status"] == "complete"


def test_part_names_that_must_sort_after_older_ones_stay_short(tmp_path: Path) -> None:
    """Review: each run that sorted before the last part (parts of an older fracsight named in local
    time, ahead of UTC; a clock set back) added a suffix to the last name, until "File name too
    long" some twenty runs on."""
    from fracsight.scale.output import _sorting_after

    parts = [tmp_path / "part-20991231T235959-1-aaaaaaaa-000001.parquet"]  # far ahead: every run sorts before
    for _ in range(50):
        run = _sorting_after("20261207T000000Z-2-bbbbbbbb", parts)
        name = f"part-{run}-000001.parquet"
        assert name > max(p.name for p in parts) and len(name) < 70, name
        parts.append(tmp_path / name)


def test_a_stop_before_the_redone_rows_were_pending_is_not_called_complete(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: Ctrl-C while `--retry-errors` took the error rows out (or changed files' rows) left
    nothing pending yet, and the job was said complete with no error retried."""
    from fracsight.scale import job
    from fracsight.scale.job import BatchInterrupted, run_batch

    fake_ray(monkeypatch)  # every row an error row
    inputs = collect_batch_inputs([archive])
    began = time.perf_counter()
    summary = run_batch(inputs, tmp_path / "out")
    assert 0 <= summary.seconds <= time.perf_counter() - began  # (the flag below once took its timer's name)

    def stopped(*_args: object, **_kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(BatchOutput, "forget_errors", stopped)
    monkeypatch.setattr(job, "ignore_further_stops", lambda: None)
    with pytest.raises(BatchInterrupted, match=r"^interrupted: \d+ rows are committed"):
        run_batch(inputs, tmp_path / "out", retry_errors=True)
    assert json.loads((tmp_path / "out" / "job.json").read_text())["status"] == "interrupted"


def test_a_last_part_named_another_way_is_still_sorted_after() -> None:
    """Review: a last part whose run ends in a hex suffix (as one short-lived version named them)
    restarted the counter, which sorted before it."""
    from fracsight.scale.output import _sorting_after

    latest = Path("part-20250601T120000Z-4242-aaaa0000.deadbeef-000000.parquet")
    run = _sorting_after("20250101T000000Z-1-bbbbbbbb", [latest])
    assert f"part-{run}-000001.parquet" > latest.name


def test_threads_python_did_not_start_are_not_waited_for() -> None:
    """A thread of Ray's C++ core that logged an error is a dummy thread to Python: joining it raised
    "cannot join a dummy thread" in place of the job's `batch_failed` line, and its clean-up was skipped."""
    import _thread
    import threading

    from fracsight.scale.job import _threads_ended

    seen, done = threading.Event(), threading.Event()

    def foreign() -> None:  # started as a C extension starts one: Python made no Thread for it
        threading.current_thread()  # what logging does: a _DummyThread is registered
        seen.set()
        done.wait(10)

    _thread.start_new_thread(foreign, ())
    assert seen.wait(10)
    try:
        assert any(isinstance(t, threading._DummyThread) for t in threading.enumerate())
        _threads_ended(set())
    finally:
        done.set()
