#!/usr/bin/env python
"""Fuzz ``fracsight.io.read_image`` for longer than CI does, and keep every crash as a regression test.

    pip install atheris                                          # optional: coverage-guided fuzzing
    python scripts/fuzz_reader.py --runs 200000 --max-seconds 1800    # atheris when installed
    python scripts/fuzz_reader.py --engine random --runs 50000        # plain mutation, no atheris

The seeds are the generated bad-input corpus (tests/corpus.py). Each input must
either give a valid radiograph (2-D float32, finite, in [0, 1], within the size
limits) or raise an ``ImageReadError`` whose message starts with the file name.
Anything else (another exception, a broken invariant, an input slower than
``--timeout`` seconds) is a crash: it is printed and saved to
``tests/fuzz_crashes/<sha1>.b64`` (base64 on the first line, the error on the
second), which tests/test_fuzz.py replays on every run. Fix the bug, keep the file.

Bounded: stops after ``--runs`` inputs or ``--max-seconds``, whichever comes first.
Prints one line per ``--report-every`` inputs (index, size, first bytes,
outcome) and a summary of outcomes per error code at the end; ``--verbose``
prints every input. Exit code 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CRASH_DIR = ROOT / "tests" / "fuzz_crashes"
MAX_PIXELS = 4_000_000
INSTRUMENTED = (
    "PIL.Image",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
    "PIL.BmpImagePlugin",
    "PIL.GifImagePlugin",
    "PIL.TiffImagePlugin",
    "pydicom",
    "pydicom.pixels",
    "fracsight.io",
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    p.add_argument("--runs", type=int, default=20_000, help="inputs to try (default 20000)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="wall-clock bound (default 600)")
    p.add_argument("--max-len", type=int, default=65_536, help="largest input in bytes")
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it is a crash")
    p.add_argument("--seed", type=int, default=0, help="random engine seed")
    p.add_argument("--report-every", type=int, default=1000)
    p.add_argument("--verbose", action="store_true", help="print every input tried")
    p.add_argument("--crash-dir", type=Path, default=CRASH_DIR)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p.parse_args(argv)


class Harness:
    """Runs one input, classifies the outcome, saves crashes, prints progress and the summary."""

    def __init__(
        self, args: argparse.Namespace, read_image: Callable[..., Any], error_type: type, min_side: int
    ) -> None:
        self.args = args
        self.read_image = read_image
        self.error_type = error_type
        self.min_side = min_side
        self.outcomes: Counter[str] = Counter()
        self.crashes: list[dict[str, str]] = []
        self.count = 0
        self.start = time.monotonic()

    def classify(self, data: bytes) -> str:
        """'ok', an error code, or raises AssertionError / any unexpected exception."""
        import numpy as np

        name = "fuzz.bin"
        try:
            rg = self.read_image(data, name=name, max_pixels=MAX_PIXELS)
        except self.error_type as e:
            message = str(e)
            assert message.startswith(f"{name}: "), f"message does not name the file: {message[:200]}"
            assert "object at 0x" not in message, f"message quotes a repr: {message[:200]}"
            return str(e.code)
        px = rg.pixels
        assert px.ndim == 2 and px.dtype == np.float32, f"pixels {px.dtype} {px.shape}"
        assert min(px.shape) >= self.min_side and px.size <= MAX_PIXELS, f"size {px.shape}"
        assert np.isfinite(px).all(), "non-finite pixels"
        assert float(px.min()) >= 0.0 and float(px.max()) <= 1.0, "pixels outside [0, 1]"
        json.dumps(rg.metadata.to_dict())
        return "ok"

    def run_one(self, data: bytes) -> None:
        self.count += 1
        signal.alarm(self.args.timeout)
        try:
            outcome = self.classify(data)
        except BaseException as e:  # everything else is what we look for
            if isinstance(e, KeyboardInterrupt):
                raise
            outcome = "CRASH"
            self.save_crash(data, e)
        finally:
            signal.alarm(0)
        self.outcomes[outcome] += 1
        if self.args.verbose or self.count % self.args.report_every == 0 or outcome == "CRASH":
            rate = self.count / max(time.monotonic() - self.start, 1e-9)
            print(
                f"#{self.count:>7} len {len(data):>6} head {data[:12].hex():<24} -> {outcome:<22} "
                f"({rate:.0f}/s)",
                flush=True,
            )
        if self.count >= self.args.runs or time.monotonic() - self.start >= self.args.max_seconds:
            self.finish()

    def save_crash(self, data: bytes, exc: BaseException) -> None:
        digest = hashlib.sha1(data).hexdigest()[:16]
        self.args.crash_dir.mkdir(parents=True, exist_ok=True)
        path = self.args.crash_dir / f"{digest}.b64"
        summary = f"{type(exc).__name__}: {str(exc)[:300]}".replace("\n", " ")
        path.write_text(base64.b64encode(data).decode("ascii") + "\n# " + summary + "\n")
        self.crashes.append({"file": str(path), "error": summary})
        print(f"CRASH saved to {path}: {summary}", flush=True)
        traceback.print_exception(type(exc), exc, exc.__traceback__, limit=-4, file=sys.stdout)

    def summary(self) -> dict[str, object]:
        elapsed = time.monotonic() - self.start
        return {
            "engine": self.args.engine,
            "inputs": self.count,
            "seconds": round(elapsed, 1),
            "inputs_per_second": round(self.count / max(elapsed, 1e-9), 1),
            "outcomes": dict(self.outcomes.most_common()),
            "crashes": self.crashes,
        }

    def finish(self) -> None:
        report = self.summary()
        if self.args.json:
            print(json.dumps(report, indent=2))
        else:
            print(
                f"\n{report['inputs']} inputs in {report['seconds']} s ({report['inputs_per_second']}/s), "
                f"engine {report['engine']}"
            )
            for outcome, n in self.outcomes.most_common():
                print(f"  {outcome:<24} {n:>8}")
            print(
                f"crashes: {len(self.crashes)}"
                + "".join(f"\n  {c['file']}: {c['error']}" for c in self.crashes)
            )
        sys.stdout.flush()
        os._exit(1 if self.crashes else 0)  # atheris/libFuzzer never returns; end here, bounded


def _timeout(signum: int, frame: object) -> None:
    raise TimeoutError("input took longer than --timeout")


def mutate(data: bytes, rng: Any) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        op = int(rng.integers(5))
        pos = int(rng.integers(len(buf) + 1))
        if op == 0 and buf:
            buf[pos : pos + 1] = bytes([int(rng.integers(256))])
        elif op == 1:
            buf[pos:pos] = rng.bytes(int(rng.integers(1, 32)))
        elif op == 2:
            del buf[pos : pos + int(rng.integers(1, 512))]
        elif op == 3 and len(buf) > 4:  # an "interesting" integer where a size field may be
            width = int(rng.choice([1, 2, 4]))
            value = int(rng.choice([0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])) & (
                (1 << (8 * width)) - 1
            )
            buf[pos : pos + width] = value.to_bytes(width, str(rng.choice(["little", "big"])))
        else:
            del buf[pos:]
    return bytes(buf)


def run_random(harness: Harness, seeds: list[bytes], args: argparse.Namespace) -> None:
    import numpy as np

    rng = np.random.default_rng(args.seed)
    for data in seeds:
        harness.run_one(data)
    while True:  # bounded: run_one ends the process at --runs or --max-seconds
        roll = rng.random()
        if roll < 0.05:
            data = rng.bytes(int(rng.integers(0, 4096)))
        elif roll < 0.15:
            a, b = (seeds[int(i)] for i in rng.integers(len(seeds), size=2))
            data = a[: int(rng.integers(len(a) + 1))] + b[int(rng.integers(len(b) + 1)) :]
        else:
            data = mutate(seeds[int(rng.integers(len(seeds)))], rng)
        harness.run_one(data[: args.max_len])


def run_atheris(harness: Harness, seeds: list[bytes], args: argparse.Namespace, atheris: Any) -> None:
    seed_dir = Path(tempfile.mkdtemp(prefix="fracsight-fuzz-seeds-"))
    for i, data in enumerate(seeds):
        (seed_dir / f"seed-{i:03d}").write_bytes(data)
    artifacts = Path(tempfile.mkdtemp(prefix="fracsight-fuzz-artifacts-"))
    print(f"atheris: seeds in {seed_dir}, libFuzzer artifacts in {artifacts}", flush=True)
    libfuzzer_args = [
        sys.argv[0],
        str(seed_dir),
        f"-runs={args.runs + len(seeds) + 100}",
        f"-max_total_time={int(args.max_seconds) + 30}",
        f"-max_len={args.max_len}",
        f"-timeout={args.timeout * 3}",
        "-rss_limit_mb=4096",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    atheris.Setup(libfuzzer_args, harness.run_one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    atheris = None
    if args.engine in ("auto", "atheris"):
        try:
            import atheris
        except ImportError:
            if args.engine == "atheris":
                raise SystemExit(
                    "atheris is not installed: pip install atheris (or use --engine random)"
                ) from None
    args.engine = "atheris" if atheris is not None else "random"
    if atheris is not None:
        with atheris.instrument_imports(include=["PIL", "pydicom", "fracsight"]):
            for module in INSTRUMENTED:  # Python-level coverage of the parsers fracsight lets see the bytes
                importlib.import_module(module)
    sys.path.insert(0, str(ROOT / "tests"))
    from corpus import build_corpus
    from fracsight.errors import ImageReadError
    from fracsight.io import MIN_SIDE, read_image

    signal.signal(signal.SIGALRM, _timeout)
    harness = Harness(args, read_image, ImageReadError, MIN_SIDE)
    seeds = [c.data for c in build_corpus() if 0 < len(c.data) <= args.max_len]
    print(
        f"fuzzing read_image with {args.engine}: {len(seeds)} seeds, up to {args.runs} inputs or "
        f"{args.max_seconds:.0f} s; crashes go to {args.crash_dir}",
        flush=True,
    )
    if atheris is not None:
        run_atheris(harness, seeds, args, atheris)
    else:
        run_random(harness, seeds, args)


if __name__ == "__main__":
    main()
