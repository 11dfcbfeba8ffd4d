"""`python -m emulator`: run the SignalWire emulator on its own, e.g. for a Quorum you start yourself.

    python -m emulator --port 8089 --number +15550100=http://127.0.0.1:5000/voice/inbound --play demo

prints the settings to give Quorum, serves until Ctrl-C and prints events as they happen. From another
terminal, place a call into it (the credentials default to SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN, the
emulator to SIGNALWIRE_API_URL, else http://127.0.0.1:8089):

    python -m emulator call +15550100 [--from NUMBER] [--hold-after S] [--hangup-after S] [--project P --token T]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
from typing import List, Optional

import requests

from emulator.control import request_call
from emulator.demo import EventPrinter
from emulator.faults import Behaviour, Faults
from emulator.scenarios import SCENARIOS, Player
from emulator.server import Emulator


CONVERTERS = {
    "float": float,
    "bool": lambda raw: raw.lower() in ("1", "true", "yes"),
    "str": str,
    "frozenset": lambda raw: frozenset(raw.split(",")),
}


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


def call(argv: List[str]) -> int:
    """`python -m emulator call`: place one call into a running emulator and say where it went (0: it joined)."""
    parser = argparse.ArgumentParser(prog="python -m emulator call", description="place a call into a running emulator")
    parser.add_argument("room", metavar="ROOM", help="the number to dial (with CONFERENCE_ROOM=per-number, the room)")
    parser.add_argument("--from", dest="from_", metavar="NUMBER", help="the caller (default: a new one each call)")
    parser.add_argument("--hold-after", type=float, metavar="S", help="put the call on hold S seconds after it joins")
    parser.add_argument(
        "--hangup-after",
        type=float,
        metavar="S",
        help="hang up S seconds after it joins (default: never, until the emulator stops)",
    )
    parser.add_argument("--emulator", default=os.environ.get("SIGNALWIRE_API_URL") or "http://127.0.0.1:8089")
    parser.add_argument("--project", default=os.environ.get("SIGNALWIRE_PROJECT_ID", ""))
    parser.add_argument("--token", default=os.environ.get("SIGNALWIRE_API_TOKEN", ""))
    args = parser.parse_args(argv)
    try:
        answer = request_call(
            args.emulator, args.project, args.token, args.room, args.from_, args.hold_after, args.hangup_after
        )
    except requests.RequestException as failure:
        print(
            f"no emulator answers at {args.emulator} ({type(failure).__name__}): start one with python -m emulator",
            file=sys.stderr,
        )
        return 2
    if answer.status_code == 401:
        print(
            f"the emulator at {args.emulator} refused these credentials: give it its --project and --token "
            "(it prints them when it starts)",
            file=sys.stderr,
        )
        return 2
    if answer.status_code != 200:
        print(f"the emulator refused the call: {answer.json().get('message', answer.status_code)}", file=sys.stderr)
        return 2
    placed = answer.json()
    print(f"call {placed['sid']} from {placed['from']} to {placed['to']}: {_where(placed, args)}")
    return 0 if placed["conference_sid"] else 1


def _where(placed: dict, args) -> str:
    """Where a placed call went, and what it will do."""
    if placed["status"] == "failed":
        return f"FAILED: {placed['detail']}"
    if not placed["conference_sid"]:
        return f"{placed['status']}, never in a conference"
    plan = [
        f"{what} after {seconds:g} s"
        for what, seconds in (("hold", args.hold_after), ("hang up", args.hangup_after))
        if seconds is not None
    ]
    return "in the conference" + (f" ({', '.join(plan)})" if plan else " (on the line until the emulator stops)")


def main(argv: Optional[List[str]] = None) -> int:
    """Serve until interrupted; `call ...` places a call into an emulator that serves already."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["call"]:
        return call(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089, help="0 picks a free port")
    parser.add_argument("--project")
    parser.add_argument("--token")
    parser.add_argument("--signing-key")
    parser.add_argument("--seed", type=int, default=0, help="voices and fault decisions")
    parser.add_argument("--number", action="append", default=[], metavar="NUMBER=VOICE_URL")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="e.g. callback_duplicate=0.2, rest_latency_s=0.1, "
        "callback_drop_events=conference-start (see emulator/faults.py)",
    )
    parser.add_argument(
        "--behaviour",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="where SignalWire's docs are silent, e.g. unstarted_conference_end=false, "
        "empty_conference_recording=failed (see Behaviour in emulator/faults.py)",
    )
    parser.add_argument("--play", choices=sorted(SCENARIOS), help="play a scenario once the server is up")
    args = parser.parse_args(argv)
    emulator = Emulator(
        project=args.project,
        token=args.token,
        signing_key=args.signing_key,
        faults=parse_faults(args.fault, args.seed),
        seed=args.seed,
        host=args.host,
        port=args.port,
        behaviour=parse_behaviour(args.behaviour),
    )
    with emulator:
        for pair in args.number:
            number, _, voice_url = pair.partition("=")
            emulator.add_number(number, voice_url)
        print(
            f"SignalWire emulator on {emulator.url}. Give Quorum:\n"
            f"  SIGNALWIRE_PROJECT_ID={emulator.project}\n  SIGNALWIRE_API_TOKEN={emulator.token}\n"
            f"  SIGNALWIRE_SIGNING_KEY={emulator.signing_key}\n  SIGNALWIRE_SPACE_URL=emulator.invalid\n"
            f"  SIGNALWIRE_API_URL={emulator.url}\nPlace a call: python -m emulator call NUMBER --emulator "
            f"{emulator.url} --project {emulator.project} --token {emulator.token}\nCtrl-C stops.",
            flush=True,
        )
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
