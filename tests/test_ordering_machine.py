"""Stateful property test of callback, read and command ordering against a model of SignalWire (issue 10).

The system under test is the production decision path without threads or HTTP: `RecordingController`
applies callbacks to the memory store kept in a state file (so versions are bumped and every change
written through as in production), and the command
queue's own `_act_once`, `_command_change` and `_read_change` run commands and merge reads, with
`policy.read_start` captured when a read is sent. The machine decides when each step happens.

The reference model is SignalWire: which calls are on the line and which of them are on hold (its
clock; callbacks carry one-second Timestamps, so events in one second share one), whether the
conference has started, and the recording's real state (changed by every command SignalWire applied,
including ones whose answer timed out). A call that hangs up sends two signals, each delivered, duplicated,
reordered or dropped on its own: the conference's `participant-leave` and the call's own status (its <Dial>
action or the number's StatusCallback), stamped with the event's second, its arrival's, or the call's creation
(SignalWire documents both of the latter); its CallSid never comes back. A call may also leave without hanging up
(LaML from before the <Dial action>) and rejoin with the same CallSid. Out of scope: conference-end and the room's next
conference, participant recordings, recording callbacks other than `in-progress` (tests/test_lone_caller.py
covers those), a call that joins already on hold.

The room's rule is drawn once per example: `minimum`, whether a call on hold counts
(`hold_counts_as_present`), and whether the room has a host (`host_numbers`). The counted line-up is
the calls on the line, less those on hold unless hold counts; "the rule" below is
`wanted_state(len(counted line-up), minimum, a known host among them)`. With a host, SignalWire starts
the conference only once two are in and the host is one of them (guests do not start it, as
Quorum's LaML says). A host is known to this process through its voice webhook (`inbound_call`, before
its first join, in the process up then), or once a read that looked its call up (`GET /Calls/{sid}`,
for a call it has no record of: a restart on an empty store forgets them) has landed, or a callback has
moved the call after that look-up; the rule counts the host only while this process knows it. A restart
keeping its state file loads what the last process knew (only its reads in flight are lost), voice
webhooks included.

Invariants:
1. Quiescence (teardown): once every queued callback is delivered, every read in flight has landed,
   a confirmation read sent after all of that has landed and commands (all answered OK) have run until
   `next_action` is None, the conference's `present()` is the true line-up, the calls it has on hold
   are the ones truly on hold, and the recording's confirmed state, its true state and the rule on
   the true counted line-up are one and the same.
   Dropped callbacks and a lost store are allowed for only through that confirmation read.
2. After every step, once the policy knows the recording and decides on its own (no recovery read due):
   its wanted state, the target of every pause/resume it issues, is the rule on K's counted line-up
   (checked whether or not a command is due, so a lone caller kept recording counts too), where K is
   the line-up implied by what this process has been told: for each call, its place (on the line or
   not, on hold or not) in the newest (in SignalWire's true order) of the callbacks delivered to it and
   the snapshots of the reads that landed in it. A read's snapshot is as of its sending, so a callback
   delivered after a read was sent outranks the read exactly when its event is newer. A call-status tells this
   process that its call is off the line for good, unless the conference held no such call when it came (a
   call-status names no conference, so Quorum sets it aside). Not checked
   - while the policy itself has asked for a confirmation read (`recheck`: it saw a same-second
     conflict, adopted a lost conference, or the reconciler asked for a routine read);
   - after the API refused a read (`assume_verified`) while a call had a same-second conflict (two
     delivered callbacks, one Timestamp, different places) that no read sent after it has settled:
     arrival order then decides, by design, until a later read lands;
   - when a call's newest information may rest on a callback not delivered yet: some callback about it
     is undelivered whose event comes after a delivered callback about it and no later than its newest
     information (a read reflects every event before it was sent), unless a call-status ended the call;
   - after a read landed that an earlier-sent read landed ahead of, until a read sent after that lands:
     `recover` takes what the earlier read wrote for news newer than the later one and keeps it, a
     known bug (tests/test_policy_rules.py, the xfail test of two overlapping reads).
3. A duplicate callback leaves the conference object unchanged, unless the call's newest state has
   the duplicate's Timestamp and another place (a duplicate then cannot be told from a genuine event
   in that second): then the policy must at least ask for a confirmation read. A call that ended is past
   every such doubt, and a call-status set aside the first time counts as new.
4. No step raises.
5. A call whose call-status this process applied is never on the line again in its conference, whatever is
   delivered or read after it (checked after every step, `recheck` or not).

QUORUM_MACHINE_EXAMPLES=N runs N examples instead of the default suite's 300 (about 10 s).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from config import RoomRule
from quorum import policy
from quorum.command_queue import CommandQueue, _for_conference, read_is_urgent
from quorum.read_queue import ReadQueue
from quorum.controller import CallStatusEvent, ConferenceEvent, RecordingController, RecordingEvent
from quorum.gateway import LiveConference, Outcome
from quorum.state_file import FileBackedStore, StateFile
from quorum.store_writes import Writes
from recording_state import PAUSED, RECORDING, MemoryStore

ROOM = "+15550001111"
CONF = "c0nf0000-0000-4000-8000-000000000001"
REC = "rec00000-0000-4000-8000-000000000001"
CALLS = ("call-a", "call-b", "call-c", "call-d", "call-e")  # a call that hung up never comes back: new ones do
MAX_LINE = 3
HOST_NUMBER, GUEST_NUMBER = "+15550009999", "+15550002222"
STEPS = [0.0, 0.0, 0.3, 0.6, 1.0, 2.0]  # SignalWire clock advance per event: same-second events are common
# Reads of one room overlap only across processes, once a read outlives the read lock's TTL: rare, but it
# is what tests the merge of a read against another that landed during it.
MAX_PENDING_READS = 3
MAX_DROPS = 2  # SignalWire gives up on a callback after 3 attempts: rare; two, so both signals of one hang-up can go
MAX_RESTARTS = 2  # on an empty store, and as many keeping the state file
EXAMPLES = int(os.environ.get("QUORUM_MACHINE_EXAMPLES", "300"))
# Where the state files go: memory (tmpfs) where there is one, since each new file costs some seven fsyncs.
STATE_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None
API_STATUS = {RECORDING: "in-progress", PAUSED: "paused"}
# Where a participant callback says its call is: (on the line, on hold).
PLACE = {
    "participant-join": (True, False),
    "participant-leave": (False, False),
    "participant-hold": (True, True),
    "participant-unhold": (True, False),
    "call-status": (False, False),
}
# What a call-status's time is: its event's second, its arrival's (a <Dial> action has no Timestamp), or the call's
# creation (how SignalWire's Incoming call status callback page reads its Timestamp). Never later than its arrival.
CALL_STATUS_TIMES = ("event", "arrival", "creation")
# How the model's SignalWire answers a pause/resume: (what the gateway returns, whether it took effect).
COMMAND_OUTCOMES = {
    "ok": (Outcome.OK, True),
    "timeout-applied": (Outcome.RETRY, True),
    "timeout-lost": (Outcome.RETRY, False),
    "refused": (Outcome.REJECTED, False),
    "transient-404": (Outcome.GONE, False),
}  # a 404 can be transient: the recording goes on


@dataclass(frozen=True)
class Callback:
    """One callback SignalWire sends; `seq` is its event's place in SignalWire's true order."""

    seq: int
    kind: str  # participant-join | -leave | -hold | -unhold | conference-start | recording | call-status
    at: int  # the Timestamp it carries
    call: Optional[str] = None
    arrival: bool = False  # a call-status timed by its arrival: `at` is then the second it is delivered in


@dataclass(frozen=True)
class PendingRead:
    """A REST read in flight: where it began, and what SignalWire answered when it was sent."""

    start: policy.ReadStart
    snapshot: policy.Snapshot
    urgent: bool
    seq: int  # the snapshot reflects every event up to this one
    told: int  # how many callbacks this process had been delivered when it was sent
    hosts: frozenset  # `CommandQueue._hosts` when it was sent: listed calls it looked up that dialed in as hosts
    sent: int  # it was this process's n-th read


class Collaborators:
    """The controller's command queue, processor and the gateway: the machine itself schedules work."""

    def __init__(self, model: "OrderingMachine"):
        self._model = model

    def kick(self, room: str, crossed_at=None) -> None:
        """The machine's rules run commands when it chooses."""

    def read(self, room: str, urgent: bool = False) -> None:
        """The machine's rules send reads when it chooses."""

    def submit(self, room: str) -> None:
        """Conversation processing is out of scope (conferences never end here)."""

    def set_recording(self, conference_sid, recording_sid, target, call_sid=None, pause_behavior="skip") -> Outcome:
        """SignalWire receiving a pause/resume: apply it or not, as the rule chose."""
        return self._model.signalwire_command(recording_sid, target)

    def fetch_call(self, call_sid):
        """The Call resource: who dialed in from where."""
        return Outcome.OK, {"from": HOST_NUMBER if call_sid == self._model.host else GUEST_NUMBER, "to": ROOM}


