"""A bundle folder is written whole or not at all, even when the process is told to stop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

STOPPED_WHILE_WRITING = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from fracsight._output import staged_folder

    with staged_folder(Path(sys.argv[1]), force=False) as work:
        (work / "bundle.json").write_text("{}")
        os.kill(os.getpid(), signal.SIGTERM)  # as `timeout` or a job scheduler stops a job
        time.sleep(60)
    """
)


def test_sigterm_while_a_bundle_is_written_leaves_no_half_built_folder(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_WHILE_WRITING, str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 143, done.stderr  # 128 + SIGTERM, as a shell reports a terminated job
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its hidden .bundle.partial-* folder
