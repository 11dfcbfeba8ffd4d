"""The dashboard through Flask's test client: auth matrix, pages with the right data, media, and
the pure view-data functions (timeline geometry, plain-words readings, pagination)."""

import time
from email.utils import formatdate
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner

from config import RoomRule
from console import signin, views
from app import create_app, services, shutdown
from support import make_config, sid, wav_bytes
from conversations.record import EMPTY_AUDIO, iso
from recording_state import PAUSED, RECORDING, Caller, Conference, Presence, Transition

TOKEN = "dash-0123456789-abcdefghij"
ROOM, OTHER_ROOM = "+15550003333", "+15550004444"
CONF = "5d6e7f80-1a2b-4c3d-8e9f-a0b1c2d3e4f5"
MIX = "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9"
CA1, CA2 = sid("CA1"), sid("CA2")
HOST, GUEST = "+15551110001", "+15551110002"
T0 = 1_800_000_000.0
PAGES = ["/", "/history", f"/conversations/{CONF}"]
DATA = ["/live.json", f"/conversations/{CONF}/media/mix.wav"]


@pytest.fixture
def app(signalwire, tmp_path):
    application = create_app(make_config(api_token=TOKEN, validate_signatures=False, recordings_dir=str(tmp_path)))
    yield application
    shutdown(application)


@pytest.fixture
def operator(app):
    """A test client signed in through the form."""
    client = app.test_client()
    assert client.post("/login", data={"token": TOKEN}).status_code == 303
    return client


def record(conversation_id=CONF, room=ROOM, started=T0, **changes):
    """An archived conversation: recorded 2–6 s, paused 6–9 s, recorded 9–12 s; host from 0, guest from 2 s."""
    return {
        "id": conversation_id,
        "room": room,
        "status": "ready",
        "started_at": iso(started),
        "ended_at": iso(started + 12),
        "audio": {"wav_file": "mix.wav", "mp3_file": None, "duration_ms": 7000, "snr": 24.0, "rt60": 0.45},
        "recording_timeline": [
            {"state": RECORDING, "start_ms": 2000, "end_ms": 6000},
            {"state": PAUSED, "start_ms": 6000, "end_ms": 9000},
            {"state": RECORDING, "start_ms": 9000, "end_ms": 12000},
        ],
        "channels": [
            {
                "connection_id": HOST,
                "call_sid": CA1,
                "from": HOST,
                "to": room,
                "start_ms": 0,
                "end_ms": 12000,
                "audio": {
                    "wav_file": "channel-01.wav",
                    "mp3_file": None,
                    "duration_ms": 7000,
                    "snr": 8.5,
                    "rt60": None,
                },
            },
            {
                "connection_id": GUEST,
                "call_sid": CA2,
                "from": GUEST,
                "to": room,
                "start_ms": 2000,
                "end_ms": 12000,
                "audio": EMPTY_AUDIO,
            },
        ],
        **changes,
    }


def archive(app, conversation: dict, media=True) -> Path:
    """Write a conversation (and its media) into the app's archive, as the processor does."""
    store = services(app).archive
    directory = store.directory_for(conversation["room"], T0, conversation["id"])
    if media:
        store.write_file(directory, "mix.wav", wav_bytes(1.0))
        store.write_file(directory, "channel-01.wav", wav_bytes(0.5, seed=1))
    store.save(directory, conversation)
    return directory


class Tags(HTMLParser):
    """Every start tag's attributes, in document order."""

    def __init__(self, html: str):
        super().__init__()
        self.tags = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag, **wanted):
        """Attributes of the tags named `tag` whose attributes include `wanted` (underscores as dashes)."""
        wanted = {k.replace("_", "-"): v for k, v in wanted.items()}
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in wanted.items())]


# Auth


@pytest.mark.parametrize("path", PAGES + DATA + ["/login", "/login?token=x"])
def test_everything_is_off_without_a_token_configured(signalwire, path):
    application = create_app(make_config(validate_signatures=False))
    try:
        response = application.test_client().get(path)
        assert response.status_code == 503
        assert "set API_TOKEN" in response.get_data(as_text=True)
        assert "quorum_dashboard" not in response.headers.get("Set-Cookie", "")
    finally:
        shutdown(application)


