"""The dashboard in real headless Chromium (Debian's `chromium`, driven by Playwright) against a real
Quorum server on the SignalWire emulator. Screenshots of each page go to artifacts/screenshots/.

CI installs both (scripts/install-system-packages.sh, requirements.txt); when either is missing these
tests fail with what to install rather than skip.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime
from pathlib import Path

import pytest

from app import services
from e2e_support import quorum_stack, wait_until
from emulator.scenarios import DEMO_NUMBER, Player, caller_number
from test_talk_end_to_end import OPENING as TALK_OPENING, REST as TALK_REST

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the `browser` fixture, so the tests fail with a clear message
    expect = sync_playwright = None

TOKEN = secrets.token_urlsafe(24)
LIVE_ROOM, DONE_ROOM, HOLD_ROOM, SECURE_ROOM = DEMO_NUMBER, "+15550199", "+15550188", "+15550177"
CHROMIUM = "/usr/bin/chromium"
# Chromium's own background connections are refused here; none of them matter to the page.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
WAIT_MS = 10_000  # several 1.5 s polls plus callback delivery
FOR_SECONDS = re.compile(r"^for \d+(\.\d)? s$")  # how long the recording has been in its state


@pytest.fixture(scope="module")
def stack():
    """Quorum (with per-participant channels) on the emulator, two rooms: one to watch live, one to archive."""
    with quorum_stack(
        api_token=TOKEN,
        numbers=(LIVE_ROOM, DONE_ROOM, HOLD_ROOM, SECURE_ROOM),
        participant_recording="inbound",
        recording_announcement="This call is recorded.",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with a fresh profile (Playwright makes a new user-data-dir per launch)."""
    if sync_playwright is None:
        pytest.fail("Playwright is missing: .venv/bin/pip install -r requirements.txt (playwright==1.65.2)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: apt-get install -y chromium "
            "(scripts/install-system-packages.sh does it)"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, stack):
    """A tab in a fresh context (no cookies) on Quorum."""
    context = browser.new_context(base_url=stack.config.public_url, viewport={"width": 1100, "height": 800})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture(scope="module")
def finished(stack) -> dict:
    """A conversation in DONE_ROOM played to its end and archived (host, guest joins, leaves; host leaves)."""
    Player(stack.emulator).play(
        [
            ("call", "host", DONE_ROOM),
            ("wait", 0.3),
            ("call", "guest", DONE_ROOM),
            ("wait", 1.2),
            ("hangup", "guest"),
            ("wait", 0.6),
            ("hangup", "host"),
        ]
    )
    assert stack.settle() and stack.wait_for_empty_store(10)
    (record,) = [c for c in services(stack.app).archive.all() if c["room"] == DONE_ROOM]
    assert record["status"] == "ready"
    return record


