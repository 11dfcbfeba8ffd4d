"""Quorum: record SignalWire conferences only while a quorum is on the line.

`create_app(config)` is the factory (`gunicorn 'app:create_app()'`); `python app.py`
serves on PORT, optionally behind an ngrok tunnel.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

from flask import Flask, jsonify

import webhooks
from command_queue import CommandQueue
from config import Config, ConfigError
from controller import RecordingController, Sweeper
from recording_state import MemoryStore, StateStore
from signalwire_gateway import SignalWireGateway, build_client

log = logging.getLogger("quorum")


def create_app(config: Optional[Config] = None, *, client=None, store: Optional[StateStore] = None) -> Flask:
    """Build the app; `client` (the SignalWire SDK client) and `store` default from `config`."""
    if config is None:
        config = _config_or_exit()
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not config.validate_signatures:
        log.warning("VALIDATE_SIGNATURES=false: anyone who can reach this server can forge callbacks. "
                    "Use this only for local experiments.")
    store = store if store is not None else MemoryStore()
    gateway = SignalWireGateway(client if client is not None else build_client(config), config.pause_behavior)
    # The lock outlives one REST call and its timeout, so two processes never command one room at once.
    commands = CommandQueue(store, gateway, config.min_participants, lock_ttl_s=3 * config.signalwire_timeout_s + 5)
    controller = RecordingController(store, commands, config.min_participants, config.end_grace_s)
    sweeper = Sweeper(controller, interval=max(0.05, min(30.0, config.end_grace_s / 2)))
    sweeper.start()

    app = Flask(__name__)
    app.config["QUORUM"] = config
    app.extensions["quorum"] = controller
    app.extensions["quorum.commands"] = commands
    app.extensions["quorum.store"] = store
    app.extensions["quorum.gateway"] = gateway
    app.extensions["quorum.sweeper"] = sweeper
    app.register_blueprint(webhooks.bp)

    @app.get("/healthz")
    def healthz():
        """Liveness and a glance at load: store reachable, commands queued, live rooms."""
        ok = store.ping()
        body = {"status": "ok" if ok else "degraded", "store": "ok" if ok else "unreachable",
                "queue_depth": commands.depth(), "conferences": len(store.rooms())}
        return jsonify(body), 200 if ok else 503

    return app


def shutdown(app: Flask) -> None:
    """Stop the app's background threads after the commands under way finish."""
    app.extensions["quorum.sweeper"].stop()
    app.extensions["quorum.commands"].shutdown()


def _config_or_exit() -> Config:
    """Read the settings, or stop with one line naming the bad one."""
    try:
        return Config.from_env()
    except ConfigError as error:
        print(f"quorum: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Serve on PORT; with USE_NGROK, open a tunnel and point the phone number at it."""
    config = _config_or_exit()
    client = build_client(config)
    if config.use_ngrok:
        import ngrok_tunnel

        config = ngrok_tunnel.expose(config, SignalWireGateway(client, config.pause_behavior))
    app = create_app(config, client=client)
    log.info("voice webhook: %s/voice/inbound", config.public_url)
    app.run(host="0.0.0.0", port=config.port, threaded=True)


if __name__ == "__main__":
    main()
