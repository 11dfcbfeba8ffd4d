"""Bearer-token checks for the operator-facing routes (API, metrics, dashboard)."""

from __future__ import annotations

import hmac
from typing import Optional

from flask import current_app, jsonify, request

OFF_MESSAGE = (
    "set API_TOKEN to a long random secret and send it as 'Authorization: Bearer <API_TOKEN>'; "
    "behind ngrok every request looks local, so nothing is open without it"
)


def token_matches(expected: Optional[str], given: Optional[str]) -> bool:
    """Whether `given` is the expected token (constant time); never true without a token configured."""
    return bool(expected and given is not None and hmac.compare_digest(given.encode(), expected.encode()))


def bearer_token() -> Optional[str]:
    """The token of an `Authorization: Bearer ...` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def require_bearer(what: str):
    """None when the request carries API_TOKEN; else the 503 (no token configured) or 401 response."""
    expected = current_app.config["QUORUM"].api_token
    if not expected:
        return jsonify(error=f"{what} is off: {OFF_MESSAGE}"), 503
    if not token_matches(expected, bearer_token()):
        response = jsonify(error="missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="quorum"'
        return response, 401
    return None
