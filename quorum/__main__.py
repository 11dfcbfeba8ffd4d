"""`python -m quorum point-number [+1NUMBER]`: point a number's voice webhook and StatusCallback at PUBLIC_URL.

For production numbers (behind ngrok, `python app.py` does it itself). Without an argument it points
SIGNALWIRE_PHONE_NUMBER. Prints one line; exits 0 when the number was pointed, 1 when SignalWire would not,
2 when the settings or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from config import Config, ConfigError
from quorum.gateway import SignalWireGateway, build_client
from quorum.tunnel import point_number


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m quorum")
    commands = parser.add_subparsers(dest="command", required=True)
    pointing = commands.add_parser(
        "point-number", help="point a number's voice webhook and StatusCallback at PUBLIC_URL"
    )
    pointing.add_argument("number", nargs="?", help="E.164, e.g. +15551230000 (default: SIGNALWIRE_PHONE_NUMBER)")
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
    except ConfigError as error:
        print(f"quorum: configuration error: {error}", file=sys.stderr)
        return 2
    number = (args.number or config.signalwire_phone_number or "").strip()
    if not number:
        print("quorum: no number to point: give one, or set SIGNALWIRE_PHONE_NUMBER", file=sys.stderr)
        return 2
    if not config.public_url:
        print(f"quorum: PUBLIC_URL is not set: nothing to point {number} at", file=sys.stderr)
        return 2
    done, said = point_number(SignalWireGateway(build_client(config)), number, config.public_url)
    print(f"quorum: {said}", file=sys.stdout if done else sys.stderr)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
