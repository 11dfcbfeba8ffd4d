"""Synthetic speech corpus with known SNR and RT60 for benchmarking audio_quality."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

# IEEE 1969 "Harvard" sentences (public domain); even indices for calibration, odd for the test split.
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "Large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
]

# Disjoint voice sets so nothing tuned on "dev" is scored on "test".
VOICES = {
    "dev": ["en-us", "en-gb+f3", "en-gb-scotland+m3", "en-029+f2"],
    "test": ["en-us+f4", "en-gb-x-rp+m4", "en-gb-x-gbclan+f1", "en-gb-x-gbcwmd+m7", "en-us+m2"],
}
BABBLE_VOICES = ["en-us+m1", "en-gb+f2", "en-us+f5", "en-gb-x-rp+m6", "en-029+m2", "en-gb-scotland+f4"]


@dataclass(frozen=True)
class Clip:
    """One synthetic recording and the truth it was built from."""

    samples: np.ndarray  # float64, full-scale about +-1
    sample_rate: int
    snr_db: float | None  # whole-file speech energy / noise energy; None when no noise was added
    rt60: float | None  # None for a dry (anechoic) clip
    noise: str
    pauses: bool


def espeak_available() -> bool:
    """True when the espeak-ng binary is on PATH."""
    return shutil.which("espeak-ng") is not None


class Speaker:
    """Renders sentences with espeak-ng, cached on disk, resampled to the target rate."""

    def __init__(self, cache_dir: Path, sample_rate: int):
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate

    def say(self, text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
        """Speech for one sentence as float64 at the target rate, silence trimmed at both ends."""
        key = hashlib.sha1(f"{text}|{voice}|{speed}|{pitch}|{self.sample_rate}".encode()).hexdigest()[:16] + ".npy"
        path = self.cache_dir / key
        if path.exists():
            return np.load(path)
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text],
                check=True,
                capture_output=True,
            )
            with wave.open(tmp.name, "rb") as w:
                rate = w.getframerate()
                raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
        g = np.gcd(rate, self.sample_rate)
        x = signal.resample_poly(raw, self.sample_rate // g, rate // g)
        x = _trim(x, self.sample_rate)
        np.save(path, x)
        return x


def _trim(x: np.ndarray, fs: int) -> np.ndarray:
    """Drop leading and trailing silence (below -50 dB of the peak)."""
    loud = np.flatnonzero(np.abs(x) > 10 ** (-50 / 20) * np.max(np.abs(x)))
    return x[loud[0] : loud[-1] + 1] if loud.size else x


def _close_gaps(x: np.ndarray, fs: int, max_gap_s: float = 0.02) -> np.ndarray:
    """Remove every internal pause longer than max_gap_s so the talk is continuous."""
    hop = int(0.005 * fs)
    n = len(x) // hop
    e = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    quiet = e < 10 ** (-45 / 10) * e.max()
    keep = np.ones(n, dtype=bool)
    run_start = None
    limit = int(max_gap_s * fs / hop)
    for i, q in enumerate(np.append(quiet, False)):
        if q and run_start is None:
            run_start = i
        elif not q and run_start is not None:
            if i - run_start > limit:
                keep[run_start + limit // 2 : i - limit // 2] = False
            run_start = None
    return x[: n * hop].reshape(n, hop)[keep].ravel()


def talk(speaker: Speaker, rng: np.random.Generator, split: str, seconds: float, pauses: bool) -> np.ndarray:
    """Dry speech of about `seconds`: sentences with 0.4-1.5 s pauses, or gap-free continuous talk."""
    fs = speaker.sample_rate
    voice = rng.choice(VOICES[split])
    speed, pitch = int(rng.integers(140, 200)), int(rng.integers(30, 70))
    ids = [i for i in range(len(SENTENCES)) if i % 2 == (0 if split == "dev" else 1)]
    parts, total = [], 0
    while total < seconds * fs:
        s = speaker.say(SENTENCES[int(rng.choice(ids))], voice, speed, pitch)
        if pauses:
            s = np.concatenate([s, np.zeros(int(rng.uniform(0.4, 1.5) * fs))])
        parts.append(s)
        total += len(s)
    x = np.concatenate(parts)
    if not pauses:
        x = _close_gaps(x, fs)
    return x[: int(seconds * fs)]


def room_impulse_response(rng: np.random.Generator, fs: int, rt60: float, drr_db: float) -> np.ndarray:
    """Direct path plus an exponentially decaying Gaussian tail whose RT60 is exact by construction."""
    n = int(1.2 * rt60 * fs)
    t = np.arange(n) / fs
    tail = rng.standard_normal(n) * np.exp(-3 * np.log(10) * t / rt60)
    tail[: int(0.002 * fs)] = 0.0  # first reflections arrive after the direct sound
    tail /= np.sqrt(np.sum(tail**2))
    h = tail * 10 ** (-drr_db / 20)
    h[0] = 1.0
    return h


def pink_noise(rng: np.random.Generator, n: int, fs: int) -> np.ndarray:
    """Gaussian noise with a 1/f power spectrum from 20 Hz to Nyquist."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / fs)
    gain = np.zeros_like(f)
    gain[f >= 20] = 1 / np.sqrt(f[f >= 20])
    return np.fft.irfft(spec * gain, n)


def babble_noise(speaker: Speaker, rng: np.random.Generator, n: int, talkers: int = 6) -> np.ndarray:
    """Sum of continuous talkers at equal level, each starting at a random point."""
    out = np.zeros(n)
    fs = speaker.sample_rate
    for voice in rng.choice(BABBLE_VOICES, size=talkers, replace=False):
        parts, total = [], 0
        while total < n + fs:
            s = speaker.say(SENTENCES[int(rng.integers(len(SENTENCES)))], voice, 170, 50)
            parts.append(s)
            total += len(s)
        x = _close_gaps(np.concatenate(parts), fs)
        start = int(rng.integers(0, fs))
        x = x[start : start + n]
        out[: len(x)] += x / np.sqrt(np.mean(x**2))
    return out


def make_noise(kind: str, speaker: Speaker, rng: np.random.Generator, n: int) -> np.ndarray:
    """White, pink or babble noise of n samples."""
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return pink_noise(rng, n, speaker.sample_rate)
    if kind == "babble":
        return babble_noise(speaker, rng, n)
    raise ValueError(f"unknown noise kind {kind!r}")


def make_clip(
    speaker: Speaker,
    seed: int,
    split: str,
    seconds: float,
    noise: str,
    snr_db: float | None,
    rt60: float | None,
    pauses: bool = True,
) -> Clip:
    """Reverberant speech plus noise mixed at an exact whole-file SNR."""
    rng = np.random.default_rng(seed)
    fs = speaker.sample_rate
    x = talk(speaker, rng, split, seconds, pauses)
    if rt60 is not None:
        h = room_impulse_response(rng, fs, rt60, drr_db=float(rng.uniform(-3.0, 6.0)))
        x = signal.fftconvolve(x, h)[: len(x)]
    if snr_db is not None:
        v = make_noise(noise, speaker, rng, len(x))
        v *= np.sqrt(np.sum(x**2) / np.sum(v**2) / 10 ** (snr_db / 10))
        x = x + v
    x *= 0.3 / np.max(np.abs(x))
    return Clip(x, fs, snr_db, rt60, noise if snr_db is not None else "none", pauses)
