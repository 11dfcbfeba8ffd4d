"""Free decays in a channel's energy envelope and their maximum-likelihood RT60 fits (see audio_quality)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

SUBFRAME_S = 0.004
DECAY_SMOOTH = 8  # subframes (32 ms) of envelope smoothing for decay detection
DECAY_TOL_DB = 1.5  # a rise above the running minimum by more than this ends a decay
DECAY_MIN_DROP_DB = 8.0
DECAY_MIN_SUBFRAMES = 25  # 100 ms
DECAY_SKIP = 10  # 40 ms: skip the direct sound dying away at the start of a decay
DECAY_WALK = round(1.5 / SUBFRAME_S)  # longest decay followed: 1.5 s
NOISE_MARGIN_DB = 3.0
TAU_GRID = np.exp(np.linspace(np.log(0.01), np.log(0.6), 150))  # amplitude time constants (s)
RT60_PER_TAU = 3 * math.log(10)  # amplitude exp(-t/tau) falls 60 dB in 6.908*tau
MODE_BANDWIDTH = 0.15  # in log(RT60)


class DecayTracker:
    """Finds and fits free decays block by block, keeping just enough context for decays across blocks."""

    def __init__(self, m: int, fs: int):
        self.m, self.fs = m, fs
        self.sub = np.zeros(0)
        self.noise = np.zeros(0)
        self.done = 0  # leading subframes of self.sub whose peaks were handled (kept as smoothing context)
        self.resume = 0  # first subframe (relative to self.sub) where a new decay may start
        self.estimates: list[np.ndarray] = []

    def add(self, sub: np.ndarray, noise: np.ndarray, final: bool = False) -> None:
        """Append subframe energies and the noise expected in each; fit every decay whose walk fits."""
        self.sub = np.concatenate([self.sub, sub])
        self.noise = np.concatenate([self.noise, noise])
        # a peak is handled once its whole walk (and the smoothing around it) is in view
        limit = len(self.sub) if final else len(self.sub) - DECAY_WALK - DECAY_SMOOTH
        if limit <= self.done:
            return
        segments, self.resume = _find_decays(self.sub, self.noise, self.done, limit, self.resume)
        if segments:
            self.estimates.append(_fit_decays(self.sub, self.noise, segments, self.m, self.fs))
        keep = max(0, limit - DECAY_SMOOTH)
        self.sub, self.noise = self.sub[keep:], self.noise[keep:]
        self.done, self.resume = limit - keep, max(0, self.resume - keep)

    def finish(self) -> np.ndarray:
        """RT60 estimates of all decays."""
        self.add(np.zeros(0), np.zeros(0), final=True)
        return np.concatenate(self.estimates) if self.estimates else np.zeros(0)


def _find_decays(sub: np.ndarray, noise: np.ndarray, first: int, limit: int, resume: int):
    """Free decays whose peak lies in [first, limit): (start, end) subframe ranges, and where the next may start."""
    level = 10 * np.log10(np.maximum(ndimage.uniform_filter1d(sub, DECAY_SMOOTH), 1e-30))
    floor = 10 * np.log10(np.maximum(noise, 1e-30)) + NOISE_MARGIN_DB
    inner = slice(1, len(level) - 1)
    loud = level[inner] > floor[inner] + DECAY_MIN_DROP_DB
    is_peak = (level[inner] >= level[:-2]) & (level[inner] > level[2:]) & loud
    peaks = np.flatnonzero(is_peak) + 1
    peaks = peaks[(peaks >= first) & (peaks < limit)]
    if not peaks.size:
        return [], resume
    width = DECAY_WALK
    padded_level = np.concatenate([level, np.full(width, np.inf)])
    padded_floor = np.concatenate([floor, np.full(width, np.inf)])
    ends, lows, mins = [], [], []
    for chunk in np.array_split(peaks, max(1, len(peaks) // 1000)):
        idx = chunk[:, None] + np.arange(1, width)[None, :]
        lv = padded_level[idx]
        run_min = np.minimum.accumulate(np.concatenate([level[chunk][:, None], lv], axis=1), axis=1)[:, :-1]
        stop = (lv > run_min + DECAY_TOL_DB) | (lv <= padded_floor[idx])
        stop_at = np.where(stop.any(axis=1), stop.argmax(axis=1), width - 1)
        masked = np.where(np.arange(width - 1)[None, :] < stop_at[:, None], lv, np.inf)
        ends.append(chunk + 1 + stop_at)
        lows.append(chunk + 1 + masked.argmin(axis=1))
        mins.append(np.where(stop_at > 0, masked.min(axis=1), level[chunk]))
    segments = []
    for peak, end, low, minimum in zip(peaks, np.concatenate(ends), np.concatenate(lows), np.concatenate(mins)):
        if peak < resume:
            continue  # this peak is a ripple inside the previous decay
        resume = int(end)
        if low - peak >= DECAY_MIN_SUBFRAMES and level[peak] - minimum >= DECAY_MIN_DROP_DB:
            segments.append((int(peak) + DECAY_SKIP, int(low) + 1))
    return segments, resume


def _fit_decays(sub: np.ndarray, noise: np.ndarray, segments, m: int, fs: int) -> np.ndarray:
    """Maximum-likelihood RT60 of each decay (Ratnam 2003 on subframe energies, noise subtracted)."""
    out = []
    for part in [segments[i : i + 2000] for i in range(0, len(segments), 2000)]:
        length = max(b - a for a, b in part)
        energies = np.zeros((len(part), length))
        mask = np.zeros((len(part), length), dtype=bool)
        for row, (a, b) in enumerate(part):
            e = sub[a:b]
            energies[row, : b - a] = np.maximum(e - noise[a:b], 1e-3 * e)
            mask[row, : b - a] = True
        t = np.arange(length) * m  # sample offset of each subframe
        count = mask.sum(axis=1)
        inv_gain = np.exp(2 * t[None, :] / (TAU_GRID[:, None] * fs))  # undo exp(-2t/tau) energy decay
        scale = np.maximum((energies * mask) @ inv_gain.T / count[:, None], 1e-300)
        t_sum = (t[None, :] * mask).sum(axis=1)
        loglik = -(m * count[:, None] / 2) * np.log(scale) + (m / (TAU_GRID[None, :] * fs)) * t_sum[:, None]
        best = loglik.argmax(axis=1)
        inside = (best > 0) & (best < len(TAU_GRID) - 1)  # grid edges mean "no decay" or "no end in sight"
        out.append(TAU_GRID[best[inside]] * RT60_PER_TAU)
    return np.concatenate(out) if out else np.zeros(0)


def mode(estimates: np.ndarray) -> float:
    """Most frequent value of positive estimates: peak of a Gaussian kernel density in log scale."""
    edges = np.linspace(np.log(0.05), np.log(5.0), 401)
    counts, _ = np.histogram(np.log(estimates), bins=edges)
    step = edges[1] - edges[0]
    density = ndimage.gaussian_filter1d(counts.astype(float), MODE_BANDWIDTH / step, mode="constant")
    return float(np.exp(edges[density.argmax()] + step / 2))
