#!/usr/bin/env bash
# Build the fracsight images for real and check them: predict inside equals predict here, the API
# inside refuses requests without a token and answers with one, the web-app image serves.
#
#   scripts/test_container.sh            # 3-4 minutes the first time on 2 cores (debootstrap,
#                                        # wheelhouse, image); later runs reuse the cached layers
#   KEEP=1 scripts/test_container.sh     # keep the built images afterwards
#   WEBAPP=0 scripts/test_container.sh   # skip the web-app image
#   scripts/test_container.sh --gpu-variant   # also build the GPU variant (onnxruntime-gpu, on the
#                                        # Debian base: no CUDA there) and check it falls back to the CPU
#
# Slow, so outside the default `python -m pytest`. Needs debootstrap, podman and buildah (.ci/run
# installs them) and root, or rootless podman/buildah set up for this user; a Python with fracsight
# and httpx (the README's install; PYTHON=... for another than .venv/bin/python); and FracAtlas
# (FRACATLAS=..., default ../shared/data/fracatlas). Public registries are not
# needed: the base image is a Debian bookworm made here with debootstrap from the mirror apt uses, and
# Python packages come from a wheelhouse made here (scripts/make_wheelhouse.sh), installed offline.
set -euo pipefail
GPU_VARIANT=0
for arg in "$@"; do
    case $arg in
        --gpu-variant) GPU_VARIANT=1 ;;
        *) echo "usage: $0 [--gpu-variant]" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=build/container
mkdir -p "$BUILD"
BASE_IMAGE=localhost/debian:bookworm
IMAGE=localhost/fracsight:test
APP_IMAGE=localhost/fracsight-app:test
GPU_IMAGE=localhost/fracsight-gpu:test
PY="${PYTHON:-$ROOT/.venv/bin/python}"
FRACATLAS="${FRACATLAS:-$ROOT/../shared/data/fracatlas}"
# what the checks at the end need, said now, not after minutes of debootstrap and building
if ! "$PY" -c "import fracsight, httpx" 2>/dev/null; then
    echo "needs a Python with fracsight and httpx: $PY is not one (the README's install makes .venv;" \
        "or PYTHON=/path/to/python)" >&2
    exit 2
