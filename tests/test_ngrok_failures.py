"""USE_NGROK=true that cannot open a tunnel stops start-up with one line saying what failed and what to do."""

import signal
import stat

import pytest
from pyngrok import conf, installer
from pyngrok.conf import PyngrokConfig

import app
from config import ConfigError
from support import PROJECT, free_port, make_config

SETTINGS = {
    "SIGNALWIRE_PROJECT_ID": PROJECT,
    "SIGNALWIRE_API_TOKEN": "PTtoken",
    "SIGNALWIRE_SPACE_URL": "example.signalwire.com",
    "SIGNALWIRE_SIGNING_KEY": "PSK",
    "USE_NGROK": "true",
    "NGROK_AUTHTOKEN": "ngrok-token",
    "SIGNALWIRE_PHONE_NUMBER": "",
    "PUBLIC_URL": "",
    "REDIS_URL": "",
}


@pytest.fixture
def no_ngrok(monkeypatch, tmp_path):
    """No ngrok on PATH, pyngrok's own copy not downloaded yet (it would go to tmp_path), and its download
    unreachable; the settings of `make dev` with USE_NGROK=true, NGROK_PATH as the test sets it."""
    monkeypatch.setattr(
        installer, "PLATFORMS", {name: f"http://127.0.0.1:{free_port()}/ngrok.tgz" for name in installer.PLATFORMS}
    )
    monkeypatch.setattr(
        conf,
        "_default_pyngrok_config",
        PyngrokConfig(
            ngrok_path=str(tmp_path / "pyngrok" / "ngrok"),
            config_path=str(tmp_path / "pyngrok" / "ngrok.yml"),
            startup_timeout=5,
        ),
    )
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    monkeypatch.delenv("NGROK_PATH", raising=False)
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)  # main() must not keep the test's SIGTERM
    return monkeypatch


def start_up_error(capsys) -> str:
    """Run `python app.py`'s main in this process; it must exit 2 with one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exited:
        app.main()
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_ngrok_that_cannot_be_downloaded_is_one_line(no_ngrok, capsys):
    line = start_up_error(capsys)
    assert line.startswith("quorum: ngrok tunnel not opened: downloading the ngrok binary failed")
    assert "downloaded on first use" in line and "NGROK_PATH" in line and "PUBLIC_URL" in line


def test_an_ngrok_that_does_not_start_is_one_line(no_ngrok, capsys, tmp_path):
    broken = tmp_path / "ngrok"
    broken.write_text("#!/bin/sh\necho 't=2026-12-04 lvl=eror msg=\"failed to reach the ngrok service\"'\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    no_ngrok.setenv("NGROK_PATH", str(broken))
    line = start_up_error(capsys)
    assert line.startswith("quorum: ngrok tunnel not opened: ngrok did not start")
    assert "failed to reach the ngrok service" in line  # ngrok's own last word
    assert "NGROK_AUTHTOKEN" in line and "PUBLIC_URL" in line


def test_an_ngrok_path_that_is_not_an_executable_is_refused(tmp_path):
    with pytest.raises(ConfigError) as refused:
        make_config(use_ngrok=True, public_url="", ngrok_path=str(tmp_path / "missing"))
    assert refused.value.setting == "NGROK_PATH"
