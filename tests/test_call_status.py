"""The second signal of who is on the line: a call's own end, told by its <Dial> action and the number's StatusCallback.

A caller leaves mostly by hanging up, and SignalWire says so twice: the conference's `participant-leave`, and
the call's own status. Either one ends the call's presence, in any order; once a call ended, no conference
event for its CallSid puts it back (a CallSid never rejoins). Signed posts at Quorum's HTTP boundary,
SignalWire's REST API faked over HTTP.

Fields relied on (SignalWire's docs):
- `<Dial action>` ("<Dial>" page, "Request parameters for the action URL"): the Standard Request Parameters
  (`CallSid`, `To`, `CallStatus`, ...) plus `DialCallStatus`; the room is in our own action URL's query.
- The number's `StatusCallback` ("Incoming call status callback"): `CallSid`, `To`, `CallStatus` (`completed` or
  `failed`), `CallDuration`, `Timestamp`. That page says the Timestamp is the call's creation; the cXML overview
  says a StatusCallback's Timestamp is when the event occurred: both readings are tested.
"""

import time
import xml.etree.ElementTree as ET
from email.utils import formatdate

import pytest

from app import create_app, services, shutdown
from config import RoomRule
from quorum import policy
from quorum.call_end import call_ended
from recording_state import Conference, evolve
from support import PUBLIC_URL, SignedCallbacks, make_config, recording_updates, sid, sign

ROOM = "+15550004444"
CONF, REC = sid("cs-conf"), sid("cs-rec")
A, B, C = sid("cs-A"), sid("cs-B"), sid("cs-C")
T0 = int(time.time())  # conference Timestamps must be recent (EVENT_MAX_AGE_S)
PAUSE = {"Status": "paused", "PauseBehavior": "skip"}
RESUME = {"Status": "in-progress"}


class Line(SignedCallbacks):
    """Signed SignalWire callbacks to one app: the conference's, the recording's and the call's own."""

    def __init__(self, app, fake):
        super().__init__(app)
        self.fake = fake

    def inbound(self, call):
        assert self.post("/voice/inbound", {"CallSid": call, "From": "+15551230000", "To": ROOM}).status_code == 200

    def conference(self, event, call=None, at=T0):
        form = {
            "AccountSid": "acct",
            "ConferenceSid": CONF,
            "FriendlyName": ROOM,
            "StatusCallbackEvent": event,
            "Timestamp": formatdate(at, usegmt=True),
            **({"CallSid": call} if call else {}),
        }
        response = self.post("/voice/conference-status", form)
        assert response.status_code == 204, response.data
        return response.headers["X-Quorum-Outcome"]

    def recording(self, status="in-progress"):
        form = {"AccountSid": "acct", "RecordingSid": REC, "RecordingStatus": status}
        assert self.post("/voice/recording-status", form, query={"room": ROOM}).status_code == 204

    def number_status(self, call, status="completed", at=T0, duration="30", to=ROOM, **extra):
        """The number's StatusCallback: no room in its URL, the dialed number in `To`."""
        form = {
            "AccountSid": "acct",
            "CallSid": call,
            "From": "+15551230000",
            "To": to,
            "CallStatus": status,
            "Timestamp": formatdate(at, usegmt=True),
            "CallDuration": duration,
            "AudioInMos": "4.5",
            **extra,
        }
        return self.post("/voice/call-status", {k: v for k, v in form.items() if v is not None})

    def dial_action(self, call, dial_status="completed", call_status="in-progress", room=ROOM):
        """The <Dial> action: the Standard Request Parameters plus DialCallStatus, the room in our query."""
        form = {
            "AccountSid": "acct",
            "CallSid": call,
            "From": "+15551230000",
            "To": ROOM,
            "CallStatus": call_status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            "DialCallStatus": dial_status,
            "DialCallSid": sid("cs-leg"),
            "DialCallDuration": "30",
        }
        return self.post("/voice/call-status", form, query={"room": room})

    def two_known_callers(self, *also):
        """A and B dial in and join, the conference starts and records: the documented order."""
        for call in (A, B, *also):
            self.inbound(call)
        self.conference("participant-join", A)
        self.conference("participant-join", B)
        self.conference("conference-start")
        self.recording()
        self.settle()

    def state(self):
        return super().state(ROOM)

    def updates(self):
        return [form for _, form in recording_updates(self.fake)]

    def reads(self):
        return [c.request.url for c in self.fake.calls if c.request.method == "GET"]


