"""The production image's steps, run without a container engine (none runs on this machine or in CI).

The Dockerfile is read, not copied: its build stage's COPY sources go into an empty build directory (a file
the image needs but the Dockerfile forgets fails here too), its RUN line runs there with the image's venv
path moved into a temporary directory, and the image's CMD starts as an unprivileged user with the image's
ENV; its HEALTHCHECK command must then succeed. compose.yaml is checked against the files it names.
"""

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from support import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV = "/opt/quorum"
# The image's interpreter lives outside any home directory; pyenv's, under /root, is not for the unprivileged user.
SYSTEM_PYTHON = "/usr/bin/python3.11"


def instructions(text: str) -> list:
    """(instruction, arguments) of each line of a Dockerfile, continuation lines joined, comments dropped."""
    joined = text.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def stages(steps: list) -> list:
    """The steps of each FROM stage, in order."""
    found = []
    for instruction, arguments in steps:
        if instruction == "FROM":
            found.append([])
        found[-1].append((instruction, arguments))
    return found


def exec_form(arguments: str) -> list:
    """A JSON (exec form) or shell-form argument list."""
    return json.loads(arguments) if arguments.startswith("[") else ["/bin/sh", "-c", arguments]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The build stage run for real: (its venv, the final stage's steps)."""
    build, final = stages(instructions((ROOT / "Dockerfile").read_text()))
    scratch = Path(tempfile.mkdtemp(prefix="quorum-image-"))
    scratch.chmod(0o755)  # the unprivileged user must read the venv, as in the image
    context, venv = scratch / "src", scratch / "venv"
    context.mkdir()
    for instruction, arguments in build:
        if instruction == "COPY":
            *sources, target = shlex.split(arguments)
            for source in sources:
                origin, into = ROOT / source, context / target if target.endswith("/") else context / target
                if origin.is_dir():
                    shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    into.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, into / origin.name)
        elif instruction == "RUN":
            command = arguments.replace(VENV, str(venv)).replace("python -m venv", f"{SYSTEM_PYTHON} -m venv")
            subprocess.run(["/bin/sh", "-c", command], cwd=context, check=True, timeout=900, stdout=subprocess.DEVNULL)
    yield venv, final
    shutil.rmtree(scratch, ignore_errors=True)


def test_the_image_serves_as_a_non_root_user_and_passes_its_health_check(image, tmp_path):
    venv, final = image
    steps = dict(final)  # one of each in the final stage
    assert steps["USER"] == "quorum" and "useradd" in steps["RUN"]
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin"}
    for pair in shlex.split(steps["ENV"].replace(VENV, str(venv))):
        name, value = pair.split("=", 1)
        env[name] = value.replace("$PATH", "/usr/bin:/bin")
    home = Path(tempfile.mkdtemp(prefix="quorum-home-"))
    port = free_port()
    env.update(
        PORT=str(port),
        RECORDINGS_DIR=str(home / "recordings"),
        SIGNALWIRE_PROJECT_ID="p",
        SIGNALWIRE_API_TOKEN="t",
        SIGNALWIRE_SPACE_URL="example.signalwire.com",
        SIGNALWIRE_SIGNING_KEY="k",
        PUBLIC_URL="https://quorum.example.com",
    )
    # As in the image: not root (CI runs as root, so the server drops to nobody, who owns only its home).
    as_user = {"user": "nobody", "group": "nogroup"} if os.geteuid() == 0 else {}
    if as_user:
        shutil.chown(home, "nobody")
    server = subprocess.Popen(
        exec_form(steps["CMD"]),
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **as_user,
    )
    try:
        check = exec_form(steps["HEALTHCHECK"].split("CMD", 1)[1].strip())
        deadline = time.monotonic() + 60
        while subprocess.run(check, env=env, capture_output=True, **as_user).returncode != 0:
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)


def test_compose_runs_quorum_behind_nginx_with_redis_that_persists():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"quorum", "redis", "nginx"}
    assert services["quorum"]["build"] == "." and "redis" in services["quorum"]["environment"]["REDIS_URL"]
    assert "--appendonly" in " ".join(services["redis"]["command"])
    mounted = [volume.split(":")[0] for volume in services["nginx"]["volumes"]]
    assert mounted == ["./deploy/nginx.conf"] and (ROOT / mounted[0]).is_file()
    # nginx in Quorum's network namespace: the shipped config's upstream (127.0.0.1:PORT) is Quorum, and the
    # only port published is nginx's.
    assert services["nginx"]["network_mode"] == "service:quorum"
    assert "server 127.0.0.1:5000;" in (ROOT / "deploy" / "nginx.conf").read_text()
    assert services["quorum"]["environment"]["PORT"] == "5000" and services["quorum"]["ports"] == ["8080:80"]
