"""Quorum: record SignalWire conferences only while a quorum is on the line.

`create_app(config)` is the factory (`gunicorn 'app:create_app()'`); `python app.py`
serves on PORT, optionally behind an ngrok tunnel.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

import redis
from flask import Flask, jsonify

import webhooks
from command_queue import CommandQueue
from config import Config, ConfigError
from controller import Housekeeper, RecordingController
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
    store = store if store is not None else build_store(config)
    gateway = SignalWireGateway(client if client is not None else build_client(config), config.pause_behavior)
    # The lock outlives one REST call and its timeout, so two processes never command one room at once.
    commands = CommandQueue(store, gateway, config.min_participants, lock_ttl_s=3 * config.signalwire_timeout_s + 5)
    controller = RecordingController(store, commands, config.min_participants, config.end_grace_s,
                                     config.reconcile_interval_s)
    housekeeper = Housekeeper(controller, sweep_s=max(0.05, min(30.0, config.end_grace_s / 2)),
                              reconcile_s=config.reconcile_interval_s)
    housekeeper.start()

    app = Flask(__name__)
    app.config["QUORUM"] = config
    app.extensions["quorum"] = controller
    app.extensions["quorum.commands"] = commands
    app.extensions["quorum.store"] = store
    app.extensions["quorum.gateway"] = gateway
    app.extensions["quorum.housekeeper"] = housekeeper
    app.register_blueprint(webhooks.bp)
    app.register_error_handler(redis.RedisError, _store_unavailable)

    @app.get("/healthz")
    def healthz():
        """Liveness and a glance at load: store reachable, commands queued, live rooms."""
        if not store.ping():
            return jsonify(status="degraded", store="unreachable", queue_depth=commands.depth()), 503
        return jsonify(status="ok", store="ok", queue_depth=commands.depth(), conferences=len(store.rooms()))

    return app


def build_store(config: Config) -> StateStore:
    """Redis when REDIS_URL is set (several workers or hosts), else this process's memory."""
    if config.redis_url:
        from redis_store import RedisStore

        return RedisStore.from_url(config.redis_url, config.redis_namespace, config.end_grace_s)
    return MemoryStore()


def _store_unavailable(error: Exception):
    """Redis is down: answer 503 so SignalWire retries, without a traceback per request."""
    log.error("state store unavailable: %s", type(error).__name__)
    return jsonify(error="state store unavailable"), 503


def shutdown(app: Flask) -> None:
    """Stop the app's background threads after the commands under way finish."""
    app.extensions["quorum.housekeeper"].stop()
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
