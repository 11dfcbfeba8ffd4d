"""The benchmark's ceiling: Quorum's webhook routes doing nothing, served the same way."""

from flask import Flask


def create_app() -> Flask:
    """Routes with Quorum's paths that answer 204 at once."""
    app = Flask(__name__)

    @app.post("/voice/conference-status")
    @app.post("/voice/recording-status")
    def nothing():
        """Do nothing."""
        return "", 204

    @app.get("/healthz")
    def healthz():
        """Up."""
        return {"status": "ok"}

    return app
