"""LaML documents Quorum answers with, built by the SDK's `VoiceResponse`."""

from __future__ import annotations

from urllib.parse import urlencode

from signalwire.voice_response import Dial, VoiceResponse

from config import PER_NUMBER

STATUS_EVENTS = "start end join leave hold"
# <Conference> statusCallbackEvent `speaker`: "When a participant has begun or stopped speaking"
# (participant-speech-start, participant-speech-stop). Asked for only with TALK_TIME: a callback per turn.
SPEAKER_EVENTS = "speaker"
# <Conference recordingStatusCallbackEvent>: documented values in-progress, completed, failed (default
# "completed failed"); `absent` is for call recordings only. in-progress tells us the recording's sid.
RECORDING_EVENTS = "in-progress completed failed"


def recording_callback_url(public_base: str, room: str, call_sid: str = "") -> str:
    """Where recording callbacks go, with the room in the query (they carry no ConferenceSid)
    and, for a participant's own recording, the call it records."""
    query = {"room": room, **({"call": call_sid} if call_sid else {})}
    return f"{public_base}/voice/recording-status?{urlencode(query)}"


def call_status_url(public_base: str, room: str = "") -> str:
    """Where a call's own end is told: our <Dial> action names the room; the number's StatusCallback cannot."""
    return f"{public_base}/voice/call-status" + (f"?{urlencode({'room': room})}" if room else "")


def hangup_laml() -> str:
    """End the call: the answer to our <Dial> action, so a caller who left the conference goes nowhere else."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def announce_url(public_base: str, room: str) -> str:
    """Where SignalWire fetches the room's announcement (Update a Conference: AnnounceUrl)."""
    return f"{public_base}/voice/announce?{urlencode({'room': room})}"


def announcement_laml(text: str) -> str:
    """Say `text` to the conference; nothing at all when the room has no announcement."""
    response = VoiceResponse()
    if text:
        response.say(text)
    return str(response)


def conference_laml(
    room: str, public_base: str, trim: str, starts_conference: bool = True, talk_time: bool = False
) -> str:
    """Join the caller to `room`, recorded from the start, with our callbacks (speaker events too with `talk_time`).

    A caller who does not start the conference (not a host, where the room has hosts) waits with
    SignalWire's hold music, which is not recorded, until one who does arrives.
    """
    # The action comes "after the dialed call ends": the call's own word that it left, beside participant-leave.
    dial = Dial(action=call_status_url(public_base, room), method="POST")
    dial.conference(
        room,
        record="record-from-start",
        start_conference_on_enter=starts_conference,
        status_callback=f"{public_base}/voice/conference-status",
        status_callback_event=f"{STATUS_EVENTS} {SPEAKER_EVENTS}" if talk_time else STATUS_EVENTS,
        status_callback_method="POST",
        recording_status_callback=recording_callback_url(public_base, room),
        recording_status_callback_event=RECORDING_EVENTS,
        recording_status_callback_method="POST",
        trim=trim,
    )
    response = VoiceResponse()
    response.append(dial)
    return str(response)


def choose_room(conference_room: str, dialed: str) -> str:
    """The room for a call: one per dialed number, or the fixed name configured."""
    return dialed if conference_room == PER_NUMBER else conference_room