fi
shopt -s nullglob
found=("$FRACATLAS"/images/Fractured/*.jpg)  # the path quoted: brackets or * in it are no pattern
shopt -u nullglob
if [ ${#found[@]} -eq 0 ]; then
    echo "needs FracAtlas: no images under $FRACATLAS/images/Fractured (FRACATLAS=/path/to/fracatlas)" >&2
    exit 2
fi
TOKEN="container-test-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
CONTAINERS=()
RUNDIR=$(mktemp -d)  # servers inside write their PID here (chroot isolation shares our PID space)
chmod 777 "$RUNDIR"

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
# start_inside NAME BUILDAH-RUN-ARGS...: a server inside, in the background (log: $BUILD/NAME.log)
start_inside() {
    local name=$1; shift
    buildah run --isolation chroot -v "$RUNDIR:/run/fracsight-test" "$@" > "$BUILD/$name.log" 2>&1 &
}
# stop_inside NAME: SIGTERM to its `timeout` (which passes it on to the server's process group and
# sends SIGKILL 10 s later if it is still there); wait until it is gone
stop_inside() {
    local pid
    pid=$(cat "$RUNDIR/$1.pid" 2>/dev/null) || return 0
    rm -f "$RUNDIR/$1.pid"  # never signal that number again: it may be reused
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || { echo "$1 inside: stopped"; return 0; }
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    echo "$1 inside: killed (did not stop within 30 s of SIGTERM)"
}
cleanup() {
    for pidfile in "$RUNDIR"/*.pid; do [ -e "$pidfile" ] && stop_inside "$(basename "$pidfile" .pid)"; done
    rm -rf "$RUNDIR"
    for c in "${CONTAINERS[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
    if [ "${KEEP:-0}" != 1 ]; then buildah rmi "$IMAGE" "$APP_IMAGE" "$GPU_IMAGE" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

mirror() {  # the Debian mirror apt already uses here (deb822 or one-line sources)
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb +(http|https|file)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | grep -v security | awk '{print $2}' | head -1)
    echo "${uri:-http://deb.debian.org/debian}"
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- base image ------------------------------------------------------------------------------------
if ! podman image exists "$BASE_IMAGE"; then
    step "debootstrap --variant=minbase bookworm from $(mirror)"
    rm -rf "$BUILD/rootfs"
    debootstrap --variant=minbase bookworm "$BUILD/rootfs" "$(mirror)" > "$BUILD/debootstrap.log"
    rm -rf "$BUILD"/rootfs/var/cache/apt/archives/*.deb "$BUILD"/rootfs/var/lib/apt/lists/*
    tar -C "$BUILD/rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
    rm -rf "$BUILD/rootfs"
fi
echo "base: $BASE_IMAGE ($(podman image inspect "$BASE_IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"

# ---- wheelhouse and images -------------------------------------------------------------------------
step "wheelhouse for the image's Python (bookworm: 3.11)"
if [ "$GPU_VARIANT" = 1 ]; then
    ONNXRUNTIME=onnxruntime-gpu PYTHON="$PY" scripts/make_wheelhouse.sh 3.11 serve,dicom,app
else
    PYTHON="$PY" scripts/make_wheelhouse.sh 3.11 serve,dicom,app
fi
ls wheelhouse/fracsight-*.whl >/dev/null || fail "no fracsight wheel in wheelhouse/"

# bud LOG [buildah bud options]: build this folder; retried once when buildah's chroot isolation fails
# to set itself up ("Close_Fd sealing memfd copy: Device or resource busy", seen once in a dozen builds)
bud() {
    local log=$1; shift
    local attempt
    for attempt in 1 2; do
        buildah bud --isolation chroot --layers --force-rm --format docker --quiet \
            --build-arg BASE="$BASE_IMAGE" "$@" . > "$log" 2>&1 && return 0
        grep -q "sealing memfd copy" "$log" && [ "$attempt" = 1 ] || return 1
        echo "(buildah: $(grep -m1 "sealing memfd copy" "$log"); building again)"
    done
}
build() {  # build TAG [buildah bud options]
    local tag=$1; shift
    local start=$SECONDS
    bud "$BUILD/build-${tag##*/}.log" "$@" -t "$tag" \
        || { tail -30 "$BUILD/build-${tag##*/}.log"; fail "build of $tag"; }
    echo "$tag: built in $((SECONDS - start)) s, $(podman image inspect "$tag" --format '{{.Size}}' \
        | awk '{printf "%.0f MB", $1/1e6}')"
}
step "build the inference image"
build "$IMAGE"
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
[ "$size" -lt 1000000000 ] || fail "inference image is $size bytes (target: under 1 GB)"

C=$(buildah from "$IMAGE")
CONTAINERS+=("$C")
# inside [buildah run options] CONTAINER COMMAND...: retried once on the chroot set-up failure bud()
# retries (seen on `buildah run` too: the command never started, so nothing of it was printed)
inside() {
    local err="$BUILD/inside.stderr" attempt rc
    for attempt in 1 2; do
        buildah run --isolation chroot "$@" 2> "$err" && { cat "$err" >&2; return 0; }
        rc=$?
        if [ "$attempt" = 1 ] && grep -q "sealing memfd copy" "$err"; then
            echo "(buildah: $(grep -m1 "sealing memfd copy" "$err"); running again)" >&2
            continue
        fi
        cat "$err" >&2
        return "$rc"
    done
}

step "the image: user, no torch, health check, model, DICOM node"
uid=$(inside "$C" id -u)
[ "$uid" != 0 ] || fail "runs as root"
echo "user: $(inside "$C" id -un) (uid $uid)"
inside "$C" python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    || fail "torch is installed in the inference image"
echo "torch: not installed"
health=$(buildah inspect --format '{{.Docker.Config.Healthcheck.Test}}' "$IMAGE")
[[ "$health" == *healthz* ]] || fail "no HEALTHCHECK on /healthz: $health"
echo "HEALTHCHECK: $health"
inside "$C" fracsight models > "$BUILD/models.txt"
default=$("$PY" -c "from fracsight.inference import DEFAULT_MODEL; print(DEFAULT_MODEL)")
grep -F "  $default (" "$BUILD/models.txt" | grep -q "(default)" \
    || { cat "$BUILD/models.txt"; fail "the image's default model is not $default (this checkout's)"; }
echo "default model: $default, inside the image ($(grep -c '^  ' "$BUILD/models.txt") packaged bundles)"
inside "$C" fracsight dicom --help > /dev/null || fail "fracsight dicom is not runnable in the image"
echo "fracsight dicom: runnable ($(inside "$C" fracsight dicom --help | grep -cE '^│ [a-z]') commands)"

