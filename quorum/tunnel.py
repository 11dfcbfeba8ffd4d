"""Local development behind ngrok: open a tunnel and point the phone number at it."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable, Optional

from config import Config
from quorum.gateway import Outcome, SignalWireGateway

log = logging.getLogger("quorum.ngrok")


def open_tunnel(port: int, authtoken: Optional[str]) -> str:
    """Open an https ngrok tunnel to `port` and return its public URL."""
    from pyngrok import conf, ngrok

    if authtoken:
        conf.get_default().auth_token = authtoken
    return ngrok.connect(port, "http", bind_tls=True).public_url


def expose(config: Config, gateway: SignalWireGateway,
           tunnel: Callable[[int, Optional[str]], str] = open_tunnel) -> Config:
    """Config with PUBLIC_URL set to a fresh tunnel; the phone number, if set, now calls it."""
    public_url = tunnel(config.port, config.ngrok_authtoken).replace("http://", "https://", 1)
    exposed = replace(config, public_url=public_url)
    print(f"quorum: ngrok tunnel {public_url} -> localhost:{config.port}")
    if config.signalwire_phone_number:
        voice_url = f"{exposed.public_url}/voice/inbound"
        outcome = gateway.point_number_at(config.signalwire_phone_number, voice_url)
        if outcome is Outcome.OK:
            print(f"quorum: {config.signalwire_phone_number} now calls {voice_url}")
        else:
            reason = "is not a number of this project" if outcome is Outcome.GONE else "could not be updated"
            print(f"quorum: {config.signalwire_phone_number} {reason}; set its voice webhook to {voice_url} yourself")
    return exposed
