"""glibc keeps each image's freed working memory for the next image (fracsight._malloc)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# Three 3 MB arrays made and freed per round, as one image's decode, letterbox and heatmap do;
# prints the minor page faults per round after two warm-up rounds.
_WORKLOAD = """
import json, resource, sys
import numpy as np
{setup}
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(12):
    if i == 2:
        start = faults()
    a = np.ones(3 << 18, np.float32); b = np.ones(3 << 18, np.float32); c = a + b
    del a, b, c
print(json.dumps({{"faults": (faults() - start) / 10, "set": SET}}))
"""


def _run(setup: str, env: dict[str, str] | None = None) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _WORKLOAD.format(setup=setup)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_loading_a_model_stops_the_page_faults_of_each_round() -> None:
    # without the setting glibc hands the three arrays back to the kernel every round (about 2,300
    # pages each time on glibc 2.36); were that ever to stop, fracsight._malloc would not be needed
    plain = _run("SET = None")
    assert plain["faults"] > 1000, plain
    loaded = _run(
        "from fracsight.inference.onnx_model import OnnxModel\n"
        "from fracsight.inference.store import resolve_bundle\n"
        "OnnxModel(resolve_bundle())\n"
        "import fracsight._malloc as m; SET = m._done"
    )
    assert loaded["set"] is True and loaded["faults"] < 50, loaded


@pytest.mark.parametrize(
    "env",
    [{"MALLOC_TRIM_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}],
)
def test_a_users_own_malloc_settings_stand(env: dict[str, str]) -> None:
    found = _run("from fracsight._malloc import keep_freed_memory\nSET = keep_freed_memory()", env)
    assert found["set"] is False
    assert found["faults"] > 1000, found  # their (default-sized) trim threshold still gives memory back


_THREADS = """
import ctypes, os, re, tempfile, threading
import numpy as np
{setup}
def work():
    a = np.ones(100_000)  # from the thread's own heap (arena), below the mmap threshold
    barrier.wait()  # all alive at once: each new thread gets an arena of its own, up to the cap
barrier = threading.Barrier(12)
threads = [threading.Thread(target=work) for _ in range(12)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = ctypes.c_char_p, ctypes.c_char_p
libc.malloc_info.argtypes = ctypes.c_int, ctypes.c_void_p
libc.fclose.argtypes = (ctypes.c_void_p,)
path = tempfile.mktemp()
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, f)
libc.fclose(f)
print(len(re.findall(r'<heap nr="', open(path).read())))
os.unlink(path)
"""


def test_a_process_of_many_threads_keeps_two_heaps() -> None:
    """glibc gave each new thread a heap of its own (up to 8 per core), each keeping its high-water
    mark under the raised trim threshold: a server's worker threads held 305 MB in 16 heaps, 69 MB
    of it in use."""

    def heaps(setup: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _THREADS.format(setup=setup)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    assert heaps("") > 2  # the premise: without the cap, threads get heaps of their own
    # a user's own arena limit (common in containers) stands, and turns off nothing else
    found = _run(
        "from fracsight._malloc import keep_freed_memory\nSET = keep_freed_memory()",
        {"MALLOC_ARENA_MAX": "4"},
    )
    assert found["set"] is True and found["faults"] < 50, found
    assert heaps("from fracsight._malloc import keep_freed_memory\nassert keep_freed_memory()") <= 2
