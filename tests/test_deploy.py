"""The deployment files agree with the code: compose.yaml, deploy/orthanc-pilot.json, the Dockerfile.

The pilot test runs compose's Orthanc configuration on Debian's real Orthanc and compose's node
command as a real `fracsight dicom listen`, both on loopback (ports and folders swapped for the
test's own), and checks a radiograph stored in Orthanc comes back with fracsight's results.
The images themselves are built and run by scripts/test_container.sh (slow, outside pytest).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from fracsight.api.settings import ENV_PREFIX, ApiSettings
from fracsight.cli import app as cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
ORTHANC_CONFIG = ROOT / "deploy" / "orthanc-pilot.json"
PASSWORD = "pilot-test-password-0123"


def _cli_options(*names: str) -> set[str]:
    """The options of the `fracsight NAME...` command (for example "dicom", "listen")."""
    command = typer.main.get_command(cli)
    for name in names:
        command = command.commands[name]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in param.opts}


def _listen_options() -> set[str]:
    return _cli_options("dicom", "listen")


def _dockerfile_stages() -> dict[str, list[str]]:
    """Each stage of the Dockerfile, by name: its CMD as an exec-form list (empty when it has none)."""
    stages: dict[str, list[str]] = {}
    name = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if m := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line):
            name = m.group(1)
            stages[name] = []
        elif line.startswith("CMD "):
            stages[name] = json.loads(line[4:])
    return stages


def _option(command: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in command if a.startswith(f"{name}=")]
    return value


def test_every_model_option_reads_fracsight_model() -> None:
    """docs/deploy.md upgrades the model with FRACSIGHT_MODEL, which compose gives the API and the
    node alike: the node read only --model and stayed on the shipped model."""

    def commands(group: Any, path: tuple[str, ...] = ()) -> Any:
        for name, command in getattr(group, "commands", {}).items():
            yield from commands(command, (*path, name))
            yield (*path, name), command

    with_model = {
        path: param.envvar
        for path, command in commands(typer.main.get_command(cli))
        for param in command.params
        if "--model" in param.opts
    }
    assert ("dicom", "listen") in with_model and ("predict",) in with_model and ("app",) in with_model
    assert {path for path, envvar in with_model.items() if envvar != "FRACSIGHT_MODEL"} == set()
    # and compose gives every fracsight service the one environment the variable is set in: the web
    # app had none, and stayed on the shipped model when the node and the API moved to another
    shared = COMPOSE["x-fracsight"]["environment"]
    for name, service in COMPOSE["services"].items():
        if str(service.get("image", "")).startswith("localhost/fracsight"):
            assert shared.items() <= (service.get("environment") or {}).items(), name


@pytest.mark.fracatlas
def test_fracsight_model_chooses_the_model_of_a_command(fracatlas_dir: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    image = fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg"
    monkeypatch.setenv("FRACSIGHT_MODEL", "fracatlas-lite0-384-v2")
    result = CliRunner().invoke(cli, ["predict", str(image), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"].endswith(" v2")


def test_compose_node_command_uses_only_options_of_the_node() -> None:
    command = COMPOSE["services"]["dicom-node"]["command"]
    assert command[:3] == ["fracsight", "dicom", "listen"]
    used = {a.split("=", 1)[0] for a in command[3:]}
    assert used <= _listen_options(), used - _listen_options()


def test_compose_orthanc_and_node_point_at_each_other() -> None:
    orthanc = json.loads(ORTHANC_CONFIG.read_text())
    node = COMPOSE["services"]["dicom-node"]["command"]
    modality = orthanc["DicomModalities"]["fracsight"]
    ae, host, port = modality["AET"], modality["Host"], modality["Port"]
    assert (ae, host, str(port)) == (_option(node, "--ae-title"), "dicom-node", _option(node, "--port"))
    # whoever calls in as the node's AE title may only store (its results) and echo: in the list
    # form Orthanc let it query and retrieve every study of the archive (C-FIND, C-MOVE, C-GET)
    allowed = {k for k, v in modality.items() if k.startswith("Allow") and v}
    assert allowed == {"AllowEcho", "AllowStore"}, allowed
    assert _option(node, "--to") == f"orthanc:{orthanc['DicomPort']}:{orthanc['DicomAet']}"
    assert _option(node, "--allow") == orthanc["DicomAet"]
    lua = (ROOT / "docs" / "orthanc" / "route-to-fracsight.lua").read_text()
    assert re.search(r'FRACSIGHT = "fracsight"', lua) and f'FRACSIGHT_AET = "{ae}"' in lua
    mounts = dict(
        v.rsplit(":", 2)[:2] for v in COMPOSE["services"]["orthanc"]["volumes"] if v.startswith("./")
    )
    assert mounts["./docs/orthanc/route-to-fracsight.lua"] in orthanc["LuaScripts"]
    spool = _option(node, "--spool")
    assert any(v.endswith(f":{spool}") for v in COMPOSE["services"]["dicom-node"]["volumes"])


def test_compose_api_settings_are_real_settings_and_auth_stays_on() -> None:
    known = {ENV_PREFIX + name.upper() for name in ApiSettings.model_fields}
    env = COMPOSE["services"]["api"]["environment"]
    assert {k for k in env if k.startswith(ENV_PREFIX)} <= known
    assert env["FRACSIGHT_API_TOKENS_FILE"] == "/run/secrets/fracsight_api_tokens"
    assert "FRACSIGHT_AUTH" not in env  # the image's `required` stays in force
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE=python:3.12-slim" in dockerfile and "FRACSIGHT_AUTH=required" in dockerfile
    assert "USER fracsight" in dockerfile and dockerfile.count("HEALTHCHECK") == 2


def test_docs_list_every_api_setting_and_only_real_ones() -> None:
    """docs/deploy.md's configuration list and docs/api.md's table name every setting of the API
    (FRACSIGHT_ROOT_PATH was missing: a proxy at a sub-path had nothing to set), and the API
    variables they name are settings."""
    names = {ENV_PREFIX + name.upper() for name in ApiSettings.model_fields}
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    configuration = deploy.split("### Configuration", 1)[1].split("\n#", 1)[0]
    rows = (ROOT / "docs" / "api.md").read_text().splitlines()
    table = {
        n for row in rows if row.startswith("| ") for n in re.findall(r"FRACSIGHT_[A-Z_]+", row.split("|")[2])
    }
    assert names <= set(re.findall(r"FRACSIGHT_[A-Z_]+", configuration)), configuration
    assert names <= table
    # names the docs give as those warned of (a misspelling, the usual names of a token)
    warned = {"FRACSIGHT_API_TOKEN", "FRACSIGHT_API_KEY", "FRACSIGHT_AUTH_TOKEN", "FRACSIGHT_BEARER_TOKENS"}
    documented = set(re.findall(r"FRACSIGHT_[A-Z_]+", deploy)) - warned
    assert {n for n in documented if "DICOMWEB" not in n} <= names  # the DICOM node's are docs/dicom.md's


def test_each_image_command_uses_only_options_of_fracsight() -> None:
    commands = {stage: cmd for stage, cmd in _dockerfile_stages().items() if cmd}
    assert set(commands) == {"inference", "webapp"}, commands
    for cmd in commands.values():
        assert cmd[0] == "fracsight", cmd
        options = _cli_options(cmd[1])
        used = {a for a in cmd[2:] if a.startswith("-")}
        assert used <= options, (cmd, used - options)


def test_compose_builds_existing_stages_and_names_what_it_declares() -> None:
    stages = _dockerfile_stages()
    services = COMPOSE["services"]
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["context"] == "." and service["build"]["target"] in stages, name
        assert set(service.get("depends_on", [])) <= set(services), name
        for secret in service.get("secrets", []):
            assert secret in COMPOSE["secrets"], (name, secret)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith(("./", "/")):
                assert source in COMPOSE["volumes"], (name, volume)
            else:
                assert (ROOT / source).exists() or source.startswith("/"), (name, volume)
    api = services["api"]
    (secret,) = api["secrets"]
    assert api["environment"]["FRACSIGHT_API_TOKENS_FILE"] == f"/run/secrets/{secret}"
    node = services["dicom-node"]
    assert f"127.0.0.1:{_option(node['command'], '--metrics-port')}/healthz" in " ".join(
        node["healthcheck"]["test"]
    )


def _health_checks() -> list[str]:
    """The Python source of every health check: the Dockerfile's HEALTHCHECKs and compose's."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = [json.loads(cmd)[-1] for cmd in re.findall(r"^\s+CMD (\[.*\])$", dockerfile, re.M)]
    sources += [s["healthcheck"]["test"][-1] for s in COMPOSE["services"].values() if "healthcheck" in s]
    return [s for s in sources if "127.0.0.1" in s]


