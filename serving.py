"""Gunicorn settings for Quorum: `quorum run`, or gunicorn.conf.py in a checkout, loads them.

gunicorn 'app:create_app()'                       # one worker, memory store
WEB_CONCURRENCY=4 REDIS_URL=redis://... gunicorn 'app:create_app()'
"""

import os

from dotenv import load_dotenv
from gunicorn.glogging import Logger

from console.request_logs import redact

load_dotenv()

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Threads, not processes, give concurrency within a worker: handlers wait on Redis, not the CPU.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# SignalWire gives up on a callback after 5 s; a request still running at 30 s is stuck.
timeout = 30
graceful_timeout = 20
# LOG_LEVEL governs gunicorn's own log and its access log (written only with --access-logfile).
loglevel = os.environ.get("LOG_LEVEL", "INFO").strip().lower() or "info"


class QuorumLogger(Logger):
    """gunicorn's logger, with the access log at LOG_LEVEL, the dashboard's `?token=` blanked and a searched
    `?caller=` masked (unless LOG_CALLER_NUMBERS=full)."""

    def setup(self, cfg):
        """gunicorn's set-up, then our level and filters (setup runs again on reload: each filter once)."""
        super().setup(cfg)
        self.access_log.setLevel(self.error_log.level)
        redact(self.access_log, os.environ.get("LOG_CALLER_NUMBERS", "masked").strip())


logger_class = QuorumLogger


def on_starting(server):
    """Refuse several workers on the memory store: each would keep its own, split state."""
    if server.cfg.workers > 1 and not os.environ.get("REDIS_URL"):
        raise SystemExit(
            f"quorum: {server.cfg.workers} gunicorn workers need REDIS_URL (the memory store is per process); "
            "set REDIS_URL or run one worker"
        )


def worker_exit(server, worker):
    """Let the worker's commands and event callbacks under way finish (and log what is dropped)."""
    from app import shutdown

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        shutdown(app)
