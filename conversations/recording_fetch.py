"""A finished conference's recordings downloaded into its archive directory: WAV, MP3 when served, figures."""

from __future__ import annotations

import logging
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Optional, Protocol, Sequence, Tuple

import requests

from conversations import record as conversation
from conversations.archive import Archive
from conversations.media_download import DownloadFailed, MediaSource
from recording_state import GONE, Conference

log = logging.getLogger("quorum.conversations")

DOWNLOAD_ATTEMPTS = 3  # per try; a try whose downloads all failed is put off, not given up on
DOWNLOAD_BACKOFF_S = 1.0
DOWNLOAD_TIMEOUT_S = 30.0


class Figures(Protocol):
    """What `analyze` tells of each channel (audio_quality.AudioQuality): None for a figure it could not estimate."""

    @property
    def snr(self) -> Optional[float]: ...

    @property
    def rt60(self) -> Optional[float]: ...


class RecordingFetcher:
    """Downloads recordings into the archive, at most `downloads` at once, and computes their figures."""

    def __init__(
        self,
        archive: Archive,
        analyze: Callable[[Path], Sequence[Figures]],
        media: MediaSource,
        downloads: int,
        sleep: Callable[[float], None],
    ):
        self._archive = archive
        self._analyze = analyze  # path -> list of per-channel figures with .snr and .rt60
        self._media = media
        self._sleep = sleep
        self._session = requests.Session()
        self._downloads = threading.BoundedSemaphore(downloads)

    def fetch_all(self, conf: Conference, directory: Path) -> Tuple[Dict[str, dict], Dict[str, DownloadFailed]]:
        """(audio entries of the recordings downloaded, why the others were not), keyed by recording sid."""
        names = _file_names(conf)
        wanted = _fetchable(conf)
        with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
            futures = {
                sid: pool.submit(self._fetch, conf, sid, url, directory, names[sid]) for sid, url in wanted.items()
            }
            fetched = {sid: future.result() for sid, future in futures.items()}
        return (
            {sid: audio for sid, (audio, _) in fetched.items() if audio is not None},
            {sid: failure for sid, (_, failure) in fetched.items() if failure is not None},
        )

    def _fetch(
        self, conf: Conference, recording_sid: str, url: str, directory: Path, stem: str
    ) -> Tuple[Optional[dict], Optional[DownloadFailed]]:
        """One recording: WAV (required), MP3 (if served), figures; or why the WAV could not be had."""
        wav_path, failure = self._download(conf, recording_sid, url + ".wav", directory, f"{stem}.wav")
        if wav_path is None:
            return None, failure
        mp3_path, _ = self._download(conf, recording_sid, url + ".mp3", directory, f"{stem}.mp3", attempts=1)
        return {
            "wav_file": wav_path.name,
            "mp3_file": mp3_path.name if mp3_path else None,
            "duration_ms": _duration_ms(wav_path),
            **self._figures(wav_path),
            "deleted_from_signalwire": False,
            "missing": None,
        }, None

    def _figures(self, path: Path) -> dict:
        """SNR and RT60 of a mono recording; None for what cannot be estimated or read."""
        try:
            quality = self._analyze(path)[0]
        except ValueError as error:
            log.warning("%s: no audio figures (%s)", path.name, error)
            return {"snr": None, "rt60": None}
        return {
            "snr": None if quality.snr is None else round(quality.snr, 1),
            "rt60": None if quality.rt60 is None else round(quality.rt60, 2),
        }

    def _download(
        self,
        conf: Conference,
        recording_sid: str,
        url: str,
        directory: Path,
        name: str,
        attempts: int = DOWNLOAD_ATTEMPTS,
    ) -> Tuple[Optional[Path], Optional[DownloadFailed]]:
        """Stream into the archive, retrying timeouts and 5xx; logs name the conversation and the recording, never
        the URL (it grants access)."""
        failure: Optional[DownloadFailed] = None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self._sleep(DOWNLOAD_BACKOFF_S * 2 ** (attempt - 2))
            with self._downloads:
                try:
                    return self._archive.write_stream(
                        directory, name, lambda out: self._media.download(self._session, url, out)
                    ), None
                except DownloadFailed as failed:
                    failure = failed
                    if not failed.retry:
                        break  # missing, forbidden, too large or not SignalWire's: asking again will not help
        assert failure is not None  # attempts >= 1, and every attempt that did not return set it
        log.warning(
            "room=%s conference=%s recording=%s media=.%s not downloaded: %s",
            conf.room,
            conf.conference_sid,
            recording_sid,
            name.rsplit(".", 1)[-1],
            failure.problem,
        )
        return None, failure


def _fetchable(conf: Conference) -> Dict[str, str]:
    """Recording sid -> media URL of the recordings to download: completed, with a media URL and an archive name."""
    names = _file_names(conf)
    return {
        sid: info.url
        for sid, info in conf.recording_info.items()
        if info.url and conf.recordings.get(sid) == GONE and sid in names
    }


def _file_names(conf: Conference) -> Dict[str, str]:
    """Archive file stems: `mix` for the conference recording, `channel-NN` for the others."""
    names = {}
    mix = conversation.mix_recording(conf)
    if mix:
        names[mix] = "mix"
    for index, channel in enumerate(conversation.channels(conf, {}, conf.ended_at or 0), start=1):
        for sid, info in conf.recording_info.items():
            if info.call_sid == channel["call_sid"]:
                names[sid] = f"channel-{index:02d}"
    return names


def _duration_ms(wav: Path) -> Optional[int]:
    """Length of a WAV in ms, read from its header."""
    try:
        with wave.open(str(wav)) as reader:
            return round(1000 * reader.getnframes() / reader.getframerate())
    except (wave.Error, EOFError):
        return None