def test_health_checks_reach_loopback_past_a_proxy_docker_hands_the_container() -> None:
    """Docker passes the host's HTTP_PROXY into containers (~/.docker/config.json), and urllib
    sent the check of 127.0.0.1 to that proxy, which cannot reach it: a healthy API was unhealthy."""
    import http.server
    import threading

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    checks = _health_checks()
    assert len(checks) == 3, checks  # the web app's, the API's, the DICOM node's
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dead = "http://127.0.0.1:9"  # the discard port: nothing answers there
    env = {**os.environ, "HTTP_PROXY": dead, "http_proxy": dead, "NO_PROXY": "", "no_proxy": ""}
    try:
        for check in checks:
            here = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{server.server_port}", check)
            done = subprocess.run([sys.executable, "-c", here], env=env, capture_output=True, timeout=30)
            assert done.returncode == 0, (check, done.stderr.decode()[-300:])
    finally:
        server.shutdown()
        server.server_close()


# ---- the pilot on loopback: Orthanc from deploy/orthanc-pilot.json, the node from compose.yaml ----
def _pilot_orthanc_config(root: Path, http_port: int, dicom_port: int, node_port: int) -> dict[str, Any]:
    config = json.loads(ORTHANC_CONFIG.read_text())
    mounts = {
        target: str(ROOT / source)
        for source, target, *_ in (v.split(":") for v in COMPOSE["services"]["orthanc"]["volumes"])
        if source.startswith("./")
    }
    node = {**config["DicomModalities"]["fracsight"], "Host": "127.0.0.1", "Port": node_port}
    config.update(
        StorageDirectory=str(root / "db"),
        IndexDirectory=str(root / "db"),
        HttpPort=http_port,
        DicomPort=dicom_port,
        RemoteAccessAllowed=False,  # the test's Orthanc answers this computer only
        DicomModalities={"fracsight": node},
        LuaScripts=[mounts[p] for p in config["LuaScripts"]],
    )
    return config


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s")


