"""The dashboard's gate and sign-in: a signed session cookie derived from API_TOKEN, or the bearer token; CSRF."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import current_app, jsonify, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from console.auth import OFF_MESSAGE, bearer_token, token_matches

COOKIE = "quorum_dashboard"
SESSION_S = 12 * 3600
OPEN_ENDPOINTS = ("dashboard.login_page", "dashboard.login")
DATA_ENDPOINTS = ("dashboard.live_data", "dashboard.media", "dashboard.secure_pause", "dashboard.secure_resume")
CSRF_FIELD = "csrf_token"


def gate():
    """503 with API_TOKEN unset; otherwise the signed cookie or the bearer token, or off to the login form."""
    expected = current_app.config["QUORUM"].api_token
    if not expected:
        return render_template("off.html", message=OFF_MESSAGE), 503
    if request.endpoint in OPEN_ENDPOINTS or signed_in(expected):
        return None
    if request.endpoint in DATA_ENDPOINTS:
        response = jsonify(error="sign in at /login or send 'Authorization: Bearer <API_TOKEN>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="quorum"'
        return response, 401
    return redirect(url_for(".login_page"), 303)


def session_serializer(api_token: str) -> URLSafeTimedSerializer:
    """Signs session cookies with a key derived from API_TOKEN: every worker agrees, a new token logs all out."""
    key = hmac.new(api_token.encode(), b"quorum dashboard session", hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(key, salt="quorum-dashboard")


def signed_in(expected: str) -> bool:
    """Whether the request carries a valid, unexpired session cookie or the bearer token."""
    cookie = request.cookies.get(COOKIE)
    if cookie:
        try:
            session_serializer(expected).loads(cookie, max_age=SESSION_S)
            return True
        except BadSignature:
            pass
    return token_matches(expected, bearer_token())


def csrf_token() -> str:
    """The session's CSRF token: an HMAC of its cookie, which a page of another site can neither read nor make."""
    key = hmac.new(current_app.config["QUORUM"].api_token.encode(), b"quorum dashboard csrf", hashlib.sha256).digest()
    return hmac.new(key, request.cookies.get(COOKIE, "").encode(), hashlib.sha256).hexdigest()


def csrf_refusal():
    """None when a signed-in POST carries its session's CSRF token (form field or X-CSRF-Token header), or the
    bearer token (which another site cannot send); else 403. SameSite=Lax already keeps the cookie off most
    cross-site posts: this is the second lock."""
    if token_matches(current_app.config["QUORUM"].api_token, bearer_token()):
        return None
    given = request.form.get(CSRF_FIELD) or request.headers.get("X-CSRF-Token") or ""
    if request.cookies.get(COOKIE) and hmac.compare_digest(given.encode(), csrf_token().encode()):
        return None
    return jsonify(error="missing or wrong CSRF token: reload the page"), 403


def login_page():
    """The sign-in form; with `?token=` (the link the demo prints) sign in at once."""
    token = request.args.get("token")
    if token is not None:
        return _sign_in(token)
    if signed_in(current_app.config["QUORUM"].api_token):
        return redirect(url_for(".live"), 303)
    return render_template("login.html")


def login():
    """Check the posted token."""
    return _sign_in(request.form.get("token", ""))


def _sign_in(given: str):
    """Set the session cookie and go to the live page (the token leaves the address bar), or say no."""
    config = current_app.config["QUORUM"]
    if not token_matches(config.api_token, given):
        return render_template("login.html", error="That is not the API token."), 401
    response = redirect(url_for(".live"), 303)
    response.set_cookie(
        COOKIE,
        session_serializer(config.api_token).dumps("operator"),
        max_age=SESSION_S,
        httponly=True,
        samesite="Lax",
        secure=urlsplit(config.public_url).scheme == "https",
    )
    return response


def logout():
    """Forget the session cookie."""
    response = redirect(url_for(".login_page"), 303)
    response.delete_cookie(COOKIE, httponly=True, samesite="Lax")
    return response
