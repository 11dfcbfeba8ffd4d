"""The emulator from the command line: a refused webhook is one line, never a traceback."""

import sys

from e2e_support import quorum_stack
from emulator.demo import EventPrinter, report
from emulator.scenarios import DEMO, Player, scaled


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
