"""`GET /healthz` (open, for load balancers), `GET /metrics` (Prometheus, bearer token), `GET /api/openapi.json`."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from console import openapi
from console.auth import require_bearer

bp = Blueprint("operations", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness and a glance at load: store reachable, archive writable, commands queued, live rooms (counted)."""
    held = current_app.extensions["quorum"]
    archive = "ok" if held.archive.writable() else "unwritable"
    if not held.store.ping():
        return jsonify(status="degraded", store="unreachable", archive=archive, queue_depth=held.commands.depth()), 503
    body = dict(store="ok", archive=archive, queue_depth=held.commands.depth(), conferences=held.store.count_rooms())
    if archive != "ok":
        return jsonify(status="degraded", **body), 503
    return jsonify(status="ok", **body)


@bp.get("/metrics")
def metrics():
    """The Prometheus text exposition."""
    refused = require_bearer("/metrics")
    if refused:
        return refused
    body, content_type = current_app.extensions["quorum"].metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/api/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 description of the API and the webhooks (open: it holds no secret)."""
    return jsonify(openapi.document(current_app.config["QUORUM"].public_url))
