"""The seed: SignalWire's own guide to pausing a conference recording, as a small Flask app.

Followed: "Updating Conference Recordings in SignalWire" (Devon White),
https://developer.signalwire.com/compatibility-api/guides/voice/python/updating-conference-recordings
(source: github.com/signalwire/docs, website/docs/main/compatibility-api/guides/voice/python/
updating-active-conference-recordings/index.mdx). Its logic, kept as written:
- `active_conferences[conference_sid] = {"recording_sid", "recording_active"}`, filled by the
  recording status callback (`in-progress`) from its `ConferenceSid`;
- on each participant callback, list the participants over REST; on `participant-leave` with
  fewer than 2 left, pause (`skip`) if active; on `participant-join` with more than 1, resume if
  not active; no lock, no timeout, errors propagate (Flask answers 500, SignalWire retries).
Where the bench had to differ:
- the room is the dialed number (the guide names it after the first CallSid it ever saw), and
  the events are `start end join leave` like Quorum's, so both get the same callbacks; start and
  end are answered without a REST call (the guide does not subscribe to them);
- SignalWire does not document `ConferenceSid` on recording callbacks (the emulator does not send
  it), so when the sid is unknown it is found the way the guide's REST section does: list the
  conference's recordings, taking the live one and its status;
- the REST base URL can be pointed at the emulator (`SIGNALWIRE_API_URL`).

    SIGNALWIRE_PROJECT_ID=... SIGNALWIRE_API_TOKEN=... SIGNALWIRE_SPACE_URL=... PUBLIC_URL=... PORT=5000 \
        python bench/seed_app.py
"""

from __future__ import annotations

import os

from flask import Flask, request
from signalwire.rest import Client as SignalWireClient
from signalwire.voice_response import Dial, VoiceResponse

LIVE_RECORDING = ("in-progress", "paused")

app = Flask(__name__)
client = SignalWireClient(
    os.environ["SIGNALWIRE_PROJECT_ID"],
    os.environ["SIGNALWIRE_API_TOKEN"],
    signalwire_space_url=os.environ["SIGNALWIRE_SPACE_URL"],
)
if os.environ.get("SIGNALWIRE_API_URL"):
    client.api.base_url = os.environ["SIGNALWIRE_API_URL"].rstrip("/")  # the SDK forces https://SPACE
public_url = os.environ["PUBLIC_URL"].rstrip("/")
active_conferences = {}


@app.route("/voice/inbound", methods=["POST", "GET"])
def inbound_call():
    """Every caller joins the dialed number's conference, recorded from the start."""
    response = VoiceResponse()
    dial = Dial()
    dial.conference(
        request.form.get("To"),
        record="record-from-start",
        start_conference_on_enter=True,
        status_callback=f"{public_url}/callback",
        status_callback_event="start end join leave",
        recording_status_callback=f"{public_url}/store_recording_sid",
        recording_status_callback_event="in-progress",
        trim="do-not-trim",
    )
    response.append(dial)
    return str(response)


@app.route("/store_recording_sid", methods=["POST", "GET"])
def store_recording_sid():
    """The guide's store: keyed by the callback's ConferenceSid."""
    conference_sid = request.form.get("ConferenceSid")
    recording_sid = request.form.get("RecordingSid")
    active_conferences[conference_sid] = {"recording_sid": recording_sid, "recording_active": True}
    return "200"


@app.route("/callback", methods=["GET", "POST"])
def callback():
    """The guide's decision: count the participants over REST, then pause or resume."""
    conference_sid = request.form.get("ConferenceSid")
    callback_event = request.form.get("StatusCallbackEvent")
    if callback_event not in ("participant-join", "participant-leave"):
        return "200"
    participants = client.conferences(conference_sid).participants.list(limit=50)
    leaving = callback_event == "participant-leave" and len(participants) < 2
    joining = callback_event == "participant-join" and len(participants) > 1
    if not (leaving or joining):
        return "200"
    recording_data = active_conferences.get(conference_sid) or find_recording(conference_sid)
    recording_sid = recording_data["recording_sid"]
    is_active = recording_data["recording_active"]
    if leaving and recording_sid and is_active:
        client.conferences(conference_sid).recordings(recording_sid).update(pause_behavior="skip", status="paused")
        active_conferences[conference_sid]["recording_active"] = False
    elif joining and recording_sid and not is_active:
        client.conferences(conference_sid).recordings(recording_sid).update(pause_behavior="skip", status="in-progress")
        active_conferences[conference_sid]["recording_active"] = True
    return "200"


def find_recording(conference_sid: str) -> dict:
    """The guide's REST way to a recording sid: list the conference's recordings; remember a live one."""
    for recording in client.conferences(conference_sid).recordings.list(limit=50):
        if recording.status in LIVE_RECORDING:
            active_conferences[conference_sid] = {
                "recording_sid": recording.sid,
                "recording_active": recording.status == "in-progress",
            }
            return active_conferences[conference_sid]
    return {"recording_sid": None, "recording_active": False}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