def screenshot(page, name: str) -> None:
    """Save the whole page as artifacts/screenshots/NAME.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page) -> None:
    """Follow the token link; the token must leave the address bar."""
    page.goto(f"/login?token={TOKEN}")
    expect(page.get_by_role("heading", name="Live conferences")).to_be_visible()
    assert page.url.endswith("/") and TOKEN not in page.url


def test_nothing_is_shown_without_the_token(page):
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.url.endswith("/login")
    screenshot(page, "login")
    assert page.request.get("/live.json").status == 401
    page.get_by_label("API token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That is not the API token.")
    assert page.request.get("/live.json").status == 401
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Live conferences")).to_be_visible()
    assert page.request.get("/live.json").status == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.request.get("/live.json").status == 401


def test_live_page_follows_a_conference_without_reloading(page, stack):
    sign_in(page)
    page.evaluate("window.notReloaded = true")  # a reload would wipe it
    player = Player(stack.emulator)
    card = page.locator(f'li.card[data-room="{LIVE_ROOM}"]')
    badge, people = card.locator(".badge"), card.locator(".people li")

    player.play([("call", "host", LIVE_ROOM)])
    expect(badge).to_have_text("not started")
    expect(people).to_have_count(1)
    player.play([("call", "guest", LIVE_ROOM)])
    expect(badge).to_have_text("recording")
    expect(people.locator(".number")).to_have_text([caller_number("host"), caller_number("guest")])
    expect(card.locator("[data-field=for]")).to_have_text(FOR_SECONDS)
    screenshot(page, "live")

    link = card.get_by_role("link", name=f"Timeline so far in room {LIVE_ROOM}")
    link.focus()
    player.play([("hangup", "guest")])
    expect(badge).to_have_text("paused")
    expect(people).to_have_count(1)
    expect(page.locator("#live-summary")).to_have_text(f"1 live conference. {LIVE_ROOM}: paused, 1 on the line.")
    assert page.evaluate("window.notReloaded") is True
    assert page.evaluate("document.activeElement.hasAttribute('data-link')")  # the update kept keyboard focus
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "live-phone")

    player.play([("hangup", "host")])
    expect(card).to_have_count(0)
    expect(page.get_by_text("No conference is live right now.")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True
    assert stack.settle() and stack.wait_for_empty_store(10)


def test_conversation_page_draws_the_record(page, finished):
    sign_in(page)
    page.goto(f"/conversations/{finished['id']}")
    expect(page.get_by_role("heading", name=f"Conversation in room {DONE_ROOM}")).to_be_visible()
    drawn = page.eval_on_selector_all(
        "svg.timeline g.lane",
        """lanes => lanes.map(lane => ({
        kind: lane.dataset.kind,
        spans: [...lane.querySelectorAll('rect.span')].map(
            r => [r.dataset.state, +r.dataset.startMs, +r.dataset.endMs]),
        left: [...lane.querySelectorAll('rect.span')].map(r => {
            const svg = r.ownerSVGElement.getBoundingClientRect(), box = r.getBoundingClientRect();
            return [(box.left - svg.left) / svg.width, box.width / svg.width];
        })}))""",
    )
    assert [lane["spans"] for lane in drawn] == (
        [[[s["state"], s["start_ms"], s["end_ms"]] for s in finished["recording_timeline"]]]
        + [[["on the call", c["start_ms"], c["end_ms"]]] for c in finished["channels"]]
    )
    assert [s["state"] for s in finished["recording_timeline"]][:2] == ["recording", "paused"]
    assert len(finished["channels"]) == 2  # host and guest, one lane each
    total = max(
        [s["end_ms"] for s in finished["recording_timeline"]]
        + [c["end_ms"] for c in finished["channels"]]
        + [
            round(
                (
                    datetime.fromisoformat(finished["ended_at"]) - datetime.fromisoformat(finished["started_at"])
                ).total_seconds()
                * 1000
            )
        ]
    )
    for lane in drawn:  # where Chromium actually put each bar
        for (_, start, end), (left, width) in zip(lane["spans"], lane["left"]):
            assert abs(left - start / total) < 0.005 and abs(width - (end - start) / total) < 0.005

    players = page.locator("audio")
    expect(players).to_have_count(3)  # the mix and both channels
    for index in range(3):
        page.wait_for_function("a => a.readyState >= 1 && a.duration > 0", arg=players.nth(index).element_handle())
    mix_s, source = page.evaluate("a => [a.duration, a.currentSrc]", players.first.element_handle())
    # An MP3 (served first when lame made one) is longer by the encoder's delay and padding: at 8 kHz
    # LAME adds 1105 samples plus up to one 576-sample frame, about 0.21 s.
    tolerance = 0.25 if source.endswith(".mp3") else 0.05
    assert abs(mix_s - finished["audio"]["duration_ms"] / 1000) < tolerance
    expect(page.locator(".recording").first.locator(".readings")).to_contain_text("SNR")
    screenshot(page, "conversation")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "conversation-phone")


def test_holds_and_announcements_are_shown_live_and_on_the_timeline(page, stack):
    sign_in(page)
    player = Player(stack.emulator)
    card = page.locator(f'li.card[data-room="{HOLD_ROOM}"]')
    # A call's events seconds apart, as SignalWire's one-second Timestamps can order them.
    player.play(
        [("call", "host", HOLD_ROOM), ("wait", 1.2), ("call", "guest", HOLD_ROOM), ("wait", 1.2), ("hold", "guest")]
    )
    expect(card.locator(".badge")).to_have_text("paused")
    expect(card.locator('.people li:has(.tag[data-tag="hold"]) .number')).to_have_text(caller_number("guest"))
    expect(card.locator("[data-field=present_words]")).to_have_text("2 on the line (1 on hold)")
    expect(card.locator(".rule")).to_be_hidden()  # the room follows the default rule, which the page states once
    expect(page.locator("#rule")).to_contain_text("callers on hold do not count; announces the recording")
    screenshot(page, "live-hold")
    player.play([("wait", 1.2), ("unhold", "guest")])
    expect(card.locator(".badge")).to_have_text("recording")
    player.play([("wait", 1.2), ("hangup", "guest"), ("wait", 0.3), ("hangup", "host")])
    assert stack.settle() and stack.wait_for_empty_store(10)
    (record,) = [c for c in services(stack.app).archive.all() if c["room"] == HOLD_ROOM]
    assert [a["outcome"] for a in record["announcements"]] == ["played", "played"]  # the start and the resume

    page.goto(f"/conversations/{record['id']}")
    guest_lane = page.locator(f'g.lane[data-label$="{caller_number("guest")}"]')
    expect(guest_lane.locator('rect.span[data-state="on hold"]')).to_have_count(1)
    expect(page.locator("svg.timeline g.mark")).to_have_count(2)
    screenshot(page, "conversation-hold")


def test_the_secure_pause_button_stops_every_recording_until_resumed(page, stack):
    sign_in(page)
    page.evaluate("window.notReloaded = true")
    player = Player(stack.emulator)
    card = page.locator(f'li.card[data-room="{SECURE_ROOM}"]')
    player.play([("call", "host", SECURE_ROOM), ("wait", 1.2), ("call", "guest", SECURE_ROOM)])
    expect(card.locator(".badge")).to_have_text("recording")
    # A post without the session's CSRF token, though the cookie goes with it, changes nothing.
    assert page.request.post(f"/live/{SECURE_ROOM}/secure-pause", form={"reason": "forged"}).status == 403
    card.get_by_label("Reason (optional)").fill("card number")
    screenshot(page, "live-secure-pause-ready")
    card.get_by_role("button", name=f"Secure pause in room {SECURE_ROOM}").click()
    expect(card.locator(".badge")).to_have_text("paused")
    words = card.locator("[data-field=secure_words]")
    expect(words).to_contain_text("Secure pause by dashboard since")
    expect(words).to_contain_text("(card number): nothing is recorded; it ends by itself at")
    resume = card.get_by_role("button", name=f"Resume recording in room {SECURE_ROOM}")
    expect(resume).to_be_visible()
    expect(card.get_by_label("Reason (optional)")).to_be_hidden()
    (conf,) = stack.emulator.conferences(SECURE_ROOM)
    recordings = conf.recording_sids + [
        sid for call in stack.emulator.sim.calls.values() if call.to == SECURE_ROOM for sid in call.recording_sids
    ]
    assert len(recordings) == 3  # the mix and each caller's own, all paused
    assert wait_until(lambda: all(stack.emulator.recording(sid).status == "paused" for sid in recordings), 5)
    screenshot(page, "live-secure-pause")

    resume.click()
    expect(card.locator(".badge")).to_have_text("recording")
    expect(words).to_be_hidden()
    expect(card.get_by_role("button", name=f"Secure pause in room {SECURE_ROOM}")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True
    assert page.evaluate("document.activeElement.closest('form.secure') !== null")  # focus stayed on the button
    player.play([("wait", 1.2), ("hangup", "guest"), ("wait", 0.3), ("hangup", "host")])
    assert stack.settle() and stack.wait_for_empty_store(10)
    (record,) = [c for c in services(stack.app).archive.all() if c["room"] == SECURE_ROOM]
    (entry,) = record["secure_pauses"]
    assert (entry["by"], entry["reason"], entry["ended"], entry["resumed_by"]) == (
        "dashboard",
        "card number",
        "resumed",
        "dashboard",
    )

    page.goto(f"/conversations/{record['id']}")
    lane = page.locator('g.lane[data-kind="recording"]')
    expect(lane.locator('rect.span[data-state="secure pause"]')).to_have_count(1)
    expect(page.get_by_role("list", name="Legend")).to_contain_text("secure pause")
    page.get_by_text("The timeline as a table").click()
    row = "secure pause by dashboard (card number), resumed by dashboard"
    expect(page.get_by_role("cell", name=row)).to_be_visible()
    screenshot(page, "conversation-secure-pause")


def test_history_lists_filters_and_links(page, stack, finished):
    sign_in(page)
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="History").click()
    row = page.locator(f'tr[data-id="{finished["id"]}"]')
    expect(row).to_contain_text(DONE_ROOM)
    expect(row).to_contain_text("ready")
    screenshot(page, "history")
    page.get_by_label("Room").select_option(DONE_ROOM)
    page.get_by_role("button", name="Show").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    assert "room=%2B15550199" in page.url
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name=f"Conversation in room {DONE_ROOM}")).to_be_visible()


def test_conversation_page_draws_each_callers_talk_and_its_table(browser):
    """TALK_TIME on the scripted turns of test_talk_end_to_end (a hold pauses the recording in the middle)."""
    with quorum_stack(api_token=TOKEN, participant_recording="inbound", talk_time=True) as talking:
        Player(talking.emulator).play(TALK_OPENING + TALK_REST)
        assert talking.settle() and talking.wait_for_empty_store(10)
        (record,) = services(talking.app).archive.all()
        context = browser.new_context(base_url=talking.config.public_url, viewport={"width": 1100, "height": 800})
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        sign_in(page)
        page.goto(f"/conversations/{record['id']}")
        drawn = page.eval_on_selector_all(
            "svg.timeline g.lane[data-kind=channel]",
            """lanes => lanes.map(lane =>
            [...lane.querySelectorAll('rect.talk')].map(r => [+r.dataset.startMs, +r.dataset.endMs]))""",
        )
        assert drawn == [[[s["start_ms"], s["end_ms"]] for s in c["talk"]["spans"]] for c in record["channels"]]
        assert all(drawn)  # both callers talked while the recording ran
        table = page.get_by_role("region", name="Talk time table")
        rows = table.locator("tbody tr")
        expect(rows).to_have_count(2)
        for row, channel in zip(range(2), record["channels"]):
            expect(rows.nth(row)).to_contain_text(f"{channel['talk']['seconds']:.1f} s")
            expect(rows.nth(row)).to_contain_text(f"{channel['talk']['share']:.0%}")
        expect(table.locator("tfoot")).to_contain_text(f"{record['talk']['silence_s']:.1f} s")
        expect(page.locator("[data-source=speaker-events]")).to_contain_text("speaker events")
        expect(page.get_by_role("list", name="Legend")).to_contain_text("talking (recorded time only)")
        screenshot(page, "conversation-talk")
        context.close()