@pytest.fixture
def line(config, signalwire):
    app = create_app(config)
    yield Line(app, signalwire)
    shutdown(app)


# --- the LaML that asks for the Dial action ---------------------------------------------------


def test_inbound_laml_asks_for_the_dial_action_with_the_room(line):
    response = line.post("/voice/inbound", {"CallSid": A, "From": "+15551230000", "To": ROOM})
    dial = ET.fromstring(response.data).find("./Dial")
    assert dial.get("action") == f"{PUBLIC_URL}/voice/call-status?room=%2B15550004444"
    assert dial.get("method") == "POST"
    assert dial.find("./Conference").text == ROOM


# --- either signal ends a call's presence -------------------------------------------------------


def test_a_lost_leave_is_made_good_by_the_numbers_status_callback(line):
    """SignalWire gave up on B's participant-leave: the call's own `completed` pauses at once, with no read."""
    line.two_known_callers()
    response = line.number_status(B)
    assert (response.status_code, response.headers.get("X-Quorum-Outcome")) == (204, "queued")
    line.settle()
    assert line.state().present() == [A]
    assert line.updates() == [PAUSE]
    assert line.reads() == []


def test_a_lost_leave_is_made_good_by_the_dial_action_which_hangs_up(line):
    line.two_known_callers()
    response = line.dial_action(B)
    assert (response.status_code, response.mimetype) == (200, "text/xml")
    assert response.headers["X-Quorum-Outcome"] == "queued"
    document = ET.fromstring(response.data)
    assert document.tag == "Response" and [child.tag for child in document] == ["Hangup"]
    line.settle()
    assert line.state().present() == [A]
    assert line.updates() == [PAUSE]


@pytest.mark.parametrize("dial_status", ["completed", "answered", "busy", "no-answer", "failed", "canceled"])
def test_any_dial_call_status_means_the_caller_left_the_conference(line, dial_status):
    """The action comes "after the dialed call ends", whatever DialCallStatus says (`answered`: a conference)."""
    line.two_known_callers()
    assert line.dial_action(B, dial_status).status_code == 200
    assert line.state().present() == [A]


@pytest.mark.parametrize("status", ["completed", "failed", "busy", "no-answer", "canceled"])
def test_every_final_call_status_ends_the_call(line, status):
    line.two_known_callers()
    assert line.number_status(B, status).status_code == 204
    assert line.state().present() == [A]


@pytest.mark.parametrize("status", ["ringing", "in-progress", "queued", "initiated", ""])
def test_a_call_still_going_changes_nothing(line, status):
    line.two_known_callers()
    version = line.state().version
    response = line.number_status(B, status)
    assert (response.status_code, response.headers.get("X-Quorum-Outcome")) == (204, "ignored")
    assert line.state().version == version and line.state().present() == [A, B]


@pytest.mark.parametrize(
    "order", [("leave", "status", "dial"), ("status", "leave", "dial"), ("dial", "status", "leave")]
)
def test_every_signal_of_one_hang_up_in_any_order_ends_the_call_once(line, order):
    line.two_known_callers()
    send = {
        "leave": lambda: line.conference("participant-leave", B, at=T0 + 1),
        "status": lambda: line.number_status(B, at=T0 + 1),
        "dial": lambda: line.dial_action(B),
    }
    for signal in order + order:  # each delivered twice
        send[signal]()
    line.settle()
    assert line.state().present() == [A]
    assert line.updates() == [PAUSE]


