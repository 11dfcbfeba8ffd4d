"""Checks SignalWire's webhook signatures against the public URL SignalWire called."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Iterable, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

SIGNATURE_HEADERS = ("X-SignalWire-Signature", "X-Twilio-Signature")
DEFAULT_PORTS = {"https": 443, "http": 80}


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


def compute(signing_key: str, url: str, form: Mapping[str, str]) -> str:
    """Twilio's scheme: base64 HMAC-SHA1 over the URL followed by each sorted key and its value."""
    payload = url + "".join(key + form[key] for key in sorted(form))
    return base64.b64encode(hmac.new(signing_key.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def is_valid(signing_key: str, url: str, form: Mapping[str, str], signature: Optional[str]) -> bool:
    """Whether `signature` signs `url` and `form`, with or without the scheme's default port, or without its port.

    SignalWire's signer is not consistent about ports, so the spellings twilio 6.54's RequestValidator accepts
    are accepted (as SignalWire's own SDK does); the common one is tried first so most requests cost one HMAC.
    """
    if not signature:
        return False
    # First value of a repeated key, as the SDK reads it. A malformed multipart body can yield a None
    # key, which no signer covers and `sorted` cannot order.
    params = {key: form[key] for key in form if isinstance(key, str)}
    # compare_digest refuses non-ASCII text with a TypeError; as bytes any header is merely wrong.
    given = signature.encode("utf-8", "surrogateescape")
    return any(
        hmac.compare_digest(compute(signing_key, candidate, params).encode(), given)
        for candidate in _port_spellings(url)
    )


def refusal_hint(
    signing_key: str,
    checked_url: str,
    request_bases: Iterable[str],
    path: str,
    query_string: bytes,
    form: Mapping[str, str],
    signature: Optional[str],
) -> str:
    """What a refusal's log line adds: the URL the signature was checked against, and what to fix (the PUBLIC_URL
    to set when the signature signs one of the request's own base URLs instead). Never the signature or the form."""
    if not signature:
        return f"no {SIGNATURE_HEADERS[0]} (or {SIGNATURE_HEADERS[1]}) header"
    hint = "check SIGNALWIRE_SIGNING_KEY and PUBLIC_URL"
    for base in request_bases:
        url = public_url_for(base, path, query_string)
        if is_valid(signing_key, url, form, signature):
            hint = f"signed for {url}: set PUBLIC_URL to {base}"
            break
    return f"checked against {checked_url}; {hint}"


def _port_spellings(url: str):
    """The URL as given, then with the default port added when it has none, or with its port removed."""
    yield url
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    if parts.port is None and default:
        yield urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}"))
    elif parts.port is not None:
        # Any port, as twilio's remove_port does; rsplit keeps userinfo and an IPv6 host's brackets whole.
        yield urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))
