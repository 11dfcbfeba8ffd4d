"""schemathesis hooks (SCHEMATHESIS_HOOKS=schemathesis_hooks): sign each /voice/* request as SignalWire would.

A request whose case carries the signature header gets the right signature for its URL and form, so the
webhooks' own checks are reached; a case without it (schemathesis testing the missing header) stays unsigned.
"""

import os

import schemathesis
from requests.models import RequestEncodingMixin

from support import sign

HEADER = "X-SignalWire-Signature"


@schemathesis.hook
def before_call(context, case, **kwargs):
    """Replace a generated signature with the real one (Quorum rebuilds the URL from PUBLIC_URL)."""
    if not case.formatted_path.startswith("/voice/") or HEADER not in (case.headers or {}):
        return
    query = RequestEncodingMixin._encode_params(case.query) if case.query else ""
    url = os.environ["QUORUM_PUBLIC_URL"] + case.formatted_path + (f"?{query}" if query else "")
    form = (
        {str(key): str(value) for key, value in (case.body or {}).items() if value is not None}
        if isinstance(case.body, dict)
        else {}
    )
    case.headers[HEADER] = sign(url, form, os.environ["QUORUM_SIGNING_KEY"])