def test_a_conference_event_after_the_call_ended_cannot_bring_it_back(line):
    """Stamped later than the call's end (clock skew, or a retried callback): the CallSid is over for good."""
    line.two_known_callers(C)
    line.number_status(B, at=T0 + 1)
    line.settle()
    line.conference("participant-join", B, at=T0 + 5)
    line.conference("participant-unhold", B, at=T0 + 6)
    line.settle()
    assert line.state().present() == [A]
    line.conference("participant-join", C, at=T0 + 7)  # a new call, as a rejoin is
    line.settle()
    assert line.state().present() == [A, C]
    assert line.updates() == [PAUSE, RESUME]


def test_the_end_overrides_an_event_stamped_after_it(line):
    """A call-status that carries an older time than the call's newest event still ends the call."""
    line.two_known_callers()
    line.conference("participant-hold", B, at=T0 + 20)
    line.number_status(B, at=T0 + 1, duration="0")
    line.settle()
    assert line.state().present() == [A]


def test_the_caller_record_notes_when_the_call_left(line):
    line.two_known_callers()
    line.conference("participant-hold", B, at=T0 + 1)
    line.dial_action(B)
    caller = line.state().callers[B]
    assert caller.left_at is not None and caller.held_at is None and len(caller.holds) == 1


# --- what a call-status never does --------------------------------------------------------------


def test_a_call_the_conference_does_not_hold_changes_nothing(line):
    line.two_known_callers()
    before = line.state()
    response = line.number_status(C)
    assert (response.status_code, response.headers["X-Quorum-Outcome"]) == (204, "ignored")
    assert line.state().version == before.version


def test_a_call_status_never_creates_a_conference(line):
    assert line.number_status(A).headers["X-Quorum-Outcome"] == "ignored"
    assert line.dial_action(A).status_code == 200  # the caller is still hung up on
    assert services(line.app).store.rooms() == []


def test_the_numbers_status_callback_finds_a_fixed_room_through_the_config(signalwire):
    """No room in the number's StatusCallback URL: it is the room `/voice/inbound` chose from `To`."""
    app = create_app(make_config(conference_room="sales-floor"))
    line = Line(app, signalwire)
    try:
        line.inbound(A)
        line.post(
            "/voice/conference-status",
            {
                "ConferenceSid": CONF,
                "FriendlyName": "sales-floor",
                "CallSid": A,
                "StatusCallbackEvent": "participant-join",
                "Timestamp": formatdate(T0, usegmt=True),
            },
        )
        assert line.number_status(A, to="+15550009999").headers["X-Quorum-Outcome"] == "applied"
        assert services(app).store.get("sales-floor").present() == []
    finally:
        shutdown(app)


# --- its Timestamp: both documented readings ----------------------------------------------------


def test_a_long_call_stamped_at_its_creation_is_not_refused_as_stale(line):
    """ "The timestamp of the call creation date/time" plus CallDuration is when the call ended."""
    line.two_known_callers()
    response = line.number_status(B, at=T0 - 3600, duration="3600")
    assert response.status_code == 204
    assert line.state().present() == [A]


def test_a_status_stamped_when_it_occurred_ends_the_call(line):
    line.two_known_callers()
    assert line.number_status(B, at=T0 + 2, duration="0").status_code == 204
    assert line.state().present() == [A]


def test_a_status_older_than_the_window_is_refused(line):
    line.two_known_callers()
    response = line.number_status(B, at=T0 - 3600, duration="60")
    assert response.status_code == 400
    assert response.get_json() == {"error": "stale event: Timestamp older than 900 s"}
    assert line.state().present() == [A, B]


