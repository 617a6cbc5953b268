#!/bin/sh
# The sha256 of the sources a fracsight wheel is built from (pyproject.toml, README.md, LICENSE and
# src/, without byte code or egg-info), under folder $1 (default: here). scripts/make_wheelhouse.sh
# records it beside the wheel, and the Dockerfile refuses a wheelhouse made from other sources: the
# image would hold the older code and model without a word.
set -eu
cd "${1:-.}"
find pyproject.toml README.md LICENSE src -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
    ! -path '*.egg-info/*' -print | LC_ALL=C sort | while IFS= read -r f; do
    printf '%s\n' "$f"
    sha256sum < "$f"
done | sha256sum | cut -d' ' -f1
