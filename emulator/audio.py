"""Synthetic speech-like audio: one seeded voice per caller, mixed into recordings.

Every voice is a pure function of the sample index, so any span of a recording can be
rendered on its own and spans line up. A voice is a harmonic source with a slowly
wandering pitch, shaped by vowel formants, cut into syllables (4-6 per second) grouped
in phrases, with word gaps, turns of silence and a noise burst at each syllable's onset;
it is heard through the caller's own room (exponential reverberation tail, RT60
0.25-0.7 s) over a faint line hiss, so SNR and RT60 estimators have something real to
measure. Recordings are 8 kHz 16-bit PCM like SignalWire's.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import wave
import zlib
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

RATE = 8000
PEAK = 0.45  # one voice's peak: speech-like level, and a few overlapping voices rarely clip
PHRASE_SYLLABLES = 7
WORD_GAP = 0.18  # the share of a phrase's syllables left silent: gaps between words
# F1-F3 (Hz) of /a e i o u/.
VOWELS = np.array([(730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240)])
FORMANT_GAIN = np.array([1.0, 0.55, 0.3])
FORMANT_WIDTH = np.array([70.0, 90.0, 120.0])
NOISE_LEN = 1 << 16
_MASK = (1 << 64) - 1


def _unit(seed: int, index: np.ndarray, salt: int) -> np.ndarray:
    """A stateless uniform [0, 1) per (seed, salt, index): splitmix64 of the index."""
    x = index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64((seed * 1_000_003 + salt) & _MASK)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def voice_seed(seed: int, caller: str) -> int:
    """The voice of a caller (its From number) under an emulator seed: same caller, same voice."""
    return zlib.crc32(f"{seed}/{caller}".encode())


class Voice:
    """One speaker: pitch, speaking rate, vocal tract length and talkativeness drawn from `seed`.

    `script` (spans in samples, as `render` counts them) replaces its own turns: it talks exactly then,
    every syllable spoken, and is silent otherwise (scenarios with known talk spans).
    """

    def __init__(self, seed: int, script: Optional[Sequence[Tuple[int, int]]] = None):
        rng = random.Random(seed)
        self.seed = seed
        self.script = None if script is None else tuple(sorted((int(a), int(b)) for a, b in script if b > a))
        self.f0 = rng.uniform(85.0, 240.0)
        self.syllable_s = rng.uniform(0.16, 0.26)
        self.talk_share = rng.uniform(0.5, 0.75)
        self._intonation = [
            (rng.uniform(0.06, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0, 6.3)),
            (rng.uniform(0.02, 0.05), rng.uniform(1.5, 2.5), rng.uniform(0, 6.3)),
        ]
        self._harmonics = self._vowel_table(rng.uniform(0.88, 1.15))
        self.rt60 = rng.uniform(0.25, 0.7)
        self.hiss = rng.uniform(0.001, 0.004)  # line noise: about 20-30 dB below the speech
        noise = np.random.default_rng(seed)
        self._noise = np.diff(noise.standard_normal(NOISE_LEN + 1)).astype(np.float32)
        self._hiss = noise.standard_normal(NOISE_LEN).astype(np.float32)
        self._room = self._impulse_response(noise)

    def _vowel_table(self, tract: float) -> np.ndarray:
        """Harmonic amplitudes per vowel: formant resonances sampled at k * f0, rows summing to 1."""
        top = int(3600 / (self.f0 * 1.2))  # stay under Nyquist at the highest pitch
        freqs = self.f0 * np.arange(1, top + 1)
        offsets = (freqs[None, :, None] - VOWELS[:, None, :] * tract) / FORMANT_WIDTH
        gains = (FORMANT_GAIN / (1.0 + offsets**2)).sum(axis=2) / np.sqrt(np.arange(1, top + 1))
        return gains / gains.sum(axis=1, keepdims=True)

    def _impulse_response(self, noise: np.random.Generator) -> np.ndarray:
        """Direct sound plus a noise tail decaying 60 dB over rt60 (a third of the direct energy)."""
        n = np.arange(1, int(self.rt60 * RATE))
        tail = noise.standard_normal(n.size) * np.exp(-6.908 * n / (self.rt60 * RATE))
        tail *= np.sqrt(0.33 / np.sum(tail**2))
        return np.concatenate([[1.0], tail])

    def _phase(self, t: np.ndarray) -> np.ndarray:
        """Integral of the wandering pitch, in closed form so any span can start anywhere."""
        wander = sum(
            depth / (2 * np.pi * rate) * np.cos(2 * np.pi * rate * t + at) for depth, rate, at in self._intonation
        )
        return 2 * np.pi * self.f0 * (t - wander)

    def render(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count) of this voice as heard on its line: room and hiss included."""
        if count <= 0:
            return np.zeros(0, dtype=np.float32)
        tail = self._room.size - 1
        dry = self._dry(start - tail, count + tail)  # the room still rings with what came before `start`
        size = 1 << int(np.ceil(np.log2(dry.size + tail)))
        wet = np.fft.irfft(np.fft.rfft(dry, size) * np.fft.rfft(self._room, size), size)[tail : tail + count]
        hiss = self.hiss * self._hiss[np.arange(start, start + count) % NOISE_LEN]
        return (wet + hiss).astype(np.float32)

    def speech(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        """The spans (samples) this voice talks from sample `start` on, in order, as SignalWire's speaker events
        would report them: each run of talking phrases from its first spoken syllable to the end of its last
        (the word gaps inside are part of it), or the script's spans. Unending without a script."""
        if self.script is not None:
            yield from ((max(a, start), b) for a, b in self.script if b > start)
            return
        syllable_samples = self.syllable_s * RATE
        phrase = int(start / syllable_samples) // PHRASE_SYLLABLES
        while True:
            while not self._talking(phrase):
                phrase += 1
            first = phrase
            while self._talking(phrase + 1):
                phrase += 1
            spoken = [k for k in range(first * PHRASE_SYLLABLES, (phrase + 1) * PHRASE_SYLLABLES) if self._spoken(k)]
            phrase += 1
            if spoken:
                begin, end = round(spoken[0] * syllable_samples), round((spoken[-1] + 1) * syllable_samples)
                if end > start:
                    yield max(begin, start), end

    def _talking(self, phrase: int) -> bool:
        """Whether the voice talks in this phrase (not one of its turns of silence)."""
        return bool(_unit(self.seed, np.array([phrase]), 1)[0] < self.talk_share)

    def _spoken(self, syllable: int) -> bool:
        """Whether this syllable of a talking phrase is spoken (not a word gap)."""
        return bool(_unit(self.seed, np.array([syllable]), 2)[0] >= WORD_GAP)

    def _dry(self, start: int, count: int) -> np.ndarray:
        """The speech itself, before the room: samples [start, start + count)."""
        n = np.arange(start, start + count, dtype=np.int64)
        t = n / RATE
        position = t / self.syllable_s
        syllable = np.floor(position).astype(np.int64)
        within = position - syllable
        if self.script is None:
            talking = _unit(self.seed, syllable // PHRASE_SYLLABLES, 1) < self.talk_share
            spoken = talking & (_unit(self.seed, syllable, 2) >= WORD_GAP)
        else:
            spoken = np.zeros(count, dtype=bool)
            for a, b in self.script:
                spoken |= (n >= a) & (n < b)
        vowel = (_unit(self.seed, syllable, 3) * len(VOWELS)).astype(np.int64)
        stress = 0.55 + 0.45 * _unit(self.seed, syllable, 4)
        phase = self._phase(t)
        voiced = np.zeros(count)
        for k in range(self._harmonics.shape[1]):
            voiced += self._harmonics[vowel, k] * np.sin((k + 1) * phase)
        envelope = np.where(spoken, stress * np.sin(np.pi * within) ** 2, 0.0)
        burst = np.where(spoken, np.clip(1.0 - within / 0.12, 0.0, 1.0), 0.0) * 0.15 * self._noise[n % NOISE_LEN]
        return PEAK * (envelope * voiced + burst)


@dataclass(frozen=True)
class Part:
    """A voice heard on a track from sample `start` (inclusive) to `end` (exclusive, None: still on)."""

    voice: Voice
    start: int
    end: Optional[int]


def mix(parts: Sequence[Part], start: int, count: int) -> np.ndarray:
    """The sum of every part heard within samples [start, start + count)."""
    out = np.zeros(count, dtype=np.float32)
    for part in parts:
        lo = max(start, part.start)
        hi = start + count if part.end is None else min(start + count, part.end)
        if hi > lo:
            out[lo - start : hi - start] += part.voice.render(lo, hi - lo)
    return out


@dataclass(frozen=True)
class Piece:
    """A span of a recording in samples: audio from the tracks, or silence."""

    start: int
    end: int
    silent: bool


def render(pieces: Sequence[Piece], tracks: Sequence[Sequence[Part]]) -> np.ndarray:
    """A recording: the pieces one after another, one column per track (channel)."""
    columns: List[np.ndarray] = []
    for parts in tracks:
        chunks = [
            np.zeros(p.end - p.start, dtype=np.float32) if p.silent else mix(parts, p.start, p.end - p.start)
            for p in pieces
        ]
        columns.append(np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32))
    return np.stack(columns, axis=1)


def wav_bytes(samples: np.ndarray) -> bytes:
    """16-bit PCM WAV at RATE from float samples shaped (frames, channels)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def mp3_encoder() -> Optional[List[str]]:
    """The command that turns WAV on stdin into MP3 on stdout, if lame or ffmpeg is installed."""
    lame = shutil.which("lame")
    if lame:
        return [lame, "--quiet", "-", "-"]
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        return [ffmpeg, "-loglevel", "error", "-f", "wav", "-i", "pipe:0", "-f", "mp3", "pipe:1"]
    return None


def mp3_bytes(wav: bytes) -> Optional[bytes]:
    """The WAV encoded as MP3, or None when no encoder is installed."""
    command = mp3_encoder()
    if command is None:
        return None
    return subprocess.run(command, input=wav, capture_output=True, check=True, timeout=60).stdout
