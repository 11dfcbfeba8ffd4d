"""Start-up tells the truth: an unusable archive is refused in one line, a fresh one starts quietly, /healthz
reports the archive's state."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app, services, shutdown
from config import ConfigError
from support import make_config

ROOT = Path(__file__).resolve().parents[1]


def test_a_recordings_dir_under_a_plain_file_is_refused_naming_the_setting(tmp_path):
    (tmp_path / "plain").write_text("not a directory")
    with pytest.raises(ConfigError) as refused:
        create_app(make_config(recordings_dir=str(tmp_path / "plain" / "recordings")))
    assert refused.value.setting == "RECORDINGS_DIR"


def unwritable_archive_env(tmp_path) -> dict:
    """This process's environment with valid settings but RECORDINGS_DIR under a plain file."""
    (tmp_path / "plain").write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALWIRE_", "PUBLIC_URL", "REDIS"))}
    env.update(
        SIGNALWIRE_PROJECT_ID="p",
        SIGNALWIRE_API_TOKEN="t",
        SIGNALWIRE_SPACE_URL="x.signalwire.com",
        SIGNALWIRE_SIGNING_KEY="k",
        PUBLIC_URL="https://quorum.example.com",
        RECORDINGS_DIR=str(tmp_path / "plain" / "recordings"),
    )
    return env


def test_python_app_py_says_it_in_one_line(tmp_path):
    env = unwritable_archive_env(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quorum: configuration error: RECORDINGS_DIR: "), lines


def test_check_config_refuses_it_too(tmp_path):
    env = unwritable_archive_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", "import app; app.cli(['check-config'])"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "RECORDINGS_DIR" in result.stderr


def test_a_fresh_recordings_dir_starts_without_a_warning(tmp_path, caplog, signalwire):
    caplog.set_level(logging.INFO)
    app = create_app(make_config(recordings_dir=str(tmp_path / "new" / "recordings")))
    try:
        assert services(app).archive.wait_synced(10)
        assert app.test_client().get("/history", headers={"Authorization": "Bearer x"}).status_code in (503, 200)
        assert services(app).archive.wait_synced(10)
    finally:
        shutdown(app)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_healthz_reports_the_archive(tmp_path, signalwire):
    root = tmp_path / "recordings"
    app = create_app(make_config(recordings_dir=str(root)))
    try:
        healthy = app.test_client().get("/healthz")
        assert healthy.status_code == 200 and healthy.get_json()["archive"] == "ok"
        assert services(app).archive.wait_synced(10)  # the index's first sync writes into the directory
        shutil.rmtree(root)
        root.write_text("the disk was swapped for a file")
        broken = app.test_client().get("/healthz")
        assert broken.status_code == 503
        assert broken.get_json()["archive"] == "unwritable" and broken.get_json()["status"] == "degraded"
    finally:
        shutdown(app)