step "fracsight predict inside == here"
images=("$FRACATLAS"/images/Fractured/*.jpg)
IMG=${images[0]}
[ -f "$IMG" ] || fail "no FracAtlas image under $FRACATLAS/images/Fractured"
"$PY" -c "from fracsight.cli import main; main()" predict --json "$IMG" > "$BUILD/host.json" \
    || fail "fracsight predict fails here"
# same_as_host CONTAINER NAME: `fracsight predict --json` on $IMG inside CONTAINER prints this checkout's JSON
same_as_host() {
    inside -v "$(dirname "$IMG"):/data:ro" "$1" fracsight predict --json "/data/$(basename "$IMG")" \
        > "$BUILD/$2.json" 2> "$BUILD/$2.stderr" || { cat "$BUILD/$2.stderr"; fail "fracsight predict fails in $2"; }
    "$PY" - "$BUILD/host.json" "$BUILD/$2.json" "$2" <<'EOF'
import json, sys
host, container = (json.load(open(p)) for p in sys.argv[1:3])
assert host == container, f"differs:\nhere:   {host['images'][0]}\ninside: {container['images'][0]}"
image = host["images"][0]
print(f"{image['source']}: {image['decision']}, p={image['fracture_probability']}, region {image['region']}"
      f" - identical JSON here and inside {sys.argv[3]}")
EOF
}
same_as_host "$C" container

step "fracsight serve inside refuses to start without a token (FRACSIGHT_AUTH=required in the image)"
if out=$(inside "$C" fracsight serve --port "$(free_port)" 2>&1); then fail "serve started without a token"; fi
echo "$out" | grep -q "FRACSIGHT_API_TOKENS" || fail "unexpected message: $out"
echo "refused: $(echo "$out" | grep -m1 FRACSIGHT_API_TOKENS)"

step "fracsight serve inside: /healthz open, /v1/predict 401 without a token, 200 with it, under a root path too"
# check_api CONTAINER NAME: `fracsight serve` inside CONTAINER with a token and FRACSIGHT_ROOT_PATH
# (a reverse proxy at /fracsight, docs/deploy.md); log in $BUILD/NAME.log
check_api() {
    local port
    port=$(free_port)
    # the server records its PID, then becomes `timeout` (a bound on its life if this script dies)
    start_inside "$2" --env FRACSIGHT_API_TOKENS="$TOKEN" --env FRACSIGHT_ROOT_PATH=/fracsight "$1" \
        sh -c "echo \$\$ > /run/fracsight-test/$2.pid; exec timeout -k 10 600 \"\$@\"" sh \
        fracsight serve --host 127.0.0.1 --port "$port" --log-level warning
    "$PY" - "http://127.0.0.1:$port" "$TOKEN" "$IMG" "$BUILD/host.json" <<'EOF'
import json, sys, time
import httpx
url, token, image, host_json = sys.argv[1:]
deadline = time.monotonic() + 120
while True:
    try:
        if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
            break
    except httpx.TransportError:
        pass
    assert time.monotonic() < deadline, "the server inside did not answer /healthz within 120 s"
    time.sleep(0.5)
print(f"/healthz without a token: {httpx.get(f'{url}/healthz').json()}")
files = {"files": ("wrist.jpg", open(image, "rb").read(), "image/jpeg")}
r = httpx.post(f"{url}/v1/predict", files=files, timeout=60)
assert r.status_code == 401 and r.json()["error"]["code"] == "missing_token", r.text
print(f"/v1/predict without a token: {r.status_code} {r.json()}")
r = httpx.post(f"{url}/v1/predict", files=files, headers={"Authorization": "Bearer wrong-token-0123456789"}, timeout=60)
assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token", r.text
print(f"/v1/predict with a wrong token: {r.status_code} {r.json()['error']['code']}")
r = httpx.post(f"{url}/v1/predict", files=files, headers={"Authorization": f"Bearer {token}"}, timeout=60)
assert r.status_code == 200, r.text
got = r.json()["images"][0]
want = json.load(open(host_json))["images"][0]
assert got["fracture_probability"] == want["fracture_probability"] and got["region"] == want["region"], (got, want)
print(f"/v1/predict with the token: 200, p={got['fracture_probability']} (as here), {got['decision']}")
r = httpx.get(f"{url}/fracsight/healthz", timeout=10)
assert r.status_code == 200, r.text
r = httpx.post(f"{url}/fracsight/v1/predict", files=files, headers={"Authorization": f"Bearer {token}"}, timeout=60)
assert r.status_code == 200 and r.json()["images"][0]["fracture_probability"] == want["fracture_probability"], r.text
print("FRACSIGHT_ROOT_PATH=/fracsight: /fracsight/healthz 200 without a token, /fracsight/v1/predict 200 with it")
EOF
    inside "$1" python3 -c "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:$port/healthz', timeout=4)" \
        || fail "the health check command fails inside"
    echo "the HEALTHCHECK command succeeds inside"
    stop_inside "$2"
}
check_api "$C" serve

if [ "${WEBAPP:-1}" = 1 ]; then
    step "build the web-app image (--target webapp) and check it serves"
    build "$APP_IMAGE" --target webapp
    A=$(buildah from "$APP_IMAGE")
    CONTAINERS+=("$A")
    APORT=$(free_port)
    start_inside app "$A" \
        sh -c 'echo $$ > /run/fracsight-test/app.pid; exec timeout -k 10 600 "$@"' sh \
        fracsight app --host 127.0.0.1 --port "$APORT"
    for _ in $(seq 1 120); do
        if "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$APORT/_stcore/health', timeout=2)" \
            2>/dev/null; then ok=1; break; fi
        sleep 1
    done
    [ "${ok:-0}" = 1 ] || { tail -20 "$BUILD/app.log"; fail "the web app inside did not answer within 120 s"; }
    echo "web app inside: /_stcore/health ok"
    stop_inside app
fi

if [ "$GPU_VARIANT" = 1 ]; then
    step "GPU variant (ONNXRUNTIME=onnxruntime-gpu) on a base without CUDA: the build refuses by default"
    if bud "$BUILD/build-gpu-required.log" --build-arg ONNXRUNTIME=onnxruntime-gpu -t "$GPU_IMAGE"; then
        fail "the GPU build did not notice that the base has no CUDA libraries"
    fi
    grep -m1 "^onnxruntime-gpu needs CUDA" "$BUILD/build-gpu-required.log" \
        || { tail -20 "$BUILD/build-gpu-required.log"; fail "the GPU build failed for another reason"; }

    step "GPU variant built with CUDA_CHECK=warn: CUDA provider listed, predict falls back to the CPU"
    build "$GPU_IMAGE" --build-arg ONNXRUNTIME=onnxruntime-gpu --build-arg CUDA_CHECK=warn
    grep -m1 "^warning: onnxruntime-gpu needs" "$BUILD/build-${GPU_IMAGE##*/}.log" || fail "no warning in the build"
    G=$(buildah from "$GPU_IMAGE")
    CONTAINERS+=("$G")
    inside "$G" python3 -c '
