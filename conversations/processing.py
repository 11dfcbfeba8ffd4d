"""Turns a finished conference into an archived conversation.

Once a conference has ended and every recording has reported `completed`/`absent` (or
END_GRACE_S ran out), one process checks its recordings against SignalWire (conversations/
reconcile.py: the conference's and each known caller's, so a lost callback loses no audio),
downloads each recording's WAV (and MP3 when SignalWire serves one), computes its SNR and RT60,
writes the archive, drops the live state and sends `conversation.ready`. A try that cannot
finish (SignalWire unreachable, a recording still being made there, a download failing) is put
off with a growing backoff and the sweep tries again; a recording without audio says why. The
end of a recording no held conference knew is kept on its own until SignalWire names its
conference. With DELETE_FROM_SIGNALWIRE, the recordings whose WAV checks out are handed to
conversations/signalwire_copies.py, durably before conversation.json is written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from conversations import reconcile
from conversations import record as conversation, talk_time
from conversations.archive import Archive, ArchiveUnavailable, valid_id
from conversations.event_callbacks import EventSender
from quorum.keyed_workers import KeyedWorkers
from conversations.media_download import DownloadFailed, MediaSource
from conversations.recording_fetch import Figures, RecordingFetcher
from conversations.signalwire_copies import SignalWireCopies, check_copy
from quorum.gateway import ListedRecording, Outcome, SignalWireGateway
from recording_state import PROCESSING, Conference, RecordingInfo, StateStore, alone

log = logging.getLogger("quorum.conversations")

PROCESS_LOCK_TTL_S = 900  # longer than any download and analysis; frees the room if the process dies
Change = Callable[[Conference], Conference]


class ConversationProcessor:
    """Processes finished conferences on a small pool; one room at a time, across processes too."""

    def __init__(
        self,
        store: StateStore,
        archive: Archive,
        events: Optional[EventSender],
        analyze: Callable[[Path], Sequence[Figures]],
        media: MediaSource,
        gateway: SignalWireGateway,
        workers: int = 2,
        downloads: int = 4,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        copies: Optional[SignalWireCopies] = None,
        reads: Callable[[int], None] = lambda count: None,
        list_calls: bool = False,
    ):
        self._store = store
        self._archive = archive
        self._events = events
        self._copies = copies if copies is not None and copies.enabled else None
        self._fetcher = RecordingFetcher(archive, analyze, media, downloads, sleep)
        self._gateway = gateway
        self._reads = reads  # blocks until this many more GETs fit RECONCILE_MAX_READS_PER_S (default: no budget)
        self._list_calls = list_calls  # PARTICIPANT_RECORDING is on: callers may have recordings of their own
        self._clock = clock
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
        try:
            alone(self._store, f"process:{key}", PROCESS_LOCK_TTL_S, lambda: self._process(key))
        except ArchiveUnavailable as error:  # the bucket or its index cannot answer: what was learned is kept
            conf = self._store.get(key)
            if conf is not None:
                self._put_off(key, conf, f"the archive cannot be reached now ({error})")

    def _process(self, key: str) -> None:
        """Check with SignalWire, download, analyse, archive, forget, announce; or put the try off."""
        conf = self._store.get(key)
        if conf is None or conf.status != PROCESSING or conf.process_after > self._clock():
            return  # gone, not finished, or its next try is not due yet (the sweep submits it again)
        if conf.conference_sid is None:  # recording callbacks only
            conf = self._claim(key, conf)
            if conf is None:
                return
        conference_sid = conf.conference_sid
        assert conference_sid is not None  # set, or _claim returned only a conference SignalWire named
        if not valid_id(conference_sid):
            # Stored before the edge checked ids: it can never name a directory, so retrying is pointless.
            log.error("room=%s action=drop reason=conference id unusable as an archive name", conf.room)
            self._forget(key, conf)
            return
        directory = self._archive.directory_for(conf.room, conf.opened_at, conference_sid)
        # Archived already by a process that died before forgetting it: never fetched again, as SignalWire's
        # copies may be deleted by now and a failed download would overwrite a good record.
        archived = self._archived(key, conf, directory)
        if archived is None:
            return  # put off: the sweep tries again when it is due
        conf, record = archived
        self._forget(key, conf)
        log.info(
            "room=%s conference=%s action=archive status=%s dir=%s",
            conf.room,
            conf.conference_sid,
            record["status"],
            directory,
        )
        if self._copies:
            self._copies.submit(conference_sid)
        if self._events:
            self._events.send("conversation.ready", f"{conf.conference_sid}.ready", record)

    def _archived(self, key: str, conf: Conference, directory: Path) -> Optional[Tuple[Conference, dict]]:
        """The conference and its archived record: found archived, finished if its archiving was cut short after
        the downloads, else archived now; None if the try is put off."""
        record = self._archive.read(directory) or self._archive.finish(directory)
        if record is not None:
            return conf, record
        checked = self._reconciled(key, conf)
        return self._archive_now(key, checked, directory) if checked is not None else None

    # SignalWire's word on the recordings

    def _reconciled(self, key: str, conf: Conference) -> Optional[Conference]:
        """The conference with what SignalWire lists of its recordings; None if the try is put off."""
        listed = self._listed(conf)
        if listed is None:
            self._put_off(key, conf, "SignalWire could not be asked for its recordings")
            return None
        found, vanished = listed
        change: Change = lambda c: reconcile.merged(c, found, self._gateway.media_url)  # noqa: E731
        for sid in vanished:
            change = _then(change, _gone(sid, "SignalWire has no such recording (404): deleted there, or never made"))
        updated = self._update(key, conf, change)
        still = reconcile.running(updated, found) if updated is not None else {}
        if updated is None or not still:
            return updated
        conf = updated
        waited_s = self._clock() - (conf.ended_at if conf.ended_at is not None else conf.updated_at)
        if waited_s < reconcile.RUNNING_WAIT_S:
            self._put_off(
                key,
                conf,
                "recording still being made at SignalWire: "
                + ", ".join(f"{sid} {listed_as.status}" for sid, listed_as in sorted(still.items())),
            )
            return None
        log.warning(
            "room=%s conference=%s action=archive-without recordings=%s reason=still being made at "
            "SignalWire %.0f min after the conference ended",
            conf.room,
            conf.conference_sid,
            ",".join(sorted(still)),
            waited_s / 60,
        )
        return self._update(key, conf, lambda c: reconcile.gave_up(c, still, waited_s))

    def _listed(self, conf: Conference) -> Optional[Tuple[Dict[str, ListedRecording], List[str]]]:
        """(what SignalWire lists of the conference's recordings and its callers' own, the known recordings it
        has no such recording for); None if SignalWire did not answer."""
        owners = {info.call_sid for info in conf.recording_info.values() if info.call_sid}
        calls = sorted(owners | (set(conf.participants) | set(conf.callers) if self._list_calls else set()))
        found: Dict[str, ListedRecording] = {}
        for ask in [{"conference_sid": conf.conference_sid}] + [{"call_sid": call} for call in calls]:
            self._reads(1)
            outcome, listed = self._gateway.list_recordings(**ask)
            if outcome not in (Outcome.OK, Outcome.GONE):  # GONE: SignalWire has no such conference or call
                return None
            found.update(listed)
        vanished = []
        for sid in reconcile.unlisted(conf, found):
            self._reads(1)
            outcome, one = self._gateway.fetch_recording(sid)
            if outcome is Outcome.OK:
                assert one is not None  # fetch_recording's OK: the recording was fetched
                found[sid] = one
            elif outcome is Outcome.GONE:
                vanished.append(sid)
            else:
                return None
        return found, vanished

    def _claim(self, key: str, conf: Conference) -> Optional[Conference]:
        """Recordings no held conference knew: SignalWire names their conference, whose state they join, or whose
        conversation they become. None when nothing more is to be done with them here now."""
        if all(self._store.is_retired(sid) for sid in conf.recordings):
            self._drop(key)  # archived with their conference meanwhile
            return None
        outcome, conference_sid = self._conference_of(conf)
        if outcome is not Outcome.OK:
            self._put_off(key, conf, "SignalWire could not say whose recording it is")
            return None
        if conference_sid is None:
            log.warning(
                "room=%s recording=%s action=drop reason=SignalWire names no conference Quorum holds for it",
                conf.room,
                ",".join(sorted(conf.recordings)),
            )
            self._drop(key)
            return None
        holder = next(
            (k for k, held in self._store.conferences() if k != key and held.conference_sid == conference_sid), None
        )
        if holder is not None:
            self._hand_over(key, conf, holder, conference_sid)
            return None
        # Retired but neither held nor archived: its end came when nothing of it was held (a restart). It is not
        # archived yet, so these recordings become its conversation.
        if self._archive.find(conference_sid) is not None:
            log.warning(
                "room=%s conference=%s recording=%s action=drop reason=its conversation is archived "
                "without it; SignalWire keeps it",
                conf.room,
                conference_sid,
                ",".join(sorted(conf.recordings)),
            )
            self._drop(key)
            return None
        result = self._store.mutate(
            key, lambda c: reconcile.claimed(c, conference_sid) if c is not None and c.conference_sid is None else c
        )
        log.info("room=%s conference=%s action=claim key=%s", conf.room, conference_sid, key)
        return result if result is not None and result.conference_sid == conference_sid else None

    def _hand_over(self, key: str, unclaimed: Conference, holder: str, conference_sid: str) -> None:
        """Merge recordings no held conference knew into the one SignalWire says they are of (under `holder`)."""
        merged = self._store.mutate(
            holder,
            lambda h: reconcile.adopted(h, unclaimed) if h is not None and h.conference_sid == conference_sid else h,
        )
        self._drop(key)
        log.info(
            "room=%s conference=%s recording=%s action=adopt key=%s",
            unclaimed.room,
            conference_sid,
            ",".join(sorted(unclaimed.recordings)),
            holder,
        )
        if merged is not None and merged.status == PROCESSING:
            self.submit(holder)

    def _conference_of(self, conf: Conference) -> Tuple[Outcome, Optional[str]]:
        """The conference SignalWire names for the first of these recordings it knows (`GET /Recordings/{R}`
        carries it; a caller's own carries the call, whose conference the store holds)."""
        for sid in sorted(conf.recordings):
            self._reads(1)
            outcome, found = self._gateway.fetch_recording(sid)
            if outcome is Outcome.GONE:
                continue
            if outcome is not Outcome.OK:
                return outcome, None
            assert found is not None  # fetch_recording's OK: the recording was fetched
            if found.conference_sid:
                return Outcome.OK, found.conference_sid
            call = found.call_sid or (conf.recording_info.get(sid) or RecordingInfo()).call_sid
            held = [
                c
                for k, c in self._store.conferences()
                if k.split("#", 1)[0] == conf.room and c.conference_sid and call in c.participants
            ]
            if held:
                return Outcome.OK, held[0].conference_sid
        return Outcome.OK, None

    # Media

    def _archive_now(self, key: str, conf: Conference, directory: Path) -> Optional[Tuple[Conference, dict]]:
        """Fetch every recording, then write conversation.json (after what SignalWire's copies wait on); None if
        a download is to be tried again (the try is put off, what SignalWire says is gone is remembered)."""
        media, failed = self._fetcher.fetch_all(conf, directory)
        later: Dict[str, str] = {}
        gone: Dict[str, str] = {}
        for sid, failure in sorted(failed.items()):
            final, why = self._why_not_downloaded(failure, sid)
            (gone if final else later)[sid] = why
        for sid, why in gone.items():
            log.warning(
                "room=%s conference=%s recording=%s: no audio archived: %s", conf.room, conf.conference_sid, sid, why
            )
        change: Change = lambda c: reconcile.with_missing(c, later)  # noqa: E731
        for sid, why in gone.items():
            change = _then(change, _gone(sid, why))
        if later:
            self._put_off(key, conf, f"media not downloaded of {','.join(sorted(later))}", change)
            return None
        conf = change(conf)
        record = conversation.record(conf, self._clock(), media, conversation.final_status(conf))
        record = talk_time.with_audio_talk(record, directory, conf.rule.pause_behavior)  # without speaker events
        if self._copies:
            # Before conversation.json: a crash between the two still deletes, never the reverse.
            self._copies.hold(directory, self._checked(conf, directory, media))
        self._archive.save(directory, record)
        return conf, record

    def _why_not_downloaded(self, failure: DownloadFailed, recording_sid: str) -> Tuple[bool, str]:
        """(for good, why) a recording's media was not downloaded: for good when SignalWire says it has none
        (404 on its media and on its resource) or asking again would not help."""
        if failure.status == 404:
            self._reads(1)
            outcome, found = self._gateway.fetch_recording(recording_sid)
            if outcome is Outcome.GONE:
                return True, "its media and its resource answer 404 at SignalWire: deleted there"
            if outcome is not Outcome.OK:
                return False, "its media answered HTTP 404 and SignalWire could not be asked why; Quorum tries again"
            assert found is not None  # fetch_recording's OK: the recording was fetched
            why = reconcile.no_media_served(found)
            if why is not None:
                return True, why
            return False, "its media answered HTTP 404, yet SignalWire still lists it; Quorum tries again"
        if failure.retry:
            return False, f"its download failed ({failure.problem}); Quorum tries again"
        return True, f"its media could not be downloaded: {failure.problem}"

    def _checked(self, conf: Conference, directory: Path, media: Dict[str, dict]) -> Dict[str, str]:
        """Recording sid -> WAV name of each archived copy that can stand in for SignalWire's; the others
        are logged (never with their URL) and SignalWire keeps them."""
        checked = {}
        for sid, audio in media.items():
            problem = check_copy(directory / audio["wav_file"], conf.recording_info[sid].duration_s)
            if problem is None:
                checked[sid] = audio["wav_file"]
            else:
                log.warning(
                    "room=%s conference=%s recording=%s: %s; SignalWire's copy is kept",
                    conf.room,
                    conf.conference_sid,
                    sid,
                    problem,
                )
        return checked

    # State

    def _update(self, key: str, conf: Conference, change: Change) -> Optional[Conference]:
        """Apply `change` to this conference's state (not to a newer one under the same key); None if it is gone."""
        result = self._store.mutate(
            key, lambda c: change(c) if c is not None and c.conference_sid == conf.conference_sid else c
        )
        return result if result is not None and result.conference_sid == conf.conference_sid else None

    def _put_off(self, key: str, conf: Conference, why: str, change: Change = lambda c: c) -> None:
        """Put the next try off by a growing backoff, with `change` (what this try learned) kept."""
        now = self._clock()
        after = self._update(key, conf, lambda c: reconcile.put_off(change(c), now))
        if after is not None:
            log.info(
                "room=%s conference=%s action=retry-archive in_s=%.0f why=%s",
                conf.room,
                conf.conference_sid,
                after.process_after - now,
                why,
            )

    def _drop(self, key: str) -> None:
        """Drop what was kept under `key` for recordings no held conference knew (once it has been dealt with)."""
        self._store.mutate(key, lambda c: None if c is not None and c.conference_sid is None else c)

    def _forget(self, key: str, conf: Conference) -> None:
        """Remember the sids of this conference, so late callbacks for it or its recordings cannot bring it back
        (nor be kept as unclaimed once it is gone), then drop its state (not a newer one's under the same key)."""
        for sid in [*conf.recordings, conf.conference_sid]:
            if sid:
                self._store.retire(sid)
        self._store.mutate(key, lambda c: None if c is not None and c.conference_sid == conf.conference_sid else c)


def _then(first: Change, second: Change) -> Change:
    """`first`, then `second`."""
    return lambda conf: second(first(conf))


def _gone(recording_sid: str, why: str) -> Change:
    """Mark that recording gone, saying why."""
    return lambda conf: reconcile.gone(conf, recording_sid, why)
