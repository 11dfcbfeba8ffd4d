"""Per-number rules (ROOM_RULES_FILE), hosts' LaML and the announcement route, through Flask's test client."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from app import create_app, shutdown
from config import Config, ConfigError, RoomRule
from support import SignedCallbacks, make_config, sid

ROOT = Path(__file__).resolve().parent.parent
SALES, SUPPORT, OTHER = "+15551230000", "+15551239999", "+15557770000"
REP = "+15551230001"


def rules_file(tmp_path, text):
    """A rules file with `text`, as ROOM_RULES_FILE."""
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return str(path)


def test_the_example_file_loads_and_each_number_keeps_the_rest_of_the_global_settings():
    config = make_config(
        room_rules_file=str(ROOT / "room-rules.example.toml"), min_participants=2, pause_behavior="skip"
    )
    sales, support = config.rule_for(SALES), config.rule_for(SUPPORT)
    assert sales.host_numbers == (REP, "+15551230002") and sales.recording_announcement
    assert (sales.min_participants, sales.pause_behavior) == (2, "skip")  # not in its table: global
    assert (support.min_participants, support.pause_behavior, support.hold_counts_as_present) == (3, "silence", True)
    assert config.rule_for(OTHER) == config.default_rule == RoomRule(2, "skip", "all", (), "", False)


def test_global_settings_make_the_default_rule():
    config = make_config(
        min_participants=3,
        host_numbers=f" {REP}, +15551230002 ",
        recording_announcement="Hi.",
        hold_counts_as_present=True,
        pause_behavior="silence",
        record_participants=REP,
    )
    assert config.rule_for(OTHER) == RoomRule(3, "silence", REP, (REP, "+15551230002"), "Hi.", True)


@pytest.mark.parametrize(
    "text, names",
    [
        (f'["{SALES}"]\nmin_participant = 3\n', [SALES, "min_participant", "is not a rule"]),
        (f'["{SALES}"]\nmin_participants = "3"\n', [SALES, "min_participants", "wrong type"]),
        (f'["{SALES}"]\nmin_participants = true\n', [SALES, "min_participants", "wrong type"]),
        (f'["{SALES}"]\nmin_participants = 0\n', [SALES, "min_participants", "at least 1"]),
        (f'["{SALES}"]\npause_behavior = "mute"\n', [SALES, "pause_behavior", "skip, silence"]),
        (f'["{SALES}"]\nhost_numbers = ["5551230001"]\n', [SALES, "host_numbers", "E.164"]),
        (f'["{SALES}"]\nrecording_announcement = "{"x" * 501}"\n', [SALES, "recording_announcement", "500"]),
        (f'["{SALES}"]\nhold_counts_as_present = "yes"\n', [SALES, "hold_counts_as_present", "wrong type"]),
        ('["../etc"]\nmin_participants = 2\n', ["../etc", "dialed number"]),
        ('["15551230000"]\nmin_participants = 2\n', ["15551230000", "E.164", "+15551230000"]),
        ("min_participants = 2\n", ["min_participants", "table"]),
        (f'["{SALES}"\nmin_participants = 2\n', ["not valid TOML"]),
    ],
)
def test_a_bad_rules_file_is_refused_naming_the_number_and_key(tmp_path, text, names):
    with pytest.raises(ConfigError) as refused:
        make_config(room_rules_file=rules_file(tmp_path, text))
    message = str(refused.value)
    assert message.startswith("ROOM_RULES_FILE") and "\n" not in message
    assert all(name in message for name in names), message


def test_a_missing_rules_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ROOM_RULES_FILE: cannot read"):
        make_config(room_rules_file=str(tmp_path / "absent.toml"))


@pytest.mark.parametrize(
    "setting, value, problem",
    [
        ("HOST_NUMBERS", "+15551230001,15551230002", "E.164"),
        ("RECORDING_ANNOUNCEMENT", "x" * 501, "500"),
        ("HOLD_COUNTS_AS_PRESENT", "maybe", "true or false"),
    ],
)
def test_bad_global_rule_settings_are_refused(setting, value, problem):
    environ = {
        "SIGNALWIRE_PROJECT_ID": "p",
        "SIGNALWIRE_API_TOKEN": "t",
        "SIGNALWIRE_SPACE_URL": "x.signalwire.com",
        "SIGNALWIRE_SIGNING_KEY": "k",
        "PUBLIC_URL": "https://q.example.com",
        setting: value,
    }
    with pytest.raises(ConfigError, match=problem) as refused:
        Config.from_env(environ)
    assert refused.value.setting == setting


def test_start_up_stops_with_one_line_naming_the_number_and_key(tmp_path):
    env = {
        "SIGNALWIRE_PROJECT_ID": "p",
        "SIGNALWIRE_API_TOKEN": "t",
        "SIGNALWIRE_SPACE_URL": "x.signalwire.com",
        "SIGNALWIRE_SIGNING_KEY": "k",
        "PUBLIC_URL": "https://q.example.com",
        "PATH": "/usr/bin:/bin",
        "ROOM_RULES_FILE": rules_file(tmp_path, f'["{SALES}"]\npause_behavior = "mute"\n'),
    }
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert SALES in line and "pause_behavior" in line


@pytest.fixture
def ruled(tmp_path, signalwire):
    """An app with two numbers under their own rules; posts signed like SignalWire's."""
    text = (
        f'["{SALES}"]\nhost_numbers = ["{REP}"]\nrecording_announcement = "This call is recorded."\n'
        f'["{SUPPORT}"]\nmin_participants = 3\n'
    )
    app = create_app(make_config(room_rules_file=rules_file(tmp_path, text)))
    yield SignedCallbacks(app)
    shutdown(app)


