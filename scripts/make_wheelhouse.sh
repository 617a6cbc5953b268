#!/usr/bin/env bash
# Fill wheelhouse/ with fracsight's wheel and every wheel it needs, for an offline image build
# (`pip install --no-index` in the Dockerfile) or an air-gapped install.
#
#   scripts/make_wheelhouse.sh [PYTHON_VERSION] [EXTRAS]
#
# PYTHON_VERSION: the image's Python (3.11 for Debian bookworm, 3.12 for python:3.12-slim;
# default: this machine's). EXTRAS: fracsight extras to include (default serve,dicom,app, so that
# both the inference and the web-app image build from it). ONNXRUNTIME=onnxruntime-gpu adds the
# GPU runtime for the GPU variant.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PYTHON_VERSION="${1:-$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
EXTRAS="${2:-serve,dicom,app}"
OUT=wheelhouse

# the same source gives the same wheel, byte for byte, so image builds reuse their cached layers
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 315532800)}"
log=$(mktemp)
src=$(mktemp -d)
trap 'rm -rf "$log" "$src"' EXIT
rm -f "$OUT"/fracsight-*.whl
# from a clean copy of the sources: built in place, setuptools' build/lib would carry files since
# deleted from src/ (a removed model bundle, a renamed module) into the wheel, and so the image
tar -c --exclude=__pycache__ --exclude='*.egg-info' pyproject.toml README.md LICENSE src | tar -x -C "$src"
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" "$src" > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
wheel=$(ls "$OUT"/fracsight-*.whl)
sh deploy/source-digest.sh "$src" > "$OUT/fracsight-source.sha256"  # what the Dockerfile checks it against
# Binary wheels for the image's interpreter and a glibc as old as Debian bookworm's (2.36).
platforms=()
for tag in manylinux_2_36 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
    manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
"$PY" -m pip download --quiet --only-binary=:all: --implementation cp \
    --python-version "$PYTHON_VERSION" "${platforms[@]}" --dest "$OUT" \
    "$wheel[$EXTRAS]" ${ONNXRUNTIME:+"$ONNXRUNTIME"} > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
echo "$OUT: $(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1), for Python $PYTHON_VERSION"
