"""Voice activity in one channel's recording: 20 ms frame energies against the channel's own floor, with a hangover.

    file_spans(path) -> [(start_s, end_s)]      when the voice on a 16-bit PCM WAV (mono; the first channel) talks

numpy only. A frame is speech when its energy is at least FLOOR_MARGIN_DB above the channel's floor (the
FLOOR_PERCENTILE of its frame energies: a caller on their own channel listens most of the time, and only
the line's hiss is left then) and no more than PEAK_RANGE_DB below its loud speech (the PEAK_PERCENTILE).
A run of speech frames ends at its last frame within RELEASE_RANGE_DB of the loud speech: after the voice
stops, the room's echo decays through the threshold (60 dB per RT60) and would add a third of the RT60 to
every turn.
Runs closer than HANGOVER_S are joined (the hangover: pauses between words and breaths belong to the turn),
and runs shorter than MIN_SPEECH_S dropped (clicks). A channel whose loud frames are less than MIN_RANGE_DB
above its floor has no speech at all. Limits: a channel that talks nearly all the time has no quiet frames,
its floor is speech and its talk undercounts; a pause shorter than HANGOVER_S counts as talk; speech more
than PEAK_RANGE_DB below the caller's loudest (a whisper, a voice in the caller's background) is missed.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import List, Tuple

import numpy as np

FRAME_S = 0.02
FLOOR_PERCENTILE = 10
PEAK_PERCENTILE = 99
FLOOR_MARGIN_DB = 12.0
PEAK_RANGE_DB = 25.0
RELEASE_RANGE_DB = 13.0
MIN_RANGE_DB = 15.0
HANGOVER_S = 0.9
MIN_SPEECH_S = 0.1
BLOCK_S = 60.0  # read at a time: memory does not grow with the recording's length


def frame_levels(path: Path) -> Tuple[np.ndarray, float]:
    """Each frame's energy in dB of full scale, and the frame length in seconds (the last partial frame dropped)."""
    with wave.open(str(path)) as reader:
        if reader.getsampwidth() != 2:
            raise ValueError(f"{reader.getsampwidth() * 8}-bit samples, not 16-bit PCM")
        rate, channels = reader.getframerate(), reader.getnchannels()
        frame = max(1, round(FRAME_S * rate))
        block = frame * max(1, round(BLOCK_S / FRAME_S))
        levels, carry = [], np.zeros(0, dtype=np.float64)
        while True:
            raw = reader.readframes(block)
            if not raw:
                break
            samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)[:, 0] / 32768.0
            samples = np.concatenate([carry, samples])
            whole = len(samples) // frame * frame
            power = np.mean(samples[:whole].reshape(-1, frame) ** 2, axis=1)
            levels.append(10 * np.log10(power + 1e-12))
            carry = samples[whole:]
    return (np.concatenate(levels) if levels else np.zeros(0)), frame / rate


def speech_spans(levels: np.ndarray, frame_s: float) -> List[Tuple[float, float]]:
    """The spans (seconds) where the frames' levels say someone talks."""
    if levels.size == 0:
        return []
    floor, peak = np.percentile(levels, FLOOR_PERCENTILE), np.percentile(levels, PEAK_PERCENTILE)
    if peak - floor < MIN_RANGE_DB:
        return []
    threshold = max(floor + FLOOR_MARGIN_DB, peak - PEAK_RANGE_DB)
    active, strong = levels >= threshold, levels >= max(threshold, peak - RELEASE_RANGE_DB)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    runs: List[List[int]] = []
    for start, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
        loud = np.flatnonzero(strong[start:end])
        if loud.size == 0:
            continue  # never loud: an echo's tail or a breath
        end = start + int(loud[-1]) + 1  # the room's echo, decaying after the voice stopped, stays out
        if runs and (start - runs[-1][1]) * frame_s < HANGOVER_S:
            runs[-1][1] = end
        else:
            runs.append([start, end])
    return [
        (round(start * frame_s, 3), round(end * frame_s, 3))
        for start, end in runs
        if (end - start) * frame_s >= MIN_SPEECH_S
    ]


def file_spans(path: Path) -> List[Tuple[float, float]]:
    """When the voice on the WAV talks, in seconds from its start; ValueError or wave.Error if it cannot be read."""
    return speech_spans(*frame_levels(path))
