"""The OpenAPI description matches the app: every route is in it, and schemathesis (from PyPI) finds no failure.

schemathesis runs against a real server on loopback (the emulator behind it), with the API token; its hooks
(schemathesis_hooks.py) sign the /voice/* requests that carry the signature header, so it reaches the webhooks'
own checks, and leave unsigned those it sends without one.
"""

import os
import subprocess
import sys
from pathlib import Path

from e2e_support import quorum_stack

TOKEN = "openapi-test-token"
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
DOCUMENTED_PREFIXES = ("/voice/", "/api/", "/live.json", "/healthz", "/metrics")


def _flask_paths(app) -> set:
    """The app's routes under the documented prefixes, in OpenAPI's `{name}` spelling."""
    paths = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<", "{").replace(">", "}")
        if path.startswith(DOCUMENTED_PREFIXES):
            paths.add(path)
    return paths


def test_every_api_and_webhook_route_is_described(client):
    document = client.get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    assert _flask_paths(client.application) == set(document["paths"])


def test_schemathesis_finds_no_failure_against_the_running_app():
    with quorum_stack(api_token=TOKEN) as stack:
        url = f"{stack.config.public_url}/api/openapi.json"
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
            "PYTHONPATH": str(Path(__file__).parent),
            "QUORUM_PUBLIC_URL": stack.config.public_url,
            "QUORUM_SIGNING_KEY": stack.config.signalwire_signing_key,
        }
        result = subprocess.run(
            [
                SCHEMATHESIS,
                "run",
                url,
                "--checks",
                "all",
                "--max-examples",
                "25",
                "--seed",
                "20261204",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--request-timeout",
                "10",
                "--no-color",
                "--warnings",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    print(result.stdout[-6000:], result.stderr[-2000:])
    assert result.returncode == 0, result.stdout[-6000:]
