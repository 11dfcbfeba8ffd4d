"""Recording media downloads: only from SignalWire, streamed to disk, size-capped.

A recording callback names its media URL, so a forged or replayed one could point Quorum at
any host: only the SignalWire space over https (and SIGNALWIRE_API_URL's origin, how the
bundled emulator serves media) is fetched, redirects are followed only within those origins,
and the body is written as it arrives, so memory does not grow with the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, FrozenSet, Optional, Tuple
from urllib.parse import urljoin, urlsplit

import requests

CHUNK_BYTES = 64 * 1024
MAX_REDIRECTS = 3
DEFAULT_PORTS = {"https": 443, "http": 80}

Origin = Tuple[str, str, int]  # scheme, lower-case host, port


class DownloadFailed(Exception):
    """A download that produced no file; `retry` says whether another attempt could help, `status` is the HTTP
    status SignalWire answered (None when it answered none)."""

    def __init__(self, problem: str, retry: bool, status: Optional[int] = None):
        super().__init__(problem)
        self.problem = problem
        self.retry = retry
        self.status = status


def origin_of(url: str) -> Optional[Origin]:
    """(scheme, host, port) of an http(s) URL, or None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)  # 0: not http(s), refused below
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    return parts.scheme, parts.hostname.lower(), port


def allowed_origins(space_url: str, api_url: Optional[str]) -> FrozenSet[Origin]:
    """https://SPACE, plus SIGNALWIRE_API_URL's origin when set."""
    origins = {origin_of(f"https://{space_url}")}
    if api_url:
        origins.add(origin_of(api_url))
    return frozenset(o for o in origins if o is not None)


@dataclass(frozen=True)
class MediaSource:
    """Where media may come from and how much of it: the checks every download goes through."""

    origins: FrozenSet[Origin]
    max_bytes: int
    timeout_s: float

    def allows(self, url: str) -> bool:
        """Whether `url` is on a trusted origin."""
        return origin_of(url) in self.origins

    def download(self, session: requests.Session, url: str, out: BinaryIO) -> None:
        """Stream `url` into `out`, or raise DownloadFailed; redirects only within the trusted origins."""
        for _ in range(MAX_REDIRECTS + 1):
            if not self.allows(url):
                raise DownloadFailed("host not allowed", retry=False)
            try:
                with session.get(url, timeout=self.timeout_s, stream=True, allow_redirects=False) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    self._copy(response, out)
                    return
            except requests.RequestException as error:
                raise DownloadFailed(type(error).__name__, retry=True) from None
        raise DownloadFailed("too many redirects", retry=False)

    def _copy(self, response: requests.Response, out: BinaryIO) -> None:
        """Write a 200's body chunk by chunk, stopping at the cap."""
        if response.status_code != 200:
            code = response.status_code
            raise DownloadFailed(f"HTTP {code}", retry=code >= 500 or code == 429, status=code)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise DownloadFailed("larger than MAX_RECORDING_MB", retry=False)
        written = 0
        for chunk in response.iter_content(CHUNK_BYTES):
            written += len(chunk)
            if written > self.max_bytes:
                raise DownloadFailed("larger than MAX_RECORDING_MB", retry=False)
            out.write(chunk)
