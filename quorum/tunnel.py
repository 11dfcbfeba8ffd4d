"""Local development behind ngrok: open a tunnel and point the phone number at it."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Optional, Tuple

from config import Config
from quorum import laml
from quorum.gateway import Outcome, SignalWireGateway

log = logging.getLogger("quorum.ngrok")


def open_tunnel(port: int, authtoken: Optional[str]) -> str:
    """Open an https ngrok tunnel to `port` and return its public URL."""
    from pyngrok import conf, ngrok

    if authtoken:
        conf.get_default().auth_token = authtoken
    return ngrok.connect(port, "http", bind_tls=True).public_url


def point_number(gateway: SignalWireGateway, number: str, public_url: str) -> Tuple[bool, str]:
    """Point the number's voice webhook and StatusCallback at Quorum: (done, one line saying what happened)."""
    voice_url, status_url = f"{public_url}/voice/inbound", laml.call_status_url(public_url)
    outcome = gateway.point_number_at(number, voice_url, status_url)
    if outcome is Outcome.OK:
        return True, f"{number} now calls {voice_url}, its status callback {status_url}"
    reason = "is not a number of this project" if outcome is Outcome.GONE else "could not be updated"
    return False, f"{number} {reason}; set its voice webhook to {voice_url} and its status callback to {status_url} yourself"


def expose(config: Config, gateway: SignalWireGateway,
           tunnel: Callable[[int, Optional[str]], str] = open_tunnel) -> Config:
    """Config with PUBLIC_URL set to a fresh tunnel; the phone number, if set, now calls it."""
    public_url = tunnel(config.port, config.ngrok_authtoken).replace("http://", "https://", 1)
    exposed = replace(config, public_url=public_url)
    print(f"quorum: ngrok tunnel {public_url} -> localhost:{config.port}")
    if config.signalwire_phone_number:
        print(f"quorum: {point_number(gateway, config.signalwire_phone_number, exposed.public_url)[1]}")
    return exposed
