"""Checks SignalWire's webhook signatures against the public URL SignalWire called."""

from __future__ import annotations

from typing import Mapping, Optional

from signalwire.request_validator import RequestValidator

SIGNATURE_HEADERS = ("X-SignalWire-Signature", "X-Twilio-Signature")


def public_url_for(public_base: str, path: str, query_string: bytes) -> str:
    """The URL SignalWire signed: our public base, never `request.url` (http behind proxies)."""
    url = public_base + path
    if query_string:
        url += "?" + query_string.decode("latin-1")
    return url


def signature_from(headers: Mapping[str, str]) -> Optional[str]:
    """The signature header's value, preferring SignalWire's own name."""
    for name in SIGNATURE_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


def is_valid(signing_key: str, url: str, form: Mapping[str, str], signature: Optional[str]) -> bool:
    """Twilio-scheme check: base64 HMAC-SHA1 over URL + sorted form params, with and without port."""
    if not signature:
        return False
    return RequestValidator(signing_key).validate(url, dict(form.items()), signature)
