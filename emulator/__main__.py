"""`python -m emulator`: run the SignalWire emulator on its own, e.g. for a Quorum you start yourself.

    python -m emulator --port 8089 --number +15550100=http://127.0.0.1:5000/voice/inbound --play demo

prints the settings to give Quorum, serves until Ctrl-C and prints events as they happen.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
from typing import List, Optional

from emulator.demo import EventPrinter
from emulator.faults import Behaviour, Faults
from emulator.scenarios import SCENARIOS, Player
from emulator.server import Emulator


CONVERTERS = {"float": float, "bool": lambda raw: raw.lower() in ("1", "true", "yes"), "str": str,
              "frozenset": lambda raw: frozenset(raw.split(","))}


def parse_faults(pairs: List[str], seed: int) -> Faults:
    """`name=value` pairs into Faults, each value converted to its field's type."""
    return Faults(seed=seed, **_knobs(Faults, pairs, "fault"))


def parse_behaviour(pairs: List[str]) -> Behaviour:
    """`name=value` pairs into Behaviour (choices where SignalWire's docs are silent)."""
    return Behaviour(**_knobs(Behaviour, pairs, "behaviour"))


def _knobs(kind, pairs: List[str], what: str) -> dict:
    """`name=value` pairs as keyword arguments of dataclass `kind` (its seed excluded)."""
    types = {f.name: f.type for f in dataclasses.fields(kind) if f.name != "seed"}
    values = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        if name not in types:
            raise SystemExit(f"unknown {what} {name!r}; choose from {', '.join(sorted(types))}")
        values[name] = CONVERTERS[types[name]](raw)
    return values


def main(argv: Optional[List[str]] = None) -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089, help="0 picks a free port")
    parser.add_argument("--project")
    parser.add_argument("--token")
    parser.add_argument("--signing-key")
    parser.add_argument("--seed", type=int, default=0, help="voices and fault decisions")
    parser.add_argument("--number", action="append", default=[], metavar="NUMBER=VOICE_URL")
    parser.add_argument("--fault", action="append", default=[], metavar="KNOB=VALUE",
                        help="e.g. callback_duplicate=0.2, rest_latency_s=0.1, "
                             "callback_drop_events=conference-start (see emulator/faults.py)")
    parser.add_argument("--behaviour", action="append", default=[], metavar="KNOB=VALUE",
                        help="where SignalWire's docs are silent, e.g. unstarted_conference_end=false, "
                             "empty_conference_recording=failed (see Behaviour in emulator/faults.py)")
    parser.add_argument("--play", choices=sorted(SCENARIOS), help="play a scenario once the server is up")
    args = parser.parse_args(argv)
    emulator = Emulator(project=args.project, token=args.token, signing_key=args.signing_key,
                        faults=parse_faults(args.fault, args.seed), seed=args.seed, host=args.host, port=args.port,
                        behaviour=parse_behaviour(args.behaviour))
    with emulator:
        for pair in args.number:
            number, _, voice_url = pair.partition("=")
            emulator.add_number(number, voice_url)
        print(f"SignalWire emulator on {emulator.url}. Give Quorum:\n"
              f"  SIGNALWIRE_PROJECT_ID={emulator.project}\n  SIGNALWIRE_API_TOKEN={emulator.token}\n"
              f"  SIGNALWIRE_SIGNING_KEY={emulator.signing_key}\n  SIGNALWIRE_SPACE_URL=emulator.invalid\n"
              f"  SIGNALWIRE_API_URL={emulator.url}\nCtrl-C stops.", flush=True)
        emulator.sim.listeners.append(EventPrinter())
        try:
            if args.play:
                Player(emulator).play(SCENARIOS[args.play])
            threading.Event().wait()
        except KeyboardInterrupt:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
