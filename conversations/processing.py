"""Turns a finished conference into an archived conversation.

Once a conference has ended and every recording has reported `completed`/`absent` (or
END_GRACE_S ran out), one process downloads each recording's WAV (and MP3 when SignalWire
serves one), computes its SNR and RT60, writes the archive, drops the live state and sends
`conversation.ready`. With DELETE_FROM_SIGNALWIRE, the recordings whose WAV checks out are
handed to conversations/signalwire_copies.py, durably before conversation.json is written.
"""

from __future__ import annotations

import logging
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Optional, Protocol, Sequence, cast

import requests

from conversations import record as conversation
from conversations.archive import Archive, valid_id
from conversations.event_callbacks import EventSender
from quorum.keyed_workers import KeyedWorkers
from conversations.media_download import DownloadFailed, MediaSource
from conversations.signalwire_copies import SignalWireCopies, check_copy
from recording_state import GONE, PROCESSING, Conference, RecordingInfo, StateStore, alone

log = logging.getLogger("quorum.conversations")

DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_BACKOFF_S = 1.0
DOWNLOAD_TIMEOUT_S = 30.0
PROCESS_LOCK_TTL_S = 900  # longer than any download and analysis; frees the room if the process dies


class Figures(Protocol):
    """What `analyze` tells of each channel (audio_quality.AudioQuality): None for a figure it could not estimate."""

    @property
    def snr(self) -> Optional[float]: ...

    @property
    def rt60(self) -> Optional[float]: ...