import importlib.metadata as metadata
import onnxruntime as ort
from onnxruntime.capi.build_and_package_info import cuda_version
from fracsight.inference import resolve_bundle
from fracsight.inference.onnx_model import OnnxModel, execution_providers
names = {d.metadata["Name"] for d in metadata.distributions()}
assert "onnxruntime-gpu" in names and "onnxruntime" not in names, sorted(n for n in names if "onnx" in n)
available = ort.get_available_providers()
assert "CUDAExecutionProvider" in available, available
print(f"onnxruntime-gpu {ort.__version__} (built for CUDA {cuda_version}): available {available}")
print(f"fracsight asks for: {execution_providers()}")
used = OnnxModel(resolve_bundle()).session.get_providers()
assert execution_providers() == used == ["CPUExecutionProvider"], used
print(f"the session runs on: {used} (no CUDA libraries in this image)")
' 2> "$BUILD/gpu-providers.stderr" || { cat "$BUILD/gpu-providers.stderr"; fail "onnxruntime-gpu inside"; }
    same_as_host "$G" gpu-variant
    grep -q "CUDA is unavailable here" "$BUILD/gpu-variant.stderr" \
        || { cat "$BUILD/gpu-variant.stderr"; fail "predict did not check for CUDA first"; }
    ! grep -q "Failed to create CUDAExecutionProvider" "$BUILD/gpu-variant.stderr" \
        || { cat "$BUILD/gpu-variant.stderr"; fail "onnxruntime was asked for a CUDA it cannot load"; }
    echo "predict: $(grep -m1 -o 'CUDA is unavailable here.*' "$BUILD/gpu-variant.stderr")"
    check_api "$G" serve-gpu-variant
    gpu_size=$(podman image inspect "$GPU_IMAGE" --format '{{.Size}}')
fi

mb() { awk -v s="$1" 'BEGIN{printf "%.0f MB", s/1e6}'; }
step "PASS: inference image $(mb "$size")${gpu_size:+, GPU variant $(mb "$gpu_size")} (base $BASE_IMAGE)"
