# fracsight container images (docs/deploy.md). A decision aid, not a diagnosis.
#
#   inference image (default target): REST API on port 8000, DICOM node, shipped model, no torch
#     docker build -t fracsight .
#   web app (Streamlit on port 8501):   docker build --target webapp -t fracsight-app .
#   GPU (CUDA base + onnxruntime-gpu):  docker build --build-arg BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 \
#                                         --build-arg ONNXRUNTIME=onnxruntime-gpu -t fracsight-gpu .
#     The base's CUDA major must be the one onnxruntime-gpu was built for (1.31.1 on PyPI: CUDA 13,
#     cuDNN 9); the build checks it and fails otherwise (CUDA_CHECK=warn: build anyway, CPU only).
#
# BASE may be any Debian-like image: a python:3.x-slim one, or a plain Debian/Ubuntu one (Python
# then comes from its packages). With wheels in wheelhouse/ (scripts/make_wheelhouse.sh) the build
# installs from them only (--no-index: offline, air-gapped); with none, from the package index.
ARG BASE=python:3.12-slim

FROM ${BASE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN set -eux; \
    if ! command -v python3 >/dev/null || ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi; \
    groupadd --system --gid 10001 fracsight; \
    useradd --system --uid 10001 --gid fracsight --home-dir /var/lib/fracsight --create-home \
        --shell /usr/sbin/nologin fracsight; \
    install -d -o fracsight -g fracsight /var/lib/fracsight/spool /models

FROM runtime AS build
# extras: serve = REST API, dicom = the DICOM node (highdicom, pynetdicom, dicomweb-client)
ARG EXTRAS=serve,dicom
ARG ONNXRUNTIME=onnxruntime
# With onnxruntime-gpu: `required` fails the build when the base lacks the CUDA and cuDNN libraries it
# was built for (it would silently run on the CPU); `warn` only says so (a CPU-only test build).
ARG CUDA_CHECK=required
COPY wheelhouse/ /tmp/wheelhouse/
COPY pyproject.toml README.md LICENSE /tmp/src/
COPY src/ /tmp/src/src/
COPY deploy/source-digest.sh /tmp/source-digest.sh
RUN set -eux; \
    python3 -m venv /opt/fracsight; \
    pip="/opt/fracsight/bin/pip install --no-cache-dir"; \
    if ls /tmp/wheelhouse/fracsight-*.whl >/dev/null 2>&1; then \
        made_from=$(cat /tmp/wheelhouse/fracsight-source.sha256 2>/dev/null || echo unknown); \
        if [ "$made_from" != "$(sh /tmp/source-digest.sh /tmp/src)" ]; then \
            echo "wheelhouse/ holds a fracsight wheel made from other sources than these (an older" \
                "checkout?): the image would hold that code and model; run scripts/make_wheelhouse.sh again" >&2; \
            exit 1; \
        fi; \
        pip="$pip --no-index --find-links /tmp/wheelhouse"; target="fracsight[$EXTRAS]"; \
    else \
        target="/tmp/src[$EXTRAS]"; \
    fi; \
    $pip "$target"; \
    if [ "$ONNXRUNTIME" != "onnxruntime" ]; then \
        /opt/fracsight/bin/pip uninstall -y onnxruntime; $pip "$ONNXRUNTIME"; \
    fi; \
    cuda_ep=$(echo /opt/fracsight/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so); \
    if [ -e "$cuda_ep" ]; then \
        cuda=$(/opt/fracsight/bin/python -c \
            "from onnxruntime.capi.build_and_package_info import cuda_version; print(cuda_version)"); \
        missing=$(ldd "$cuda_ep" | awk '/not found/ && $1 !~ /^libcuda\.so/ {print $1}' | tr '\n' ' '); \
        cudnn=$(ldconfig -p | grep -c 'libcudnn\.so\.9 ' || true); \
        for dir in $(echo "${LD_LIBRARY_PATH:-}" | tr : ' '); do [ ! -e "$dir/libcudnn.so.9" ] || cudnn=1; done; \
        [ "$cudnn" != 0 ] || missing="${missing}libcudnn.so.9 "; \
        if [ -n "$missing" ]; then \
            msg="onnxruntime-gpu needs CUDA $cuda and cuDNN 9 in the base image; missing here: ${missing% }"; \
            if [ "$CUDA_CHECK" != warn ]; then \
                echo "$msg (use a CUDA $cuda cuDNN 9 base, or CUDA_CHECK=warn for a CPU-only build)" >&2; exit 1; \
            fi; \
            echo "warning: $msg: this image runs on the CPU" >&2; \
        fi; \
    fi; \
    if /opt/fracsight/bin/python -c "import torch" 2>/dev/null; then echo "torch in the image" >&2; exit 1; fi; \
    find /opt/fracsight -name __pycache__ -prune -exec rm -rf {} +; \
    /opt/fracsight/bin/python -m compileall -q /opt/fracsight/lib

FROM build AS build-app
# declared again (a stage's ARGs do not carry into the next one): fracsight[app] requires
# onnxruntime, and pip put the CPU wheel back over the GPU one's files, so it is swapped again
ARG ONNXRUNTIME=onnxruntime
RUN set -eux; \
    pip="/opt/fracsight/bin/pip install --no-cache-dir"; \
    if ls /tmp/wheelhouse/fracsight-*.whl >/dev/null 2>&1; then \
        pip="$pip --no-index --find-links /tmp/wheelhouse"; $pip "fracsight[app]"; \
    else \
        $pip "/tmp/src[app]"; \
    fi; \
    if [ "$ONNXRUNTIME" != "onnxruntime" ]; then \
        /opt/fracsight/bin/pip uninstall -y onnxruntime; $pip --force-reinstall --no-deps "$ONNXRUNTIME"; \
    fi; \
    find /opt/fracsight -name __pycache__ -prune -exec rm -rf {} +; \
    /opt/fracsight/bin/python -m compileall -q /opt/fracsight/lib

# ---- the web app: Streamlit, the model in-process; put it behind an authenticating proxy ----------
FROM runtime AS webapp
COPY --from=build-app /opt/fracsight /opt/fracsight
ENV PATH=/opt/fracsight/bin:$PATH HOME=/var/lib/fracsight
USER fracsight
WORKDIR /var/lib/fracsight
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
CMD ["fracsight", "app", "--host", "0.0.0.0", "--port", "8501"]

# ---- the inference image (default): REST API; `fracsight dicom ...` runs the DICOM node -----------
FROM runtime AS inference
COPY --from=build /opt/fracsight /opt/fracsight
# FRACSIGHT_AUTH=required: `fracsight serve` refuses to start without FRACSIGHT_API_TOKENS or
# FRACSIGHT_API_TOKENS_FILE, unless FRACSIGHT_AUTH=proxy says an authenticating proxy is in front.
ENV PATH=/opt/fracsight/bin:$PATH HOME=/var/lib/fracsight FRACSIGHT_AUTH=required
USER fracsight
WORKDIR /var/lib/fracsight
EXPOSE 8000
# the health checks go to loopback past any proxy: Docker hands the host's HTTP_PROXY to containers,
# and a proxy cannot reach this one's 127.0.0.1 (a healthy API was marked unhealthy)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["fracsight", "serve", "--host", "0.0.0.0", "--port", "8000"]