class SteppedQueue(CommandQueue):
    """The production command path (`_act_once`, `_command_change`, `_read_change`) without its threads."""

    def __init__(self, store: MemoryStore, gateway: Collaborators, clock):
        # Exactly the attributes those methods use; their retries are left for the machine's rules.
        self._store, self._gateway, self._clock = store, gateway, clock
        self._on_done = lambda conf, action: None
        self._crossed, self._observe_crossing = {}, lambda seconds: None
        self._attempts: Dict[str, int] = {}
        self._attempts_lock = threading.Lock()
        self._writes = Writes(store)
        self._later = self
        self.reads = ReadQueue(self._read, store, reads_per_s=10**6, readers=0)  # the budget the look-ups take

    def later(self, room: str, delay_s: float) -> None:
        """A retry is a later read or command, which the machine's rules already offer."""


class OrderingMachine(RuleBasedStateMachine):
    """SignalWire (the truth) against Quorum's policy, driven as command_queue.py drives it."""

    # Rules that are often disabled return early instead of having a precondition: hypothesis abandons a
    # step when several draws in a row hit disabled rules, which wasted half the examples.

    @initialize(minimum=st.sampled_from([2, 3, 1]), hold_counts=st.booleans(), host=st.sampled_from([None, CALLS[0]]))
    def setup(self, minimum: int, hold_counts: bool, host: Optional[str]) -> None:
        """SignalWire with nobody on the line, and a freshly started Quorum under the drawn rule."""
        self.minimum, self.clock, self.seq = minimum, 1000.0, 0
        self.rule = RoomRule(
            min_participants=minimum, hold_counts_as_present=hold_counts, host_numbers=(HOST_NUMBER,) if host else ()
        )
        self.host = host
        self.line: set = set()
        self.held: set = set()  # the calls on the line that are on hold
        self.called: set = set()  # calls that have joined at least once
        self.created: Dict[str, int] = {}  # call -> the second it first joined: its creation, near enough
        self.hung_up: set = set()  # calls that ended: their CallSids never come back
        self.first_join_at: Optional[int] = None
        self.recording: Optional[str] = None  # None until the conference starts (record-from-start)
        self.pending: List[Callback] = []
        self.sent: List[Callback] = []  # every callback ever queued
        self.drops = self.restarts = self.reloads = 0
        self.directory = tempfile.mkdtemp(prefix="quorum-machine-", dir=STATE_DIR)
        self._start_process()

    def _start_process(self) -> None:
        """A Quorum process on an empty store (STATE_FILE=off, or a new file): what it was told so far is gone."""
        self.path = os.path.join(self.directory, f"state-{self.restarts}.sqlite3")
        self._run(FileBackedStore(StateFile(self.path)))
        self.delivered: List[Callback] = []  # to this process
        self.sends = 0  # reads sent by this process
        self.overtaken: set = set()  # reads (by `sent`) that an earlier-sent read landed ahead of
        self.stale_word: Optional[int] = None  # sends when an overtaken read landed, until a later one lands
        self.told: Dict[str, Tuple[int, Tuple[bool, bool]]] = {}  # K: call -> (seq of the newest, place)
        self.remembered: set = set()  # calls whose voice webhook ran in this process
        self.conflicts: Dict[str, int] = {}  # call -> deliveries up to its latest same-second conflict
        self.given_up: set = set()  # conflicted calls whose confirmation read the API refused
        self.ended: set = set()  # calls a call-status took off the line in this process: K's word on them is final

    def _run(self, store: FileBackedStore) -> None:
        """The process's controller and command steps on `store`; reads in flight died with the last process."""
        self.store = store
        self.collaborators = Collaborators(self)
        self.controller = RecordingController(
            self.store,
            self.collaborators,
            self.collaborators,
            lambda room: self.rule,
            end_grace_s=300.0,
            clock=lambda: self.clock,
        )
        self.queue = SteppedQueue(self.store, self.collaborators, lambda: self.clock)
        self.reads: List[PendingRead] = []

    # --- SignalWire's side -------------------------------------------------------------------------

    def _event(self, kind: str, call: Optional[str] = None, at: Optional[int] = None, arrival: bool = False) -> None:
        """Queue the callback of an event that just happened at SignalWire (`at`: its Timestamp, if not now's)."""
        self.seq += 1
        callback = Callback(self.seq, kind, math.floor(self.clock) if at is None else at, call, arrival)
        self.pending.append(callback)
        self.sent.append(callback)

    def _can_join(self) -> List[str]:
        """Calls that may join now: not on the line, and not hung up."""
        return [c for c in CALLS if c not in self.line and c not in self.hung_up] if len(self.line) < MAX_LINE else []

    @precondition(lambda self: self._can_join())
    @rule(data=st.data(), step=st.sampled_from(STEPS), known=st.booleans())
    def join(self, data, step: float, known: bool) -> None:
        """A call joins (a new call, or one that left without hanging up and comes back); two in start the
        conference (with a host, once the host is one of them)."""
        call = data.draw(st.sampled_from(self._can_join()), label="call")
        self.clock += step
        if call not in self.called:
            self.called.add(call)
            self.created[call] = math.floor(self.clock)
            if known:  # the voice webhook ran first, in this process
                self.controller.inbound_call(call, HOST_NUMBER if call == self.host else GUEST_NUMBER, ROOM)
                self.remembered.add(call)
            if self.first_join_at is None:
                self.first_join_at = math.floor(self.clock)
        self.line.add(call)
        self._event("participant-join", call)
        starts = self.host is None or self.host in self.line
        if len(self.line) >= 2 and starts and self.recording is None:
            self.recording = RECORDING
            self._event("conference-start")
            self._event("recording")

    @precondition(lambda self: self.line)
    @rule(data=st.data(), step=st.sampled_from(STEPS), hangs_up=st.booleans(), timed=st.sampled_from(CALL_STATUS_TIMES))
    def leave(self, data, step: float, hangs_up: bool, timed: str) -> None:
        """A call leaves the conference: it hangs up (its participant-leave, then its own call-status; the CallSid
        is over), or it leaves without hanging up (no call-status) and may come back."""
        call = data.draw(st.sampled_from(sorted(self.line)), label="call")
        self.clock += step
        self.line.discard(call)
        self.held.discard(call)
        self._event("participant-leave", call)
        if hangs_up:
            self.hung_up.add(call)
            self._event("call-status", call, self.created[call] if timed == "creation" else None, timed == "arrival")

    @precondition(lambda self: self.line - self.held)
    @rule(data=st.data(), step=st.sampled_from(STEPS))
    def hold(self, data, step: float) -> None:
        """A call on the line is put on hold: it hears music, takes no part, and stays in the conference."""
        call = data.draw(st.sampled_from(sorted(self.line - self.held)), label="call")
        self.clock += step
        self.held.add(call)
        self._event("participant-hold", call)

    @rule(data=st.data(), step=st.sampled_from(STEPS))
    def unhold(self, data, step: float) -> None:
        """A call on hold is taken off it."""
        if not self.held:
            return
        call = data.draw(st.sampled_from(sorted(self.held)), label="call")
        self.clock += step
        self.held.discard(call)
        self._event("participant-unhold", call)

    def signalwire_command(self, recording_sid: str, target: str) -> Outcome:
        """Apply a pause/resume as the chosen outcome says, and answer as SignalWire would."""
        answer, applied = COMMAND_OUTCOMES[self.outcome]
        if applied and recording_sid == REC and self.recording is not None:
            self.recording = target
        return answer

    def _snapshot(self) -> policy.Snapshot:
        """What a REST read of the conference answers right now."""
        recordings = {REC: API_STATUS[self.recording]} if self.recording else {}
        return policy.Snapshot(
            "in-progress" if self.recording else "init", tuple(sorted(self.line)), recordings, tuple(sorted(self.held))
        )

    # --- Callbacks ---------------------------------------------------------------------------------

    def _deliver(self, callback: Callback) -> None:
        """Post one callback to the controller, as the webhook route does."""
        if callback.kind == "recording":
            self.controller.recording_event(RecordingEvent(ROOM, REC, "in-progress", callback.at))
        elif callback.kind == "call-status":
            at = math.floor(self.clock) if callback.arrival else callback.at
            self.controller.call_ended(CallStatusEvent(ROOM, callback.call, at))
        else:
            self.controller.conference_event(
                ConferenceEvent(
                    callback.kind, ROOM, CONF, callback.call, callback.at, hold=callback.kind == "participant-hold"
                )
            )

    def _tell(self, call: str, seq: int, place: Tuple[bool, bool]) -> None:
        """K learns the call's place as of `seq`, unless it knows something newer."""
        if call not in self.told or self.told[call][0] < seq:
            self.told[call] = (seq, place)

    @rule(index=st.integers(0, 7))
    def deliver(self, index: int) -> None:
        """Deliver any queued callback (reordering)."""
        if not self.pending:
            return
        callback = self.pending.pop(index % len(self.pending))
        ends = self._ends_the_call(callback)
        before = self._presence(callback.call)
        recorded = callback.call is not None and self.store.recall_call(callback.call) is not None
        self._deliver(callback)
        after = self._presence(callback.call)
        if recorded and after is not None and (before is None or after.version != before.version):
            self.remembered.add(callback.call)  # a callback that moves a call carries who it is, if recorded
        if ends:
            self._told_it_ended(callback)
        elif callback.call is not None and callback.kind != "call-status" and callback.call not in self.ended:
            self._tell(callback.call, callback.seq, PLACE[callback.kind])
            if any(
                c.call == callback.call and c.at == callback.at and PLACE[c.kind] != PLACE[callback.kind]
                for c in self.delivered
                if c.kind != "call-status"
            ):
                self.conflicts[callback.call] = len(self.delivered) + 1
        self.delivered.append(callback)

    def _ends_the_call(self, callback: Callback) -> bool:
        """Whether delivering `callback` ends its call here: a call-status for a call this process holds (what it
        was told of: the conference's participants) and has not seen end yet."""
        return callback.kind == "call-status" and callback.call in self.told and callback.call not in self.ended

    def _told_it_ended(self, callback: Callback) -> None:
        """K learns the call is off the line for good: nothing about it is in doubt any more."""
        self._tell(callback.call, callback.seq, PLACE["call-status"])
        self.ended.add(callback.call)
        self.conflicts.pop(callback.call, None)
        self.given_up.discard(callback.call)

    def _presence(self, call: Optional[str]):
        """The stored conference's word on `call`, if any."""
        conf = self.store.get(ROOM)
        return conf.participants.get(call) if conf is not None and call is not None else None

    @rule(index=st.integers(0, 7))
    def deliver_duplicate(self, index: int) -> None:
        """SignalWire retries a callback this process already took (invariant 3)."""
        if not self.delivered:
            return
        callback = self.delivered[index % len(self.delivered)]
        before = self.store.get(ROOM)
        seen = before.participants.get(callback.call) if before is not None and callback.call else None
        ends = self._ends_the_call(callback)  # one set aside the first time, for a call held now
        self._deliver(callback)
        after = self.store.get(ROOM)
        if ends:
            self._told_it_ended(callback)
        elif (
            seen is not None
            and not seen.terminal
            and callback.kind != "call-status"
            and seen.at == callback.at
            and seen.line != PLACE[callback.kind]
        ):
            assert after.recheck, "a duplicate that looks like a same-second conflict must ask for a read"
            self.conflicts[callback.call] = len(self.delivered)  # one, as far as the policy can tell
        else:
            assert after is before, f"duplicate {callback} changed the conference"

    @rule(index=st.integers(0, 7))
    def drop(self, index: int) -> None:
        """SignalWire gives up on a callback for good."""
        if not (self.pending and self.drops < MAX_DROPS):
            return
        self.pending.pop(index % len(self.pending))
        self.drops += 1

    # --- Reads -------------------------------------------------------------------------------------

    def _read_wanted(self) -> bool:
        """`CommandQueue._read`'s own test of whether the room still needs a read."""
        conf = self.store.get(ROOM)
        return (
            conf is not None
            and not conf.ended
            and conf.conference_sid is not None
            and (read_is_urgent(conf) or conf.recheck)
        )

    @rule()
    def send_read(self) -> None:
        """Send a REST read: `read_start` now, and SignalWire's answer as of now."""
        if not (len(self.reads) < MAX_PENDING_READS and self._read_wanted()):
            return
        conf, snapshot = self.store.get(ROOM), self._snapshot()
        self.sends += 1
        self.reads.append(
            PendingRead(
                policy.read_start(conf),
                snapshot,
                read_is_urgent(conf),
                self.seq,
                len(self.delivered),
                self.queue._hosts(conf, snapshot),
                self.sends,
            )
        )

    def _land(self, read: PendingRead, outcome: Outcome) -> None:
        """Merge a read's answer exactly as `CommandQueue._read` does."""
        change = self.queue._read_change(ROOM, outcome, read.snapshot, read.start, read.urgent, read.hosts)
        self.store.mutate(ROOM, _for_conference(policy.Action(CONF, None, policy.RECOVER), change))
        if change is policy.assume_verified:  # the API will not say: arrival order decides the conflicts
            self.given_up |= set(self.conflicts)
        if outcome is Outcome.OK:
            self.remembered |= read.hosts  # the read marks the hosts it looked up
            self._note_overtaking(read)
            for call in set(self.told) | set(read.snapshot.present):
                self._tell(call, read.seq, (call in read.snapshot.present, call in read.snapshot.held))
            for call in [call for call, told in self.conflicts.items() if told <= read.told]:
                del self.conflicts[call]
                self.given_up.discard(call)

    def _note_overtaking(self, read: PendingRead) -> None:
        """Track the overlapping reads invariant 2 leaves out (the known bug): `read` has just landed OK."""
        if read.sent in self.overtaken:
            self.stale_word = self.sends
        elif self.stale_word is not None and read.sent > self.stale_word:
            self.stale_word = None
        self.overtaken |= {r.sent for r in self.reads if r.sent > read.sent}

    @rule(index=st.integers(0, 3), outcome=st.sampled_from([Outcome.OK, Outcome.OK, Outcome.RETRY, Outcome.REJECTED]))
    def land_read(self, index: int, outcome: Outcome) -> None:
        """A read in flight answers (at any later moment), fails for now, or is refused."""
        if not self.reads:
            return
        self._land(self.reads.pop(index % len(self.reads)), outcome)

    # --- Commands ----------------------------------------------------------------------------------

    def _command_due(self) -> Optional[policy.Action]:
        """The pause/resume `next_action` asks for, if that is what it asks for."""
        action = policy.next_action(self.store.get(ROOM))
        return action if action is not None and action.target in (RECORDING, PAUSED) else None

    @rule(outcome=st.sampled_from(sorted(COMMAND_OUTCOMES)))
    def run_command(self, outcome: str) -> None:
        """One pass of `CommandQueue._drive`: `_act_once`, then its failure count."""
        if self._command_due() is None:
            return
        self.outcome = outcome
        lock = f"room:{ROOM}"
        result, _ = self.queue._act_once(ROOM, self.store.get(ROOM), (lock, self.store.try_lock(lock, 5)))
        if result is Outcome.RETRY:
            self.queue._failed(ROOM)
        else:
            self.queue._succeeded(ROOM)

    # --- Restarts ----------------------------------------------------------------------------------

    @rule()
    def restart(self) -> None:
        """The process restarts on an empty store (STATE_FILE=off): state, remembered calls (hosts among them)
        and reads in flight are lost."""
        if not (self.restarts < MAX_RESTARTS):
            return
        self.restarts += 1
        self.store.close()
        self._start_process()

    @rule()
    def restart_keeping_the_file(self) -> None:
        """The process restarts on its state file: it loads what the last one knew, and what it was told
        (K, remembered calls) stays told; only the reads in flight are lost. Only once there is a conference
        to keep: earlier, it is no different from a restart on an empty store."""
        if not (self.reloads < MAX_RESTARTS and self.store.get(ROOM) is not None):
            return
        self.reloads += 1
        held, calls = dict(self.store.conferences()), [self.store.recall_call(call) for call in CALLS]
        self.store.close()
        self._run(FileBackedStore(StateFile(self.path)))
        assert dict(self.store.conferences()) == held
        assert [self.store.recall_call(call) for call in CALLS] == calls

    @rule()
    def reconciler_asks(self) -> None:
        """The reconciler wants a routine confirmation read (a quiet conference, or one not seen started)."""
        self.store.mutate(ROOM, policy.ask_confirmation)

    def _held(self) -> bool:
        """Whether the store holds the conference by its sid, as `_reconcile_round` looks it up."""
        conf = self.store.get(ROOM)
        return conf is not None and conf.conference_sid == CONF

    @rule()
    def reconciler_adopts(self) -> None:
        """The reconciler lists the in-progress conference the store lost and adopts it (a read follows)."""
        if self.recording is None or self._held():
            return
        self.controller._adopt(LiveConference(CONF, ROOM, float(self.first_join_at)))

    # --- Invariants --------------------------------------------------------------------------------

    def _counted(self, places: Dict[str, Tuple[bool, bool]]) -> List[str]:
        """The calls of a line-up that count toward the quorum: on the line, not on hold unless hold counts."""
        return sorted(
            call for call, (on, held) in places.items() if on and (self.rule.hold_counts_as_present or not held)
        )

    def _rule(self, counted: List[str]) -> str:
        """What the room's rule wants for this counted line-up; the host counts only if this process knows it."""
        host = self.host is None or (self.host in counted and self.host in self.remembered)
        return policy.wanted_state(len(counted), self.minimum, host)

    def _told_line(self) -> List[str]:
        """K's counted line-up: implied by what this process was told."""
        return self._counted({call: place for call, (_, place) in self.told.items()})

    def _may_miss_a_callback(self, call: str) -> bool:
        """Whether the call's newest information may be undone by a callback not delivered yet."""
        mine = [c.seq for c in self.delivered if c.call == call]
        if not mine or call not in self.told or call in self.ended:
            return False
        newest = self.told[call][0]
        taken = {c.seq for c in self.delivered}
        return any(min(mine) < c.seq <= newest for c in self.sent if c.call == call and c.seq not in taken)

    @invariant()
    def decisions_follow_what_was_told(self) -> None:
        """Invariant 2."""
        conf = self.store.get(ROOM) if hasattr(self, "store") else None
        if (
            conf is None
            or REC not in conf.recordings
            or policy.needs_recovery(conf)
            or conf.recheck
            or self.given_up
            or self.stale_word is not None
            or any(map(self._may_miss_a_callback, CALLS))
        ):
            return
        told = self._told_line()
        assert conf.wanted == self._rule(told), (
            f"wants {conf.wanted} while told {told} count; the policy counts {sorted(conf.counted())}"
        )

    @invariant()
    def an_ended_call_stays_off_the_line(self) -> None:
        """Invariant 5."""
        conf = self.store.get(ROOM) if hasattr(self, "store") else None
        back = sorted(self.ended & set(conf.present())) if conf is not None else []
        assert back == [], f"{back} ended, yet the policy has them on the line"

    def teardown(self) -> None:
        """Invariant 1, then the state files are removed."""
        if not hasattr(self, "store"):
            return
        try:
            self._quiescence()
        finally:
            self.store.close()
            shutil.rmtree(self.directory)

    def _quiescence(self) -> None:
        """Invariant 1: bring everything to quiescence, then compare with SignalWire."""
        while self.pending:
            self.deliver(0)
        while self.reads:
            self._land(self.reads.pop(0), Outcome.OK)
        self.reconciler_adopts()
        self.store.mutate(ROOM, policy.ask_confirmation)
        self._settle()
        conf = self.store.get(ROOM)
        if conf is None:
            assert self.recording is None, "a recording runs in a conference Quorum never found"
            return
        assert conf.present() == sorted(self.line)
        assert sorted(c for c in conf.present() if conf.participants[c].hold) == sorted(self.held)
        if self.recording is None:
            assert not conf.recordings
            return
        wanted = self._rule(self._counted({call: (True, call in self.held) for call in self.line}))
        assert (conf.recordings.get(REC), self.recording) == (wanted, wanted)

    def _settle(self) -> None:
        """Reads and commands, all answered OK, until the policy asks for nothing more."""
        for _ in range(10):
            action = policy.next_action(self.store.get(ROOM))
            if action is None and not self._read_wanted():
                return
            if action is None or action.target == policy.RECOVER:
                self.send_read()
                self._land(self.reads.pop(), Outcome.OK)
            else:
                self.run_command("ok")
        raise AssertionError("the policy never settled")


OrderingMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_ordering_machine = OrderingMachine.TestCase


# Counterexamples the machine found, minimised, as plain regression tests.


def _started(store: MemoryStore, *calls: str) -> None:
    """Known calls joined in second 1, conference-start and the recording's in-progress delivered."""
    store.mutate(ROOM, lambda conf: policy.conference_started(policy.new_conference(ROOM, CONF, 1.0, RoomRule())))
    for call in calls:
        _callback(store, call, True, 1)
    store.mutate(ROOM, lambda conf: policy.recording_status(conf, REC, "in-progress", 1.0))


def _callback(store: MemoryStore, call: str, joined: bool, at: int) -> None:
    """A join or leave of a known call delivered, as controller._apply_kind applies it."""
    store.mutate(ROOM, lambda conf: policy.participant_event(conf, call, joined, at, known=True))


def test_a_read_sent_before_a_same_second_conflict_does_not_settle_it():
    """A read in flight must not answer a confirmation asked for after it was sent.

    A and B are recorded; the reconciler's routine read is sent (SignalWire lists A and B); C joins and
    leaves within second 2 and the leave is delivered first, so C looks present and a confirmation is
    asked for; the read lands; B leaves. A is alone and must not stay recorded without a read to come.
    """
    store = MemoryStore()
    _started(store, "A", "B")
    store.mutate(ROOM, policy.ask_confirmation)
    start = policy.read_start(store.get(ROOM))
    _callback(store, "C", False, 2)
    _callback(store, "C", True, 2)
    listed = policy.Snapshot("in-progress", ("A", "B"), {REC: "in-progress"})
    store.mutate(ROOM, lambda conf: policy.recover(conf, listed, 3.0, start))
    _callback(store, "B", False, 4)
    action = policy.next_action(store.get(ROOM))
    assert action is not None and action.target in (PAUSED, policy.RECOVER)


def test_a_rejoin_delivered_before_the_leave_in_the_same_second_is_not_taken_for_a_first_join():
    """A leaves and rejoins within second 1, just after joining; its rejoin is delivered before its leave
    and its first join is still in flight. It once paused with A and B on the line and asked for no read.
    """
    store = MemoryStore()
    _started(store, "B")
    _callback(store, "A", True, 1)  # the rejoin
    _callback(store, "A", False, 1)
    conf = store.get(ROOM)
    assert conf.wanted == RECORDING or conf.recheck