@pytest.mark.slow
def test_pilot_orthanc_routes_a_radiograph_to_the_node_and_gets_results(
    tmp_path: Path, fracatlas_dir: Path
) -> None:
    support = pytest.importorskip("dicom_support")
    requests = pytest.importorskip("requests")
    if not support.orthanc_available():
        pytest.skip("Debian's orthanc is not installed")
    http_port, dicom_port, node_port, metrics_port = (support.free_port() for _ in range(4))
    config = tmp_path / "orthanc.json"
    config.write_text(json.dumps(_pilot_orthanc_config(tmp_path, http_port, dicom_port, node_port)))
    command = COMPOSE["services"]["dicom-node"]["command"]
    swapped = {
        "--spool": str(tmp_path / "spool"),
        "--to": f"127.0.0.1:{dicom_port}:{_option(command, '--to').rsplit(':', 1)[1]}",
        "--port": str(node_port),
        "--metrics-port": str(metrics_port),
    }
    args = [
        a if a.split("=", 1)[0] not in swapped else f"{a.split('=')[0]}={swapped[a.split('=')[0]]}"
        for a in command
    ]
    args += ["--host=127.0.0.1", "--quiet-time=2", "--max-backoff=1"]
    url, auth = f"http://127.0.0.1:{http_port}", ("pilot", PASSWORD)
    env = {**os.environ, "ORTHANC_PILOT_PASSWORD": PASSWORD}
    logs = [open(tmp_path / name, "wb") for name in ("orthanc.log", "node.log")]  # noqa: SIM115
    orthanc = subprocess.Popen(
        [support.ORTHANC_BIN, str(config)], stdout=logs[0], stderr=subprocess.STDOUT, env=env
    )
    entry = [sys.executable, "-c", "from fracsight.cli import main; main()"]
    node = subprocess.Popen([*entry, *args[1:]], stdout=logs[1], stderr=subprocess.STDOUT)
    try:

        def up(u: str, **kw: Any) -> bool:
            try:
                return requests.get(u, timeout=2, **kw).ok
            except requests.RequestException:
                return False

        _wait(lambda: up(f"{url}/system", auth=auth), 60, "Orthanc did not start")
        _wait(lambda: up(f"http://127.0.0.1:{metrics_port}/healthz"), 90, "the node did not start")
        _wait(lambda: support.listening(node_port), 90, "the node did not listen")  # its SCP comes last
        assert requests.get(f"{url}/system", timeout=5).status_code == 401  # the pilot's user only
        assert "fracsight" in requests.get(f"{url}/modalities", auth=auth, timeout=5).json()

        image = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
        dicom = support.make_radiograph_dicom(image, tmp_path / "cr.dcm", modality="CR")
        stored = requests.post(f"{url}/instances", data=dicom.read_bytes(), auth=auth, timeout=30)
        assert stored.ok, stored.text

        def results() -> list[str]:
            modalities = [
                requests.get(f"{url}/instances/{i}/simplified-tags", auth=auth, timeout=5)
                .json()
                .get("Modality")
                for i in requests.get(f"{url}/instances", auth=auth, timeout=5).json()
            ]
            return sorted(modalities) if "SR" in modalities else []

        got = _wait(results, 120, "no fracsight SR came back to Orthanc")
        assert got.count("CR") == 1, got  # the results are not routed back to the node
        if shutil.which("findscu"):  # calling in as the node gets no patient list
            ae = _option(command, "--ae-title")
            query = ["findscu", "-aet", ae, "-aec", "ORTHANC", "-S", "-k", "QueryRetrieveLevel=STUDY"]
            query += ["-k", "PatientName", "-k", "StudyInstanceUID", "127.0.0.1", str(dicom_port)]
            found = subprocess.run(query, capture_output=True, text=True, timeout=60)
            said = found.stdout + found.stderr
            # Orthanc answers a refused query with a failure status, or (some builds, seen in
            # CI) aborts the association; either way no study comes back.
            refused = "Find Failed" in said or "Association Aborted" in said
            assert "Find Response" not in said and refused, said
    finally:
        for process in (node, orthanc):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def test_the_source_digest_is_of_what_the_wheel_is_built_from(tmp_path: Path) -> None:
    """A wheelhouse made before a `git pull` built an image of the older code and model without a word:
    make_wheelhouse.sh records this digest and the Dockerfile refuses a wheelhouse of other sources.
    The digest must read the build context (no byte code, no egg-info) as the checkout."""
    import shutil

    script = ROOT / "deploy" / "source-digest.sh"
    here = subprocess.run(["sh", str(script), str(ROOT)], capture_output=True, text=True, check=True).stdout
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(ROOT / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (context / "src" / "stray.egg-info").mkdir()
    (context / "src" / "stray.egg-info" / "PKG-INFO").write_text("x")
    digest = subprocess.run(
        ["sh", str(script), str(context)], capture_output=True, text=True, check=True
    ).stdout
    assert digest == here and re.fullmatch(r"[0-9a-f]{64}\n", digest)
    (context / "src" / "fracsight" / "__init__.py").write_text("# changed\n", encoding="utf-8")
    changed = subprocess.run(["sh", str(script), str(context)], capture_output=True, text=True, check=True)
    assert changed.stdout != here
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "sh /tmp/source-digest.sh /tmp/src" in dockerfile and "fracsight-source.sha256" in dockerfile
    assert "deploy/source-digest.sh" in (ROOT / "scripts" / "make_wheelhouse.sh").read_text()
    assert "!deploy/source-digest.sh" in (ROOT / ".dockerignore").read_text().splitlines()


def test_every_stage_that_installs_fracsight_keeps_the_onnxruntime_asked_for() -> None:
    """`--build-arg ONNXRUNTIME=onnxruntime-gpu --target webapp`: build-app's `pip install
    fracsight[app]` put the CPU onnxruntime back over the GPU one's files (fracsight requires it),
    and its CUDA provider was gone without a word; a stage's ARGs do not carry into the next."""
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    installing = [s for s in stages if re.search(r'\$pip[^;]*"[^"]*fracsight[^"]*\[', s)]
    assert len(installing) == 2, [s.split("\n", 1)[0] for s in installing]
    for stage in installing:
        name = stage.split("\n", 1)[0]
        assert "ARG ONNXRUNTIME=onnxruntime" in stage, name
        swap = stage.index("uninstall -y onnxruntime")
        assert swap > max(m.end() for m in re.finditer(r"fracsight\[|/tmp/src\[", stage)), name