class ConversationProcessor:
    """Processes finished conferences on a small pool; one room at a time, across processes too."""

    def __init__(self, store: StateStore, archive: Archive, events: Optional[EventSender],
                 analyze: Callable[[Path], Sequence[Figures]], media: MediaSource, workers: int = 2, downloads: int = 4,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 copies: Optional[SignalWireCopies] = None):
        self._store = store
        self._archive = archive
        self._events = events
        self._copies = copies if copies is not None and copies.enabled else None
        self._analyze = analyze  # path -> list of per-channel figures with .snr and .rt60
        self._media = media
        self._clock = clock
        self._sleep = sleep
        self._session = requests.Session()
        self._downloads = threading.BoundedSemaphore(downloads)
        self._workers = KeyedWorkers(self._process_alone, workers, "quorum-conv")

    def submit(self, key: str) -> None:
        """Process the finished conference stored under `key` (a room, or a parked conference) soon."""
        self._workers.submit(key)

    def wait_idle(self, timeout: float) -> bool:
        """Until nothing is being processed (tests, shutdown)."""
        return self._workers.wait_idle(timeout)

    def shutdown(self) -> None:
        """Finish what is under way."""
        self._workers.shutdown()

    def _process_alone(self, key: str) -> None:
        """Process under the room's processing lock, so two processes never archive one room."""
        alone(self._store, f"process:{key}", PROCESS_LOCK_TTL_S, lambda: self._process(key))

    def _process(self, key: str) -> None:
        """Download, analyse, archive, forget, announce."""
        conf = self._store.get(key)
        if conf is None or conf.status != PROCESSING:
            return
        if conf.conference_sid is None:  # recording callbacks only: nothing to name it by
            self._forget(key, conf)
            return
        if not valid_id(conf.conference_sid):
            # Stored before the edge checked ids: it can never name a directory, so retrying is pointless.
            log.error("room=%s action=drop reason=conference id unusable as an archive name", conf.room)
            self._forget(key, conf)
            return
        directory = self._archive.directory_for(conf.room, conf.opened_at, conf.conference_sid)
        # Archived already by a process that died before forgetting it: never fetched again, as SignalWire's
        # copies may be deleted by now and a failed download would overwrite a good record.
        record = self._archive.read(directory) or self._archive_now(conf, directory)
        self._forget(key, conf)
        log.info("room=%s conference=%s action=archive status=%s dir=%s", conf.room, conf.conference_sid,
                 record["status"], directory)
        if self._copies:
            self._copies.submit(conf.conference_sid)
        if self._events:
            self._events.send("conversation.ready", f"{conf.conference_sid}.ready", record)

    def _archive_now(self, conf: Conference, directory: Path) -> dict:
        """Fetch every recording, then write conversation.json (after what SignalWire's copies wait on)."""
        media = self._fetch_all(conf, directory)
        record = conversation.record(conf, self._clock(), media, conversation.final_status(conf))
        if self._copies:
            # Before conversation.json: a crash between the two still deletes, never the reverse.
            self._copies.hold(directory, self._checked(conf, directory, media))
        self._archive.save(directory, record)
        return record

    def _checked(self, conf: Conference, directory: Path, media: Dict[str, dict]) -> Dict[str, str]:
        """Recording sid -> WAV name of each archived copy that can stand in for SignalWire's; the others
        are logged (never with their URL) and SignalWire keeps them."""
        checked = {}
        for sid, info in _fetchable(conf).items():
            audio = media.get(sid)
            problem = "not downloaded" if audio is None else check_copy(directory / audio["wav_file"], info.duration_s)
            if problem is None and audio is not None:  # no problem: it was downloaded
                checked[sid] = audio["wav_file"]
            else:
                log.warning("room=%s conference=%s recording=%s: %s; SignalWire's copy is kept", conf.room,
                            conf.conference_sid, sid, problem)
        return checked

    def _forget(self, key: str, conf: Conference) -> None:
        """Drop the state of this conference (not of a newer one under the same key) and remember
        its sids, so late callbacks for it or its recordings cannot bring it back."""
        self._store.mutate(key, lambda c: None if c is not None and c.conference_sid == conf.conference_sid else c)
        for sid in [conf.conference_sid, *conf.recordings]:
            if sid:
                self._store.retire(sid)

    def _fetch_all(self, conf: Conference, directory: Path) -> Dict[str, dict]:
        """Audio entries of every completed recording, keyed by recording sid."""
        names = _file_names(conf)
        wanted = _fetchable(conf)
        with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
            # _fetchable keeps only recordings with a URL, which RecordingInfo's Optional cannot say.
            futures = {sid: pool.submit(self._fetch, cast(str, info.url), directory, names[sid])
                       for sid, info in wanted.items()}
            fetched = {sid: future.result() for sid, future in futures.items()}
        return {sid: audio for sid, audio in fetched.items() if audio is not None}

    def _fetch(self, url: str, directory: Path, stem: str) -> Optional[dict]:
        """One recording: WAV (required), MP3 (if served), figures; None if the WAV cannot be had."""
        wav_path = self._download(url + ".wav", directory, f"{stem}.wav")
        if wav_path is None:
            return None
        mp3_path = self._download(url + ".mp3", directory, f"{stem}.mp3", attempts=1)
        return {"wav_file": wav_path.name, "mp3_file": mp3_path.name if mp3_path else None,
                "duration_ms": _duration_ms(wav_path), **self._figures(wav_path), "deleted_from_signalwire": False}

    def _figures(self, path: Path) -> dict:
        """SNR and RT60 of a mono recording; None for what cannot be estimated or read."""
        try:
            quality = self._analyze(path)[0]
        except ValueError as error:
            log.warning("%s: no audio figures (%s)", path.name, error)
            return {"snr": None, "rt60": None}
        return {"snr": None if quality.snr is None else round(quality.snr, 1),
                "rt60": None if quality.rt60 is None else round(quality.rt60, 2)}

    def _download(self, url: str, directory: Path, name: str, attempts: int = DOWNLOAD_ATTEMPTS) -> Optional[Path]:
        """Stream into the archive, retrying timeouts and 5xx; never logs the URL (it grants access)."""
        problem = ""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self._sleep(DOWNLOAD_BACKOFF_S * 2 ** (attempt - 2))
            with self._downloads:
                try:
                    return self._archive.write_stream(
                        directory, name, lambda out: self._media.download(self._session, url, out))
                except DownloadFailed as failure:
                    problem = failure.problem
                    if not failure.retry:
                        break  # missing, forbidden, too large or not SignalWire's: asking again will not help
        log.warning("recording media (.%s) not downloaded: %s", url.rsplit(".", 1)[-1], problem)
        return None


def _fetchable(conf: Conference) -> Dict[str, RecordingInfo]:
    """The recordings to download: completed, with a media URL and an archive name."""
    names = _file_names(conf)
    return {sid: info for sid, info in conf.recording_info.items()
            if info.url and conf.recordings.get(sid) == GONE and sid in names}


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
