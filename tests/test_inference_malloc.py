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
