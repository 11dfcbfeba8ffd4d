"""The emulator from the command line: an ad-hoc call into a running emulator (`python -m emulator call`), and
a refused webhook that is one line, never a traceback."""

import sys
import threading
import time

from e2e_support import Sink, quorum_stack
from emulator.__main__ import main as emulator_command
from emulator.demo import EventPrinter, linger, report
from emulator.scenarios import DEMO, DEMO_NUMBER, Player, scaled
from emulator.server import Emulator
from support import free_port


def call(stack, *options):
    """`python -m emulator call DEMO_NUMBER OPTIONS` against the stack's emulator, in this process."""
    emulator = stack.emulator
    return emulator_command(
        [
            "call",
            DEMO_NUMBER,
            "--emulator",
            emulator.url,
            "--project",
            emulator.project,
            "--token",
            emulator.token,
            *options,
        ]
    )


def kinds(stack, label):
    """What became of the caller `label`'s call, in order."""
    return [
        e.kind
        for e in stack.emulator.sim.events
        if e.label == label and e.kind in ("joined", "held", "left", "call-ended", "call-failed")
    ]


def wait_for(condition, timeout: float = 10) -> bool:
    """Poll `condition` until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_call_from_the_command_line_joins_holds_and_hangs_up(capsys):
    with quorum_stack() as stack:
        assert call(stack, "--from", "+15551230001") == 0
        assert call(stack, "--from", "+15551230002", "--hold-after", "0.2", "--hangup-after", "0.5") == 0
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 2 and f"from +15551230002 to {DEMO_NUMBER}: in the conference" in out[1], out
        assert "hold after 0.2 s, hang up after 0.5 s" in out[1]
        assert wait_for(lambda: "left" in kinds(stack, "+15551230002"))
        assert kinds(stack, "+15551230002") == ["joined", "held", "left", "call-ended"]
        assert kinds(stack, "+15551230001") == ["joined"]  # no --hangup-after: still on the line
        assert stack.settle()
        conf = stack.store.get(DEMO_NUMBER)
        assert len(conf.present()) == 1  # Quorum saw both join and one leave
        assert stack.log.errors() == []


def test_a_call_that_quorum_refuses_says_so_in_one_line(capsys):
    with quorum_stack(wrong_signing_key=True) as stack:
        assert call(stack, "--hangup-after", "1") == 1
    assert capsys.readouterr().out.strip().endswith("FAILED: voice webhook answered 403")


def test_no_emulator_is_one_line(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert emulator_command(["call", DEMO_NUMBER, "--emulator", url, "--project", "p", "--token", "t"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"no emulator answers at {url}")


def test_the_demo_against_a_quorum_that_refuses_every_webhook_prints_no_traceback(capsys):
    with quorum_stack(wrong_signing_key=True) as stack:
        stack.emulator.sim.listeners.append(EventPrinter(sys.stdout))
        Player(stack.emulator).play(scaled(DEMO, 0.02))  # holds and hangups of calls that never joined
        assert stack.emulator.settle()
        problems = report(stack.emulator, 2)
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert "call guest FAILED: voice webhook answered 403" in out.out
    assert "voice answered 403" in problems


def test_the_lingering_demo_stays_up_and_prints_a_call_command_that_works(capsys):
    with Sink() as sink, Emulator() as emulator:
        emulator.add_number(DEMO_NUMBER, sink.base + "/voice/inbound")
        lingering = threading.Thread(target=linger, args=(emulator, "http://127.0.0.1:5000", "tok", 2.0))
        lingering.start()
        out = []
        assert wait_for(lambda: out.append(capsys.readouterr().out) or "emulator call" in "".join(out))
        text = "".join(out)
        assert "stay up for 2 s" in text and "http://127.0.0.1:5000/login?token=tok" in text
        line = next(line for line in text.splitlines() if "python -m emulator call" in line)
        command = line.split("python -m emulator ", 1)[1].split(" [")[0].split()
        assert emulator_command([*command, "--hangup-after", "0"]) == 0
        lingering.join()
    assert "/voice/inbound" in [r.path for r in sink.received]