@pytest.mark.parametrize("path", PAGES)
def test_pages_send_strangers_to_the_login_form(app, path):
    archive(app, record())
    response = app.test_client().get(path)
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert ROOM not in response.get_data(as_text=True)


@pytest.mark.parametrize("path", DATA)
def test_data_routes_refuse_strangers(app, path):
    archive(app, record())
    response = app.test_client().get(path)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"RIFF" not in response.data


def test_a_wrong_token_is_refused_by_form_link_and_header(app):
    client = app.test_client()
    posted = client.post("/login", data={"token": TOKEN + "x"})
    assert posted.status_code == 401 and "That is not the API token." in posted.get_data(as_text=True)
    assert client.get("/login?token=nope").status_code == 401
    assert client.get("/login").status_code == 200  # the form
    assert "Set-Cookie" not in posted.headers
    assert client.get("/live.json").status_code == 401
    assert client.get("/live.json", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_form_signs_in_with_a_hardened_cookie(app):
    client = app.test_client()
    response = client.post("/login", data={"token": TOKEN})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("quorum_dashboard=") and TOKEN not in cookie
    assert all(flag in cookie for flag in ("HttpOnly", "SameSite=Lax", "Secure", "Max-Age=43200"))
    assert client.get("/").status_code == 200
    assert client.get("/live.json").status_code == 200


def test_the_token_link_signs_in_and_leaves_the_address_bar(app):
    client = app.test_client()
    response = client.get(f"/login?token={TOKEN}")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.get("/login").headers["Location"] == "/"  # already signed in


def test_the_cookie_is_not_secure_on_plain_http(signalwire):
    application = create_app(make_config(api_token=TOKEN, public_url="http://127.0.0.1:5000"))
    try:
        cookie = application.test_client().post("/login", data={"token": TOKEN}).headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "Secure" not in cookie
    finally:
        shutdown(application)


def test_the_bearer_token_works_without_a_session(app):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert app.test_client().get("/live.json", headers=headers).status_code == 200
    assert app.test_client().get("/history", headers=headers).status_code == 200


def test_forged_expired_and_other_token_cookies_are_refused(app, monkeypatch):
    client = app.test_client()
    forged = signin.session_serializer("some-other-token").dumps("operator")
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: int(T0))  # years ago
        expired = signin.session_serializer(TOKEN).dumps("operator")
    for value in (forged, expired, "operator", ""):
        client.set_cookie("quorum_dashboard", value)
        assert client.get("/live.json").status_code == 401
    client.set_cookie("quorum_dashboard", signin.session_serializer(TOKEN).dumps("operator"))
    assert client.get("/live.json").status_code == 200


def test_logout_ends_the_session(operator):
    response = operator.post("/logout")
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert "quorum_dashboard=;" in response.headers["Set-Cookie"]
    assert operator.get("/").status_code == 303
    assert operator.get("/live.json").status_code == 401


