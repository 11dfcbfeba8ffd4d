"""Local development behind ngrok: open a tunnel and point the phone number at it."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from functools import partial
from typing import Callable, Optional, Tuple, cast

from config import Config
from quorum import laml
from quorum.gateway import Outcome, SignalWireGateway

log = logging.getLogger("quorum.ngrok")
# pyngrok logs ngrok's own lines: into Quorum's log once it is set up, never as extra lines on stderr before.
logging.getLogger("pyngrok").addHandler(logging.NullHandler())

OR_PUBLIC_URL = "or set USE_NGROK=false and PUBLIC_URL to a URL that reaches this port"


class TunnelFailed(Exception):
    """No tunnel: the message says in one line what failed and what to do."""


def open_tunnel(port: int, authtoken: Optional[str], ngrok_path: Optional[str] = None) -> str:
    """Open an https ngrok tunnel to `port` and return its public URL; TunnelFailed if it cannot.

    ngrok runs from NGROK_PATH, else from PATH, else pyngrok downloads its own copy on first use."""
    from pyngrok import conf, ngrok
    from pyngrok.exception import PyngrokError, PyngrokNgrokInstallError

    settings = conf.get_default()
    if authtoken:
        settings.auth_token = authtoken
    binary = ngrok_path or shutil.which("ngrok")
    if binary:
        settings.ngrok_path = binary
    try:
        # pyngrok types addr as a string (it takes str() of it) and public_url as Optional: a tunnel that connect()
        # returned has started, and so has its URL.
        return cast(str, ngrok.connect(str(port), "http", bind_tls=True).public_url)
    except PyngrokNgrokInstallError as error:
        raise TunnelFailed(
            f"downloading the ngrok binary failed ({_one_line(error)}); it is downloaded on first "
            f"use: install ngrok on PATH or set NGROK_PATH to it, {OR_PUBLIC_URL}"
        ) from None
    except (PyngrokError, OSError) as error:
        raise TunnelFailed(
            f"ngrok did not start ({_said(error)}) from {settings.ngrok_path}: check "
            f"NGROK_AUTHTOKEN and that ngrok can reach its service, {OR_PUBLIC_URL}"
        ) from None


def _one_line(error: object) -> str:
    """An error's message on one line, bounded."""
    return " ".join(str(error).split())[:300] or type(error).__name__


def _said(error: Exception) -> str:
    """Why ngrok did not start: pyngrok's message, with ngrok's last log line when pyngrok names no cause."""
    logs = [line.msg for line in getattr(error, "ngrok_logs", ()) if getattr(line, "msg", None)]
    if getattr(error, "ngrok_error", None) or not logs:
        return _one_line(error)
    return _one_line(f"{error} ngrok said: {logs[-1]}")


def point_number(gateway: SignalWireGateway, number: str, public_url: str) -> Tuple[bool, str]:
    """Point the number's voice webhook and StatusCallback at Quorum: (done, one line saying what happened)."""
    voice_url, status_url = f"{public_url}/voice/inbound", laml.call_status_url(public_url)
    outcome = gateway.point_number_at(number, voice_url, status_url)
    if outcome is Outcome.OK:
        return True, f"{number} now calls {voice_url}, its status callback {status_url}"
    reason = "is not a number of this project" if outcome is Outcome.GONE else "could not be updated"
    return (
        False,
        f"{number} {reason}; set its voice webhook to {voice_url} and its status callback to {status_url} yourself",
    )


def expose(
    config: Config, gateway: SignalWireGateway, tunnel: Optional[Callable[[int, Optional[str]], str]] = None
) -> Config:
    """Config with PUBLIC_URL set to a fresh tunnel (`tunnel`: open_tunnel with NGROK_PATH); the phone number, if
    set, now calls it. TunnelFailed if no tunnel opens."""
    tunnel = tunnel or partial(open_tunnel, ngrok_path=config.ngrok_path)
    public_url = tunnel(config.port, config.ngrok_authtoken).replace("http://", "https://", 1)
    exposed = replace(config, public_url=public_url)
    print(f"quorum: ngrok tunnel {public_url} -> localhost:{config.port}")
    if config.signalwire_phone_number:
        print(f"quorum: {point_number(gateway, config.signalwire_phone_number, exposed.public_url)[1]}")
    return exposed