@pytest.mark.parametrize("timestamp", ["yesterday", "Thu, 99 Foo 2024 99:99:99 +0000"])
def test_an_unreadable_timestamp_is_refused(line, timestamp):
    line.two_known_callers()
    form = {"CallSid": B, "To": ROOM, "CallStatus": "completed", "Timestamp": timestamp}
    assert line.post("/voice/call-status", form).get_json() == {"error": "invalid field: Timestamp"}


@pytest.mark.parametrize("duration", ["", "nan", "-5", "inf", "1e3", "²", "9" * 400])
def test_an_unusable_call_duration_counts_as_none(line, duration):
    line.two_known_callers()
    assert line.number_status(B, duration=duration).status_code == 204
    assert line.state().present() == [A]
    assert all(t.at == t.at and t.at < time.time() + 1 for t in line.state().timeline)  # no NaN, no future


# --- input checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form, query, error",
    [
        ({"To": ROOM, "CallStatus": "completed"}, None, "missing field: CallSid"),
        ({"CallSid": " ", "DialCallStatus": "completed"}, {"room": ROOM}, "missing field: CallSid"),
        ({"CallSid": "CA/../x", "CallStatus": "completed", "To": ROOM}, None, "invalid field: CallSid"),
        ({"CallSid": A, "DialCallStatus": "completed"}, {"room": "room/../x"}, "invalid field: room"),
        ({"CallSid": A, "CallStatus": "completed"}, None, "missing field: To"),
        ({"CallSid": A, "CallStatus": "completed", "To": "sip:x/../y@example.com"}, None, "invalid field: To"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(line, form, query, error):
    response = line.post("/voice/call-status", form, query=query)
    assert (response.status_code, response.get_json()) == (400, {"error": error})


def test_an_unsigned_call_status_is_refused_and_changes_nothing(line):
    line.two_known_callers()
    form = {"CallSid": B, "To": ROOM, "CallStatus": "completed"}
    forged = sign(PUBLIC_URL + "/voice/call-status?room=other", form)
    response = line.client.post("/voice/call-status", data=form, headers={"X-SignalWire-Signature": forged})
    assert response.status_code == 403
    assert line.state().present() == [A, B]


# --- the policy's rules, pure ---------------------------------------------------------------------


def conference(*calls):
    """A started conference with `calls` joined at second 10."""
    conf = policy.conference_started(policy.new_conference(ROOM, CONF, 10.0, RoomRule()))
    for call in calls:
        conf = evolve(policy.participant_event(conf, call, True, 10.0, known=True), version=conf.version + 1)
    return conf


def test_an_ended_call_is_final_for_every_later_event():
    ended = call_ended(conference(A, B), B, 11.0)
    assert ended.present() == [A] and ended.participants[B].terminal
    for joined, hold, at in ((True, False, 12.0), (True, True, 30.0), (False, False, 40.0), (True, False, 11.0)):
        assert policy.participant_event(ended, B, joined, at, known=True, hold=hold) is ended
    assert call_ended(ended, B, 50.0) is ended


def test_a_call_the_conference_never_held_is_left_alone():
    conf = conference(A)
    assert call_ended(conf, B, 11.0) is conf


def test_a_read_never_puts_an_ended_call_back():
    """Even a read begun after the end that still lists the call (SignalWire's list lagging)."""
    ended = evolve(call_ended(conference(A, B), B, 11.0), version=5)
    listed = policy.Snapshot("in-progress", (A, B), {REC: "in-progress"})
    assert policy.recover(ended, listed, 12.0, policy.read_start(ended)).present() == [A]


def test_stored_state_without_the_terminal_flag_still_loads():
    data = conference(A, B).to_dict()
    for presence in data["participants"].values():
        del presence["terminal"]
    loaded = Conference.from_dict(data)
    assert loaded.present() == [A, B] and not any(p.terminal for p in loaded.participants.values())
    ended = call_ended(loaded, B, 11.0)
    assert Conference.from_dict(ended.to_dict()).participants[B].terminal
