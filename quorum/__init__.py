"""The recording core: the /voice webhooks, the quorum policy, the command queue and the SignalWire gateway."""
