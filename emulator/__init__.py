"""A SignalWire emulator: the Compatibility REST API subset Quorum uses, simulated
callers and conferences that send signed callbacks, real recordings, fault knobs.

    with Emulator(faults=Faults(rest_latency_s=0.05)) as emulator:
        emulator.add_number("+15550100", "http://127.0.0.1:5000/voice/inbound")
        Player(emulator).play(DEMO)
"""

from emulator.faults import Behaviour, Faults
from emulator.scenarios import DEMO, Player
from emulator.server import Emulator

__all__ = ["DEMO", "Behaviour", "Emulator", "Faults", "Player"]