def test_responses_are_hardened(operator):
    response = operator.get("/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


# Pages


def callback(client, path, **form):
    """A webhook as SignalWire sends it (signatures are off in this app)."""
    assert client.post(path, data=form).status_code < 300


def test_live_page_follows_a_conference_from_recording_to_paused(app, operator):
    phone, commands = app.test_client(), services(app).commands
    conference = {"ConferenceSid": CONF, "FriendlyName": ROOM, "Timestamp": formatdate(usegmt=True)}
    callback(phone, "/voice/conference-status", **conference, StatusCallbackEvent="conference-start")
    for call, number in ((CA1, HOST), (CA2, GUEST)):
        callback(phone, "/voice/inbound", CallSid=call, From=number, To=ROOM)
        callback(phone, "/voice/conference-status", **conference, StatusCallbackEvent="participant-join", CallSid=call)
    callback(phone, f"/voice/recording-status?room=%2B{ROOM[1:]}", RecordingSid=MIX, RecordingStatus="in-progress")
    assert commands.wait_idle(10)

    (live,) = operator.get("/live.json").get_json()["conferences"]
    assert (live["room"], live["state_words"], live["present"]) == (ROOM, "recording", 2)
    assert [p["number"] for p in live["participants"]] == [HOST, GUEST]
    assert live["url"] == f"/conversations/{CONF}"
    page = operator.get("/").get_data(as_text=True)
    assert f'data-room="{ROOM}" data-state="recording"' in page and GUEST in page

    later = {**conference, "Timestamp": formatdate(time.time() + 1, usegmt=True)}  # not the join's second
    callback(phone, "/voice/conference-status", **later, StatusCallbackEvent="participant-leave", CallSid=CA2)
    assert commands.wait_idle(10)  # Quorum pauses the recording through the (faked) REST API
    data = operator.get("/live.json").get_json()
    (live,) = data["conferences"]
    assert (live["state"], live["present"], [p["number"] for p in live["participants"]]) == (PAUSED, 1, [HOST])
    assert data["summary"] == f"1 live conference. {ROOM}: paused, 1 on the line."

    callback(phone, "/voice/conference-status", **conference, StatusCallbackEvent="conference-end")
    ended = operator.get("/live.json").get_json()
    assert ended["conferences"] == [] and ended["summary"] == "No live conferences."
    (empty,) = Tags(operator.get("/").get_data(as_text=True)).find("p", id="no-conferences")
    assert "hidden" not in empty


def test_conversation_page_draws_the_timeline_and_reads_the_figures(app, operator):
    archive(app, record())
    html = operator.get(f"/conversations/{CONF}").get_data(as_text=True)
    tags = Tags(html)
    spans = [
        (a["data-state"], int(a["data-start-ms"]), int(a["data-end-ms"]), a["x"], a["width"])
        for a in tags.find("rect", **{"class": "span"})
        if "data-start-ms" in a
    ]
    assert spans == [
        (RECORDING, 2000, 6000, "16.667%", "33.333%"),
        (PAUSED, 6000, 9000, "50.0%", "25.0%"),
        (RECORDING, 9000, 12000, "75.0%", "25.0%"),
        ("on the call", 0, 12000, "0.0%", "100.0%"),
        ("on the call", 2000, 12000, "16.667%", "83.333%"),
    ]
    assert [a["data-label"] for a in tags.find("g", **{"class": "lane"})] == [
        "Conference recording",
        f"Channel 01: {HOST}",
        f"Channel 02: {GUEST}",
    ]
    assert "Conference recording: recorded 0:02.0–0:06.0; paused 0:06.0–0:09.0; recorded 0:09.0–0:12.0." in html
    assert [a["src"] for a in tags.find("source")] == [
        f"/conversations/{CONF}/media/mix.wav",
        f"/conversations/{CONF}/media/channel-01.wav",
    ]
    # The guest had no recording of their own: no card, a line says so.
    assert len(tags.find("audio")) == 2 and "1 channel had no recording of its own" in " ".join(html.split())
    for words in (
        "24.0 dB <strong>clear line",
        "0.45 s <strong>some echo",
        "8.5 dB <strong>noisy line",
        "— <strong>not enough audio to tell",
        "20 dB or more",
        "under 10 dB",
        "0.3 s or less",
        "over 0.6 s",
    ):
        assert words in html


def test_a_live_conversation_page_shows_the_timeline_so_far(app, operator):
    now = T0 + 100
    services(app).store.mutate(ROOM, lambda _: live_conference(now))
    html = operator.get(f"/conversations/{CONF}").get_data(as_text=True)
    assert "not archived yet" in html and "No audio yet." in html
    assert Tags(html).find("rect", data_state=RECORDING)[0]["data-start-ms"] == "20000"


def test_unknown_and_malformed_conversations_are_404(operator):
    assert operator.get(f"/conversations/{CONF}").status_code == 404
    assert operator.get("/conversations/..").status_code == 404
    assert operator.get("/conversations/" + "a" * 80).status_code == 404


def test_media_is_served_with_ranges(app, operator):
    directory = archive(app, record())
    whole = operator.get(f"/conversations/{CONF}/media/mix.wav")
    assert whole.status_code == 200 and whole.content_type == "audio/wav"
    assert whole.data == (directory / "mix.wav").read_bytes()
    part = operator.get(f"/conversations/{CONF}/media/mix.wav", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.data == whole.data[:100] and part.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(
    "name",
    [
        "conversation.json",
        "..",
        ".mix.wav",
        "mix.wav.txt",
        "MIX.WAV",
        "..%2Fmix.wav",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "channel-09.wav",
        "mix.wav%00",
    ],
)
def test_media_refuses_hostile_names(app, operator, name):
    archive(app, record())
    response = operator.get(f"/conversations/{CONF}/media/{name}")
    assert response.status_code == 404 and ROOM.encode() not in response.data


@pytest.mark.parametrize("conversation_id", ["..", "..%2F" + CONF, CONF + "%2F..", "x"])
def test_media_refuses_hostile_ids(app, operator, conversation_id):
    archive(app, record())
    assert operator.get(f"/conversations/{conversation_id}/media/mix.wav").status_code == 404


def test_history_is_newest_first_paginated_and_filtered_by_room(app, operator):
    started = {}
    for n in range(23):
        started[f"c0000000-0000-4000-8000-{n:012d}"] = (T0 + 60 * n, ROOM)
    for n in range(2):
        started[f"d0000000-0000-4000-8000-{n:012d}"] = (T0 + 30 + 60 * n, OTHER_ROOM)
    for conversation_id, (at, room) in started.items():
        archive(app, record(conversation_id, room=room, started=at), media=False)
    newest = sorted(started, key=lambda i: started[i][0], reverse=True)
    others = [i for i in newest if started[i][1] == OTHER_ROOM]

    def rows(query):
        tags = Tags(operator.get("/history" + query).get_data(as_text=True))
        return [a["data-id"] for a in tags.find("tr") if "data-id" in a], tags

    first, tags = rows("")
    assert first == newest[:20]
    assert [a["href"] for a in tags.find("a", rel="next")] == ["/history?page=2"]
    assert rows("?page=2")[0] == newest[20:]
    assert rows("?page=99")[0] == newest[20:]  # clamped to the last page
    assert rows(f"?room=%2B{OTHER_ROOM[1:]}")[0] == others
    options = [a["value"] for a in tags.find("option")]
    assert options == ["", ROOM, OTHER_ROOM]


def test_history_rows_say_what_happened(app, operator):
    archive(app, record())
    html = operator.get("/history").get_data(as_text=True)
    for text in ("2027-01-15 08:00:00 UTC", "12 s", "7.0 s", ">2<", "clear line", f'href="/conversations/{CONF}"'):
        assert text in html


# View data


def live_conference(now):
    """Host since 0 s, guest 10–40 s, recording confirmed at 20 s and paused at 40 s (T0-based)."""
    return Conference(
        room=ROOM,
        conference_sid=CONF,
        opened_at=T0,
        participants={CA1: Presence(True, T0), CA2: Presence(False, T0 + 40)},
        callers={CA1: Caller(from_=HOST, joined_at=T0), CA2: Caller(from_=GUEST, joined_at=T0 + 10, left_at=T0 + 40)},
        recordings={MIX: PAUSED},
        wanted=PAUSED,
        timeline=(
            Transition(T0 + 20, "confirmed", RECORDING, MIX),
            Transition(T0 + 40, "wanted", PAUSED),
            Transition(T0 + 40.5, "confirmed", PAUSED, MIX),
        ),
    )


def test_live_conference_reports_the_mix_state_and_since_when():
    view = views.live_conference(live_conference(T0 + 100), T0 + 100)
    assert (view["state"], view["state_words"], view["for"]) == (PAUSED, "paused", "for 59 s")
    assert view["participants"] == [
        {"number": HOST, "joined": "joined 08:00:00 UTC, 1 min 40 s ago", "hold": False, "host": False}
    ]
    assert view["present_words"] == "1 on the line"


def test_a_live_card_shows_who_is_on_hold_who_hosts_and_the_rooms_rule():
    rule = RoomRule(min_participants=3, host_numbers=(HOST,), recording_announcement="Recorded.")
    conf = Conference(
        room=ROOM,
        opened_at=T0,
        rule=rule,
        participants={CA1: Presence(True, T0, host=True), CA2: Presence(True, T0 + 1, hold=True)},
        callers={CA1: Caller(from_=HOST, joined_at=T0), CA2: Caller(from_=GUEST, joined_at=T0 + 1)},
    )
    view = views.live_conference(conf, T0 + 5)
    assert [(p["number"], p["host"], p["hold"]) for p in view["participants"]] == [
        (HOST, True, False),
        (GUEST, False, True),
    ]
    assert view["present_words"] == "2 on the line (1 on hold)"
    assert view["rule"] == (
        "Records with 3 or more on the line, a host among them; callers on hold do not count; announces the recording."
    )
    assert view["own_rule"] is True  # not the default rule, so its card says it
    assert views.live_conference(conf, T0 + 5, default_rule=rule)["own_rule"] is False


def test_the_live_page_states_the_default_rule_once_and_keeps_the_summary_for_screen_readers(app, operator):
    tags = Tags(operator.get("/").get_data(as_text=True))
    (intro,) = tags.find("p", id="rule")
    assert "hidden" not in intro
    (summary,) = tags.find("p", id="live-summary")
    assert "visually-hidden" in summary["class"] and summary["role"] == "status"


def test_the_timeline_shades_holds_and_marks_announcements():
    shown = record()
    shown["channels"][0]["holds"] = [{"start_ms": 2000, "end_ms": 4000}]
    shown["channels"][0]["host"] = True
    shown["announcements"] = [{"at_ms": 1000, "outcome": "played"}]
    view = views.timeline_view(shown)
    lane = view["lanes"][1]
    assert lane["label"].endswith("(host)")
    assert [(s["state"], s["start_ms"], s["end_ms"]) for s in lane["spans"]][-1] == ("on hold", 2000, 4000)
    assert [(m["outcome"], m["text"]) for m in view["marks"]] == [("played", "announcement played at 0:01.0")]


def test_live_conference_before_the_recording_starts():
    alone = Conference(
        room=ROOM, opened_at=T0, participants={CA1: Presence(True, T0)}, callers={CA1: Caller(from_=HOST, joined_at=T0)}
    )
    view = views.live_conference(alone, T0 + 3)
    assert (view["state_words"], view["for"], view["id"]) == ("not started", "for 3.0 s", None)


def test_live_summary_names_each_room_without_durations():
    shown = [views.live_conference(live_conference(T0 + t), T0 + t) for t in (100, 200)]
    assert views.live_summary(shown[:1]) == views.live_summary(shown[1:])
    assert views.live_summary(shown[:1]) == f"1 live conference. {ROOM}: paused, 1 on the line."
    assert views.live_summary([]) == "No live conferences."


def test_timeline_geometry():
    view = views.timeline_view(record())
    recording, host, guest = view["lanes"]
    assert view["total_ms"] == 12000 and view["total"] == "0:12.0"
    assert [(s["x"], s["width"]) for s in recording["spans"]] == [(16.667, 33.333), (50.0, 25.0), (75.0, 25.0)]
    assert [(s["x"], s["width"], s["text"]) for s in guest["spans"]] == [(16.667, 83.333, "on the call 0:02.0–0:12.0")]
    assert [lane["bar_y"] for lane in view["lanes"]] == [26, 76, 126]
    assert view["height"] == 4 + 3 * 50 + 24 and view["grid_bottom"] == 146  # under the last bar
    assert [(t["label"], t["x"], t["anchor"]) for t in view["ticks"]] == [
        ("0:00", 0.0, "start"),
        ("0:02", 16.667, "middle"),
        ("0:04", 33.333, "middle"),
        ("0:06", 50.0, "middle"),
        ("0:08", 66.667, "middle"),
        ("0:10", 83.333, "middle"),
        ("0:12", 100.0, "end"),
    ]


def test_timeline_of_a_conversation_without_spans():
    view = views.timeline_view(record(recording_timeline=[], channels=[], ended_at=None))
    (lane,) = view["lanes"]
    assert lane["spans"] == [] and lane["description"] == "Conference recording: nothing yet."
    assert view["total_ms"] == 1 and view["ticks"] == [{"x": 0.0, "label": "0:00", "anchor": "start"}]


@pytest.mark.parametrize("total_s, step_s", [(5, 1), (59, 10), (400, 120), (3600, 600), (5 * 3600, 3600)])
def test_ticks_are_round_and_few(total_s, step_s):
    ticks = views.ticks(total_s * 1000)
    assert 2 <= len(ticks) <= 7
    assert ticks[1]["x"] == round(100 * step_s / total_s, 3)


@pytest.mark.parametrize(
    "snr, words, level",
    [
        (30.0, "clear line", "good"),
        (20.0, "clear line", "good"),
        (19.9, "some background noise", "fair"),
        (10.0, "some background noise", "fair"),
        (9.9, "noisy line", "poor"),
        (-5.0, "noisy line", "poor"),
        (None, "not enough audio to tell", "unknown"),
    ],
)
def test_snr_in_plain_words(snr, words, level):
    reading = views.snr_reading(snr)
    assert (reading.words, reading.level) == (words, level)
    assert reading.value == ("—" if snr is None else f"{snr:.1f} dB")


@pytest.mark.parametrize(
    "rt60, words",
    [
        (0.2, "dry room"),
        (0.3, "dry room"),
        (0.31, "some echo"),
        (0.6, "some echo"),
        (0.61, "echoey room"),
        (1.4, "echoey room"),
        (None, "not enough audio to tell"),
    ],
)
def test_rt60_in_plain_words(rt60, words):
    assert views.rt60_reading(rt60).words == words


def test_thresholds_on_the_page_match_the_readings():
    assert [(b.figure, b.range, b.words) for b in views.THRESHOLDS] == [
        ("SNR", "20 dB or more", "clear line"),
        ("SNR", "10 to 20 dB", "some background noise"),
        ("SNR", "under 10 dB", "noisy line"),
        ("RT60", "0.3 s or less", "dry room"),
        ("RT60", "over 0.3 to 0.6 s", "some echo"),
        ("RT60", "over 0.6 s", "echoey room"),
        ("SNR or RT60", "no figure", "not enough audio to tell"),
    ]


def test_recordings_view_lists_mix_then_channels_with_sources():
    shown = record(audio={**EMPTY_AUDIO, "wav_file": "mix.wav", "mp3_file": "mix.mp3", "duration_ms": 65000})
    rows = views.recordings_view(shown, lambda name: f"/m/{name}")
    # The guest had no recording of their own (EMPTY_AUDIO): no card, a line says so.
    assert [r["name"] for r in rows] == ["Full mix", f"Channel 01: {HOST}"]
    assert views.unrecorded_channels(shown) == 1
    assert rows[0]["sources"] == [
        {"url": "/m/mix.mp3", "type": "audio/mpeg"},
        {"url": "/m/mix.wav", "type": "audio/wav"},
    ]
    assert rows[0]["downloads"] == [{"url": "/m/mix.wav", "format": "WAV"}, {"url": "/m/mix.mp3", "format": "MP3"}]
    assert rows[0]["length"] == "1 min 05 s"
    shown["channels"][1]["audio"] = {**EMPTY_AUDIO, "missing": "SignalWire answered 404 for its media"}
    missing = views.recordings_view(shown, lambda name: f"/m/{name}")[2]
    assert missing["sources"] == [] and missing["downloads"] == [] and missing["missing"].endswith("media")


def test_callers_count_people_and_say_when_someone_called_again():
    channels = record()["channels"]
    assert views.callers_words(channels) == "2"
    again = channels + [{**channels[1], "call_sid": sid("again")}]
    assert views.callers_words(again) == "2 (3 calls: 1 called again)"


def test_the_conversation_page_offers_mp3_and_keeps_the_pin_off_the_label(app, operator):
    archive(
        app,
        record(
            audio={**EMPTY_AUDIO, "wav_file": "mix.wav", "mp3_file": "mix.mp3", "duration_ms": 1000},
            announcements=[{"at_ms": 0, "outcome": "played"}],
        ),
    )
    html = operator.get(f"/conversations/{CONF}").get_data(as_text=True)
    assert "Download MP3" in html and "consent announcement" in html and "-<wbr>" in html
    view = views.timeline_view(record(announcements=[{"at_ms": 0, "outcome": "played"}]))
    assert view["mark_pin"] > view["lanes"][0]["bar_y"] + view["bar_h"]  # below the bar, clear of the label
    plain = operator.get(f"/conversations/{CONF}").get_data(as_text=True)
    assert plain.count("time datetime=") == 2


def test_the_conversation_page_says_why_a_recording_has_no_audio(app, operator):
    why = "SignalWire lists it as absent: it has no audio"
    guest = {**record()["channels"][1], "audio": {**EMPTY_AUDIO, "missing": why}}
    archive(app, record(channels=[record()["channels"][0], guest]))
    assert views.recordings_view(record(channels=[guest]), str)[1]["missing"] == why
    html = unescape(operator.get(f"/conversations/{CONF}").get_data(as_text=True))
    assert f"No audio: {why}." in html and "No audio was kept for this one." not in html


def test_conversation_facts():
    facts = views.conversation_facts(record())
    assert (facts["recorded"], facts["paused"], facts["length"], facts["callers"]) == ("7.0 s", "3.0 s", "12 s", "2")
    live = views.conversation_facts(record(status="live", ended_at=None))
    assert (live["ended"], live["length"], live["status_words"]) == ("not yet", "still on the line", "live")


@pytest.mark.parametrize(
    "seconds, words",
    [(0, "0.0 s"), (4.25, "4.2 s"), (37.9, "37 s"), (185, "3 min 05 s"), (3725, "1 h 02 min"), (-1, "0.0 s")],
)
def test_duration_words(seconds, words):
    assert views.duration_words(seconds) == words


@pytest.mark.parametrize(
    "ms, tenths, text",
    [
        (0, True, "0:00.0"),
        (95149, True, "1:35.1"),
        (59960, True, "1:00.0"),
        (3723400, True, "1:02:03.4"),
        (95600, False, "1:36"),
    ],
)
def test_elapsed(ms, tenths, text):
    assert views.elapsed(ms, tenths) == text


def test_paginate_clamps_and_links():
    assert views.paginate(45, 1) == {"page": 1, "pages": 3, "total": 45, "offset": 0, "previous": None, "next": 2}
    assert views.paginate(45, 3) == {"page": 3, "pages": 3, "total": 45, "offset": 40, "previous": 2, "next": None}
    assert views.paginate(45, 0)["page"] == 1 and views.paginate(45, 9)["page"] == 3
    assert views.paginate(40, 2)["next"] is None
    assert views.paginate(0, 1) == {"page": 1, "pages": 1, "total": 0, "offset": 0, "previous": None, "next": None}


@pytest.mark.parametrize(
    "delete, days, words",
    [
        (
            False,
            0,
            "SignalWire's copies: kept at SignalWire (anyone with a recording's URL can fetch it). "
            "Archive: kept forever.",
        ),
        (True, 30, "SignalWire's copies: deleted once archived and checked. Archive: kept 30 days."),
        (True, 1, "SignalWire's copies: deleted once archived and checked. Archive: kept 1 day."),
    ],
)
def test_retention_in_plain_words(delete, days, words):
    assert views.retention_words(delete, days) == words


def test_the_live_page_says_what_happens_to_the_recordings(signalwire, tmp_path):
    application = create_app(
        make_config(
            api_token=TOKEN,
            validate_signatures=False,
            recordings_dir=str(tmp_path),
            delete_from_signalwire=True,
            archive_retention_days=30,
        )
    )
    try:
        page = application.test_client().get("/", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    finally:
        shutdown(application)
    assert len(Tags(page).find("p", id="retention")) == 1
    assert "SignalWire's copies: deleted once archived and checked. Archive: kept 30 days." in unescape(page)