def conference_attributes(callbacks, to, from_):
    """The <Conference> element /voice/inbound answers for a call from `from_` to `to`."""
    response = callbacks.post("/voice/inbound", {"CallSid": sid(from_[-4:] + to[-4:]), "From": from_, "To": to})
    assert response.status_code == 200
    return ET.fromstring(response.data).find("./Dial/Conference").attrib


@pytest.mark.parametrize(
    "to, from_, starts",
    [
        (SALES, REP, "true"),  # a host starts the conference
        (SALES, "+15550001111", "false"),  # a guest waits for one, with SignalWire's music (not recorded)
        (SUPPORT, "+15550001111", "true"),  # no hosts on this number: anyone starts it
        (OTHER, REP, "true"),
    ],
)
def test_hosts_start_the_conference_and_guests_wait(ruled, to, from_, starts):
    attributes = conference_attributes(ruled, to, from_)
    assert attributes["startConferenceOnEnter"] == starts
    assert attributes["statusCallbackEvent"] == "start end join leave hold"


def test_the_announcement_route_says_the_rooms_sentence(ruled):
    response = ruled.post("/voice/announce", {"ConferenceSid": sid("c")}, query={"room": SALES})
    assert response.status_code == 200 and response.mimetype == "text/xml"
    assert ET.fromstring(response.data).find("./Say").text == "This call is recorded."
    quiet = ruled.post("/voice/announce", {"ConferenceSid": sid("c")}, query={"room": SUPPORT})
    assert ET.fromstring(quiet.data).findall("./*") == []  # no sentence for that number: nothing is played


def test_the_announcement_route_is_signed_like_every_voice_route(ruled):
    assert ruled.client.post("/voice/announce?room=%2B15551230000", data={"ConferenceSid": sid("c")}).status_code == 403


def test_with_one_fixed_room_only_its_table_can_match(tmp_path):
    with pytest.raises(ConfigError, match="CONFERENCE_ROOM"):
        make_config(conference_room="standup", room_rules_file=rules_file(tmp_path, f'["{SALES}"]\n'))
    rules = make_config(conference_room="standup", room_rules_file=rules_file(tmp_path, '["standup"]\n'))
    assert rules.rule_for("standup").min_participants == 2
